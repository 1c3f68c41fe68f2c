"""provider_svc's own limits on what it spends upstream credentials on: allowed
models and regions, the bound on n, and the bounded per-region client cache.
Each refusal comes before any upstream call."""

from __future__ import annotations

import pytest

from provider_svc.adapters.bedrock import BedrockAdapter
from provider_svc.settings import ProviderSettings
from quantized_runtime.errors import Reason, from_call_error
from tests.fake_upstreams.bedrock import TITAN
from tests.provider.conftest import Harness, generate_once, generate_request


async def test_by_default_only_what_the_shipped_catalog_enables_is_served(harness_factory) -> None:
    harness: Harness = await harness_factory(allowed_models=ProviderSettings().allowed_models)
    assert (await harness.generate("gpt-image-1")).images
    for model in ("dall-e-3", TITAN):
        failure = await harness.fail(model)
        assert failure.reason == Reason.PROVIDER_NOT_OFFERED
        assert "is not enabled on this provider service" in failure.message
    # A stolen route naming an allowed catalog id but a disabled upstream model gets nowhere either.
    forged = generate_request("gpt-image-1")
    forged.upstream_model_id = "dall-e-3"
    refused = from_call_error(await generate_once(harness.stub, forged, timeout=30))
    assert refused.reason == Reason.PROVIDER_NOT_OFFERED
    assert len(harness.openai.requests) == 1
    assert harness.bedrock.requests == []


async def test_a_region_not_allowed_is_refused_before_the_upstream(harness_factory) -> None:
    harness: Harness = await harness_factory(allowed_regions=["us-east-1"])
    failure = await harness.fail(TITAN, region="attacker.example#")
    assert failure.reason == Reason.PROVIDER_NOT_OFFERED and failure.field == "region"
    assert harness.bedrock.requests == []
    assert (await harness.generate(TITAN, region="us-east-1")).images


async def test_n_over_the_routes_bound_or_the_ceiling_is_refused(harness_factory) -> None:
    harness: Harness = await harness_factory(max_images_per_request=3)
    failure = await harness.fail("gpt-image-1", n=2)  # the catalog's max_n is 1
    assert (failure.reason, failure.field) == (Reason.INVALID_REQUEST, "n")
    assert "at most 1" in failure.message
    failure = await harness.fail("sandbox-image-1", n=4)  # max_n 10, ceiling 3
    assert "at most 3" in failure.message
    assert harness.openai.requests == []


@pytest.mark.parametrize("regions", [["us-east-1", "us-west-2", "us-central1", "eu-west-1", "us-east-1"]])
def test_the_region_client_cache_stays_bounded(regions: list[str]) -> None:
    adapter = BedrockAdapter(ProviderSettings(region_client_cache_size=2,
                                              bedrock_endpoint_url="http://127.0.0.1:9"))
    try:
        for region in regions:
            adapter._client(region)
            assert len(adapter._clients) <= 2
        assert list(adapter._clients) == ["eu-west-1", "us-east-1"]
    finally:
        adapter._executor.shutdown()
