"""API key format and hashing.

A key is `sk-quantized-` followed by 32 random bytes in URL-safe base64 (256 bits).
Only its SHA-256 is stored. A fast unsalted hash is enough here because the input
is uniformly random and far too large to guess or precompute; a slow password hash
would only make every cache miss at the edge slower. The hash is looked up
directly (unique index), so no secret comparison runs in Python.
"""

from __future__ import annotations

import hashlib
import secrets

KEY_PREFIX = "sk-quantized-"
RANDOM_BYTES = 32
# Characters of the random part kept in clear for display ("sk-quantized-AbCd1234").
DISPLAY_CHARS = 8


def generate_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(RANDOM_BYTES)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def display_prefix(key: str) -> str:
    return key[: len(KEY_PREFIX) + DISPLAY_CHARS]


def looks_like_key(token: str) -> bool:
    return token.startswith(KEY_PREFIX)
