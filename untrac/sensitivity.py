"""Hyperparameter sensitivity of UnTrac and UnTrac-Inv (paper Sec. 6): Figure 3 and Table 4.

Everything runs on the models of notebook 02 (``experiments_corpora.corpora_setting``: ToxiGen,
equal corpus sizes), so nothing is trained twice; each (setting, run) cell of a grid is cached by
:func:`untrac.sweep.sweep`, so an interrupted sweep resumes.

A curve over epochs costs one unlearning run: the correlation with the ground truth is taken at
every evaluation point of that run (:func:`untrac.evaluate.trajectory_correlation`).
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd

from .evaluate import correlation
from .experiments import cached_attribute
from .experiments_corpora import CorporaSetting
from .methods.untrac import UnlearnConfig
from .sweep import sweep

METHODS = ("UnTrac", "UnTrac-Inv")
PAPER_OPTIMIZERS = ("sgd", "sgd_momentum", "rmsprop", "adam", "adafactor")
PAPER_LEARNING_RATES = (5e-6, 1e-5, 5e-5, 1e-4, 5e-4)
PAPER_UNLEARNING_LR = 5e-5


@dataclass(frozen=True)
class SensitivityPreset:
    """Sec. 6 grids. ``lr_scale`` multiplies the paper's learning rates for a model whose natural
    unlearning rate differs (mini: the corpora preset's unlearning lr / the paper's 5e-5)."""

    scale: str
    testset: str = "toxigen"
    setting: str = "equal"
    runs: int = 4
    epochs: int = 5  # Figure 3's x axis: unlearning epochs
    evals_per_epoch: int = 4
    batch_sizes: tuple[int | None, ...] = (1, None)  # None: the largest the data allows (one batch)
    optimizers: tuple[str, ...] = PAPER_OPTIMIZERS
    learning_rates: tuple[float, ...] = PAPER_LEARNING_RATES
    lr_scale: float | None = None  # None: the corpora preset's UnTrac lr / the paper's 5e-5


def _sized(setting: CorporaSetting, method: str, run: int, testset: str) -> int:
    """Examples in the smallest set that ``method`` unlearns (a training sample, or a test subset)."""
    sets = setting.sample(run) if method == "UnTrac" else setting.testset(testset)
    return min(len(ds) for ds in sets.values())


def lr_scale(setting: CorporaSetting, preset: SensitivityPreset) -> float:
    """How much the paper's learning rates are multiplied by for this model (Table 4 bottom)."""
    return preset.lr_scale if preset.lr_scale is not None else setting.preset.untrac.lr / PAPER_UNLEARNING_LR


def base_config(setting: CorporaSetting, method: str) -> UnlearnConfig:
    """The unlearning config of ``method`` in the corpora preset (notebook 02's choice)."""
    return setting.preset.untrac if method == "UnTrac" else setting.preset.untrac_inv


def curve(setting: CorporaSetting, method: str, config: UnlearnConfig, run: int, testset: str = "toxigen") -> pd.DataFrame:
    """Pearson and Spearman with the ground truth at every evaluation point of one unlearning run."""
    sample = setting.sample(run)
    tests = setting.testset(testset)
    influence = cached_attribute(method, setting.base, sample, tests, setting.pad_id, progress=False,
                                 config=dataclasses.replace(config, seed=run))
    truth = setting.truth_for(testset)
    n = _sized(setting, method, run, testset)
    per_epoch = math.ceil(n / (config.batch_size or n))
    rows = [{"step": s, "epoch": s / per_epoch,
             "pearson": correlation(influence.at_step(i), truth, "pearson"),
             "spearman": correlation(influence.at_step(i), truth, "spearman")}
            for i, s in enumerate(influence.steps)]
    return pd.DataFrame(rows)


def epoch_curves(setting: CorporaSetting, preset: SensitivityPreset, methods: Sequence[str] = METHODS,
                 progress: bool = True) -> pd.DataFrame:
    """Figure 3: correlation over unlearning epochs for each method and batch size, every run."""

    def cell(method: str, batch_size: int | None, run: int) -> pd.DataFrame:
        n = _sized(setting, method, run, preset.testset)
        per_epoch = math.ceil(n / (batch_size or n))
        cfg = dataclasses.replace(base_config(setting, method), batch_size=batch_size, steps=None,
                                  epochs=preset.epochs, eval_every=max(1, per_epoch // preset.evals_per_epoch))
        return curve(setting, method, cfg, run, preset.testset)

    grid = {"method": list(methods), "batch_size": list(preset.batch_sizes), "run": list(range(preset.runs))}
    frame = sweep(cell, grid, context=("figure3", setting.base.key, preset), progress=progress)
    frame["batch"] = [str(b) if b is not None else "whole set" for b in frame["batch_size"]]
    return frame


def optimizer_table(setting: CorporaSetting, preset: SensitivityPreset, methods: Sequence[str] = METHODS,
                    progress: bool = True) -> pd.DataFrame:
    """Table 4 (top): correlation after the preset's unlearning with each optimizer, every run."""

    def cell(method: str, optimizer: str, run: int) -> pd.DataFrame:
        cfg = dataclasses.replace(base_config(setting, method), optimizer=optimizer, eval_every=None)
        return curve(setting, method, cfg, run, preset.testset).tail(1)

    grid = {"method": list(methods), "optimizer": list(preset.optimizers), "run": list(range(preset.runs))}
    return sweep(cell, grid, context=("table4-optimizer", setting.base.key, preset), progress=progress)


def learning_rate_table(setting: CorporaSetting, preset: SensitivityPreset, methods: Sequence[str] = METHODS,
                        progress: bool = True) -> pd.DataFrame:
    """Table 4 (bottom): correlation with Adam at each (scaled) learning rate, every run.

    ``paper_lr`` is the paper's column; ``lr`` = ``paper_lr * lr_scale(...)`` is what ran.
    """
    scale = lr_scale(setting, preset)

    def cell(method: str, paper_lr: float, run: int) -> pd.DataFrame:
        cfg = dataclasses.replace(base_config(setting, method), optimizer="adam", lr=paper_lr * scale, eval_every=None)
        return curve(setting, method, cfg, run, preset.testset).tail(1).assign(lr=cfg.lr)

    grid = {"method": list(methods), "paper_lr": list(preset.learning_rates), "run": list(range(preset.runs))}
    return sweep(cell, grid, context=("table4-lr", setting.base.key, preset), progress=progress)


SENSITIVITY: dict[str, SensitivityPreset] = {
    "smoke": SensitivityPreset(scale="smoke", runs=2, epochs=2, evals_per_epoch=1,
                               optimizers=("sgd", "adam"), learning_rates=(5e-5, 5e-4)),
    "mini": SensitivityPreset(scale="mini", epochs=4, evals_per_epoch=2),
    "paper": SensitivityPreset(scale="paper"),
}
