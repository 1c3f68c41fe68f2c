"""The adapter registry: provider slug -> adapter factory.

Adding a provider means one adapter module, one line here, and catalog rows.
"""

from __future__ import annotations

from collections.abc import Callable

from provider_svc.adapters.bedrock import BedrockAdapter
from provider_svc.adapters.gemini import GeminiAdapter
from provider_svc.adapters.openai import OpenAIAdapter
from provider_svc.adapters.sandbox import SandboxAdapter
from provider_svc.domain import Adapter
from provider_svc.settings import ProviderSettings

ADAPTER_FACTORIES: dict[str, Callable[[ProviderSettings], Adapter]] = {
    "openai": OpenAIAdapter,
    "bedrock": BedrockAdapter,
    "gemini": GeminiAdapter,
    "sandbox": lambda _settings: SandboxAdapter(),
}


def build_adapters(settings: ProviderSettings) -> dict[str, Adapter]:
    """Every adapter, built without touching credentials or the network."""
    return {slug: factory(settings) for slug, factory in ADAPTER_FACTORIES.items()}
