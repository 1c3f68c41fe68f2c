"""Fake OpenAI Images API: POST /v1/images/generations, as in upstream-apis.md section 1.

It validates the body the way the real API does (unknown parameters, sizes,
quality, n), answers base64 images, and serves every error row of the reference
by name: `fake.then(fake.error("rate_limit"))`, `fake.always(fake.error("server_error"))`.
"""

from __future__ import annotations

import base64
import time
from typing import Any

from tests.fake_upstreams.images import solid_image
from tests.fake_upstreams.server import FakeUpstream, RecordedRequest, Reply

API_KEY = "sk-fake-openai-key-0123456789"

_GPT_IMAGE_MODELS = {"gpt-image-1", "gpt-image-1-mini", "gpt-image-1.5", "gpt-image-2"}
_FIELDS = {
    "gpt-image": {"prompt", "model", "n", "size", "quality", "background", "output_format",
                  "output_compression", "moderation", "user"},
    "dall-e-3": {"prompt", "model", "n", "size", "quality", "style", "user", "response_format"},
    "dall-e-2": {"prompt", "model", "n", "size", "quality", "user", "response_format"},
}
_SIZES = {
    "gpt-image": {"1024x1024", "1536x1024", "1024x1536", "auto"},
    "dall-e-3": {"1024x1024", "1792x1024", "1024x1792"},
    "dall-e-2": {"256x256", "512x512", "1024x1024"},
}
_QUALITIES = {
    "gpt-image": {"auto", "low", "medium", "high"},
    "dall-e-3": {"standard", "hd"},
    "dall-e-2": {"standard"},
}
_ENUMS = {
    "style": {"vivid", "natural"},
    "background": {"transparent", "opaque", "auto"},
    "output_format": {"png", "jpeg", "webp"},
    "moderation": {"auto", "low"},
}


def _error(status: int, message: str, type_: str, code: str | None, param: str | None = None,
           **extra: Any) -> Reply:
    return Reply.json({"error": {"message": message, "type": type_, "param": param, "code": code, **extra}},
                      status=status, headers={"x-request-id": "req_fake0123456789"})


# Every error row of the reference table, by name.
ERRORS: dict[str, Reply] = {
    "invalid_api_key": _error(401, f"Incorrect API key provided: {API_KEY[:6]}***{API_KEY[-4:]}. You can "
                              "find your API key at https://platform.openai.com/account/api-keys.",
                              "invalid_request_error", "invalid_api_key"),
    "organization_not_verified": _error(
        403, "Your organization must be verified to use the model `gpt-image-1`. Please go to: "
        "https://platform.openai.com/settings/organization/general and click on Verify Organization.",
        "invalid_request_error", None),
    "unknown_model": _error(400, "Invalid value: 'gpt-image-9'. Supported values are: 'gpt-image-1', "
                            "'dall-e-2' and 'dall-e-3'.", "image_generation_user_error", "invalid_value",
                            "model"),
    "invalid_value": _error(400, "Invalid value: '999x999'. Supported values are: '1024x1024', "
                            "'1024x1536', '1536x1024', and 'auto'.", "invalid_request_error",
                            "invalid_value", "size"),
    "moderation_blocked": _error(400, "Your request was rejected by the safety system.",
                                 "image_generation_user_error", "moderation_blocked",
                                 moderation_details={"moderation_stage": "input",
                                                     "categories": ["violence"]}),
    "content_policy_violation": _error(400, "Your request was rejected as a result of our safety system.",
                                       "invalid_request_error", "content_policy_violation"),
    "rate_limit": _error(429, "Rate limit reached for images per minute. Please try again in 12s.",
                         "requests", "rate_limit_exceeded"),
    "insufficient_quota": _error(429, "You exceeded your current quota, please check your plan and "
                                 "billing details.", "insufficient_quota", "insufficient_quota"),
    "server_error": _error(500, "The server had an error while processing your request. Sorry about that!",
                           "server_error", None),
    "service_unavailable": _error(503, "The engine is currently overloaded, please try again later",
                                  "server_error", None),
}


def _family(model: str) -> str | None:
    if model in _GPT_IMAGE_MODELS:
        return "gpt-image"
    return model if model in ("dall-e-2", "dall-e-3") else None


class FakeOpenAI(FakeUpstream):
    """`base_url` is what OPENAI_BASE_URL would be (ends in /v1)."""

    def __init__(self, api_key: str = API_KEY) -> None:
        super().__init__()
        self.api_key = api_key
        # Bytes returned for every image instead of a rendered one (e.g. a 30 MB PNG).
        self.image_override: bytes | None = None
        self.created = 1776443191

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"

    @staticmethod
    def error(name: str) -> Reply:
        return ERRORS[name]

    def success(self, request: RecordedRequest) -> Reply:
        if request.path != "/v1/images/generations" or request.method != "POST":
            return _error(404, f"Invalid URL ({request.method} {request.path})", "invalid_request_error", None)
        if request.headers.get("authorization") != f"Bearer {self.api_key}":
            return ERRORS["invalid_api_key"]
        body = request.json()
        problem = _validate(body)
        if problem is not None:
            return problem
        family = _family(body["model"])
        n = body.get("n", 1)
        size = body.get("size", "1024x1024" if family != "gpt-image" else "auto")
        width, height = (1024, 1024) if size == "auto" else (int(s) for s in size.split("x"))
        output_format = body.get("output_format", "png")
        image = self.image_override or solid_image(width, height, output_format)
        encoded = base64.b64encode(image).decode()
        data: list[dict[str, Any]] = []
        for _ in range(n):
            item: dict[str, Any] = {"b64_json": encoded}
            if family == "dall-e-3":
                item["revised_prompt"] = f"A detailed rendering of: {body['prompt']}"
            data.append(item)
        payload: dict[str, Any] = {"created": self.created or int(time.time()), "data": data}
        if family == "gpt-image":
            payload.update({"background": body.get("background", "opaque"), "output_format": output_format,
                            "quality": body.get("quality", "auto"), "size": f"{width}x{height}",
                            "usage": {"input_tokens": 238,
                                      "input_tokens_details": {"image_tokens": 0, "text_tokens": 238},
                                      "output_tokens": 4160 * n, "total_tokens": 238 + 4160 * n}})
        return Reply.json(payload, headers={"x-request-id": "req_fake0123456789"})


def _validate(body: Any) -> Reply | None:
    if not isinstance(body, dict) or not body.get("prompt"):
        return _error(400, "Missing required parameter: 'prompt'.", "invalid_request_error",
                      "missing_required_parameter", "prompt")
    family = _family(str(body.get("model", "dall-e-2")))
    if family is None:
        return ERRORS["unknown_model"]
    for name in body:
        if name not in _FIELDS[family]:
            return _error(400, f"Unknown parameter: '{name}'.", "invalid_request_error",
                          "unknown_parameter", name)
    checks = [("size", _SIZES[family]), ("quality", _QUALITIES[family]), *_ENUMS.items()]
    for name, allowed in checks:
        if name in body and body[name] not in allowed:
            return _error(400, f"Invalid value: '{body[name]}'. Supported values are: "
                          f"{', '.join(sorted(allowed))}.", "invalid_request_error", "invalid_value", name)
    n = body.get("n", 1)
    if not isinstance(n, int) or not 1 <= n <= 10 or (family == "dall-e-3" and n != 1):
        return _error(400, "Invalid 'n': integer out of range.", "invalid_request_error",
                      "integer_above_max_value", "n")
    if "output_compression" in body and body.get("output_format") not in ("jpeg", "webp"):
        return _error(400, "Compression less than 100 is only supported for JPEG and WebP formats.",
                      "invalid_request_error", "invalid_value", "output_compression")
    return None
