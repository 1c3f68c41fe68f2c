"""Billing storage: schema, engines (with each database's locking strategy),
migrations, the money path written for each supported database behind one
interface (money_store.py), and the administration and reaping store
(admin_store.py). Nothing else in billing speaks SQL."""
