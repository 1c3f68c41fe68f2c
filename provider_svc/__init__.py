"""provider_svc: the only holder of upstream credentials.

One adapter per upstream family turns the normalised request into the upstream's
body, and the upstream's answer into normalised images, usage and flags.
"""

from quantized_runtime.grpc_engine import prefer_polling_engine

# Here, so that `python -m provider_svc.main` gets it before its imports load grpc.
prefer_polling_engine()
