"""Losses as pure functions: next-token loss on assistant tokens, sequence log-probs and conservative DPO."""

from __future__ import annotations

import torch
import torch.nn.functional as F

IGNORE_INDEX = -100
"""Label value of positions that carry no loss (prompt, media tokens, padding)."""


def shift_for_next_token(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Align position t's logits with token t+1: ``[B, T, V], [B, T] -> [B, T-1, V], [B, T-1]``."""
    return logits[:, :-1, :], labels[:, 1:]


def masked_lm_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy over the labelled tokens (labels ``-100`` are ignored).

    Args:
        logits: ``[B, T, V]`` LLM output.
        labels: ``[B, T]`` target ids, ``-100`` where no loss applies.
    """
    logits, labels = shift_for_next_token(logits, labels)
    return F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=IGNORE_INDEX)


def sequence_logps(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Sum of the log-probabilities of the labelled tokens per row: ``[B, T, V], [B, T] -> [B]``."""
    logits, labels = shift_for_next_token(logits, labels)
    mask = labels != IGNORE_INDEX
    token_logps = torch.gather(logits.float().log_softmax(-1), 2, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return (token_logps * mask).sum(-1)


def dpo_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    reference_chosen_logps: torch.Tensor,
    reference_rejected_logps: torch.Tensor,
    beta: float = 0.1,
    label_smoothing: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Conservative DPO (cDPO) per preference pair, as TRL <= 0.28's sigmoid ``dpo_loss``.

    ``h = (pi_c - pi_r) - (ref_c - ref_r)``; ``loss = -(1 - eps) log sigma(beta h) - eps log sigma(-beta h)``.
    With ``label_smoothing=0`` this is the DPO loss of Rafailov et al. (2023); AnyMAL uses eps = 0.05.

    Args:
        policy_chosen_logps: ``[B]`` summed log-probs of the chosen responses under the policy.
        policy_rejected_logps: ``[B]`` same for the rejected responses.
        reference_chosen_logps: ``[B]`` chosen responses under the frozen reference.
        reference_rejected_logps: ``[B]`` rejected responses under the reference.
        beta: Strength of the implicit KL penalty.
        label_smoothing: eps, the assumed probability that a preference label is flipped.

    Returns:
        ``(losses, chosen_rewards, rejected_rewards)``, each ``[B]``; rewards are ``beta * (policy - reference)``
        and detached.
    """
    h = (policy_chosen_logps - policy_rejected_logps) - (reference_chosen_logps - reference_rejected_logps)
    losses = -(1 - label_smoothing) * F.logsigmoid(beta * h) - label_smoothing * F.logsigmoid(-beta * h)
    chosen_rewards = beta * (policy_chosen_logps - reference_chosen_logps).detach()
    rejected_rewards = beta * (policy_rejected_logps - reference_rejected_logps).detach()
    return losses, chosen_rewards, rejected_rewards
