"""The six measurements of the bench (issue 6): each returns rows for a Markdown table."""
from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from untrac.accel import Accel
from untrac.data.batching import IGNORE, batches, epoch_stream
from untrac.methods import attribute
from untrac.methods.untrac import UnlearnConfig, Unlearner
from untrac.models import dataset_loss
from untrac.training import TrainConfig, train

from .common import blocks, interleaved, mb, paired_ratio, peak_memory, timed

NOOP = lambda m: np.zeros(1)  # noqa: E731  an evaluation schedule that costs nothing

FAST_PATHS: dict[str, Accel] = {
    "foreach Adam": Accel(optimizer_impl="foreach"),
    "fused Adam": Accel(optimizer_impl="fused"),
    "bf16 autocast": Accel(dtype="bf16"),
}


@dataclass(frozen=True)
class Sizes:
    reps: int = 5
    steps: int = 16  # unlearning steps per repetition
    inv_batch: int = 8  # examples in the UnTrac-Inv-like full batch
    block: int = 128  # tokens per unlearning block
    n_eval: int = 96  # evaluation examples (lengths 16..128)
    eval_batch: int = 32
    cost_reps: int = 3
    k: int = 8  # training sets for (4) and (5)
    per_set: int = 8  # blocks per training set
    cost_block: int = 64
    hessian_examples: int = 16  # HIF's Hessian sample (256 in the paper; its HVPs dominate HIF's cost)

    @classmethod
    def quick(cls) -> "Sizes":
        return cls(reps=3, steps=8, inv_batch=8, n_eval=64, cost_reps=1, per_set=4)


def _to(batch: dict[str, torch.Tensor], device: torch.device) -> tuple[torch.Tensor, ...]:
    return tuple(batch[k].to(device, non_blocking=True) for k in ("input_ids", "attention_mask", "labels"))


def bare_unlearn_loop(model: nn.Module, snapshot: dict, batch_list: list, lr: float, device: torch.device) -> Callable[[], int]:
    """The loop anyone would write inline: forward, loss, backward of the negated loss, Adam step."""
    tokens = sum(int(b["attention_mask"].sum()) for b in batch_list)

    def run() -> int:
        model.load_state_dict(snapshot)
        model.train()
        opt = torch.optim.Adam(model.parameters(), lr=lr, betas=(0.9, 0.999))
        for b in batch_list:
            ids, mask, labels = _to(b, device)
            logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1]
            loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1), ignore_index=IGNORE)
            opt.zero_grad(set_to_none=True)
            (-loss).backward()
            opt.step()
        return tokens

    return run


def bare_eval(model: nn.Module, batch_list: list, device: torch.device) -> Callable[[], int]:
    """A bare ``no_grad`` forward with the token NLL summed on the device, read once at the end."""
    tokens = sum(int(b["attention_mask"].sum()) for b in batch_list)

    def run() -> int:
        model.eval()
        total = torch.zeros((), device=device)
        with torch.no_grad():
            for b in batch_list:
                ids, mask, labels = _to(b, device)
                logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1]
                total += F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1), ignore_index=IGNORE, reduction="sum")
        total.item()
        return tokens

    return run


def _unlearn_workloads(tok: Any, sz: Sizes) -> dict[str, tuple[Any, UnlearnConfig]]:
    v = len(tok)
    return {
        f"UnTrac-like: batch 1 x {sz.block} tokens": (
            blocks(sz.steps, sz.block, v, seed=1), UnlearnConfig(lr=1e-5, batch_size=1, steps=sz.steps)),
        f"UnTrac-Inv-like: batch {sz.inv_batch} x {sz.block} tokens": (
            blocks(sz.inv_batch, sz.block, v, seed=2), UnlearnConfig(lr=1e-5, batch_size=None, steps=max(2, sz.steps // 4))),
    }


def unlearning_throughput(model: nn.Module, tok: Any, device: torch.device, sz: Sizes, fast: bool = True) -> list[dict]:
    """(1) Unlearner.run (no-op evaluations) vs the bare loop, same model, batches and optimizer."""
    pad = tok.pad_token_id
    rows = []
    for workload, (forget, config) in _unlearn_workloads(tok, sz).items():
        stream = epoch_stream(forget, config.batch_size or len(forget), pad, False, config.seed)
        batch_list = [next(stream) for _ in range(config.num_steps(len(forget)))]
        bare_model = copy.deepcopy(model)
        snapshot = {k: v.clone() for k, v in model.state_dict().items()}
        tokens = sum(int(b["attention_mask"].sum()) for b in batch_list)
        variants: dict[str, Callable[[], int]] = {"bare loop": bare_unlearn_loop(bare_model, snapshot, batch_list, config.lr, device)}
        accels = {"untrac Unlearner.run": None, **({f"untrac + {k}": a for k, a in FAST_PATHS.items()} if fast else {})}
        for name, accel in accels.items():
            un = Unlearner(model, pad, accel)
            variants[name] = (lambda un=un: (un.run(forget, config, NOOP), tokens)[1])
        series = interleaved(variants, sz.reps, device)
        bare = series["bare loop"]
        for name, s in series.items():
            rows.append({
                "workload": workload, "variant": name,
                "tokens/s": f"{np.median(s.rate()):,.0f}",
                "vs bare (wall)": f"{paired_ratio(s, bare):.3f}",
                "vs bare (CPU time)": f"{paired_ratio(s, bare, 'cpu'):.3f}" if device.type == "cpu" else "-",
            })
    return rows


def _padding(batch_list: list) -> float:
    padded = sum(b["input_ids"].numel() for b in batch_list)
    real = sum(int(b["attention_mask"].sum()) for b in batch_list)
    return padded / real - 1


def evaluation_throughput(model: nn.Module, tok: Any, device: torch.device, sz: Sizes) -> list[dict]:
    """(2) dataset_loss over length-bucketed batches vs a bare no_grad forward over the same batches."""
    pad = tok.pad_token_id
    data = blocks(sz.n_eval, (16, sz.block), len(tok), seed=3)
    bucketed = batches(data, sz.eval_batch, pad, by_length=True)
    shuffled = batches(data, sz.eval_batch, pad, shuffle=True, seed=0)
    tokens = sum(int(b["attention_mask"].sum()) for b in bucketed)
    bf16 = Accel(dtype="bf16")

    def package(bl: list, accel: Accel | None = None) -> Callable[[], int]:
        def run() -> int:
            if accel is None:
                dataset_loss(model, bl)
            else:
                with accel.autocast(device, evaluation=True):
                    dataset_loss(model, bl)
            return tokens
        return run

    variants = {
        "bare no_grad forward (bucketed)": bare_eval(model, bucketed, device),
        "untrac dataset_loss (bucketed)": package(bucketed),
        "untrac dataset_loss, unbucketed (shuffled)": package(shuffled),
        "untrac dataset_loss + bf16 autocast": package(bucketed, bf16),
    }
    pads = {"bare no_grad forward (bucketed)": _padding(bucketed), "untrac dataset_loss (bucketed)": _padding(bucketed),
            "untrac dataset_loss, unbucketed (shuffled)": _padding(shuffled), "untrac dataset_loss + bf16 autocast": _padding(bucketed)}
    series = interleaved(variants, sz.reps, device)
    bare = series["bare no_grad forward (bucketed)"]
    return [{
        "variant": name, "padding": f"{pads[name]:.0%}",
        "tokens/s": f"{np.median(s.rate()):,.0f}",
        "vs bare (wall)": f"{paired_ratio(s, bare):.3f}",
        "vs bare (CPU time)": f"{paired_ratio(s, bare, 'cpu'):.3f}" if device.type == "cpu" else "-",
    } for name, s in series.items()]


def peak_memories(model: nn.Module, tok: Any, device: torch.device, sz: Sizes) -> tuple[list[dict], str]:
    """(3) Peak memory above the resident model, package vs bare, for unlearning and evaluation."""
    pad = tok.pad_token_id
    (forget, config), = list(_unlearn_workloads(tok, sz).values())[1:]  # the bigger, full-batch workload
    stream = epoch_stream(forget, len(forget), pad, False, config.seed)
    batch_list = [next(stream) for _ in range(config.num_steps(len(forget)))]
    bare_model = copy.deepcopy(model)
    snapshot = {k: v.clone() for k, v in model.state_dict().items()}
    un = Unlearner(model, pad)
    data = blocks(sz.n_eval, (16, sz.block), len(tok), seed=3)
    bucketed = batches(data, sz.eval_batch, pad, by_length=True)
    phases = {
        "unlearning: bare loop": bare_unlearn_loop(bare_model, snapshot, batch_list, config.lr, device),
        "unlearning: untrac Unlearner.run": lambda: un.run(forget, config, NOOP),
        "evaluation: bare no_grad forward": bare_eval(model, bucketed, device),
        "evaluation: untrac dataset_loss": lambda: dataset_loss(model, bucketed),
    }
    for fn in phases.values():  # warm-up: allocator pools, lazy initialisation
        fn()
    peaks: dict[str, list] = {k: [] for k in phases}
    for _ in range(max(3, sz.cost_reps)):
        for name, fn in phases.items():
            peaks[name].append(peak_memory(fn, device))
    med = {k: (None if any(x is None for x in v) else float(np.median(v))) for k, v in peaks.items()}
    state_bytes = sum(v.numel() * v.element_size() for v in {id(v): v for v in model.state_dict().values()}.values())
    rows = []
    for name, value in med.items():
        bare = med["unlearning: bare loop" if name.startswith("unlearning") else "evaluation: bare no_grad forward"]
        rows.append({"phase": name, "peak above resident (MB)": mb(value),
                     "vs bare": "n/a" if value is None or not bare else f"{value / bare:.2f}"})
    rows.append({"phase": "resident: Unlearner working copy + snapshot (held across runs)",
                 "peak above resident (MB)": mb(2 * state_bytes), "vs bare": f"= 2 x model ({mb(state_bytes)} MB)"})
    workload = f"unlearning: {len(batch_list)} steps, batch {len(forget)} x {sz.block}; evaluation: {sz.n_eval} examples"
    return rows, workload


def _cost_sets(tok: Any, sz: Sizes) -> tuple[dict, dict]:
    v = len(tok)
    train_sets = {f"corpus{k}": blocks(sz.per_set, sz.cost_block, v, seed=100 + k) for k in range(sz.k)}
    test_sets = {f"test{s}": blocks(4, sz.cost_block, v, seed=200 + s) for s in range(2)}
    return train_sets, test_sets


def method_costs(model: nn.Module, tok: Any, device: torch.device, sz: Sizes) -> tuple[list[dict], list[dict], str]:
    """(4) every baseline's cost and (5) UnTrac vs UnTrac-Inv, relative to one training epoch."""
    pad = tok.pad_token_id
    train_sets, test_sets = _cost_sets(tok, sz)
    n_train = sum(len(d) for d in train_sets.values())
    n_hess = min(n_train, sz.hessian_examples)
    epoch = TrainConfig(steps=math.ceil(n_train / 8), batch_size=8, lr=5e-5, optimizer="adamw")
    ckpts = [{k: v.clone() for k, v in model.state_dict().items()} for _ in range(3)]
    settings: dict[str, dict[str, Any]] = {
        "GradDot": {}, "GradCos": {},
        "TracIn": {"checkpoints": ckpts},
        "HIF (LiSSA)": {"iterations": 10, "hessian_examples": n_hess},
        "HIF (Arnoldi)": {"n_iters": 25, "top_p": 25, "hessian_examples": n_hess},
        "UnTrac": {"config": UnlearnConfig(batch_size=1, epochs=1)},
        "UnTrac-Inv": {"config": UnlearnConfig(batch_size=None, epochs=5)},
    }
    jobs: dict[str, Callable[[], Any]] = {"one training epoch": lambda: train(model, train_sets, epoch, pad, use_cache=False, progress=False)}
    for name, kw in settings.items():
        jobs[name] = lambda name=name, kw=kw: attribute(name, model, train_sets, test_sets, pad, progress=False, **kw)
    for name, fn in jobs.items():  # warm-up (not HIF: seconds each, and nothing in it needs warming)
        if not name.startswith("HIF"):
            fn()
    secs: dict[str, list[float]] = {k: [] for k in jobs}
    peaks: dict[str, list] = {k: [] for k in jobs}
    costs: dict[str, Any] = {}
    for r in range(sz.cost_reps):
        names = list(jobs)
        for name in names[r % len(names):] + names[: r % len(names)]:
            holder: dict[str, Any] = {}

            def call(name: str = name, holder: dict = holder) -> None:
                holder["t"] = timed(lambda: (holder.__setitem__("out", jobs[name]()), 0)[1], device)

            peaks[name].append(peak_memory(call, device))
            secs[name].append(holder["t"].wall)
            if name != "one training epoch":
                costs[name] = holder["out"].cost
    epoch_s = np.array(secs["one training epoch"])
    rel = {k: float(np.median(np.array(v) / epoch_s)) for k, v in secs.items()}
    peak = {k: (None if any(x is None for x in v) else float(np.median(v))) for k, v in peaks.items()}

    def row(name: str) -> dict:
        c = costs.get(name)
        return {
            "method": name, "seconds": f"{np.median(secs[name]):.2f}", "x one epoch": f"{rel[name]:.2f}",
            "forward ex.": "-" if c is None else c.forward_examples,
            "backward ex.": "-" if c is None else c.backward_examples,
            "tokens": "-" if c is None else f"{c.tokens:,}",
            "peak MB above resident": mb(peak[name]),
        }

    baselines = [row(n) for n in ("one training epoch", "GradDot", "GradCos", "TracIn", "HIF (LiSSA)", "HIF (Arnoldi)")]
    inv = [row(n) for n in ("one training epoch", "UnTrac", "UnTrac-Inv")]
    inv.append({"method": "UnTrac-Inv / UnTrac", "seconds": f"{np.median(secs['UnTrac-Inv']) / np.median(secs['UnTrac']):.2f}",
                "x one epoch": "", "forward ex.": "", "backward ex.": "", "tokens": "", "peak MB above resident": ""})
    workload = (f"K = {sz.k} training sets x {sz.per_set} blocks x {sz.cost_block} tokens ({n_train} blocks), "
                f"S = 2 test sets x 4 blocks; one epoch = {epoch.steps} AdamW steps at batch 8 (untrac.training.train); "
                "TracIn over 3 checkpoints; HIF LiSSA 10 iterations, Arnoldi 25 iterations / top 25, Hessian on "
                f"{n_hess} training blocks; UnTrac batch 1, 1 epoch; UnTrac-Inv full batch, 5 epochs; "
                f"median of {sz.cost_reps} interleaved round(s)")
    return baselines, inv, workload


def profile_unlearning(model: nn.Module, tok: Any, device: torch.device, sz: Sizes, top: int = 15) -> str:
    """torch.profiler tables (self CPU time) of the package's loop and the bare loop, side by side."""
    from torch.profiler import ProfilerActivity, profile

    pad = tok.pad_token_id
    forget, config = next(iter(_unlearn_workloads(tok, sz).values()))
    stream = epoch_stream(forget, 1, pad, False, config.seed)
    batch_list = [next(stream) for _ in range(config.num_steps(len(forget)))]
    bare = bare_unlearn_loop(copy.deepcopy(model), {k: v.clone() for k, v in model.state_dict().items()}, batch_list, config.lr, device)
    un = Unlearner(model, pad)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    out = []
    for name, fn in (("untrac Unlearner.run", lambda: un.run(forget, config, NOOP)), ("bare loop", bare)):
        fn()
        with profile(activities=activities) as prof:
            t0 = time.perf_counter()
            fn()
            wall = time.perf_counter() - t0
        out.append(f"### {name} ({wall:.3f} s)\n\n```\n"
                   + prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=top) + "\n```\n")
    return "\n".join(out)


def loss_layout(device: torch.device, sz: Sizes) -> tuple[list[dict], str]:
    """(6) The loss's memory layout: cross-entropy over flattened ``[B*T, V]`` rows (the package's
    :func:`~untrac.models.example_losses`) against the ``[B, V, T]`` transpose it used before; one
    AdamW training step of the corpora ``mini`` model's shapes, same model and batch."""
    from transformers import OPTConfig, OPTForCausalLM

    vocab, batch, block = 4096, 8, 64  # presets.CORPORA["mini"]: 1-layer OPT, d 128, vocab 4,096, batch 8 x 64
    torch.manual_seed(0)
    model = OPTForCausalLM(OPTConfig(vocab_size=vocab, hidden_size=128, word_embed_proj_dim=128, num_hidden_layers=1,
                                     ffn_dim=512, num_attention_heads=4, max_position_embeddings=256)).to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    ids = torch.randint(4, vocab, (batch, block), generator=torch.Generator().manual_seed(0)).to(device)
    labels = ids[:, 1:]

    def transposed(logits: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits.transpose(1, 2), labels, reduction="none").mean(1)

    def flat(logits: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits.reshape(-1, vocab), labels.reshape(-1), reduction="none").view(labels.shape).mean(1)

    def steps(loss_fn: Callable[[torch.Tensor], torch.Tensor]) -> Callable[[], int]:
        def run() -> int:
            for _ in range(sz.steps):
                loss = loss_fn(model(input_ids=ids).logits[:, :-1]).mean()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            return sz.steps * batch * block
        return run

    series = interleaved({"[B, V, T] transpose (before)": steps(transposed), "[B*T, V] flat (now)": steps(flat)},
                         sz.reps, device)
    before, now = series.values()
    rows = [{"loss layout": s.name, "ms per training step": f"{1e3 * float(np.median([t.wall for t in s.runs])) / sz.steps:.1f}",
             "speed-up vs transpose": f"{paired_ratio(s, before):.2f}x"} for s in (before, now)]
    return rows, (f"{sz.reps} interleaved rounds of {sz.steps} AdamW steps; 1-layer OPT, d 128, vocab {vocab:,}, "
                  f"batch {batch} x {block} tokens")
