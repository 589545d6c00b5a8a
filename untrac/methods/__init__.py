"""Every attribution method behind one entry point, returning one result type (:class:`Influence`).

``attribute(name, model, train_sets, test_sets, pad_id, config=None, **settings)`` runs any known
method: the package's (one module per family declares its :class:`Method` s: UnTrac and
UnTrac-Inv in :mod:`.untrac`, GradDot, GradCos and TracIn in :mod:`.similarity`, HIF in
:mod:`.hif`, Overlap and Random in :mod:`.overlap`; EK-FAC in :mod:`.ekfac` and TRAK in :mod:`.trak`
with their optional extras) and any registered with
:func:`register`. Settings are typed: ``config`` is the method's settings dataclass, keyword
``settings`` override its fields (an unknown field is an error naming the method).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from datasets import Dataset
from torch import nn

from .. import checks
from ..accel import Accel
from ..models import check_token_ids
from .registry import Method, MissingExtra, Problem, available, builtin, get, register, unregister
from .result import Cost, Influence, measure

# the package's methods whose optional extras are installed, in table order (EK-FAC and TRAK need one)
METHODS = tuple(m.name for m in builtin() if m.installed)


def attribute(
    name: str,
    model: nn.Module,
    train_sets: Mapping[str, Dataset],
    test_sets: Mapping[str, Dataset],
    pad_id: int,
    *,
    config: Any = None,
    checkpoints: Sequence[Mapping[str, torch.Tensor]] | None = None,
    progress: bool = True,
    accel: Accel | None = None,
    **settings: Any,
) -> Influence:
    """Influence of each training set on each test set by method ``name``.

    ``config``: the method's settings dataclass (e.g. :class:`UnlearnConfig` for UnTrac);
    ``settings``: overrides of its fields (``iterations=20`` for HIF (LiSSA)); ``checkpoints``
    (state dicts saved during training) feed the methods that need them (TracIn); ``accel``
    selects fast paths for the unlearning methods (:class:`untrac.accel.Accel`).
    """
    method = get(name)
    method.check_installed()
    checks.model("model", model)
    checks.datasets("train_sets", train_sets)
    checks.datasets("test_sets", test_sets)
    checks.pad_id(pad_id)
    check_token_ids(model, {**train_sets, **test_sets})
    chosen = method.settings_from(config, **settings)
    if "checkpoints" in method.needs and not checkpoints:
        raise ValueError(f"{name} needs the checkpoints saved during training: train with "
                         "TrainConfig(checkpoint_every=N) and pass checkpoints=trained.checkpoint_states()")
    problem = Problem(model, train_sets, test_sets, pad_id, checkpoints=checkpoints, progress=progress, accel=accel)
    return method.compute(problem, chosen)


def settings_for(name: str, **overrides: Any) -> Any:
    """The settings instance of method ``name`` with ``overrides`` (presets store overrides)."""
    return get(name).settings_from(None, **overrides)


__all__ = [
    "METHODS", "Cost", "Influence", "Method", "MissingExtra", "Problem", "attribute", "available", "get", "measure", "register",
    "settings_for", "unregister",
]
