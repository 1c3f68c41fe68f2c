"""`quantized dev` end to end: the one-command stack a new user runs."""

from __future__ import annotations

import base64
import io
import json
import os
import re
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import httpx
import openai
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)
from PIL import Image

from tests.e2e.dev_stack import child_pids, pid_alive, service_pid, start_dev_stack

pytestmark = pytest.mark.slow

SERVICE_BY_STATE_KEY = {
    "edge_grpc_addr": "quantized.images.v1.ImagesService",
    "catalog_addr": "quantized.catalog.v1.CatalogService",
    "billing_addr": "quantized.billing.v1.BillingService",
    "provider_addr": "quantized.provider.v1.ProviderService",
}


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    running = start_dev_stack(tmp_path_factory.mktemp("dev"))
    yield running
    running.stop()


def test_prints_base_url_and_key(stack):
    assert stack.base_url.startswith("http://127.0.0.1:") and stack.base_url.endswith("/v1")
    assert stack.api_key.startswith("sk-quantized-")
    playground = f"{stack.base_url.removesuffix('/v1')}/playground"
    assert f"# playground: {playground} (paste the API key there)" in stack.stdout_lines
    assert "<title>Quantized playground</title>" in httpx.get(playground, timeout=30).text


def test_openai_sdk_generates_a_sandbox_image_of_the_requested_size(stack):
    client = openai.OpenAI(api_key=stack.api_key, base_url=stack.base_url, max_retries=0)
    result = client.images.generate(model="sandbox-image-1", prompt="a sleepy hedgehog", size="512x256")
    image = Image.open(io.BytesIO(base64.b64decode(result.data[0].b64_json)))
    image.verify()
    assert image.size == (512, 256)
    assert result.data[0].model_extra["watermark"] == "none"
    assert result.usage.model_extra["credits_used"] > 0


def test_state_file_is_private(stack):
    path = Path(stack.env["XDG_STATE_HOME"]) / "quantized" / "dev-stack.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_the_dev_ca_and_certificates_are_private_to_the_user(stack):
    tls_dir = Path(stack.state["data_dir"]) / "tls"
    names = sorted(path.name for path in tls_dir.iterdir())
    assert names == sorted(["ca.crt", *(f"{name}.{ext}" for name in
                                        ("catalog", "billing", "provider", "edge", "operator-dev")
                                        for ext in ("crt", "key"))])
    assert all(stat.S_IMODE((tls_dir / name).stat().st_mode) == 0o600 for name in names)
    # The CA's private key is never written: nobody can issue more certificates.
    assert not any(b"PRIVATE KEY" in (tls_dir / name).read_bytes() for name in names if name.endswith(".crt"))


def test_internal_services_refuse_a_plaintext_caller(stack):
    with grpc.insecure_channel(stack.state["billing_addr"]) as channel, pytest.raises(grpc.RpcError) as caught:
        health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE


@pytest.mark.parametrize("state_key", sorted(SERVICE_BY_STATE_KEY))
def test_each_service_answers_health_and_reflection(stack, state_key):
    with stack.grpc_channel(state_key) as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
        services = set(ProtoReflectionDescriptorDatabase(channel).get_services())
    assert SERVICE_BY_STATE_KEY[state_key] in services
    assert "grpc.health.v1.Health" in services


def test_admin_cli_finds_the_stack_through_the_state_file(stack):
    assert not any(key.startswith("QUANTIZED_") for key in stack.env)
    created = stack.admin("account", "create", "--name", "school", "--credits", "5000000", "--json")
    assert created.returncode == 0, created.stderr
    account = json.loads(created.stdout)
    assert account["api_key"].startswith("sk-quantized-")
    shown = stack.admin("account", "show", account["account_id"], "--json")
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["account"]["balance_micro_credits"] in (5000000, "5000000")


def test_admin_cli_reports_a_wrong_token_clearly(stack):
    env = dict(stack.env, QUANTIZED_ADMIN_TOKEN="not-the-token")
    result = subprocess.run(
        [sys.executable, "-m", "quantized_cli", "admin", "catalog", "list"],
        env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert "PERMISSION_DENIED" in result.stderr
    assert "not-the-token" not in result.stderr


def test_sigterm_stops_every_child(tmp_path):
    running = start_dev_stack(tmp_path)
    children = child_pids(running.process.pid)
    assert len(children) == 4
    assert running.stop(signal.SIGTERM) == 0
    assert not [pid for pid in children if pid_alive(pid)]
    assert not (tmp_path / "state" / "quantized" / "dev-stack.json").exists()


def _generate_once_the_edge_reconnects(stack) -> None:
    """A request through the edge succeeds, once the edge has reconnected to a
    restarted peer; until then it is told 503 service_unavailable, never 500."""
    client = openai.OpenAI(api_key=stack.api_key, base_url=stack.base_url, max_retries=0)
    deadline = time.monotonic() + 60
    while True:
        try:
            assert client.images.generate(model="sandbox-image-1", prompt="back again", size="64x64").data
            return
        except openai.InternalServerError as error:
            assert error.status_code == 503 and error.code == "service_unavailable", error
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def _serving(stack, state_key: str) -> bool:
    with stack.grpc_channel(state_key) as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
    return reply.status == health_pb2.HealthCheckResponse.SERVING


@pytest.mark.parametrize("service", ["provider", "billing"])
def test_a_killed_child_is_restarted_on_its_address_with_its_data(tmp_path, service):
    running = start_dev_stack(tmp_path)
    others = {name: service_pid(running.process.pid, name)
              for name in ("edge", "catalog", "billing", "provider") if name != service}
    victim = service_pid(running.process.pid, service)
    address = running.state[f"{service}_addr"]
    os.kill(victim, signal.SIGKILL)

    running.wait_for_line(f"quantized dev: {service} exited (pid {victim}, killed by SIGKILL); restarting in 0.5 s")
    back = running.wait_for_line(f"quantized dev: {service} is back")
    successor = service_pid(running.process.pid, service)
    assert back == f"quantized dev: {service} is back (pid {successor}, {address})"
    assert successor != victim
    assert _serving(running, f"{service}_addr")
    # The development account lives in billing's database: its key still works.
    _generate_once_the_edge_reconnects(running)
    assert running.process.poll() is None
    assert {name: service_pid(running.process.pid, name) for name in others} == others

    assert running.stop(signal.SIGTERM) == 0
    assert not [pid for pid in (successor, *others.values()) if pid_alive(pid)]


def _occupy(address: str) -> socket.socket:
    """Listen on ADDRESS as soon as its owner is gone, so a service started there cannot bind."""
    host, port = address.rsplit(":", 1)
    deadline = time.monotonic() + 30
    while True:
        squatter = socket.socket()
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            squatter.bind((host, int(port)))
            squatter.listen()
            return squatter
        except OSError:
            squatter.close()
            if time.monotonic() > deadline:
                raise
            time.sleep(0.01)


def test_a_child_that_keeps_crashing_stops_the_stack(tmp_path):
    running = start_dev_stack(tmp_path, "--crash-limit", "3")
    children = child_pids(running.process.pid)
    victim = service_pid(running.process.pid, "provider")
    os.kill(victim, signal.SIGKILL)
    # Every restart then fails at once: its port is taken.
    with _occupy(running.state["provider_addr"]):
        assert running.wait() == 1
    assert f"quantized dev: provider exited (pid {victim}, killed by SIGKILL); restarting in 0.5 s" \
        in running.stderr_lines
    assert any(re.fullmatch(r"quantized dev: provider exited \(pid \d+, exit status 1\); restarting in 1 s", line)
               for line in running.stderr_lines)
    gave_up = next(line for line in running.stderr_lines if "giving up" in line)
    assert re.fullmatch(r"quantized dev: provider exited \(pid \d+, exit status 1\); it crashed 3 times "
                        r"within 60 s, giving up and stopping the stack; see .*provider\.log", gave_up)
    assert any("Failed to bind to address" in line for line in running.stderr_lines)
    assert running.stderr_lines[-1] == "quantized dev: stopped"
    assert not [pid for pid in children if pid_alive(pid)]
    assert not (tmp_path / "state" / "quantized" / "dev-stack.json").exists()


def test_ctrl_c_while_a_child_restarts_stops_everything(tmp_path):
    running = start_dev_stack(tmp_path)
    children = child_pids(running.process.pid)
    victim = service_pid(running.process.pid, "provider")
    os.kill(victim, signal.SIGKILL)
    running.wait_for_line("quantized dev: provider exited")
    deadline = time.monotonic() + 60
    while (successor := service_pid(running.process.pid, "provider")) is None:
        assert time.monotonic() < deadline, "provider was not restarted"
        time.sleep(0.01)
    assert running.stop(signal.SIGINT) == 0
    assert not [pid for pid in (*children, successor) if pid_alive(pid)]
    assert not (tmp_path / "state" / "quantized" / "dev-stack.json").exists()


def _json_admin(stack, *args: str) -> dict:
    result = stack.admin(*args, "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_admin_cli_keys_and_credits(stack):
    account = _json_admin(stack, "account", "create", "--name", "keys", "--credits", "1000")
    key = _json_admin(stack, "key", "create", "--account", account["account_id"])
    client = openai.OpenAI(api_key=key["api_key"], base_url=stack.base_url, max_retries=0)
    with pytest.raises(openai.APIStatusError) as poor:
        client.images.generate(model="sandbox-image-1", prompt="x", size="64x64")
    assert poor.value.status_code == 402
    granted = _json_admin(stack, "credits", "grant", "--account", account["account_id"], "--amount", "9000000")
    assert int(granted["balance_micro_credits"]) == 9001000
    assert client.images.generate(model="sandbox-image-1", prompt="x", size="64x64").data
    revoked = _json_admin(stack, "key", "revoke", key["key_id"])
    assert revoked["revoked"] is True
    bad = stack.admin("credits", "grant", "--account", account["account_id"], "--amount", "-5")
    assert bad.returncode == 2 and "positive" in bad.stderr


def test_admin_cli_rate_limits_a_key_and_an_account(stack):
    account = _json_admin(stack, "account", "create", "--name", "limited", "--credits", "100000000")
    key = _json_admin(stack, "key", "create", "--account", account["account_id"])
    updated = _json_admin(stack, "key", "update", key["key_id"], "--rpm", "2", "--concurrency", "1")
    assert updated["limits"] == {"requests_per_minute": 2, "max_concurrent_requests": 1}
    client = openai.OpenAI(api_key=key["api_key"], base_url=stack.base_url, max_retries=0)
    for _ in range(2):
        assert client.images.generate(model="sandbox-image-1", prompt="x", size="64x64").data
    with pytest.raises(openai.RateLimitError) as limited:
        client.images.generate(model="sandbox-image-1", prompt="x", size="64x64")
    assert 1 <= int(limited.value.response.headers["retry-after"]) <= 60
    shown = _json_admin(stack, "account", "update", account["account_id"], "--rpm", "100")
    assert shown["limits"] == {"requests_per_minute": 100}
    cleared = _json_admin(stack, "key", "update", key["key_id"], "--use-defaults")
    assert cleared["limits"] == {}
    bad = stack.admin("key", "update", key["key_id"], "--rpm", "-1")
    assert bad.returncode == 2 and "no limit" in bad.stderr


def test_admin_cli_catalog_operations_take_effect_without_restart(stack):
    client = openai.OpenAI(api_key=stack.api_key, base_url=stack.base_url, max_retries=0)
    disabled = _json_admin(stack, "provider-model", "disable", "--provider", "sandbox", "--model", "sandbox-image-1")
    assert disabled["is_active"] is False
    try:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                client.images.generate(model="sandbox-image-1", prompt="x", size="64x64")
            except openai.BadRequestError as refused:
                assert "No active providers" in refused.message
                break
            time.sleep(0.2)
        else:
            pytest.fail("disabling the sandbox row was not visible through the edge within 5 s")
    finally:
        _json_admin(stack, "provider-model", "enable", "--provider", "sandbox", "--model", "sandbox-image-1")
    listed = _json_admin(stack, "catalog", "list")
    row = next(r for r in listed["provider_models"] if r["model_id"] == "sandbox-image-1")
    assert row["is_active"] is True
    audit = _json_admin(stack, "catalog", "audit")
    # The actor is the identity in the operator's certificate, not a name the CLI sends.
    assert any("sandbox-image-1" in event["detail"] and event["actor"] == "operator/dev"
               for event in audit["events"])
    assert _json_admin(stack, "catalog", "reload")["catalog_version"]
    unknown = stack.admin("provider-model", "enable", "--provider", "nope", "--model", "sandbox-image-1")
    assert unknown.returncode == 1 and "NOT_FOUND" in unknown.stderr


def test_children_stop_when_the_dev_process_is_killed(tmp_path):
    running = start_dev_stack(tmp_path)
    children = child_pids(running.process.pid)
    assert len(children) == 4
    running.process.kill()
    assert running.wait() == -signal.SIGKILL
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and [pid for pid in children if pid_alive(pid)]:
        time.sleep(0.1)
    assert not [pid for pid in children if pid_alive(pid)]


# Enough for every request a burst can make, so none is refused for money.
BURST_CREDITS = 10**12


class _Burst:
    """Callers posting one request after another until stopped, recording each answer."""

    CALLERS = 6

    def __init__(self, base_url: str, api_key: str) -> None:
        self._base_url, self._api_key = base_url, api_key
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.answers: list[tuple[float, httpx.Response]] = []
        self._pool = ThreadPoolExecutor(self.CALLERS)
        self._callers = [self._pool.submit(self._call) for _ in range(self.CALLERS)]

    def _call(self) -> None:
        with httpx.Client(base_url=self._base_url, timeout=60,
                          headers={"Authorization": f"Bearer {self._api_key}"}) as client:
            while not self._stop.is_set():
                reply = client.post("/images/generations",
                                    json={"model": "sandbox-image-1", "prompt": "a burst", "size": "64x64"})
                with self._lock:
                    self.answers.append((time.monotonic(), reply))

    def count(self, status: int, since: float = 0.0) -> int:
        with self._lock:
            return sum(1 for at, reply in self.answers if reply.status_code == status and at >= since)

    def wait_for(self, status: int, count: int, since: float = 0.0, timeout: float = 60) -> None:
        give_up = time.monotonic() + timeout
        while self.count(status, since) < count:
            assert time.monotonic() < give_up, f"fewer than {count} answers {status} within {timeout:.0f} s"
            time.sleep(0.02)

    def stop(self) -> None:
        self._stop.set()
        for caller in self._callers:
            caller.result()
        self._pool.shutdown()


@pytest.mark.parametrize("service", ["catalog", "billing", "provider"])
def test_a_child_killed_during_a_burst_gives_503_never_500_charges_nothing_for_them_and_heals(
        tmp_path, capsys, service):
    # Short holds: a Reserve billing applied just before it was killed is never
    # answered, so its hold is only returned when it expires.
    running = start_dev_stack(tmp_path, settings={"QUANTIZED_BILLING_HOLD_TTL_SECONDS": "2",
                                                  "QUANTIZED_BILLING_REAPER_INTERVAL_SECONDS": "0.2"})
    try:
        account = _json_admin(running, "account", "create", "--name", "burst", "--credits", str(BURST_CREDITS))
        burst = _Burst(running.base_url, account["api_key"])
        try:
            burst.wait_for(200, 12)
            victim = service_pid(running.process.pid, service)
            killed_at = time.monotonic()
            os.kill(victim, signal.SIGKILL)
            running.wait_for_line(f"quantized dev: {service} exited (pid {victim}, killed by SIGKILL)")
            running.wait_for_line(f"quantized dev: {service} is back")
            back_at = time.monotonic()
            burst.wait_for(200, 12, since=back_at)
        finally:
            burst.stop()

        statuses = Counter(reply.status_code for _, reply in burst.answers)
        assert set(statuses) <= {200, 503}, statuses
        for _, reply in burst.answers:
            if reply.status_code == 503:
                assert reply.json()["error"]["code"] == "service_unavailable"
                assert reply.headers["retry-after"] == "1"
                assert reply.headers["x-request-id"] in reply.json()["error"]["message"]
        assert running.process.poll() is None
        charged = sum(reply.json()["usage"]["credits_used"] for _, reply in burst.answers if reply.status_code == 200)
        give_up = time.monotonic() + 30
        while int((shown := _json_admin(running, "account", "show", account["account_id"])["account"])
                  .get("held_micro_credits", 0)):
            assert time.monotonic() < give_up, f"holds still open: {shown}"
            time.sleep(0.2)
        assert int(shown["balance_micro_credits"]) == BURST_CREDITS - charged
        # The catalog's routes and quotes are cached at the edge: a short catalog
        # outage may pass without a single 503.
        unavailable = [at for at, reply in burst.answers if reply.status_code == 503]
        if service != "catalog":
            assert unavailable, "no request met the outage"
        first_503 = f"{min(unavailable) - killed_at:.3f}" if unavailable else "none"
        last_503 = f"{max(unavailable) - back_at:.3f}" if unavailable else "none"
        with capsys.disabled():  # the figure line shows in a plain run
            print(f"\n[figures] {service} SIGKILL under quantized dev: requests={len(burst.answers)} "
                  f"statuses={dict(statuses)} first_503_after_kill_s={first_503} "
                  f"last_503_after_back_s={last_503} credits_charged={charged}")
        assert running.stop(signal.SIGTERM) == 0
    finally:
        running.stop()  # a failed assertion leaves no stack behind
