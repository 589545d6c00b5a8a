"""Section 5.2 as cached functions: which pretraining corpus made the model toxic, biased, untruthful?

The pipeline of notebook ``02_pretraining_corpora`` (and the models notebook ``03`` re-uses):

1. :func:`corpora_setting` — one call per setting (``"equal"`` or ``"different"`` corpus sizes):
   the project tokenizer, the eight corpora packed into blocks, the three test sets split into
   their subsets, the base model theta_0 (with checkpoints for TracIn), the eight
   leave-one-corpus-out counterfactuals trained for the same number of steps, their ground truth
   (Eq. 1), and optionally the classic variant (Appendix A.1). Everything is cached.
2. :func:`corpora_run` — one run: sample ``sample_blocks`` blocks of every corpus (seed = run) and
   attribute with every method; all test subsets of all test sets in one call, so one unlearning
   of a corpus (UnTrac) or one Hessian (HIF Arnoldi) serves all of them.
3. :func:`corpora_experiment` — every setting and run; :func:`correlation_frame` turns it into
   the rows of Tables 3 (Pearson) and 5 (Spearman).
4. :func:`noise_floor` — is the ground truth above the seed-to-seed noise of training?
   :func:`ground_truth_variants` — Figure 4; :func:`influence_frame`, :func:`cost_frame` — the
   per-corpus influence and cost figures.

Test subsets are named ``"<testset>/<subset>"`` (``"toxigen/asian"``); :func:`select_testset`
keeps one test set's columns of an :class:`Influence`.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd
import torch
from datasets import Dataset
from torch import nn

from .. import cache
from ..data.batching import encode, quiet_maps
from ..data.corpora import CORPUS_NAMES, corpus_seed, different_sizes, pretraining_mixture, sample_rows
from ..data.mirror import mirror_fingerprint
from ..data.testsets import load_testset
from ..evaluate import correlation_frame, influence_frame, seed_noise, select_testset, testsets_of
from ..evaluate import cost_frame as evaluate_cost_frame
from ..methods import METHODS, Influence
from ..methods import get as get_method
from ..models import build_model
from ..presets import CorporaPreset
from ..progress import bar
from ..parallel import prefetch
from ..training import Trained, fit, leave_dataset_out, leave_dataset_out_calls
from ..truth import CEILING, NAME as TRUTH, cached_ground_truth, ceiling, heldout_truth, mean_truth
from .setup import attribution_call, cached_attribute, method_config, project_tokenizer

SETTINGS = ("equal", "different")


# ----------------------------------------------------------------------------------------------
# Data
# ----------------------------------------------------------------------------------------------


def resolve_device(name: str) -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; any other name as ``torch.device``."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def corpus_blocks(preset: CorporaPreset, setting: str) -> dict[str, int]:
    """Blocks per corpus: ``blocks_per_corpus`` each (equal), or the same total split 30/20/15/10/10/5/5/5 %."""
    if setting == "equal":
        return {name: preset.blocks_per_corpus for name in CORPUS_NAMES}
    if setting == "different":
        return different_sizes(preset.blocks_per_corpus * len(CORPUS_NAMES))
    raise ValueError(f"unknown setting {setting!r}; choose from {SETTINGS}")


def training_sets(preset: CorporaPreset, setting: str, tokenizer: Any) -> dict[str, Dataset]:
    """The eight corpora as encoded blocks (``input_ids``, ``labels`` = ``input_ids``, ``subset``)."""
    with quiet_maps():
        blocks = pretraining_mixture(tokenizer, preset.block_size, corpus_blocks(preset, setting), seed=0,
                                     max_docs=preset.max_docs)
        return {name: encode(ds, tokenizer) for name, ds in blocks.items()}


def test_sets(preset: CorporaPreset, tokenizer: Any) -> dict[str, Dataset]:
    """Every subset of every test set, encoded, keyed ``"<testset>/<subset>"`` (paper order of subsets)."""
    out: dict[str, Dataset] = {}
    with quiet_maps():
        for name in preset.testsets:
            raw = load_testset(name, max_per_subset=preset.test_examples, seed=0)
            enc = encode(raw, tokenizer, max_length=preset.model.max_positions if preset.model.name is None else None)
            subsets = np.array(enc["subset"])
            for subset in dict.fromkeys(subsets.tolist()):
                out[f"{name}/{subset}"] = enc.select(np.flatnonzero(subsets == subset))
    return out


def select_tests(tests: Mapping[str, Dataset], testset: str) -> dict[str, Dataset]:
    """The subsets of one test set (keys ``"<testset>/..."``)."""
    out = {k: v for k, v in tests.items() if k.split("/", 1)[0] == testset}
    if not out:
        raise ValueError(f"no subsets of test set {testset!r} in {sorted({k.split('/', 1)[0] for k in tests})}")
    return out


def sample_blocks(train_sets: Mapping[str, Dataset], n: int, run: int) -> dict[str, Dataset]:
    """Run ``run``'s sample of ``n`` training blocks per corpus (all of a smaller corpus)."""
    return {name: sample_rows(ds, min(n, len(ds)), seed=corpus_seed(run, name)) for name, ds in train_sets.items()}


# ----------------------------------------------------------------------------------------------
# Models
# ----------------------------------------------------------------------------------------------


def train_model(init: nn.Module, train_sets: Mapping[str, Dataset], preset: CorporaPreset, pad_id: int,
                exclude: str | None = None, variant: str = "fixed", seed: int = 0, progress: bool = True) -> Trained:
    """theta_0 (``exclude=None``) or theta_{-k}: ``preset.train``, then ``preset.anneal`` if set
    (:func:`untrac.training.fit`); ``seed`` shifts both phases' data-order seeds."""
    return fit(init, train_sets, preset.train, pad_id, anneal=preset.anneal, exclude=exclude, variant=variant, seed=seed,
               progress=progress)


@dataclass
class CorporaSetting:
    """Everything one setting (equal or different sizes) needs: data, models and ground truth.

    ``tests`` holds every test subset (``"toxigen/asian"``, ...). Per training seed of the preset:
    ``bases[seed]`` (theta_0), ``counterfactuals_by_seed[seed]`` (every theta_{-k}) and
    ``truths[seed]``, the fixed-step leave-dataset-out influence between them (Eq. 1). ``truth`` is
    their mean; :meth:`heldout_truth` the mean of the *other* seeds' (what a run on one seed's model
    is scored against). ``base`` / ``counterfactuals`` are the first seed's models (the ones notebook 03,
    the blame table and the per-example check use); ``classic_truth`` (Appendix A.1) is the first seed's.
    """

    preset: CorporaPreset
    setting: str
    tokenizer: Any
    train_sets: dict[str, Dataset]
    tests: dict[str, Dataset]
    bases: dict[int, Trained]
    counterfactuals_by_seed: dict[int, dict[str, Trained]]
    truths: dict[int, Influence]
    classic: dict[str, Trained] | None = None
    classic_truth: Influence | None = None

    @property
    def pad_id(self) -> int:
        return self.tokenizer.pad_token_id

    @property
    def seeds(self) -> list[int]:
        return list(self.bases)

    @property
    def base(self) -> Trained:
        return self.bases[self.seeds[0]]

    @property
    def counterfactuals(self) -> dict[str, Trained]:
        return self.counterfactuals_by_seed[self.seeds[0]]

    @property
    def truth(self) -> Influence:
        """The ground truth averaged over every training seed."""
        return mean_truth(list(self.truths.values()))

    def run_seed(self, run: int) -> int:
        """The training seed whose base model run ``run`` attributes on (the seeds in turn)."""
        return self.seeds[run % len(self.seeds)]

    def heldout_truth(self, seed: int) -> Influence:
        """The truth a method run on seed ``seed``'s model is scored against: the mean over the other
        seeds (so it shares no training noise with that model), or the seed's own with one seed."""
        return heldout_truth(self.truths, seed)

    def sample(self, run: int) -> dict[str, Dataset]:
        """The training blocks run ``run`` estimates influence from (``preset.sample_blocks`` per corpus)."""
        return sample_blocks(self.train_sets, self.preset.sample_blocks, run)

    def testset(self, name: str) -> dict[str, Dataset]:
        """The subsets of one test set, e.g. ``setting.testset("toxigen")``."""
        return select_tests(self.tests, name)

    def truth_for(self, testset: str, variant: str = "fixed", seed: int | None = None) -> Influence:
        """The ground truth restricted to one test set: the mean over seeds, or with ``seed`` the truth
        a run on that seed's model is scored against (:meth:`heldout_truth`); ``variant="classic"``:
        Appendix A.1's (first seed only)."""
        if variant == "classic":
            if self.classic_truth is None:
                raise ValueError(f"the 'classic' ground truth was not computed for the {self.setting!r} setting")
            return select_testset(self.classic_truth, testset)
        if variant != "fixed":
            raise ValueError(f"unknown variant {variant!r}; choose 'fixed' or 'classic'")
        return select_testset(self.truth if seed is None else self.heldout_truth(seed), testset)


def initial_model(preset: CorporaPreset, tokenizer: Any, seed: int = 0) -> nn.Module:
    """The random initialisation every model of training seed ``seed`` starts from, on the preset's device."""
    return build_model(preset.model, tokenizer, seed=seed).to(resolve_device(preset.device))


_LOADED: dict[str, CorporaSetting] = {}


def corpora_setting(preset: CorporaPreset, setting: str = "equal", classic: bool | None = None,
                    progress: bool = True) -> CorporaSetting:
    """Data, base models, leave-one-corpus-out counterfactuals and ground truths of one setting (cached).

    Every training seed of ``preset.seeds`` (initialisation and data order) gets its own base model
    and counterfactuals; all of them train in parallel worker processes. ``classic`` (default:
    ``preset.classic`` in the ``different`` setting only) also trains the classic variant for the
    first seed, whose counterfactuals see every remaining block once as often as the base model sees
    the whole mixture (fewer steps). Notebook 03 calls this for the models and data of its sweeps:
    ``s = corpora_setting(preset, "equal")``; ``s.base.model``, ``s.sample(run)``,
    ``s.testset("toxigen")``, ``s.truth_for("toxigen", seed=s.seeds[0])``.
    """
    memo = cache.fingerprint(cache.cache_root().as_posix(), mirror_fingerprint(), preset, setting)
    out = _LOADED.get(memo)
    want_classic = classic if classic is not None else (preset.classic and setting == "different")
    if out is None:
        tokenizer = project_tokenizer(preset.model, preset.tokenizer)
        pad = tokenizer.pad_token_id
        train_sets = training_sets(preset, setting, tokenizer)
        tests = test_sets(preset, tokenizer)
        inits = {seed: initial_model(preset, tokenizer, seed) for seed in preset.seeds}
        calls = [c for seed, init in inits.items()
                 for c in leave_dataset_out_calls(init, train_sets, preset.train, pad, anneal=preset.anneal, seed=seed)]
        if want_classic:
            calls += _classic_calls(inits[preset.seeds[0]], train_sets, preset, pad)
        prefetch(calls, progress=progress, desc=f"{setting} sizes: models")
        bases, counterfactuals = {}, {}
        for seed, init in inits.items():
            bases[seed], counterfactuals[seed] = leave_dataset_out(init, train_sets, preset.train, pad,
                                                                   anneal=preset.anneal, seed=seed, progress=progress)
        # each seed's truth evaluates its 9 models on every test subset: in parallel too
        prefetch([(cached_ground_truth, (bases[s], counterfactuals[s], tests, pad), {}) for s in inits
                  if not cached_ground_truth.is_cached(bases[s], counterfactuals[s], tests, pad)],
                 progress=progress, desc=f"{setting} sizes: ground truths")
        truths = {seed: cached_ground_truth(bases[seed], counterfactuals[seed], tests, pad) for seed in inits}
        out = _LOADED[memo] = CorporaSetting(preset, setting, tokenizer, train_sets, tests, bases, counterfactuals, truths)
    if want_classic and out.classic is None:
        init = initial_model(preset, out.tokenizer, out.seeds[0])
        train_sets, pad = out.train_sets, out.pad_id
        prefetch(_classic_calls(init, train_sets, preset, pad), progress=progress, desc="classic models")
        out.classic = {k: train_model(init, train_sets, preset, pad, exclude=k, variant="classic", seed=out.seeds[0],
                                      progress=progress) for k in train_sets}
        out.classic_truth = cached_ground_truth(out.base, out.classic, out.tests, pad, name="Ground truth (classic)")
    return out


def _classic_calls(init: nn.Module, train_sets: Mapping[str, Dataset], preset: CorporaPreset, pad: int) -> list:
    """The untrained classic counterfactuals of the first seed (its base model is the fixed variant's)."""
    calls = leave_dataset_out_calls(init, train_sets, preset.train, pad, "classic", anneal=preset.anneal,
                                    seed=preset.seeds[0])
    return [c for c in calls if c[2]["exclude"] is not None]


# ----------------------------------------------------------------------------------------------
# Attribution
# ----------------------------------------------------------------------------------------------


def corpora_run(setting: CorporaSetting, run: int, methods: Sequence[str] = METHODS,
                progress: bool = True) -> dict[str, Influence]:
    """One run: ``{"Ground truth": ..., method: ..., [CEILING: ...]}`` over every test subset (cached per method).

    Run ``run`` attributes on the base model of training seed :meth:`CorporaSetting.run_seed`
    (TracIn also its checkpoints) with run ``run``'s sample of training blocks
    (:meth:`CorporaSetting.sample`); its ground truth is the other seeds' (:meth:`CorporaSetting.heldout_truth`)
    and, with two or more seeds, its ceiling row is the run's own seed's exact truth, scored the same way.
    """
    for method in methods:
        get_method(method)  # a clear error for an unknown name
    sample, seed = setting.sample(run), setting.run_seed(run)
    out = {TRUTH: setting.heldout_truth(seed)}
    for method in methods:
        out[method] = cached_attribute(method, setting.bases[seed], sample, setting.tests, setting.pad_id,
                                       progress=progress, config=method_config(setting.preset, method, run))
    if (row := ceiling(setting.truths, seed)) is not None:
        out[CEILING] = row
    return out


def corpora_experiment(preset: CorporaPreset, methods: Sequence[str] = METHODS, progress: bool = True,
                       settings: Sequence[str] | None = None) -> dict[str, list[dict[str, Influence]]]:
    """Every setting and run: ``{setting: [run results]}`` (see :func:`corpora_run`); the
    attributions of all runs are computed in parallel worker processes first."""
    out = {}
    for name in settings or preset.settings:
        setting = corpora_setting(preset, name, progress=progress)
        calls = [c for r in range(preset.runs) for m in methods
                 for c in attribution_call(m, setting.bases[setting.run_seed(r)], setting.sample(r), setting.tests, setting.pad_id,
                                           method_config(preset, m, r))]
        prefetch(calls, progress=progress, desc=f"{name} sizes: attributions")
        out[name] = [corpora_run(setting, r, methods, progress)
                     for r in bar(range(preset.runs), desc=f"{name} sizes", enabled=progress)]
    return out


# ----------------------------------------------------------------------------------------------
# Evaluation frames (the rows of the tables and figures)
# ----------------------------------------------------------------------------------------------


def cost_frame(results: Mapping[str, Sequence[Mapping[str, Influence]]]) -> pd.DataFrame:
    """What every method spent per setting and run (:func:`untrac.evaluate.cost_frame`, truth left out)."""
    return evaluate_cost_frame(results, group="setting", exclude=(TRUTH, CEILING))


def cost_accuracy_frame(results: Mapping[str, Sequence[Mapping[str, Influence]]]) -> pd.DataFrame:
    """Per (setting, method): mean seconds per run and mean Pearson/Spearman over test sets and runs."""
    corr = correlation_frame(results).groupby(["setting", "method"], sort=False)[["pearson", "spearman"]].mean()
    cost = cost_frame(results).groupby(["setting", "method"], sort=False)[["seconds"]].mean()
    return cost.join(corr).reset_index()


def ground_truth_variants(setting: CorporaSetting, testset: str = "toxigen") -> pd.DataFrame:
    """Figure 4: leave-dataset-out influence per corpus and test subset, classic and fixed-step variants.

    One row per (variant, corpus, subset) with the corpus' share of the training blocks.
    """
    total = sum(len(ds) for ds in setting.train_sets.values())
    rows = []
    for variant, label in (("classic", "classic: all other examples"), ("fixed", "fixed: same number of steps")):
        # both variants of the first seed's models (the classic one is trained for that seed only)
        truth = setting.truth_for(testset, "classic") if variant == "classic" else \
            select_testset(setting.truths[setting.seeds[0]], testset)
        for k, corpus in enumerate(truth.train_names):
            share = len(setting.train_sets[corpus]) / total
            rows += [{"variant": label, "corpus": corpus, "share": share, "subset": s.split("/", 1)[1],
                      "influence": v} for s, v in zip(truth.test_names, truth.values[k])]
    return pd.DataFrame(rows)


def noise_floor(preset: CorporaPreset, setting: str = "equal", progress: bool = True) -> pd.DataFrame:
    """Is the ground truth above its noise? Per test set, the truth's spread across corpora against
    how much it moves from one training seed to another (needs two or more ``preset.seeds``): the
    columns of :func:`untrac.evaluate.seed_noise` (``corpus_spread`` its ``spread``, ``subsets_above``
    its ``above``, ``seed_agreement`` its ``agreement``, the ceiling), averaged over the test set's
    subsets, and the corpus with the largest mean influence (``top_corpus`` / ``top_influence``).
    """
    s = corpora_setting(preset, setting, classic=False, progress=progress)
    truths, truth = [s.truths[seed] for seed in s.seeds], s.truth
    names = {"spread": "corpus_spread", "above": "subsets_above", "agreement": "seed_agreement",
             "spread_corrected": "corpus_spread_corrected"}
    rows = []
    for testset in testsets_of(truth):
        cols = [i for i, name in enumerate(truth.test_names) if name.split("/", 1)[0] == testset]
        mean_inf = truth.values[:, cols].mean(1)
        top = int(np.argmax(mean_inf))
        noise = {names.get(k, k): v for k, v in seed_noise(truths, cols).items()}
        rows.append({"setting": setting, "testset": testset, "subsets": len(cols), **noise,
                     "top_corpus": truth.train_names[top], "top_influence": float(mean_inf[top])})
    return pd.DataFrame(rows)


BLAME_METHODS = ("UnTrac-Inv", "GradDot", "TracIn", "EK-FAC", "TRAK")  # the installed ones by default


def blame(setting: CorporaSetting, test_subset: str, index: int, run: int = 0, methods: Sequence[str] | None = None,
          k: int = 3, progress: bool = False) -> pd.DataFrame:
    """Which training passages does each method blame for one test example?

    The example ``index`` of ``test_subset`` (e.g. ``"toxigen/asian"``) is the whole test set; each
    method scores every training block of run ``run``'s sample (``per_example=True``, cached like
    every attribution) and the ``k`` highest-scoring blocks are returned with their text:
    one row per (method, rank) with the corpus, the block's index, its score and its text.
    """
    ds = setting.tests[test_subset]
    if not 0 <= index < len(ds):
        raise ValueError(f"index {index} is outside {test_subset!r} ({len(ds)} examples)")
    one = {test_subset: ds.select([index])}
    sample = setting.sample(run)
    rows = []
    for method in [m for m in BLAME_METHODS if m in METHODS] if methods is None else methods:
        config = replace(method_config(setting.preset, method, run), per_example=True)
        inf = cached_attribute(method, setting.base, sample, one, setting.pad_id, progress=progress, config=config)
        top = inf.top_examples(test_subset, k, train_sets=sample, tokenizer=setting.tokenizer)
        rows.append(top.assign(method=method, rank=range(1, len(top) + 1)))
    out = pd.concat(rows, ignore_index=True).rename(columns={"train": "corpus", "index": "block"})
    return out[["method", "rank", "corpus", "block", "score", "text"]]


def test_example_text(setting: CorporaSetting, test_subset: str, index: int) -> str:
    """The text of one test example (prompt and answer, decoded)."""
    return setting.tokenizer.decode(setting.tests[test_subset][index]["input_ids"], skip_special_tokens=True)


def mixture_table(preset: CorporaPreset) -> pd.DataFrame:
    """The mixture: per corpus its stand-in (mirror) and its blocks in both settings."""
    from ..data.corpora import CORPORA

    equal, different = corpus_blocks(preset, "equal"), corpus_blocks(preset, "different")
    return pd.DataFrame([{"corpus": name, "mirror stand-in": CORPORA[name].stand_in, "equal": equal[name],
                          "different": different[name]} for name in CORPUS_NAMES])


def run_record(preset: CorporaPreset, results: Mapping[str, Sequence[Mapping[str, Influence]]],
               started: float | None = None) -> pd.DataFrame:
    """What the experiment cost: training and attribution seconds (summed from the cached logs, so
    they count work done in earlier executions too), this execution's wall time and peak memory."""
    import resource
    import time

    train_s = float(training_summary(preset)["seconds"].fillna(0).sum())
    attrib = cost_frame(results)
    rows = {"training seconds (all models, summed)": train_s,
            "attribution seconds (all methods and runs, summed)": float(attrib["seconds"].sum()),
            "peak attribution memory (MB)": float(attrib["peak_memory_mb"].max()),
            "peak RSS of this process (MB)": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "torch threads": torch.get_num_threads()}
    if started is not None:
        rows["wall seconds (this execution)"] = time.perf_counter() - started
    return pd.DataFrame({"quantity": list(rows), "value": list(rows.values())})


def training_summary(preset: CorporaPreset, progress: bool = False) -> pd.DataFrame:
    """Per setting, training seed and model: steps, final training loss and training seconds (from the cache logs)."""
    rows = []
    for name in preset.settings:
        s = corpora_setting(preset, name, progress=progress)
        for seed in s.seeds:
            models = {"base": s.bases[seed], **{f"-{k}": t for k, t in s.counterfactuals_by_seed[seed].items()},
                      **{f"-{k} (classic)": t for k, t in (s.classic or {}).items() if seed == s.seeds[0]}}
            for label, t in models.items():
                loss = t.log.get("loss") or [(0, float("nan"))]
                rows.append({"setting": name, "seed": seed, "model": label, "steps": t.log.get("steps"),
                             "final_train_loss": loss[-1][1], "seconds": t.log.get("seconds")})
    return pd.DataFrame(rows)


__all__ = [
    "BLAME_METHODS", "SETTINGS", "TRUTH", "CorporaSetting", "blame", "test_example_text", "corpora_experiment", "corpora_run", "corpora_setting", "corpus_blocks",
    "correlation_frame", "cost_accuracy_frame", "cost_frame", "ground_truth_variants", "influence_frame",
    "initial_model", "mixture_table", "run_record", "noise_floor", "resolve_device", "sample_blocks",
    "select_tests", "select_testset", "test_sets", "train_model", "training_sets", "training_summary",
]
