"""Shared pieces of the bench: the small model and data, clocks, interleaved timing, peak memory."""
from __future__ import annotations

import gc
import os
import platform
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

ROOT = Path(__file__).resolve().parent.parent


# -- the workload ---------------------------------------------------------------------------------
def tokenizer(vocab_size: int = 2048) -> Any:
    """A byte-level BPE trained on the package's own source text (offline, ~1 s)."""
    from untrac.models import train_tokenizer

    texts = [p.read_text() for p in sorted((ROOT / "untrac").rglob("*.py"))]
    return train_tokenizer(texts, vocab_size)


def small_model(tok: Any, n_layers: int = 2, d_model: int = 128, device: str = "cpu") -> nn.Module:
    """A small OPT (``n_layers`` x ``d_model``, 4 heads, d_ff = 4 d) built by :func:`untrac.models.build_model`."""
    from untrac.models import ModelSpec, build_model

    spec = ModelSpec(arch="opt", n_layers=n_layers, d_model=d_model, n_heads=4, d_ff=4 * d_model, max_positions=512)
    return build_model(spec, tok, seed=0).to(device)


def blocks(n: int, length: int | tuple[int, int], vocab: int, seed: int) -> Any:
    """``n`` random token blocks (every token a target); ``length`` fixed or a (low, high) range."""
    from datasets import Dataset

    rng = np.random.default_rng(seed)
    if isinstance(length, tuple):
        ids = [rng.integers(4, vocab, int(rng.integers(length[0], length[1] + 1))).tolist() for _ in range(n)]
    else:
        ids = rng.integers(4, vocab, (n, length)).tolist()
    return Dataset.from_dict({"input_ids": ids, "labels": ids})


def n_params(model: nn.Module) -> int:
    """Parameters counted once (tied embeddings are one tensor)."""
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())


# -- clocks ---------------------------------------------------------------------------------------
def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass
class Timing:
    """Wall and process-CPU seconds of one repetition, and the tokens it processed."""

    wall: float
    cpu: float
    tokens: int


def timed(fn: Callable[[], int], device: torch.device) -> Timing:
    """Run ``fn`` (returns the tokens it processed) between two synchronised clocks."""
    sync(device)
    w0, c0 = time.perf_counter(), time.process_time()
    tokens = fn()
    sync(device)
    return Timing(time.perf_counter() - w0, time.process_time() - c0, tokens)


@dataclass
class Series:
    """Repetitions of one variant."""

    name: str
    runs: list[Timing] = field(default_factory=list)

    def rate(self, clock: str = "wall") -> np.ndarray:
        return np.array([r.tokens / getattr(r, clock) for r in self.runs])

    def seconds(self, clock: str = "wall") -> np.ndarray:
        return np.array([getattr(r, clock) for r in self.runs])


def interleaved(variants: dict[str, Callable[[], int]], reps: int, device: torch.device, warmup: int = 1) -> dict[str, Series]:
    """Run the variants round-robin, ``reps`` times (the order rotates each round), after ``warmup`` rounds.

    Interleaving spreads the load of other jobs on a shared machine evenly over the variants; the
    ratios are then taken within a round (:func:`paired_ratio`).
    """
    names = list(variants)
    for _ in range(warmup):
        for name in names:
            variants[name]()
    out = {name: Series(name) for name in names}
    for r in range(reps):
        order = names[r % len(names):] + names[: r % len(names)]
        for name in order:
            gc.collect()
            out[name].runs.append(timed(variants[name], device))
    return out


def paired_ratio(a: Series, b: Series, clock: str = "wall") -> float:
    """Median over rounds of throughput(a) / throughput(b)."""
    return float(np.median(a.rate(clock) / b.rate(clock)))


# -- peak memory ----------------------------------------------------------------------------------
def _status(field_name: str) -> int:
    text = Path("/proc/self/status").read_text()
    return int(re.search(rf"{field_name}:\s+(\d+) kB", text).group(1)) * 1024


def _reset_rss_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")  # Linux: reset VmHWM to the current RSS
        return True
    except OSError:
        return False


MEMORY_METHOD = {
    "cuda": "CUDA allocator peak (torch.cuda.max_memory_allocated) above the allocation at the start",
    "cpu": "peak RSS (VmHWM, reset through /proc/self/clear_refs) above the RSS at the start, after gc and "
           "glibc malloc_trim (so freed heap does not hide new allocations); tracemalloc does not see torch tensors",
}


def _malloc_trim() -> None:
    """Hand freed heap pages back to the OS (glibc), so the RSS at the start is what is live."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def peak_memory(fn: Callable[[], Any], device: torch.device) -> float | None:
    """Peak memory (bytes) that ``fn`` adds above what is resident when it starts (see MEMORY_METHOD)."""
    gc.collect()
    if device.type == "cpu":
        _malloc_trim()
    if device.type == "cuda":
        sync(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        fn()
        sync(device)
        return float(torch.cuda.max_memory_allocated(device) - base)
    if not Path("/proc/self/status").exists() or not _reset_rss_peak():
        return None
    base = _status("VmRSS")
    fn()
    return float(_status("VmHWM") - base)


# -- the machine ----------------------------------------------------------------------------------
def describe_device(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (CUDA {torch.version.cuda}), torch {torch.__version__}"
    cpu = platform.processor() or platform.machine()
    try:
        model = re.search(r"model name\s*:\s*(.*)", Path("/proc/cpuinfo").read_text()).group(1).strip()
        cpu = model
    except (OSError, AttributeError):
        pass
    load = ""
    if hasattr(os, "getloadavg"):
        load = f", load average {os.getloadavg()[0]:.1f} at the start"
    return (f"CPU only, no GPU: {cpu}, {os.cpu_count()} cores, torch {torch.__version__} with "
            f"{torch.get_num_threads()} thread(s){load}")


def mb(x: float | None) -> str:
    return "n/a" if x is None else f"{x / 2**20:.1f}"
