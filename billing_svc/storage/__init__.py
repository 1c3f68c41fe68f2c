"""Billing storage: schema, engines (with each database's locking strategy),
migrations and the repository that is the only code speaking SQL."""
