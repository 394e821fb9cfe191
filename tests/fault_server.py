"""A tiny OpenAI-compatible `/v1/chat/completions` server with injectable faults, for testing API clients.

It answers deterministically: each choice's content is `"<prompt>|<choice index>|<seed>"` and usage counts the
prompt's words and one token per choice. Faults are queued per prompt text and used up one per request:

    "429:1"  HTTP 429 with `Retry-After: 1`        "500"   HTTP 500
    "400"    HTTP 400 (not retryable)              "401"   HTTP 401 whose body echoes the bearer token
    "slow"   answer after `slow_s` (past the client's timeout)
    "drop"   close the connection without a response

    with FaultServer() as server:
        server.faults["hello"] = ["500", "drop"]      # the third request with prompt "hello" succeeds
        ... OpenAI(base_url=server.url) ...
"""

from __future__ import annotations

import json
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Seen:
    """One request as the server received it."""

    at: float
    body: dict[str, Any]
    headers: dict[str, str]

    @property
    def prompt(self) -> str:
        return _prompt(self.body)


def _prompt(body: dict[str, Any]) -> str:
    content = body["messages"][-1]["content"]
    if isinstance(content, str):
        return content
    return "".join(part.get("text", "") for part in content if part.get("type") == "text")


@dataclass
class FaultServer:
    """Start with `with FaultServer() as s:`; `s.url` is the base URL to give an OpenAI client."""

    delay_s: float = 0.0  # every normal answer takes this long (to see requests overlap)
    slow_s: float = 1.0
    max_choices: int | None = None  # 1 = ignore `n`, like `transformers serve`
    faults: dict[str, list[str]] = field(default_factory=dict)
    seen: list[Seen] = field(default_factory=list)
    max_in_flight: int = 0
    _in_flight: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __enter__(self) -> FaultServer:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as real servers do: a dropped connection is then a surprise
            disable_nagle_algorithm = True  # else headers and body in two packets wait ~40 ms for a delayed ACK

            def log_message(self, *args: Any) -> None:  # quiet
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                server._handle(self, body)

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._httpd.handle_error = lambda *args: None  # type: ignore[method-assign]  # clients that hung up
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"

    def attempts(self, prompt: str) -> list[Seen]:
        return [s for s in self.seen if s.prompt == prompt]

    def _handle(self, handler: BaseHTTPRequestHandler, body: dict[str, Any]) -> None:
        prompt = _prompt(body)
        with self._lock:
            self.seen.append(Seen(time.monotonic(), body, {k.lower(): v for k, v in handler.headers.items()}))
            queue = self.faults.get(prompt, [])
            fault = queue.pop(0) if queue else None
            self._in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self._in_flight)
        try:
            self._respond(handler, body, prompt, fault)
        finally:
            with self._lock:
                self._in_flight -= 1

    def _respond(self, handler: BaseHTTPRequestHandler, body: dict[str, Any], prompt: str, fault: str | None) -> None:
        if fault == "drop":
            handler.close_connection = True
            handler.connection.shutdown(socket.SHUT_RDWR)
            return
        if fault and fault.startswith("429"):
            retry_after = fault.split(":")[1] if ":" in fault else None
            self._send(handler, 429, {"error": {"message": "rate limited"}}, retry_after)
            return
        if fault == "401":
            token = handler.headers.get("Authorization", "")
            self._send(handler, 401, {"error": {"message": f"Incorrect API key provided: {token}"}})
            return
        if fault in ("400", "500"):
            self._send(handler, int(fault), {"error": {"message": f"injected {fault}"}})
            return
        time.sleep(self.slow_s if fault == "slow" else self.delay_s)
        n = int(body.get("n") or 1)
        n = min(n, self.max_choices) if self.max_choices else n
        seed = body.get("seed")
        choices = [
            {"index": i, "finish_reason": "stop", "message": {"role": "assistant", "content": f"{prompt}|{i}|{seed}"}}
            for i in range(n)
        ]
        usage = {"prompt_tokens": len(prompt.split()), "completion_tokens": n, "total_tokens": len(prompt.split()) + n}
        reply = {"id": "x", "object": "chat.completion", "created": 0, "model": body.get("model", ""),
                 "choices": choices, "usage": usage}  # fmt: skip
        self._send(handler, 200, reply)

    @staticmethod
    def _send(handler: BaseHTTPRequestHandler, status: int, payload: dict[str, Any], retry_after: str | None = None):
        data = json.dumps(payload).encode()
        try:
            handler.send_response(status)
            handler.send_header("Content-Type", "application/json")
            handler.send_header("Content-Length", str(len(data)))
            if retry_after is not None:
                handler.send_header("Retry-After", retry_after)
            handler.end_headers()
            handler.wfile.write(data)
        except OSError:  # the client timed out and hung up
            pass
