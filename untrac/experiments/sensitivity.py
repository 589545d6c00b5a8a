"""Hyperparameter sensitivity of UnTrac and UnTrac-Inv (paper Sec. 6): Figure 3 and Table 4.

Everything runs on the models of notebook 02 (``experiments_corpora.corpora_setting``: ToxiGen,
equal corpus sizes; the first training seed's base model, scored against the other seeds' ground
truth, as notebook 02's run 0), so nothing is trained twice; each (setting, run) cell of a grid is cached by
:func:`untrac.sweep.sweep`, so an interrupted sweep resumes.

A curve over epochs costs one unlearning run: the correlation with the ground truth is taken at
every evaluation point of that run (:func:`untrac.evaluate.trajectory_correlation`).
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from typing import Any

import pandas as pd

from ..evaluate import correlation, select_testset
from ..truth import ceiling as truth_ceiling
from .setup import attribution_call, cached_attribute
from .corpora import CorporaSetting
from ..methods.result import Influence
from ..methods.untrac import UnlearnConfig
from ..presets import SensitivityPreset
from .sweep import sweep

METHODS = ("UnTrac", "UnTrac-Inv")
PAPER_UNLEARNING_LR = 5e-5  # Adam, both methods (Sec. 5)


def _sized(setting: CorporaSetting, method: str, run: int, testset: str) -> int:
    """Examples in the smallest set that ``method`` unlearns (a training sample, or a test subset)."""
    sets = setting.sample(run) if method == "UnTrac" else setting.testset(testset)
    return min(len(ds) for ds in sets.values())


def lr_scale(setting: CorporaSetting, preset: SensitivityPreset, method: str) -> float:
    """How much the paper's learning rates are multiplied by for ``method`` on this model (Table 4
    bottom): ``preset.lr_scale``, or the method's unlearning lr in the corpora preset / the paper's 5e-5,
    so that each column sits at the same multiple of the method's working rate as in the paper."""
    if preset.lr_scale is not None:
        return preset.lr_scale
    return base_config(setting, method).lr / PAPER_UNLEARNING_LR


def base_config(setting: CorporaSetting, method: str) -> UnlearnConfig:
    """The unlearning config of ``method`` in the corpora preset (notebook 02's choice)."""
    return setting.preset.untrac if method == "UnTrac" else setting.preset.untrac_inv


CURVE_VERSION = 2  # bump when the columns :func:`curve` returns change (the sweeps' cells are then recomputed)


def _context(table: str, setting: CorporaSetting, preset: SensitivityPreset) -> tuple:
    """What a grid's cells depend on besides the cell itself: the base model (and so the data), the
    truth it is scored against, both methods' preset configs and the grid preset. Part of every cell's
    cache key."""
    truth = setting.heldout_truth(setting.seeds[0])
    return (table, setting.base, truth.train_names, truth.test_names, truth.values, setting.preset.untrac,
            setting.preset.untrac_inv, preset)


def spread(influence: Influence) -> float:
    """How much the influences tell the training sets apart: the std over the K training sets,
    averaged over test subsets (the scale the correlation with the truth works on)."""
    return float(influence.values.std(axis=0).mean())


def ceiling(setting: CorporaSetting, testset: str = "toxigen") -> float | None:
    """Pearson of the unlearned model's own exact truth (first seed) with the truth the grids are scored
    against (the other seeds'): the ceiling row of notebook 02's run 0; None with one training seed."""
    seed = setting.seeds[0]
    row = truth_ceiling(setting.truths, seed)
    return None if row is None else correlation(select_testset(row, testset), setting.truth_for(testset, seed=seed))


def _attribution(setting: CorporaSetting, method: str, config: UnlearnConfig, run: int, testset: str) -> tuple:
    """The arguments of the unlearning run behind one grid cell: the method on the first seed's base model,
    run ``run``'s training sample and ``testset``, with the unlearning order seeded by the run."""
    return method, setting.base, setting.sample(run), setting.testset(testset), setting.pad_id, dataclasses.replace(config, seed=run)


def _runs_first(setting: CorporaSetting, preset: SensitivityPreset, config_of: Callable[..., UnlearnConfig]) -> Callable[..., list]:
    """For :func:`sweep`'s ``calls``: a cell's unlearning run (config ``config_of(**cell)``), unless cached."""

    def calls(method: str, run: int, **axis: Any) -> list:
        *args, seeded = _attribution(setting, method, config_of(method=method, run=run, **axis), run, preset.testset)
        return attribution_call(*args, config=seeded)

    return calls


def curve(setting: CorporaSetting, method: str, config: UnlearnConfig, run: int, testset: str = "toxigen") -> pd.DataFrame:
    """Pearson and Spearman with the ground truth at every evaluation point of one unlearning run,
    with how far unlearning has moved the losses: ``mean_change`` (nats, over every training x test
    pair) and ``spread`` (:func:`spread`), to set beside the truth's spread (over-unlearning shows as a
    mean change far above it)."""
    *args, seeded = _attribution(setting, method, config, run, testset)
    influence = cached_attribute(*args, progress=False, config=seeded)
    truth = setting.truth_for(testset, seed=setting.seeds[0])  # the other seeds' truth (notebook 02's run 0)
    n = _sized(setting, method, run, testset)
    per_epoch = math.ceil(n / (config.batch_size or n))
    rows = []
    for i, s in enumerate(influence.steps):
        point = influence.at_step(i)
        rows.append({"step": s, "epoch": s / per_epoch,
                     "pearson": correlation(point, truth, "pearson"), "spearman": correlation(point, truth, "spearman"),
                     "mean_change": float(point.values.mean()), "spread": spread(point)})
    return pd.DataFrame(rows)


def epoch_curves(setting: CorporaSetting, preset: SensitivityPreset, methods: Sequence[str] = METHODS,
                 progress: bool = True) -> pd.DataFrame:
    """Figure 3: correlation over unlearning epochs for each method and batch size, every run."""

    def config(method: str, batch_size: int | None, run: int) -> UnlearnConfig:
        n = _sized(setting, method, run, preset.testset)
        per_epoch = math.ceil(n / (batch_size or n))
        return dataclasses.replace(base_config(setting, method), batch_size=batch_size, steps=None,
                                   epochs=preset.epochs, eval_every=max(1, per_epoch // preset.evals_per_epoch))

    def cell(method: str, batch_size: int | None, run: int) -> pd.DataFrame:
        return curve(setting, method, config(method, batch_size, run), run, preset.testset)

    grid = {"method": list(methods), "batch_size": list(preset.batch_sizes), "run": list(range(preset.runs))}
    frame = sweep(cell, grid, context=_context("figure3", setting, preset), progress=progress, version=CURVE_VERSION,
                  calls=_runs_first(setting, preset, config))
    frame["batch"] = [str(b) if b is not None else "whole set" for b in frame["batch_size"]]
    return frame


def optimizer_table(setting: CorporaSetting, preset: SensitivityPreset, methods: Sequence[str] = METHODS,
                    progress: bool = True) -> pd.DataFrame:
    """Table 4 (top): correlation after the preset's unlearning with each optimizer, every run."""

    def config(method: str, optimizer: str, run: int) -> UnlearnConfig:
        return dataclasses.replace(base_config(setting, method), optimizer=optimizer, eval_every=None)

    def cell(method: str, optimizer: str, run: int) -> pd.DataFrame:
        return curve(setting, method, config(method, optimizer, run), run, preset.testset).tail(1)

    grid = {"method": list(methods), "optimizer": list(preset.optimizers), "run": list(range(preset.runs))}
    return sweep(cell, grid, context=_context("table4-optimizer", setting, preset), progress=progress, version=CURVE_VERSION,
                 calls=_runs_first(setting, preset, config))


def learning_rate_table(setting: CorporaSetting, preset: SensitivityPreset, methods: Sequence[str] = METHODS,
                        progress: bool = True) -> pd.DataFrame:
    """Table 4 (bottom): correlation with Adam at each (scaled) learning rate, every run.

    ``paper_lr`` is the paper's column; ``lr`` = ``paper_lr * lr_scale(...)`` is what ran.
    """
    scales = {method: lr_scale(setting, preset, method) for method in methods}

    def config(method: str, paper_lr: float, run: int) -> UnlearnConfig:
        return dataclasses.replace(base_config(setting, method), optimizer="adam", lr=paper_lr * scales[method],
                                   eval_every=None)

    def cell(method: str, paper_lr: float, run: int) -> pd.DataFrame:
        cfg = config(method, paper_lr, run)
        return curve(setting, method, cfg, run, preset.testset).tail(1).assign(lr=cfg.lr)

    grid = {"method": list(methods), "paper_lr": list(preset.learning_rates), "run": list(range(preset.runs))}
    return sweep(cell, grid, context=_context("table4-lr", setting, preset), progress=progress, version=CURVE_VERSION,
                 calls=_runs_first(setting, preset, config))
