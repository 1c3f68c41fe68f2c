"""The bundled catalog file holds the spec's catalog; a malformed file is named precisely."""

from __future__ import annotations

from decimal import Decimal

import pytest

from catalog_svc.catalog_file import CatalogFileError, load_catalog_file, parse_catalog_text
from catalog_svc.settings import BUNDLED_CATALOG_FILE

CATALOG = load_catalog_file(BUNDLED_CATALOG_FILE)
MODELS = {model.id: model for model in CATALOG.models}
BUNDLED_TEXT = BUNDLED_CATALOG_FILE.read_text()

# The spec's per-model table, its Providers table and its Watermarking table.
SPEC_MODELS = {
    # model: (provider, active, watermark, region)
    "dall-e-2": ("openai", False, "none", ""),
    "dall-e-3": ("openai", False, "none", ""),
    "gpt-image-1": ("openai", True, "c2pa", ""),
    "amazon.titan-image-generator-v2:0": ("bedrock", False, "provenance", "us-east-1"),
    "amazon.nova-canvas-v1:0": ("bedrock", False, "provenance", "us-east-1"),
    "stability.stable-image-core-v1:0": ("bedrock", False, "none", "us-west-2"),
    "stability.stable-image-ultra-v1:0": ("bedrock", False, "none", "us-west-2"),
    "stability.sd3-5-large-v1:0": ("bedrock", False, "none", "us-west-2"),
    "imagen-4.0-fast-generate-001": ("gemini", False, "synthid", "us-central1"),
    "imagen-4.0-generate-001": ("gemini", False, "synthid", "us-central1"),
    "imagen-4.0-ultra-generate-001": ("gemini", False, "synthid", "us-central1"),
    "gemini-2.5-flash-image": ("gemini", False, "synthid", ""),
}
SPEC_MAX_N = {"gpt-image-1": 1, "amazon.titan-image-generator-v2:0": 5, "amazon.nova-canvas-v1:0": 5,
              "stability.stable-image-core-v1:0": 1, "imagen-4.0-generate-001": 4,
              "gemini-2.5-flash-image": 1}


@pytest.mark.parametrize("model_id", sorted(SPEC_MODELS))
def test_every_spec_model_is_present_with_its_provider_activity_and_watermark(model_id):
    provider, active, watermark, region = SPEC_MODELS[model_id]
    model = MODELS[model_id]
    assert [(r.provider, r.active, r.region) for r in model.routes] == [(provider, active, region)]
    assert model.watermark == watermark
    assert model.outputs_images and "image_generation" in model.supported_features


def test_per_model_limits_follow_the_spec():
    for model_id, max_n in SPEC_MAX_N.items():
        assert MODELS[model_id].constraints.max_n == max_n


def test_chat_and_embedding_models_do_not_output_images():
    assert MODELS["gpt-4o-mini"].output_modalities == ["text"]
    assert MODELS["text-embedding-3-small"].output_modalities == ["embedding"]
    assert not any("image_generation" in MODELS[m].supported_features
                   for m in ("gpt-4o-mini", "text-embedding-3-small"))


def test_the_sandbox_model_is_on_a_development_only_provider():
    sandbox = MODELS["sandbox-image-1"]
    assert [r.provider for r in sandbox.routes] == ["sandbox"]
    assert sandbox.watermark == "none" and sandbox.constraints.max_n == 10
    assert {p.slug: p.development_only for p in CATALOG.providers} == {
        "openai": False, "bedrock": False, "gemini": False, "sandbox": True}


def _line_of(text: str, needle: str) -> int:
    return text[:text.index(needle)].count("\n") + 1


def test_a_wrong_type_names_the_line_and_the_field():
    broken = BUNDLED_TEXT.replace("usd_per_image: 0.065", "usd_per_image: cheap")
    with pytest.raises(CatalogFileError) as caught:
        parse_catalog_text(broken, "catalog.yaml")
    line = _line_of(broken, "usd_per_image: cheap")
    index = list(MODELS).index("stability.sd3-5-large-v1:0")
    assert str(caught.value) == (f"catalog.yaml: line {line}: models[{index}].cost.usd_per_image "
                                 "(model 'stability.sd3-5-large-v1:0'): Input should be a valid decimal")


def test_a_missing_field_names_the_enclosing_line_and_the_field():
    broken = BUNDLED_TEXT.replace("      usd_per_million_output_tokens: 40.00\n", "")
    with pytest.raises(CatalogFileError, match=r"line \d+: models\[0\]\.cost\.usd_per_million_output_tokens "
                                               r"\(model 'gpt-image-1'\): Field required"):
        parse_catalog_text(broken)


def test_an_unknown_provider_in_a_route_is_refused():
    broken = BUNDLED_TEXT.replace("- provider: sandbox", "- provider: sandbx")
    with pytest.raises(CatalogFileError) as caught:
        parse_catalog_text(broken)
    assert f"line {_line_of(broken, '- provider: sandbx')}: " in str(caught.value)
    assert "routes[0].provider (model 'sandbox-image-1'): unknown provider 'sandbx'" in str(caught.value)


def test_an_unknown_key_is_refused():
    broken = BUNDLED_TEXT.replace("    watermark: c2pa\n", "    watermark: c2pa\n    watermrk: c2pa\n")
    with pytest.raises(CatalogFileError, match=r"models\[0\]\.watermrk \(model 'gpt-image-1'\): Extra inputs"):
        parse_catalog_text(broken)


def test_a_bad_watermark_value_is_refused():
    broken = BUNDLED_TEXT.replace("watermark: c2pa", "watermark: c2p4")
    with pytest.raises(CatalogFileError, match=r"models\[0\]\.watermark \(model 'gpt-image-1'\): Input should be 'none'"):
        parse_catalog_text(broken)


def test_a_duplicate_model_id_is_refused():
    broken = BUNDLED_TEXT.replace("  - id: dall-e-2\n", "  - id: dall-e-3\n")
    with pytest.raises(CatalogFileError, match=r"models\[2\]\.id \(model 'dall-e-3'\): duplicate model id 'dall-e-3'"):
        parse_catalog_text(broken)


def test_a_duplicate_key_is_refused():
    with pytest.raises(CatalogFileError, match=r"line 2: version: duplicate key"):
        parse_catalog_text('version: "1"\nversion: "2"\n')


def test_invalid_yaml_names_the_line():
    with pytest.raises(CatalogFileError, match=r"line 3: invalid YAML"):
        parse_catalog_text('version: "1"\nproviders:\n  - slug: openai: x\n')


def test_a_token_priced_image_model_needs_a_worst_case_bound():
    broken = BUNDLED_TEXT.replace("      worst_case_output_tokens_per_image: 1290\n", "")
    with pytest.raises(CatalogFileError, match=r"cost\.worst_case_output_tokens_per_image \(model 'gemini-2\.5-flash-image'\): required"):
        parse_catalog_text(broken)


def test_a_missing_file_is_reported(tmp_path):
    with pytest.raises(CatalogFileError, match="cannot read the catalog file"):
        load_catalog_file(tmp_path / "absent.yaml")


def test_prices_are_exact_decimals():
    assert MODELS["dall-e-3"].cost.usd_per_image["standard"]["1024x1024"] == Decimal("0.040")


def test_an_image_model_route_names_its_adapter():
    text = BUNDLED_CATALOG_FILE.read_text().replace("        adapter: dall-e-2\n", "", 1)
    with pytest.raises(CatalogFileError, match=r"models\[2\]\.routes\[0\] \(model 'dall-e-2'\): "
                                               r"an image model's route needs the adapter that serves it"):
        parse_catalog_text(text)


def test_sizes_outside_the_grammar_are_refused_with_their_line():
    text = BUNDLED_CATALOG_FILE.read_text().replace('sizes: ["256x256",', 'sizes: ["256 by 256",', 1)
    with pytest.raises(CatalogFileError, match=r"models\[2\]\.constraints\.sizes \(model 'dall-e-2'\): "
                                               r".*'256 by 256' is not a size"):
        parse_catalog_text(text)
