"""One result type for every attribution method: influences of K training sets on S test sets."""
from __future__ import annotations

import dataclasses
import resource
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Iterator

import numpy as np
import pandas as pd
import torch


@dataclass
class Cost:
    """What a method spent: wall time, passes over examples, tokens, peak memory."""

    seconds: float = 0.0
    forward_examples: int = 0  # examples pushed through a forward pass (evaluation included)
    backward_examples: int = 0  # examples pushed through a backward pass
    tokens: int = 0  # tokens through forward passes
    peak_memory_mb: float = 0.0  # CUDA peak if on GPU, else the process's peak RSS

    def add_batch(self, batch: dict[str, torch.Tensor], backward: bool) -> None:
        n = len(batch["input_ids"])
        self.forward_examples += n
        self.backward_examples += n if backward else 0
        self.tokens += int(batch["attention_mask"].sum()) if "attention_mask" in batch else batch["input_ids"].numel()


@contextmanager
def measure(cost: Cost, device: torch.device | None = None) -> Iterator[Cost]:
    """Time the block and record peak memory into ``cost``."""
    cuda = device is not None and device.type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    t0 = time.perf_counter()
    try:
        yield cost
    finally:
        if cuda:
            torch.cuda.synchronize(device)
            cost.peak_memory_mb = max(cost.peak_memory_mb, torch.cuda.max_memory_allocated(device) / 2**20)
        else:
            cost.peak_memory_mb = max(cost.peak_memory_mb, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
        cost.seconds += time.perf_counter() - t0


@dataclass
class Influence:
    """Influence of training set k on test set s, ``values[k, s]``.

    Sign convention (paper Eq. 1-9): positive means that removing / unlearning training set k
    *raises* the loss on test set s. Methods that unlearn also keep the whole ``trajectory``
    ``[n_evals, K, S]`` at the evaluation ``steps`` (Figures 2 and 3).
    """

    method: str
    train_names: list[str]
    test_names: list[str]
    values: np.ndarray
    steps: list[int] | None = None
    trajectory: np.ndarray | None = None
    cost: Cost = field(default_factory=Cost)
    config: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.values = np.asarray(self.values, dtype=float)
        if self.values.shape != (len(self.train_names), len(self.test_names)):
            raise ValueError(f"values shape {self.values.shape} != (K={len(self.train_names)}, S={len(self.test_names)})")

    def at_step(self, index: int) -> "Influence":
        """The influence at evaluation point ``index`` of the trajectory."""
        if self.trajectory is None or self.steps is None:
            raise ValueError(f"{self.method} has no trajectory")
        return dataclasses.replace(self, values=self.trajectory[index], steps=None, trajectory=None)

    def to_frame(self) -> pd.DataFrame:
        """Tidy frame: one row per (train, test) with the influence value."""
        k, s = np.meshgrid(range(len(self.train_names)), range(len(self.test_names)), indexing="ij")
        return pd.DataFrame({
            "method": self.method,
            "train": np.array(self.train_names)[k.ravel()],
            "test": np.array(self.test_names)[s.ravel()],
            "influence": self.values.ravel(),
        })

    def trajectory_frame(self) -> pd.DataFrame:
        """Tidy frame of the trajectory: one row per (step, train, test)."""
        if self.trajectory is None or self.steps is None:
            raise ValueError(f"{self.method} has no trajectory")
        frames = [self.at_step(i).to_frame().assign(step=step) for i, step in enumerate(self.steps)]
        return pd.concat(frames, ignore_index=True)
