"""The e2e stack, one per test module: a module may restart its services."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.e2e.stack import Stack
from tests.fake_upstreams import FakeBedrock, FakeGoogle, FakeOpenAI


@pytest.fixture(scope="module")
def stack(tmp_path_factory) -> Iterator[Stack]:
    with pytest.MonkeyPatch.context() as patch:
        # boto3 refuses to send unsigned requests: dummy credentials, no metadata lookups.
        patch.setenv("AWS_ACCESS_KEY_ID", "AKIAFAKEFAKEFAKEFAKE")
        patch.setenv("AWS_SECRET_ACCESS_KEY", "fake-secret-access-key")
        patch.setenv("AWS_EC2_METADATA_DISABLED", "true")
        with FakeOpenAI() as fake_openai, FakeBedrock() as fake_bedrock, FakeGoogle() as fake_google:
            running = Stack(tmp_path_factory.mktemp("stack"), fake_openai, fake_bedrock, fake_google).start()
            try:
                yield running
            finally:
                running.stop()
