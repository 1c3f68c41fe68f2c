"""AWS Bedrock Runtime InvokeModel through boto3.

boto3 blocks, so calls run on a bounded thread pool: a slow upstream ties up
pool threads, never the event loop. One client per region (Stability rows are
us-west-2), botocore retries off (one attempt in total) so the service's own retry is
the only one. Credentials come from the standard AWS chain; the endpoint from
AWS_ENDPOINT_URL_BEDROCK_RUNTIME when set.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
    PartialCredentialsError,
    ReadTimeoutError,
)

from provider_svc.domain import (
    GenerationResult,
    Image,
    ImageRequest,
    UpstreamDeadline,
    UpstreamUsage,
    flagged_images,
)
from provider_svc.families import Family
from provider_svc.imaging import decode_b64, megapixels, sniff_mime
from provider_svc.policy import forwardable
from provider_svc.settings import ProviderSettings
from provider_svc.sizes import fit_size, nearest_ratio
from provider_svc.upstream_errors import (
    UpstreamError,
    model_not_served,
    no_credentials,
    rejected,
    timed_out,
    unavailable,
)

PROVIDER = "bedrock"
FAMILIES = (Family.TITAN, Family.NOVA, Family.STABILITY)
DEFAULT_REGION = "us-east-1"
STABILITY_REGION = "us-west-2"

# The one ValidationException that is a content-filter outcome, not a bad parameter.
_CONTENT_FILTER_MARKER = "content filters"
_CREDENTIAL_CODES = {"UnrecognizedClientException", "InvalidSignatureException",
                     "ExpiredTokenException", "IncompleteSignature", "MissingAuthenticationToken"}
_RETRYABLE_CODES = {"ThrottlingException", "ModelNotReadyException", "InternalServerException",
                    "ServiceUnavailableException"}
_STABILITY_FILTER_PREFIX = "filter reason"


def titan_nova_body(request: ImageRequest, family: Family) -> dict[str, Any]:
    size = fit_size(request.size, request.sizes, request.size_range)
    fields = forwardable(request, family)
    text_params: dict[str, Any] = {"text": request.prompt}
    if "negative_prompt" in fields:
        text_params["negativeText"] = fields["negative_prompt"]
    config: dict[str, Any] = {"numberOfImages": request.n, "width": size.width, "height": size.height}
    if "quality" in fields:
        config["quality"] = fields["quality"]
    if "seed" in fields:
        config["seed"] = fields["seed"]
    return {"taskType": "TEXT_IMAGE", "textToImageParams": text_params, "imageGenerationConfig": config}


def stability_body(request: ImageRequest) -> dict[str, Any]:
    body: dict[str, Any] = {"prompt": request.prompt, "mode": "text-to-image",
                            "aspect_ratio": nearest_ratio(request.size, request.sizes.ratios)}
    body.update(forwardable(request, Family.STABILITY))
    return body


def build_body(request: ImageRequest, family: Family) -> dict[str, Any]:
    return stability_body(request) if family is Family.STABILITY else titan_nova_body(request, family)


class BedrockAdapter:
    provider = PROVIDER

    def __init__(self, settings: ProviderSettings) -> None:
        self._executor = ThreadPoolExecutor(max_workers=settings.bedrock_max_workers,
                                            thread_name_prefix="bedrock")
        self._endpoint_url = settings.bedrock_endpoint_url or None
        self._config = Config(
            # total_max_attempts counts the first try; botocore's `max_attempts`
            # counts retries only, so max_attempts=1 would still send twice.
            retries={"total_max_attempts": 1, "mode": "standard"},
            read_timeout=settings.upstream_timeout_seconds,
            connect_timeout=min(settings.upstream_timeout_seconds, 10.0),
            max_pool_connections=settings.bedrock_max_workers,
        )
        self._session = boto3.session.Session()
        # Least recently used first; bounded, as a region is whatever a route names.
        self._clients: OrderedDict[str, Any] = OrderedDict()
        self._client_cache_size = settings.region_client_cache_size
        # boto3 sessions are not thread-safe for client creation.
        self._lock = threading.Lock()

    def _client(self, region: str) -> Any:
        with self._lock:
            client = self._clients.get(region)
            if client is None:
                client = self._session.client("bedrock-runtime", region_name=region,
                                              endpoint_url=self._endpoint_url, config=self._config)
                self._clients[region] = client
                if len(self._clients) > self._client_cache_size:
                    # Not closed: another thread may still be calling through it;
                    # its pool goes when its last call lets go of it.
                    self._clients.popitem(last=False)
            else:
                self._clients.move_to_end(region)
            return client

    def _invoke(self, region: str, model_id: str, body: bytes) -> dict[str, Any]:
        response = self._client(region).invoke_model(
            modelId=model_id, body=body, contentType="application/json", accept="application/json")
        return json.loads(response["body"].read())

    async def generate(self, request: ImageRequest, deadline: UpstreamDeadline) -> GenerationResult:
        family = request.family
        if family not in FAMILIES:
            raise model_not_served(PROVIDER, request.model_id)
        region = request.region or (STABILITY_REGION if family is Family.STABILITY else DEFAULT_REGION)
        body = json.dumps(build_body(request, family)).encode()
        loop = asyncio.get_running_loop()
        try:
            payload = await asyncio.wait_for(
                loop.run_in_executor(self._executor, self._invoke, region, request.upstream_model_id, body),
                deadline.remaining())
        except TimeoutError:
            raise timed_out(PROVIDER) from None
        except ClientError as exc:
            return _client_error(exc, request)
        except (NoCredentialsError, PartialCredentialsError):
            raise no_credentials(PROVIDER) from None
        except (ReadTimeoutError, ConnectTimeoutError):
            raise timed_out(PROVIDER) from None
        except EndpointConnectionError:
            raise unavailable(PROVIDER, "could not reach upstream (EndpointConnectionError)") from None
        except BotoCoreError as exc:
            raise unavailable(PROVIDER, f"upstream call failed ({type(exc).__name__})") from None
        except ValueError:
            raise unavailable(PROVIDER, "upstream returned a malformed body") from None
        if not isinstance(payload, dict):
            raise unavailable(PROVIDER, "upstream returned a malformed body")
        if family is Family.STABILITY:
            return _stability_result(payload)
        return _titan_nova_result(payload, request.n)

    async def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
        with self._lock:
            for client in self._clients.values():
                client.close()
            self._clients.clear()


def _client_error(exc: ClientError, request: ImageRequest) -> GenerationResult:
    error = exc.response.get("Error", {})
    code = str(error.get("Code") or "")
    message = str(error.get("Message") or "")
    status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
    if code == "ValidationException" and _CONTENT_FILTER_MARKER in message.lower():
        count = 1 if request.family is Family.STABILITY else request.n
        return GenerationResult(images=flagged_images(count, message))
    raise _error_for(code, message, status)


def _error_for(code: str, message: str, status: int) -> UpstreamError:
    if code in _RETRYABLE_CODES or status == 429 or status >= 500:
        return unavailable(PROVIDER, f"upstream {code or 'error'} (HTTP {status})", retryable=True)
    if code in _CREDENTIAL_CODES:
        return unavailable(PROVIDER, f"upstream rejected our credentials ({code})")
    if code == "AccessDeniedException":
        return unavailable(PROVIDER, "access to the model is denied for our credentials (AccessDeniedException)")
    if code == "ServiceQuotaExceededException":
        return unavailable(PROVIDER, "service quota exceeded (ServiceQuotaExceededException)")
    if code == "ModelTimeoutException" or status == 408:
        return timed_out(PROVIDER)
    if code == "ModelErrorException":
        return unavailable(PROVIDER, "the model failed to process the request (ModelErrorException)")
    if 400 <= status < 500:
        return rejected(PROVIDER, f"{code}: {message}" if code else message)
    return unavailable(PROVIDER, f"upstream {code or 'error'} (HTTP {status})")


def _titan_nova_result(payload: dict[str, Any], requested: int) -> GenerationResult:
    blobs = [decode_b64(item) for item in payload.get("images") or []]
    images = [Image(data=blob, mime_type=sniff_mime(blob)) for blob in blobs if blob]
    error = payload.get("error")
    if error:
        # "All ... blocked" comes back with no images, "Some ... blocked" with fewer:
        # keep what came back and flag the rest.
        images.extend(flagged_images(max(requested - len(images), 1 if not images else 0), str(error)))
    return GenerationResult(images=images, usage=UpstreamUsage(megapixels=megapixels([i.data for i in images])))


def _stability_result(payload: dict[str, Any]) -> GenerationResult:
    raw_images = payload.get("images") or []
    seeds = payload.get("seeds") or []
    reasons = payload.get("finish_reasons") or []
    images = []
    for index in range(max(len(raw_images), len(reasons))):
        encoded = raw_images[index] if index < len(raw_images) else ""
        reason = reasons[index] if index < len(reasons) else None
        seed = seeds[index] if index < len(seeds) and isinstance(seeds[index], int) else None
        if reason and str(reason).lower().startswith(_STABILITY_FILTER_PREFIX):
            images.append(Image(flagged=True, flag_reason=str(reason), seed=seed))
            continue
        if reason:
            raise unavailable(PROVIDER, "upstream did not finish the image", retryable=True,
                              upstream_text=str(reason))
        blob = decode_b64(encoded)
        images.append(Image(data=blob, mime_type=sniff_mime(blob), seed=seed))
    rendered = [image.data for image in images if not image.flagged]
    return GenerationResult(images=images, usage=UpstreamUsage(megapixels=megapixels(rendered)))
