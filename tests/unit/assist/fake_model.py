"""A stand-in for an OpenAI-compatible endpoint: a small HTTP server on 127.0.0.1 in a thread,
answering ``POST /v1/chat/completions`` as told and keeping what it was sent. The tests never
reach the internet."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class FakeModel:
    url: str = ""
    answer: Any = None  # the message content (a dict is sent as its JSON text)
    status: int = 200
    delay: float = 0.0
    requests: list[dict[str, Any]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)


@contextmanager
def fake_model() -> Iterator[FakeModel]:
    model = FakeModel()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            model.requests.append(json.loads(self.rfile.read(length)))
            model.headers.append(dict(self.headers))
            time.sleep(model.delay)
            content = json.dumps(model.answer) if isinstance(model.answer, dict) else str(model.answer)
            body = json.dumps({"choices": [{"message": {"role": "assistant", "content": content}}]})
            self.send_response(model.status if self.path == "/v1/chat/completions" else 404)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body.encode())

        def log_message(self, format: str, *args: Any) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    model.url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield model
    finally:
        server.shutdown()
        server.server_close()
