"""`sigen run --engine openai` against servers that answer garbage, and bad --base-url values:
through the real command line, against a fake OpenAI-compatible server on 127.0.0.1
(tests/fake_openai.py). Each ends in one clear `error:` line and exit status 2, quickly, and
never shows the API key or the URL's credentials.

Where the model does not matter, a run asks for SERVED_ONLY, a model known only to the server:
with no checkpoint here, there is no tokenizer to load and a run takes about a second instead of
five. Completions that must go to /v1/completions use the packaged model, rendered here."""

from __future__ import annotations

import base64
import time

import pytest

from selfinstruct_local.engines.base import Request
from tests.conftest import sigen
from tests.fake_openai import (
    BROKEN_JSON,
    HTML,
    FakeOpenAIServer,
    Reply,
    chat_completion,
    completion,
    model_list,
)
from tests.scripted import ScriptedEngine

API_KEY, USER, PASSWORD = "sk-test-4f9a7c", "alice", "hunter2-pw"
SERVED_ONLY = "Qwen/Qwen2.5-72B"
PACKAGED = None  # the registry's default model, smollm2-135m


def run_against(server_url: str, tmp_path, model: str | None, *args: str) -> tuple:
    """`sigen run --engine openai` on a small target, with an API key that no output may show;
    the result and when it ended."""
    result = sigen("run", "--engine", "openai", "--base-url", server_url, "--server-timeout",
                   "20", "-n", "3", "-o", str(tmp_path / "run"), "--api-key", API_KEY,
                   *(("--model", model) if model else ()), *args, timeout=120)
    assert API_KEY not in result.stdout + result.stderr
    return result, time.monotonic()


def assert_clean_error(result, *needles: str) -> None:
    """Exit status 2, no traceback, and the last line an `error:` holding every needle."""
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: "), result.stderr
    for needle in needles:
        assert needle in last, last


@pytest.mark.parametrize(("url", "says"), [
    ("http://127.0.0.1:99999/v1", "has port 99999, out of range (1-65535)"),
    ("http://127.0.0.1:abc/v1", "has a port that is not a number ('abc')"),
    ("http://[::1/v1", "has a '[' or ']' without its pair"),
])
def test_a_bad_base_url_is_one_clear_error(tmp_path, url, says):
    result = sigen("run", "--engine", "openai", "--base-url", url, "-o", str(tmp_path / "r"))
    assert_clean_error(result, f"error: --base-url {url!r} {says}", "http://gpu01:8000/v1")
    assert result.stderr.startswith("error: ")  # before anything else happens


@pytest.mark.parametrize(("models", "reason"), [
    (HTML, "not JSON"),
    (BROKEN_JSON, "not JSON"),
    (Reply([{"id": "smollm2-135m"}]), 'no list under "data"'),
    (Reply({"data": [{"name": "smollm2-135m"}]}), 'a model without a name ("id")'),
])
def test_a_model_list_that_is_not_one_names_the_server_and_what_came(tmp_path, models, reason):
    with FakeOpenAIServer(models=models) as server:
        result, _ = run_against(server.url, tmp_path, SERVED_ONLY)
    start = " ".join(models.encoded().decode().split())[:40]
    assert_clean_error(
        result, f"error: {server.url} answered /v1/models with something that is not OpenAI's "
        f"model list ({reason}): '{start}", "Check that --base-url is the API root")


def test_a_wrong_api_root_is_named_at_once(tmp_path):
    """--base-url without /v1: the server answers 404 at /models, which waiting cannot fix."""
    with FakeOpenAIServer() as server:
        result, _ = run_against(server.url.removesuffix("/v1"), tmp_path, SERVED_ONLY)
    assert_clean_error(result, "answered /models with HTTP 404 (no route /models). "
                       "Check that --base-url is the API root")


@pytest.mark.parametrize(("reply", "reason", "start"), [
    (HTML, "not JSON", "<!DOCTYPE html><html><head><title>Welcome to nginx!"),
    (completion(None), "its text is null", '{"object": "text_completion", "choices": '),
])
def test_garbage_completions_stop_the_run_promptly_and_say_so(tmp_path, reply, reason, start):
    """A 200 reply that is not a completion is a protocol problem, not an outage: a few tries,
    then an error quoting the endpoint and the reply, in seconds, not --server-timeout's 20.
    Two kinds through the command line (each run loads the packaged tokenizer, 5 s); every
    other kind of garbage is named by the client: test_openai_client's GARBAGE."""
    with FakeOpenAIServer(completions=reply) as server:
        result, ended = run_against(server.url, tmp_path, PACKAGED)
    assert_clean_error(result, f"error: {server.url} answered /v1/completions with something "
                       f"that is not a completion ({reason}): '{start}",
                       "3 times in a row", "Check that --base-url is the API root")
    assert "no server answered" not in result.stderr
    # Given up in the seconds a few retries take (about 1.5 s), not retried for --server-timeout's
    # 20 s; the run then stops at once (its shutdown is slower on a busy machine).
    assert server.first_post is not None and server.last_post - server.first_post < 5
    assert ended - server.first_post < 15


def test_a_null_chat_content_is_malformed_too(tmp_path):
    with FakeOpenAIServer(models=model_list(SERVED_ONLY), chat=chat_completion(None)) as server:
        result, _ = run_against(server.url, tmp_path, SERVED_ONLY)
    assert_clean_error(result, "answered /v1/chat/completions with something that is not a "
                       "completion (its message content is null)")


def scripted_chat_model():
    """/v1/chat/completions answered by the scripted engine (tests/scripted.py): the user's
    message, and the reply prefix it continues."""
    engine = ScriptedEngine(fail=0.0)

    def answer(_headers: dict, body: dict) -> Reply:
        messages = body["messages"]
        prefix = messages[-1]["content"] if messages[-1]["role"] == "assistant" else ""
        request = Request(prompt=messages[0]["content"], assistant_prefix=prefix,
                          seed=body.get("seed"), stop=tuple(body.get("stop") or ()))
        return chat_completion(engine.answer(request).text)
    return answer


def test_another_model_is_refused_and_the_served_one_is_used_when_asked_for(tmp_path):
    """A server serving only another model: never used as the default model (with that model's
    chat template); `--model <served name>` uses it through the server's own template."""
    with FakeOpenAIServer(models=model_list(SERVED_ONLY), chat=scripted_chat_model()) as server:
        refused, _ = run_against(server.url, tmp_path, PACKAGED)
        assert_clean_error(refused, f"error: the server at {server.url} does not serve "
                           f"'smollm2-135m'; served: '{SERVED_ONLY}'. Pass --model {SERVED_ONLY}")
        assert not server.bodies
        used, _ = run_against(server.url, tmp_path, SERVED_ONLY)
    assert used.returncode == 0, used.stderr
    assert "Done: 3 instructions" in used.stdout + used.stderr
    assert server.hits["/v1/completions"] == 0 and server.hits["/v1/chat/completions"] > 0
    assert {body["model"] for _, body in server.bodies} == {SERVED_ONLY}


SECRETS = (API_KEY, PASSWORD, base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode())


def echo_credentials(status: int = 200):
    """A hostile reply: what the client sent to authenticate (a Bearer key, or Basic
    user:password), echoed back as it came and decoded."""
    def answer(headers: dict, _body: dict) -> Reply:
        kind, _, token = headers.get("Authorization", "").partition(" ")
        decoded = base64.b64decode(token).decode() if kind == "Basic" else token
        return Reply(f"<html>you sent {kind} {token} ({decoded})</html>", status=status,
                     content_type="text/html")
    return answer


@pytest.mark.parametrize(("where", "with_credentials"), [
    ("models", True), ("chat 400", True), ("models 401", False), ("chat", False)])
def test_no_message_shows_the_api_key_or_url_credentials(tmp_path, where, with_credentials):
    """Bearer key or Basic credentials (a URL's user:password), echoed by a hostile server,
    never reach stdout or stderr."""
    path, _, status = where.partition(" ")
    hostile = {path: echo_credentials(int(status or 200))}
    with FakeOpenAIServer(**{"models": model_list(SERVED_ONLY), **hostile}) as server:
        url = server.url.replace("//", f"//{USER}:{PASSWORD}@") if with_credentials \
            else server.url
        result, _ = run_against(url, tmp_path, SERVED_ONLY)
    assert_clean_error(result, f"{server.url} ", "***")  # the server's text, masked
    assert server.hits[{"models": "/v1/models", "chat": "/v1/chat/completions"}[path]]
    for secret in SECRETS + ((USER,) if with_credentials else ()):
        assert secret not in result.stdout + result.stderr
