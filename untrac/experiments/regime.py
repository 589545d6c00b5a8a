"""Which mini regime can decide anything? A study of the mini models that never looks at a method.

**The corpora model** (notebook 02's):

Every candidate is the corpora preset with one change (twice the training, twice the layers, a
quarter of the vocabulary), fixed here in advance. Each is judged only by quantities that do not involve
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

Fallback (:func:`fallback`, added on 2026-11-27 after this study selected none; it reads only the study's
table): among candidates at least 0.5 nats below the unigram entropy, the one that reaches 3x on its worst
test set in the least training time, ``seeds_for_3x x seconds_per_model`` (``seconds_to_3x``) — seeds buy
power as their square root, so a cheaper model buys it faster. From 2 seeds it picks *vocabulary / 4* (458 s
against 569 s as is, 685 s for 2x layers, 1,686 s for 2x training). Before adopting it, the same quantity
was measured with 8 seeds for both (notebook 05's last part; the fallback's pick and *as is*): there the
smaller vocabulary's truth is weaker per seed by about what it saves per model (worst test set 94 seeds x
19 s = 1,778 s against 29 x 44 s = 1,271 s; with the spread corrected its WinoBias truth is at its noise),
so it buys no power per core-second and ``mini`` keeps its model. Two seeds cannot resolve these differences.

**The synthetic model** (notebook 01's; :data:`SYNTHETIC_CANDIDATES`, fixed on 2026-11-27 before any ran:
as is, the fine-tuning length changed by 8x, a quarter of the vocabulary), run 0 of both families with
``seeds`` training seeds, judged by the truth's spread over its seed noise (:func:`untrac.evaluate.seed_noise`),
whether the fine-tuned model has learnt the test task (``exact_match``: share of test prompts whose target
greedy decoding reproduces, :func:`untrac.models.exact_match`; the test loss beside it) and the seconds a
fine-tuned model costs. Rule (stated before any ran): the cheapest candidate whose truth reaches 3x its
noise with at most 3 seeds and whose exact match is at least 0.25, on both families; none if none does
(then ``mini`` keeps its synthetic model; no fallback). **Declared exception**: the study ran when ``mini``
fine-tuned 8 epochs (as is) and one epoch was a candidate; no candidate learnt the test task (exact match
0.00-0.04), so the rule selected none, but one epoch — the paper's recipe, from which 8 epochs had been a
deviation — had the truth at 3.8 / 5.4x its seed noise (families A / B) against 0.5 / 2.9x, a test loss 2.7
/ 1.2 nats lower, at 1/16 of the cost. ``mini`` returned to the paper's one epoch; the former model is the
``8 epochs`` candidate.

Notebook ``05_regime_study`` runs both and draws them; at ``mini`` the new corpora candidates train 2
seeds x 9 models each (the first candidate is notebook 02's models) and the fallback's check 6 more seeds
of its pick, the synthetic ones 3 seeds x 5 models per family (the first is notebook 01's run 0).
"""
from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from ..evaluate import seed_noise
from ..models import dataset_loss, eval_batches, exact_match
from ..parallel import prefetch
from ..presets import CorporaPreset, SyntheticPreset, override
from ..training import leave_dataset_out, leave_dataset_out_calls
from ..truth import cached_ground_truth
from .corpora import corpora_setting, noise_floor
from .setup import with_seed
from .synthetic import run_seeds, synthetic_data, synthetic_setup


def _seeds_for_3x(ratio_one_seed: float) -> int | None:
    """Seeds whose mean truth reaches 3x its noise, ``ceil((3 / ratio)^2)`` (None when the ratio is not positive)."""
    return math.ceil((3 / ratio_one_seed) ** 2) if ratio_one_seed > 0 else None


def _quarter_vocabulary(p: Any) -> dict[str, Any]:
    return {"model__vocab_size": max(p.model.vocab_size // 4, 300)}  # a byte-level BPE needs > 256 tokens


# one change each from the corpora preset of the study's scale (seeds set by the study); fixed before any ran
CANDIDATES: dict[str, Callable[[CorporaPreset], dict[str, Any]]] = {
    "as is": lambda p: {},
    "vocabulary / 4": _quarter_vocabulary,
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
        need = _seeds_for_3x(ratio1)
        rows.append({"candidate": name, "testset": r.testset, "seeds": len(s.seeds), "ratio_one_seed": ratio1,
                     "ratio_3_seeds": ratio1 * math.sqrt(3), "seeds_for_3x": need,
                     "ratio_one_seed_corrected": corrected, "seeds_for_3x_corrected": _seeds_for_3x(corrected),
                     "seed_agreement": float(r.seed_agreement), "train_loss": train_loss, "unigram": unigram,
                     "below_unigram": unigram - train_loss, "seconds_per_model": seconds,
                     "seconds_to_3x": need * seconds if need else None,
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


# -- the synthetic model ----------------------------------------------------------------------------

def _eight_epochs(p: SyntheticPreset) -> dict[str, Any]:
    return {"train__steps": 8 * p.train.steps,
            **({"train__checkpoint_every": 8 * p.train.checkpoint_every} if p.train.checkpoint_every else {})}


# one change each from the synthetic preset of the study's scale; fixed before any ran (2026-11-27, when mini
# fine-tuned 8 epochs and the candidates were "as is", "one epoch" and "vocabulary / 4"; mini has fine-tuned one
# epoch since, so the former mini is now the "8 epochs" candidate: the same models)
SYNTHETIC_CANDIDATES: dict[str, Callable[[SyntheticPreset], dict[str, Any]]] = {
    "as is": lambda p: {},
    "8 epochs": _eight_epochs,  # mini until 2026-11-27; the paper fine-tunes one epoch
    "vocabulary / 4": _quarter_vocabulary,
}
MIN_EXACT_MATCH = 0.25  # the synthetic rule's bar for "the test task is learnt"


def synthetic_regime_study(base: SyntheticPreset, candidates: Sequence[str] | None = None, seeds: int = 3, run: int = 0,
                           progress: bool = True, executor: Any = None) -> pd.DataFrame:
    """One row per candidate of :data:`SYNTHETIC_CANDIDATES` (or those named) and family: the truth's seed noise
    (run ``run``, ``seeds`` training seeds ``run, run + 1, ...``), the fine-tuned models' exact match and test
    loss (means over seeds), ``seconds_per_model`` (mean over every fine-tuned model) and ``seconds_to_3x``."""
    names = list(SYNTHETIC_CANDIDATES) if candidates is None else list(candidates)
    unknown = [n for n in names if n not in SYNTHETIC_CANDIDATES]
    if unknown:
        raise ValueError(f"unknown candidates {unknown}; choose from {list(SYNTHETIC_CANDIDATES)}")
    if seeds < 2:
        raise ValueError(f"seeds must be at least 2 (the noise is seed to seed), got {seeds}")
    jobs = []  # (name, preset, family, tokenizer, base model, train sets, test sets)
    for name in names:
        preset = override(base, {**SYNTHETIC_CANDIDATES[name](base), "seeds_per_run": seeds})
        tokenizer, model = synthetic_setup(preset, progress)
        for family in preset.families:
            _, train_sets, test_sets = synthetic_data(preset, family, run, tokenizer, model)
            jobs.append((name, preset, family, tokenizer, model, train_sets, test_sets))
    prefetch([c for _, p, _, tok, m, tr, _ in jobs for seed in run_seeds(p, run)
              for c in leave_dataset_out_calls(m, tr, with_seed(p.train, seed), tok.pad_token_id)],
             executor, progress=progress, desc="models")
    rows = []
    for name, preset, family, tokenizer, model, train_sets, test_sets in jobs:
        pad = tokenizer.pad_token_id
        batches = eval_batches(test_sets["test"], tokenizer, model)
        truths, matches, losses, seconds = [], [], [], []
        for seed in run_seeds(preset, run):
            trained, counterfactuals = leave_dataset_out(model, train_sets, with_seed(preset.train, seed), pad, progress=False)
            truths.append(cached_ground_truth(trained, counterfactuals, test_sets, pad))
            matches.append(exact_match(trained.model, batches))
            losses.append(dataset_loss(trained.model, batches))
            seconds += [t.log.get("seconds", np.nan) for t in (trained, *counterfactuals.values())]
        noise = seed_noise(truths)
        ratio1, per_model = float(noise["ratio_one_seed"]), float(np.nanmean(seconds))
        need = _seeds_for_3x(ratio1)
        rows.append({"candidate": name, "family": family, "seeds": seeds, "ratio_one_seed": ratio1,
                     "ratio_one_seed_corrected": float(noise["ratio_one_seed_corrected"]), "seeds_for_3x": need,
                     "seed_agreement": float(noise["agreement"]), "exact_match": float(np.mean(matches)),
                     "test_loss": float(np.mean(losses)), "train_steps": preset.train.steps,
                     "seconds_per_model": per_model, "seconds_to_3x": need * per_model if need else None})
    return pd.DataFrame(rows)


def select_synthetic(table: pd.DataFrame) -> str | None:
    """The synthetic rule of the module docstring: the cheapest candidate with ``seeds_for_3x`` <= 3 and
    ``exact_match`` >= :data:`MIN_EXACT_MATCH` on every family (``None`` when none qualifies)."""
    ok = table.groupby("candidate", sort=False).agg(
        worst=("seeds_for_3x", lambda c: c.max(skipna=False)), match=("exact_match", "min"), cost=("seconds_per_model", "mean"))
    ok = ok[(ok.worst <= SEEDS_FOR_3X_MAX) & (ok.match >= MIN_EXACT_MATCH)]
    return None if ok.empty else str(ok.cost.idxmin())


__all__ = ["CANDIDATES", "MIN_EXACT_MATCH", "SYNTHETIC_CANDIDATES", "candidate_preset", "fallback", "final_loss",
           "regime_row", "regime_study", "select", "select_synthetic", "synthetic_regime_study", "unigram_entropy"]
