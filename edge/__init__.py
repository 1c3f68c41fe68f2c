"""The public face of the router: the OpenAI-compatible HTTP API and the gRPC
ImagesService, both driving one generation flow over the catalog, billing and
provider services."""
