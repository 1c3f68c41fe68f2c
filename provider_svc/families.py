"""Model families: which body an adapter builds is decided by the catalog model id."""

from __future__ import annotations

import enum


class Family(enum.StrEnum):
    GPT_IMAGE = "gpt-image"
    DALL_E_2 = "dall-e-2"
    DALL_E_3 = "dall-e-3"
    TITAN = "titan"
    NOVA = "nova"
    STABILITY = "stability"
    FLASH_IMAGE = "flash-image"
    IMAGEN = "imagen"
    SANDBOX = "sandbox"


# Prefixes of model ids (catalog or upstream), most specific first.
_PREFIXES: tuple[tuple[str, Family], ...] = (
    ("gpt-image-", Family.GPT_IMAGE),
    ("dall-e-2", Family.DALL_E_2),
    ("dall-e-3", Family.DALL_E_3),
    ("amazon.titan-image-", Family.TITAN),
    ("amazon.nova-canvas-", Family.NOVA),
    ("stability.", Family.STABILITY),
    ("gemini-", Family.FLASH_IMAGE),
    ("imagen-", Family.IMAGEN),
    ("sandbox-", Family.SANDBOX),
)


def _bare(model_id: str) -> str:
    # A catalog id may carry a provider prefix ("bedrock/amazon.nova-canvas-v1:0").
    return model_id.rsplit("/", 1)[-1].strip().lower()


def family_of(*model_ids: str) -> Family | None:
    """The family of the first id that names one (catalog id first, then upstream id)."""
    for model_id in model_ids:
        bare = _bare(model_id)
        for prefix, family in _PREFIXES:
            if bare.startswith(prefix):
                return family
    return None
