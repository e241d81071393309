"""Embeddings from an OpenAI-compatible server's /v1/embeddings (`--embed-base-url`): a vllm
serve with `--runner pooling`, TEI, llama.cpp's server with --embedding, Infinity...

Batches are sent one after another. Connection errors and HTTP 408/429/5xx are retried with
backoff until the server has not answered for `server_timeout` seconds; a 200 reply that is not
an embedding list (a page, broken JSON, vectors missing, of unequal length or not finite) is
tried again MALFORMED_TRIES times, then an error quoting it; any other HTTP error is an error
with the server's message. No message holds the API key or the URL's credentials.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Sequence

import httpx
import numpy as np

from selfinstruct_local.engines.base import DEFAULT_SERVER_TIMEOUT
from selfinstruct_local.engines.openai import (
    CONNECT_TIMEOUT,
    MALFORMED_TRIES,
    RETRY_STATUS,
    backoff_seconds,
    mask_secrets,
    public_url,
    url_credentials,
    url_problem,
)
from selfinstruct_local.engines.openai_replies import MalformedReply, error_message, reply_start
from selfinstruct_local.errors import SigenError

BATCH = 64  # texts per request


class OpenAIEmbedder:
    backend = "openai"

    def __init__(self, base_url: str, model: str, *, api_key: str | None = None,
                 server_timeout: float = DEFAULT_SERVER_TIMEOUT, batch_size: int = BATCH,
                 transport: httpx.BaseTransport | None = None) -> None:
        url = base_url.strip().rstrip("/")
        if problem := url_problem(url):
            raise SigenError(f"--embed-base-url {public_url(url)!r} {problem}: give the "
                             "embedding server's API root, such as http://gpu01:8001/v1")
        self.url = url
        self.name = model
        self.dim = 0  # known from the first answer
        self.batch_size = max(1, batch_size)
        self.server_timeout = server_timeout
        self._secrets = [s for s in (api_key or "", *url_credentials(url)) if s]
        self._rng = random.Random()  # backoff jitter only
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.Client(
            headers=headers, transport=transport,
            timeout=httpx.Timeout(max(server_timeout, 60.0), connect=CONNECT_TIMEOUT))

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """One row per text, in order: float32, L2-normalized."""
        from selfinstruct_local.embed import normalized

        parts = [self._batch(list(texts[at:at + self.batch_size]))
                 for at in range(0, len(texts), self.batch_size)]
        if not parts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return normalized(np.concatenate(parts), self.name)

    def _batch(self, texts: list[str]) -> np.ndarray:
        where = f"{public_url(self.url)}/embeddings"
        body = {"model": self.name, "input": texts}
        failing_since: float | None = None
        attempt = malformed = 0
        while True:
            try:
                response = self._client.post(f"{self.url}/embeddings", json=body)
                status = response.status_code
                if status == 200:
                    return self._vectors(response, len(texts))
                why = f"HTTP {status}: {self._masked(error_message(response))}"
            except httpx.TransportError as exc:
                status, why = 0, f"{type(exc).__name__}: {self._masked(str(exc))}"[:200]
            except (MalformedReply, httpx.DecodingError) as exc:
                bad = exc if isinstance(exc, MalformedReply) else \
                    MalformedReply("a body that cannot be decoded", "")
                malformed += 1
                if malformed >= MALFORMED_TRIES:
                    raise SigenError(
                        f"{where} answered with something that is not an embedding list "
                        f"({bad.reason}): {self._masked(bad.start)}, {malformed} times in a row. "
                        "Check that --embed-base-url is the API root of a server that serves "
                        f"embeddings for {self.name!r}.") from None
                status, why = 200, bad.reason
            if status and status != 200 and status not in RETRY_STATUS:
                raise SigenError(f"{where} refused the request: {why}. {self._hint(status)}")
            failing_since = failing_since or time.monotonic()
            if time.monotonic() - failing_since >= self.server_timeout:
                raise SigenError(f"{where} did not answer for {self.server_timeout:g} s "
                                 f"(last: {why}); start the embedding server, or check "
                                 "--embed-base-url")
            time.sleep(backoff_seconds(attempt, self._rng))
            attempt += 1

    def _vectors(self, response: httpx.Response, count: int) -> np.ndarray:
        """The vectors of a 200 reply, in the order of the texts sent (by their `index`)."""
        try:
            data = response.json()
        except ValueError:
            raise MalformedReply("not JSON", reply_start(response)) from None
        items = data.get("data") if isinstance(data, dict) else None
        if not isinstance(items, list) or len(items) != count:
            raise MalformedReply(f"not {count} items under \"data\"", reply_start(response))
        rows: list[list[float] | None] = [None] * count
        for position, item in enumerate(items):
            index = item.get("index", position) if isinstance(item, dict) else None
            vector = item.get("embedding") if isinstance(item, dict) else None
            if not isinstance(index, int) or not 0 <= index < count or rows[index] is not None:
                raise MalformedReply("items whose \"index\" is missing or repeated",
                                     reply_start(response))
            if not isinstance(vector, list) or not vector or not all(
                    isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)
                    for x in vector):
                raise MalformedReply("an \"embedding\" that is not a list of numbers",
                                     reply_start(response))
            rows[index] = vector
        sizes = {len(r) for r in rows if r is not None}
        if len(sizes) != 1 or (self.dim and sizes != {self.dim}):
            raise MalformedReply(f"vectors of sizes {sorted(sizes | {self.dim} - {0})}",
                                 reply_start(response))
        self.dim = sizes.pop()
        return np.array(rows, dtype=np.float32)

    def _hint(self, status: int) -> str:
        if status in (401, 403):
            return "Pass the server's API key (--api-key or $OPENAI_API_KEY)."
        if status == 404:
            return (f"Check --embed-base-url (the API root, ending in /v1) and that the server "
                    f"serves {self.name!r} for embeddings (vllm serve: --runner pooling).")
        return f"Check that the server serves embeddings for {self.name!r}."

    def _masked(self, text: str) -> str:
        return mask_secrets(text, self._secrets)

    def close(self) -> None:
        self._client.close()
