"""One result type for every attribution method: influences of K training sets on S test sets,
and, from the methods that compute them, the scores of every training example (``example_values``)."""
from __future__ import annotations

import dataclasses
import resource
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from collections.abc import Mapping
from typing import Any, Iterator

import numpy as np
import pandas as pd
import torch

PER_EXAMPLE = ("UnTrac-Inv", "GradDot", "GradCos", "TracIn", "EK-FAC", "TRAK")  # the built-in methods with per-example scores


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

    ``example_values`` (methods in :data:`PER_EXAMPLE` run with ``per_example=True``; else None):
    training-set name -> ``[n_k, S]``, the score of each of its examples (in dataset order) on
    each test set, same sign convention, at the final step. :meth:`top_examples` ranks them,
    :meth:`example_frame` lists them.
    """

    method: str
    train_names: list[str]
    test_names: list[str]
    values: np.ndarray
    steps: list[int] | None = None
    trajectory: np.ndarray | None = None
    cost: Cost = field(default_factory=Cost)
    config: dict[str, Any] = field(default_factory=dict)
    example_values: dict[str, np.ndarray] | None = None

    def __post_init__(self) -> None:
        self.values = np.asarray(self.values, dtype=float)
        if self.values.shape != (len(self.train_names), len(self.test_names)):
            raise ValueError(f"values shape {self.values.shape} != (K={len(self.train_names)}, S={len(self.test_names)})")
        if self.example_values is not None:
            if list(self.example_values) != list(self.train_names):
                raise ValueError(f"example_values are for {list(self.example_values)}, not the training sets "
                                 f"{list(self.train_names)} (same names, same order)")
            self.example_values = {k: np.asarray(v, dtype=float) for k, v in self.example_values.items()}
            for name, v in self.example_values.items():
                if v.ndim != 2 or v.shape[1] != len(self.test_names):
                    raise ValueError(f"example_values[{name!r}] has shape {v.shape}, not (n_examples, S={len(self.test_names)})")

    def at_step(self, index: int) -> "Influence":
        """The influence at evaluation point ``index`` of the trajectory."""
        if self.trajectory is None or self.steps is None:
            raise ValueError(f"{self.method} has no trajectory")
        last = index in (-1, len(self.steps) - 1)  # the per-example scores are those of the final step
        return dataclasses.replace(self, values=self.trajectory[index], steps=None, trajectory=None,
                                   example_values=self.example_values if last else None)

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

    # ------------------------------------------------------------------------- per example

    def _examples(self) -> dict[str, np.ndarray]:
        if self.example_values is not None:
            return self.example_values
        if self.method in PER_EXAMPLE:
            raise ValueError(f"this {self.method} result has no per-example scores: run it with per_example=True")
        why = (" (it unlearns whole training sets: a per-example score would take one unlearning run per example)"
               if self.method == "UnTrac" else "")
        raise ValueError(f"{self.method} gives no per-example scores{why}; per-example scores come from "
                         f"{', '.join(PER_EXAMPLE)} run with per_example=True")

    def example_frame(self) -> pd.DataFrame:
        """Tidy frame of the per-example scores: one row per (train set, example index, test set)."""
        frames = []
        for name, v in self._examples().items():
            i, s = np.meshgrid(range(len(v)), range(len(self.test_names)), indexing="ij")
            frames.append(pd.DataFrame({"method": self.method, "train": name, "index": i.ravel(),
                                        "test": np.array(self.test_names)[s.ravel()], "influence": v.ravel()}))
        return pd.concat(frames, ignore_index=True)

    def top_examples(self, test_set: str, k: int = 10, train_sets: Mapping[str, Any] | None = None, *,
                     tokenizer: Any = None) -> pd.DataFrame:
        """The ``k`` training examples with the highest scores on ``test_set``, best first.

        Columns ``train`` (set name), ``index`` (row in that set), ``score``; with ``train_sets``
        (the datasets scored, or their raw text versions: same names, lengths and order) also
        ``text``: the ``text`` column, else ``prompt + target``, else ``input_ids`` decoded by
        ``tokenizer``. Ties keep training-set order, then index order.
        """
        examples = self._examples()
        if test_set not in self.test_names:
            raise ValueError(f"unknown test set {test_set!r}; this result has {self.test_names}")
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"k must be a positive integer, not {k!r}")
        if tokenizer is not None and train_sets is None:
            raise ValueError("tokenizer= decodes the examples of train_sets=: pass the training sets too")
        s = self.test_names.index(test_set)
        names = np.concatenate([np.full(len(v), name, dtype=object) for name, v in examples.items()])
        index = np.concatenate([np.arange(len(v)) for v in examples.values()])
        scores = np.concatenate([v[:, s] for v in examples.values()])
        best = np.argsort(-scores, kind="stable")[:k]
        out = pd.DataFrame({"train": names[best].astype(str), "index": index[best], "score": scores[best]})
        if train_sets is not None:
            out["text"] = [_text(train_sets, name, int(i), len(examples[name]), tokenizer)
                           for name, i in zip(out["train"], out["index"])]
        return out


def _text(train_sets: Mapping[str, Any], name: str, i: int, n: int, tokenizer: Any) -> str:
    """Example ``i`` of ``train_sets[name]`` as text (its text columns, or its decoded token ids)."""
    if name not in train_sets:
        raise ValueError(f"train_sets has no {name!r} (it has {list(train_sets)})")
    ds = train_sets[name]
    if len(ds) != n:
        raise ValueError(f"train_sets[{name!r}] has {len(ds)} examples, but the result scored {n}: pass the sets scored")
    columns = set(ds.column_names)
    row = ds[i]
    if "text" in columns:
        return str(row["text"])
    if {"prompt", "target"} <= columns:
        return f"{row['prompt']}{row['target']}"
    if tokenizer is not None and "input_ids" in columns:
        return tokenizer.decode(row["input_ids"], skip_special_tokens=True)
    raise ValueError(f"train_sets[{name!r}] has no text column ('text', or 'prompt' and 'target'): "
                     "pass tokenizer= to decode its input_ids")
