"""OpenAI Images API over one pooled aiohttp session (keep-alive, no retries inside).

Families: gpt-image-1 (and later GPT image models), dall-e-3, dall-e-2.
`response_format` is never sent: the Images API answers base64.

aiohttp rather than httpx: at 32 concurrent callers httpx's pool spent ~15x the
CPU per call of aiohttp on this machine (docs/benchmarks.md).
"""

from __future__ import annotations

import json
from typing import Any

import aiohttp

from provider_svc.b64json import loads_with_blobs
from provider_svc.domain import (
    GenerationResult,
    Image,
    ImageRequest,
    UpstreamDeadline,
    UpstreamUsage,
    flagged_images,
)
from provider_svc.families import Family
from provider_svc.imaging import sniff_mime
from provider_svc.policy import forwardable
from provider_svc.settings import ProviderSettings
from provider_svc.sizes import fit_size, keeps_auto
from provider_svc.upstream_errors import (
    UpstreamError,
    model_not_served,
    no_credentials,
    rejected,
    timed_out,
    unavailable,
)

PROVIDER = "openai"
FAMILIES = (Family.GPT_IMAGE, Family.DALL_E_3, Family.DALL_E_2)

# Bodies at least this large are read into a preallocated buffer.
_PREALLOCATE_FROM = 1024 * 1024
_FORMAT_MIME = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}
# Codes that mean the upstream's content filter blocked the prompt or the image.
_CONTENT_FILTER_CODES = {"moderation_blocked", "content_policy_violation"}


def upstream_size(request: ImageRequest) -> str:
    """"auto" where the model lists it (gpt-image); otherwise the nearest listed size."""
    if keeps_auto(request.size, request.sizes):
        return "auto"
    return str(fit_size(request.size, request.sizes, request.size_range))


def build_body(request: ImageRequest, family: Family) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": request.upstream_model_id,
        "prompt": request.prompt,
        "n": request.n,
        "size": upstream_size(request),
    }
    body.update(forwardable(request, family))
    return body


class OpenAIAdapter:
    provider = PROVIDER

    def __init__(self, settings: ProviderSettings) -> None:
        self._api_key = settings.openai_api_key.get_secret_value() if settings.openai_api_key else ""
        self._url = settings.openai_base_url.rstrip("/") + "/images/generations"
        headers = {"Content-Type": "application/json"}
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        if settings.openai_organization:
            headers["OpenAI-Organization"] = settings.openai_organization
        if settings.openai_project:
            headers["OpenAI-Project"] = settings.openai_project
        self._headers = headers
        self._max_connections = settings.openai_max_connections
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        # Created on first use, inside the running loop, and reused for keep-alive.
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                headers=self._headers,
                connector=aiohttp.TCPConnector(limit=self._max_connections, ttl_dns_cache=300),
            )
        return self._session

    async def generate(self, request: ImageRequest, deadline: UpstreamDeadline) -> GenerationResult:
        family = _family(request)
        if not self._api_key:
            raise no_credentials(PROVIDER)
        body = json.dumps(build_body(request, family)).encode()
        try:
            async with self._client().post(self._url, data=body,
                                           timeout=aiohttp.ClientTimeout(total=deadline.remaining())) as response:
                status = response.status
                raw = await _read_body(response)
        except TimeoutError:
            raise timed_out(PROVIDER) from None
        except aiohttp.ClientError as exc:
            raise unavailable(PROVIDER, f"could not reach upstream ({type(exc).__name__})") from None
        if status != 200:
            return self._failure(status, raw, request)
        try:
            payload, blobs = loads_with_blobs(raw, "b64_json")
        except (ValueError, TypeError):
            raise unavailable(PROVIDER, "upstream returned a malformed body") from None
        if not isinstance(payload, dict):
            raise unavailable(PROVIDER, "upstream returned a malformed body")
        # The body can be tens of megabytes: drop it before building the result.
        del raw
        return _parse_success(payload, blobs, family)

    def _failure(self, status: int, raw: bytes | bytearray, request: ImageRequest) -> GenerationResult:
        error = _error_of(raw)
        code = str(error.get("code") or "")
        message = str(error.get("message") or "")
        if status == 400 and code in _CONTENT_FILTER_CODES:
            return GenerationResult(images=flagged_images(request.n, _flag_reason(code, error)))
        raise _error_for(status, code, message, self._api_key)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()


async def _read_body(response: aiohttp.ClientResponse) -> bytes | bytearray:
    """The body in one buffer sized from Content-Length, filled chunk by chunk:
    reading it whole would hold every chunk and their join at once (2x the body)."""
    length = response.content_length
    if length is None or length < _PREALLOCATE_FROM:
        return await response.read()
    body = bytearray(length)
    filled = 0
    async for chunk in response.content.iter_any():
        end = filled + len(chunk)
        if end > length:
            raise unavailable(PROVIDER, "upstream sent more than its Content-Length")
        body[filled:end] = chunk
        filled = end
    if filled != length:
        raise unavailable(PROVIDER, "upstream closed the connection mid-body")
    return body


def _family(request: ImageRequest) -> Family:
    if request.family not in FAMILIES:
        raise model_not_served(PROVIDER, request.model_id)
    return request.family


def _error_of(raw: bytes | bytearray) -> dict[str, Any]:
    try:
        payload = json.loads(raw)
    except ValueError:
        return {}
    error = payload.get("error") if isinstance(payload, dict) else None
    return error if isinstance(error, dict) else {}


def _flag_reason(code: str, error: dict[str, Any]) -> str:
    details = error.get("moderation_details")
    if isinstance(details, dict):
        stage = details.get("moderation_stage") or "unknown"
        categories = ", ".join(str(c) for c in details.get("categories") or [])
        return f"{code} ({stage}{': ' + categories if categories else ''})"
    return code


def _error_for(status: int, code: str, message: str, api_key: str) -> UpstreamError:
    if status == 401:
        return unavailable(PROVIDER, f"upstream rejected our credentials ({code or 'unauthorized'})")
    if status == 403:
        if "must be verified" in message.lower():
            return unavailable(PROVIDER, "organisation verification required by the upstream for this model")
        return unavailable(PROVIDER, f"upstream denied access ({code or 'forbidden'})")
    if status == 429:
        if code == "insufficient_quota":
            return unavailable(PROVIDER, "upstream quota exhausted (insufficient_quota)")
        return unavailable(PROVIDER, f"rate limited by upstream ({code or '429'})", retryable=True)
    if status == 408:
        return timed_out(PROVIDER)
    if status >= 500:
        return unavailable(PROVIDER, f"upstream error (HTTP {status})", retryable=True)
    return rejected(PROVIDER, message or f"HTTP {status} {code}".strip(), [api_key])


def _parse_success(payload: dict[str, Any], blobs: list[bytes], family: Family) -> GenerationResult:
    items = payload.get("data") or []
    fallback_mime = _FORMAT_MIME.get(str(payload.get("output_format") or "png"), "image/png")
    images = []
    for item in items:
        index = item.get("b64_json")
        data = blobs[index] if isinstance(index, int) and 0 <= index < len(blobs) else b""
        if not data:
            raise unavailable(PROVIDER, "upstream returned an image without data")
        revised = item.get("revised_prompt") if family is Family.DALL_E_3 else None
        images.append(Image(data=data, mime_type=sniff_mime(data, fallback_mime), revised_prompt=revised))
    usage = UpstreamUsage()
    raw_usage = payload.get("usage")
    if family is Family.GPT_IMAGE and isinstance(raw_usage, dict):
        usage = UpstreamUsage(input_tokens=_int_or_none(raw_usage.get("input_tokens")),
                      output_tokens=_int_or_none(raw_usage.get("output_tokens")),
                      total_tokens=_int_or_none(raw_usage.get("total_tokens")))
    return GenerationResult(created=int(payload.get("created") or 0), images=images, usage=usage)


def _int_or_none(value: Any) -> int | None:
    return int(value) if isinstance(value, int | float) else None
