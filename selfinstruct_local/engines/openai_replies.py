"""Reading what an OpenAI-compatible server answers: its model list (/v1/models), a completion
(/v1/completions, /v1/chat/completions), an error body. Anything else a server sends with HTTP
200 (a web page, broken JSON, a reply without `choices` or with a null text) is a MalformedReply
that says what is wrong and quotes the start of the reply, for the engine's message."""

from __future__ import annotations

import httpx

from selfinstruct_local.engines.base import Completion

QUOTED_CHARS = 80  # how much of a malformed reply a message quotes


class MalformedReply(Exception):
    """A 200 reply that is not what the endpoint answers: `reason` says what is wrong, `start`
    quotes the beginning of the reply."""

    def __init__(self, reason: str, start: str) -> None:
        super().__init__(f"{reason}: {start}")
        self.reason = reason
        self.start = start


def reply_start(response: httpx.Response, limit: int = QUOTED_CHARS) -> str:
    """The first `limit` characters of a reply, on one line and quoted."""
    try:
        text = " ".join(response.text.split())
    except (httpx.DecodingError, UnicodeDecodeError):
        return "(a body that cannot be decoded)"
    if not text:
        return "(an empty body)"
    return repr(text[:limit] + ("..." if len(text) > limit else ""))


def _json(response: httpx.Response):
    try:
        return response.json()
    except ValueError:  # JSONDecodeError and UnicodeDecodeError
        raise MalformedReply("not JSON", reply_start(response)) from None


def served_models(response: httpx.Response) -> dict[str, dict]:
    """The models in a /v1/models reply ({"data": [{"id": NAME, ...}, ...]}), by name."""
    data = _json(response)
    models = data.get("data") if isinstance(data, dict) else None
    if not isinstance(models, list):
        raise MalformedReply("no list under \"data\"", reply_start(response))
    if not all(isinstance(m, dict) and isinstance(m.get("id"), str) and m["id"]
               for m in models):
        raise MalformedReply("a model without a name (\"id\")", reply_start(response))
    return {m["id"]: m for m in models}


def completion_of(response: httpx.Response) -> Completion:
    """The completion in a 200 reply of either endpoint. A null text is not an empty completion
    (that is ""): the server or a proxy in between lost it."""
    data = _json(response)
    choices = data.get("choices") if isinstance(data, dict) else None
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise MalformedReply("no \"choices\"", reply_start(response))
    choice = choices[0]
    if "message" in choice:
        message = choice["message"]
        text = message.get("content") if isinstance(message, dict) else None
        field = "message content"
    else:
        text, field = choice.get("text"), "text"
    if not isinstance(text, str):
        raise MalformedReply(f"its {field} is {'null' if text is None else type(text).__name__}",
                             reply_start(response))
    usage = data.get("usage")
    usage = usage if isinstance(usage, dict) else {}  # counts only: a server may leave it out
    return Completion(
        text=text,
        finish_reason="length" if choice.get("finish_reason") == "length" else "stop",
        prompt_tokens=_count(usage.get("prompt_tokens")),
        completion_tokens=_count(usage.get("completion_tokens")),
    )


def _count(value) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def error_message(response: httpx.Response) -> str:
    """The server's own explanation of an HTTP error (OpenAI's {"error": {"message"}}), on one
    line; a redirect says where to."""
    if response.is_redirect:
        return f"a redirect to {response.headers.get('location', '(nowhere)')}"
    try:
        body = response.json()
    except (ValueError, httpx.DecodingError):
        text = reply_start(response, 300)
        return response.reason_phrase if text == "(an empty body)" else text
    error = body.get("error", body) if isinstance(body, dict) else body
    if isinstance(error, dict):
        error = error.get("message") or error.get("detail") or error
    return " ".join(str(error).split())[:300]
