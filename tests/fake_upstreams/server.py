"""A real HTTP/1.1 server on 127.0.0.1 that records what it receives.

Each fake upstream subclasses `FakeUpstream` and implements `success(request)`.
Tests steer it with:
- `then(*behaviours)`: replies for the next requests, in order, then back to success;
- `always(behaviour)`: every request gets this reply until `reset()`;
- `delay_seconds`: sleep before answering (slow upstreams), interrupted by `stop()`;
- `hold()` / `release()`: keep every answer back until released (ordering tests
  without timing).
A behaviour is a `Reply` or a callable `RecordedRequest -> Reply`.
"""

from __future__ import annotations

import json
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self
from urllib.parse import unquote, urlsplit


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str  # percent-decoded, without the query
    query: str
    headers: dict[str, str]  # lower-case names
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body) if self.body else None


@dataclass
class Reply:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def json(cls, payload: Any, status: int = 200, headers: dict[str, str] | None = None) -> Reply:
        return cls(status, json.dumps(payload).encode(),
                   {"Content-Type": "application/json", **(headers or {})})


_SINGLE_WRITE_LIMIT = 1024 * 1024

Behaviour = Reply | Callable[[RecordedRequest], Reply]


class FakeUpstream:
    """Start with `with FakeX() as fake:` (or start()/stop()); `fake.url` is the root URL."""

    def __init__(self) -> None:
        self.requests: list[RecordedRequest] = []
        self.delay_seconds = 0.0
        self._queue: deque[Behaviour] = deque()
        self._sticky: Behaviour | None = None
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._gate = threading.Event()
        self._gate.set()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # Lifecycle
    def start(self) -> Self:
        server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        server.daemon_threads = True
        server.block_on_close = False
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=f"{type(self).__name__}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        self._gate.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        assert self._server is not None, "start the fake first"
        return self._server.server_address[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # Steering
    def then(self, *behaviours: Behaviour) -> None:
        with self._lock:
            self._queue.extend(behaviours)

    def always(self, behaviour: Behaviour) -> None:
        self._sticky = behaviour

    def hold(self) -> None:
        self._gate.clear()

    def release(self) -> None:
        self._gate.set()

    def reset(self) -> None:
        with self._lock:
            self._queue.clear()
            self.requests.clear()
        self._sticky = None
        self.delay_seconds = 0.0

    @property
    def last(self) -> RecordedRequest:
        return self.requests[-1]

    def bodies(self) -> list[Any]:
        return [request.json() for request in self.requests]

    # Subclass hook
    def success(self, request: RecordedRequest) -> Reply:
        raise NotImplementedError

    def _reply_for(self, request: RecordedRequest) -> Reply:
        with self._lock:
            self.requests.append(request)
            behaviour = self._queue.popleft() if self._queue else (self._sticky or self.success)
        return behaviour(request) if callable(behaviour) else behaviour

    def _pause(self) -> None:
        if self.delay_seconds > 0:
            self._stopping.wait(self.delay_seconds)
        self._gate.wait()


def _handler_for(fake: FakeUpstream) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # No Nagle, and small answers leave in one write: otherwise delayed ACKs add
        # ~40 ms to every exchange on loopback.
        disable_nagle_algorithm = True

        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            parts = urlsplit(self.path)
            request = RecordedRequest(
                method=self.command, path=unquote(parts.path), query=parts.query,
                headers={name.lower(): value for name, value in self.headers.items()}, body=body)
            reply = fake._reply_for(request)
            fake._pause()
            try:
                self.send_response(reply.status)
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(reply.body)))
                self._headers_buffer.append(b"\r\n")
                head = b"".join(self._headers_buffer)
                self._headers_buffer = []
                if len(reply.body) < _SINGLE_WRITE_LIMIT:
                    self.wfile.write(head + reply.body)
                else:
                    self.wfile.write(head)
                    self.wfile.write(reply.body)
            except (BrokenPipeError, ConnectionResetError):
                # The client gave up (timeout test); nothing to answer.
                self.close_connection = True

        do_POST = do_GET = _serve  # noqa: N815 (BaseHTTPRequestHandler naming)

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            return None

    return Handler
