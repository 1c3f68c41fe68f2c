"""The catalog's rows name what provider_svc serves them with: every adapter a
route names is a family provider_svc has, on the provider that has it."""

from __future__ import annotations

from catalog_svc.catalog_file import load_catalog_file
from catalog_svc.settings import BUNDLED_CATALOG_FILE
from provider_svc.adapters import bedrock, gemini, openai
from provider_svc.families import family_named

FAMILIES_OF = {"openai": openai.FAMILIES, "bedrock": bedrock.FAMILIES, "gemini": gemini.FAMILIES,
               "sandbox": (family_named("sandbox"),)}


def test_every_image_route_names_a_family_of_its_provider():
    for model in load_catalog_file(BUNDLED_CATALOG_FILE).models:
        for route in model.routes:
            if model.outputs_images:
                assert family_named(route.adapter or "") in FAMILIES_OF[route.provider], (model.id, route)
