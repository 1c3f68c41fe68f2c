"""The shared error model and settings loader."""

from __future__ import annotations

import pytest
from pydantic_settings import SettingsConfigDict

from quantized.common.v1 import errors_pb2
from quantized_runtime.errors import Reason, ServiceError, from_call_error, to_call_error
from quantized_runtime.grpc_errors import GRPC_CODE_BY_REASON
from quantized_runtime.settings import ServiceSettings, SettingsError, load_settings


def test_reasons_are_exactly_the_proto_enum():
    proto_names = {name.removeprefix("ERROR_REASON_") for name in errors_pb2.ErrorReason.keys()}
    assert {reason.value for reason in Reason} == proto_names - {"UNSPECIFIED"}


def test_every_reason_has_a_grpc_code():
    assert set(GRPC_CODE_BY_REASON) == set(Reason)


class ExampleSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="QUANTIZED_EXAMPLE_", extra="ignore")
    admin_token: str


def test_missing_required_setting_stops_with_the_variable_name(monkeypatch):
    monkeypatch.delenv("QUANTIZED_EXAMPLE_ADMIN_TOKEN", raising=False)
    monkeypatch.setenv("QUANTIZED_EXAMPLE_LISTEN", "127.0.0.1:0")
    with pytest.raises(SettingsError) as caught:
        load_settings(ExampleSettings)
    assert "QUANTIZED_EXAMPLE_ADMIN_TOKEN" in str(caught.value)


def test_settings_read_from_the_environment(monkeypatch):
    monkeypatch.setenv("QUANTIZED_EXAMPLE_LISTEN", "127.0.0.1:1234")
    monkeypatch.setenv("QUANTIZED_EXAMPLE_ADMIN_TOKEN", "t")
    settings = load_settings(ExampleSettings)
    assert (settings.listen, settings.admin_token) == ("127.0.0.1:1234", "t")


def test_call_error_carries_reason_message_field_and_metadata_both_ways() -> None:
    error = ServiceError(Reason.INSUFFICIENT_CREDITS, "not enough", field="amount",
                         metadata={"available_micro_credits": "5"})
    back = from_call_error(to_call_error(error))
    assert (back.reason, back.message, back.field, back.metadata) == (
        Reason.INSUFFICIENT_CREDITS, "not enough", "amount", {"available_micro_credits": "5"})


def test_call_error_with_an_unknown_or_unset_reason_reads_as_internal() -> None:
    for number in (0, 999):
        error = from_call_error(errors_pb2.CallError(reason=number, message="odd"))
        assert error.reason is Reason.INTERNAL and error.field is None
