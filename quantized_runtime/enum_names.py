"""Proto enum values as the lower-case words callers and the catalog use.

The JSON API, the catalog file and the adapters all spell an enum value as the
lower-cased suffix of its proto name (QUALITY_HD is "hd"); the zero value
(`*_UNSPECIFIED`) means "not set" and has no word. Every service reads the words
from here, so a value added to the proto is spelt the same way everywhere.
"""

from __future__ import annotations

import functools
import re
from typing import Any


def _prefix(enum_descriptor: Any) -> str:
    """`Quality` -> "QUALITY_", `OutputFormat` -> "OUTPUT_FORMAT_"."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", enum_descriptor.name).upper() + "_"


@functools.cache
def enum_words(enum_descriptor: Any) -> dict[str, int]:
    """Word -> number for every value but the zero one ("hd" -> QUALITY_HD)."""
    prefix = _prefix(enum_descriptor)
    return {value.name.removeprefix(prefix).lower(): value.number
            for value in enum_descriptor.values if value.number != 0}


@functools.cache
def enum_names(enum_descriptor: Any) -> dict[int, str]:
    """Number -> word, the inverse of `enum_words`."""
    return {number: word for word, number in enum_words(enum_descriptor).items()}


def enum_word(enum_descriptor: Any, number: int) -> str | None:
    """The word of one value; None for the zero value, which means "not set"."""
    return enum_names(enum_descriptor).get(number)
