"""The billing service: accounts, API keys, JWT identity, micro-credit holds and an
append-only ledger. See docs/billing.md."""
