"""Notebook 04: Attribute-to-Delete's unlearning evaluation on the synthetic tasks (Sec. 5.1).

Cached like everything else and sharing notebook 01's tokenizer, base model and (where the presets agree)
fine-tuned models:
:func:`population` (originals, oracles and subset-trained models over seeds; in :mod:`.population`),
:func:`fit_population_datamodel`, :func:`unlearning_runs` (every algorithm of
:mod:`untrac.unlearn.algorithms` at every budget), :func:`klom_frame` (KLoM from
:mod:`untrac.unlearn.klom`), :func:`untrac_comparison`; :func:`study` runs them all for a preset
(``untrac.preset("unlearning", scale)``, :class:`untrac.presets.UnlearningPreset`).
"""
from __future__ import annotations

import concurrent.futures as cf
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from .. import cache
from ..evaluate import correlation
from ..methods.result import Influence
from ..presets import UnlearningPreset
from ..training import Trained, mixture
from ..unlearn import klom
from ..unlearn.algorithms import (
    ALGORITHMS, MATCHING, DeletionConfig, MatchTargets, compute_fraction, matched_examples, matched_values,
    retain_sample_indices, unlearn_trajectory,
)
from ..unlearn.datamodels import Datamodel
from ..parallel import prefetch
from ..progress import bar
from ..unlearn.margins import margins_from_logprobs, sequence_scores, split_tokens
from .population import (  # re-exported: notebook 04 and its tests reach everything through this module
    GROUPS, Population, build_population, datamodel_quality, fit_population_datamodel, population, set_slices,
)


@dataclass
class UnlearningRuns:
    """Scores of every unlearned model on the evaluated examples.

    ``scores[(label, forget, seed)][steps] = {set: logprob}`` where ``label`` names an algorithm at one
    learning rate (``algorithms[label]`` is the algorithm, ``configs[label]`` its config);
    ``dm_direct[(forget, seed)] = {set: margins}`` (the datamodel's predicted margins, no fine-tuning).
    """

    scores: dict[tuple[str, str, int], dict[int, dict[str, np.ndarray]]]
    dm_direct: dict[tuple[str, int], dict[str, np.ndarray]]
    algorithms: dict[str, str] = field(default_factory=dict)
    configs: dict[str, DeletionConfig] = field(default_factory=dict)


def _unlearned_scores(key: str, algorithm: str, model: Any, forget: Any, retain: Any, budgets: Sequence[int], pad_id: int,
                      config: DeletionConfig, targets: MatchTargets | None, eval_sets: Mapping[str, Any]
                      ) -> dict[int, dict[str, np.ndarray]]:
    """One unlearning run's scores of ``eval_sets`` after every budget, cached under ``key`` (in a worker or here)."""

    def compute() -> dict[int, dict[str, np.ndarray]]:
        return {steps: {n: sequence_scores(unlearned, ds, pad_id)[0] for n, ds in eval_sets.items()}
                for steps, unlearned in unlearn_trajectory(algorithm, model, forget, retain, budgets, pad_id, config, targets)}

    return cache.memoise("unlearning", key, compute)


def unlearning_runs(pop: Population, dm: Datamodel, algorithms: Sequence[str] = ALGORITHMS[1:],
                    progress: bool = True, executor: cf.Executor | None = None) -> UnlearningRuns:
    """Unlearn every training set from every original with every algorithm, over the budgets.

    Oracle Matching for the original of seed ``s`` matches the oracle of the same seed (the model
    retraining would have produced), token by token; Datamodel Matching matches the original's token
    log-probabilities minus the forget set's coefficient in a datamodel of token log-probabilities
    (``dm``, the margin datamodel, gives DM-Direct). Every learning rate of ``preset.lrs`` is a
    separate variant. Cached per (algorithm, learning rate, forget set, seed); the runs not yet cached
    run in parallel (``executor``, default :func:`untrac.parallel.shared_pool`), each on one thread, so
    the numbers are those of a sequential run.
    """
    preset = pop.preset
    sl, token_sl = set_slices(pop), set_slices(pop, tokens=True)
    eval_sets = pop.eval_sets()
    counts = {n: pop.scores[pop.originals[next(iter(pop.originals))].key][n][1] for n in pop.sets}
    token_dm = None
    variants = preset.variants(algorithms)
    retains = {k: mixture(pop.train_sets, exclude=k) for k in pop.train_names}  # one per forget set, shared by its runs
    jobs = {}
    for s, original in pop.originals.items():
        for k in pop.train_names:
            forget, retain = pop.train_sets[k], retains[k]
            for label, a, config in variants:
                targets = None
                if a in MATCHING:
                    ridx = retain_sample_indices(len(retain), config.retain_sample, config.seed + pop.train_names.index(k))
                    source = pop.oracles[s][k] if a == "oracle matching" else original
                    target = matched_values(pop.tokens(source), k, ridx, pop.train_names)
                    if a == "datamodel matching":
                        token_dm = token_dm or fit_population_datamodel(pop, tokens=True)
                        effect = {n: split_tokens(token_dm.effect(k)[token_sl[n]], counts[n]) for n in pop.train_names}
                        target = target - matched_values(effect, k, ridx, pop.train_names)
                    targets = MatchTargets(matched_examples(forget, retain, ridx), target)
                key = cache.fingerprint("unlearning", a, original.key, k, config, list(preset.budgets), dict(eval_sets),
                                        None if targets is None else ("tokens", targets.flat()), dict(pop.train_sets))
                jobs[(label, k, s)] = (key, a, original.model, forget, retain, list(preset.budgets), pop.pad_id, config,
                                       targets, eval_sets)
    prefetch([(_unlearned_scores, args, {}) for args in jobs.values() if not cache.is_complete(cache.entry("unlearning", args[0]))],
             executor, progress=progress, desc=f"unlearning {pop.family}")
    out = {job: _unlearned_scores(*args) for job, args in bar(jobs.items(), desc=f"unlearning {pop.family}",
                                                              enabled=progress)}
    direct = {}
    for s, original in pop.originals.items():
        m = pop.margins(original)
        for k in pop.train_names:
            direct[(k, s)] = {n: m[n] - dm.effect(k)[sl[n]][pop.eval_index[n]] for n in pop.sets}
    return UnlearningRuns(out, direct, {v[0]: v[1] for v in variants}, {v[0]: v[2] for v in variants})


def klom_frame(pop: Population, runs: UnlearningRuns) -> pd.DataFrame:
    """Tidy KLoM percentiles: one row per (forget set, algorithm, steps, group).

    Includes "do nothing" (the originals, compute 0), "DM-Direct" (the datamodel's predicted
    margins, no fine-tuning, compute 0) and every algorithm at every budget.
    """
    preset = pop.preset
    train_cfg = preset.synthetic.train
    rows = []

    def add(k: str, algorithm: str, steps: int, per_seed: list[dict[str, np.ndarray]], fraction: float) -> None:
        for g, values in _klom_values(pop, k, per_seed).items():
            rows.append({"family": pop.family, "forget": k, "algorithm": algorithm, "steps": steps,
                         "fraction": fraction, "group": g, "n": values.size, **klom.percentiles(values)})

    for k in pop.train_names:
        add(k, "do nothing", 0, _unlearned_margins(pop, runs, k, "do nothing", 0), 0.0)
        add(k, "DM-Direct", 0, _unlearned_margins(pop, runs, k, "DM-Direct", 0), 0.0)
        for label, a in runs.algorithms.items():
            bs = runs.configs[label].batch_size
            for steps in preset.budgets:
                add(k, label, steps, _unlearned_margins(pop, runs, k, label, steps), compute_fraction(a, steps, bs, train_cfg))
    return pd.DataFrame(rows)


def _unlearned_margins(pop: Population, runs: UnlearningRuns, k: str, label: str, steps: int) -> list[dict[str, np.ndarray]]:
    """Per seed, the margins (evaluated examples, per set) after unlearning ``k`` with ``label`` for ``steps``."""
    seeds = list(pop.originals)
    if label == "do nothing":
        return [pop.margins(pop.originals[s]) for s in seeds]
    if label == "DM-Direct":
        return [runs.dm_direct[(k, s)] for s in seeds]
    return [{n: margins_from_logprobs(lp) for n, lp in runs.scores[(label, k, s)][steps].items()} for s in seeds]


def _klom_values(pop: Population, k: str, per_seed: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """KLoM of every evaluated example per group, unlearned models (one per seed) against the oracles of ``k``."""
    oracle = [pop.margins(pop.oracles[s][k]) for s in pop.originals]
    U = pop.groups({n: np.stack([m[n] for m in per_seed]) for n in pop.sets}, k)
    O = pop.groups({n: np.stack([m[n] for m in oracle]) for n in pop.sets}, k)
    return {g: klom.klom(U[g], O[g], pop.preset.bins, pop.preset.floor) for g in GROUPS}


KLOM_CLAIMS = (  # Attribute-to-Delete's findings on KLoM (its blog post and paper), tested by klom_verdicts
    "matching beats every baseline",  # "DMM performs much better than all existing baselines (KLoM score is lower)"
    "baselines are worse than doing nothing",  # "Many existing baselines ... are worse than doing-nothing"
)


def klom_verdicts(pop: Population, runs: UnlearningRuns, steps: int | None = None, level: float = 0.95,
                  n_boot: int = 2000, seed: int = 0) -> pd.DataFrame:
    """Attribute-to-Delete's claims (:data:`KLOM_CLAIMS`) decided by code at budget ``steps`` (default:
    the preset's reporting budget), per group of examples.

    "matching beats every baseline": each matching method (Oracle, Datamodel) against doing nothing and
    every gradient-based variant (each learning rate of gradient ascent and ascent+descent). "baselines
    are worse than doing nothing": each gradient-based variant against doing nothing. ``difference`` is the
    claimed advantage in mean KLoM (comparator minus claimant for "beats", variant minus doing nothing for
    "worse"), over a [forget sets x examples] grid; the CI resamples forget sets and examples
    (:func:`untrac.evaluate.bootstrap_verdict`): holds above 0, fails below, else inconclusive.
    """
    from ..evaluate import bootstrap_verdict

    steps = pop.preset.report_steps if steps is None else steps
    rng = np.random.default_rng(seed)
    labels = ["do nothing", *runs.algorithms]
    grid: dict[str, dict[str, np.ndarray]] = {}
    for label in labels:
        per_k = [_klom_values(pop, k, _unlearned_margins(pop, runs, k, label, steps)) for k in pop.train_names]
        grid[label] = {}
        for g in GROUPS:
            width = max(v[g].size for v in per_k)
            grid[label][g] = np.stack([np.pad(v[g].astype(float), (0, width - v[g].size), constant_values=np.nan)
                                       for v in per_k])
    matching = [l for l in runs.algorithms if runs.algorithms[l] in MATCHING]
    baselines = [l for l in runs.algorithms if runs.algorithms[l] in ("gradient ascent", "ascent+descent")]
    pairs = [(KLOM_CLAIMS[0], m, c, "beats") for m in matching for c in ["do nothing", *baselines]]
    pairs += [(KLOM_CLAIMS[1], c, "do nothing", "worse") for c in baselines]
    rows = []
    for claim, method, comparator, kind in pairs:
        for g in GROUPS:
            a, b = grid[method][g], grid[comparator][g]
            diff = b - a if kind == "beats" else a - b
            rows.append({"family": pop.family, "claim": claim, "method": method, "comparator": comparator, "group": g,
                         "steps": steps, **bootstrap_verdict(diff, rng, level, n_boot)})
    return pd.DataFrame(rows)


def klom_table(frame: pd.DataFrame, steps: int | None = None) -> pd.DataFrame:
    """Wide table: one row per (family, forget, algorithm) at ``steps`` (plus the zero-cost rows),
    columns ``<group>_p50 / _p95 / _p99``."""
    sel = frame if steps is None else frame[(frame["steps"] == steps) | (frame["steps"] == 0)]
    wide = sel.pivot_table(index=["family", "forget", "algorithm", "steps", "fraction"], columns="group",
                           values=["p50", "p95", "p99"], sort=False)
    wide.columns = [f"{g}_{p}" for p, g in wide.columns]
    cols = [f"{g}_{p}" for g in GROUPS for p in ("p50", "p95", "p99") if f"{g}_{p}" in wide.columns]
    order = {a: i for i, a in enumerate(dict.fromkeys(frame["algorithm"]))}  # the frame's (insertion) order
    out = wide[cols].reset_index()
    return out.sort_values(["family", "forget", "algorithm"], key=lambda c: c.map(order) if c.name == "algorithm" else c,
                           kind="stable").reset_index(drop=True)


def klom_noise_floor(preset: UnlearningPreset) -> dict[str, float]:
    """KLoM percentiles of a perfect unlearner at this preset's number of seeds and bins (:func:`untrac.unlearn.klom.noise_floor`)."""
    return klom.noise_floor(len(preset.seeds), preset.bins, preset.floor)


def untrac_comparison(pop: Population, runs: UnlearningRuns) -> pd.DataFrame:
    """UnTrac's attribution with each unlearner in place of gradient ascent, against the ground truth.

    For seed ``s``, algorithm ``a`` and budget ``b``: influence of training set ``k`` =
    L(test, unlearned) - L(test, original) (Eq. 2), correlated across the K training sets with
    the leave-dataset-out truth L(test, oracle_{s,k}) - L(test, original_s) (Eq. 1). The row
    "ground truth (other seed)" correlates seed ``s``'s truth with every other seed's: the ceiling
    set by training noise.
    """

    names, tests = pop.train_names, list(pop.test_sets)
    test_idx = {n: pop.eval_index[n] for n in tests}
    counts = {n: pop.scores[pop.originals[next(iter(pop.originals))].key][n][1][test_idx[n]] for n in tests}

    def loss(lp_by_set: Mapping[str, np.ndarray]) -> np.ndarray:
        return np.array([float(np.mean(-lp_by_set[n] / counts[n])) for n in tests])

    def full(t: Trained) -> dict[str, np.ndarray]:
        return {n: pop.scores[t.key][n][0][test_idx[n]] for n in tests}

    truth = {}
    for s, orig in pop.originals.items():
        base = loss(full(orig))
        truth[s] = Influence("Ground truth", names, tests, np.stack([loss(full(pop.oracles[s][k])) - base for k in names]))
    rows = []
    train_cfg = pop.preset.synthetic.train
    for s, orig in pop.originals.items():
        base = loss(full(orig))
        for label, a in runs.algorithms.items():
            bs = runs.configs[label].batch_size
            for steps in pop.preset.budgets:
                values = np.stack([loss(runs.scores[(label, k, s)][steps]) - base for k in names])
                inf = Influence(f"UnTrac ({label})", names, tests, values)
                rows.append({"family": pop.family, "seed": s, "method": f"UnTrac ({label})", "steps": steps,
                             "fraction": compute_fraction(a, steps, bs, train_cfg),
                             "pearson": correlation(inf, truth[s], "pearson"),
                             "spearman": correlation(inf, truth[s], "spearman")})
        others = [t for ss, t in truth.items() if ss != s]
        if others:
            rows.append({"family": pop.family, "seed": s, "method": "ground truth (other seed)", "steps": 0,
                         "fraction": 1.0,
                         "pearson": float(np.nanmean([correlation(t, truth[s], "pearson") for t in others])),
                         "spearman": float(np.nanmean([correlation(t, truth[s], "spearman") for t in others]))})
    return pd.DataFrame(rows)


def klom_overview(frame: pd.DataFrame) -> pd.DataFrame:
    """KLoM percentiles averaged over forget sets (and families), per algorithm, budget and group:
    the numbers of the KLoM-against-compute figure."""
    g = frame.groupby(["algorithm", "steps", "fraction", "group"], sort=False)[["p50", "p95", "p99"]].mean().reset_index()
    wide = g.pivot_table(index=["algorithm", "steps", "fraction"], columns="group", values=["p50", "p95", "p99"], sort=False)
    wide.columns = [f"{grp}_{p}" for p, grp in wide.columns]
    cols = [f"{grp}_{p}" for grp in GROUPS for p in ("p50", "p95", "p99") if f"{grp}_{p}" in wide.columns]
    return wide[cols].reset_index()


@dataclass
class Study:
    """Notebook 04's whole computation for every family of a preset (see :func:`study`)."""

    preset: UnlearningPreset
    populations: dict[str, Population]
    datamodels: dict[str, Datamodel]
    runs: dict[str, UnlearningRuns]

    def klom_frame(self) -> pd.DataFrame:
        return pd.concat([klom_frame(self.populations[f], self.runs[f]) for f in self.populations], ignore_index=True)

    def datamodel_quality(self) -> pd.DataFrame:
        return pd.concat([datamodel_quality(self.populations[f], self.datamodels[f]) for f in self.populations],
                         ignore_index=True)

    def untrac_comparison(self) -> pd.DataFrame:
        return pd.concat([untrac_comparison(self.populations[f], self.runs[f]) for f in self.populations],
                         ignore_index=True)

    def noise_floor(self) -> dict[str, float]:
        return klom_noise_floor(self.preset)

    def klom_verdicts(self) -> pd.DataFrame:
        return pd.concat([klom_verdicts(self.populations[f], self.runs[f]) for f in self.populations], ignore_index=True)

    def models_trained(self) -> pd.DataFrame:
        """What the study trained, per family: originals, oracles, subset models, and their cost."""
        rows = []
        for f, pop in self.populations.items():
            kinds = {"original": list(pop.originals.values()),
                     "oracle": [t for o in pop.oracles.values() for t in o.values()],
                     "datamodel subset": [t for _, t in pop.subset_models]}
            for kind, models in kinds.items():
                rows.append({"family": f, "kind": kind, "models": len(models),
                             "train_seconds": float(sum(t.log.get("seconds", 0.0) for t in models))})
        return pd.DataFrame(rows)


def study(preset: UnlearningPreset, algorithms: Sequence[str] = ALGORITHMS[1:], progress: bool = True) -> Study:
    """Populations, datamodels and unlearning runs of every family (all cached)."""
    pops, dms, runs = {}, {}, {}
    for f in preset.families:
        pops[f] = population(preset, f, progress)
        dms[f] = fit_population_datamodel(pops[f])
        runs[f] = unlearning_runs(pops[f], dms[f], algorithms, progress)
    return Study(preset, pops, dms, runs)


__all__ = [
    "GROUPS", "KLOM_CLAIMS", "Population", "Study", "UnlearningRuns", "build_population", "datamodel_quality",
    "fit_population_datamodel", "klom_frame", "klom_noise_floor", "klom_overview", "klom_table", "klom_verdicts",
    "population",
    "study", "unlearning_runs", "untrac_comparison",
]
