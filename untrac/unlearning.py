"""How well does unlearning a training dataset match retraining without it? (SPEC section 5)

The leave-dataset-out counterfactuals of the UnTrac ground truth are the *oracles* of unlearning
evaluation (Attribute-to-Delete): a model retrained without the forget set. This module provides

* **margins** of sequence examples — the log-odds of the whole target answer,
  ``m = log p(y|x) - log(1 - p(y|x))`` with ``log p(y|x) = sum_t log p(y_t | x, y_<t)`` over the
  target tokens (``labels != -100``). It generalises the classifier margin ``logit_y -
  logsumexp(other logits)``: for a classifier the "answer" is one token and ``log(1 - p_y) =
  logsumexp(other) - logsumexp(all)``, so the two coincide. The margin is computed from the
  *sum* (not the mean) of target log-probabilities, in float64, with a stable
  ``log(1 - exp(lp))`` (:func:`log1mexp`); ``lp`` is capped at ``-1e-15`` so a saturated answer
  gets margin 34.5 rather than infinity;
* **unlearning algorithms** behind one interface, :func:`unlearn` (``ALGORITHMS``): do nothing;
  gradient ascent on the forget set (UnTrac's unlearning, Eq. 3); ascent on the forget set plus
  descent on the retained data; **Oracle Matching** (fine-tune on the forget set plus a small
  retain sample so that the model's margins match an oracle's, MSE on margins); **Datamodel
  Matching** (the same fine-tuning, to margins predicted by a linear datamodel);
* **datamodels** (:func:`fit_datamodel`): per example, a linear model of its margin on the 0/1
  indicator of which training datasets a model saw, fitted over models trained on subsets of
  the training datasets;
* the **experiment** of notebook 04 on the synthetic tasks (Sec. 5.1), cached like everything
  else and sharing notebook 01's tokenizer, base model and fine-tuned models:
  :func:`population` (originals, oracles and subset-trained models over seeds),
  :func:`fit_population_datamodel`, :func:`unlearning_runs`, :func:`klom_frame` (KLoM from
  :mod:`untrac.klom`), :func:`untrac_comparison`.

Choices (documented here once):

* **Matching loss**: both matching algorithms minimise the mean squared error between the
  model's margins and the target margins on the matched examples (the forget set plus
  ``retain_sample`` retained examples, A2D's recipe). Matching margins — the quantity KLoM
  measures — lets Oracle and Datamodel Matching differ *only* in where their targets come from.
* **Datamodel Matching targets** are the original model's own margins minus the datamodel's
  coefficient of the forget set (the predicted effect of having trained on it), i.e. A2D's
  "original output minus the forget set's attribution"; the seed-specific part of the original
  model's margin is kept.
* **Compute** is a fraction of the cost of retraining: examples through a forward+backward pass
  during unlearning (steps x batch, x2 for ascent+descent), over those of the training run
  (steps x batch). The targets' cost is not counted: an oracle is a cheat, and the subset-trained
  models of a datamodel are an up-front cost shared by every forget set (reported separately).
"""
from __future__ import annotations

import copy
import itertools
import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd
import torch
from datasets import Dataset, concatenate_datasets
from torch import nn
from tqdm.auto import tqdm

from . import cache, klom as klom_lib
from .data.batching import IGNORE, batches, check_nonempty, collate, epoch_stream
from .methods.untrac import UnlearningDiverged
from .models import example_losses, is_encoder_decoder
from .presets import PRESETS, SYNTHETIC, SyntheticPreset
from .presets import preset as get_preset
from .training import TrainConfig, Trained, make_optimizer, train

ALGORITHMS = ("do nothing", "gradient ascent", "ascent+descent", "oracle matching", "datamodel matching")
MATCHING = ("oracle matching", "datamodel matching")
PASSES = {"do nothing": 0, "gradient ascent": 1, "ascent+descent": 2, "oracle matching": 1, "datamodel matching": 1}
MAX_LOGPROB = -1e-15  # log p(y|x) is capped here: margins saturate at -log(1e-15) = 34.5
GROUPS = ("forget", "retain", "validation")


# ----------------------------------------------------------------------------- margins

def log1mexp(x: torch.Tensor) -> torch.Tensor:
    """``log(1 - exp(x))`` for ``x <= 0``, stable at both ends (Maechler's two-branch rule).

    ``log(-expm1(x))`` for ``x > -log 2`` and ``log1p(-exp(x))`` below; each branch is fed
    inputs clamped to its own range, so no branch produces inf/NaN gradients.
    """
    if (x > 0).any():
        raise ValueError("log1mexp needs x <= 0")
    cut = -math.log(2.0)
    near = torch.log(-torch.expm1(torch.clamp(x, min=cut)))
    far = torch.log1p(-torch.exp(torch.clamp(x, max=cut)))
    return torch.where(x > cut, near, far)


def margin_from_logprob(logprob: torch.Tensor) -> torch.Tensor:
    """The log-odds ``lp - log(1 - exp(lp))`` of a sequence log-probability (capped, see module doc)."""
    lp = torch.clamp(logprob, max=MAX_LOGPROB)
    return lp - log1mexp(lp)


def _target_logits(model: nn.Module, batch: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    device = next(model.parameters()).device
    ids = batch["input_ids"].to(device)
    mask = batch["attention_mask"].to(device)
    labels = batch["labels"].to(device)
    if is_encoder_decoder(model):
        return model(input_ids=ids, attention_mask=mask, labels=labels).logits, labels
    return model(input_ids=ids, attention_mask=mask).logits[:, :-1], labels[:, 1:]


def example_logprobs(model: nn.Module, batch: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per example: ``log p(y|x)`` (sum over target tokens, float64, differentiable) and the token count.

    Same masking and shifting as :func:`untrac.models.example_losses` (whose value is
    ``-logprob / count``), with the log-softmax taken in float64 so answers near certainty keep
    their precision.
    """
    logits, labels = _target_logits(model, batch)
    logp = torch.log_softmax(logits.double(), dim=-1)
    keep = labels != IGNORE
    token_lp = logp.gather(-1, torch.where(keep, labels, 0).unsqueeze(-1)).squeeze(-1)
    counts = keep.sum(1)
    if (counts == 0).any():
        raise ValueError("an example has no target tokens (all labels are -100): nothing to score")
    return (token_lp * keep).sum(1), counts


def sequence_margins(model: nn.Module, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Differentiable margins ``[batch]`` of a collated batch (float64)."""
    return margin_from_logprob(example_logprobs(model, batch)[0])


@torch.no_grad()
def sequence_scores(model: nn.Module, dataset: Dataset, pad_id: int, batch_size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """``(log p(y|x), number of target tokens)`` of every example of an encoded dataset, in order."""
    check_nonempty("scored dataset", dataset)
    was = model.training
    model.eval()
    lps, counts = [], []
    for b in batches(dataset, batch_size, pad_id, is_encoder_decoder(model)):
        lp, n = example_logprobs(model, b)
        lps.append(lp.cpu().numpy())
        counts.append(n.cpu().numpy())
    model.train(was)
    lp = np.concatenate(lps)
    if not np.isfinite(lp).all():
        raise FloatingPointError("a sequence log-probability is not finite")
    return lp, np.concatenate(counts)


def margins_from_logprobs(logprob: np.ndarray) -> np.ndarray:
    """:func:`margin_from_logprob` on a numpy array."""
    return margin_from_logprob(torch.as_tensor(np.asarray(logprob, dtype=np.float64))).numpy()


def margins(model: nn.Module, dataset: Dataset, pad_id: int, batch_size: int = 32) -> np.ndarray:
    """Margin (log-odds of the whole answer) of every example of an encoded dataset, in order."""
    return margins_from_logprobs(sequence_scores(model, dataset, pad_id, batch_size)[0])


# ----------------------------------------------------------------------------- algorithms

@dataclass(frozen=True)
class UnlearningConfig:
    """How to unlearn: optimizer, learning rate, batch size (examples per stream per step), clipping.

    ``retain_sample``: retained examples matched alongside the forget set by the matching
    algorithms. ``seed`` orders the batches and draws the retain sample.
    """

    optimizer: str = "adam"
    lr: float = 5e-4
    batch_size: int = 16
    clip: float | None = None
    retain_sample: int = 64
    seed: int = 0


@dataclass
class MatchTargets:
    """Examples to match (encoded) and their target margins (Oracle / Datamodel Matching)."""

    examples: Dataset
    margins: np.ndarray

    def __post_init__(self) -> None:
        self.margins = np.asarray(self.margins, dtype=np.float64)
        if len(self.examples) != len(self.margins):
            raise ValueError(f"{len(self.examples)} examples but {len(self.margins)} target margins")
        if not np.isfinite(self.margins).all():
            raise ValueError("target margins must be finite")


def retain_pool(train_sets: Mapping[str, Dataset], forget: str) -> Dataset:
    """The retained training data: every training set but ``forget``, concatenated (ids and labels)."""
    if forget not in train_sets:
        raise ValueError(f"unknown forget set {forget!r}; training sets are {sorted(train_sets)}")
    kept = [ds.select_columns(["input_ids", "labels"]) for k, ds in train_sets.items() if k != forget]
    if not kept:
        raise ValueError("nothing is retained")
    return concatenate_datasets(kept)


def retain_sample_indices(n_retain: int, size: int, seed: int) -> np.ndarray:
    """Sorted indices of ``size`` retained examples drawn without replacement (all if fewer)."""
    size = min(size, n_retain)
    return np.sort(np.random.default_rng(seed).choice(n_retain, size, replace=False))


def matched_examples(forget: Dataset, retain: Dataset, retain_idx: Sequence[int]) -> Dataset:
    """The forget set followed by the retained examples at ``retain_idx`` (what matching trains on)."""
    parts = [forget.select_columns(["input_ids", "labels"])]
    if len(retain_idx):
        parts.append(retain.select_columns(["input_ids", "labels"]).select(list(map(int, retain_idx))))
    return concatenate_datasets(parts)


def oracle_targets(oracle: nn.Module, forget: Dataset, retain: Dataset, pad_id: int, retain_sample: int = 64,
                   seed: int = 0) -> MatchTargets:
    """Oracle Matching targets: the oracle's margins on the forget set plus a retain sample."""
    examples = matched_examples(forget, retain, retain_sample_indices(len(retain), retain_sample, seed))
    return MatchTargets(examples, margins(oracle, examples, pad_id))


def _target_stream(targets: MatchTargets, batch_size: int, pad_id: int, encdec: bool, seed: int
                   ) -> Iterator[tuple[dict[str, torch.Tensor], torch.Tensor]]:
    data = targets.examples.select_columns(["input_ids", "labels"])
    n, epoch = len(data), 0
    while True:
        order = np.random.default_rng(seed + epoch).permutation(n)
        for s in range(0, n, batch_size):
            idx = order[s : s + batch_size]
            chunk = data[idx]
            rows = [{"input_ids": a, "labels": b} for a, b in zip(chunk["input_ids"], chunk["labels"])]
            yield collate(rows, pad_id, encdec), torch.as_tensor(targets.margins[idx])
        epoch += 1


def compute_fraction(algorithm: str, steps: int, batch_size: int, train_config: TrainConfig) -> float:
    """Unlearning cost as a fraction of retraining: forward+backward examples over the training run's."""
    if algorithm not in PASSES:
        raise ValueError(f"unknown algorithm {algorithm!r}; choose from {ALGORITHMS}")
    return PASSES[algorithm] * steps * batch_size / (train_config.steps * train_config.batch_size)


def unlearn_trajectory(
    algorithm: str,
    model: nn.Module,
    forget: Dataset,
    retain: Dataset | None,
    budgets: Sequence[int],
    pad_id: int,
    config: UnlearningConfig = UnlearningConfig(),
    targets: MatchTargets | None = None,
    progress: bool = False,
) -> Iterator[tuple[int, nn.Module]]:
    """Unlearn a working copy of ``model``, yielding ``(steps, model)`` at every budget (in steps).

    The yielded model is the working copy, which later steps keep modifying: evaluate it (or copy
    it) before advancing. With a constant learning rate, the model yielded at budget ``b`` is
    exactly the model of a ``b``-step run. ``model`` is never modified.
    """
    if algorithm not in ALGORITHMS:
        raise ValueError(f"unknown algorithm {algorithm!r}; choose from {ALGORITHMS}")
    budgets = sorted({int(b) for b in budgets})
    if not budgets or budgets[0] < 0:
        raise ValueError(f"budgets must be non-negative step counts, got {budgets}")
    check_nonempty("forget set", forget)
    if algorithm == "ascent+descent" and (retain is None or len(retain) == 0):
        raise ValueError("ascent+descent needs retained data")
    if algorithm in MATCHING and targets is None:
        raise ValueError(f"{algorithm} needs targets (oracle_targets / datamodel targets)")
    work = copy.deepcopy(model)
    encdec = is_encoder_decoder(work)
    if algorithm == "do nothing":
        for b in budgets:
            yield b, work.eval()
        return
    optimizer = make_optimizer(config.optimizer, work.parameters(), config.lr)
    bs = config.batch_size
    if algorithm in MATCHING:
        stream = _target_stream(targets, bs, pad_id, encdec, config.seed)
    else:
        forget_stream = epoch_stream(forget, bs, pad_id, encdec, config.seed)
        retain_stream = epoch_stream(retain, bs, pad_id, encdec, config.seed + 1) if algorithm == "ascent+descent" else None
    step = 0
    work.train()
    bar = tqdm(total=budgets[-1], disable=not progress, desc=algorithm, leave=False)
    for b in budgets:
        while step < b:
            if algorithm in MATCHING:
                batch, target = next(stream)
                loss = (sequence_margins(work, batch) - target.to(next(work.parameters()).device)).pow(2).mean()
            else:
                loss = -example_losses(work, next(forget_stream)).mean()  # ascent: maximise the forget loss
                if retain_stream is not None:
                    loss = loss + example_losses(work, next(retain_stream)).mean()
            if not torch.isfinite(loss):
                raise UnlearningDiverged(f"{algorithm}: loss became non-finite at step {step + 1} (lr {config.lr})")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if config.clip is not None:
                torch.nn.utils.clip_grad_norm_(work.parameters(), config.clip)
            optimizer.step()
            step += 1
            bar.update(1)
        work.eval()
        yield b, work
        work.train()
    bar.close()
    work.eval()


def unlearn(
    algorithm: str,
    model: nn.Module,
    forget: Dataset,
    retain: Dataset | None,
    steps: int,
    pad_id: int,
    config: UnlearningConfig = UnlearningConfig(),
    targets: MatchTargets | None = None,
    progress: bool = False,
) -> nn.Module:
    """Unlearn ``forget`` from a copy of ``model`` with ``algorithm`` in ``steps`` steps; return the copy.

    ``retain`` is the retained training data (ascent+descent descends on it); the matching
    algorithms fine-tune on ``targets`` (:func:`oracle_targets`, :meth:`Datamodel.targets`).
    """
    out = None
    for _, out in unlearn_trajectory(algorithm, model, forget, retain, [steps], pad_id, config, targets, progress):
        pass
    return out


# ----------------------------------------------------------------------------- datamodels

def indicators(train_names: Sequence[str], subsets: Sequence[Iterable[str]]) -> np.ndarray:
    """``[n_models, K]`` 0/1 matrix: which of the K training datasets each model saw."""
    names = list(train_names)
    out = np.zeros((len(subsets), len(names)))
    for i, subset in enumerate(subsets):
        for s in subset:
            if s not in names:
                raise ValueError(f"unknown training set {s!r}; training sets are {names}")
            out[i, names.index(s)] = 1.0
    return out


@dataclass
class Datamodel:
    """Per example ``j``: ``output_j(S) ~ intercept_j + sum_k coef_jk 1[k in S]`` (a linear datamodel)."""

    train_names: list[str]
    intercept: np.ndarray  # [n_examples]
    coef: np.ndarray  # [n_examples, K]
    residual_std: np.ndarray | None = None  # [n_examples], in-sample

    def predict(self, included: Iterable[str]) -> np.ndarray:
        """Predicted outputs of a model trained on the datasets ``included``."""
        return self.intercept + self.coef @ indicators(self.train_names, [list(included)])[0]

    def effect(self, name: str) -> np.ndarray:
        """Predicted change of every output from training on ``name`` (its coefficient)."""
        return self.coef[:, self.train_names.index(name)]

    def removal_targets(self, current: np.ndarray, forget: str) -> np.ndarray:
        """Datamodel Matching targets: a full-data model's outputs ``current`` minus the forget set's effect."""
        return np.asarray(current, dtype=np.float64) - self.effect(forget)

    def subset(self, index: Sequence[int] | np.ndarray) -> "Datamodel":
        """The datamodel of the examples at ``index``."""
        idx = np.asarray(index)
        rs = None if self.residual_std is None else self.residual_std[idx]
        return Datamodel(self.train_names, self.intercept[idx], self.coef[idx], rs)


def fit_datamodel(train_names: Sequence[str], subsets: Sequence[Iterable[str]], outputs: np.ndarray,
                  ridge: float = 0.0) -> Datamodel:
    """Least-squares fit of a linear datamodel for every example at once.

    ``subsets[i]`` are the training datasets model ``i`` saw; ``outputs`` is ``[n_models,
    n_examples]`` (margins). ``ridge`` > 0 penalises the coefficients (not the intercept); with
    ``ridge=0`` the design must identify every coefficient (rank K + 1).
    """
    outputs = np.asarray(outputs, dtype=np.float64)
    if outputs.ndim == 1:
        outputs = outputs[:, None]
    X = np.column_stack([np.ones(len(subsets)), indicators(train_names, subsets)])
    if outputs.shape[0] != X.shape[0]:
        raise ValueError(f"{X.shape[0]} subsets but outputs of {outputs.shape[0]} models")
    if ridge > 0:
        penalty = ridge * np.eye(X.shape[1])
        penalty[0, 0] = 0.0
        theta = np.linalg.solve(X.T @ X + penalty, X.T @ outputs)
    else:
        if np.linalg.matrix_rank(X) < X.shape[1]:
            raise ValueError("the subsets do not identify a coefficient per training set (rank-deficient "
                             "design): add subsets, or use ridge > 0")
        theta = np.linalg.lstsq(X, outputs, rcond=None)[0]
    resid = outputs - X @ theta
    dof = max(1, X.shape[0] - X.shape[1])
    return Datamodel(list(train_names), theta[0], theta[1:].T, np.sqrt((resid**2).sum(0) / dof))


def subsets_of_sizes(train_names: Sequence[str], sizes: Iterable[int]) -> list[tuple[str, ...]]:
    """Every subset of the training sets with a size in ``sizes`` (e.g. (2,): the half-subsets)."""
    names = list(train_names)
    return [c for s in sorted(set(sizes)) for c in itertools.combinations(names, s)]


# ----------------------------------------------------------------------------- presets

@dataclass(frozen=True)
class UnlearningPreset:
    """Notebook 04 at one scale, on top of a synthetic preset (notebook 01's models are shared).

    The data of ``run`` (notebook 01's run ``r`` draws data with seed ``r`` and trains with seed
    ``r``) is used throughout; originals (full mixture) and oracles (leave-dataset-out) are trained
    with every training seed of ``seeds``, so seed ``run`` — and the seeds of notebook 01's noise
    floor — are shared with notebook 01. Datamodels are fitted on the originals plus one model per
    subset of the sizes ``datamodel_sizes`` (trained with seeds ``datamodel_seed + i``); no
    leave-dataset-out model enters the fit. Unlearning is evaluated after every budget of
    ``budgets`` steps; ``report_steps`` is the budget shown in the tables.
    """

    scale: str
    synthetic: SyntheticPreset
    families: tuple[str, ...]
    seeds: tuple[int, ...]
    budgets: tuple[int, ...]
    report_steps: int
    config: UnlearningConfig
    # per-algorithm learning rate (else config.lr); a tuple sweeps several, each labelled "<algorithm> (lr <lr>)"
    lrs: dict[str, float | tuple[float, ...]] = field(default_factory=dict)
    run: int = 0
    datamodel_sizes: tuple[int, ...] = (2,)
    datamodel_seed: int = 100
    ridge: float = 0.0
    eval_per_set: int | None = None  # examples evaluated per set, test set included (None: all)
    bins: int = 20
    floor: float = 1e-5

    def variants(self, algorithms: Sequence[str] = ALGORITHMS[1:]) -> list[tuple[str, str, UnlearningConfig]]:
        """``(label, algorithm, config)`` of every algorithm at every learning rate of ``lrs``."""
        out = []
        for a in algorithms:
            if a not in ALGORITHMS:
                raise ValueError(f"unknown algorithm {a!r}; choose from {ALGORITHMS}")
            lrs = self.lrs.get(a, self.config.lr)
            lrs = tuple(lrs) if isinstance(lrs, (tuple, list)) else (lrs,)
            out += [(a if len(lrs) == 1 else f"{a} (lr {lr:g})", a, replace(self.config, lr=lr)) for lr in lrs]
        return out


UNLEARNING: dict[str, UnlearningPreset] = {
    "smoke": UnlearningPreset(
        scale="smoke", synthetic=SYNTHETIC["smoke"], families=("A",), seeds=(0, 1), budgets=(2, 4), report_steps=4,
        config=UnlearningConfig(optimizer="adam", lr=1e-3, batch_size=4, retain_sample=4),
        bins=2,
    ),
    "mini": UnlearningPreset(
        scale="mini", synthetic=SYNTHETIC["mini"], families=("A",), seeds=(0, 1, 2, 3), budgets=(8, 16, 32),
        report_steps=32,
        config=UnlearningConfig(optimizer="adam", lr=5e-4, batch_size=16, retain_sample=256),
        lrs={"gradient ascent": (5e-5, 1e-4, 5e-4), "ascent+descent": (1e-4, 5e-4),
             "oracle matching": 1e-3, "datamodel matching": 1e-3},
        eval_per_set=64, bins=2,
    ),
    "paper": UnlearningPreset(
        scale="paper", synthetic=SYNTHETIC["paper"], families=("A", "B"), seeds=tuple(range(10)),
        budgets=(16, 32, 64, 128), report_steps=64,
        config=UnlearningConfig(optimizer="adafactor", lr=5e-5, batch_size=2, retain_sample=64),
        bins=5,
    ),
}


PRESETS["unlearning"] = UNLEARNING


def unlearning_preset(scale: str, **overrides: Any) -> UnlearningPreset:
    """``untrac.preset("unlearning", scale, **overrides)``: notebook 04's preset at ``scale``."""
    return get_preset("unlearning", scale, **overrides)


# ----------------------------------------------------------------------------- the experiment

@dataclass
class Population:
    """Everything notebook 04 evaluates for one family: data, models over seeds, and their scores.

    ``scores[model_key][set_name] = (logprob, n_tokens)`` over *every* example of every set.
    ``eval_index[set_name]``: the examples of each set that KLoM (and the UnTrac comparison) evaluates.
    """

    preset: UnlearningPreset
    family: str
    pad_id: int
    train_sets: dict[str, Dataset]
    test_sets: dict[str, Dataset]
    originals: dict[int, Trained]
    oracles: dict[int, dict[str, Trained]]
    subset_models: list[tuple[tuple[str, ...], Trained]]
    scores: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]]
    eval_index: dict[str, np.ndarray]

    @property
    def train_names(self) -> list[str]:
        return list(self.train_sets)

    @property
    def sets(self) -> dict[str, Dataset]:
        return {**self.train_sets, **self.test_sets}

    def margins(self, trained: Trained, evaluated_only: bool = True) -> dict[str, np.ndarray]:
        """Margins of a population model per set (evaluated examples only, or all)."""
        out = {}
        for name, (lp, _) in self.scores[trained.key].items():
            m = margins_from_logprobs(lp)
            out[name] = m[self.eval_index[name]] if evaluated_only else m
        return out

    def groups(self, per_set: Mapping[str, np.ndarray], forget: str) -> dict[str, np.ndarray]:
        """Per-set arrays of evaluated examples -> forget / retain / validation arrays (last axis)."""
        return {
            "forget": per_set[forget],
            "retain": np.concatenate([per_set[k] for k in self.train_sets if k != forget], axis=-1),
            "validation": np.concatenate([per_set[k] for k in self.test_sets], axis=-1),
        }

    def eval_sets(self) -> dict[str, Dataset]:
        return {k: ds.select(list(map(int, self.eval_index[k]))) for k, ds in self.sets.items()}


def _scores(model: Trained, sets: Mapping[str, Dataset], pad_id: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    key = cache.fingerprint("scores", model.key, dict(sets))
    return cache.memoise("scores", key, lambda: {k: sequence_scores(model.model, ds, pad_id) for k, ds in sets.items()})


def population(preset: UnlearningPreset, family: str, progress: bool = True) -> Population:
    """Train (or load) the originals, oracles and subset models of one family and score them.

    Uses notebook 01's tokenizer, pretrained base model and data of ``preset.run``: seed
    ``preset.run`` (and notebook 01's noise-floor seeds) load notebook 01's models from the cache.
    """
    from .experiments import pretrained_base, project_tokenizer, synthetic_data

    syn = preset.synthetic
    tokenizer = project_tokenizer(syn.model, syn.tokenizer)
    base = pretrained_base(syn.model, syn.pretrain, tokenizer, progress)
    _, train_sets, test_sets = synthetic_data(syn, family, preset.run, tokenizer, base)
    return build_population(preset, family, base, train_sets, test_sets, tokenizer.pad_token_id, progress)


def build_population(preset: UnlearningPreset, family: str, base: nn.Module, train_sets: Mapping[str, Dataset],
                     test_sets: Mapping[str, Dataset], pad_id: int, progress: bool = True) -> Population:
    """:func:`population` from a given initial model and encoded data (every model cached by ``train``)."""
    syn = preset.synthetic
    train_sets, test_sets = dict(train_sets), dict(test_sets)
    originals: dict[int, Trained] = {}
    oracles: dict[int, dict[str, Trained]] = {}
    # seed ``run`` last: notebook 01 trains it first, so a concurrent notebook 01 has usually cached it by then
    for s in tqdm(sorted(preset.seeds, key=lambda x: x == preset.run), desc=f"originals and oracles {family}",
                  disable=not progress):
        cfg = replace(syn.train, seed=s)
        originals[s] = train(base, train_sets, cfg, pad_id, progress=progress)
        oracles[s] = {k: train(base, train_sets, cfg, pad_id, exclude=k, progress=progress) for k in train_sets}
    originals = {s: originals[s] for s in preset.seeds}
    oracles = {s: oracles[s] for s in preset.seeds}
    subset_models = []
    for i, subset in enumerate(subsets_of_sizes(list(train_sets), preset.datamodel_sizes)):
        if len(subset) in (0, len(train_sets) - 1):
            raise ValueError("datamodel subsets must be non-empty and must not be leave-one-out sets "
                             "(those are the oracles the datamodel has to predict)")
        if len(subset) == len(train_sets):
            continue  # the originals are the full-data models
        cfg = replace(syn.train, seed=preset.datamodel_seed + i)
        subset_models.append((subset, train(base, {k: train_sets[k] for k in subset}, cfg, pad_id, progress=progress)))
    sets = {**train_sets, **test_sets}
    everyone = [*originals.values(), *(t for o in oracles.values() for t in o.values()), *(t for _, t in subset_models)]
    scores = {t.key: _scores(t, sets, pad_id) for t in tqdm(everyone, desc="scoring", disable=not progress)}
    rng = np.random.default_rng([preset.run, 7])
    eval_index = {}
    for k, ds in sets.items():
        n = len(ds)
        if preset.eval_per_set is None or preset.eval_per_set >= n:
            eval_index[k] = np.arange(n)
        else:
            eval_index[k] = np.sort(rng.choice(n, preset.eval_per_set, replace=False))
    return Population(preset, family, pad_id, train_sets, test_sets, originals, oracles, subset_models, scores, eval_index)


def fit_population_datamodel(pop: Population) -> Datamodel:
    """The linear datamodel of every example's margin (all examples of all sets, concatenated in
    ``pop.sets`` order), fitted on the originals (full data) and the subset-trained models."""
    models = [(tuple(pop.train_names), t) for t in pop.originals.values()] + list(pop.subset_models)
    outputs = np.stack([np.concatenate([margins_from_logprobs(pop.scores[t.key][k][0]) for k in pop.sets]) for _, t in models])
    return fit_datamodel(pop.train_names, [s for s, _ in models], outputs, pop.preset.ridge)


def _set_slices(pop: Population) -> dict[str, slice]:
    out, start = {}, 0
    for k, ds in pop.sets.items():
        out[k] = slice(start, start + len(ds))
        start += len(ds)
    return out


def datamodel_quality(pop: Population, dm: Datamodel) -> pd.DataFrame:
    """How well the datamodel predicts the oracles it never saw, per forget set and group.

    Compares the predicted margin change of removing the forget set (``-coef``) with the observed
    change (mean over seeds of oracle minus original margin), over evaluated examples: Pearson r,
    mean absolute error, and the mean absolute observed change (the scale to beat).
    """
    sl = _set_slices(pop)
    rows = []
    for k in pop.train_names:
        obs = {n: np.mean([pop.margins(pop.oracles[s][k])[n] - pop.margins(pop.originals[s])[n] for s in pop.originals], axis=0)
               for n in pop.sets}
        pred = {n: -dm.effect(k)[sl[n]][pop.eval_index[n]] for n in pop.sets}
        for g, (o, p) in {g: (pop.groups(obs, k)[g], pop.groups(pred, k)[g]) for g in GROUPS}.items():
            r = float(np.corrcoef(o, p)[0, 1]) if np.ptp(o) > 0 and np.ptp(p) > 0 else float("nan")
            rows.append({"family": pop.family, "forget": k, "group": g, "pearson": r,
                         "mae": float(np.mean(np.abs(o - p))), "mean_abs_change": float(np.mean(np.abs(o)))})
    return pd.DataFrame(rows)


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
    configs: dict[str, UnlearningConfig] = field(default_factory=dict)


def _matched_values(per_set: Mapping[str, np.ndarray], forget: str, retain_idx: np.ndarray,
                    names: Sequence[str]) -> np.ndarray:
    """Values of the matched examples (forget set, then the retain sample) from per-set arrays,
    in the order of :func:`matched_examples` over :func:`retain_pool`."""
    pool = np.concatenate([per_set[n] for n in names if n != forget])
    return np.concatenate([per_set[forget], pool[retain_idx]])


def unlearning_runs(pop: Population, dm: Datamodel, algorithms: Sequence[str] = ALGORITHMS[1:],
                    progress: bool = True) -> UnlearningRuns:
    """Unlearn every training set from every original with every algorithm, over the budgets.

    Oracle Matching for the original of seed ``s`` matches the oracle of the same seed (the model
    retraining would have produced); Datamodel Matching matches the original's margins minus the
    datamodel's coefficient of the forget set. Every learning rate of ``preset.lrs`` is a
    separate variant. Cached per (algorithm, learning rate, forget set, seed).
    """
    preset = pop.preset
    sl = _set_slices(pop)
    eval_sets = pop.eval_sets()
    out: dict[tuple[str, str, int], dict[int, dict[str, np.ndarray]]] = {}
    direct = {}
    variants = preset.variants(algorithms)
    jobs = [(v, k, s) for s in pop.originals for k in pop.train_names for v in variants]
    for (label, a, config), k, s in tqdm(jobs, desc=f"unlearning {pop.family}", disable=not progress):
        original = pop.originals[s]
        forget, retain = pop.train_sets[k], retain_pool(pop.train_sets, k)
        targets = None
        if a in MATCHING:
            ridx = retain_sample_indices(len(retain), config.retain_sample, config.seed + pop.train_names.index(k))
            source = pop.oracles[s][k] if a == "oracle matching" else original
            lp = {n: pop.scores[source.key][n][0] for n in pop.train_names}
            target = margins_from_logprobs(_matched_values(lp, k, ridx, pop.train_names))
            if a == "datamodel matching":
                effect = {n: dm.effect(k)[sl[n]] for n in pop.train_names}
                target = target - _matched_values(effect, k, ridx, pop.train_names)
            targets = MatchTargets(matched_examples(forget, retain, ridx), target)
        key = cache.fingerprint("unlearning", a, original.key, k, config, list(preset.budgets), dict(eval_sets),
                                None if targets is None else targets.margins, dict(pop.train_sets))

        def compute() -> dict[int, dict[str, np.ndarray]]:
            res = {}
            for steps, model in unlearn_trajectory(a, original.model, forget, retain, preset.budgets, pop.pad_id,
                                                   config, targets):
                res[steps] = {n: sequence_scores(model, ds, pop.pad_id)[0] for n, ds in eval_sets.items()}
            return res

        out[(label, k, s)] = cache.memoise("unlearning", key, compute)
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
    seeds = list(pop.originals)
    rows = []

    def add(k: str, algorithm: str, steps: int, per_seed: list[dict[str, np.ndarray]], fraction: float) -> None:
        oracle = [pop.margins(pop.oracles[s][k]) for s in seeds]
        U = pop.groups({n: np.stack([m[n] for m in per_seed]) for n in pop.sets}, k)
        O = pop.groups({n: np.stack([m[n] for m in oracle]) for n in pop.sets}, k)
        for g in GROUPS:
            values = klom_lib.klom(U[g], O[g], preset.bins, preset.floor)
            rows.append({"family": pop.family, "forget": k, "algorithm": algorithm, "steps": steps,
                         "fraction": fraction, "group": g, "n": values.size, **klom_lib.percentiles(values)})

    for k in pop.train_names:
        add(k, "do nothing", 0, [pop.margins(pop.originals[s]) for s in seeds], 0.0)
        add(k, "DM-Direct", 0, [runs.dm_direct[(k, s)] for s in seeds], 0.0)
        for label, a in runs.algorithms.items():
            bs = runs.configs[label].batch_size
            for steps in preset.budgets:
                per_seed = [{n: margins_from_logprobs(lp) for n, lp in runs.scores[(label, k, s)][steps].items()}
                            for s in seeds]
                add(k, label, steps, per_seed, compute_fraction(a, steps, bs, train_cfg))
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
    """KLoM percentiles of a perfect unlearner at this preset's number of seeds and bins (:func:`untrac.klom.noise_floor`)."""
    return klom_lib.noise_floor(len(preset.seeds), preset.bins, preset.floor)


def untrac_comparison(pop: Population, runs: UnlearningRuns) -> pd.DataFrame:
    """UnTrac's attribution with each unlearner in place of gradient ascent, against the ground truth.

    For seed ``s``, algorithm ``a`` and budget ``b``: influence of training set ``k`` =
    L(test, unlearned) - L(test, original) (Eq. 2), correlated across the K training sets with
    the leave-dataset-out truth L(test, oracle_{s,k}) - L(test, original_s) (Eq. 1). The row
    "ground truth (other seed)" correlates seed ``s``'s truth with every other seed's: the ceiling
    set by training noise.
    """
    from .evaluate import correlation
    from .methods.result import Influence

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


def plot_klom(frame: pd.DataFrame, floor: Mapping[str, float] | None = None, percentiles: Sequence[str] = ("p50", "p95"),
              band: bool = False):
    """KLoM against compute (fraction of retraining): one panel per percentile x group, one line
    per algorithm (mean over forget sets and families; ``band``: their min-max); dashed: the noise floor."""
    import seaborn as sns

    long = frame.melt(id_vars=["family", "forget", "algorithm", "steps", "fraction", "group"], value_vars=list(percentiles),
                      var_name="percentile", value_name="KLoM")
    grid = sns.relplot(data=long, x="fraction", y="KLoM", hue="algorithm", style="algorithm", row="percentile", col="group",
                       kind="line", markers=True, dashes=False, errorbar=("pi", 100) if band else None, height=2.8, aspect=1.3,
                       facet_kws={"sharey": "row"})
    grid.set_titles("{col_name} — {row_name}")
    grid.set_axis_labels("compute (fraction of retraining)", "KLoM")
    if floor is not None:
        for (pct, _), ax in grid.axes_dict.items():
            if pct in floor:
                ax.axhline(floor[pct], color="grey", ls="--", lw=1)
    return grid.figure


__all__ = [
    "ALGORITHMS", "Datamodel", "MatchTargets", "Population", "UNLEARNING", "UnlearningConfig", "UnlearningPreset",
    "UnlearningRuns", "compute_fraction", "datamodel_quality", "example_logprobs", "fit_datamodel",
    "fit_population_datamodel", "indicators", "Study", "klom_frame", "klom_noise_floor", "klom_overview", "klom_table", "study", "log1mexp",
    "margin_from_logprob", "margins", "margins_from_logprobs", "matched_examples", "oracle_targets", "plot_klom",
    "build_population", "population", "retain_pool", "retain_sample_indices", "sequence_margins", "sequence_scores", "subsets_of_sizes",
    "unlearn", "unlearn_trajectory", "unlearning_preset", "untrac_comparison",
]
