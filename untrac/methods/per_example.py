"""Per-example attribution: a score for every training example, beside the per-set ones.

Helpers for the methods that compute them when run with ``per_example=True`` (this module
declares no ``METHODS``: the methods stay in :mod:`.gradients` and :mod:`.untrac`):

* GradDot / GradCos: ``<g_i, g_s>`` (GradCos: the cosine) of the gradient ``g_i`` of training
  example i's loss with the gradient ``g_s`` of test set s's mean loss (:func:`example_scores`);
  the set-level GradDot is the mean of its examples' scores (the set's loss is their mean).
* TracIn: those cosines (or dot products) summed over the checkpoints (:func:`tracin_examples`).
* UnTrac-Inv: the change of every training example's loss after unlearning the test set, evaluated
  in the very batches of the set-level value (:func:`indexed_eval_batches`, :func:`example_loss_vector`),
  so the mean over a set's examples is the set-level influence up to rounding.
* EK-FAC (:mod:`.ekfac`) and TRAK (:mod:`.trak`): scores of every (training, test) example pair, averaged into
  set scores and per-example scores by :func:`pairwise_to_sets`.

Per-example gradients take one backward pass per example (one forward per batch of
:func:`example_batches`, one example each): no per-example gradient is kept, only its ``S``
scores, so memory stays that of ``S + 1`` gradients.
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from datasets import Dataset
from torch import nn

from ..data.batching import batches, check_nonempty
from ..data.batching import example_rows as batching_rows
from ..models import example_losses, is_encoder_decoder
from ..progress import bar
from .gradients import (LossFn, _per_example_losses, _resolve_checkpoint, _work_copy, dataset_gradients, eval_mode,
                        flat_params, flatten, normalize_grads)
from .result import Cost, measure

__all__ = ["example_batches", "example_scores", "tracin_examples", "indexed_eval_batches", "example_loss_vector",
           "split_examples", "example_rows", "pairwise_to_sets", "pairwise_method"]


def example_batches(model: nn.Module, sets: Mapping[str, Dataset], pad_id: int) -> dict[str, list[dict[str, torch.Tensor]]]:
    """Every named set cut into one-example batches, in dataset order (batch i is example i)."""
    encdec = is_encoder_decoder(model)
    return {name: batches(ds, 1, pad_id, encdec) for name, ds in sets.items()}


def _unit(g: torch.Tensor) -> torch.Tensor:
    """``g / |g|`` (a zero gradient stays zero) without waiting on the device."""
    norm = torch.linalg.vector_norm(g)
    return g / torch.where(norm > 0, norm, torch.ones_like(norm))


def example_scores(
    model: nn.Module,
    loss_fn: LossFn,
    examples: Mapping[str, Iterable[Any]],
    test_grads: Mapping[str, torch.Tensor],
    params: Sequence[torch.Tensor] | None = None,
    *,
    normalize: bool = False,
    progress: bool = False,
) -> dict[str, np.ndarray]:
    """Per training set, ``[n_k, S]``: ``<g_i, g_s>`` for every example i and test gradient ``g_s``.

    ``examples``: per set, batches whose rows are its examples in order (:func:`example_batches`);
    one backward pass per example. ``normalize``: both gradients normalised first (cosines; a zero
    gradient scores 0). Dot products in at least float32, like the set-level ones.
    """
    ps = flat_params(model, params)
    tests = list((normalize_grads(test_grads) if normalize else test_grads).values())
    dtype = torch.promote_types(torch.promote_types(ps[0].dtype, tests[0].dtype), torch.float32)
    device = tests[0].device
    matrix = torch.stack([t.to(dtype) for t in tests])  # [S, P]
    out: dict[str, np.ndarray] = {}
    with eval_mode(model), torch.enable_grad():
        for name, bs in examples.items():
            rows = []
            for batch in bar(bs, enabled=progress, desc=f"per-example gradients {name!r}"):
                losses = _per_example_losses(model, loss_fn, batch)
                for j in range(len(losses)):
                    grads = torch.autograd.grad(losses[j], ps, allow_unused=True, retain_graph=j < len(losses) - 1)
                    g = flatten([None if x is None else x.detach() for x in grads], ps)
                    g = _unit(g) if normalize else g
                    rows.append(matrix @ g.to(device=device, dtype=dtype))
            if not rows:
                raise ValueError(f"training set {name!r} has no examples")
            out[name] = torch.stack(rows).double().cpu().numpy()
    return out


def tracin_examples(
    checkpoints: Sequence[Mapping[str, torch.Tensor] | str],
    model: nn.Module,
    loss_fn: LossFn,
    examples: Mapping[str, Iterable[Any]],
    test_sets: Mapping[str, Iterable[Any]],
    params: Sequence[torch.Tensor] | None = None,
    learning_rates: Sequence[float] | None = None,
    normalize: bool = True,
    *,
    strict: bool = True,
    progress: bool = False,
) -> dict[str, np.ndarray]:
    """Per-example TracIn: ``sum_t eta_t cos(g_i(theta_t), g_s(theta_t))`` per training set, ``[n_k, S]``
    (``normalize=False``: dot products), with the conventions of :func:`.gradients.tracin`."""
    if learning_rates is not None and len(learning_rates) != len(checkpoints):
        raise ValueError(f"{len(learning_rates)} learning rates for {len(checkpoints)} checkpoints")
    if not checkpoints:
        raise ValueError("no checkpoints")
    work, work_params = _work_copy(model, params)
    total: dict[str, np.ndarray] = {}
    for t, checkpoint in enumerate(checkpoints):
        work.load_state_dict(_resolve_checkpoint(checkpoint), strict=strict)
        g_test = dataset_gradients(work, loss_fn, test_sets, work_params)
        scores = example_scores(work, loss_fn, examples, g_test, work_params, normalize=normalize, progress=progress)
        eta = 1.0 if learning_rates is None else float(learning_rates[t])
        for name, v in scores.items():
            total[name] = total.get(name, 0.0) + eta * v
    return total


# ----------------------------------------------------------------------------- UnTrac-Inv

def indexed_eval_batches(model: nn.Module, sets: Mapping[str, Dataset], pad_id: int, batch_size: int
                         ) -> tuple[dict[str, list], dict[str, np.ndarray]]:
    """Length-bucketed evaluation batches of every set (those of ``batches(..., by_length=True)``) and,
    per set, the dataset row of each example in batch order."""
    encdec = is_encoder_decoder(model)
    out, orders = {}, {}
    for name, ds in sets.items():
        check_nonempty(name, ds)
        orders[name] = np.argsort([len(ids) for ids in ds["input_ids"]], kind="stable")
        out[name] = batches(ds.select(orders[name]), batch_size, pad_id, encdec)
    return out, orders


@torch.no_grad()
def example_loss_vector(model: nn.Module, sets: Mapping[str, list], orders: Mapping[str, np.ndarray],
                        cost: Cost | None = None) -> np.ndarray:
    """``[L(Z_1), ..., L(Z_K), then every set's per-example losses in dataset order]``.

    The set losses are those of :func:`untrac.models.dataset_loss` on the same batches, bit for bit
    (the same float64 sum over the same per-example losses).
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    means, per_set = [], []
    for name, bs in sets.items():
        total = torch.zeros((), dtype=torch.float64, device=device)
        parts = []
        for b in bs:
            if cost is not None:
                cost.add_batch(b, backward=False)
            losses = example_losses(model, b).double()
            total += losses.sum()
            parts.append(losses)
        value = (total / sum(len(b["input_ids"]) for b in bs)).item()
        if not math.isfinite(value):
            model.train(was_training)
            raise FloatingPointError("evaluation loss is not finite")
        means.append(value)
        in_order = np.empty(len(orders[name]))
        in_order[orders[name]] = torch.cat(parts).cpu().numpy()
        per_set.append(in_order)
    model.train(was_training)
    return np.concatenate([np.array(means), *per_set])


def split_examples(flat: np.ndarray, sizes: Mapping[str, int]) -> dict[str, np.ndarray]:
    """Cut ``[..., sum n_k]`` (the per-example tail of :func:`example_loss_vector`) into one array per set."""
    bounds = np.cumsum([0, *sizes.values()])
    return {name: flat[..., bounds[i]:bounds[i + 1]] for i, name in enumerate(sizes)}


# ----------------------------------------------------------------------------- pairwise scores

def example_rows(sets: Mapping[str, Dataset]) -> tuple[list[dict[str, list[int]]], dict[str, int]]:
    """Every example of every set, concatenated in order, as rows (:func:`untrac.data.batching.example_rows`),
    and each set's size."""
    rows, sizes = [], {}
    for name, ds in sets.items():
        check_nonempty(name, ds)
        rows += batching_rows(ds)
        sizes[name] = len(ds)
    return rows, sizes


def pairwise_to_sets(pairwise: np.ndarray, train_sizes: Mapping[str, int], test_sizes: Mapping[str, int]
                     ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """From ``[n_train, n_test]`` example-pair scores (rows and columns in :func:`example_rows` order):
    the ``[K, S]`` set scores (the mean over the pairs of training set k and test set s: a bilinear
    score of mean gradients) and every training example's ``[n_k, S]`` scores (mean over each test set)."""
    pairwise = np.asarray(pairwise, dtype=float)
    if pairwise.shape != (sum(train_sizes.values()), sum(test_sizes.values())):
        raise ValueError(f"pairwise scores of shape {pairwise.shape} for {sum(train_sizes.values())} training and "
                         f"{sum(test_sizes.values())} test examples")
    per_test = np.stack([part.mean(1) for part in split_examples(pairwise, test_sizes).values()])  # [S, n_train]
    examples = {name: v.T for name, v in split_examples(per_test, train_sizes).items()}
    return np.stack([v.mean(0) for v in examples.values()]), examples


def pairwise_method(name: str, pairwise: Callable[[Any, Any, Cost], tuple[np.ndarray, dict[str, int], dict[str, int]]]
                    ) -> Callable[[Any, Any], Any]:
    """The ``compute(problem, settings)`` of a method whose ``pairwise(problem, settings, cost)`` gives
    ``[n_train, n_test]`` example-pair scores: set scores, and per-example ones with ``per_example``."""

    def compute(problem: Any, settings: Any) -> Any:
        cost = Cost()
        with measure(cost, next(problem.model.parameters()).device):
            scores, train_sizes, test_sizes = pairwise(problem, settings, cost)
            values, examples = pairwise_to_sets(scores, train_sizes, test_sizes)
        result = problem.influence(name, values, cost, settings)
        return dataclasses.replace(result, example_values=examples) if settings.per_example else result

    return compute
