"""The playground (`GET /playground`): a static page, its stylesheet and its script,
shipped in the package (`edge/playground/`), with no build step and no external URL.

The Content-Security-Policy lets the page load only its own files and call only this
origin (`/openapi.json`, `/v1/models`, `/v1/images/generations`); images arrive as
`data:` URLs. `form-action 'none'` keeps a form from ever sending the API key in a URL.
"""

from __future__ import annotations

from importlib import resources

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from quantized_runtime.request_context import new_request_id

PLAYGROUND_PATH = "/playground"
# Outside /v1, so no API route can ever clash with an asset.
ASSETS_PATH = "/playground/assets"

CONTENT_SECURITY_POLICY = "; ".join([
    "default-src 'none'", "script-src 'self'", "style-src 'self'", "img-src 'self' data: blob:",
    "connect-src 'self'", "form-action 'none'", "base-uri 'none'", "frame-ancestors 'none'"])

# Path served -> (file in edge/playground/, media type).
_FILES = {
    PLAYGROUND_PATH: ("index.html", "text/html; charset=utf-8"),
    f"{ASSETS_PATH}/playground.css": ("playground.css", "text/css; charset=utf-8"),
    f"{ASSETS_PATH}/playground.js": ("playground.js", "text/javascript; charset=utf-8"),
}


def playground_routes() -> list[Route]:
    """One GET (and HEAD) route per file, each read once at start."""
    folder = resources.files("edge") / "playground"
    routes = []
    for path, (name, media_type) in _FILES.items():
        content = (folder / name).read_bytes()

        async def serve(request: Request, content: bytes = content, media_type: str = media_type) -> Response:
            return Response(content, media_type=media_type, headers={
                "content-security-policy": CONTENT_SECURITY_POLICY,
                "x-content-type-options": "nosniff",
                "referrer-policy": "no-referrer",
                "cache-control": "no-cache",
                "x-request-id": new_request_id(),
            })

        routes.append(Route(path, serve, methods=["GET"]))
    return routes
