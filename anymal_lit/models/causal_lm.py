"""Any HF causal LM as AnyMAL's language model, with the modality placeholder tokens registered."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerBase

DEFAULT_CHAT_TEMPLATE = (
    "{% for message in messages %}<|{{ message['role'] }}|>\n{{ message['content'] }}<|end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)
"""The kit's chat format, used when a tokenizer ships none. Its role markers should be special tokens."""

DEFAULT_PLACEHOLDERS = {"image": "<image>", "audio": "<audio>", "video": "<video>", "imu": "<imu>"}


class CausalLM(nn.Module):
    """Wraps an ``AutoModelForCausalLM`` and its tokenizer; frozen by default.

    Load a real checkpoint with ``pretrained`` (hub name, resolved offline from a populated cache, or a local
    directory written by ``save_pretrained``), or build a random model from a ``config`` dict (tests). Placeholder
    tokens (``<image>`` ...) are added to the tokenizer as special tokens when missing, and the embedding matrix is
    resized to match; their embeddings are never used since the projected media tokens replace them.

    Args:
        pretrained: Model name or local directory.
        config: ``AutoConfig.for_model`` keyword arguments (with ``model_type``) for a randomly initialised model.
        tokenizer: Tokenizer name or directory (default: ``pretrained``).
        freeze: Keep the LLM frozen (alignment stage); LoRA adapters added later still train.
        placeholders: Modality name -> placeholder token.
        chat_template: Jinja chat template overriding the tokenizer's (default: the tokenizer's own, else the kit's).
        dtype: Parameter dtype of the loaded weights (``float32``, ``bfloat16``, ``float16``).
        gradient_checkpointing: Recompute activations in the backward pass to save memory.
    """

    def __init__(
        self,
        pretrained: str | None = None,
        config: dict[str, Any] | None = None,
        tokenizer: str | None = None,
        freeze: bool = True,
        placeholders: dict[str, str] | None = None,
        chat_template: str | None = None,
        dtype: str = "float32",
        gradient_checkpointing: bool = False,
    ) -> None:
        super().__init__()
        if (pretrained is None) == (config is None):
            raise ValueError("CausalLM needs exactly one of `pretrained` or `config`")
        tokenizer_source = tokenizer or pretrained
        if tokenizer_source is None:
            raise ValueError("CausalLM built from `config` needs a `tokenizer`")
        self.tokenizer: PreTrainedTokenizerBase = AutoTokenizer.from_pretrained(tokenizer_source)
        torch_dtype = getattr(torch, dtype)
        if pretrained is not None:
            self.model = AutoModelForCausalLM.from_pretrained(pretrained, dtype=torch_dtype)
        else:
            cfg = dict(config)
            self.model = AutoModelForCausalLM.from_config(AutoConfig.for_model(**cfg), dtype=torch_dtype)
        self.placeholder_ids = self._register_placeholders(placeholders or DEFAULT_PLACEHOLDERS)
        if chat_template is not None or not self.tokenizer.chat_template:
            self.tokenizer.chat_template = chat_template or DEFAULT_CHAT_TEMPLATE
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        if gradient_checkpointing:
            self.model.gradient_checkpointing_enable()
        self.frozen = freeze
        if freeze:
            self.model.requires_grad_(False)
            self.model.eval()

    def _register_placeholders(self, placeholders: dict[str, str]) -> dict[str, int]:
        missing = [tok for tok in placeholders.values() if tok not in self.tokenizer.get_vocab()]
        if missing:
            self.tokenizer.add_special_tokens(
                {"additional_special_tokens": missing}, replace_extra_special_tokens=False
            )
        if len(self.tokenizer) > self.model.get_input_embeddings().num_embeddings:
            self.model.resize_token_embeddings(len(self.tokenizer))
        return {modality: self.tokenizer.convert_tokens_to_ids(tok) for modality, tok in placeholders.items()}

    def train(self, mode: bool = True) -> CausalLM:
        # A frozen base model stays in eval mode (no dropout); trainable adapters inside follow `mode`.
        super().train(mode)
        if self.frozen and not any(p.requires_grad for p in self.model.parameters()):
            self.model.eval()
        return self

    @property
    def hidden_size(self) -> int:
        return int(self.model.get_input_embeddings().embedding_dim)

    @property
    def max_length(self) -> int:
        """Context length of the model (``max_position_embeddings``)."""
        return int(getattr(self.model.config, "max_position_embeddings", 1 << 30))

    def embed_tokens(self, input_ids: torch.Tensor) -> torch.Tensor:
        """``[B, T] -> [B, T, D]`` token embeddings."""
        return self.model.get_input_embeddings()(input_ids)

    @torch.no_grad()
    def embedding_rms(self) -> float:
        """Root-mean-square of the token embedding matrix (the scale projected tokens are matched to)."""
        weight = self.model.get_input_embeddings().weight
        return float(weight.float().pow(2).mean().sqrt())

    def forward(self, **kwargs: Any) -> Any:
        return self.model(**kwargs)
