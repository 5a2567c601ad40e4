"""The key-encryption key the orders service seals personal data with, in tests only."""

import os

ORDERS_KEK = "dGVzdHMtb25seS1rZXktZW5jcnlwdGlvbi1rZXktMzI="
"""Base64 of 32 bytes: `ORDERS_KEK` for every service and command the tests start."""

os.environ.setdefault("ORDERS_KEK", ORDERS_KEK)
