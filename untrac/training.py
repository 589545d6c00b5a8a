"""The one training loop, and the one leave-dataset-out builder (the ground truth's models, Eq. 1).

The ground truth of the paper compares theta_0, trained on the whole mixture for T steps, with
theta_{-k}, trained on the mixture without Z_k for the *same* T steps (variant ``"fixed"``, the
default). Appendix A.1's classic variant (``"classic"``) trains theta_{-k} for the same number of
*epochs*, i.e. T * |D \\ Z_k| / |D| steps. A schedule may add an annealing phase (``anneal``:
more steps at a lower learning rate, from the first phase's weights, with a fresh optimizer).

Every trained model is a cache entry keyed by (initial model: class, config, dtype, weights and
which parameters train; the data in mixture order, by content; the config; the steps; the code
version). A run killed half-way resumes from its last resume point bit-for-bit; its checkpoints
(TracIn) stay in a ``.partial`` directory until the finished entry is in place.
"""
from __future__ import annotations

import contextlib
import copy
import math
import os
import shutil
import time
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from datasets import Dataset, concatenate_datasets
from torch import nn

from . import cache, checks
from .accel import Accel, resolve
from .data.batching import check_nonempty, epoch_stream
from .models import batch_loss, check_token_ids, is_encoder_decoder
from .parallel import Call, prefetch
from .progress import bar

VERSION = 2  # bump when the loop's arithmetic changes: trained models are then retrained
OPTIMIZERS = ("sgd", "sgd_momentum", "rmsprop", "adam", "adamw", "adafactor")


@dataclass(frozen=True)
class TrainConfig:
    """Training hyperparameters (paper Sec. 5.2: AdamW, lr 5e-5 constant, batch 8, clip 1.0)."""

    steps: int
    batch_size: int = 8
    lr: float = 5e-5
    optimizer: str = "adamw"
    weight_decay: float = 0.0
    clip: float | None = 1.0
    seed: int = 0
    checkpoint_every: int | None = None  # keep a checkpoint every N steps (TracIn uses them)
    resume_every: int = 200  # write a resume point every N steps

    def __post_init__(self) -> None:
        owner = "TrainConfig"
        checks.positive_int(owner, "steps", self.steps)
        checks.positive_int(owner, "batch_size", self.batch_size)
        checks.positive_float(owner, "lr", self.lr)
        checks.one_of(owner, "optimizer", self.optimizer, OPTIMIZERS)
        checks.positive_float(owner, "weight_decay", self.weight_decay, allow_zero=True)
        checks.positive_float(owner, "clip", self.clip, allow_none=True)
        checks.integer(owner, "seed", self.seed)
        checks.positive_int(owner, "checkpoint_every", self.checkpoint_every, allow_none=True)
        checks.positive_int(owner, "resume_every", self.resume_every)


def make_optimizer(name: str, params: Iterable[torch.Tensor], lr: float, **kwargs: Any) -> torch.optim.Optimizer:
    """A torch optimizer by name, with the paper's settings (Sec. 6, Table 4).

    ``sgd``; ``sgd_momentum`` (momentum 0.9, dampening 0.9); ``rmsprop`` (alpha 0.99);
    ``adam`` / ``adamw`` (betas 0.9/0.999); ``adafactor`` (no relative step, no parameter
    scaling, as in Sec. 5.1). Extra keyword arguments override these defaults.
    """
    params = [p for p in params if p.requires_grad]
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, **kwargs)
    if name == "sgd_momentum":
        return torch.optim.SGD(params, lr=lr, **{"momentum": 0.9, "dampening": 0.9, **kwargs})
    if name == "rmsprop":
        return torch.optim.RMSprop(params, lr=lr, **{"alpha": 0.99, **kwargs})
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, **{"betas": (0.9, 0.999), **kwargs})
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, **{"betas": (0.9, 0.999), "weight_decay": 0.0, **kwargs})
    if name == "adafactor":
        from transformers.optimization import Adafactor

        return Adafactor(params, lr=lr, **{"scale_parameter": False, "relative_step": False, "warmup_init": False, **kwargs})
    raise ValueError(f"unknown optimizer {name!r}; choose from {OPTIMIZERS}")


@dataclass
class Trained:
    """A trained model and where its artefacts live in the cache."""

    model: nn.Module
    key: str
    path: Path
    checkpoints: list[tuple[int, Path]] = field(default_factory=list)
    log: dict[str, Any] = field(default_factory=dict)

    def __fingerprint__(self) -> str:
        """What stands for this model in other cache keys: its own (content-derived) key, and which
        of its parameters are frozen now (attribution takes gradients of the trainable ones only)."""
        frozen = [n for n, p in self.model.named_parameters() if not p.requires_grad]
        return self.key if not frozen else cache.fingerprint(self.key, frozen)

    def checkpoint_states(self) -> list[dict[str, torch.Tensor]]:
        """The state dicts saved every ``checkpoint_every`` steps (TracIn, Eq. 7)."""
        return [cache.load_tensors(p) for _, p in self.checkpoints]


def mixture(train_sets: Mapping[str, Dataset], exclude: str | None = None) -> Dataset:
    """Concatenate the named training sets in order, leaving out ``exclude`` (one of them)."""
    checks.datasets("train_sets", train_sets)
    if exclude is not None and exclude not in train_sets:
        raise ValueError(f"cannot leave out {exclude!r}: training sets are {sorted(train_sets)}")
    for name, ds in train_sets.items():
        check_nonempty(name, ds)
        if "labels" not in ds.column_names:
            raise ValueError(f"training set {name!r} is not encoded (no 'labels' column): use untrac.encode first")
    kept = [ds.select_columns(["input_ids", "labels"]) for name, ds in train_sets.items() if name != exclude]
    if not kept:
        raise ValueError("nothing left to train on")
    return concatenate_datasets(kept)


def optimizer_step(model: nn.Module, optimizer: torch.optim.Optimizer, loss: torch.Tensor, clip: float | None,
                   scaler: torch.amp.GradScaler | None) -> None:
    """One step down ``loss``: backward (through the fp16 scaler if any), optional clipping, step.
    Training and every ascent/descent loop (:mod:`untrac.ascent`) step through here."""
    optimizer.zero_grad(set_to_none=True)
    if scaler is None:
        loss.backward()
        if clip is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        optimizer.step()
    else:
        scaler.scale(loss).backward()
        if clip is not None:
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        scaler.step(optimizer)
        scaler.update()


def _load(model: nn.Module, where: Path, key: str) -> Trained:
    meta = cache.verify(where)
    model.load_state_dict(cache.load_tensors(where / "model.pt"))
    ckpts = [(s, where / f"checkpoint-{s}.pt") for s in meta["checkpoints"]]
    return Trained(model.eval(), key, where, ckpts, meta)


def _resume_point(partial: Path, config: TrainConfig) -> dict[str, Any] | None:
    """The saved resume state, if it and every checkpoint it implies are intact (else start over)."""
    if not (partial / "resume.pt").exists():
        return None
    try:
        state = cache.load_tensors(partial / "resume.pt")
    except Exception as err:  # truncated or planted file: never trusted, never executed
        warnings.warn(f"ignoring unreadable resume point {partial / 'resume.pt'} ({err}); training from step 0", RuntimeWarning)
        return None
    every = config.checkpoint_every
    missing = [s for s in range(every, state["step"] + 1, every) if not (partial / f"checkpoint-{s}.pt").exists()] if every else []
    if missing:
        warnings.warn(f"resume point {partial} lacks checkpoints {missing}; training from step 0", RuntimeWarning)
        return None
    return state


def train_key(init: nn.Module, train_sets: Mapping[str, Dataset], config: TrainConfig, exclude: str | None = None,
              variant: str = "fixed", accel: Accel | None = None) -> tuple[str, int]:
    """The cache key of a :func:`train` call and its number of steps."""
    kept = {k: v for k, v in train_sets.items() if k != exclude}
    total = sum(len(ds) for ds in train_sets.values())
    steps = config.steps if variant == "fixed" or exclude is None else max(1, round(config.steps * sum(map(len, kept.values())) / total))
    accel = resolve(accel)
    return cache.fingerprint("train", VERSION, init, kept, config, steps, *(() if accel.is_plain else (accel,))), steps


def is_trained(init: nn.Module, train_sets: Mapping[str, Dataset], config: TrainConfig, exclude: str | None = None,
               variant: str = "fixed") -> bool:
    """Whether :func:`train` would load this model from the cache."""
    return cache.is_complete(cache.entry("models", train_key(init, train_sets, config, exclude, variant)[0]))


def train(
    init: nn.Module,
    train_sets: Mapping[str, Dataset],
    config: TrainConfig,
    pad_id: int,
    exclude: str | None = None,
    variant: str = "fixed",
    use_cache: bool = True,
    progress: bool = True,
    accel: Accel | None = None,
) -> Trained:
    """Train a copy of ``init`` on the mixture of ``train_sets`` (minus ``exclude``).

    ``variant="fixed"``: ``config.steps`` steps whatever is excluded (Eq. 1); ``"classic"``:
    steps scaled by the fraction of examples kept (Appendix A.1). ``init`` is never modified.
    ``accel`` (optional fast paths, :mod:`untrac.accel`) enters the cache key unless it is plain.
    """
    checks.model("init", init)
    if not isinstance(config, TrainConfig):
        raise TypeError(f"config must be a TrainConfig, not a {type(config).__name__}")
    checks.pad_id(pad_id)
    if variant not in ("fixed", "classic"):
        raise ValueError(f"variant must be 'fixed' or 'classic', not {variant!r}")
    data = mixture(train_sets, exclude)
    check_token_ids(init, train_sets)
    accel = resolve(accel)
    key, steps = train_key(init, train_sets, config, exclude, variant, accel)
    where = cache.entry("models", key)
    model = copy.deepcopy(init)

    if use_cache and cache.is_complete(where):  # a complete entry loads without the lock (read-only caches)
        try:
            return _load(model, where, key)
        except Exception as err:  # corrupt or planted: reported by name, never executed, retrained
            cache.discard(where, str(err))
    # one process trains an entry at a time; another asking for it waits, then loads it
    with cache.locked(where) if use_cache else contextlib.nullcontext():
        if use_cache and cache.is_complete(where):  # trained by another process while we waited
            try:
                return _load(model, where, key)
            except Exception as err:  # noqa: BLE001
                cache.discard(where, str(err))
        device = next(model.parameters()).device
        optimizer = make_optimizer(config.optimizer, model.parameters(), config.lr, weight_decay=config.weight_decay,
                                   **accel.optimizer_kwargs(config.optimizer))
        scaler = accel.grad_scaler(device)
        partial = where.with_name(where.name + ".partial")
        start, log = 0, {"loss": [], "seconds": 0.0}
        state = _resume_point(partial, config) if use_cache else None
        running, counted = torch.zeros((), device=device), 0  # the loss summed since the last log entry
        if state is not None:
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            start, log = state["step"], state["log"]
            running, counted = state["running"].to(device), state["counted"]
            if scaler is not None and "scaler" in state:
                scaler.load_state_dict(state["scaler"])
        elif partial.exists():
            shutil.rmtree(partial, ignore_errors=True)
        stream = epoch_stream(data, config.batch_size, pad_id, is_encoder_decoder(model), config.seed, start_step=start)
        runner = accel.prepare(model)  # model, or a compiled view sharing its parameters
        model.train()
        t0 = time.perf_counter()
        log_every = max(1, min(50, steps // 20))
        with accel.runtime(device), bar(range(start, steps), enabled=progress, initial=start, total=steps,
                                        desc=f"train -{exclude}" if exclude else "train") as steps_bar:
            for step in steps_bar:
                with accel.autocast(device):
                    loss = batch_loss(runner, next(stream))
                optimizer_step(model, optimizer, loss, config.clip, scaler)
                running += loss.detach()
                counted += 1
                done = step + 1
                if done % log_every == 0 or done == steps:
                    mean = running.item() / counted
                    running.zero_()
                    counted = 0
                    if not math.isfinite(mean):
                        raise FloatingPointError(f"training loss became {mean} at step {done}; lower the learning rate")
                    log["loss"].append((done, mean))
                    steps_bar.set_postfix(loss=f"{mean:.3f}", refresh=False)
                if use_cache and config.checkpoint_every and done % config.checkpoint_every == 0:
                    cache.atomic_save(model.state_dict(), partial / f"checkpoint-{done}.pt")
                if use_cache and done % config.resume_every == 0 and done < steps:
                    log["seconds"] += time.perf_counter() - t0
                    t0 = time.perf_counter()
                    resume = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": done, "log": log,
                              "running": running.detach().cpu().clone(), "counted": counted}
                    if scaler is not None:
                        resume["scaler"] = scaler.state_dict()
                    cache.atomic_save(resume, partial / "resume.pt")
        log["seconds"] += time.perf_counter() - t0
        cache.spent(log["seconds"])  # an entry whose computation trains this model does not count it twice
        model.eval()
        if not use_cache:
            return Trained(model, key, where, [], {**log, "steps": steps})
        _commit(model, where, partial, config, steps, exclude, variant, log)
        shutil.rmtree(partial, ignore_errors=True)  # only once the finished entry is in place
        return _load(model, where, key)


def _commit(model: nn.Module, where: Path, partial: Path, config: TrainConfig, steps: int, exclude: str | None,
            variant: str, log: dict[str, Any]) -> None:
    """Build the finished entry beside ``partial`` (whose files are linked, not moved) and rename it in."""
    every = config.checkpoint_every
    ckpts = list(range(every, steps + 1, every)) if every else []
    missing = [s for s in ckpts if not (partial / f"checkpoint-{s}.pt").exists()]
    if missing:
        raise RuntimeError(f"training of {where.name} lost checkpoints {missing}; delete {partial} and train again")
    with cache.atomic_dir(where) as tmp:
        for s in ckpts:
            src, dst = partial / f"checkpoint-{s}.pt", tmp / f"checkpoint-{s}.pt"
            try:
                os.link(src, dst)
            except OSError:
                shutil.copy2(src, dst)
        torch.save(model.state_dict(), tmp / "model.pt")
        cache.seal(tmp, config=asdict(config), steps=steps, exclude=exclude, variant=variant, checkpoints=ckpts, **log)


def fit(
    init: nn.Module,
    train_sets: Mapping[str, Dataset],
    config: TrainConfig,
    pad_id: int,
    *,
    anneal: TrainConfig | None = None,
    exclude: str | None = None,
    variant: str = "fixed",
    seed: int = 0,
    progress: bool = True,
) -> Trained:
    """Train with ``config`` then, if given, ``anneal`` (from the first phase's weights, a fresh
    optimizer and its own data order); ``seed`` shifts both phases' data-order seeds. Both phases
    are cached :func:`train` calls; the result carries the checkpoints of both, in training order."""
    first = train(init, train_sets, replace(config, seed=config.seed + seed), pad_id, exclude=exclude, variant=variant,
                  progress=progress)
    if anneal is None:
        return first
    second = train(first.model, train_sets, replace(anneal, seed=anneal.seed + seed + 10_000), pad_id, exclude=exclude,
                   variant=variant, progress=progress)
    offset = first.log["steps"]
    log = {"steps": offset + second.log["steps"], "seconds": first.log["seconds"] + second.log["seconds"],
           "loss": first.log["loss"] + [(s + offset, v) for s, v in second.log["loss"]], "phases": [first.log, second.log]}
    checkpoints = first.checkpoints + [(s + offset, p) for s, p in second.checkpoints]
    return Trained(second.model, second.key, second.path, checkpoints, log)


def leave_dataset_out(
    init: nn.Module,
    train_sets: Mapping[str, Dataset],
    config: TrainConfig,
    pad_id: int,
    variant: str = "fixed",
    progress: bool = True,
    *,
    anneal: TrainConfig | None = None,
    seed: int = 0,
    executor: Any = None,
) -> tuple[Trained, dict[str, Trained]]:
    """theta_0 and every theta_{-k} (Eq. 1): the base model and one counterfactual per dataset,
    each trained by :func:`fit` with the same schedule and seed. The K + 1 trainings are
    independent: they run in parallel worker processes (:func:`untrac.parallel.prefetch`)."""
    prefetch(leave_dataset_out_calls(init, train_sets, config, pad_id, variant, anneal=anneal, seed=seed),
             executor, progress=progress, desc="leave-one-out models")
    base = fit(init, train_sets, config, pad_id, anneal=anneal, seed=seed, progress=progress)
    counterfactuals = {
        name: fit(init, train_sets, config, pad_id, anneal=anneal, exclude=name, variant=variant, seed=seed,
                  progress=progress)
        for name in train_sets
    }
    return base, counterfactuals


def leave_dataset_out_calls(init: nn.Module, train_sets: Mapping[str, Dataset], config: TrainConfig, pad_id: int,
                            variant: str = "fixed", *, anneal: TrainConfig | None = None, seed: int = 0) -> list[Call]:
    """The K + 1 independent :func:`fit` calls of :func:`leave_dataset_out`, for :func:`~untrac.parallel.prefetch`."""
    common = {"anneal": anneal, "seed": seed, "progress": False}
    first = replace(config, seed=config.seed + seed)
    return [(fit, (init, train_sets, config, pad_id), {**common, "exclude": name, "variant": variant})
            for name in (None, *train_sets) if not is_trained(init, train_sets, first, name, variant)]
