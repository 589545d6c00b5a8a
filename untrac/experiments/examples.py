"""Do per-example scores rank training examples like leaving each one out? (notebook 02)

The exact effect of one training example is only affordable on a short, deterministic training run.
:func:`leave_one_block_out` takes a pool of ``per_corpus`` blocks of every corpus (run ``run``'s
sample of a :class:`~.corpora.CorporaSetting`), fine-tunes the setting's base model theta_0 on the
pool with full-batch SGD (``steps`` steps at ``lr``, float64, no data-order noise), and retrains it
once without each block: the change of every test subset's loss is that block's exact influence
on this fine-tuning. Each method then scores every pool block from the fine-tuned model (its
per-example scores), and the frame gives, per method and test subset, the Spearman and Pearson
correlation of the scores with the exact effects over the pool.

The settings are fixed in advance, not tuned on the correlations: 3 blocks per corpus (24 in all),
10 full-batch steps at lr 0.5, UnTrac-Inv with one SGD step at
the same lr, TracIn over the 10 fine-tuning steps' weights with the lr as weight, the other
methods at their defaults (TRAK projected to half the pool). With 24 blocks a Spearman correlation
beyond 0.34 has under 5% chance of arising from independent rankings (:func:`spearman_chance`).
"""
from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from datasets import Dataset, concatenate_datasets
from scipy import stats
from torch import nn

from .. import cache
from ..methods import METHODS, attribute
from ..methods.untrac import UnlearnConfig
from ..models import evaluation_batches, set_losses
from ..parallel import gather
from ..training import TrainConfig, Trained, train
from .corpora import CorporaSetting

EXAMPLE_METHODS = ("UnTrac-Inv", "GradDot", "GradCos", "TracIn", "EK-FAC", "TRAK")


def _settings(method: str, pool_size: int, lr: float) -> dict:
    if method == "UnTrac-Inv":
        return {"config": UnlearnConfig(optimizer="sgd", lr=lr, batch_size=None, steps=1, per_example=True)}
    if method == "TRAK":
        return {"proj_dim": max(1, pool_size // 2), "per_example": True}
    return {"per_example": True}


def leave_one_block_out(setting: CorporaSetting, run: int = 0, per_corpus: int = 3, steps: int = 10,
                        lr: float = 0.5, methods: Sequence[str] | None = None, progress: bool = False
                        ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(correlations, effects)``: per method and test subset the rank (Spearman) and linear (Pearson)
    correlation of its per-block scores with the exact leave-one-block-out effects; and the effects
    (one row per pool block: corpus, block index in the run's sample, and its effect on every subset).
    ``methods``: default the installed ones of :data:`EXAMPLE_METHODS`. Cached; the retrainings run in
    worker processes."""
    methods = [m for m in EXAMPLE_METHODS if m in METHODS] if methods is None else list(methods)
    return _leave_one_block_out(setting.base, setting.sample(run), setting.tests, setting.pad_id, per_corpus, steps, lr,
                                tuple(methods), progress=progress)


def _without(init: nn.Module, pool: Dataset, i: int, config: TrainConfig, pad: int, tests: Any) -> np.ndarray:
    """The test subsets' losses after the fine-tuning without pool block ``i``."""
    kept = pool.select([j for j in range(len(pool)) if j != i])
    return set_losses(train(init, {"pool": kept}, config, pad, use_cache=False, progress=False).model, tests)


@cache.cached("examples", version=1)
def _leave_one_block_out(base: Trained, sample: Mapping[str, Dataset], test_sets: Mapping[str, Dataset], pad: int,
                         per_corpus: int, steps: int, lr: float, methods: tuple[str, ...], progress: bool = False
                         ) -> tuple[pd.DataFrame, pd.DataFrame]:
    chosen = {name: ds.select(range(min(per_corpus, len(ds)))) for name, ds in sample.items()}
    pool = concatenate_datasets(list(chosen.values()))
    origin = [(name, i) for name, ds in chosen.items() for i in range(len(ds))]
    n = len(pool)
    init = copy.deepcopy(base.model).double()
    config = TrainConfig(steps=steps, batch_size=n, lr=lr, optimizer="sgd", clip=None, checkpoint_every=1)
    tests = evaluation_batches(init, test_sets, pad)
    tuned = train(init, {"pool": pool}, config, pad, progress=progress)
    base_loss = set_losses(tuned.model, tests)
    effects = np.stack(gather((_without, (init, pool, i, config, pad, tests), {}) for i in range(n))) - base_loss  # [n, S]
    checkpoints = [init.state_dict()] + tuned.checkpoint_states()[:-1]  # the weights each step's gradient was taken at
    rows = []
    for method in methods:
        extra = {"checkpoints": checkpoints, "learning_rates": [lr] * steps} if method == "TracIn" else {}
        result = attribute(method, tuned.model, {"pool": pool}, test_sets, pad, progress=progress,
                           **extra, **_settings(method, n, lr))
        scores = result.example_values["pool"]
        for s, subset in enumerate(test_sets):
            rows.append({"method": method, "test": subset, "testset": subset.split("/", 1)[0],
                         "spearman": float(stats.spearmanr(scores[:, s], effects[:, s])[0]),
                         "pearson": float(np.corrcoef(scores[:, s], effects[:, s])[0, 1])})
    effect_frame = pd.DataFrame(effects, columns=list(test_sets))
    effect_frame.insert(0, "block", [i for _, i in origin])
    effect_frame.insert(0, "corpus", [c for c, _ in origin])
    return pd.DataFrame(rows), effect_frame


def spearman_chance(n: int, level: float = 0.05) -> float:
    """The Spearman correlation that independent rankings of ``n`` items exceed with probability
    ``level`` (one-sided; the t approximation)."""
    t = stats.t.ppf(1 - level, n - 2)
    return float(t / np.sqrt(n - 2 + t * t))


def example_check_summary(correlations: pd.DataFrame) -> pd.DataFrame:
    """Per method and test set: mean Spearman / Pearson over its subsets, with the spread over subsets."""
    g = correlations.groupby(["method", "testset"], sort=False)
    return g.agg(spearman=("spearman", "mean"), spearman_std=("spearman", "std"), pearson=("pearson", "mean"),
                 pearson_std=("pearson", "std"), subsets=("test", "size")).reset_index()


__all__ = ["EXAMPLE_METHODS", "example_check_summary", "leave_one_block_out", "spearman_chance"]
