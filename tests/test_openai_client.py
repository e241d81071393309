"""The openai engine's client logic on responses recorded from a real `vllm serve` (CPU build,
packaged model): request bodies, retries with backoff, replicas taken out of rotation and back,
the outage that stops a run, errors that retrying cannot fix. The transport replays the recorded
responses (or raises the connection errors a dead server gives); everything above it is the real
engine. The real server itself is exercised in test_server.py.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import gc
import itertools
import json
import threading
import time
from collections.abc import Callable
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

    def __init__(self, script: dict[str, list] | None = None, dead: tuple[str, ...] = (),
                 models: dict[str, httpx.Response] | None = None):
        self.script = {k: list(v) for k, v in (script or {}).items()}
        self.dead = {httpx.URL(u).host for u in dead}
        self.models = models or {}  # per host, its /models answer instead of the recorded one
        self.seen: list[httpx.Request] = []
        self.in_flight: dict[str, int] = {}
        self.most_in_flight: dict[str, int] = {}

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        host = request.url.host
        if host in self.dead:
            raise httpx.ConnectError("[Errno 111] Connection refused", request=request)
        if request.url.path.endswith("/models"):
            return self.models.get(host) or recorded("models")
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


def completion_reply(text) -> httpx.Response:
    return httpx.Response(200, json={"choices": [{"text": text, "finish_reason": "stop"}]})


def test_an_empty_text_is_a_completion_and_a_null_text_is_not(tmp_path):
    eng = engine(spec(tmp_path, "completion"), Servers({"gpu01": [completion_reply("")]}))
    [c] = eng.generate([Request(prompt="x")])
    assert c.text == "" and c.prompt_tokens == 0  # no usage: counted as 0
    eng.close()
    eng = engine(spec(tmp_path, "completion"), Servers({"gpu01": [completion_reply(None)] * 9}))
    with pytest.raises(SigenError, match="not a completion \\(its text is null\\)"):
        eng.generate([Request(prompt="x")])
    eng.close()


def ok(**reply) -> Callable[[], httpx.Response]:
    """A 200 reply, made anew for each request (a streamed body is read once)."""
    return functools.partial(httpx.Response, 200, **reply)


GARBAGE = [
    (ok(html="<html><h1>Welcome to nginx!</h1></html>"), "not JSON"),
    (ok(text='{"choices": [{"text": "'), "not JSON"),
    (ok(json={"object": "text_completion"}), 'no "choices"'),
    (ok(json={"choices": []}), 'no "choices"'),
    (ok(json=[{"text": "a list"}]), 'no "choices"'),
    (ok(json={"choices": [{"message": None}]}), "its message content is null"),
    (ok(json={"choices": [{"message": {"content": 7}}]}), "its message content is int"),
    (ok(stream=httpx.ByteStream(b"\x1f\x8b not gzip"), headers={"Content-Encoding": "gzip"}),
     "a body that cannot be decoded"),
]


@pytest.mark.parametrize(("reply", "reason"), GARBAGE)
def test_a_reply_that_is_not_a_completion_is_retried_then_named(tmp_path, reply, reason):
    """A 200 reply that is not a completion is a protocol problem, not an outage: tried
    MALFORMED_TRIES times, then a SigenError quoting the endpoint and the reply's start."""
    eng = engine(spec(tmp_path, "completion"), Servers({"gpu01": [reply() for _ in range(9)]}),
                 logs=(logs := []), server_timeout=600)
    started = time.monotonic()
    with pytest.raises(SigenError) as raised:
        eng.generate([Request(prompt="x")])
    message = str(raised.value)
    assert message.startswith("http://gpu01:8000/v1 answered /v1/completions with something "
                              f"that is not a completion ({reason}): ")
    assert f"{client.MALFORMED_TRIES} times in a row" in message and "--base-url" in message
    assert time.monotonic() - started < 2
    assert eng.stats.extra["requests_retried"] == client.MALFORMED_TRIES - 1
    assert sum("trying again" in m for m in logs) == 1
    eng.close()


def test_one_malformed_reply_is_a_hiccup(tmp_path):
    bad = httpx.Response(200, html="<html>502 from the proxy, but as a 200</html>")
    eng = engine(spec(tmp_path), Servers({"gpu01": [bad, bad]}))
    [c] = eng.generate([Request(prompt="x")])
    assert c.text.startswith(" Bananas") and eng.stats.extra["requests_retried"] == 2
    eng.close()


@pytest.mark.parametrize(("reply", "reason"), [
    (httpx.Response(200, html="<!DOCTYPE html><title>Grafana</title>"), "not JSON"),
    (httpx.Response(200, text='{"data": [{"id": "smollm2'), "not JSON"),
    (httpx.Response(200, json=[{"id": "smollm2-135m"}]), 'no list under "data"'),
    (httpx.Response(200, json={"data": {"id": "smollm2-135m"}}), 'no list under "data"'),
    (httpx.Response(200, json={"data": ["smollm2-135m"]}), 'a model without a name ("id")'),
    (httpx.Response(200, json={"data": [{"name": "smollm2-135m"}]}),
     'a model without a name ("id")'),
])
def test_a_model_list_that_is_not_one_is_named(tmp_path, reply, reason):
    with pytest.raises(SigenError) as raised:
        engine(spec(tmp_path), Servers(models={"gpu01": reply}))
    assert str(raised.value).startswith(
        f"http://gpu01:8000/v1 answered /v1/models with something that is not OpenAI's model "
        f"list ({reason}): ")
    assert "Check that --base-url is the API root" in str(raised.value)


def test_a_models_page_that_is_not_there_is_named_at_once(tmp_path):
    """A 404 at /models is a wrong --base-url (no /v1), not a server still starting."""
    reply = httpx.Response(404, json={"detail": "Not Found"})
    with pytest.raises(SigenError, match="answered /v1/models with HTTP 404 \\(Not Found\\)"):
        engine(spec(tmp_path), Servers(models={"gpu01": reply}), server_timeout=600)


def test_server_text_never_carries_the_secrets_sent_to_it(tmp_path):
    """A hostile server echoes the API key and the URL's credentials back: quoted, they are
    masked."""
    def echo(request: httpx.Request) -> httpx.Response:
        kind, _, token = request.headers["authorization"].partition(" ")
        sent = base64.b64decode(token).decode() if kind == "Basic" else token
        return httpx.Response(200, text=f"you sent {kind} {token} ({sent})")

    for url, hostile in itertools.product(
            ("http://alice:secret-pw@gpu01:8000/v1", "http://gpu01:8000/v1"),
            (echo, lambda r: httpx.Response(401, text=echo(r).text))):
        opts = EngineOptions(base_urls=(url,), api_key="sk-key-123", log=lambda _m: None)
        with pytest.raises(SigenError) as raised:
            OpenAIEngine(spec(tmp_path), opts, transport=httpx.MockTransport(hostile))
        message = str(raised.value)
        assert "gpu01:8000/v1" in message and "***" in message
        for secret in ("sk-key-123", "secret-pw", "alice", "YWxpY2U6c2VjcmV0LXB3"):
            assert secret not in message


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


def serving(*names: str) -> httpx.Response:
    return httpx.Response(200, json={"object": "list", "data": [{"id": n} for n in names]})


def test_model_found_by_name_directory_or_path(tmp_path):
    """The server's name for the model asked for: the registry name, the checkpoint directory's
    name or path, or a served path ending in one of those (`vllm serve /models/NAME`)."""
    checkpoint = tmp_path / "smollm2-135m"
    for model, served in ((spec(tmp_path), "smollm2-135m"),
                          (ModelSpec(name="small", path=checkpoint), "smollm2-135m"),
                          (ModelSpec(name="small", path=checkpoint), str(checkpoint)),
                          (spec(tmp_path), "/data/ckpt/smollm2-135m")):
        eng = engine(model, Servers(models={"gpu01": serving("other-model", served)}))
        assert eng.served_model == served
        eng.close()


def test_another_model_is_never_used_in_place_of_the_one_asked_for(tmp_path):
    """Prompts rendered for one model's template make noise for another: a server serving only
    another model is refused, with the served names and the --model that uses one of them."""
    with pytest.raises(SigenError) as raised:
        engine(spec(tmp_path, name="llama-7b"), Servers())
    message = str(raised.value)
    assert "does not serve 'llama-7b'" in message and "'smollm2-135m'" in message
    assert "--model smollm2-135m" in message and "--served-model-name llama-7b" in message
    with pytest.raises(SigenError, match="with one of those names"):
        engine(spec(tmp_path, name="llama-7b"), Servers(models={"gpu01": serving("a", "b")}))
    with pytest.raises(SigenError, match="no model is listed at /models by http://gpu01"):
        engine(spec(tmp_path), Servers(models={"gpu01": serving()}))


def test_every_server_must_serve_the_model(tmp_path):
    servers = Servers(models={"gpu02": serving("llama-7b")})
    with pytest.raises(SigenError, match="gpu02:8000/v1 does not serve 'smollm2-135m' \\(it "
                       "serves 'llama-7b'\\) while another --base-url does"):
        engine(spec(tmp_path), servers, urls=(A, B))


def test_api_key_sent_but_never_recorded(tmp_path):
    servers = Servers()
    eng = engine(spec(tmp_path), servers, api_key="sk-secret-123")
    eng.generate([Request(prompt="x")])
    assert servers.seen[0].headers["authorization"] == "Bearer sk-secret-123"
    assert "sk-secret" not in json.dumps(eng.stats.extra) + repr(eng.options)
    eng.close()


def test_base_url_parsing():
    assert parse_base_urls(f" {A}/, {B}") == (A, B)
    assert parse_base_urls("http://[::1]:8000/v1") == ("http://[::1]:8000/v1",)
    assert public_url("http://user:pw@gpu01:8000/v1") == "http://gpu01:8000/v1"
    assert public_url("http://user:pw@[::1]:8000/v1") == "http://[::1]:8000/v1"
    for bad in ("", "gpu01:8000", f"{A},{A}"):
        with pytest.raises(SigenError, match="--base-url|--engine openai"):
            parse_base_urls(bad)


@pytest.mark.parametrize(("url", "says"), [
    ("http://127.0.0.1:99999/v1", "has port 99999, out of range (1-65535)"),
    ("http://127.0.0.1:0/v1", "has port 0, out of range"),
    ("http://127.0.0.1:abc/v1", "has a port that is not a number ('abc')"),
    ("http://[::1/v1", "has a '[' or ']' without its pair"),
    ("http://::1]:8000/v1", "has a '[' or ']' without its pair"),
    ("http://:8000/v1", "names no host"),
    ("ftp://gpu01/v1", "is not an http(s) URL"),
    (f"{A} {B}", "contains a space (to list several servers, separate them with commas)"),
    ("http://gpu01:8000/v1?key=1", "has a query or fragment"),
    ("http://gpu01:8000/v1#top", "has a query or fragment"),
])
def test_a_bad_base_url_is_named_with_what_is_wrong(url, says):
    with pytest.raises(SigenError) as raised:
        parse_base_urls(f"{B},{url}")
    message = str(raised.value)
    assert message.startswith(f"--base-url {url!r} {says}") and "http://gpu01:8000/v1" in message


def test_a_bad_base_url_is_named_without_its_credentials():
    with pytest.raises(SigenError) as raised:
        parse_base_urls("http://alice:pw%40x@gpu01:99999/v1")
    assert "'http://gpu01:99999/v1' has port 99999" in str(raised.value)
    assert "alice" not in str(raised.value) and "pw" not in str(raised.value)
    with pytest.raises(SigenError) as raised:
        parse_base_urls("http://alice:secret@[::1/v1")
    assert "'http://[::1/v1'" in str(raised.value) and "secret" not in str(raised.value)


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
