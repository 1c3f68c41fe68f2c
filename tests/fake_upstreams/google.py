"""Fake Google endpoints for google-genai (upstream-apis.md section 3), on one server:

- Gemini Developer API: POST /v1/models/{model}:generateContent (also /v1beta/);
  key in `x-goog-api-key`.
- Vertex AI: POST /v1beta1/[projects/{p}/locations/{l}/]publishers/google/models/{model}:predict;
  express mode key in `x-goog-api-key`, or `Authorization: Bearer` with project/location
  (application default credentials from `service_account_file()`, exchanged at POST /token).

Only documented response keys are used: the SDK validates responses strictly.
"""

from __future__ import annotations

import base64
import functools
import json
import re
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.fake_upstreams.images import size_for_ratio, solid_image
from tests.fake_upstreams.server import FakeUpstream, RecordedRequest, Reply

GEMINI_API_KEY = "AIzaFakeGeminiKey0123456789"
VERTEX_API_KEY = "AQ.FakeVertexExpressKey0123456789"
ACCESS_TOKEN = "ya29.fake-access-token"
TOKEN_PATH = "/token"
FLASH_IMAGE = "gemini-2.5-flash-image"
IMAGEN_MODELS = ("imagen-4.0-generate-001", "imagen-4.0-fast-generate-001", "imagen-4.0-ultra-generate-001")
FLASH_RATIOS = {"1:1", "2:3", "3:2", "3:4", "4:3", "4:5", "5:4", "9:16", "16:9", "21:9"}
IMAGEN_RATIOS = {"1:1", "3:4", "4:3", "9:16", "16:9"}
_IMAGEN_PARAMETERS = {"sampleCount", "aspectRatio", "sampleImageSize", "includeRaiReason",
                      "negativePrompt", "seed", "addWatermark"}
_GENERATION_CONFIG = {"responseModalities", "imageConfig", "candidateCount"}

_GEMINI_PATH = re.compile(r"/v1(?:beta)?/models/([^/:]+):generateContent")
_VERTEX_PATH = re.compile(r"/v1beta1/(?:projects/[^/]+/locations/[^/]+/)?publishers/google/models/([^/:]+):predict")


def google_error(status: int, grpc_status: str, message: str, details: list[dict[str, Any]] | None = None) -> Reply:
    return Reply.json({"error": {"code": status, "message": message, "status": grpc_status,
                                 "details": details or []}}, status=status)


# Every error row of the reference table, by name.
ERRORS: dict[str, Reply] = {
    "api_key_invalid": google_error(400, "INVALID_ARGUMENT", "API key not valid. Please pass a valid API key.", [
        {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID",
         "domain": "googleapis.com", "metadata": {"service": "generativelanguage.googleapis.com"}}]),
    "permission_denied": google_error(403, "PERMISSION_DENIED",
                                      "Method doesn't allow unregistered callers (callers without established identity)."),
    "resource_exhausted": google_error(429, "RESOURCE_EXHAUSTED", "You exceeded your current quota.", [
        {"@type": "type.googleapis.com/google.rpc.QuotaFailure",
         "violations": [{"quotaMetric": "generativelanguage.googleapis.com/generate_content_free_tier_requests",
                         "quotaId": "GenerateRequestsPerMinutePerProjectPerModel-FreeTier"}]},
        {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "12s"}]),
    "not_found": google_error(404, "NOT_FOUND", "models/gemini-9 is not found for API version v1."),
    "invalid_argument": google_error(400, "INVALID_ARGUMENT",
                                     "Invalid value at 'generation_config.image_config.aspect_ratio'."),
    "internal": google_error(500, "INTERNAL", "An internal error has occurred."),
    "unavailable": google_error(503, "UNAVAILABLE", "The model is overloaded. Please try again later."),
}


@functools.lru_cache(maxsize=1)
def _private_key_pem() -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


def _invalid(message: str) -> Reply:
    return google_error(400, "INVALID_ARGUMENT", message)


class FakeGoogle(FakeUpstream):
    """`base_url` serves as both GOOGLE_GEMINI_BASE_URL and GOOGLE_VERTEX_BASE_URL."""

    def __init__(self, gemini_api_key: str = GEMINI_API_KEY, vertex_api_key: str = VERTEX_API_KEY) -> None:
        super().__init__()
        self.gemini_api_key = gemini_api_key
        self.vertex_api_key = vertex_api_key
        self.image_override: bytes | None = None

    @property
    def base_url(self) -> str:
        return self.url

    @staticmethod
    def error(name: str) -> Reply:
        return ERRORS[name]

    def service_account_file(self, directory: Path) -> Path:
        """An ADC file (service account) whose token endpoint is this fake.

        google-auth honours `token_uri` for service accounts (not for authorized_user
        files, whose endpoint is fixed), so the whole OAuth exchange stays local.
        """
        path = directory / "adc.json"
        path.write_text(json.dumps({
            "type": "service_account", "project_id": "fake-project", "private_key_id": "fake-key-id",
            "private_key": _private_key_pem(), "client_email": "router@fake-project.iam.gserviceaccount.com",
            "client_id": "1234567890", "token_uri": f"{self.url}{TOKEN_PATH}"}))
        return path

    # Content-filter outcomes (all HTTP 200)
    @staticmethod
    def prompt_blocked(reason: str = "PROHIBITED_CONTENT") -> Reply:
        return Reply.json({"promptFeedback": {"blockReason": reason},
                           "usageMetadata": {"promptTokenCount": 4, "totalTokenCount": 4}})

    @staticmethod
    def image_withheld(finish_reason: str = "IMAGE_SAFETY") -> Reply:
        return Reply.json({"candidates": [{"content": {"role": "model", "parts": [
            {"text": "I can't create that image."}]}, "finishReason": finish_reason, "index": 0}],
            "usageMetadata": {"promptTokenCount": 4, "candidatesTokenCount": 7, "totalTokenCount": 11}})

    def rai_filtered(self, request: RecordedRequest) -> Reply:
        """The first image comes back, the others are filtered with a reason."""
        parameters = request.json()["parameters"]
        width, height = size_for_ratio(parameters.get("aspectRatio", "1:1"))
        predictions: list[dict[str, Any]] = [self._prediction(width, height)]
        predictions += [{"raiFilteredReason": "Your current safety filter threshold filtered out one or "
                         "more images. Support codes: 58061214"}] * (parameters.get("sampleCount", 1) - 1)
        return Reply.json({"predictions": predictions})

    @staticmethod
    def all_filtered() -> Reply:
        return Reply.json({})

    def success(self, request: RecordedRequest) -> Reply:
        if request.path == TOKEN_PATH:
            # OAuth token endpoint for application default credentials (service_account_file).
            return Reply.json({"access_token": ACCESS_TOKEN, "expires_in": 3600, "token_type": "Bearer"})
        gemini = _GEMINI_PATH.fullmatch(request.path)
        if gemini is not None:
            if request.headers.get("x-goog-api-key") != self.gemini_api_key:
                return ERRORS["api_key_invalid"]
            return self._generate_content(gemini.group(1), request.json())
        vertex = _VERTEX_PATH.fullmatch(request.path)
        if vertex is not None:
            authorized = (request.headers.get("x-goog-api-key") == self.vertex_api_key
                          or request.headers.get("authorization") == f"Bearer {ACCESS_TOKEN}")
            if not authorized:
                return ERRORS["api_key_invalid"]
            return self._predict(vertex.group(1), request.json())
        return google_error(404, "NOT_FOUND", f"The requested URL {request.path} was not found on this server.")

    def _prediction(self, width: int, height: int) -> dict[str, Any]:
        data = self.image_override or solid_image(width, height)
        return {"mimeType": "image/png", "bytesBase64Encoded": base64.b64encode(data).decode()}

    def _generate_content(self, model: str, body: dict[str, Any]) -> Reply:
        if model != FLASH_IMAGE:
            return google_error(404, "NOT_FOUND", f"models/{model} is not found for API version v1.")
        contents = body.get("contents") or []
        if not contents or not contents[0].get("parts"):
            return _invalid("* GenerateContentRequest.contents: contents is not specified")
        config = body.get("generationConfig") or {}
        extra = set(config) - _GENERATION_CONFIG
        if extra:
            return _invalid(f"Invalid JSON payload received. Unknown name \"{sorted(extra)[0]}\" at 'generation_config'.")
        ratio = (config.get("imageConfig") or {}).get("aspectRatio", "1:1")
        if ratio not in FLASH_RATIOS:
            return ERRORS["invalid_argument"]
        width, height = size_for_ratio(ratio)
        data = self.image_override or solid_image(width, height)
        prompt = contents[0]["parts"][0].get("text", "")
        candidates = [{"content": {"role": "model", "parts": [
            {"text": f"Here is your image of {prompt}."},
            {"inlineData": {"mimeType": "image/png", "data": base64.b64encode(data).decode()}}]},
            "finishReason": "STOP", "index": index} for index in range(config.get("candidateCount", 1))]
        return Reply.json({"candidates": candidates, "usageMetadata": {
            "promptTokenCount": 4, "candidatesTokenCount": 1290 * len(candidates),
            "totalTokenCount": 4 + 1290 * len(candidates)}, "modelVersion": FLASH_IMAGE})

    def _predict(self, model: str, body: dict[str, Any]) -> Reply:
        if model not in IMAGEN_MODELS:
            return google_error(404, "NOT_FOUND", f"Publisher Model `{model}` was not found.")
        instances = body.get("instances") or []
        if not instances or not instances[0].get("prompt"):
            return _invalid("Prompt is required.")
        parameters = body.get("parameters") or {}
        extra = set(parameters) - _IMAGEN_PARAMETERS
        if extra:
            return _invalid(f"Unknown parameter {sorted(extra)[0]}.")
        count = parameters.get("sampleCount", 4)
        if not 1 <= count <= 4:
            return _invalid("sampleCount must be between 1 and 4.")
        ratio = parameters.get("aspectRatio", "1:1")
        if ratio not in IMAGEN_RATIOS:
            return _invalid(f"Unsupported aspect ratio {ratio}.")
        tier = parameters.get("sampleImageSize", "1K")
        if tier not in ("1K", "2K") or (tier == "2K" and "-fast-" in model):
            return _invalid(f"Unsupported sampleImageSize {tier} for {model}.")
        if "seed" in parameters and parameters.get("addWatermark", True):
            return _invalid("Seed is not supported when watermark is enabled.")
        width, height = size_for_ratio(ratio, 2048 if tier == "2K" else 1024)
        return Reply.json({"predictions": [self._prediction(width, height) for _ in range(count)]})
