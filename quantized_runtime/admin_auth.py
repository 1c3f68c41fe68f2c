"""The admin token shared by the admin services of catalog and billing: its
minimum length and its check. Under mutual TLS it is a second factor beside the
operator's certificate; in plaintext (tests, benchmarks) it is the only one."""

from __future__ import annotations

import hmac
from typing import Any

from quantized_runtime.errors import Reason, ServiceError

ADMIN_METADATA_KEY = "authorization"
# As long as an HS256 key: guessing it must be out of reach.
MIN_ADMIN_TOKEN_BYTES = 32


def admin_token_problem(token: str) -> str | None:
    """Why TOKEN may not be the admin token, or None when it may."""
    if len(token.strip().encode()) < MIN_ADMIN_TOKEN_BYTES:
        return (f"must be at least {MIN_ADMIN_TOKEN_BYTES} bytes "
                "(make one with: python -c 'import secrets; print(secrets.token_urlsafe(32))')")
    return None


def require_admin(invocation_metadata: Any, expected_token: str) -> None:
    presented = ""
    for key, value in invocation_metadata or ():
        if key == ADMIN_METADATA_KEY and isinstance(value, str):
            presented = value.removeprefix("Bearer ").strip()
    if not presented or not hmac.compare_digest(presented.encode(), expected_token.encode()):
        raise ServiceError(Reason.PERMISSION_DENIED, "admin token missing or invalid")
