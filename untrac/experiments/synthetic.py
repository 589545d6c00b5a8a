"""Section 5.1 as cached functions: the synthetic task families (notebook 01).

Run ``r`` draws its data with seed ``r`` and fine-tunes with seeds ``r, r+1, ...`` (``seeds_per_run``
of the preset) from the shared pretrained base model (:mod:`untrac.experiments.setup`): the methods see
seed ``r``'s model and are scored against the other seeds' ground truth. Everything is cached.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from datasets import Dataset
from torch import nn

from ..data.batching import encode
from ..data.synthetic import FAMILIES, synthetic_task
from ..methods import Influence
from ..methods import get as get_method
from ..evaluate import seed_noise
from ..models import dataset_loss, eval_batches, is_encoder_decoder
from ..presets import SyntheticPreset
from ..progress import bar
from ..parallel import prefetch
from ..training import leave_dataset_out, leave_dataset_out_calls
from ..truth import CEILING, NAME as TRUTH, cached_ground_truth, ceiling, heldout_truth
from .setup import attribution_call, cached_attribute, method_config, pretrained_base, project_tokenizer, with_seed as _with_seed


Family = Callable[[int, int], Mapping[str, Dataset]]
"""A task family: ``make(n, seed) -> {"test": ..., "<training set>": ..., ...}`` of text datasets
with ``prompt`` and ``target`` columns (targets start with a space, as :func:`synthetic_task`'s)."""

_FAMILIES: dict[str, Family] = {}


def register_family(name: str, make: Family) -> None:
    """Make a task family of your own available to the synthetic experiment by ``name`` (an
    explicit call; the package's families ``"A"`` and ``"B"`` need none)."""
    if not callable(make):
        raise TypeError(f"family {name!r}: make must be a function (n, seed) -> dict of datasets")
    if name in FAMILIES:
        raise ValueError(f"family {name!r} is one of the package's {FAMILIES}; pick another name")
    _FAMILIES[name] = make


def family_sets(family: str, n: int, seed: int) -> dict[str, Dataset]:
    """The text sets of a family (a registered one, or the package's ``"A"`` / ``"B"``)."""
    if family not in _FAMILIES:
        return synthetic_task(family, n, seed=seed)
    sets = dict(_FAMILIES[family](n, seed))
    if "test" not in sets or len(sets) < 3:
        raise ValueError(f"family {family!r} must return a 'test' set and at least two training sets, got {sorted(sets)}")
    return sets


def synthetic_data(preset: SyntheticPreset, family: str, run: int, tokenizer: Any, model: nn.Module) -> tuple[dict[str, Dataset], dict[str, Dataset], dict[str, Dataset]]:
    """(raw text sets, encoded training sets, encoded test sets) of one run (data seed = run)."""
    raw = family_sets(family, preset.n_examples, run)
    enc = {k: encode(v, tokenizer, is_encoder_decoder(model), preset.max_length) for k, v in raw.items()}
    return raw, {k: v for k, v in enc.items() if k != "test"}, {"test": enc["test"]}


def run_seeds(preset: SyntheticPreset, run: int) -> list[int]:
    """The training seeds of run ``run``: ``run`` (the model the methods see), then ``run + 1``, ..."""
    return [run + j for j in range(preset.seeds_per_run)]


def synthetic_truths(preset: SyntheticPreset, train_sets: Mapping[str, Dataset], test_sets: Mapping[str, Dataset],
                     run: int, pad: int, base: nn.Module, progress: bool = True) -> dict[int, tuple[Any, Influence]]:
    """Per training seed of run ``run``: ``(fine-tuned model, its leave-dataset-out truth)`` (cached)."""
    out = {}
    for seed in run_seeds(preset, run):
        trained, counterfactuals = leave_dataset_out(base, train_sets, _with_seed(preset.train, seed), pad,
                                                     progress=progress)
        out[seed] = (trained, cached_ground_truth(trained, counterfactuals, test_sets, pad))
    return out


def synthetic_run(
    preset: SyntheticPreset,
    family: str,
    run: int,
    tokenizer: Any,
    base: nn.Module,
    methods: Sequence[str] = ("UnTrac", "UnTrac-Inv"),
    progress: bool = True,
) -> dict[str, Influence]:
    """One run of Sec. 5.1: fine-tune, leave-dataset-out truth, and the requested methods.

    Run ``r`` draws its data with seed ``r``; the methods see the model fine-tuned with seed ``r``.
    Returns ``{"Ground truth": ..., method: ..., [CEILING: ...]}``: with ``seeds_per_run`` > 1 the
    truth is the mean of the other seeds' and the ceiling row is seed ``r``'s own truth.
    """
    for method in methods:
        get_method(method)  # a clear error for an unknown name, before any training
    _, train_sets, test_sets = synthetic_data(preset, family, run, tokenizer, base)
    pad = tokenizer.pad_token_id
    per_seed = synthetic_truths(preset, train_sets, test_sets, run, pad, base, progress)
    truths = {seed: truth for seed, (_, truth) in per_seed.items()}
    out = {TRUTH: heldout_truth(truths, run)}
    for method in methods:
        out[method] = cached_attribute(method, per_seed[run][0], train_sets, test_sets, pad, progress=progress,
                                       config=method_config(preset, method, run))
    if (row := ceiling(truths, run)) is not None:
        out[CEILING] = row
    return out


def synthetic_setup(preset: SyntheticPreset, progress: bool = True) -> tuple[Any, nn.Module]:
    """The tokenizer and the model fine-tuning starts from (both cached on disk)."""
    tokenizer = project_tokenizer(preset.model, preset.tokenizer)
    return tokenizer, pretrained_base(preset.model, preset.pretrain, tokenizer, progress)


def synthetic_experiment(preset: SyntheticPreset, methods: Sequence[str] = ("UnTrac", "UnTrac-Inv"),
                         progress: bool = True, executor: Any = None) -> dict[str, list[dict[str, Influence]]]:
    """All runs of both families: ``{family: [run results]}`` (tokenizer and base model shared).

    Every model of every run, then every attribution, is computed in parallel worker processes
    first (:func:`untrac.parallel.prefetch`; ``executor``: any ``concurrent.futures`` executor);
    the runs then load them from the cache.
    """
    tokenizer, base = synthetic_setup(preset, progress)
    pad = tokenizer.pad_token_id
    data = {(f, r): synthetic_data(preset, f, r, tokenizer, base)[1:] for f in preset.families for r in range(preset.runs)}
    prefetch([c for (f, r), (tr, _) in data.items() for seed in run_seeds(preset, r)
              for c in leave_dataset_out_calls(base, tr, _with_seed(preset.train, seed), pad)],
             executor, progress=progress, desc="models")
    calls = []
    for (f, r), (tr, te) in data.items():
        trained, _ = leave_dataset_out(base, tr, _with_seed(preset.train, r), pad, progress=False)
        calls += [c for m in methods for c in attribution_call(m, trained, tr, te, pad, method_config(preset, m, r))]
    prefetch(calls, executor, progress=progress, desc="attributions")
    return {
        family: [synthetic_run(preset, family, r, tokenizer, base, methods, progress)
                 for r in bar(range(preset.runs), desc=f"family {family}", enabled=progress)]
        for family in preset.families
    }


def synthetic_noise_floor(preset: SyntheticPreset, progress: bool = True) -> pd.DataFrame:
    """Is the ground truth above its noise? Per family and run, from the run's ``seeds_per_run``
    leave-dataset-out truths (:func:`untrac.evaluate.seed_noise`: ``spread`` across the training sets,
    ``seed_sd`` across seeds, their ratios, the ceiling ``agreement``), with the fine-tuned model's
    test loss (mean over the seeds); NaN noise with one seed."""
    tokenizer, base = synthetic_setup(preset, progress)
    pad = tokenizer.pad_token_id
    rows = []
    for family in preset.families:
        for run in range(preset.runs):
            _, train_sets, test_sets = synthetic_data(preset, family, run, tokenizer, base)
            per_seed = synthetic_truths(preset, train_sets, test_sets, run, pad, base, progress=False)
            batches = eval_batches(test_sets["test"], tokenizer, base)
            loss = float(np.mean([dataset_loss(model.model, batches) for model, _ in per_seed.values()]))
            truth = np.mean([t.values[:, 0] for _, t in per_seed.values()], axis=0)
            rows.append({"family": family, "run": run, "test_loss": loss,
                         **seed_noise([t for _, t in per_seed.values()]),
                         "truth_min": float(truth.min()), "truth_max": float(truth.max())})
    return pd.DataFrame(rows)


__all__ = ["Family", "family_sets", "register_family", "run_seeds", "synthetic_data", "synthetic_run", "synthetic_experiment",
           "synthetic_setup", "synthetic_noise_floor", "synthetic_truths"]
