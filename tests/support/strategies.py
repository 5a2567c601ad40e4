"""Hypothesis strategies for the tests' own domain."""

from decimal import Decimal

from hypothesis import strategies as st

from fabula.testing import strategies as fabula_st

from .domain import Everything, OrderItemAdded

everything = fabula_st.events(Everything)
items = fabula_st.events(OrderItemAdded)
money = st.decimals(min_value=Decimal("0.01"), max_value=Decimal(10_000), places=2)
