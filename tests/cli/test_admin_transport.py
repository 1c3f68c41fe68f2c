"""`quantized admin` never sends the admin token in clear text across a network."""

from __future__ import annotations

import pytest

from quantized_cli.admin import AdminSetupError, resolve_target
from quantized_cli.main import build_parser

TOKEN = "an-operator-token-0123456789abcdef-0123"


@pytest.fixture
def environment(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "no-dev-stack"))
    monkeypatch.setenv("QUANTIZED_ADMIN_TOKEN", TOKEN)
    for name in ("QUANTIZED_TLS_CERT_FILE", "QUANTIZED_TLS_KEY_FILE", "QUANTIZED_TLS_CA_FILE",
                 "QUANTIZED_BILLING_ADDR", "QUANTIZED_CATALOG_ADDR"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def _args(*flags: str):
    return build_parser().parse_args(["admin", *flags, "catalog", "list"])


@pytest.mark.parametrize("flags", [("--billing-addr", "10.0.0.7:50052"),
                                   ("--catalog-addr", "catalog.internal:50051")])
def test_refuses_plaintext_to_an_address_off_this_machine(environment, flags):
    with pytest.raises(AdminSetupError, match="refusing to send the admin token in plaintext") as caught:
        resolve_target(_args(*flags))
    assert TOKEN not in str(caught.value)


def test_the_cli_exits_2_before_connecting(environment, capsys):
    parsed = _args("--billing-addr", "10.0.0.7:50052")
    assert parsed.handler(parsed) == 2
    assert "QUANTIZED_TLS_CERT_FILE" in capsys.readouterr().err


def test_loopback_without_a_certificate_is_allowed(environment):
    target = resolve_target(_args("--billing-addr", "127.0.0.1:50052", "--catalog-addr", "localhost:50051"))
    assert target.tls is None


def test_an_operator_certificate_allows_any_address(environment, pki):
    operator = pki.operator
    environment.setenv("QUANTIZED_TLS_CERT_FILE", str(operator.cert_file))
    environment.setenv("QUANTIZED_TLS_KEY_FILE", str(operator.key_file))
    environment.setenv("QUANTIZED_TLS_CA_FILE", str(operator.ca_file))
    target = resolve_target(_args("--billing-addr", "10.0.0.7:50052"))
    assert target.tls == operator
