"""A small OpenAI-compatible server on 127.0.0.1, in a thread, that answers what each test tells
it to: a proper model list and completions by default, or HTML, broken JSON, a JSON list, a
reply without `choices`... for the client's handling of hostile or broken servers."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Reply:
    """One answer: a dict or list is sent as JSON, a str or bytes as they are."""

    body: dict | list | str | bytes
    status: int = 200
    content_type: str = "application/json"

    def encoded(self) -> bytes:
        if isinstance(self.body, (dict, list)):
            return json.dumps(self.body).encode()
        return self.body.encode() if isinstance(self.body, str) else self.body


def model_list(*names: str) -> Reply:
    return Reply({"object": "list", "data": [
        {"id": name, "object": "model", "owned_by": "vllm", "max_model_len": 8192}
        for name in names]})


def completion(text: str | None = "1. Name a fruit.") -> Reply:
    return Reply({"object": "text_completion", "choices": [
        {"index": 0, "text": text, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 10, "completion_tokens": 5}})


def chat_completion(content: str | None = "1. Name a fruit.") -> Reply:
    return Reply({"object": "chat.completion", "choices": [
        {"index": 0, "message": {"role": "assistant", "content": content},
         "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 10, "completion_tokens": 5}})


HTML = Reply("<!DOCTYPE html><html><head><title>Welcome to nginx!</title></head>"
             "<body><h1>Welcome to nginx!</h1></body></html>", content_type="text/html")
BROKEN_JSON = Reply('{"object": "list", "data": [{"id": "smollm2-135m"')

# What the server answers at a path: a Reply, or a function of the request (its headers and
# JSON body) that returns one.
Answer = Reply | Callable[[dict, dict], Reply]


class FakeOpenAIServer:
    """`with FakeOpenAIServer(models=..., completions=..., chat=...) as server:` serves
    server.url (the API root, ending in /v1) until the block ends. `hits` counts requests per
    path; `bodies` holds the JSON bodies of the POSTs, in order; `first_post` and `last_post`
    when the first and the last came (time.monotonic())."""

    def __init__(self, models: Answer | None = None, completions: Answer | None = None,
                 chat: Answer | None = None, embeddings: Answer | None = None) -> None:
        self.answers: dict[str, Answer] = {
            "/v1/models": models or model_list("smollm2-135m"),
            "/v1/completions": completions or completion(),
            "/v1/chat/completions": chat or chat_completion(),
        }
        if embeddings is not None:  # served only when a test asks for it, as real servers do
            self.answers["/v1/embeddings"] = embeddings
        self.hits: Counter[str] = Counter()
        self.bodies: list[tuple[str, dict]] = []
        self.first_post: float | None = None
        self.last_post: float | None = None
        self._lock = threading.Lock()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.httpd.daemon_threads = True
        # sigen stopping mid-request resets its connections: not worth a traceback here
        self.httpd.handle_error = lambda *_args: None
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> FakeOpenAIServer:
        self._thread.start()
        return self

    def __exit__(self, *_exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self._thread.join(timeout=5)

    def _answer(self, path: str, headers: dict, body: dict) -> Reply:
        with self._lock:
            self.hits[path] += 1
            if body:
                self.bodies.append((path, body))
                self.last_post = time.monotonic()
                self.first_post = self.first_post or self.last_post
        answer = self.answers.get(path)
        if answer is None:
            return Reply({"error": {"message": f"no route {path}"}}, status=404)
        return answer(headers, body) if callable(answer) else answer

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as real servers do

            def log_message(self, *_args) -> None:
                pass  # a test's output shows only what sigen says

            def _send(self, body: dict) -> None:
                reply = server._answer(self.path.split("?")[0], dict(self.headers), body)
                data = reply.encoded()
                self.send_response(reply.status)
                self.send_header("Content-Type", reply.content_type)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                self._send({})

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                try:
                    body = json.loads(raw or b"{}")
                except ValueError:
                    body = {"unparsed": raw.decode(errors="replace")}
                self._send(body)

        return Handler
