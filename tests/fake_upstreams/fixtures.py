"""pytest fixtures for the fakes. Use from a conftest: `from tests.fake_upstreams.fixtures import *`."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.fake_upstreams.bedrock import FakeBedrock
from tests.fake_upstreams.google import FakeGoogle
from tests.fake_upstreams.openai import FakeOpenAI


@pytest.fixture
def fake_openai() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as fake:
        yield fake


@pytest.fixture
def fake_bedrock(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeBedrock]:
    # boto3 refuses to send unsigned requests: dummy credentials, no instance metadata lookups.
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAFAKEFAKEFAKEFAKE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "fake-secret-access-key")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    with FakeBedrock() as fake:
        yield fake


@pytest.fixture
def fake_google() -> Iterator[FakeGoogle]:
    with FakeGoogle() as fake:
        yield fake


__all__ = ["fake_bedrock", "fake_google", "fake_openai"]
