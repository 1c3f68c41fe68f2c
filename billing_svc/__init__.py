"""The billing service: accounts, API keys, JWT identity, micro-credit holds and an
append-only ledger. See docs/billing.md."""

from quantized_runtime.grpc_engine import prefer_polling_engine

# Here, so that `python -m billing_svc.main` gets it before its imports load grpc.
prefer_polling_engine()
