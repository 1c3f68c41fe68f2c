"""Mutual TLS in the runtime: certificate rotation without a restart, and the
settings that turn it on (all three files or none, checked at start)."""

from __future__ import annotations

import shutil

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client import REGISTRY

from billing_svc.settings import BillingSettings
from catalog_svc.settings import CatalogSettings
from quantized.billing.v1 import billing_pb2, billing_pb2_grpc
from quantized_cli.certificates import CertificateAuthority
from quantized_runtime.channels import open_channel
from quantized_runtime.server import create_server
from quantized_runtime.settings import SettingsError, load_settings
from quantized_runtime.tls import TlsFiles
from tests.tls import Pki


async def _healthy(port: int, tls: TlsFiles) -> grpc.StatusCode:
    async with open_channel(f"127.0.0.1:{port}", tls=tls, peer="billing") as channel:
        try:
            await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
        except grpc.aio.AioRpcError as refused:
            return refused.code()
    return grpc.StatusCode.OK


def _replace(files: TlsFiles, new: TlsFiles) -> None:
    """Rotate as cert-manager and kubelet do: the new files appear under the same names."""
    for source, target in ((new.cert_file, files.cert_file), (new.key_file, files.key_file),
                           (new.ca_file, files.ca_file)):
        staged = target.with_suffix(".new")
        shutil.copyfile(source, staged)
        staged.replace(target)


async def test_a_rotated_certificate_and_ca_serve_the_next_connection_without_a_restart(pki, tmp_path):
    served = pki.files["billing"]
    running = await create_server("127.0.0.1:0", [], [], 4 * 1024 * 1024, tls=served)
    try:
        assert await _healthy(running.port, pki.files["edge"]) == grpc.StatusCode.OK
        successor = Pki.create(tmp_path / "rotated")
        _replace(served, successor.files["billing"])
        # The next new connection is checked against the new CA, with the new server certificate.
        assert await _healthy(running.port, successor.files["edge"]) == grpc.StatusCode.OK
        assert await _healthy(running.port, pki.files["edge"]) == grpc.StatusCode.UNAVAILABLE
    finally:
        await running.stop(0)


async def test_a_half_written_rotation_keeps_the_previous_files(pki, tmp_path):
    served = pki.files["billing"]
    running = await create_server("127.0.0.1:0", [], [], 4 * 1024 * 1024, tls=served)
    try:
        stranger = CertificateAuthority.create().write(tmp_path / "stranger", "billing", serves=True)
        # The new key, but not yet its certificate: the server keeps serving the old pair.
        shutil.copyfile(stranger.key_file, served.key_file)
        assert await _healthy(running.port, pki.files["edge"]) == grpc.StatusCode.OK
    finally:
        await running.stop(0)


def _tls_environment(monkeypatch, files: TlsFiles, *, skip: str = "") -> None:
    for name, path in (("QUANTIZED_TLS_CERT_FILE", files.cert_file), ("QUANTIZED_TLS_KEY_FILE", files.key_file),
                       ("QUANTIZED_TLS_CA_FILE", files.ca_file)):
        if name == skip:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, str(path))


@pytest.fixture
def catalog_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("QUANTIZED_ADMIN_TOKEN", "a-catalog-admin-token-0123456789abcdef")
    monkeypatch.setenv("QUANTIZED_DATA_DIR", str(tmp_path / "data"))
    return monkeypatch


def test_tls_settings_are_read_from_the_shared_variables(catalog_environment, pki):
    _tls_environment(catalog_environment, pki.files["catalog"])
    assert load_settings(CatalogSettings).tls_files() == pki.files["catalog"]


def test_no_tls_variables_mean_plaintext(catalog_environment):
    for name in ("QUANTIZED_TLS_CERT_FILE", "QUANTIZED_TLS_KEY_FILE", "QUANTIZED_TLS_CA_FILE"):
        catalog_environment.delenv(name, raising=False)
    assert load_settings(CatalogSettings).tls_files() is None


def test_a_missing_tls_variable_stops_the_start_naming_it(catalog_environment, pki):
    _tls_environment(catalog_environment, pki.files["catalog"], skip="QUANTIZED_TLS_CA_FILE")
    with pytest.raises(SettingsError, match="go together; missing: QUANTIZED_TLS_CA_FILE"):
        load_settings(CatalogSettings)


def test_a_key_that_is_not_the_certificates_stops_the_start(catalog_environment, pki):
    files = pki.files["catalog"]
    _tls_environment(catalog_environment, TlsFiles(files.cert_file, pki.files["billing"].key_file, files.ca_file))
    with pytest.raises(SettingsError, match="the private key does not belong to the certificate") as caught:
        load_settings(CatalogSettings)
    assert "PRIVATE KEY" not in str(caught.value)


@pytest.mark.parametrize("settings_class", [CatalogSettings, BillingSettings])
def test_an_admin_token_under_32_bytes_stops_the_start(catalog_environment, settings_class):
    catalog_environment.setenv("QUANTIZED_ADMIN_TOKEN", "x" * 31)
    with pytest.raises(SettingsError, match="QUANTIZED_ADMIN_TOKEN: .*at least 32 bytes") as caught:
        load_settings(settings_class)
    assert "x" * 31 not in str(caught.value)


async def test_the_plaintext_health_port_answers_health_checks_and_refuses_everything_else(pki):
    """Kubernetes' `grpc:` probes speak no TLS: they get a health answer on the
    health port, and any other call there is refused for want of an identity."""
    billing = billing_pb2.DESCRIPTOR.services_by_name["BillingService"].full_name
    served = pki.files["billing"]
    running = await create_server(
        "127.0.0.1:0", [lambda server: billing_pb2_grpc.add_BillingServiceServicer_to_server(
            billing_pb2_grpc.BillingServiceServicer(), server)],
        [billing], 4 * 1024 * 1024, tls=served, health_address="127.0.0.1:0")
    refused_metric = {"grpc_service": billing, "grpc_method": "Authenticate", "grpc_code": "UNAUTHENTICATED"}
    refused_before = REGISTRY.get_sample_value("quantized_authorization_refused_calls_total", refused_metric) or 0
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.health_port}") as channel:
            reply = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=billing), timeout=5)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await billing_pb2_grpc.BillingServiceStub(channel).Authenticate(
                    billing_pb2.AuthenticateRequest(token="sk-quantized-x"), timeout=5)
            assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert running.authorization.refused_calls[
            (f"/{billing}/Authenticate", "-")] == 1
        assert REGISTRY.get_sample_value("quantized_authorization_refused_calls_total",
                                         refused_metric) - refused_before == 1
        # The service port still takes no caller without a certificate.
        assert await _healthy(running.port, pki.files["edge"]) == grpc.StatusCode.OK
    finally:
        await running.stop(0)
