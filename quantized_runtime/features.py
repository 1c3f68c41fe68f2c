"""Feature names shared by the catalog, which lists them per model and checks them
on ResolveRoute, and the edge, which asks for one on every request."""

from __future__ import annotations

IMAGE_GENERATION = "image_generation"
