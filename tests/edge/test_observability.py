"""The edge's one log line per request and its Prometheus metrics (edge/metrics.py),
over both transports, and no /metrics on the public port."""

from __future__ import annotations

import logging

import grpc
import pytest
from prometheus_client import REGISTRY
from prometheus_client.openmetrics.exposition import generate_latest as openmetrics_latest

from quantized.images.v1 import images_pb2
from quantized.provider.v1 import provider_pb2
from quantized_runtime.errors import Reason, ServiceError
from quantized_runtime.logging import JsonFormatter

from tests.edge.conftest import CALL_TIMEOUT_SECONDS, Stack
from tests.edge.fakes import DALL_E_3_PRICE, PNG_BYTES, POOR_KEY, VALID_KEY, flagged_image, image

AUTH = {"Authorization": f"Bearer {VALID_KEY}"}
GENERATIONS = "/v1/images/generations"
GRPC_GENERATE = "/quantized.images.v1.ImagesService/Generate"
KEY_ID = "key_observed"


def request_lines(caplog: pytest.LogCaptureFixture) -> list[dict[str, object]]:
    return [record.fields for record in caplog.records  # type: ignore[attr-defined]
            if record.name == "quantized.edge.request"]


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


@pytest.fixture(autouse=True)
def observed_key(stack: Stack) -> None:
    stack.peers.billing.accounts[VALID_KEY].key_id = KEY_ID
    stack.peers.provider.behaviour["openai"] = provider_pb2.GenerateResponse(
        created=1, images=[image(), flagged_image()], upstream_seconds=0.25)


async def test_a_generation_writes_one_line_with_who_what_and_how_long(
        stack: Stack, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    response = await stack.http.post(GENERATIONS, headers=AUTH, json={"model": "dall-e-3", "prompt": "a fox"})
    assert response.status_code == 200, response.text
    (line,) = request_lines(caplog)
    assert line["route"] == GENERATIONS
    assert line["status"] == 200
    assert (line["account_id"], line["key_id"]) == ("acct_valid", KEY_ID)
    assert (line["model"], line["provider"]) == ("dall-e-3", "openai")
    assert line["images"] == 1
    assert line["credits"] == DALL_E_3_PRICE
    assert line["upstream_ms"] == 250.0
    assert isinstance(line["total_ms"], float) and line["total_ms"] > 0
    rendered = "\n".join(JsonFormatter().format(record) for record in caplog.records)
    assert response.headers["x-request-id"] in rendered
    assert VALID_KEY not in rendered


async def test_a_refused_request_is_logged_with_its_status(stack: Stack, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    poor = await stack.http.post(GENERATIONS, headers={"Authorization": f"Bearer {POOR_KEY}"},
                                 json={"model": "dall-e-3", "prompt": "a fox"})
    unknown = await stack.http.post(GENERATIONS, headers={"Authorization": "Bearer sk-quantized-nobody"},
                                    json={"model": "dall-e-3", "prompt": "a fox"})
    assert (poor.status_code, unknown.status_code) == (402, 401)
    refused, unauthenticated = request_lines(caplog)
    assert (refused["status"], refused["account_id"], refused["model"]) == (402, "acct_poor", "dall-e-3")
    assert (refused["images"], refused["credits"], refused["upstream_ms"]) == (0, 0, None)
    assert (unauthenticated["status"], unauthenticated["account_id"], unauthenticated["model"]) == (401, "", "")
    rendered = "\n".join(JsonFormatter().format(record) for record in caplog.records)
    assert POOR_KEY not in rendered and "sk-quantized-nobody" not in rendered


async def test_a_grpc_generation_writes_the_same_line_and_no_other(
        stack: Stack, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    answer = await stack.images.Generate(images_pb2.GenerateRequest(model="dall-e-3", prompt="a fox"),
                                         timeout=CALL_TIMEOUT_SECONDS,
                                         metadata=(("authorization", f"Bearer {VALID_KEY}"),))
    assert answer.data[0].image_data == PNG_BYTES
    stack.peers.provider.behaviour["openai"] = ServiceError(Reason.UPSTREAM_UNAVAILABLE, "openai is down")
    with pytest.raises(grpc.aio.AioRpcError):
        await stack.images.Generate(images_pb2.GenerateRequest(model="dall-e-3", prompt="a fox"),
                                    timeout=CALL_TIMEOUT_SECONDS,
                                    metadata=(("authorization", f"Bearer {VALID_KEY}"),))
    served, failed = request_lines(caplog)
    assert (served["route"], served["status"], served["key_id"], served["credits"]) == (
        GRPC_GENERATE, "OK", KEY_ID, DALL_E_3_PRICE)
    assert (failed["status"], failed["provider"], failed["credits"]) == ("UPSTREAM_UNAVAILABLE", "openai", 0)
    # The peers' own calls log lines too (the fakes serve in this process); the edge's does not.
    rpc_lines = [getattr(record, "fields", {}) for record in caplog.records if record.name == "quantized.rpc"]
    assert GRPC_GENERATE not in [fields["method"] for fields in rpc_lines]


async def test_a_generation_counts_the_request_its_images_credits_and_added_latency(stack: Stack) -> None:
    labels = {"route": GENERATIONS, "model": "dall-e-3", "provider": "openai", "status_class": "2xx"}
    before = {
        "requests": sample("quantized_edge_requests_total", **labels),
        "generated": sample("quantized_edge_images_total", model="dall-e-3", provider="openai", result="generated"),
        "flagged": sample("quantized_edge_images_total", model="dall-e-3", provider="openai", result="flagged"),
        "credits": sample("quantized_edge_charged_microcredits_total", model="dall-e-3"),
        "overhead": sample("quantized_edge_overhead_duration_seconds_count", route=GENERATIONS),
        "upstream": sample("quantized_edge_upstream_duration_seconds_sum", provider="openai"),
    }
    for _ in range(2):
        response = await stack.http.post(GENERATIONS, headers=AUTH, json={"model": "dall-e-3", "prompt": "a fox"})
        assert response.status_code == 200, response.text
    assert sample("quantized_edge_requests_total", **labels) - before["requests"] == 2
    assert sample("quantized_edge_images_total", model="dall-e-3", provider="openai",
                  result="generated") - before["generated"] == 2
    assert sample("quantized_edge_images_total", model="dall-e-3", provider="openai",
                  result="flagged") - before["flagged"] == 2
    assert sample("quantized_edge_charged_microcredits_total", model="dall-e-3") - before["credits"] == \
        2 * DALL_E_3_PRICE
    assert sample("quantized_edge_overhead_duration_seconds_count", route=GENERATIONS) - before["overhead"] == 2
    assert sample("quantized_edge_upstream_duration_seconds_sum", provider="openai") - before["upstream"] == \
        pytest.approx(0.5)


async def test_spend_per_account_and_key_is_an_exemplar_not_a_label(stack: Stack) -> None:
    response = await stack.http.post(GENERATIONS, headers=AUTH, json={"model": "dall-e-3", "prompt": "a fox"})
    assert response.status_code == 200, response.text
    exposition = openmetrics_latest(REGISTRY).decode()
    (charged,) = [line for line in exposition.splitlines()
                  if line.startswith('quantized_edge_charged_microcredits_total{model="dall-e-3"}')]
    assert f'# {{account_id="acct_valid",key_id="{KEY_ID}"}} {float(DALL_E_3_PRICE)}' in charged
    labels = {name for metric in REGISTRY.collect() for sample_ in metric.samples for name in sample_.labels}
    assert not labels & {"account_id", "key_id"}


async def test_an_unknown_model_is_never_a_label(stack: Stack) -> None:
    response = await stack.http.post(GENERATIONS, headers=AUTH, json={"model": "no-such-model-x1", "prompt": "a"})
    assert response.status_code == 404
    names = {sample_.labels.get("model") for metric in REGISTRY.collect() for sample_ in metric.samples}
    assert "no-such-model-x1" not in names


async def test_cache_lookups_are_counted(stack: Stack) -> None:
    before_hits = sample("quantized_edge_cache_lookups_total", cache="auth", result="hit")
    for _ in range(3):
        response = await stack.http.post(GENERATIONS, headers=AUTH, json={"model": "dall-e-3", "prompt": "a fox"})
        assert response.status_code == 200
    assert sample("quantized_edge_cache_lookups_total", cache="auth", result="hit") - before_hits == 2


async def test_metrics_are_not_served_on_the_public_port(stack: Stack) -> None:
    assert (await stack.http.get("/metrics")).status_code == 404
