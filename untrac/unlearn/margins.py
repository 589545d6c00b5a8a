"""Margins of sequence examples: the log-odds of the whole target answer (SPEC section 5); and the
per-token log-probabilities of the targets, which Oracle and Datamodel Matching match.

``m = log p(y|x) - log(1 - p(y|x))`` with ``log p(y|x) = sum_t log p(y_t | x, y_<t)`` over the
target tokens (``labels != -100``). It generalises the classifier margin ``logit_y -
logsumexp(other logits)``: for a classifier the "answer" is one token and ``log(1 - p_y) =
logsumexp(other) - logsumexp(all)``, so the two coincide. The margin is computed from the *sum*
(not the mean) of target log-probabilities, in float64, with a stable ``log(1 - exp(lp))``
(:func:`log1mexp`); ``lp`` is capped at ``-1e-15`` so a saturated answer gets margin 34.5 rather
than infinity.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import numpy as np
import torch
from datasets import Dataset
from torch import nn

from ..data.batching import IGNORE, batches, check_nonempty
from ..models import is_encoder_decoder, target_logits

MAX_LOGPROB = -1e-15  # log p(y|x) is capped here: margins saturate at -log(1e-15) = 34.5


def log1mexp(x: torch.Tensor) -> torch.Tensor:
    """``log(1 - exp(x))`` for ``x <= 0``, stable at both ends (Maechler's two-branch rule).

    ``log(-expm1(x))`` for ``x > -log 2`` and ``log1p(-exp(x))`` below; each branch is fed
    inputs clamped to its own range, so no branch produces inf/NaN gradients.
    """
    if (x > 0).any():
        raise ValueError("log1mexp needs x <= 0")
    cut = -math.log(2.0)
    near = torch.log(-torch.expm1(torch.clamp(x, min=cut)))
    far = torch.log1p(-torch.exp(torch.clamp(x, max=cut)))
    return torch.where(x > cut, near, far)


def margin_from_logprob(logprob: torch.Tensor) -> torch.Tensor:
    """The log-odds ``lp - log(1 - exp(lp))`` of a sequence log-probability (capped, see module doc)."""
    lp = torch.clamp(logprob, max=MAX_LOGPROB)
    return lp - log1mexp(lp)


def token_logprobs(model: nn.Module, batch: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """``log p(y_t | x, y_<t)`` of every target position ``[batch, T]`` (float64, differentiable; 0
    where there is no target) and the mask of target positions ``[batch, T]``.

    Same masking and shifting as :func:`untrac.models.example_losses` (both use
    :func:`untrac.models.target_logits`), with the log-softmax taken in float64 so answers near
    certainty keep their precision. ``token_lp[mask]`` lists each example's target tokens in order,
    example after example: the layout of :func:`token_scores`.
    """
    logits, labels = target_logits(model, batch)
    logp = torch.log_softmax(logits.double(), dim=-1)
    keep = labels != IGNORE
    if (keep.sum(1) == 0).any():
        raise ValueError("an example has no target tokens (all labels are -100): nothing to score")
    token_lp = logp.gather(-1, torch.where(keep, labels, 0).unsqueeze(-1)).squeeze(-1)
    return token_lp * keep, keep


def example_logprobs(model: nn.Module, batch: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per example: ``log p(y|x)`` (sum over target tokens, float64, differentiable) and the token count
    (:func:`untrac.models.example_losses` is ``-logprob / count``)."""
    token_lp, keep = token_logprobs(model, batch)
    return token_lp.sum(1), keep.sum(1)


def sequence_margins(model: nn.Module, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Differentiable margins ``[batch]`` of a collated batch (float64)."""
    return margin_from_logprob(example_logprobs(model, batch)[0])


@torch.no_grad()
def _scored(model: nn.Module, dataset: Dataset, pad_id: int, batch_size: int, what: str,
            score: Callable[[Mapping[str, torch.Tensor]], tuple[torch.Tensor, torch.Tensor]]) -> tuple[np.ndarray, np.ndarray]:
    """``score`` of every batch of an encoded dataset in eval mode (restored after), concatenated: its
    values (checked finite) and the examples' target-token counts."""
    check_nonempty("scored dataset", dataset)
    was = model.training
    model.eval()
    values, counts = [], []
    for b in batches(dataset, batch_size, pad_id, is_encoder_decoder(model)):
        v, n = score(b)
        values.append(v.cpu().numpy())
        counts.append(n.cpu().numpy())
    model.train(was)
    out = np.concatenate(values)
    if not np.isfinite(out).all():
        raise FloatingPointError(f"a {what} log-probability is not finite")
    return out, np.concatenate(counts)


def sequence_scores(model: nn.Module, dataset: Dataset, pad_id: int, batch_size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """``(log p(y|x), number of target tokens)`` of every example of an encoded dataset, in order."""
    return _scored(model, dataset, pad_id, batch_size, "sequence", lambda b: example_logprobs(model, b))


def token_scores(model: nn.Module, dataset: Dataset, pad_id: int, batch_size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """``(log-probabilities, counts)``: the log-probability of every target token of an encoded dataset,
    flat (float64, example after example, each one's target tokens in order), and each example's
    number of target tokens (:func:`split_tokens` makes one array per example)."""
    def flat(b: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        token_lp, keep = token_logprobs(model, b)
        return token_lp[keep], keep.sum(1)

    return _scored(model, dataset, pad_id, batch_size, "token", flat)


def split_tokens(flat: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Flat per-token values -> an object array of one float64 array per example (``counts`` tokens each)."""
    counts = np.asarray(counts, dtype=np.int64)
    if counts.sum() != len(flat):
        raise ValueError(f"counts add up to {counts.sum()} tokens but there are {len(flat)} values")
    out = np.empty(len(counts), dtype=object)
    for i, part in enumerate(np.split(np.asarray(flat, dtype=np.float64), np.cumsum(counts)[:-1])):
        out[i] = part
    return out


def margins_from_logprobs(logprob: np.ndarray) -> np.ndarray:
    """:func:`margin_from_logprob` on a numpy array."""
    return margin_from_logprob(torch.as_tensor(np.asarray(logprob, dtype=np.float64))).numpy()


def margins(model: nn.Module, dataset: Dataset, pad_id: int, batch_size: int = 32) -> np.ndarray:
    """Margin (log-odds of the whole answer) of every example of an encoded dataset, in order."""
    return margins_from_logprobs(sequence_scores(model, dataset, pad_id, batch_size)[0])


__all__ = [
    "MAX_LOGPROB", "example_logprobs", "log1mexp", "margin_from_logprob", "margins", "margins_from_logprobs",
    "sequence_margins", "sequence_scores", "split_tokens", "token_logprobs", "token_scores",
]
