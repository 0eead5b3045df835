"""``chat``: answer OpenAI-style messages with a trained AnyMAL model (batched, greedy or sampled, streamed)."""

from __future__ import annotations

import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from transformers import TextIteratorStreamer

from anymal_lit.data.chat import ChatTokenizer
from anymal_lit.data.collate import PaddingCollator, load_sample
from anymal_lit.data.records import Record, RecordError
from anymal_lit.inference.messages import MessageError, to_record
from anymal_lit.models.anymal import AnyMALModel, ContextLengthError

Messages = list[dict[str, Any]]


def placeholders(model: AnyMALModel) -> dict[str, str]:
    """Modality -> placeholder token, for the modalities the model has an encoder for."""
    tokenizer = model.llm.tokenizer
    ids = model.llm.placeholder_ids
    return {m: tokenizer.convert_ids_to_tokens(ids[m]) for m in model.modalities}


def prepare_batch(model: AnyMALModel, records: list[Record]) -> dict[str, Any]:
    """Generation prompts of ``records`` with their media loaded, collated as the evaluation callbacks do."""
    return collate(model, prepare_samples(model, records))


def prepare_samples(model: AnyMALModel, records: list[Record]) -> list[dict[str, Any]]:
    """Tokenized generation prompts of ``records`` with their media loaded (a bad one raises MessageError)."""
    chat = ChatTokenizer(model.llm.tokenizer)
    processors = model.media_processors()
    samples = []
    for index, record in enumerate(records):
        try:
            samples.append(load_sample(record, index, chat, processors, generation=True))
        except RecordError as err:
            raise MessageError(str(err).replace(f"{record.where()}: ", "", 1)) from None
    return samples


def collate(model: AnyMALModel, samples: list[dict[str, Any]]) -> dict[str, Any]:
    """One left-padded generation batch of samples (from :func:`prepare_samples`) on the model's device."""
    batch = PaddingCollator(model.llm.tokenizer.pad_token_id)(samples)
    device = next(model.parameters()).device
    batch["input_ids"] = batch["input_ids"].to(device)
    batch["attention_mask"] = batch["attention_mask"].to(device)
    batch["media"] = {m: {k: v.to(device) for k, v in g.items()} for m, g in batch["media"].items()}
    return batch


def sampling_kwargs(temperature: float, top_p: float) -> dict[str, Any]:
    """``generate`` arguments: greedy at temperature 0, else nucleus sampling."""
    if temperature < 0 or not 0 < top_p <= 1:
        raise MessageError(f"temperature must be >= 0 and top_p in (0, 1] (got {temperature}, {top_p})")
    if temperature == 0:
        return {"do_sample": False}
    return {"do_sample": True, "temperature": float(temperature), "top_p": float(top_p)}


def conversation_batch(
    model: AnyMALModel,
    conversations: list[Messages],
    media_root: str | None = None,
    allow_local_paths: bool = True,
) -> dict[str, Any]:
    """Validate conversations and load their media into one generation batch.

    Raises :class:`MessageError` for a request that cannot be answered (see :mod:`anymal_lit.inference.messages`)."""
    marks = placeholders(model)
    with tempfile.TemporaryDirectory(prefix="anymal-chat-") as workdir:
        records = []
        for i, messages in enumerate(conversations):
            folder = Path(workdir) / str(i)
            folder.mkdir()
            records.append(to_record(messages, marks, folder, media_root, allow_local_paths, record_id=f"request {i}"))
        return prepare_batch(model, records)  # media are decoded here, so the files may go afterwards


def generate_batch(
    model: AnyMALModel,
    batch: dict[str, Any],
    max_new_tokens: int = 256,
    temperature: float = 0.0,
    top_p: float = 1.0,
    streamer: Any = None,
) -> list[str]:
    """One batched ``generate`` call (left padding, KV cache) over a :func:`conversation_batch`; the replies."""
    if max_new_tokens < 1:
        raise MessageError(f"max_new_tokens must be >= 1 (got {max_new_tokens})")
    kwargs = sampling_kwargs(temperature, top_p)
    try:
        return model.generate(batch, max_new_tokens=max_new_tokens, streamer=streamer, **kwargs)
    except ContextLengthError as err:
        raise MessageError(str(err)) from None


def chat(
    model: AnyMALModel,
    messages: Messages,
    max_new_tokens: int = 256,
    temperature: float = 0.0,
    top_p: float = 1.0,
    stream: bool = False,
) -> str | Iterator[str]:
    """Answer a conversation: the reply text, or with ``stream=True`` an iterator over its pieces as generated.

    ``messages`` are OpenAI-style (``role`` + ``content`` string or list of parts: ``text``, ``image_url``,
    ``input_audio`` and the kit's ``video`` / ``imu``; see :mod:`anymal_lit.inference.messages`), any number of
    media in any order, several turns. Greedy at ``temperature=0`` (what the evaluation callbacks do: the same
    prompt gives the same answer), nucleus sampling otherwise. The streamed pieces join to the reply (the
    non-streamed reply has its surrounding whitespace stripped).

    Args:
        model: A model from :func:`anymal_lit.load_model` (or any ``AnyMALModel``).
        messages: The conversation; the last message is the user's.
        max_new_tokens: Longest reply.
        temperature: Sampling temperature (0: greedy).
        top_p: Nucleus sampling mass (with ``temperature > 0``).
        stream: Return an iterator of text pieces instead of the whole reply.
    """
    batch = conversation_batch(model, [messages])  # a bad request raises here, also when streaming
    sampling_kwargs(temperature, top_p)
    if not stream:
        return generate_batch(model, batch, max_new_tokens, temperature, top_p)[0]
    return stream_reply(model, batch, max_new_tokens, temperature, top_p)


def stream_reply(
    model: AnyMALModel, batch: dict[str, Any], max_new_tokens: int, temperature: float, top_p: float
) -> Iterator[str]:
    """Generate in a thread and yield the text pieces of a one-conversation batch as they are decoded."""
    streamer = TextIteratorStreamer(model.llm.tokenizer, skip_prompt=True, skip_special_tokens=True, timeout=600)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            generate_batch(model, batch, max_new_tokens, temperature, top_p, streamer=streamer)
        except BaseException as err:  # re-raised in the consumer's thread below
            errors.append(err)
            streamer.end()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    for piece in streamer:
        if piece:
            yield piece
    thread.join()
    if errors:
        raise errors[0]
