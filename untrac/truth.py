"""The leave-dataset-out ground truth (paper Eq. 1): how much each test loss rises without Z_k.

``I(Z', Z_k) = L(Z', theta_{-k}) - L(Z', theta_0)``, from the models of
:func:`untrac.training.leave_dataset_out`. :func:`cached_ground_truth` stores it beside the
models' cache entries, keyed by them.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import numpy as np
from datasets import Dataset
from torch import nn

from . import cache
from .methods.result import Influence
from .models import evaluation_batches, set_losses
from .training import Trained

NAME = "Ground truth"
# one training seed's exact leave-dataset-out influence, scored against the truth of the other seeds
# like any method: the best a method that sees one trained model can do (notebook 02's ceiling row)
CEILING = "Ceiling (one seed's exact truth)"


def ground_truth(
    base: nn.Module,
    counterfactuals: Mapping[str, nn.Module],
    test_sets: Mapping[str, Dataset],
    pad_id: int,
    batch_size: int = 64,
    name: str = NAME,
) -> Influence:
    """Leave-dataset-out influence (Eq. 1): L(Z', theta_{-k}) - L(Z', theta_0) for every k and Z'."""
    tests = evaluation_batches(base, test_sets, pad_id, batch_size)
    before = set_losses(base, tests)
    values = np.stack([set_losses(m, tests) for m in counterfactuals.values()]) - before
    return Influence(name, list(counterfactuals), list(test_sets), values)


def mean_truth(truths: Sequence[Influence], name: str = NAME) -> Influence:
    """The mean of several ground truths over the same training and test sets (e.g. one per training seed)."""
    first = truths[0]
    for t in truths[1:]:
        if t.train_names != first.train_names or t.test_names != first.test_names:
            raise ValueError("ground truths over different training or test sets cannot be averaged")
    return Influence(name, list(first.train_names), list(first.test_names), np.mean([t.values for t in truths], axis=0))


def heldout_truth(truths: Mapping[int, Influence], seed: int) -> Influence:
    """What a method run on training seed ``seed``'s model is scored against: the mean truth of the
    other seeds (no training noise shared with that model), or the seed's own when it is the only one."""
    others = [t for s, t in truths.items() if s != seed]
    return mean_truth(others or [truths[seed]])


def ceiling(truths: Mapping[int, Influence], seed: int) -> Influence | None:
    """Seed ``seed``'s own exact truth as the :data:`CEILING` row (scored against :func:`heldout_truth`
    like a method), or None with one seed."""
    return dataclasses.replace(truths[seed], method=CEILING) if len(truths) > 1 else None


@cache.cached("influence", version=1)
def cached_ground_truth(base: Trained, counterfactuals: Mapping[str, Trained], test_sets: Mapping[str, Dataset],
                        pad_id: int, name: str = NAME) -> Influence:
    """:func:`ground_truth` of trained models, cached under their keys and the test sets' content."""
    return ground_truth(base.model, {k: t.model for k, t in counterfactuals.items()}, test_sets, pad_id, name=name)
