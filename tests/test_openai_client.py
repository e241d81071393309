"""The openai engine's client logic on responses recorded from a real `vllm serve` (CPU build,
packaged model): request bodies, retries with backoff, replicas taken out of rotation and back,
the outage that stops a run, errors that retrying cannot fix. The transport replays the recorded
responses (or raises the connection errors a dead server gives); everything above it is the real
engine. The real server itself is exercised in test_server.py.
"""

from __future__ import annotations

import asyncio
import gc
import json
import threading
import time
from pathlib import Path

import httpx
import pytest

from selfinstruct_local.engines import openai as client
from selfinstruct_local.engines.base import EngineOptions, Request, render_prompt
from selfinstruct_local.engines.openai import OpenAIEngine, parse_base_urls, public_url
from selfinstruct_local.errors import SigenError
from selfinstruct_local.interrupt import ServerUnavailable
from selfinstruct_local.models import ModelSpec

RECORDED = Path(__file__).parent / "fixtures" / "server"
A, B = "http://gpu01:8000/v1", "http://gpu02:8000/v1"


def recorded(name: str) -> httpx.Response:
    data = json.loads((RECORDED / f"{name}.json").read_text(encoding="utf-8"))
    return httpx.Response(data["status"], json=data["body"])


@pytest.fixture(autouse=True)
def fast_backoff(monkeypatch):
    """Real backoff waits seconds; the logic is the same at a hundredth of the scale."""
    monkeypatch.setattr(client, "BACKOFF", (0.005, 0.02))
    monkeypatch.setattr(client, "COOLDOWN", (0.05, 0.2))


class Servers:
    """A scripted set of servers: per host, a queue of answers for /completions (a Response,
    or an exception class to raise), then the recorded completion; /models answers recorded."""

    def __init__(self, script: dict[str, list] | None = None, dead: tuple[str, ...] = ()):
        self.script = {k: list(v) for k, v in (script or {}).items()}
        self.dead = {httpx.URL(u).host for u in dead}
        self.seen: list[httpx.Request] = []
        self.in_flight: dict[str, int] = {}
        self.most_in_flight: dict[str, int] = {}

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        host = request.url.host
        if host in self.dead:
            raise httpx.ConnectError("[Errno 111] Connection refused", request=request)
        if request.url.path.endswith("/models"):
            return recorded("models")
        self.seen.append(request)
        self.in_flight[host] = self.in_flight.get(host, 0) + 1
        self.most_in_flight[host] = max(self.most_in_flight.get(host, 0), self.in_flight[host])
        try:
            await asyncio.sleep(0.01)  # a server takes time: requests overlap
            queue = self.script.get(host) or []
            chat = request.url.path.endswith("/chat/completions")
            answer = queue.pop(0) if queue else recorded("chat" if chat else "completion")
            if isinstance(answer, type) and issubclass(answer, Exception):
                raise answer("scripted failure", request=request)
            return answer
        finally:
            self.in_flight[host] -= 1


def spec(tmp_path, prompt_format="chat", name="smollm2-135m") -> ModelSpec:
    """A model whose checkpoint is not on this machine (the server has it)."""
    return ModelSpec(name=name, path=tmp_path / "absent", prompt_format=prompt_format)


def engine(model: ModelSpec, servers: Servers, urls=(A,), logs=None, **options) -> OpenAIEngine:
    opts = EngineOptions(base_urls=tuple(urls), log=(logs.append if logs is not None else
                                                     (lambda _m: None)), **options)
    return OpenAIEngine(model, opts, transport=httpx.MockTransport(servers))


def test_rendered_locally_when_the_checkpoint_is_here(smollm2):
    """Byte-identical to the in-process engines' text: the same tokenizer and template."""
    servers = Servers()
    eng = engine(smollm2, servers)
    request = Request(prompt="List two fruits.", assistant_prefix="Task 9:", max_tokens=24,
                      temperature=0.7, top_p=0.9, stop=("Task 12",), seed=5)
    path, body = eng.request_body(request)
    assert path == "/completions"
    assert body["prompt"] == render_prompt(eng.tokenizer, "chat", request)
    assert body["prompt"].endswith("<|im_start|>assistant\nTask 9:")
    assert body | {"prompt": None} == {"model": "smollm2-135m", "prompt": None, "max_tokens": 24,
                                       "temperature": 0.7, "top_p": 0.9, "stop": ["Task 12"],
                                       "seed": 5}
    [completion] = eng.generate([request])
    assert json.loads(servers.seen[0].content) == body
    assert completion.text == recorded("completion").json()["choices"][0]["text"]
    assert eng.stats.extra["rendering"] == "local tokenizer"
    eng.close()


def test_chat_endpoint_continues_the_reply_prefix_without_a_checkpoint(tmp_path):
    eng = engine(spec(tmp_path), Servers({"gpu01": [recorded("chat")]}))
    request = Request(prompt="List three fruits.", assistant_prefix="1.", max_tokens=20)
    path, body = eng.request_body(request)
    assert path == "/chat/completions"
    assert body["messages"] == [{"role": "user", "content": "List three fruits."},
                                {"role": "assistant", "content": "1."}]
    assert body["continue_final_message"] is True and body["add_generation_prompt"] is False
    assert "seed" not in body and "stop" not in body
    [completion] = eng.generate([request])
    assert completion.text.startswith(" Bananas\n2.")  # the continuation, after the prefix
    assert completion.finish_reason == "stop" and completion.prompt_tokens == 36
    assert eng.stats.extra["rendering"] == "server chat template"
    # Without a prefix, the model answers as it would to the user.
    _, plain = eng.request_body(Request(prompt="Hi"))
    assert "continue_final_message" not in plain
    eng.close()


def test_base_model_text_goes_to_completions(tmp_path):
    eng = engine(spec(tmp_path, "completion"), Servers({"gpu01": [recorded("completion_length")]}))
    path, body = eng.request_body(Request(prompt="Tasks:\n", assistant_prefix="1."))
    assert path == "/completions" and body["prompt"] == "Tasks:\n1."
    [c] = eng.generate([Request(prompt="Count to twenty:", max_tokens=6)])
    assert c.finish_reason == "length" and c.completion_tokens == 6
    eng.close()


def test_retried_with_backoff_until_the_server_answers(tmp_path):
    script = {"gpu01": [httpx.Response(503, json={"error": {"message": "overloaded"}}),
                        httpx.Response(429, text="slow down"), httpx.ConnectError,
                        httpx.ReadTimeout]}
    eng = engine(spec(tmp_path), Servers(script), logs=(logs := []))
    [c] = eng.generate([Request(prompt="x")])
    assert c.text  # the recorded completion, after four failures
    assert eng.stats.extra["requests_retried"] == 4
    # Three failures in a row took the only server out of rotation, then it was probed again.
    assert eng.stats.extra["replicas_dropped"] == 1
    assert any("taken out of rotation" in m for m in logs)
    assert any("answers again" in m for m in logs)
    eng.close()


@pytest.mark.parametrize(("name", "says"), [("unknown_model", "does not exist"),
                                            ("too_long", "maximum context length")])
def test_errors_that_retrying_cannot_fix_name_the_server_message(tmp_path, name, says):
    eng = engine(spec(tmp_path), Servers({"gpu01": [recorded(name)]}))
    with pytest.raises(SigenError, match=says) as raised:
        eng.generate([Request(prompt="x"), Request(prompt="y")])
    assert "gpu01:8000" in str(raised.value) and str(recorded(name).status_code) in str(
        raised.value)
    assert eng.stats.extra["requests_retried"] == 0
    eng.close()


def test_a_streamed_refusal_stops_once_and_leaves_no_unread_failures(tmp_path, caplog):
    """Every request of a stream is refused: `collect` raises the server's message once, and
    the other requests' identical failures (finished in the same moment or while the run stops)
    are not printed by asyncio as "Task exception was never retrieved" tracebacks (CI saw one
    in a real run's stderr)."""
    for _trial in range(5):
        eng = engine(spec(tmp_path), Servers({"gpu01": [recorded("too_long")] * 40}))
        stream = eng.stream(64)
        for key in range(40):
            stream.submit(key, Request(prompt=str(key)))
        with pytest.raises(SigenError, match="maximum context length"):
            while stream.in_flight:
                stream.collect()
        eng.close()
        del stream, eng
        gc.collect()
    assert "never retrieved" not in caplog.text


def test_requests_spread_over_replicas_by_load_and_within_concurrency(tmp_path):
    servers = Servers()
    eng = engine(spec(tmp_path), servers, urls=(A, B), concurrency=3)
    completions = eng.generate([Request(prompt=str(i)) for i in range(40)])
    assert len(completions) == 40
    hosts = [r.url.host for r in servers.seen]
    assert 15 <= hosts.count("gpu01") <= 25 and 15 <= hosts.count("gpu02") <= 25
    assert servers.most_in_flight == {"gpu01": 3, "gpu02": 3}  # full, never over
    assert eng.stats.requests == 40 and eng.stats.extra["replicas_dropped"] == 0
    eng.close()


def test_a_dead_replica_is_dropped_and_the_others_finish_the_work(tmp_path):
    servers = Servers(dead=(B,))
    eng = engine(spec(tmp_path), servers, urls=(A, B), logs=(logs := []))
    assert eng.generate([Request(prompt=str(i)) for i in range(12)])
    assert {r.url.host for r in servers.seen} == {"gpu01"}
    assert eng.stats.extra["replicas_dropped"] == 1
    assert eng.stats.extra["servers"] == [A, B]
    assert any("gpu02:8000" in m and "out of rotation" in m for m in logs)
    eng.close()


def test_a_replica_that_dies_mid_call_is_dropped(tmp_path):
    script = {"gpu02": [httpx.ConnectError] * 50}
    servers = Servers(script)
    eng = engine(spec(tmp_path), servers, urls=(A, B), concurrency=4)
    assert len(eng.generate([Request(prompt=str(i)) for i in range(30)])) == 30
    assert eng.stats.extra["replicas_dropped"] == 1
    assert eng.stats.extra["requests_retried"] >= 3
    eng.close()


def test_no_server_answering_for_the_timeout_stops_the_call(tmp_path):
    servers = Servers({"gpu01": [httpx.ConnectError] * 1000})
    eng = engine(spec(tmp_path), servers, server_timeout=0.5)
    with pytest.raises(ServerUnavailable, match="no server answered for 0.5 s"):
        eng.generate([Request(prompt=str(i)) for i in range(5)])
    eng.close()


def test_waits_for_a_server_that_is_not_up_yet_then_gives_up(tmp_path):
    with pytest.raises(ServerUnavailable):
        engine(spec(tmp_path), Servers(dead=(A,)), server_timeout=0.5)


def test_model_name_from_the_server(tmp_path):
    logs = []
    eng = engine(spec(tmp_path, name="llama-7b"), Servers(), logs=logs)
    assert eng.served_model == "smollm2-135m"  # the one model it serves
    assert any("serves 'smollm2-135m'" in m for m in logs)
    eng.close()


def test_api_key_sent_but_never_recorded(tmp_path):
    servers = Servers()
    eng = engine(spec(tmp_path), servers, api_key="sk-secret-123")
    eng.generate([Request(prompt="x")])
    assert servers.seen[0].headers["authorization"] == "Bearer sk-secret-123"
    assert "sk-secret" not in json.dumps(eng.stats.extra) + repr(eng.options)
    eng.close()


def test_base_url_parsing():
    assert parse_base_urls(f" {A}/, {B}") == (A, B)
    assert public_url("http://user:pw@gpu01:8000/v1") == "http://gpu01:8000/v1"
    for bad in ("", "gpu01:8000", f"{A},{A}"):
        with pytest.raises(SigenError, match="--base-url|--engine openai"):
            parse_base_urls(bad)


class SlowServer:
    """A real HTTP server on 127.0.0.1 that takes `delay` seconds for each completion (a long
    answer on a busy server), answering with the recorded replies."""

    def __init__(self, delay: float) -> None:
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        def reply(handler: BaseHTTPRequestHandler, name: str) -> None:
            data = json.loads((RECORDED / f"{name}.json").read_text(encoding="utf-8"))
            body = json.dumps(data["body"]).encode()
            handler.send_response(data["status"])
            handler.send_header("Content-Type", "application/json")
            handler.send_header("Content-Length", str(len(body)))
            handler.end_headers()
            handler.wfile.write(body)

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:
                reply(self, "models")

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                time.sleep(delay)
                reply(self, "chat")

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def test_an_answer_slower_than_the_server_timeout_is_waited_for(tmp_path):
    """--server-timeout is how long no server may answer at all, not how long one answer may
    take: a request that takes longer (a long answer on a loaded CPU, seen in CI right after a
    server restart) is not given up, retried from the start, and taken for an outage."""
    server = SlowServer(delay=1.5)
    try:
        eng = OpenAIEngine(spec(tmp_path), EngineOptions(base_urls=(server.url,),
                                                         server_timeout=1.0, log=lambda _m: None))
        completions = eng.generate([Request(prompt="x"), Request(prompt="y")])
        assert [c.text for c in completions] and all(c.text for c in completions)
        assert eng.stats.extra["requests_retried"] == 0
        eng.close()
    finally:
        server.stop()
