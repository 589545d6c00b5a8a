"""The paper-scale path: OPT-125M (facebook/opt-125m's config, random init) unlearning at batch 1 x 1024.

The workload of one corpus is 10,000 blocks of 1,024 tokens at batch 1: 10,000 UnTrac steps,
about 6 N T = 6 x 125M x 10.24M = 7.7 PFLOP. We time a few steps of ``Unlearner.run`` (no-op
evaluations) and report steps/s, tokens/s, model FLOPs utilisation (6 N tokens/s over the
device's peak) and the projected time for one corpus.
"""
from __future__ import annotations

import copy
import time
from typing import Any

import torch

from untrac.accel import Accel, resolve
from untrac.data.batching import epoch_stream
from untrac.methods.untrac import UnlearnConfig, Unlearner

from .common import blocks, mb, n_params, peak_memory, sync
from .suite import NOOP, bare_unlearn_loop

SEQ = 1024
BLOCKS_PER_CORPUS = 10_000
PAPER_HOURS_V100 = 4.0  # the paper: ~4 h per corpus for UnTrac on a V100

# Dense bf16/fp16 tensor-core peaks (FLOP/s) by device name.
GPU_PEAKS = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "L4": 121e12, "A10": 125e12, "V100": 125e12}


def gpu_peak(device: torch.device) -> tuple[float | None, str]:
    name = torch.cuda.get_device_name(device)
    for key, peak in GPU_PEAKS.items():
        if key in name:
            return peak, f"{name}: {peak / 1e12:.0f} TFLOP/s dense bf16 (datasheet)"
    return None, f"{name}: peak unknown"


def cpu_peak(size: int = 1024, reps: int = 5) -> tuple[float, str]:
    """Measured fp32 GEMM throughput: the ceiling a CPU run is compared against."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b
    best = 0.0
    for _ in range(reps):
        t0 = time.perf_counter()
        a @ b
        best = max(best, 2 * size**3 / (time.perf_counter() - t0))
    return best, f"measured fp32 GEMM {size}^3, best of {reps}: {best / 1e9:.0f} GFLOP/s ({torch.get_num_threads()} threads)"


def opt125m(device: torch.device) -> torch.nn.Module:
    """OPT-125M from ``transformers.OPTConfig()``'s defaults (= facebook/opt-125m), random init."""
    from transformers import OPTConfig, OPTForCausalLM

    torch.manual_seed(0)
    return OPTForCausalLM(OPTConfig()).to(device)


TRAIN_BATCH = 8  # the paper's pretraining batch (blocks of 1,024 tokens)


def training_rate(model: torch.nn.Module, device: torch.device, steps: int, batch: int = TRAIN_BATCH, seq: int = SEQ,
                  accel: Accel | None = None, warmup: int = 2) -> float:
    """Steps/s of the package's training step (``models.batch_loss`` + ``training.optimizer_step``,
    AdamW lr 5e-5, clip 1.0, as ``training.train`` runs it) at ``batch`` x ``seq`` random tokens.

    This is what pretraining the base and leave-one-out models costs per step: the dominant term of a
    paper-scale run. ``model`` is trained in place (pass a copy)."""
    from untrac.data.batching import batches
    from untrac.models import batch_loss
    from untrac.training import make_optimizer, optimizer_step

    if steps < 1 or warmup < 0:
        raise ValueError(f"training_rate needs steps >= 1 and warmup >= 0, got steps={steps}, warmup={warmup}")
    accel = resolve(accel)
    data = batches(blocks((steps + warmup) * batch, seq, model.config.vocab_size, seed=2), batch,
                   model.config.pad_token_id)
    opt = make_optimizer("adamw", model.parameters(), 5e-5, **accel.optimizer_kwargs("adamw"))
    scaler = accel.grad_scaler(device)

    def step(b: dict) -> None:
        with accel.autocast(device):
            loss = batch_loss(model, b)
        optimizer_step(model, opt, loss, 1.0, scaler)

    model.train()
    with accel.runtime(device):
        for b in data[:warmup]:
            step(b)
        sync(device)
        t0 = time.perf_counter()
        for b in data[warmup:]:
            step(b)
        sync(device)
    model.eval()
    return steps / (time.perf_counter() - t0)


def run_paper(device: torch.device, steps: int, warmup: int, compile_: bool = False) -> tuple[list[dict], list[str]]:
    model = opt125m(device)
    n = n_params(model)
    pad = model.config.pad_token_id
    vocab = model.config.vocab_size
    forget = blocks(steps, SEQ, vocab, seed=0)
    warm = blocks(warmup, SEQ, vocab, seed=1) if warmup else None
    if device.type == "cuda":
        peak, peak_note = gpu_peak(device)
        variants: dict[str, Accel | None] = {
            "untrac, plain fp32": None,
            "untrac, TF32 + fused Adam": Accel(tf32=True, optimizer_impl="fused"),
            "untrac, bf16 + TF32 + fused Adam": Accel(dtype="bf16", tf32=True, optimizer_impl="fused"),
        }
        if compile_:
            variants["untrac, bf16 + TF32 + fused Adam + compile"] = Accel(dtype="bf16", tf32=True, optimizer_impl="fused", compile=True)
    else:
        peak, peak_note = cpu_peak()
        variants = {"untrac, plain fp32": None, "untrac, bf16 autocast (CPU)": Accel(dtype="bf16")}
    rows = []
    stream = epoch_stream(forget, 1, pad, False, 0)
    batch_list = [next(stream) for _ in range(steps)]
    bare_model = copy.deepcopy(model)
    snapshot = {k: v.clone() for k, v in model.state_dict().items()}
    bare = bare_unlearn_loop(bare_model, snapshot, batch_list, 5e-5, device)
    jobs: dict[str, Any] = {"bare loop, plain fp32": (bare, None)}
    for name, accel in variants.items():
        un = Unlearner(model, pad, accel)
        jobs[name] = ((lambda un=un: un.run(forget, UnlearnConfig(lr=5e-5, batch_size=1, steps=steps), NOOP)), un)
    for name, (fn, un) in jobs.items():
        if warmup:
            (un.run(warm, UnlearnConfig(lr=5e-5, batch_size=1, steps=warmup), NOOP) if un is not None else fn())
        holder: dict[str, float] = {}

        def timed_run(fn: Any = fn, holder: dict = holder) -> None:
            sync(device)
            t0 = time.perf_counter()
            fn()
            sync(device)
            holder["s"] = time.perf_counter() - t0

        extra = peak_memory(timed_run, device)
        seconds = holder["s"]
        sps = steps / seconds
        flops = 6 * n * SEQ * sps
        hours = BLOCKS_PER_CORPUS / sps / 3600
        rows.append({
            "variant": name, "steps/s": f"{sps:.3f}", "tokens/s": f"{sps * SEQ:,.0f}",
            "model TFLOP/s (6N)": f"{flops / 1e12:.2f}",
            "MFU": "n/a" if peak is None else f"{flops / peak:.1%}",
            "10,000 blocks (h)": f"{hours:.2f}", "vs paper V100 4 h": f"{PAPER_HOURS_V100 / hours:.1f}x faster" if hours < PAPER_HOURS_V100 else f"{hours / PAPER_HOURS_V100:.1f}x slower",
            "peak MB above resident": mb(extra),
        })
        if un is not None:
            del un
        jobs[name] = None
    if device.type == "cuda":  # pretraining's step at the paper's batch (on CPU: minutes a step, skipped)
        train_steps = max(steps // 5, 5)
        for name, accel in (("training step, batch 8, plain fp32", None),
                            ("training step, batch 8, bf16 + TF32 + fused AdamW",
                             Accel(dtype="bf16", tf32=True, optimizer_impl="fused"))):
            sps = training_rate(copy.deepcopy(model), device, train_steps, accel=accel)
            tokens = sps * SEQ * TRAIN_BATCH
            rows.append({"variant": name, "steps/s": f"{sps:.3f}", "tokens/s": f"{tokens:,.0f}",
                         "model TFLOP/s (6N)": f"{6 * n * tokens / 1e12:.2f}",
                         "MFU": "n/a" if peak is None else f"{6 * n * tokens / peak:.1%}",
                         "40,000-step model (h)": f"{40_000 / sps / 3600:.2f}"})
    notes = [
        f"model: OPT-125M from transformers.OPTConfig() defaults (facebook/opt-125m), random init, N = {n:,} parameters",
        f"workload: batch 1 x {SEQ} tokens, Adam lr 5e-5, {steps} timed steps after {warmup} warm-up step(s), one timed run per variant",
        f"peak: {peak_note}; MFU = 6 N tokens/s / peak for every variant (attention FLOPs not counted)"
        + ("" if device.type == "cuda" else "; on a shared CPU the measured 'peak' is itself depressed, so MFU is only indicative"),
        f"projection: {BLOCKS_PER_CORPUS:,} blocks = {BLOCKS_PER_CORPUS:,} steps at batch 1 = "
        f"{6 * n * SEQ * BLOCKS_PER_CORPUS / 1e15:.1f} PFLOP, evaluations not included",
    ]
    if device.type == "cuda":
        notes.append(f"training rows (GPU only): the package's training step (batch_loss + optimizer_step, AdamW, clip 1) "
                     f"at batch {TRAIN_BATCH} x {SEQ}; '40,000-step model' = one paper-scale pretraining run "
                     "(base or leave-one-out model), checkpoints and evaluations not included")
    return rows, notes
