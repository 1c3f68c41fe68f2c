"""The catalog service: models, providers, provider-model rows, route resolution
and prices, seeded from a versioned catalog file and served over gRPC."""

from quantized_runtime.grpc_engine import prefer_polling_engine

# Here, so that `python -m catalog_svc.main` gets it before its imports load grpc.
prefer_polling_engine()
