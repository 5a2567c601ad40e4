"""Tests of the orders reference application (examples/orders)."""
