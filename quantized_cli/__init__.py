"""The `quantized` command: serve one service, run the dev stack, administer a deployment."""

from quantized_runtime.grpc_engine import prefer_polling_engine

# Here, before any of the command's modules imports grpc.
prefer_polling_engine()
