"""Faithful local upstreams: real HTTP servers on 127.0.0.1 speaking the OpenAI,
Bedrock and Google wire formats, recording what they receive.

    with FakeOpenAI() as openai_fake:
        settings = ProviderSettings(openai_base_url=openai_fake.base_url,
                                    openai_api_key=openai_fake.api_key)
        ...
        assert openai_fake.last.json()["size"] == "1024x1024"

Steer a fake with `then(...)` (next replies), `always(...)` (every reply),
`delay_seconds` (slow answers), `image_override` (e.g. `big_png()`), and the
named errors / content-filter builders on each class. The pytest fixtures in
`tests.fake_upstreams.fixtures` wrap them.
"""

from tests.fake_upstreams.bedrock import FakeBedrock
from tests.fake_upstreams.google import FakeGoogle
from tests.fake_upstreams.images import big_png, size_for_ratio, solid_image
from tests.fake_upstreams.openai import FakeOpenAI
from tests.fake_upstreams.server import FakeUpstream, RecordedRequest, Reply

__all__ = ["FakeBedrock", "FakeGoogle", "FakeOpenAI", "FakeUpstream", "RecordedRequest", "Reply",
           "big_png", "size_for_ratio", "solid_image"]
