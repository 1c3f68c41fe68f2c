"""The request id of the work in progress, for log lines and error replies."""

from __future__ import annotations

import contextvars
import uuid

REQUEST_ID_METADATA_KEY = "x-request-id"

current_request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")


def new_request_id() -> str:
    return f"req_{uuid.uuid4().hex}"
