"""openai engine: a client of OpenAI-compatible servers (`vllm serve`, SGLang, llama.cpp, TGI).

One call of `generate` sends the whole batch at once, up to `concurrency` requests in flight per
server, each request to the live server with the fewest in flight; a server's own scheduler
(vLLM's continuous batching) then keeps its GPUs full. Faults:
- connection errors, answers that take over ANSWER_TIMEOUT, HTTP 408/429/5xx are retried with
  exponential backoff and full jitter; a server that fails DROP_AFTER times in a row is taken
  out of rotation for a while (longer each time), then tried again with one request before it
  gets its share again;
- when no server has answered for `server_timeout` seconds, `ServerUnavailable` ends the call:
  the run stops like a Ctrl-C, and resumes later with nothing lost;
- any other HTTP error (unknown model, prompt too long, bad API key) cannot be fixed by retrying:
  a SigenError with the server's own message;
- a 200 reply that is not a completion (a web page, broken JSON, no `choices`, a null text) is a
  protocol problem, not an outage: retried MALFORMED_TRIES times (a proxy's hiccup), then a
  SigenError quoting the start of the reply. So is a /v1/models reply that is not a model list.
No message holds the API key or the URL's credentials (`public_url`; server text has them masked).

Prompts are rendered here with the model's tokenizer when its checkpoint is on this machine (the
text is then byte-identical to the in-process engines'), and sent to /v1/completions. Otherwise a
chat model's prompt goes to /v1/chat/completions, with the reply prefix as an assistant message
that the server continues (vLLM's `continue_final_message`), and a base model's plain text to
/v1/completions.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import random
import shlex
import time
from dataclasses import dataclass
from pathlib import PurePosixPath
from urllib.parse import urlsplit

import httpx

from selfinstruct_local.engines.base import (
    Completion,
    EngineOptions,
    EngineStats,
    Request,
    render_prompt,
)
from selfinstruct_local.engines.openai_replies import (
    QUOTED_CHARS,
    MalformedReply,
    completion_of,
    error_message,
    served_models,
)
from selfinstruct_local.errors import SigenError
from selfinstruct_local.interrupt import ServerUnavailable
from selfinstruct_local.models import ModelSpec
from selfinstruct_local.redact import mask_secrets, public_url, without_credentials
from selfinstruct_local.tokenizer import local_tokenizer

RETRY_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}
DROP_AFTER = 3  # failures in a row that take a server out of rotation
COOLDOWN = (5.0, 60.0)  # seconds out of rotation: first time, and at most (doubling between)
BACKOFF = (0.5, 20.0)  # a retried request waits up to base * 2**attempt seconds, at most the cap
CONNECT_TIMEOUT = 10.0
# How long one answer may take: a long answer on a busy server (a CPU, a queue longer than the
# server's batch) takes minutes, and a request given up is generated again from the start. A
# server that died shows up sooner, as refused or reset connections.
ANSWER_TIMEOUT = 900.0
MALFORMED_TRIES = 3  # 200 replies in a row that are not a completion before a request gives up
MIN_MASKED = 4  # shorter user names are not masked in server text (see url_credentials)
CHECK_BASE_URL = ("Check that --base-url is the API root of an OpenAI-compatible server (for "
                  "vLLM, SGLang, llama.cpp: http://HOST:PORT/v1)")


def url_credentials(url: str) -> list[str]:
    """The user name and password in a URL, as written and decoded, and the Basic auth token
    httpx makes of them (for `mask_secrets`)."""
    parts = httpx.URL(url)  # a URL that parse_base_urls let through
    if not parts.userinfo:
        return []
    user, password = parts.username, parts.password
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    written = parts.userinfo.decode().split(":", 1)
    # A user name of a few letters is left alone: masking "u" would mangle every message.
    return [s for s in {user, password, token, *written}
            if s and (len(s) >= MIN_MASKED or s not in (user, written[0]))]


def url_problem(url: str) -> str | None:
    """What makes `url` unusable as a server's API root; None when nothing does."""
    if any(c.isspace() for c in url):
        return "contains a space (to list several servers, separate them with commas)"
    try:
        parts = urlsplit(url)
    except ValueError:  # urllib's only complaint that needs no port: "Invalid IPv6 URL"
        return "has a '[' or ']' without its pair (an IPv6 address is written [::1])"
    if parts.scheme not in ("http", "https"):
        return "is not an http(s) URL"
    port = parts.netloc.rpartition("@")[2].rpartition("]")[2].partition(":")[2]
    if port and not port.isdigit():
        return f"has a port that is not a number ({port!r})"
    if port and not 1 <= int(port) <= 65535:
        return f"has port {int(port)}, out of range (1-65535)"
    if not parts.hostname:
        return "names no host"
    if parts.query or parts.fragment:
        return "has a query or fragment (?... or #...)"
    try:
        httpx.URL(url)
    except httpx.InvalidURL as exc:
        return f"is not a valid URL ({without_credentials(str(exc))})"
    return None


def parse_base_urls(text: str | None) -> tuple[str, ...]:
    """`--base-url`: one URL or a comma-separated list, each ending in the API root (/v1)."""
    urls = tuple(u.strip().rstrip("/") for u in (text or "").split(",") if u.strip())
    if not urls:
        raise SigenError("--engine openai needs --base-url URL (e.g. http://gpu01:8000/v1), "
                         "or several separated by commas")
    for url in urls:
        if problem := url_problem(url):
            raise SigenError(f"--base-url {without_credentials(url)!r} {problem}: give each "
                             "server's API root, such as http://gpu01:8000/v1")
    if len(set(urls)) < len(urls):
        raise SigenError("--base-url lists a server twice: "
                         f"{','.join(public_url(u) for u in urls)}")
    return urls


def backoff_seconds(attempt: int, rng: random.Random) -> float:
    return rng.uniform(0, min(BACKOFF[1], BACKOFF[0] * 2**attempt))


@dataclass
class Replica:
    url: str
    in_flight: int = 0
    failures: int = 0  # in a row
    outages: int = 0  # times taken out of rotation in a row; sets the next cooldown
    down_until: float = 0.0
    probing: bool = False  # back from an outage: one request until it answers
    ever_dropped: bool = False


class ReplicaPool:
    """Which server gets the next request, and when to give up on all of them."""

    def __init__(self, urls: tuple[str, ...], concurrency: int, server_timeout: float,
                 log, clock=time.monotonic) -> None:
        self.replicas = [Replica(u) for u in urls]
        self.concurrency = concurrency
        self.server_timeout = server_timeout
        self.log = log
        self.clock = clock
        self.failing_since: float | None = None  # first failure since the last answer
        self._changed = asyncio.Event()  # set when a slot or a server frees up

    @property
    def dropped(self) -> int:
        return sum(r.ever_dropped for r in self.replicas)

    def healthy(self) -> list[Replica]:
        """Servers in rotation that have not failed since they last answered."""
        now = self.clock()
        return [r for r in self.replicas if r.down_until <= now and not r.probing]

    def check_outage(self) -> None:
        """ServerUnavailable once every server has been failing for `server_timeout` seconds
        (a healthy server that is merely slow to finish long requests is not an outage)."""
        if self.failing_since is None or self.healthy():
            return
        if self.clock() - self.failing_since >= self.server_timeout:
            raise ServerUnavailable(
                f"no server answered for {self.server_timeout:g} s "
                f"({', '.join(public_url(r.url) for r in self.replicas)})")

    async def acquire(self) -> Replica:
        """A slot on the live server with the fewest requests in flight; waits for one.
        (No lock: between the check and the increment nothing else runs on this loop.)"""
        while True:
            self.check_outage()
            now = self.clock()
            open_ = [r for r in self.replicas if r.down_until <= now
                     and r.in_flight < (1 if r.probing else self.concurrency)]
            if open_:
                chosen = min(open_, key=lambda r: r.in_flight)
                chosen.in_flight += 1
                return chosen
            wakes = [r.down_until - now for r in self.replicas if r.down_until > now]
            if self.failing_since is not None:
                wakes.append(self.failing_since + self.server_timeout - now)
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(),
                                       max(0.01, min(wakes)) if wakes else None)

    def release(self, replica: Replica, failure: str | None = None) -> None:
        replica.in_flight -= 1
        if failure is None:
            self.succeeded(replica)
        else:
            self.failed(replica, failure)
        self._changed.set()

    def succeeded(self, replica: Replica) -> None:
        if replica.outages:
            self.log(f"{public_url(replica.url)} answers again; back in rotation")
        replica.failures = replica.outages = 0
        replica.probing = False
        self.failing_since = None

    def failed(self, replica: Replica, why: str, at_once: bool = False) -> None:
        """Count a failure; DROP_AFTER in a row (or one, `at_once` or while probing) take the
        server out of rotation."""
        now = self.clock()
        if self.failing_since is None:
            self.failing_since = now
        replica.failures += 1
        if replica.down_until > now:
            return  # already out of rotation: its other requests in flight are failing too
        if replica.failures >= DROP_AFTER or replica.probing or at_once:
            cooldown = min(COOLDOWN[1], COOLDOWN[0] * 2**replica.outages)
            replica.outages += 1
            replica.down_until = now + cooldown
            replica.failures = 0
            replica.probing = True
            replica.ever_dropped = True
            self.log(f"{public_url(replica.url)} taken out of rotation ({why}); "
                     f"trying it again in {cooldown:.0f} s")


class OpenAIEngine:
    name = "openai"

    def __init__(self, spec: ModelSpec, options: EngineOptions,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.spec = spec
        self.stats = EngineStats()
        self.options = options
        self.urls = options.base_urls
        self._rng = random.Random()  # backoff jitter only: never part of what is generated
        self._loop = asyncio.new_event_loop()
        headers = {"Authorization": f"Bearer {options.api_key}"} if options.api_key else {}
        total = options.concurrency * len(self.urls)
        self._client = httpx.AsyncClient(
            headers=headers, transport=transport,
            timeout=httpx.Timeout(max(options.server_timeout, ANSWER_TIMEOUT),
                                  connect=CONNECT_TIMEOUT),
            limits=httpx.Limits(max_connections=total, max_keepalive_connections=total),
        )
        self.pool = ReplicaPool(self.urls, options.concurrency, options.server_timeout,
                                options.log)
        self.retried = 0
        self._secrets = [options.api_key or "", *(c for u in self.urls
                                                  for c in url_credentials(u))]
        self._malformed_told = False
        start = time.perf_counter()
        try:
            self.served_model, self.server_max_len = self._run(self._find_model())
        except BaseException:
            self.close()
            raise
        self.tokenizer = self._local_tokenizer()
        self.stats.load_seconds = time.perf_counter() - start
        self.stats.extra.update(
            servers=[public_url(u) for u in self.urls], served_model=self.served_model,
            concurrency=options.concurrency,
            rendering="local tokenizer" if self.tokenizer is not None or
            spec.prompt_format == "completion" else "server chat template",
            per_request_seeds=True)
        self._update_counts()

    def _server_text(self, text: str) -> str:
        """Text that came from a server, fit for a message: without the secrets sent to it."""
        return mask_secrets(text, [s for s in self._secrets if s])

    # -- set-up ---------------------------------------------------------------------------
    def _local_tokenizer(self):
        if self.spec.prompt_format != "chat" or not self.spec.weights_present():
            return None
        return local_tokenizer(self.spec.path)

    async def _find_model(self) -> tuple[str, int | None]:
        """Ask every server for its models (/v1/models): the name to send, and its context.

        A server that does not answer is out of rotation from the start (and tried again
        later); the run waits, up to `server_timeout`, for at least one to answer.
        """
        announced = None
        while True:
            answers = await asyncio.gather(*(self._list_models(r) for r in self.pool.replicas))
            found = {r.url: a for r, a in zip(self.pool.replicas, answers, strict=True)
                     if a is not None}
            if found:
                break
            self.pool.check_outage()
            if announced is None or time.monotonic() - announced > 30:
                self.options.log("Waiting for a server to answer at "
                                 f"{', '.join(public_url(u) for u in self.urls)} ...")
                announced = time.monotonic()
            await asyncio.sleep(2.0)
        served = {name: model for models in found.values() for name, model in models.items()}
        name = self._model_name(served, [public_url(u) for u in found])
        for url, models in found.items():
            if name not in models:
                raise SigenError(
                    f"{public_url(url)} does not serve {self._server_text(repr(name))} (it "
                    f"serves {self._names(models)}) while another --base-url does: every "
                    "server must serve the same model")
        context = served[name].get("max_model_len")
        return name, context if isinstance(context, int) else None

    def _model_name(self, served: dict[str, dict], servers: list[str]) -> str:
        """The served name of the model asked for: its registry name, checkpoint directory name
        or path, or a served path whose last part is one of those names (`vllm serve
        /models/llama-7b` serves "/models/llama-7b"). Never another model: prompts rendered for
        one model's chat template make noise for another."""
        wanted = [self.spec.name, self.spec.path.name, str(self.spec.path)]
        name = next((n for n in wanted if n in served), None)
        by_directory = [n for n in served if PurePosixPath(n).name in wanted[:2]]
        if name is None and len(by_directory) == 1:
            name = by_directory[0]
        if name is not None:
            return name
        if not served:
            raise SigenError(f"no model is listed at /models by {', '.join(servers)}: check that "
                             "the server has loaded its model")
        where = (f"the server at {servers[0]} does" if len(servers) == 1 else
                 f"the servers at {', '.join(servers)} do")
        use = (f"--model {shlex.quote(self._server_text(next(iter(served))))}"
               if len(served) == 1 else "--model with one of those names")
        raise SigenError(
            f"{where} not serve {self.spec.name!r}; served: {self._names(served)}. Pass {use} "
            "(a model known only to the server is prompted through the server's chat "
            f"template), or start the server with --served-model-name {self.spec.name}")

    def _names(self, models: dict[str, dict], most: int = 10) -> str:
        if not models:
            return "no model at all"
        names = sorted(models)
        more = f" and {len(names) - most} more" if len(names) > most else ""
        return self._server_text(", ".join(repr(n) for n in names[:most])) + more

    async def _list_models(self, replica: Replica) -> dict[str, dict] | None:
        """The models a server serves, by name; None when it does not answer (yet)."""
        server, path = public_url(replica.url), urlsplit(replica.url).path + "/models"
        try:
            response = await self._client.get(f"{replica.url}/models",
                                              timeout=CONNECT_TIMEOUT * 3)
            models = served_models(response) if response.status_code == 200 else None
        except httpx.TransportError as exc:
            self.pool.failed(replica, self._server_text(_describe(exc)), at_once=True)
            return None
        except (MalformedReply, httpx.DecodingError) as exc:
            bad = exc if isinstance(exc, MalformedReply) else _undecodable(exc)
            raise SigenError(
                f"{server} answered {path} with something that is not OpenAI's model list "
                f"({bad.reason}): {self._server_text(bad.start)}. {CHECK_BASE_URL}") from None
        status = response.status_code
        if status in (401, 403):
            raise SigenError(f"{server} refused the API key (HTTP {status}: "
                             f"{self._server_text(error_message(response))}). "
                             "Pass --api-key or set $OPENAI_API_KEY.")
        if status in RETRY_STATUS:  # still starting, or a proxy whose server is not up yet
            self.pool.failed(replica, f"HTTP {status} from {path}", at_once=True)
            return None
        if models is None:
            raise SigenError(f"{server} answered {path} with HTTP {status} "
                             f"({self._server_text(error_message(response))}). {CHECK_BASE_URL}")
        self.pool.succeeded(replica)
        return models

    # -- generation -----------------------------------------------------------------------
    def render(self, request: Request) -> str:
        if self.tokenizer is not None or request.raw:
            return render_prompt(self.tokenizer, "chat", request)
        return render_prompt(None, "completion", request) if \
            self.spec.prompt_format == "completion" else request.prompt

    def request_body(self, request: Request) -> tuple[str, dict]:
        """The endpoint and JSON body for one request."""
        body: dict = {"model": self.served_model, "max_tokens": request.max_tokens,
                      "temperature": request.temperature, "top_p": request.top_p}
        if request.stop:
            body["stop"] = list(request.stop)
        if request.seed is not None:
            body["seed"] = request.seed
        if request.stop_token_ids:  # vLLM's and SGLang's extension
            body["stop_token_ids"] = list(request.stop_token_ids)
        # A raw prompt was rendered with the model's tokenizer here (Magpie): only
        # /v1/completions sends it as it is.
        if request.raw or self.tokenizer is not None or self.spec.prompt_format == "completion":
            return "/completions", {**body, "prompt": self.render(request)}
        messages = [{"role": "user", "content": request.prompt}]
        if request.assistant_prefix:
            messages.append({"role": "assistant", "content": request.assistant_prefix})
            body.update(continue_final_message=True, add_generation_prompt=False)
        return "/chat/completions", {**body, "messages": messages}

    def generate(self, requests: list[Request]) -> list[Completion]:
        if not requests:
            return []
        start = time.perf_counter()
        try:
            completions = self._run(self._generate_all(requests))
        finally:
            self._update_counts()
        self.stats.add(completions, time.perf_counter() - start)
        return completions

    def stream(self, capacity: int) -> OpenAIStream:
        return OpenAIStream(self, capacity)

    async def _generate_all(self, requests: list[Request]) -> list[Completion]:
        tasks = [asyncio.ensure_future(self._send(r)) for r in requests]
        try:
            return list(await asyncio.gather(*tasks))
        finally:  # one failed for good (or Ctrl-C): the others are abandoned, not left running
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _send(self, request: Request) -> Completion:
        path, body = self.request_body(request)
        attempt = malformed = 0
        while True:
            replica = await self.pool.acquire()
            outcome = await self._attempt(replica, path, body)
            if isinstance(outcome, Completion):
                return outcome
            if isinstance(outcome, MalformedReply):
                malformed += 1
                what = (f"{public_url(replica.url)} answered {urlsplit(replica.url).path}{path} "
                        f"with something that is not a completion ({outcome.reason}): "
                        f"{self._server_text(outcome.start)}")
                if malformed >= MALFORMED_TRIES:
                    raise SigenError(f"{what}, {malformed} times in a row. {CHECK_BASE_URL}, "
                                     "and that no proxy in between changes its replies")
                if not self._malformed_told:
                    self._malformed_told = True
                    self.options.log(f"{what}; trying again (a proxy's hiccup?)")
            self.retried += 1
            self.pool.check_outage()
            await asyncio.sleep(backoff_seconds(attempt, self._rng))
            attempt += 1

    async def _attempt(self, replica: Replica, path: str, body: dict
                       ) -> Completion | MalformedReply | str:
        """One try of a request on `replica`: the completion; or a reply that is not one; or
        why the server failed (retried as an outage would be). Raises what retrying cannot
        fix."""
        try:
            response = await self._client.post(replica.url + path, json=body)
            if response.status_code == 200:
                completion = completion_of(response)
        except httpx.TransportError as exc:  # refused, reset, timed out
            failure = self._server_text(_describe(exc))
            self.pool.release(replica, failure)
            return failure
        except (MalformedReply, httpx.DecodingError) as exc:
            self.pool.release(replica)  # it answered: a protocol problem, not an outage
            return exc if isinstance(exc, MalformedReply) else _undecodable(exc)
        except BaseException:
            self.pool.release(replica)
            raise
        status = response.status_code
        if status == 200:
            self.pool.release(replica)
            return completion
        message = self._server_text(error_message(response))
        if status not in RETRY_STATUS:
            self.pool.release(replica)
            raise SigenError(f"{public_url(replica.url)} rejected a request with HTTP "
                             f"{status}: {message}")
        failure = f"HTTP {status}: {message[:200]}"
        self.pool.release(replica, failure)
        return failure

    # -- bookkeeping ----------------------------------------------------------------------
    def _run(self, coroutine):
        return self._loop.run_until_complete(coroutine)

    def _update_counts(self) -> None:
        self.stats.extra.update(requests_retried=self.retried,
                                replicas_dropped=self.pool.dropped)

    def close(self, wait: bool = True) -> None:
        loop = self._loop
        if loop.is_closed():
            return
        with contextlib.suppress(Exception):  # a Ctrl-C left requests behind: drop them
            pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
            for task in pending:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.run_until_complete(self._client.aclose())
        loop.close()


class OpenAIStream:
    """Each submitted request is sent at once (as a task on the engine's event loop, which runs
    while `collect` waits); completions come back in the order the servers finish them."""

    ordered = False
    blocking = False
    WAIT = 0.25  # seconds `collect` waits for a completion, so the caller can check Ctrl-C

    def __init__(self, engine: OpenAIEngine, capacity: int) -> None:
        self.engine = engine
        self.capacity = max(1, capacity)
        self._tasks: dict[asyncio.Task, int] = {}

    @property
    def in_flight(self) -> int:
        return len(self._tasks)

    def submit(self, key: int, request: Request) -> None:
        self._tasks[self.engine._loop.create_task(self._outcome(request))] = key

    async def _outcome(self, request: Request) -> Completion | Exception:
        """The completion, or the error that ended the request, returned rather than raised:
        `collect` raises the first; the same error of other requests (finished after it, or
        while the run stops) is then never an unretrieved task exception, which asyncio would
        print with its traceback when the task is collected."""
        try:
            return await self.engine._send(request)
        except Exception as exc:  # noqa: BLE001 - handed to collect, which raises it
            return exc

    def collect(self) -> list[tuple[int, Completion]]:
        if not self._tasks:
            return []
        start = time.perf_counter()
        engine = self.engine
        try:
            done, _ = engine._run(asyncio.wait(self._tasks, timeout=self.WAIT,
                                               return_when=asyncio.FIRST_COMPLETED))
        finally:
            engine._update_counts()
        outcomes = [(self._tasks.pop(task), task.result()) for task in done
                    if not task.cancelled()]
        failures = [out for _, out in outcomes if isinstance(out, Exception)]
        if failures:
            raise failures[0]
        finished: list[tuple[int, Completion]] = outcomes  # type: ignore[assignment]
        engine.stats.add([c for _, c in finished], time.perf_counter() - start)
        return finished


def _describe(exc: httpx.TransportError) -> str:
    if isinstance(exc, httpx.ConnectError):
        return "connection refused or unreachable"
    if isinstance(exc, httpx.TimeoutException):
        return f"timed out ({type(exc).__name__})"
    return f"{type(exc).__name__}: {exc}"[:200]


def _undecodable(exc: httpx.DecodingError) -> MalformedReply:
    """A reply whose body httpx could not decode (a Content-Encoding it does not match)."""
    return MalformedReply("a body that cannot be decoded", repr(str(exc)[:QUOTED_CHARS]))
