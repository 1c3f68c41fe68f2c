"""An OTLP/HTTP trace sink for benchmarks: accepts every POST /v1/traces and
discards it, so the services pay for building and exporting spans and nothing
else. Prints "ready" once listening.

Run: .venv/bin/python bench/otlp_sink.py PORT
"""

from __future__ import annotations

import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Discard(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:  # noqa: N802 - the http.server hook's name
        self.rfile.read(int(self.headers.get("content-length", "0")))
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the hook's signature
        pass


def main() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Discard)
    print("ready", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
