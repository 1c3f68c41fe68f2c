"""GET /playground: the static page and its assets, their headers, and what they may reach.
The page's behaviour in a real browser is tests/e2e/test_playground_browser.py."""

from __future__ import annotations

import re

import pytest

from edge.playground_page import CONTENT_SECURITY_POLICY

from tests.edge.conftest import Stack

FILES = {
    "/playground": "text/html; charset=utf-8",
    "/playground/assets/playground.css": "text/css; charset=utf-8",
    "/playground/assets/playground.js": "text/javascript; charset=utf-8",
}


@pytest.mark.parametrize("path", sorted(FILES))
async def test_each_file_is_served_with_a_strict_policy(stack: Stack, path: str) -> None:
    response = await stack.http.get(path)
    assert response.status_code == 200
    assert response.headers["content-type"] == FILES[path]
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["x-request-id"].startswith("req_")
    policy = dict(directive.split(" ", 1) for directive in
                  response.headers["content-security-policy"].split("; "))
    assert policy["default-src"] == "'none'"
    assert (policy["script-src"], policy["connect-src"], policy["form-action"]) == ("'self'", "'self'", "'none'")
    assert policy["img-src"] == "'self' data: blob:"
    assert response.headers["content-security-policy"] == CONTENT_SECURITY_POLICY


async def test_the_page_needs_no_key_and_nothing_outside_this_origin(stack: Stack) -> None:
    texts = {path: (await stack.http.get(path)).text for path in FILES}
    for path, text in texts.items():
        assert not re.search(r"https?://|//[a-z0-9.-]+\.[a-z]{2,}/", text, re.IGNORECASE), path
    page = texts["/playground"]
    # No inline script or handler: the policy would block them.
    assert not re.search(r"<script(?![^>]*\ssrc=)", page) and not re.search(r"\son[a-z]+=", page)
    script = texts["/playground/assets/playground.js"]
    for storage in ("localStorage", "sessionStorage", "document.cookie", "indexedDB"):
        assert storage not in script
    key_input = re.search(r"<input id=\"api-key\"[^>]*>", page, re.DOTALL)
    assert key_input and 'type="password"' in key_input[0] and 'autocomplete="off"' in key_input[0]
    # Without a name it is never serialised into a form submission.
    assert "name=" not in key_input[0]


async def test_the_playground_paths_take_get_and_head_only(stack: Stack) -> None:
    head = await stack.http.head("/playground")
    assert head.status_code == 200 and head.content == b""
    assert head.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    response = await stack.http.post("/playground")
    assert response.status_code == 405
    assert response.json()["error"]["code"] == "method_not_allowed"
    assert (await stack.http.get("/playground/assets/other.js")).status_code == 404
