"""The admin token check shared by the admin services of catalog and billing."""

from __future__ import annotations

import hmac
from typing import Any

from quantized_runtime.errors import Reason, ServiceError

ADMIN_METADATA_KEY = "authorization"


def require_admin(invocation_metadata: Any, expected_token: str) -> None:
    presented = ""
    for key, value in invocation_metadata or ():
        if key == ADMIN_METADATA_KEY and isinstance(value, str):
            presented = value.removeprefix("Bearer ").strip()
    if not presented or not hmac.compare_digest(presented.encode(), expected_token.encode()):
        raise ServiceError(Reason.PERMISSION_DENIED, "admin token missing or invalid")
