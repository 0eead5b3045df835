"""Tiny stand-ins for the pretrained models, built and saved in the standard formats.

* A BPE tokenizer trained on the world's text and a small Llama-architecture LM pretrained on a mix of the world's
  text (captions and questions about scene descriptions given in context), then chat-tuned with only the answers
  scored (short answers, lettered multiple-choice questions), as the chat LLMs AnyMAL starts from are; saved with
  ``save_pretrained``.
* A tiny open_clip CLIP, briefly trained contrastively on the world's pictures and captions (AnyMAL's encoders are
  already aligned to text, so a random encoder would not be faithful), its text tower reading the world's tokenizer,
  saved as an open_clip ``local-dir`` folder with that tokenizer.

Both are then loaded by the kit through the same code paths as real checkpoints.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np
import open_clip
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import AutoModelForCausalLM, LlamaConfig, PreTrainedTokenizerFast

from anymal_lit.losses import IGNORE_INDEX
from anymal_lit.models.causal_lm import DEFAULT_CHAT_TEMPLATE, DEFAULT_PLACEHOLDERS
from anymal_lit.models.padding import attention_mask, pad_rows
from anymal_lit.stages.optimization import OptimizerSettings, lr_multiplier

log = logging.getLogger(__name__)

SPECIAL_TOKENS = ["<|pad|>", "<|end|>", "<|system|>", "<|user|>", "<|assistant|>", *DEFAULT_PLACEHOLDERS.values()]


def train_tokenizer(texts: Sequence[str], vocab_size: int = 800) -> PreTrainedTokenizerFast:
    """Byte-level BPE over the world's text, with the chat-role and placeholder tokens as special tokens."""
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    bpe.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        pad_token="<|pad|>",
        eos_token="<|end|>",
        additional_special_tokens=SPECIAL_TOKENS[2:],
        chat_template=DEFAULT_CHAT_TEMPLATE,
    )


def tiny_lm_config(
    tokenizer: PreTrainedTokenizerFast, hidden: int = 128, layers: int = 4, heads: int = 4
) -> LlamaConfig:
    """A small Llama. ``initializer_range`` ~0.9/sqrt(hidden): with the default 0.02 a tiny LM never learned to use
    its context in minutes of CPU training (measured), and using context is what projected tokens rely on."""
    return LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=hidden * 3,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        max_position_embeddings=512,
        initializer_range=0.9 / math.sqrt(hidden),
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=None,
        tie_word_embeddings=True,
    )


def encode_conversations(
    tokenizer: PreTrainedTokenizerFast, conversations: Sequence[list[dict[str, str]]], answer_loss_only: bool
) -> tuple[list[list[int]], list[int]]:
    """Chat-formatted token ids per conversation and the first scored token (0, or the last turn's first)."""
    texts = [tokenizer.apply_chat_template(c, tokenize=False) for c in conversations]
    ids = tokenizer(texts, add_special_tokens=False)["input_ids"]
    if not answer_loss_only:
        return ids, [0] * len(ids)
    prompts = [tokenizer.apply_chat_template(c[:-1], tokenize=False, add_generation_prompt=True) for c in conversations]
    return ids, [len(p) for p in tokenizer(prompts, add_special_tokens=False)["input_ids"]]


def _batches(
    ids: list[list[int]], starts: list[int], batch_size: int, pad_id: int, rng: np.random.Generator
) -> Callable[[], tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Random batches of rows; row ``i`` is scored from token ``starts[i]`` on."""

    def draw() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        picks = rng.integers(len(ids), size=batch_size)
        rows = [torch.tensor(ids[i], dtype=torch.long) for i in picks]
        labels = [row.clone() for row in rows]
        for i, label in zip(picks, labels):
            label[: starts[i]] = IGNORE_INDEX
        return pad_rows(rows, pad_id), attention_mask([len(row) for row in rows]), pad_rows(labels, IGNORE_INDEX)

    return draw


def pretrain_lm(
    tokenizer: PreTrainedTokenizerFast,
    conversations: Sequence[list[dict[str, str]]],
    steps: int,
    batch_size: int = 32,
    lr: float = 2e-3,
    seed: int = 0,
    answer_loss_only: bool = False,
    model: torch.nn.Module | None = None,
    warmup_steps: int = 100,
    replay: Sequence[list[dict[str, str]]] = (),
    replay_share: float = 0.25,
) -> tuple[torch.nn.Module, list[float]]:
    """Train the tiny LM (a new one, or ``model`` further) for ``steps`` steps on chat-formatted conversations: every
    token scored (pretraining), or with ``answer_loss_only`` the last turn only (chat tuning).

    With ``replay`` (pretraining conversations), ``replay_share`` of each batch's rows come from it with every token
    scored, and the loss is the two parts' mean losses weighed by their rows: chat tuning that keeps pretraining's
    text in view. The learning rate warms up linearly, then follows a cosine down to 10 % of ``lr`` (the stages'
    schedule, :func:`~anymal_lit.stages.optimization.lr_multiplier`).
    """
    torch.manual_seed(seed)
    model = model if model is not None else AutoModelForCausalLM.from_config(tiny_lm_config(tokenizer))
    rng = np.random.default_rng(seed)
    replayed = round(batch_size * replay_share) if replay else 0
    parts = [(batch_size - replayed, *encode_conversations(tokenizer, conversations, answer_loss_only))]
    if replayed:
        parts.append((replayed, *encode_conversations(tokenizer, replay, answer_loss_only=False)))
    pad = tokenizer.pad_token_id
    draws = [(rows / batch_size, _batches(ids, starts, rows, pad, rng)) for rows, ids, starts in parts]
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01, fused=True)
    schedule = OptimizerSettings(lr=lr, warmup_steps=warmup_steps, decay="cosine", min_lr_ratio=0.1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_multiplier(s, steps, schedule))
    losses, start = [], time.time()
    model.train()
    for step in range(steps):
        loss = 0.0
        for weight, draw in draws:
            x, mask, labels = draw()
            loss = loss + weight * model(input_ids=x, attention_mask=mask, labels=labels).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        losses.append(loss.item())
        if step % 200 == 0 or step == steps - 1:
            log.info(
                "tiny LM step %d/%d loss %.3f (%.0f s)", step + 1, steps, loss.detach().item(), time.time() - start
            )
    model.eval()
    return model, losses


def tiny_clip_config(tokenizer: PreTrainedTokenizerFast, image_size: int = 64) -> dict:
    """A small ViT CLIP (open_clip ``model_cfg``): 8-px patches, width 128, 4 layers; text tower 2 layers over
    ``tokenizer`` (:func:`clip_tokenizer`, saved beside the weights: each caption closed by its end token, where the
    text embedding is read)."""
    return {
        "embed_dim": 64,
        "vision_cfg": {"image_size": image_size, "patch_size": 8, "width": 128, "layers": 4, "head_width": 32},
        "text_cfg": {
            "context_length": 32,
            "vocab_size": len(tokenizer),
            "width": 128,
            "heads": 4,
            "layers": 2,
            "hf_tokenizer_name": "tokenizer.json",  # with a local-dir: model, open_clip reads the folder's tokenizer
            "pad_id": tokenizer.pad_token_id,
            "eos_id": tokenizer.eos_token_id,
            "pool_type": "eos",
        },
    }


def clip_tokenizer(tokenizer: PreTrainedTokenizerFast) -> PreTrainedTokenizerFast:
    """The world's BPE tokenizer as the tiny CLIP's text tokenizer: every text closed by ``<|end|>`` (the text tower
    pools there), so ``open_clip.get_tokenizer("local-dir:...")`` gives the ids the tower was trained on."""
    bpe = Tokenizer.from_str(tokenizer.backend_tokenizer.to_str())
    end = "<|end|>"
    bpe.post_processor = processors.TemplateProcessing(
        single=f"$A {end}", pair=f"$A {end} $B {end}", special_tokens=[(end, tokenizer.convert_tokens_to_ids(end))]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=bpe, pad_token="<|pad|>", eos_token=end, additional_special_tokens=SPECIAL_TOKENS[2:]
    )


def warm_up_clip(
    cfg: dict,
    images: torch.Tensor,
    captions: Sequence[str],
    tokenizer: PreTrainedTokenizerFast,
    steps: int,
    batch_size: int = 64,
    lr: float = 5e-4,
    seed: int = 0,
) -> tuple[open_clip.CLIP, list[float]]:
    """Contrastive (InfoNCE) training of a fresh CLIP on ``images`` ``[N, 3, R, R]`` paired with ``captions``, read by
    ``tokenizer`` (:func:`clip_tokenizer`)."""
    torch.manual_seed(seed)
    model = open_clip.CLIP(**cfg)
    model.train()
    losses = contrastive_training(
        model.encode_image,
        model.encode_text,
        model.logit_scale,
        model.parameters(),
        images,
        clip_token_ids(tokenizer, captions, cfg["text_cfg"]["context_length"]),
        steps,
        batch_size,
        lr,
        seed,
        "tiny CLIP",
    )
    model.eval()
    return model, losses


def contrastive_training(
    encode_media: Callable[[torch.Tensor], torch.Tensor],
    encode_text: Callable[[torch.Tensor], torch.Tensor],
    logit_scale: torch.Tensor,
    parameters: Iterable[torch.nn.Parameter],
    inputs: torch.Tensor,
    text: torch.Tensor,
    steps: int,
    batch_size: int,
    lr: float,
    seed: int,
    name: str,
) -> list[float]:
    """CLIP's symmetric InfoNCE loss between media embeddings and the embeddings of their captions' token ids
    ``text`` ``[N, context_length]``."""
    opt = torch.optim.AdamW(list(parameters), lr=lr, weight_decay=0.1, fused=True)
    rng = np.random.default_rng(seed)
    losses, start = [], time.time()
    for step in range(steps):
        idx = torch.from_numpy(rng.choice(len(inputs), size=batch_size, replace=False))
        media = F.normalize(encode_media(inputs[idx]), dim=-1)
        txt = F.normalize(encode_text(text[idx]), dim=-1)
        logits = logit_scale.exp() * media @ txt.T
        target = torch.arange(batch_size)
        loss = (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
        if step % 100 == 0 or step == steps - 1:
            log.info(
                "%s step %d/%d loss %.3f (%.0f s)", name, step + 1, steps, loss.detach().item(), time.time() - start
            )
    return losses


def clip_token_ids(tokenizer: PreTrainedTokenizerFast, captions: Sequence[str], context_length: int) -> torch.Tensor:
    """``[N, context_length]`` ids of ``captions`` (each closed by ``<|end|>``, padded); a caption too long to keep its
    end is an error."""
    ids = tokenizer(list(captions), add_special_tokens=True)["input_ids"]
    longest = max(range(len(ids)), key=lambda i: len(ids[i]))
    if len(ids[longest]) > context_length:
        raise ValueError(
            f"caption {longest} is {len(ids[longest])} tokens, over the CLIP's context of {context_length}: "
            f"{captions[longest]!r}"
        )
    return torch.tensor([row + [tokenizer.pad_token_id] * (context_length - len(row)) for row in ids])


class _PairedTowers(torch.nn.Module):
    """A media tower with a linear head and a small open_clip text tower, trained as a CLIP pair."""

    def __init__(self, media: torch.nn.Module, pooled: Callable[[torch.Tensor], torch.Tensor], width: int) -> None:
        super().__init__()
        self.media, self.pooled = media, pooled
        self.head = torch.nn.Linear(width, TEXT_TOWER["embed_dim"])
        self.text = open_clip.model._build_text_tower(TEXT_TOWER["embed_dim"], TEXT_TOWER["text_cfg"])
        self.logit_scale = torch.nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    def encode_media(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.pooled(x))


TEXT_TOWER = {
    "embed_dim": 64,
    "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 128, "heads": 4, "layers": 2},
}


def warm_up_tower(
    media: torch.nn.Module,
    pooled: Callable[[torch.Tensor], torch.Tensor],
    width: int,
    inputs: torch.Tensor,
    captions: Sequence[str],
    steps: int,
    name: str,
    batch_size: int = 64,
    lr: float = 5e-4,
    seed: int = 0,
) -> list[float]:
    """CLAP/IMU2CLIP-style warm-up of an encoder (in place) against a fresh small text tower; returns the losses."""
    torch.manual_seed(seed)
    pair = _PairedTowers(media, pooled, width)
    pair.train()
    losses = contrastive_training(
        pair.encode_media,
        pair.text,
        pair.logit_scale,
        pair.parameters(),
        inputs,
        open_clip.tokenizer.SimpleTokenizer(context_length=TEXT_TOWER["text_cfg"]["context_length"])(list(captions)),
        steps,
        batch_size,
        lr,
        seed,
        name,
    )
    media.eval()
    return losses


def tiny_clap_config() -> dict:
    """A small non-fusion HTSAT (``ClapAudioConfig``): 32 mel bins, 64 x 64 spectrogram image, 3 stages, width 128."""
    return {
        "spec_size": 64,
        "num_mel_bins": 32,
        "patch_size": 4,
        "window_size": 4,
        "depths": [1, 1, 1],
        "num_attention_heads": [2, 4, 8],
        "hidden_size": 128,
        "patch_embeds_hidden_size": 32,
        "enable_fusion": False,
    }


TINY_CLAP_FEATURES = {
    "sampling_rate": 16000,
    "hop_length": 160,
    "max_length_s": 1,
    "fft_window_size": 512,
    "frequency_min": 50,
    "frequency_max": 8000,
}
"""``ClapFeatureExtractor`` settings of the tiny CLAP: 1-s pieces at 16 kHz, 10-ms hop."""


def save_open_clip(
    model: open_clip.CLIP,
    cfg: dict,
    folder: Path,
    mean: Sequence[float],
    std: Sequence[float],
    tokenizer: PreTrainedTokenizerFast | None = None,
) -> None:
    """Write an open_clip ``local-dir`` folder: ``open_clip_config.json`` + ``open_clip_model.safetensors`` (+ the
    text tower's tokenizer files)."""
    folder.mkdir(parents=True, exist_ok=True)
    if tokenizer is not None:
        tokenizer.save_pretrained(folder)
    config = {"model_cfg": cfg, "preprocess_cfg": {"mean": list(mean), "std": list(std)}}
    (folder / "open_clip_config.json").write_text(json.dumps(config, indent=2))
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(folder / "open_clip_model.safetensors"))
