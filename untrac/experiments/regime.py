"""Which mini regime can decide anything? A study of the corpora model that never looks at a method.

Every candidate is the corpora preset with one change (twice the training, twice the layers, four
times the vocabulary: the model ``mini`` used before the study), fixed here in advance. Each is judged only by quantities that do not involve
any attribution method:

* ``ratio_one_seed`` — the ground truth's spread across corpora over its seed-to-seed noise
  (:func:`untrac.evaluate.seed_noise`, equal setting, per test set); ``seeds_for_3x`` — how many
  training seeds the mean truth needs to reach 3x its noise (``ceil((3 / ratio_one_seed)^2)``);
  ``ratio_one_seed_corrected`` / ``seeds_for_3x_corrected``: the same with the spread corrected for the
  seed noise it carries (:func:`untrac.evaluate.seed_noise`; added after the first mini run showed how
  much the uncorrected ratio shrinks with more seeds; the selection rule below keeps the uncorrected one
  it was stated with, which is the more lenient);
* ``train_loss`` against ``unigram`` — the base models' final training loss (mean of the last
  quarter of the logged losses, over seeds) against the entropy of the training tokens' unigram
  distribution (the loss of the best model that ignores context): ``below_unigram`` nats of language
  learnt beyond word frequencies;
* ``seconds_per_model`` — training cost.

Selection rule (stated before any candidate ran): the cheapest candidate whose truth reaches 3x its
noise with at most 3 seeds on every test set and whose training loss is at least 0.5 nats below the
unigram entropy; if none does, none is selected and the table says how many seeds each would need.

Fallback (:func:`fallback`, added on 2026-11-27 after the first study, around the 4,096-token model,
selected none; it reads only this table): among candidates at least 0.5 nats below the unigram entropy,
the one that reaches 3x on its worst test set in the least training time, ``seeds_for_3x x
seconds_per_model`` (``seconds_to_3x``) — seeds buy power as their square root, so a cheaper model buys
it faster. The first study's numbers (as is 569 s, vocabulary / 4 458 s, 2x layers 685 s, 2x training
1,686 s) picked the 1,024-token vocabulary, which ``mini`` has used since; the study now runs around
that model, and the former one is the ``vocabulary x 4`` candidate.

Notebook ``05_regime_study`` runs it and draws it; at ``mini`` the new candidates train 2 seeds x 9
models each (the first candidate is notebook 02's models).
"""
from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from ..presets import CorporaPreset, override
from .corpora import corpora_setting, noise_floor

# one change each from the corpora preset of the study's scale (seeds set by the study); fixed before any ran
CANDIDATES: dict[str, Callable[[CorporaPreset], dict[str, Any]]] = {
    "as is": lambda p: {},
    "vocabulary x 4": lambda p: {"model__vocab_size": 4 * p.model.vocab_size},  # mini until 2026-11-27 (4,096)
    "2x layers": lambda p: {"model__n_layers": 2 * p.model.n_layers},
    "2x training": lambda p: {"train__steps": 2 * p.train.steps,
                              **({"anneal__steps": 2 * p.anneal.steps} if p.anneal is not None else {})},
}
SEEDS_FOR_3X_MAX = 3  # the rule's budget of training seeds
MIN_BELOW_UNIGRAM = 0.5  # nats


def unigram_entropy(train_sets: Mapping[str, Any], pad_id: int | None = None) -> float:
    """Entropy (nats per token) of the unigram distribution of every token in ``train_sets`` (pad excluded)."""
    counts: np.ndarray | None = None
    for data in train_sets.values():
        ids = np.asarray(data["input_ids"]).ravel()
        if pad_id is not None:
            ids = ids[ids != pad_id]
        c = np.bincount(ids)
        counts = c if counts is None else np.pad(counts, (0, max(0, len(c) - len(counts)))) + np.pad(c, (0, max(0, len(counts) - len(c))))
    if counts is None or counts.sum() == 0:
        raise ValueError("train_sets holds no tokens")
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log(p)).sum())


def final_loss(log: Mapping[str, Any], tail: float = 0.25) -> float:
    """Mean of the last ``tail`` share of a training log's ``(step, loss)`` points."""
    points = [v for _, v in log.get("loss") or []]
    if not points:
        return float("nan")
    return float(np.mean(points[-max(1, int(len(points) * tail)):]))


def candidate_preset(base: CorporaPreset, overrides: Mapping[str, Any], seeds: Sequence[int]) -> CorporaPreset:
    """``base`` with ``overrides`` (``a__b`` nested keys) and training seeds ``seeds``, equal setting only."""
    return override(base, {**overrides, "seeds": tuple(seeds), "settings": ("equal",), "classic": False})


def regime_row(name: str, preset: CorporaPreset, progress: bool = False) -> list[dict[str, Any]]:
    """The study's rows of one candidate (one per test set)."""
    s = corpora_setting(preset, "equal", classic=False, progress=progress)
    floor = noise_floor(preset, "equal", progress=progress)
    models = [t for seed in s.seeds for t in (s.bases[seed], *s.counterfactuals_by_seed[seed].values())]
    seconds = float(np.nanmean([t.log.get("seconds", np.nan) for t in models]))
    train_loss = float(np.mean([final_loss(s.bases[seed].log) for seed in s.seeds]))
    unigram = unigram_entropy(s.train_sets, s.pad_id)
    rows = []
    for r in floor.itertuples():
        ratio1, corrected = float(r.ratio_one_seed), float(r.ratio_one_seed_corrected)
        rows.append({"candidate": name, "testset": r.testset, "seeds": len(s.seeds), "ratio_one_seed": ratio1,
                     "ratio_3_seeds": ratio1 * math.sqrt(3),
                     "seeds_for_3x": math.ceil((3 / ratio1) ** 2) if ratio1 > 0 else None,
                     "ratio_one_seed_corrected": corrected,
                     "seeds_for_3x_corrected": math.ceil((3 / corrected) ** 2) if corrected > 0 else None,
                     "seed_agreement": float(r.seed_agreement), "train_loss": train_loss, "unigram": unigram,
                     "below_unigram": unigram - train_loss, "seconds_per_model": seconds,
                     "seconds_to_3x": math.ceil((3 / ratio1) ** 2) * seconds if ratio1 > 0 else None,
                     "parameters": sum(p.numel() for p in s.base.model.parameters())})
    return rows


def select(table: pd.DataFrame) -> str | None:
    """The rule of the module docstring: the cheapest candidate meeting both criteria on every test set."""
    ok = table.groupby("candidate", sort=False).agg(
        worst=("seeds_for_3x", "max"), below=("below_unigram", "min"), cost=("seconds_per_model", "mean"))
    ok = ok[(ok.worst <= SEEDS_FOR_3X_MAX) & (ok.below >= MIN_BELOW_UNIGRAM)]
    return None if ok.empty else str(ok.cost.idxmin())


def fallback(table: pd.DataFrame) -> str | None:
    """The fallback of the module docstring: least ``seconds_to_3x`` on the worst test set, among candidates at
    least ``MIN_BELOW_UNIGRAM`` nats below the unigram entropy (``None`` when none is)."""
    worst = table.assign(cost=table["seeds_for_3x"].astype(float) * table["seconds_per_model"]).groupby(
        "candidate", sort=False).agg(cost=("cost", lambda c: c.max(skipna=False)), below=("below_unigram", "min"))
    worst = worst[(worst.below >= MIN_BELOW_UNIGRAM) & worst.cost.notna()]
    return None if worst.empty else str(worst.cost.idxmin())


def regime_study(base: CorporaPreset, candidates: Sequence[str] | None = None, seeds: Sequence[int] = (0, 1),
                 progress: bool = True) -> pd.DataFrame:
    """The rows (:func:`regime_row`) of every candidate of :data:`CANDIDATES` (or those named), in order,
    each built from the corpora preset ``base``; its models are cached."""
    names = list(CANDIDATES) if candidates is None else list(candidates)
    unknown = [n for n in names if n not in CANDIDATES]
    if unknown:
        raise ValueError(f"unknown candidates {unknown}; choose from {list(CANDIDATES)}")
    if len(seeds) < 2:
        raise ValueError(f"seeds must hold at least two training seeds (the noise is seed to seed), got {tuple(seeds)}")
    rows = []
    for name in names:
        rows += regime_row(name, candidate_preset(base, CANDIDATES[name](base), seeds), progress=progress)
    return pd.DataFrame(rows)


__all__ = ["CANDIDATES", "candidate_preset", "fallback", "final_loss", "regime_row", "regime_study", "select", "unigram_entropy"]
