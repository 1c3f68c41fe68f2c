"""Google through google-genai: Gemini Flash Image and Imagen 4.

- gemini-2.5-flash-image: `generate_content` on the Gemini Developer API
  (GEMINI_API_KEY); text parts become `revised_prompt`.
- Imagen 4: `generate_images`, which google-genai 3.x serves only in Vertex mode:
  express mode (QUANTIZED_VERTEX_API_KEY) or project/location with application
  default credentials.
SDK retries are off (one attempt); the service's own retry is the only one.
"""

from __future__ import annotations

import asyncio
import warnings
from typing import Any

import httpx
from google.auth import exceptions as google_auth_exceptions
from google import genai
from google.genai import errors as genai_errors
from google.genai import types

from provider_svc.domain import (
    GenerationResult,
    Image,
    ImageRequest,
    UpstreamDeadline,
    UpstreamUsage,
    flagged_images,
)
from provider_svc.families import Family
from provider_svc.imaging import megapixels, sniff_mime
from provider_svc.settings import ProviderSettings
from provider_svc.sizes import nearest_ratio, requested
from provider_svc.upstream_errors import (
    UpstreamError,
    model_not_served,
    no_credentials,
    rejected,
    timed_out,
    unavailable,
)

PROVIDER = "gemini"
FAMILIES = (Family.FLASH_IMAGE, Family.IMAGEN)

# A requested longer side above this asks for the 2K tier where the model has one.
IMAGEN_2K_THRESHOLD = 1536
IMAGEN_1K, IMAGEN_2K = "1K", "2K"
# Candidate finish reasons that mean the image was withheld by a safety filter.
_BLOCKED_FINISH_REASONS = {"IMAGE_SAFETY", "IMAGE_PROHIBITED_CONTENT", "SAFETY", "NO_IMAGE",
                           "PROHIBITED_CONTENT", "BLOCKLIST", "SPII", "IMAGE_RECITATION", "RECITATION"}
_CREDENTIAL_REASONS = {"API_KEY_INVALID", "API_KEY_EXPIRED", "ACCESS_TOKEN_EXPIRED"}


def flash_image_config(request: ImageRequest, timeout_ms: int | None = None) -> types.GenerateContentConfig:
    """Flash Image takes an aspect ratio only: no negative prompt, seed or quality."""
    return types.GenerateContentConfig(
        response_modalities=["TEXT", "IMAGE"],
        image_config=types.ImageConfig(aspect_ratio=nearest_ratio(request.size, request.sizes.ratios)),
        candidate_count=request.n if request.n > 1 else None,
        http_options=types.HttpOptions(timeout=timeout_ms) if timeout_ms else None,
    )


def imagen_config(request: ImageRequest, timeout_ms: int | None = None) -> types.GenerateImagesConfig:
    """Imagen takes count, aspect ratio and the 1K/2K tier; seed and negative prompt
    are not forwarded (the spec reserves them for Bedrock)."""
    wanted = requested(request.size)
    has_2k = IMAGEN_2K in request.sizes.tiers
    wants_2k = max(wanted.width, wanted.height) > IMAGEN_2K_THRESHOLD
    return types.GenerateImagesConfig(
        number_of_images=request.n,
        aspect_ratio=nearest_ratio(request.size, request.sizes.ratios),
        image_size=(IMAGEN_2K if wants_2k else IMAGEN_1K) if has_2k else None,
        include_rai_reason=True,
        http_options=types.HttpOptions(timeout=timeout_ms) if timeout_ms else None,
    )


def _http_options(base_url: str | None, timeout_seconds: float,
                  transport: httpx.AsyncClient) -> types.HttpOptions:
    return types.HttpOptions(
        base_url=base_url or None,
        timeout=int(timeout_seconds * 1000),
        retry_options=types.HttpRetryOptions(attempts=1),
        # An explicit httpx client pins the SDK's transport: with aiohttp installed
        # (the OpenAI adapter uses it) google-genai would otherwise switch to aiohttp.
        httpx_async_client=transport,
    )


class GeminiAdapter:
    provider = PROVIDER

    def __init__(self, settings: ProviderSettings) -> None:
        self._settings = settings
        self._secrets = [secret.get_secret_value()
                         for secret in (settings.gemini_api_key, settings.vertex_api_key) if secret]
        self._developer: genai.Client | None = None
        self._vertex: genai.Client | None = None
        # The SDK leaves a caller-supplied httpx client open; these are closed in close().
        self._transports: list[httpx.AsyncClient] = []

    def _options(self, base_url: str | None) -> types.HttpOptions:
        transport = httpx.AsyncClient(timeout=self._settings.upstream_timeout_seconds)
        self._transports.append(transport)
        return _http_options(base_url, self._settings.upstream_timeout_seconds, transport)

    def _developer_client(self) -> genai.Client:
        if self._developer is None:
            key = self._settings.gemini_api_key
            if key is None:
                raise no_credentials(PROVIDER)
            self._developer = genai.Client(api_key=key.get_secret_value(),
                                           http_options=self._options(self._settings.gemini_base_url))
        return self._developer

    def _vertex_client(self) -> genai.Client:
        if self._vertex is None:
            settings = self._settings
            if settings.vertex_api_key is None and not (settings.vertex_project and settings.vertex_location):
                raise unavailable(PROVIDER, "no credentials configured for Vertex AI (Imagen)")
            options = self._options(settings.vertex_base_url)
            if settings.vertex_api_key is not None:
                self._vertex = genai.Client(vertexai=True, api_key=settings.vertex_api_key.get_secret_value(),
                                            http_options=options)
            else:
                self._vertex = genai.Client(vertexai=True, project=settings.vertex_project,
                                            location=settings.vertex_location, http_options=options)
        return self._vertex

    async def generate(self, request: ImageRequest, deadline: UpstreamDeadline) -> GenerationResult:
        family = request.family
        if family not in FAMILIES:
            raise model_not_served(PROVIDER, request.model_id)
        budget = deadline.remaining()
        timeout_ms = max(int(budget * 1000), 1)
        try:
            async with asyncio.timeout(budget):
                if family is Family.FLASH_IMAGE:
                    client = self._developer_client()
                    response = await client.aio.models.generate_content(
                        model=request.upstream_model_id, contents=request.prompt,
                        config=flash_image_config(request, timeout_ms))
                    return _flash_image_result(response, request.n)
                client = self._vertex_client()
                with warnings.catch_warnings():
                    # The SDK announces generate_images' future removal (not before 2027)
                    # when the call is made; Vertex generate_images is this release's Imagen path.
                    warnings.simplefilter("ignore", genai_errors.ExperimentalWarning)
                    pending = client.aio.models.generate_images(
                        model=request.upstream_model_id, prompt=request.prompt,
                        config=imagen_config(request, timeout_ms))
                return _imagen_result(await pending, request.n)
        except (TimeoutError, httpx.TimeoutException):
            raise timed_out(PROVIDER) from None
        except genai_errors.APIError as exc:
            raise _error_for(exc, self._secrets) from None
        except httpx.TransportError as exc:
            raise unavailable(PROVIDER, f"could not reach upstream ({type(exc).__name__})") from None
        except google_auth_exceptions.DefaultCredentialsError:
            raise unavailable(PROVIDER, "no application default credentials found for Vertex AI") from None
        except google_auth_exceptions.GoogleAuthError as exc:
            raise unavailable(PROVIDER, f"could not obtain a Vertex AI access token ({type(exc).__name__})") from None
        except ValueError as exc:
            # The SDK raises ValueError for a body it cannot validate.
            raise unavailable(PROVIDER, f"upstream returned a body the SDK rejected ({type(exc).__name__})") from None

    async def close(self) -> None:
        for client in (self._developer, self._vertex):
            if client is not None:
                await client.aio.aclose()
                client.close()
        for transport in self._transports:
            await transport.aclose()


def _error_reasons(exc: genai_errors.APIError) -> set[str]:
    details = exc.details if isinstance(exc.details, dict) else {}
    error = details.get("error", details)
    found = set()
    for detail in (error.get("details") if isinstance(error, dict) else None) or []:
        if isinstance(detail, dict) and detail.get("reason"):
            found.add(str(detail["reason"]))
    return found


def _error_for(exc: genai_errors.APIError, secrets: list[str]) -> UpstreamError:
    code = int(exc.code or 0)
    status = str(exc.status or "")
    message = str(exc.message or "")
    if _error_reasons(exc) & _CREDENTIAL_REASONS:
        return unavailable(PROVIDER, f"upstream rejected our credentials ({status or code})")
    if code in (401, 403):
        return unavailable(PROVIDER, f"upstream denied access ({status or code})")
    if code == 429:
        return unavailable(PROVIDER, f"rate limited by upstream ({status or 429})", retryable=True)
    if code == 408 or status == "DEADLINE_EXCEEDED":
        return timed_out(PROVIDER)
    if code >= 500:
        return unavailable(PROVIDER, f"upstream error ({status or code})", retryable=True)
    return rejected(PROVIDER, message or status or f"HTTP {code}", secrets)


def _enum_name(value: Any) -> str:
    return str(getattr(value, "value", value) or "")


def _flash_image_result(response: types.GenerateContentResponse, requested: int) -> GenerationResult:
    usage = UpstreamUsage()
    if response.usage_metadata is not None:
        meta = response.usage_metadata
        usage = UpstreamUsage(input_tokens=meta.prompt_token_count, output_tokens=meta.candidates_token_count,
                      total_tokens=meta.total_token_count)
    feedback = response.prompt_feedback
    if feedback is not None and feedback.block_reason is not None:
        reason = f"blockReason: {_enum_name(feedback.block_reason)}"
        return GenerationResult(images=flagged_images(max(requested, 1), reason), usage=usage)
    images: list[Image] = []
    for candidate in response.candidates or []:
        parts = candidate.content.parts if candidate.content and candidate.content.parts else []
        text = "".join(part.text for part in parts if part.text and not part.thought) or None
        blobs = [part.inline_data for part in parts if part.inline_data and part.inline_data.data]
        for blob in blobs:
            data = blob.data or b""
            images.append(Image(data=data, mime_type=blob.mime_type or sniff_mime(data), revised_prompt=text))
        if not blobs:
            finish = _enum_name(candidate.finish_reason) or "no image returned"
            suffix = "" if finish in _BLOCKED_FINISH_REASONS else " (no image returned)"
            images.append(Image(flagged=True, flag_reason=f"finishReason: {finish}{suffix}"))
    if not images:
        images = flagged_images(max(requested, 1), "no candidates returned")
    return GenerationResult(images=images, usage=usage)


def _imagen_result(response: types.GenerateImagesResponse, requested: int) -> GenerationResult:
    images: list[Image] = []
    for generated in response.generated_images or []:
        image = generated.image
        if image is not None and image.image_bytes:
            data = image.image_bytes
            images.append(Image(data=data, mime_type=image.mime_type or sniff_mime(data)))
        else:
            images.append(Image(flagged=True, flag_reason=f"raiFilteredReason: {generated.rai_filtered_reason or 'filtered'}"))
    # Imagen leaves filtered images out entirely when it gives no reason ({} when all were).
    missing = requested - len(images)
    if missing > 0:
        images.extend(flagged_images(missing, "raiFilteredReason: filtered without a reason"))
    rendered = [image.data for image in images if not image.flagged]
    return GenerationResult(images=images, usage=UpstreamUsage(megapixels=megapixels(rendered)))
