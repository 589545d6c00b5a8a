"""Fixed-step training on a mixture of named datasets, and the leave-dataset-out ground truth.

The ground truth of the paper (Eq. 1) compares theta_0, trained on the whole mixture for T
steps, with theta_{-k}, trained on the mixture without Z_k for the *same* T steps (variant
``"fixed"``, the default). Appendix A.1's classic variant (``"classic"``) trains theta_{-k} for
the same number of *epochs*, i.e. T * |D \\ Z_k| / |D| steps.

Every trained model is cached under a fingerprint of (initial weights, data, config, excluded
dataset, variant); a run killed half-way resumes from its last resume point bit-for-bit.
"""
from __future__ import annotations

import contextlib
import copy
import math
import time
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from datasets import Dataset, concatenate_datasets
from torch import nn
from tqdm.auto import tqdm

from . import cache
from .accel import Accel, resolve
from .data.batching import check_nonempty, epoch_stream
from .models import batch_loss, is_encoder_decoder


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


OPTIMIZERS = ("sgd", "sgd_momentum", "rmsprop", "adam", "adamw", "adafactor")


def make_optimizer(name: str, params: Iterable[torch.Tensor], lr: float, **kwargs: Any) -> torch.optim.Optimizer:
    """A torch optimizer by name, with the paper's settings (Sec. 6, Table 4).

    ``sgd``; ``sgd_momentum`` (momentum 0.9, dampening 0.9); ``rmsprop`` (alpha 0.99);
    ``adam`` / ``adamw`` (betas 0.9/0.999); ``adafactor`` (no relative step, no parameter
    scaling, as in Sec. 5.1). Extra keyword arguments override these defaults.
    """
    params = list(params)
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

    def checkpoint_states(self) -> list[dict[str, torch.Tensor]]:
        """The state dicts saved every ``checkpoint_every`` steps (TracIn, Eq. 7)."""
        return [torch.load(p, map_location="cpu", weights_only=True) for _, p in self.checkpoints]


def mixture(train_sets: Mapping[str, Dataset], exclude: str | None = None) -> Dataset:
    """Concatenate the named training sets, leaving out ``exclude`` (must be one of them)."""
    if exclude is not None and exclude not in train_sets:
        raise ValueError(f"cannot leave out {exclude!r}: training sets are {sorted(train_sets)}")
    for name, ds in train_sets.items():
        check_nonempty(name, ds)
    kept = [ds.select_columns(["input_ids", "labels"]) for name, ds in train_sets.items() if name != exclude]
    if not kept:
        raise ValueError("nothing left to train on")
    return concatenate_datasets(kept)


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
    if variant not in ("fixed", "classic"):
        raise ValueError(f"variant must be 'fixed' or 'classic', not {variant!r}")
    data = mixture(train_sets, exclude)
    total = sum(len(ds) for ds in train_sets.values())
    steps = config.steps if variant == "fixed" or exclude is None else max(1, round(config.steps * len(data) / total))
    accel = resolve(accel)
    key = cache.fingerprint(
        "train", init.state_dict(), {k: v for k, v in train_sets.items() if k != exclude}, config, steps,
        *(() if accel.is_plain else (accel,)),
    )
    where = cache.entry("models", key)
    model = copy.deepcopy(init)
    encdec = is_encoder_decoder(model)

    def result() -> Trained:
        meta = cache.load_json(where / "meta.json")
        model.load_state_dict(torch.load(where / "model.pt", map_location=next(model.parameters()).device, weights_only=True))
        ckpts = [(s, where / f"checkpoint-{s}.pt") for s in meta["checkpoints"]]
        return Trained(model.eval(), key, where, ckpts, meta)

    # one process trains an entry at a time; another asking for it waits, then loads it
    with cache.locked(where) if use_cache else contextlib.nullcontext():
        if use_cache and (where / "model.pt").exists():
            return result()

        device = next(model.parameters()).device
        optimizer = make_optimizer(config.optimizer, model.parameters(), config.lr, weight_decay=config.weight_decay,
                                   **accel.optimizer_kwargs(config.optimizer))
        scaler = accel.grad_scaler(device)
        partial = where.with_name(where.name + ".partial")
        start, log = 0, {"loss": [], "seconds": 0.0}
        if use_cache and (partial / "resume.pt").exists():
            state = torch.load(partial / "resume.pt", weights_only=False)
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            start, log = state["step"], state["log"]
            if scaler is not None and "scaler" in state:
                scaler.load_state_dict(state["scaler"])
        stream = epoch_stream(data, config.batch_size, pad_id, encdec, config.seed, start_step=start)
        runner = accel.prepare(model)  # model, or a compiled view sharing its parameters
        model.train()
        t0 = time.perf_counter()
        running = torch.zeros((), device=next(model.parameters()).device)
        log_every = max(1, min(50, steps // 20))
        bar = tqdm(range(start, steps), initial=start, total=steps, disable=not progress, desc=f"train -{exclude}" if exclude else "train")
        with accel.runtime(device):  # TF32 on CUDA if asked; restored afterwards
            for step in bar:
                with accel.autocast(device):
                    loss = batch_loss(runner, next(stream))
                optimizer.zero_grad(set_to_none=True)
                if scaler is None:
                    loss.backward()
                    if config.clip is not None:
                        torch.nn.utils.clip_grad_norm_(model.parameters(), config.clip)
                    optimizer.step()
                else:
                    scaler.scale(loss).backward()
                    if config.clip is not None:
                        scaler.unscale_(optimizer)
                        torch.nn.utils.clip_grad_norm_(model.parameters(), config.clip)
                    scaler.step(optimizer)
                    scaler.update()
                running += loss.detach()
                done = step + 1
                if done % log_every == 0 or done == steps:
                    mean = running.item() / (log_every if done % log_every == 0 else done % log_every)
                    running.zero_()
                    if not math.isfinite(mean):
                        raise FloatingPointError(f"training loss became {mean} at step {done}; lower the learning rate")
                    log["loss"].append((done, mean))
                    bar.set_postfix(loss=f"{mean:.3f}")
                if use_cache and config.checkpoint_every and done % config.checkpoint_every == 0:
                    cache.atomic_save(model.state_dict(), partial / f"checkpoint-{done}.pt")
                if use_cache and done % config.resume_every == 0 and done < steps:
                    log["seconds"] += time.perf_counter() - t0
                    t0 = time.perf_counter()
                    resume = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": done, "log": log}
                    if scaler is not None:
                        resume["scaler"] = scaler.state_dict()
                    cache.atomic_save(resume, partial / "resume.pt")
        log["seconds"] += time.perf_counter() - t0
        model.eval()
        if not use_cache:
            return Trained(model, key, where, [], log)
        ckpts = sorted(int(p.stem.split("-")[1]) for p in partial.glob("checkpoint-*.pt")) if partial.exists() else []
        with cache.atomic_dir(where) as tmp:
            for s in ckpts:
                (partial / f"checkpoint-{s}.pt").rename(tmp / f"checkpoint-{s}.pt")
            torch.save(model.state_dict(), tmp / "model.pt")
            cache.save_json({"config": asdict(config), "steps": steps, "exclude": exclude, "variant": variant,
                             "checkpoints": ckpts, **log}, tmp / "meta.json")
        if partial.exists():
            import shutil

            shutil.rmtree(partial, ignore_errors=True)
        return result()


def leave_dataset_out(
    init: nn.Module,
    train_sets: Mapping[str, Dataset],
    config: TrainConfig,
    pad_id: int,
    variant: str = "fixed",
    progress: bool = True,
) -> tuple[Trained, dict[str, Trained]]:
    """theta_0 and every theta_{-k} (Eq. 1): the base model and one counterfactual per dataset."""
    base = train(init, train_sets, config, pad_id, progress=progress)
    counterfactuals = {
        name: train(init, train_sets, config, pad_id, exclude=name, variant=variant, progress=progress)
        for name in train_sets
    }
    return base, counterfactuals
