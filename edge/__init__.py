"""The public face of the router: the OpenAI-compatible HTTP API and the gRPC
ImagesService, both driving one generation flow over the catalog, billing and
provider services."""

from quantized_runtime.grpc_engine import prefer_polling_engine

# Here, so that `python -m edge.main` gets it before its imports load grpc.
prefer_polling_engine()
