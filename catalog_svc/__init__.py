"""The catalog service: models, providers, provider-model rows, route resolution
and prices, seeded from a versioned catalog file and served over gRPC."""
