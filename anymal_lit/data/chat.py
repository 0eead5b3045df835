"""Chat-template tokenization with label masking by token ids (never by splitting strings)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from jinja2.exceptions import TemplateError
from transformers import PreTrainedTokenizerBase

from anymal_lit.data.records import Record, RecordError
from anymal_lit.losses import IGNORE_INDEX


def fold_system(messages: list[dict[str, str]]) -> list[dict[str, str]]:
    """The system messages' text put before the first user turn's (blank line between), for templates without a
    system role."""
    system = "\n\n".join(m["content"] for m in messages if m["role"] == "system")
    rest = [dict(m) for m in messages if m["role"] != "system"]
    first_user = next((m for m in rest if m["role"] == "user"), None)
    if first_user is None:
        return [{"role": "user", "content": system}, *rest]
    first_user["content"] = f"{system}\n\n{first_user['content']}"
    return rest


@dataclass
class ChatTokenizer:
    """Turns a record's conversation into ``input_ids`` and ``labels`` with the tokenizer's chat template.

    A ``system`` turn is rendered by the template where it has a system role (the kit's default template and
    LLaMA-2's do); where the template rejects or drops it, its text opens the first user turn (:func:`fold_system`).

    Labels: for every assistant turn i, the template is rendered for turns ``[:i]`` with the generation prompt and
    for turns ``[:i+1]``; the token ids between the two lengths are that turn's response (content and
    end-of-turn marker) and carry the loss, everything else is ``-100``. Each rendering must be a token-level
    prefix of the full conversation; a template that breaks this raises an error naming the record instead of
    silently mislabelling it.

    Args:
        tokenizer: A tokenizer with a chat template.
        max_length: Longest allowed text (before media expansion); longer records raise an error naming them.
    """

    tokenizer: PreTrainedTokenizerBase
    max_length: int | None = None

    def _ids(self, messages: list[dict[str, str]], add_generation_prompt: bool) -> list[int]:
        text = self._render(messages, add_generation_prompt)
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def _render(self, messages: list[dict[str, str]], add_generation_prompt: bool) -> str:
        """The chat template's text; a system message the template rejects or drops (some templates have no
        system role) is folded into the first user turn instead of being lost."""
        system = [m["content"] for m in messages if m["role"] == "system"]
        try:
            text = self.tokenizer.apply_chat_template(
                messages, tokenize=False, add_generation_prompt=add_generation_prompt
            )
        except TemplateError:
            if not system:
                raise
            text = None
        if text is not None and all(s in text for s in system):
            return text
        return self.tokenizer.apply_chat_template(
            fold_system(messages), tokenize=False, add_generation_prompt=add_generation_prompt
        )

    def _check_length(self, ids: list[int], record: Record) -> None:
        if self.max_length is not None and len(ids) > self.max_length:
            raise RecordError(f"{record.where()}: {len(ids)} text tokens exceed max_length={self.max_length}")

    def training_example(self, record: Record) -> tuple[torch.Tensor, torch.Tensor]:
        """``(input_ids, labels)``, each ``[T]``; loss on the assistant turns only."""
        messages = record.messages
        full = self._ids(messages, add_generation_prompt=False)
        self._check_length(full, record)
        labels = [IGNORE_INDEX] * len(full)
        for i, message in enumerate(messages):
            if message["role"] != "assistant":
                continue
            prompt = self._ids(messages[:i], add_generation_prompt=True)
            upto = self._ids(messages[: i + 1], add_generation_prompt=False)
            if full[: len(prompt)] != prompt or full[: len(upto)] != upto or len(upto) <= len(prompt):
                raise RecordError(
                    f"{record.where()}: the chat template does not tokenize turn {i} as a prefix of the conversation; "
                    "cannot locate the response tokens"
                )
            labels[len(prompt) : len(upto)] = full[len(prompt) : len(upto)]
        return torch.tensor(full), torch.tensor(labels)

    def generation_prompt(self, record: Record) -> torch.Tensor:
        """``[T]`` prompt ids: the conversation without its final assistant turn, plus the generation prompt."""
        messages = record.messages[:-1] if record.messages[-1]["role"] == "assistant" else record.messages
        ids = self._ids(messages, add_generation_prompt=True)
        self._check_length(ids, record)
        return torch.tensor(ids)
