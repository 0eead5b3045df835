"""``anymal-lit serve``: an OpenAI-compatible HTTP server for a trained model, on LitServe.

Routes: ``POST /v1/chat/completions`` (streamed over server-sent events with ``"stream": true``), ``GET /v1/models``,
``GET /health`` (always open) and LitServe's ``/info``. Messages are those of :func:`anymal_lit.chat` (text,
``image_url``, ``input_audio`` and the kit's ``video`` / ``imu`` parts); media arrive inline as base64 data URLs, and
a local path is read only under ``--media-root``.

Batching: LitServe's ``OpenAISpec`` queues every request on its own, and its batched streaming loop hands up to
``--max-batch-size`` of them (collected for ``--batch-timeout`` seconds) to one ``predict`` call. ``predict`` runs one
left-padded ``generate`` per group of requests with equal sampling settings and yields, step by step, one item per
request: its new text when it streams, nothing until the end otherwise. A bad request must not fail the others of its
batch (LitServe answers a whole batch with one error), so the worker marks it and the spec turns the mark into HTTP
400 with the problem named, before any reply is sent.
"""

from __future__ import annotations

import argparse
import json
import logging
import queue
import signal
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import litserve as ls
import torch
from fastapi import BackgroundTasks, Depends, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from litserve.loops.streaming_loops import BatchedStreamingLoop
from litserve.specs.openai import ChatCompletionRequest, OpenAISpec
from litserve.utils import LitAPIStatus
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from transformers.generation.streamers import BaseStreamer

from anymal_lit.inference.chat import collate, placeholders, prepare_samples, sampling_kwargs
from anymal_lit.inference.loading import load_model
from anymal_lit.inference.messages import PART_MODALITIES, MessageError, to_record
from anymal_lit.models.anymal import ContextLengthError

log = logging.getLogger(__name__)
BEARER = Depends(HTTPBearer(auto_error=False))


class RequestMessage(BaseModel):
    """A chat message whose parts stay plain JSON: :func:`~anymal_lit.inference.messages.to_record` validates them
    (LitServe's own model knows neither the kit's ``video``/``imu`` parts nor a 400 for an unknown one)."""

    model_config = ConfigDict(extra="allow")
    role: str
    content: str | list[Any] | None = None


class ChatRequest(ChatCompletionRequest):
    """OpenAI's chat request; greedy unless a temperature is given (as :func:`anymal_lit.chat`)."""

    messages: list[RequestMessage]
    temperature: float | None = 0.0
    n: int = Field(1, ge=1, le=16)


class AnyMALSpec(OpenAISpec):
    """``OpenAISpec`` with the kit's message parts, ``/v1/models``, per-request 400s and empty steps dropped."""

    def __init__(self, model_name: str) -> None:
        super().__init__()
        self.model_name = model_name

    def pre_setup(self, lit_api: ls.LitAPI) -> None:
        super().pre_setup(lit_api)
        self.add_endpoint("/v1/models", self.list_models, ["GET"])

    async def list_models(self) -> dict[str, Any]:
        return {"object": "list", "data": [{"id": self.model_name, "object": "model", "created": 0,
                                            "owned_by": "anymal-lit"}]}  # fmt: skip

    async def chat_completion(self, request: ChatRequest, background_tasks: BackgroundTasks) -> Any:
        if not request.model:
            request.model = self.model_name
        return await super().chat_completion(request, background_tasks)

    async def get_from_queues(self, uids: list) -> list[AsyncIterator]:
        pipes = await super().get_from_queues(uids)  # reads self.queues before any await: keep it first
        try:
            return [await self._checked(uid, pipe) for uid, pipe in zip(uids, pipes)]
        except BaseException:
            for uid in uids:  # n > 1: the other choices' buffers too
                self.response_buffer.pop(uid, None)
            raise

    async def _checked(self, uid: Any, pipe: AsyncIterator) -> AsyncIterator:
        """Wait for the request's first text (or error mark): a bad request becomes HTTP 400 before any reply."""
        first = []
        try:
            while True:
                try:
                    data, status = await pipe.__anext__()
                except StopAsyncIteration:
                    break
                if status == LitAPIStatus.OK:
                    payload = json.loads(data)
                    if payload.get("error"):
                        raise HTTPException(payload.get("status", 400), payload["error"])
                    if _empty_step(payload):
                        continue
                first.append((data, status))
                break
        except BaseException:
            self.response_buffer.pop(uid, None)
            raise
        return self._rest(uid, first, pipe)

    async def _rest(self, uid: Any, first: list, pipe: AsyncIterator) -> AsyncIterator:
        try:
            for item in first:
                yield item
            async for data, status in pipe:
                if status != LitAPIStatus.OK or not _empty_step(json.loads(data)):
                    yield data, status
        finally:
            self.response_buffer.pop(uid, None)  # OpenAISpec leaves finished requests' buffers behind


def _empty_step(payload: dict[str, Any]) -> bool:
    """A step where the request got no new text (other requests of its batch did); the final step has usage."""
    return not payload.get("content") and not payload.get("prompt_tokens")


@dataclass
class Prepared:
    """One decoded request in the worker: its tokenized sample, or why it cannot be answered."""

    sample: dict[str, Any] | None = None
    error: str | None = None
    stream: bool = False
    settings: tuple = ()
    sent: str = ""
    status: int = 400


class BatchStreamer(BaseStreamer):
    """``generate``'s streamer for a whole batch: after each step, every row's text so far (up to its EOS)."""

    def __init__(self, tokenizer: Any, rows: int) -> None:
        self.tokenizer = tokenizer
        eos = tokenizer.eos_token_id
        self.eos = set(eos if isinstance(eos, list) else [eos])
        self.tokens: list[list[int]] = [[] for _ in range(rows)]
        self.done = [False] * rows
        self.prompt = True
        self.steps: queue.Queue = queue.Queue()

    def put(self, value: torch.Tensor) -> None:
        if self.prompt:  # generate() first passes the prompt (empty with inputs_embeds)
            self.prompt = False
            return
        for r, ids in enumerate(value.reshape(len(self.tokens), -1).tolist()):
            for token in ids:
                self.done[r] = self.done[r] or token in self.eos
                if not self.done[r]:
                    self.tokens[r].append(token)
        self.steps.put([self.tokenizer.decode(t, skip_special_tokens=True) for t in self.tokens])

    def end(self) -> None:
        self.steps.put(None)

    def __iter__(self) -> Iterator[list[str]]:
        while (texts := self.steps.get(timeout=600)) is not None:
            yield texts


class ChatAPI(ls.LitAPI):
    """The model behind the spec: decodes each request in the worker, generates for a batch of them at once."""

    def __init__(
        self,
        model: str,
        device: str | None = None,
        dtype: str | None = None,
        media_root: str | None = None,
        max_new_tokens: int = 256,
        api_key: str | None = None,
        model_name: str | None = None,
        max_batch_size: int = 16,
        batch_timeout: float = 0.05,
    ) -> None:
        super().__init__(
            max_batch_size=max_batch_size,
            batch_timeout=batch_timeout,
            spec=AnyMALSpec(model_name or Path(model).name),
            loop=BatchedStreamingLoop(),  # also at batch size 1, so predict always sees a list
        )
        self.model_path = model
        self.model_device = device
        self.dtype = dtype
        self.media_root = str(Path(media_root).resolve()) if media_root else None
        self.max_new_tokens = max_new_tokens
        self.api_key = api_key

    def setup(self, device: str) -> None:
        self.model = load_model(self.model_path, device=self.model_device or device, dtype=self.dtype)
        self.marks = placeholders(self.model)
        log.info("serving %s (%s) on %s", self.model_path, ", ".join(self.model.modalities), device)

    def authorize(self, request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, BEARER]) -> None:
        """Every route but the health check needs ``Authorization: Bearer <--api-key>`` when a key is set."""
        if self.api_key is None or request.url.path == "/health":
            return
        if credentials is None or credentials.credentials != self.api_key:
            raise HTTPException(401, "invalid or missing API key (send 'Authorization: Bearer <key>')")

    def decode_request(self, request: ChatRequest, context: dict[str, Any]) -> Prepared:
        """Validate one request and load its media; a bad one is marked (not raised: that would fail its batch)."""
        try:
            max_new = request.max_completion_tokens or request.max_tokens or self.max_new_tokens
            if max_new < 1:
                raise MessageError(f"max_tokens must be >= 1 (got {max_new})")
            temperature = 0.0 if request.temperature is None else request.temperature
            top_p = 1.0 if request.top_p is None else request.top_p
            sampling_kwargs(temperature, top_p)
            messages = [m.model_dump(exclude_none=True) for m in request.messages]
            with tempfile.TemporaryDirectory(prefix="anymal-serve-") as workdir:
                record = to_record(messages, self.marks, workdir, self.media_root, self.media_root is not None,
                                   record_id="request")  # fmt: skip
                try:
                    (sample,) = prepare_samples(self.model, [record])  # media decoded here, files may go
                except MessageError as err:
                    raise MessageError(_name_media(str(err), record.media, messages)) from None
            limit = self.model.llm.max_length
            if len(sample["input_ids"]) >= limit:
                raise MessageError(f"the prompt is {len(sample['input_ids'])} tokens, the model's context {limit}")
            return Prepared(sample, stream=bool(request.stream), settings=(temperature, top_p, max_new))
        except MessageError as err:
            return Prepared(error=str(err))
        except Exception as err:  # a bug, not the client's fault: 500 for this request, not for its whole batch
            log.exception("decoding a request failed")
            return Prepared(error=f"internal error decoding the request ({type(err).__name__})", status=500)

    def predict(self, inputs: list[Prepared]) -> Iterator[list[dict[str, Any]]]:
        """Yield one item per request per step: ``{"content": new text}``, or ``{"error": ...}`` first for bad ones."""
        if any(p.error for p in inputs):
            yield [{"error": p.error, "status": p.status} if p.error else {"content": ""} for p in inputs]
        groups: dict[tuple, list[int]] = {}
        for r, p in enumerate(inputs):
            if not p.error:
                groups.setdefault(p.settings, []).append(r)
        for (temperature, top_p, max_new), rows in groups.items():
            kwargs = {"max_new_tokens": max_new, **sampling_kwargs(temperature, top_p)}
            yield from self._generate(inputs, rows, kwargs)

    def _generate(self, inputs: list[Prepared], rows: list[int], kwargs: dict[str, Any]) -> Iterator[list]:
        while rows:
            batch = collate(self.model, [{**inputs[r].sample, "id": str(r)} for r in rows])
            try:
                replies = yield from self._streamed(inputs, rows, batch, kwargs)
            except ContextLengthError as err:  # raised before the first token: nothing was sent for these rows
                bad = {int(r) for r in err.records}
                limit = self.model.llm.max_length
                step = [{"content": ""} for _ in inputs]
                for r in bad:
                    step[r] = {"error": f"the prompt exceeds the model's context ({limit} tokens) with its media"}
                yield step
                rows = [r for r in rows if r not in bad]
                continue
            step = [{"content": ""} for _ in inputs]
            for r, reply in zip(rows, replies):
                sent = inputs[r].sent
                prompt_tokens = len(inputs[r].sample["input_ids"])
                completion = len(self.model.llm.tokenizer.encode(reply, add_special_tokens=False))
                step[r] = {"content": reply[len(sent) :] if reply.startswith(sent) else "",
                           "prompt_tokens": prompt_tokens, "completion_tokens": completion,
                           "total_tokens": prompt_tokens + completion}  # fmt: skip
            yield step
            return

    def _streamed(self, inputs: list[Prepared], rows: list[int], batch: dict, kwargs: dict) -> Iterator[list]:
        """Generate in a thread; yield each step's new text of the streaming rows; return the replies.

        Whole replies are generated in the thread too: on a busy CPU, torch's ops ran up to 30x slower in the
        worker's main thread than in a helper thread (measured on the toy model, 2 cores, load ~18), and one code
        path keeps streamed and whole replies alike."""
        streamer = BatchStreamer(self.model.llm.tokenizer, len(rows))
        result: dict[str, Any] = {}

        def run() -> None:
            try:
                result["replies"] = self.model.generate(batch, streamer=streamer, **kwargs)
            except BaseException as err:  # re-raised below, in the loop's thread
                result["error"] = err
            finally:
                streamer.end()

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        for texts in streamer:
            step = [{"content": ""} for _ in inputs]
            for r, text in zip(rows, texts):
                # the reply is stripped: hold back surrounding whitespace and a half-decoded character
                shown, sent = text.strip().rstrip("\ufffd"), inputs[r].sent
                if inputs[r].stream and len(shown) > len(sent) and shown.startswith(sent):
                    step[r] = {"content": shown[len(sent) :]}
                    inputs[r].sent = shown
            if any(item["content"] for item in step):
                yield step
        thread.join()
        if "error" in result:
            raise result["error"]
        return result["replies"]

    def encode_response(self, steps: Iterator[list[dict[str, Any]]]) -> Iterator[list[dict[str, Any]]]:
        for step in steps:
            yield [{"role": "assistant", "content": None, **item} if "error" in item else
                   {"role": "assistant", **item} for item in step]  # fmt: skip


def _name_media(message: str, media: list[tuple[str, str]], messages: list[dict[str, Any]]) -> str:
    """The error with each media file (a temporary one for inline data) named by its part: messages[0].content[1]."""
    parts = [f"messages[{m}].content[{p}]" for m, message_ in enumerate(messages)
             if isinstance(message_.get("content"), list) for p, part in enumerate(message_["content"])
             if isinstance(part, dict) and part.get("type") in PART_MODALITIES]  # fmt: skip
    for (_, path), part in zip(media, parts):
        message = message.replace(path, part)
    return message


def _error_response(status: int, message: str) -> JSONResponse:
    """OpenAI's error body (the ``openai`` client shows ``error.message``)."""
    kind = "invalid_request_error" if status < 500 else "server_error"
    body = {"error": {"message": message, "type": kind, "param": None, "code": status}}
    return JSONResponse(body, status_code=status)


def build_server(
    model: str,
    media_root: str | None = None,
    api_key: str | None = None,
    max_batch_size: int = 16,
    batch_timeout: float = 0.05,
    device: str = "auto",
    dtype: str | None = None,
    max_new_tokens: int = 256,
    max_body_mb: float = 32.0,
    model_name: str | None = None,
    timeout: float = 600.0,
) -> ls.LitServer:
    """A LitServer answering OpenAI chat requests with the export or bundle ``model`` (start it with ``.run``).

    Args:
        model: A stage export (``checkpoints/export``) or a bundle (``anymal-lit export``).
        media_root: Folder whose files requests may name by local path (otherwise only inline data URLs).
        api_key: Key clients must send as ``Authorization: Bearer <key>`` (every route but ``/health``).
        max_batch_size: Most requests generated together in one batch.
        batch_timeout: Seconds to wait for a batch to fill.
        device: ``cpu``, ``cuda``, ``cuda:1``... or ``auto`` (CUDA when available).
        dtype: Parameter dtype (``bfloat16``, ``float16``, ``float32``); default: the configured one.
        max_new_tokens: Longest reply when a request sets no ``max_tokens``.
        max_body_mb: Largest request body (MB); a larger one gets HTTP 400.
        model_name: The model id ``/v1/models`` lists (default: the folder's name).
        timeout: Seconds a request may wait in the queue.
    """
    if not Path(model).exists():
        raise FileNotFoundError(f"{model}: no such export or bundle")
    if media_root is not None and not Path(media_root).is_dir():
        raise NotADirectoryError(f"--media-root {media_root}: not a folder")
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    accelerator = "cuda" if device.startswith("cuda") else "cpu"
    api = ChatAPI(model, device, dtype, media_root, max_new_tokens, api_key, model_name, max_batch_size, batch_timeout)
    limit = int(max_body_mb * 2**20)
    server = ls.LitServer(api, accelerator=accelerator, devices=1, timeout=timeout, max_payload_size=limit,
                          disable_openapi_url=api_key is not None)  # fmt: skip

    async def http_error(request: Request, err: StarletteHTTPException) -> JSONResponse:
        if err.status_code == 413:  # LitServe's MaxSizeMiddleware
            return _error_response(400, f"request body larger than {max_body_mb:g} MB (the server's --max-body-mb)")
        return _error_response(err.status_code, str(err.detail))

    async def invalid_request(request: Request, err: RequestValidationError) -> JSONResponse:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'][1:]) or 'body'}: {e['msg']}" for e in err.errors())
        return _error_response(400, f"invalid request: {problems}")

    server.app.add_exception_handler(StarletteHTTPException, http_error)
    server.app.add_exception_handler(RequestValidationError, invalid_request)
    return server


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``anymal-lit serve`` options (defaults from :func:`build_server`)."""
    parser.add_argument("--model", required=True, help="a stage export (checkpoints/export) or a bundle")
    parser.add_argument("--host", default="127.0.0.1", choices=["127.0.0.1", "0.0.0.0", "::"])
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--media-root", help="folder requests may name local media files in (default: none)")
    parser.add_argument("--api-key", help="require 'Authorization: Bearer <key>' on every route but /health")
    parser.add_argument("--max-batch-size", type=int, default=16, help="most requests generated together")
    parser.add_argument("--batch-timeout", type=float, default=0.05, help="seconds to wait for a batch to fill")
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:1... (auto: CUDA when available)")
    parser.add_argument("--dtype", help="bfloat16, float16 or float32 (default: as configured)")
    parser.add_argument("--max-new-tokens", type=int, default=256, help="longest reply when a request sets none")
    parser.add_argument("--max-body-mb", type=float, default=32.0, help="largest request body (MB)")
    parser.add_argument("--model-name", help="the model id /v1/models lists (default: the folder's name)")


def serve(args: argparse.Namespace) -> None:
    """Run ``anymal-lit serve`` until interrupted."""
    server = build_server(
        args.model, args.media_root, args.api_key, args.max_batch_size, args.batch_timeout, args.device, args.dtype,
        args.max_new_tokens, args.max_body_mb, args.model_name,
    )  # fmt: skip
    signal.signal(signal.SIGTERM, _interrupted)  # `kill` shuts down as Ctrl+C does: workers stopped too
    started = time.monotonic()
    print(f"anymal-lit serve: http://{args.host}:{args.port}/v1 (model {args.model})", flush=True)
    server.run(host=args.host, port=args.port, num_api_servers=1, generate_client_file=False)
    log.info("served for %.0f s", time.monotonic() - started)


def _interrupted(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt
