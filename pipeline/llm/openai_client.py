"""Many requests in flight to OpenAI-compatible servers: bounded, retried, cached, answered in input order.

    >>> transport = Transport(cfg)                                   # cfg: an ``llm`` section  # doctest: +SKIP
    >>> transport.run([Request("chat", body, read=parse), ...])      # answers (or RequestFailed) in input order  # doctest: +SKIP

- **In flight**: one asyncio loop per call, the official ``openai`` client (``AsyncOpenAI``, its own
  retries off), at most ``llm.concurrency`` requests open at once across all servers.
- **Servers**: ``llm.base_url`` is one URL or a list (one ``vllm serve`` per node). A request goes to
  the server picked by a hash of its ``route`` (the prompt), so the samples of one prompt share a
  server's prefix cache; each retry moves to the next server, so a dead node costs one attempt.
- **Retries** (``tenacity``): up to ``llm.max_retries`` more attempts on 408/409/429/5xx, timeouts
  (``llm.timeout_s``), dropped connections and unreadable answers (malformed JSON, missing fields).
  The wait is the server's ``Retry-After`` (or ``retry-after-ms``) when it sends one, else exponential
  backoff from ``BACKOFF_INITIAL`` seconds with up to ``BACKOFF_JITTER`` seconds of random jitter.
- **Failures**: a request that still fails comes back as a ``RequestFailed`` value (``retryable``: a
  rerun may succeed); one the server refuses for itself (another 4xx such as 400/413/422, an answer
  ended by a content filter or declined by the model) as a ``RequestFailed`` with ``refused`` set
  (``too_long`` when the prompt exceeds the model's context length), which the engine turns into that
  row's failure; the other requests of the call are unaffected. A refusal that concerns every request
  raises ``ServerError`` at once, since rows would all fail the same way: 401/403 (key), 404 (model), no
  credit left (402, a 429 ``insufficient_quota``: not retried), a 4xx naming a parameter the request
  sets other than the prompt (``param``, or a validation error's ``('body', name)``: e.g. a reasoning
  model refusing ``temperature`` or ``logprobs``). Error messages and log lines never hold the API key
  (replaced by ``***``: a proxy may echo the request's headers).
- **Cache**: every answer is stored under the hash of model + request (``pipeline.llm.request_cache``)
  before the call returns; cached requests are not sent again, identical requests of one call are
  sent once.
- **Model**: an answer naming another model than asked for (a router's fallback; a dated snapshot of the
  model is the same) is kept, with one warning per pair of names.
- **Usage**: ``tokens`` sums the prompt and completion tokens the servers reported (retried answers too:
  a hosted API bills them); every call logs them at INFO (``prefpipe -v run``) with the requests it sent.
- **Cost guard**: ``llm.max_requests`` caps the requests this engine sends (cache hits are free, retries
  of one request count once); a call that would pass it raises ``CostGuardError`` before sending any.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import random
import re
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Any, Literal

import openai
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_exponential_jitter

from pipeline.config import LLM
from pipeline.errors import EngineError, printable
from pipeline.llm.request_cache import MISS, RequestCache, request_key

log = logging.getLogger(__name__)
# The HTTP client logs every request at INFO: under `prefpipe -v run` that is one line per request (a
# stage sends thousands) drowning this module's one line per call. Its warnings still show.
for _name in ("httpx", "httpx2"):
    logging.getLogger(_name).setLevel(max(logging.WARNING, logging.getLogger(_name).level))

BACKOFF_INITIAL = 1.0  # seconds before the first retry when the server sends no Retry-After
BACKOFF_MAX = 60.0
BACKOFF_JITTER = 1.0
MAX_RETRY_AFTER = 600.0  # a longer Retry-After (a daily quota) is waited only this long per attempt
RETRY_STATUS = {408, 409, 429}  # and every 5xx (not a 429 insufficient_quota: billing, not a rate limit)
FATAL_STATUS = {401: "the server rejected the API key", 403: "the API key may not use this model",
                404: "the server does not serve this model or endpoint"}
# Messages name settings ``llm.<field>``; ``LLM.naming`` puts the key that set each in its place (a role's).
CHECK_SETTINGS = "check llm.model, llm.base_url and llm.api_key_env"
CHECK_URL = ("llm.base_url is the API root, e.g. http://node1:8000/v1 as `vllm serve` prints it (not "
             "the server root, not .../chat/completions), and llm.model a served name (<base_url>/models lists them)")
BODY_LOC = re.compile(r"\(\s*'body',\s*'(\w+)'")  # a pydantic validation error's location (vLLM, strict servers)


class BadResponse(ValueError):
    """An answer that cannot be read (malformed JSON, a missing field): retried like a 5xx."""


class RowError(ValueError):
    """A readable answer that is no use for this row (e.g. cut by a content filter): not retried."""


class ServerError(EngineError):
    """A problem with the server or the settings, not with a row: the whole call fails."""


class CostGuardError(ServerError):
    """The call would send more requests than ``llm.max_requests`` allows."""


NO_CREDIT = re.compile(r"insufficient[ _](quota|credits?|balance)|credit balance is too low", re.IGNORECASE)
CONTEXT_LENGTH = re.compile(r"context[ _]length|context window|max_model_len|too many tokens|prompt is too long",
                            re.IGNORECASE)


@dataclass(frozen=True)
class RequestFailed:
    """A request that failed for good; ``error`` says why in one line. ``refused``: the server refused
    this request itself (a 4xx other than 408/409/429, a content filter), so a rerun fails the same way;
    ``too_long``: the refusal says the prompt exceeds the model's context length; ``sent``: False for a request
    the engine kept back (its prompt could forge turns on the server: ``openai_requests.control_text``)."""

    error: str
    refused: bool = False
    too_long: bool = False
    sent: bool = True


@dataclass(frozen=True)
class Request:
    """One HTTP request: ``endpoint`` (``chat`` = /chat/completions, ``completions`` = /completions),
    the OpenAI ``body``, vendor ``extra`` parameters (sent as ``extra_body``), ``read`` (the JSON answer
    -> what is kept; raises ``BadResponse`` / ``RowError``) and ``read_key`` (what else ``read``
    depends on, part of the cache key). ``route`` picks the server (same route, same server)."""

    endpoint: Literal["chat", "completions"]
    body: dict[str, Any]
    read: Callable[[dict[str, Any]], Any] = field(compare=False)
    extra: dict[str, Any] = field(default_factory=dict)
    read_key: Any = None
    route: str = ""

    def key(self) -> str:
        return request_key({"endpoint": self.endpoint, "body": self.body, "extra": self.extra, "read": self.read_key})


def api_key(cfg: LLM) -> str:
    """The key from the environment variable ``llm.api_key_env`` names (``EMPTY`` when none is named:
    a ``vllm serve`` without ``--api-key`` takes any)."""
    if cfg.api_key_env is None:
        return "EMPTY"
    value = os.environ.get(cfg.api_key_env, "")
    if not value:
        raise ServerError(
            f"{cfg.key('api_key_env')} names {cfg.api_key_env}, which is not set in this environment: export it "
            "where the stage runs (and on Ray workers), or set api_key_env: null for a server without a key"
        )
    return value


def retry_after(exc: BaseException | None) -> float | None:
    """Seconds the server asked us to wait (``retry-after-ms`` or ``Retry-After``: seconds or an HTTP date)."""
    if not isinstance(exc, openai.APIStatusError):
        return None
    headers = exc.response.headers
    with contextlib.suppress(TypeError, ValueError):
        if headers.get("retry-after-ms") is not None:
            return max(0.0, float(headers["retry-after-ms"]) / 1000)
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    with contextlib.suppress(TypeError, ValueError):
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    return None


def _wait(state) -> float:
    after = retry_after(state.outcome.exception())
    if after is not None:
        return min(after, MAX_RETRY_AFTER) + random.uniform(0, BACKOFF_JITTER)
    return wait_exponential_jitter(initial=BACKOFF_INITIAL, max=BACKOFF_MAX, jitter=BACKOFF_JITTER)(state)


def quota_exhausted(exc: BaseException) -> bool:
    """The account has no credit left, which no wait fixes: 402 Payment Required (OpenRouter), OpenAI's 429
    ``insufficient_quota``, a 4xx saying so (Anthropic's "credit balance is too low")."""
    if not isinstance(exc, openai.APIStatusError) or not 400 <= exc.status_code < 500:
        return False
    return (exc.status_code == 402 or "insufficient_quota" in (exc.code, exc.type)
            or bool(NO_CREDIT.search(_message(exc))))


def retryable(exc: BaseException) -> bool:
    if isinstance(exc, openai.APIStatusError):
        return (exc.status_code in RETRY_STATUS or exc.status_code >= 500) and not quota_exhausted(exc)
    return isinstance(exc, openai.APIConnectionError | BadResponse)


def _message(exc: openai.APIStatusError) -> str:
    body = exc.body if isinstance(exc.body, dict) else {}
    return " ".join(str(body.get("message") or exc.message).split())


def rejected_parameter(exc: openai.APIStatusError, req: Request) -> str | None:
    """The request parameter a refusal names (OpenAI's ``param``, or a validation error's ``('body', name)``)
    when the request sets it and it is not the prompt: the server would refuse every request of the call.
    A refusal over the context length may name ``max_tokens`` (prompt + budget): that one is the row's."""
    if retryable(exc) or CONTEXT_LENGTH.search(_message(exc)):
        return None
    sent = (set(req.body) | set(req.extra)) - {"messages", "prompt"}
    for name in [str(exc.param or ""), *BODY_LOC.findall(_message(exc))]:
        head = re.match(r"(?:\$\.|body\.)?(\w+)", name)
        if head and head.group(1) in sent:
            return head.group(1)
    return None


def request_wide(exc: openai.APIStatusError, req: Request) -> tuple[str, str] | None:
    """``(what, what to do)`` when a refusal concerns every request of the call, which then fails at once
    (rows would all fail alike, or every retry wait in vain); None when it is this request's."""
    if exc.status_code in FATAL_STATUS:
        return FATAL_STATUS[exc.status_code], CHECK_URL if exc.status_code == 404 else CHECK_SETTINGS
    if quota_exhausted(exc):
        return ("the account has no quota left", "add credit or raise the account's limits, then rerun (the "
                "answers that came back are cached)")
    param = rejected_parameter(exc, req)
    if param is not None:
        return f"the server does not accept the request parameter {param!r}", PARAMETER_FIX.get(
            (req.endpoint, param), "every request sets it: change the role's llm.sampling or option_scoring to what "
            "this model takes (reasoning models take neither temperature nor logprobs), or use a model or server "
            "that accepts it")
    return None


_ECHO_FIX = ("teacher-forced scores were asked for with llm.prompt_logprobs_via: echo, which this server does not "
             "take: set it to prompt_logprobs for a vLLM server, or use a server whose /completions echoes the "
             "prompt's logprobs")
PARAMETER_FIX = {  # (endpoint, parameter) -> what to do, where the generic advice would point at the wrong key
    ("completions", "prompt_logprobs"): "teacher-forced scores (Selfie, PUGC and DOVE judges' logprobs) use vLLM's "
    "prompt_logprobs extension: serve the model with vLLM, or set llm.prompt_logprobs_via: echo for a server whose "
    "legacy /completions echoes the prompt's logprobs",
    ("completions", "echo"): _ECHO_FIX,
    ("completions", "logprobs"): _ECHO_FIX,
}


def describe(exc: BaseException, timeout_s: float, secret: str | None = None, timeout_key: str = "llm.timeout_s") -> str:
    """One line on why a request failed, ``secret`` (the API key) replaced by ``***`` before the line is cut
    (a server or proxy may echo the request's headers); a timeout names ``timeout_key``, the key that set it."""

    def line(text: object, limit: int) -> str:
        text = " ".join(str(text).split())  # control characters and lone surrogates escaped: a row's error is written
        return printable(text.replace(secret, "***") if secret else text)[:limit]

    if isinstance(exc, openai.APIStatusError):
        return f"HTTP {exc.status_code}: {line(_message(exc), 300)}"
    if isinstance(exc, openai.APITimeoutError):
        return f"no answer within {timeout_key}={timeout_s:g} s"
    if isinstance(exc, openai.APIConnectionError):
        cause = exc.__cause__ or exc
        return f"connection failed ({type(cause).__name__}: {line(cause, 200)})"
    if isinstance(exc, RowError):  # says itself what the answer was
        return line(exc, 300)
    return f"{type(exc).__name__}: {line(exc, 300)}"


_SNAPSHOT = re.compile(r"\d{4}-\d{2}-\d{2}|\d{8}|\d{4}")  # a date suffix: 2024-07-18, 20241022, 0613


def same_model(asked: str, served: str) -> bool:
    """``served`` is ``asked`` or a dated snapshot of it (``gpt-4o-mini`` -> ``gpt-4o-mini-2024-07-18``, ``gpt-4`` ->
    ``gpt-4-0613``, ``claude-3-5-sonnet`` -> ``claude-3-5-sonnet-20241022``); ``gpt-4o-mini`` is not ``gpt-4o``."""
    return served == asked or (served.startswith(asked + "-") and _SNAPSHOT.fullmatch(served[len(asked) + 1:]) is not None)


def run_sync(coro):
    """Run a coroutine to completion from sync code, also when this thread already runs a loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


class Transport:
    def __init__(self, cfg: LLM, cache: RequestCache | None = None):
        self.cfg = cfg
        self.urls = [cfg.base_url] if isinstance(cfg.base_url, str) else list(cfg.base_url or [])
        if not self.urls:
            raise ServerError(f"model {cfg.model!r}: {cfg.key('base_url')} is required with backend: openai")
        self.key = api_key(cfg)
        self.cache = cache or RequestCache()
        self.sent = 0  # requests sent by this engine (the cost guard's count)
        self.tokens = {"prompt": 0, "completion": 0}  # the usage the servers reported (what a hosted API bills)
        self.other_models: set[tuple[Any, str]] = set()  # (asked, answered) model names already warned about

    def where(self) -> str:
        return f"model {self.cfg.model!r} at {', '.join(self.urls)}"

    def run(self, requests: list[Request]) -> list[Any]:
        """The answer of every request (or ``RequestFailed``), in input order."""
        keys = [r.key() for r in requests]
        answers: dict[str, Any] = {}
        todo: dict[str, Request] = {}
        for k, r in zip(keys, requests, strict=True):
            if k in answers or k in todo:
                continue
            cached = self.cache.get(k)
            if cached is MISS:
                todo[k] = r
            else:
                answers[k] = cached
        if todo:
            self._guard(len(todo))
            self.sent += len(todo)
            answers.update(run_sync(self._send_all(todo)))
        log.info("%s: %d requests sent, %d answered from the cache; this engine so far: %d requests, %d prompt + "
                 "%d completion tokens", self.where(), len(todo), len(requests) - len(todo), self.sent,
                 self.tokens["prompt"], self.tokens["completion"])
        return [answers[k] for k in keys]

    def _guard(self, n: int) -> None:
        limit = self.cfg.max_requests
        if limit is not None and self.sent + n > limit:
            raise CostGuardError(
                f"{self.where()}: this call needs {n} uncached requests and {self.sent} were already sent, "
                f"over {self.cfg.key('max_requests')}={limit}; nothing was sent. Raise it (cached answers are free, "
                "so a rerun only pays for what is missing) or shrink the input"
            )

    async def _send_all(self, todo: dict[str, Request]) -> dict[str, Any]:
        sem = asyncio.Semaphore(self.cfg.concurrency)
        async with contextlib.AsyncExitStack() as stack:
            clients = [
                await stack.enter_async_context(
                    openai.AsyncOpenAI(base_url=url, api_key=self.key, timeout=self.cfg.timeout_s, max_retries=0)
                )
                for url in self.urls
            ]
            tasks = [asyncio.ensure_future(self._send(clients, sem, k, r)) for k, r in todo.items()]
            try:
                done = await asyncio.gather(*tasks)
            except BaseException:  # the call failed whole: stop the rest (not a dropped connection and a retry each)
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                raise
        return dict(done)

    async def _send(self, clients, sem: asyncio.Semaphore, key: str, req: Request) -> tuple[str, Any]:
        first = int(hashlib.sha1(req.route.encode()).hexdigest(), 16) % len(clients)
        try:
            async for attempt in AsyncRetrying(
                stop=stop_after_attempt(self.cfg.max_retries + 1),
                wait=_wait,
                retry=retry_if_exception(retryable),
                before_sleep=self._log_retry,
                reraise=True,
            ):
                with attempt:
                    client = clients[(first + attempt.retry_state.attempt_number - 1) % len(clients)]
                    async with sem:
                        text = await self._post(client, req)
                    data = _json(text)
                    self._count(data)
                    self._check_model(req, data)
                    answer = req.read(data)
        except openai.APIStatusError as e:
            wide = request_wide(e, req)
            if wide is not None:
                raise ServerError(f"{self.where()}: {wide[0]} ({self._describe(e)}); {self.cfg.naming(wide[1])}") from None
            return key, self._failed(e, refused=not retryable(e))
        except RowError as e:
            return key, self._failed(e, refused=True)
        except (openai.APIConnectionError, BadResponse) as e:
            return key, self._failed(e, refused=False)
        self.cache.put(key, answer)
        return key, answer

    def _check_model(self, req: Request, data: dict[str, Any]) -> None:
        """Warn (once per pair) when an answer names another model than asked for: a router's fallback."""
        asked, served = req.body.get("model"), data.get("model")
        if not isinstance(served, str) or same_model(str(asked), served) or (asked, served) in self.other_models:
            return
        self.other_models.add((asked, served))
        log.warning("%s: the server answered with model %r when asked for %r (a router's fallback?); its answers "
                    "are kept and cached under %r: check the server's routing if that is another model",
                    self.where(), served, asked, asked)

    def _count(self, data: dict[str, Any]) -> None:
        usage = data.get("usage") if isinstance(data.get("usage"), dict) else {}
        for kind in self.tokens:
            if type(usage.get(f"{kind}_tokens")) is int:
                self.tokens[kind] += usage[f"{kind}_tokens"]

    def _describe(self, exc: BaseException) -> str:
        return describe(exc, self.cfg.timeout_s, secret=self.key if self.key != "EMPTY" else None,
                        timeout_key=self.cfg.key("timeout_s"))

    def _failed(self, exc: BaseException, refused: bool) -> RequestFailed:
        error = self._describe(exc)
        return RequestFailed(error, refused=refused, too_long=refused and bool(CONTEXT_LENGTH.search(error)))

    async def _post(self, client: openai.AsyncOpenAI, req: Request) -> str:
        api = client.chat.completions if req.endpoint == "chat" else client.completions
        response = await api.with_raw_response.create(**req.body, extra_body=req.extra or None)
        return response.text

    def _log_retry(self, state) -> None:
        exc = state.outcome.exception()
        log.warning("%s: %s; retry %d of %d in %.1f s", self.where(), self._describe(exc),
                    state.attempt_number, self.cfg.max_retries, state.next_action.sleep)


def _json(text: str) -> dict[str, Any]:
    try:
        data = json.loads(text)
    except ValueError as e:
        raise BadResponse(f"not JSON ({e}): {text[:80]!r}") from None
    if not isinstance(data, dict):
        raise BadResponse(f"expected a JSON object, got {text[:80]!r}")
    return data
