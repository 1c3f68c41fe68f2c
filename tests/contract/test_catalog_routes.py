"""The catalog's rows name what provider_svc serves them with: every adapter a
route names is a family provider_svc has, on the provider that has it."""

from __future__ import annotations

from catalog_svc.catalog_file import load_catalog_file
from catalog_svc.settings import BUNDLED_CATALOG_FILE
from provider_svc.adapters import bedrock, gemini, openai
from provider_svc.families import Family, family_named
from quantized_runtime.request_options import FORWARDED_FIELDS, OUTPUT_FORMATS

FAMILIES_OF = {"openai": openai.FAMILIES, "bedrock": bedrock.FAMILIES, "gemini": gemini.FAMILIES,
               "sandbox": (family_named("sandbox"),)}


def test_every_image_route_names_a_family_of_its_provider():
    for model in load_catalog_file(BUNDLED_CATALOG_FILE).models:
        for route in model.routes:
            if model.outputs_images:
                assert family_named(route.adapter or "") in FAMILIES_OF[route.provider], (model.id, route)


def test_every_family_says_which_request_fields_it_forwards():
    """provider_svc's policy and discovery read one table; a family missing from it would fail a request."""
    assert set(FORWARDED_FIELDS) == {family.value for family in Family}
    assert set(OUTPUT_FORMATS) <= set(FORWARDED_FIELDS)
    assert all("output_format" in FORWARDED_FIELDS[family] for family in OUTPUT_FORMATS)
