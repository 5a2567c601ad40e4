"""What the tests share: a domain, read models, strategies, PostgreSQL helpers, child scripts.

The `*_child.py` scripts run in processes of their own (killed, or
writing beside the test's process); tests start them by path.
"""
