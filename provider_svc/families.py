"""Model families: the adapter body each upstream speaks. The catalog's route says
which family serves a model (its `adapter`), so a new model id needs a catalog
row, not code here."""

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


def family_named(adapter: str) -> Family | None:
    """The family a catalog route names; None when it names none this service has."""
    try:
        return Family(adapter)
    except ValueError:
        return None
