"""A real OpenAI-compatible HTTP server on loopback for the tests: the transformers engine with the tiny
model behind the API the ``openai`` engine speaks, plus fault injection.

    server = LoopbackServer(api_key="s3cret").start()     # aiohttp in a thread; server.url = http://127.0.0.1:<port>/v1
    server.faults.extend(["429", "500", "hang", "malformed", "drop"])   # the next five requests fail so
    ...
    server.stop()

A local try of ``backend: openai`` without a GPU (docs/openai.md), as ``vllm serve`` would be started:
``python -m tests.openai_server --port 8000 --api-key sk-local`` serves the tiny model as ``tiny`` at
``http://127.0.0.1:8000/v1`` until Ctrl-C (no faults).

Endpoints (as vLLM serves them):
- ``GET /v1/models``: the served model (``tiny``), as ``curl http://127.0.0.1:8000/v1/models`` checks a server.
- ``POST /v1/chat/completions``: ``messages``, ``n``, ``seed``, ``temperature``, ``top_p``,
  ``max_completion_tokens`` (or ``max_tokens``), ``stop``, ``response_format`` ``json_schema`` (decoded
  with the engine's grammar; no server-side retries), ``finish_reason`` stop/length; with ``logprobs``
  and ``top_logprobs``, the first answer token's top alternatives (the model's next-token distribution).
- ``POST /v1/completions``: ``prompt`` as token ids (one list or a list of lists) with vLLM's
  ``prompt_logprobs``: per position, ``{token id: {logprob, rank, decoded_token}}`` from one forward pass;
  or with ``echo`` + ``logprobs`` (the legacy API): ``logprobs.tokens`` / ``token_logprobs`` of the prompt
  (the first null) and the generated token; ``echo_fault`` answers as a server that cannot echo them.

Faults, one per request in order: ``429`` (with ``Retry-After: retry_after``), ``500``, ``hang`` (no answer
for ``hang_s``), ``malformed`` (a 200 whose body is cut JSON), ``drop`` (the connection closed without
an answer), ``400`` (a request the server refuses), ``quota`` (OpenAI's 429 ``insufficient_quota``: no
credit left), ``402`` (OpenRouter's Payment Required: no credit left), ``empty`` (a 200 without choices), ``echo`` / ``echo401`` (a 502 / 401 whose message repeats the
request's headers, the API key among them, as a misbehaving proxy does). ``unsupported`` maps a request parameter to
a message: a request that sets it is refused as OpenAI refuses a parameter a model does not take (400,
``param`` naming it, ``code: unsupported_parameter``); ``ignored`` holds parameters the server drops
unread (as llama.cpp's server did ``max_completion_tokens`` until 2026: no budget, 16 tokens here);
``answer_model`` names another model in the answers (a router's fallback). ``refuse`` maps a marker to ``(status, message)``:
a request whose text (messages, or the decoded token ids of /completions) contains the marker is refused
so, every time (a deterministic per-row refusal); status 200 answers it as a model that declines does with
structured outputs (``content: null``, ``refusal``: the message). ``raw`` maps a marker to the body of a 200 answer
sent as is (hostile answers: ``"\\ud800"``, ``NaN``, ``Infinity``). ``supports_logprobs = False`` answers without any
log-probabilities (a server that cannot score). Every request is logged: ``(time, endpoint, fault, body)``.
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import torch
from aiohttp import web
from pydantic import BaseModel, TypeAdapter

from pipeline.config import Sampling
from pipeline.llm import GenerationFailure, get_engine
from tests.llm_configs import llm_config

logging.getLogger("aiohttp.server").setLevel(logging.CRITICAL)  # dropped connections are on purpose


def server_engine(model: str = "tiny"):
    """The in-process engine behind the server (structured_retries 0: the client re-asks)."""
    sampling = Sampling(temperature=1.0, top_p=1.0, max_new_tokens=16, stop=[], seed=0)
    return get_engine(llm_config(model=model, batch_size=8, structured_retries=0, sampling=sampling))


def schema_output(schema: dict[str, Any]) -> type[BaseModel]:
    """A stand-in pydantic model for a JSON schema received over HTTP: the engine compiles its grammar
    from ``model_json_schema()``; validation only checks that the text is JSON (the client validates)."""

    class Output(BaseModel):
        text: str

        @classmethod
        def model_json_schema(cls, *args, **kwargs) -> dict[str, Any]:
            return schema

        @classmethod
        def model_validate_json(cls, data, *args, **kwargs):
            TypeAdapter(Any).validate_json(data)
            return cls(text=data if isinstance(data, str) else data.decode())

    return Output


class LoopbackServer:
    def __init__(self, model: str = "tiny", api_key: str | None = None, retry_after: float = 2.0,
                 hang_s: float = 4.0, port: int = 0):
        self.model, self.port = model, port  # port 0: a free one (server.port once started)
        self.engine = server_engine(model)
        self.api_key = api_key
        self.retry_after, self.hang_s = retry_after, hang_s
        self.faults: collections.deque[str] = collections.deque()
        self.log: list[tuple[float, str, str | None, dict]] = []  # (time, endpoint, fault, request body)
        self.supports_logprobs = True
        self.echo_fault: str | None = None  # echo + logprobs: generated_only | other_tokens (see _echo)
        self.refuse: dict[str, tuple[int, str]] = {}  # marker in the request's text -> (status, message)
        self.raw: dict[str, str | bytes] = {}  # marker in the request's text -> the body of a 200 answer, as sent
        self.unsupported: dict[str, str] = {}  # request parameter -> the 400's message
        self.ignored: set[str] = set()  # request parameters the server does not know and ignores
        self.answer_model: str | None = None  # the model name answers carry (None: the one asked for)
        self.delay_s = 0.0  # extra seconds per answer (to observe requests in flight)
        self.inflight = self.max_inflight = 0
        self._pool = ThreadPoolExecutor(1)  # one model, one thread
        self._loop: asyncio.AbstractEventLoop | None = None

    # --- lifecycle -------------------------------------------------------------------------------

    def start(self) -> LoopbackServer:
        ready = threading.Event()
        app = web.Application(client_max_size=64 * 2**20)
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_post("/v1/completions", self._completions)
        app.router.add_get("/v1/models", self._models)

        def serve():
            self._loop = asyncio.new_event_loop()
            self._runner = web.AppRunner(app)
            self._loop.run_until_complete(self._runner.setup())
            site = web.TCPSite(self._runner, "127.0.0.1", self.port)
            self._loop.run_until_complete(site.start())
            self.port = self._runner.addresses[0][1]
            ready.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=serve, daemon=True)
        self._thread.start()
        if not ready.wait(30):
            raise RuntimeError("the loopback OpenAI server did not start within 30 s (its thread "
                               f"{'died: see the traceback above' if not self._thread.is_alive() else 'is still starting'})")
        return self

    def stop(self) -> None:
        if self._loop is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(30)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(30)
            self._loop = None
        self._pool.shutdown()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def requests(self, endpoint: str | None = None) -> int:
        return sum(1 for _, e, _, _ in self.log if endpoint in (None, e))

    # --- HTTP ------------------------------------------------------------------------------------

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        return await self._handle(request, "chat", self._chat_answer)

    async def _completions(self, request: web.Request) -> web.StreamResponse:
        return await self._handle(request, "completions", self._completions_answer)

    async def _models(self, request: web.Request) -> web.Response:
        """The served model, as a user checks a server first (``curl .../v1/models``); not logged: no engine asks."""
        if self.api_key and request.headers.get("Authorization") != f"Bearer {self.api_key}":
            return _error(401, "Incorrect API key provided")
        model = {"id": self.model, "object": "model", "created": 0, "owned_by": "prefpipe"}
        return web.json_response({"object": "list", "data": [model]})

    async def _handle(self, request: web.Request, endpoint: str, answer) -> web.StreamResponse:
        body = await request.json()
        fault = self.faults.popleft() if self.faults else None
        self.log.append((time.monotonic(), endpoint, fault, body))
        if self.api_key and request.headers.get("Authorization") != f"Bearer {self.api_key}":
            return _error(401, "Incorrect API key provided")
        if fault == "429":
            return _error(429, "Rate limit reached", {"Retry-After": f"{self.retry_after:g}"})
        if fault == "500":
            return _error(500, "Internal server error")
        if fault == "400":
            return _error(400, "This model's maximum context length is 2048 tokens")
        if fault == "402":
            return _error(402, "Insufficient credits. Add more using https://openrouter.ai/credits")
        if fault == "quota":
            return _error(429, "You exceeded your current quota, please check your plan and billing details.",
                          type="insufficient_quota", code="insufficient_quota")
        if fault in ("echo", "echo401"):
            return _error(401 if fault == "echo401" else 502, f"failed: request headers {dict(request.headers)}")
        if fault == "empty":
            return web.json_response(_chat_response(self.model, []))
        if fault == "malformed":
            return web.Response(status=200, text='{"id": "cmpl-1", "choices": [{"index": 0, "mess',
                                content_type="application/json")
        if fault == "drop":
            request.transport.close()
            raise ConnectionResetError("fault injection: connection dropped")
        if fault == "hang":  # the client has given up by then
            await asyncio.sleep(self.hang_s)
            return _error(504, "answered too late")
        for param, message in self.unsupported.items():
            if param in body:
                return _error(400, message, type="invalid_request_error", param=param, code="unsupported_parameter")
        for marker, text in self.raw.items():  # hostile answers: lone surrogate escapes, NaN, Infinity as JSON
            if marker in self._text(body):
                raw = text if isinstance(text, bytes) else text.encode()  # bytes: not UTF-8, as sent
                return web.Response(status=200, body=raw, content_type="application/json")
        for marker, (status, message) in self.refuse.items():
            if marker in self._text(body) and status == 200:  # the model declines (structured outputs' refusal)
                choice = {"index": 0, "message": {"role": "assistant", "content": None, "refusal": message},
                          "finish_reason": "stop", "logprobs": None}
                return web.json_response(_chat_response(self.model, [choice]))
            if marker in self._text(body):
                return _error(status, message)
        if body.get("model") != self.model:
            return _error(404, f"The model `{body.get('model')}` does not exist.")
        self.inflight += 1
        self.max_inflight = max(self.max_inflight, self.inflight)
        try:
            await asyncio.sleep(self.delay_s)
            data = await asyncio.get_running_loop().run_in_executor(self._pool, answer, body)
        finally:
            self.inflight -= 1
        if self.answer_model is not None:  # a router that fell back to another model
            data = {**data, "model": self.answer_model}
        return web.json_response(data)

    def _text(self, body: dict[str, Any]) -> str:
        if "messages" in body:
            return json.dumps(body["messages"], ensure_ascii=False)
        prompt = body.get("prompt") or []
        prompts = [prompt] if prompt and isinstance(prompt[0], int) else prompt
        return "\n".join(self.engine.tokenizer.decode(ids) for ids in prompts)

    # --- answers (in the model thread) -----------------------------------------------------------

    def _chat_answer(self, body: dict[str, Any]) -> dict[str, Any]:
        body = {k: v for k, v in body.items() if k not in self.ignored}
        messages = body["messages"]
        if body.get("logprobs") and body.get("top_logprobs"):
            return self._first_token(messages, int(body["top_logprobs"]))
        stop = body.get("stop") or []
        budget = body.get("max_completion_tokens") or body.get("max_tokens") or 16
        sampling = Sampling(
            temperature=body.get("temperature", 1.0), top_p=body.get("top_p", 1.0), max_new_tokens=budget,
            stop=[stop] if isinstance(stop, str) else list(stop), seed=body.get("seed") or 0,
        )
        fmt = body.get("response_format") or {}
        schema = schema_output(fmt["json_schema"]["schema"]) if fmt.get("type") == "json_schema" else None
        [outs] = self.engine.generate([messages], n=body.get("n", 1), sampling=sampling, schema=schema)
        choices = []
        for i, out in enumerate(outs):
            if schema is None:
                text, reason = out.text, out.finish_reason
            elif isinstance(out, GenerationFailure):
                text, reason = out.raw, "length" if "max_new_tokens" in out.error else "stop"
            else:
                text, reason = out.text, "stop"
            choices.append({"index": i, "message": {"role": "assistant", "content": text},
                            "finish_reason": reason, "logprobs": None})
        # The answer's tokens, re-encoded (at most the budget: re-encoding may split a cut answer differently).
        used = sum(min(budget, len(self.engine.tokenizer.encode(c["message"]["content"], add_special_tokens=False)))
                   for c in choices)
        return _chat_response(self.model, choices, used, len(self.engine.codec.prompt_ids(messages)))

    def _next_token_logprobs(self, ids: list[int]) -> torch.Tensor:
        """log p(token | ids[:t]) for every position t (row t predicts ids[t + 1])."""
        engine = self.engine
        with torch.inference_mode():
            logits = engine.model(input_ids=torch.tensor([ids], device=engine.device)).logits[0]
        return torch.log_softmax(logits.double(), dim=-1)

    def _first_token(self, messages: list[dict[str, str]], k: int) -> dict[str, Any]:
        tok = self.engine.tokenizer
        lp = self._next_token_logprobs(self.engine.codec.prompt_ids(messages))[-1]
        values, ids = lp.topk(k)
        top = [{"token": tok.decode([i]), "logprob": v, "bytes": list(tok.decode([i]).encode())}
               for v, i in zip(values.tolist(), ids.tolist(), strict=True)]
        choice = {"index": 0, "message": {"role": "assistant", "content": top[0]["token"]},
                  "finish_reason": "length",
                  "logprobs": {"content": [{**top[0], "top_logprobs": top}]} if self.supports_logprobs else None}
        return _chat_response(self.model, [choice])

    def _completions_answer(self, body: dict[str, Any]) -> dict[str, Any]:
        prompt = body["prompt"]
        prompts = [prompt] if prompt and isinstance(prompt[0], int) else prompt
        tok = self.engine.tokenizer
        choices = []
        for i, ids in enumerate(prompts):
            lp = self._next_token_logprobs(ids)
            choice: dict[str, Any] = {"index": i, "text": tok.decode([int(lp[-1].argmax())]),
                                      "finish_reason": "length", "logprobs": None}
            if body.get("echo") and body.get("logprobs") is not None:  # the legacy API's prompt log-probs
                choice["logprobs"] = self._echo(ids, lp, body) if self.supports_logprobs else None
            if body.get("prompt_logprobs") is not None and self.supports_logprobs:
                table: list[dict | None] = [None]
                for t in range(1, len(ids)):
                    row, v = lp[t - 1], lp[t - 1, ids[t]]
                    table.append({str(ids[t]): {"logprob": float(v), "rank": int((row > v).sum()) + 1,
                                                "decoded_token": tok.decode([ids[t]])}})
                choice["prompt_logprobs"] = table
            choices.append(choice)
        return {"id": "cmpl-loopback", "object": "text_completion", "created": int(time.time()),
                "model": self.model, "choices": choices,
                "usage": {"prompt_tokens": sum(map(len, prompts)), "completion_tokens": len(prompts),
                          "total_tokens": sum(map(len, prompts)) + len(prompts)}}


    def _echo(self, ids: list[int], lp: torch.Tensor, body: dict[str, Any]) -> dict[str, Any]:
        """``echo`` + ``logprobs`` as vLLM and OpenAI answer it: the prompt's tokens (the first without a
        log-probability), then the ``max_tokens`` generated (greedy here: at most 1). ``echo_fault``:
        ``generated_only`` (no prompt positions, as llama.cpp's server), ``other_tokens`` (another tokenizer)."""
        tok = self.engine.tokenizer
        shown = [(i + 1) % len(tok) for i in ids] if self.echo_fault == "other_tokens" else ids
        tokens = [tok.decode([i]) for i in shown]
        values: list[float | None] = [None] + [float(lp[t - 1, ids[t]]) for t in range(1, len(ids))]
        if body.get("max_tokens", 16):
            nxt = int(lp[-1].argmax())
            tokens.append(tok.decode([nxt]))
            values.append(float(lp[-1, nxt]))
        if self.echo_fault == "generated_only":
            tokens, values = tokens[len(ids):], values[len(ids):]
        return {"tokens": tokens, "token_logprobs": values, "top_logprobs": [None if v is None else {tk: v}
                for tk, v in zip(tokens, values, strict=True)], "text_offset": [0] * len(tokens)}


def _chat_response(model: str, choices: list[dict[str, Any]], completion_tokens: int = 0,
                   prompt_tokens: int = 0) -> dict[str, Any]:
    usage = {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
             "total_tokens": prompt_tokens + completion_tokens}
    return {"id": "chatcmpl-loopback", "object": "chat.completion", "created": int(time.time()), "model": model,
            "choices": choices, "usage": usage}


def _error(status: int, message: str, headers: dict[str, str] | None = None, **fields: Any) -> web.Response:
    error = {"message": message, "type": "error", "code": status, **fields}
    return web.json_response({"error": error}, status=status, headers=headers)


def main(argv: list[str] | None = None) -> None:
    """Serve the tiny model on loopback until interrupted, printing the URL to point ``base_url`` at."""
    import argparse
    import signal

    parser = argparse.ArgumentParser(prog="python -m tests.openai_server", description=main.__doc__)
    parser.add_argument("--port", type=int, default=8000, help="0: a free port (printed)")
    parser.add_argument("--api-key", default=None, help="the key requests must send (as vllm serve --api-key)")
    args = parser.parse_args(argv)
    stop = {signal.SIGINT, signal.SIGTERM}
    signal.pthread_sigmask(signal.SIG_BLOCK, stop)  # before the server's thread starts: it inherits the mask
    server = LoopbackServer(api_key=args.api_key, port=args.port).start()
    print(f"serving model 'tiny' at {server.url} (Ctrl-C stops)", flush=True)
    try:
        signal.sigwait(stop)
    finally:
        server.stop()


if __name__ == "__main__":
    main()
