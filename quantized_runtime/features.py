"""Catalog feature names shared by the services ("supported_features" in the catalog file).

The edge asks the catalog for a route with the feature it needs, and the catalog
checks it against the model's features; both spell it from here.
"""

IMAGE_GENERATION = "image_generation"
