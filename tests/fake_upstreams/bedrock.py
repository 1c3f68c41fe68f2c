"""Fake Bedrock Runtime InvokeModel: POST /model/{modelId}/invoke (upstream-apis.md section 2).

Reach it with boto3 `endpoint_url=fake.url` (or AWS_ENDPOINT_URL_BEDROCK_RUNTIME)
and any dummy credentials. It validates Titan v2, Nova Canvas and Stability
bodies as the reference describes, answers errors with `x-amzn-ErrorType` and
`{"message"}`, and has every error row and content-filter outcome by name.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Callable
from typing import Any

from tests.fake_upstreams.images import size_for_ratio, solid_image
from tests.fake_upstreams.server import FakeUpstream, RecordedRequest, Reply

TITAN = "amazon.titan-image-generator-v2:0"
NOVA = "amazon.nova-canvas-v1:0"
STABILITY_MODELS = ("stability.stable-image-core-v1:0", "stability.stable-image-ultra-v1:0",
                    "stability.sd3-5-large-v1:0")

TITAN_SIZES = {
    (1024, 1024), (768, 768), (512, 512), (768, 1152), (384, 576), (1152, 768), (576, 384),
    (768, 1280), (384, 640), (1280, 768), (640, 384), (896, 1152), (448, 576), (1152, 896),
    (576, 448), (768, 1408), (384, 704), (1408, 768), (704, 384), (640, 1408), (320, 704),
    (1408, 640), (704, 320), (1152, 640), (1173, 640)}
STABILITY_RATIOS = {"16:9", "1:1", "21:9", "2:3", "3:2", "4:5", "5:4", "9:16", "9:21"}
_STABILITY_FIELDS = {"prompt", "negative_prompt", "aspect_ratio", "seed", "output_format", "mode"}
_TITAN_CONFIG_FIELDS = {"numberOfImages", "width", "height", "cfgScale", "seed", "quality"}

INPUT_BLOCKED_MESSAGE = ("This request has been blocked by our content filters. Please adjust your "
                         "text prompt to submit a new request.")
ALL_BLOCKED_MESSAGE = "All of the generated images have been blocked by our content filters."
SOME_BLOCKED_MESSAGE = "Some of the generated images have been blocked by our content filters."


def aws_error(name: str, status: int, message: str) -> Reply:
    return Reply.json({"message": message}, status=status, headers={
        "x-amzn-ErrorType": f"{name}:http://internal.amazon.com/coral/com.amazon.bedrock/",
        "x-amzn-RequestId": "00000000-0000-4000-8000-000000000000"})


# Every error row of the reference table, by exception name.
ERRORS: dict[str, Reply] = {
    "ValidationException": aws_error("ValidationException", 400, "Malformed input request: #: extraneous key [foo] is not permitted, please reformat your input and try again."),
    "ServiceQuotaExceededException": aws_error("ServiceQuotaExceededException", 400, "Your request exceeds the service quota for your account."),
    "AccessDeniedException": aws_error("AccessDeniedException", 403, "You don't have access to the model with the specified model ID."),
    "UnrecognizedClientException": aws_error("UnrecognizedClientException", 403, "The security token included in the request is invalid."),
    "ResourceNotFoundException": aws_error("ResourceNotFoundException", 404, "Model not found."),
    "ModelTimeoutException": aws_error("ModelTimeoutException", 408, "Model has timed out in processing the request."),
    "ModelErrorException": aws_error("ModelErrorException", 424, "The model failed to process the request."),
    "ThrottlingException": aws_error("ThrottlingException", 429, "Too many requests, please wait before trying again."),
    "ModelNotReadyException": aws_error("ModelNotReadyException", 429, "Model is not ready to serve inference requests."),
    "InternalServerException": aws_error("InternalServerException", 500, "The server encountered an internal error."),
    "ServiceUnavailableException": aws_error("ServiceUnavailableException", 503, "The service is unavailable."),
}


def _invalid(message: str) -> Reply:
    return aws_error("ValidationException", 400, message)


class FakeBedrock(FakeUpstream):
    def __init__(self) -> None:
        super().__init__()
        self.image_override: bytes | None = None

    @staticmethod
    def error(name: str) -> Reply:
        return ERRORS[name]

    def regions(self) -> list[str]:
        """The region of each request, read from its SigV4 credential scope."""
        found = []
        for request in self.requests:
            match = re.search(r"Credential=[^/]+/\d{8}/([^/]+)/", request.headers.get("authorization", ""))
            found.append(match.group(1) if match else "")
        return found

    # Content-filter outcomes
    @staticmethod
    def input_blocked() -> Reply:
        return _invalid(INPUT_BLOCKED_MESSAGE)

    def output_all_blocked(self, request: RecordedRequest) -> Reply:
        return Reply.json({"images": [], "error": ALL_BLOCKED_MESSAGE})

    def output_some_blocked(self, request: RecordedRequest) -> Reply:
        config = request.json()["imageGenerationConfig"]
        kept = max(config.get("numberOfImages", 1) - 1, 1)
        image = self._image(config["width"], config["height"], "png")
        return Reply.json({"images": [image] * kept, "error": SOME_BLOCKED_MESSAGE})

    @staticmethod
    def stability_finish(reason: str) -> Callable[[RecordedRequest], Reply]:
        """A Stability answer whose finish reason is e.g. 'Filter reason: prompt'."""
        def reply(request: RecordedRequest) -> Reply:
            return Reply.json({"seeds": [1234], "finish_reasons": [reason], "images": [
                base64.b64encode(solid_image(64, 64)).decode()]})
        return reply

    def _image(self, width: int, height: int, output_format: str) -> str:
        return base64.b64encode(self.image_override or solid_image(width, height, output_format)).decode()

    def success(self, request: RecordedRequest) -> Reply:
        match = re.fullmatch(r"/model/(.+)/invoke", request.path)
        if match is None or request.method != "POST":
            return aws_error("UnknownOperationException", 404, "Unknown operation")
        if "authorization" not in request.headers:
            return aws_error("MissingAuthenticationTokenException", 403, "Missing Authentication Token")
        model_id = match.group(1)
        try:
            body = request.json()
        except ValueError:
            return _invalid("Malformed input request, please reformat your input and try again.")
        if model_id in (TITAN, NOVA):
            return self._titan_nova(model_id, body)
        if model_id in STABILITY_MODELS:
            return self._stability(body)
        return _invalid("The provided model identifier is invalid.")

    def _titan_nova(self, model_id: str, body: dict[str, Any]) -> Reply:
        if body.get("taskType") != "TEXT_IMAGE":
            return _invalid("Malformed input request: taskType must be TEXT_IMAGE")
        params = body.get("textToImageParams") or {}
        config = body.get("imageGenerationConfig") or {}
        extra = set(params) - {"text", "negativeText"} | set(config) - _TITAN_CONFIG_FIELDS
        if extra:
            return _invalid(f"Malformed input request: extraneous key [{sorted(extra)[0]}] is not permitted")
        limit = 512 if model_id == TITAN else 1024
        for key in ("text", "negativeText"):
            if key in params and not 1 <= len(params[key]) <= limit:
                return _invalid(f"Malformed input request: {key} length must be 1..{limit}")
        count = config.get("numberOfImages", 1)
        if not 1 <= count <= 5:
            return _invalid("Malformed input request: numberOfImages must be 1..5")
        if config.get("quality", "standard") not in ("standard", "premium"):
            return _invalid("Malformed input request: quality must be standard or premium")
        width, height = config.get("width", 1024), config.get("height", 1024)
        if model_id == TITAN:
            if (width, height) not in TITAN_SIZES:
                return _invalid(f"Malformed input request: size {width}x{height} is not supported")
            seed_max = 2_147_483_646
        else:
            ok = (320 <= width <= 4096 and 320 <= height <= 4096 and width % 16 == 0 and height % 16 == 0
                  and max(width / height, height / width) <= 4 and width * height < 4_194_304)
            if not ok:
                return _invalid(f"Malformed input request: size {width}x{height} is not supported")
            seed_max = 858_993_459
        if not 0 <= config.get("seed", 0) <= seed_max:
            return _invalid(f"Malformed input request: seed must be 0..{seed_max}")
        image = self._image(width, height, "png")
        return Reply.json({"images": [image] * count, "error": None})

    def _stability(self, body: dict[str, Any]) -> Reply:
        extra = set(body) - _STABILITY_FIELDS
        if extra:
            return _invalid(f"Malformed input request: extraneous key [{sorted(extra)[0]}] is not permitted")
        ratio = body.get("aspect_ratio", "1:1")
        if ratio not in STABILITY_RATIOS:
            return _invalid(f"Malformed input request: aspect_ratio {ratio} is not supported")
        output_format = body.get("output_format", "png")
        if output_format not in ("png", "jpeg"):
            return _invalid("Malformed input request: output_format must be jpeg or png")
        if not 0 <= body.get("seed", 0) <= 4_294_967_294:
            return _invalid("Malformed input request: seed must be 0..4294967294")
        seed = body.get("seed") or 2130420379
        width, height = size_for_ratio(ratio)
        return Reply.json({"seeds": [seed], "finish_reasons": [None],
                           "images": [self._image(width, height, output_format)]})
