"""A content-keyed artefact store with atomic writes.

Every expensive artefact (trained model, counterfactual, checkpoint, influence result) lives
under ``<root>/<kind>/<key>/`` where ``key`` is a fingerprint of everything that determines it
(configs, data fingerprints, seeds). Writes go to a temporary directory renamed into place, so a
run killed half-way never leaves a corrupt entry; training keeps a resume file beside it.

The root is ``$UNTRAC_CACHE`` or ``~/.cache/untrac``.
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

ENV_VAR = "UNTRAC_CACHE"


def cache_root() -> Path:
    """The cache directory (``$UNTRAC_CACHE`` or ``~/.cache/untrac``)."""
    return Path(os.environ.get(ENV_VAR) or Path.home() / ".cache" / "untrac").expanduser()


def _canonical(obj: Any) -> Any:
    """A JSON-able canonical form of configs, datasets, tensors and containers."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {"__type__": type(obj).__name__, **{f.name: _canonical(getattr(obj, f.name)) for f in dataclasses.fields(obj)}}
    if hasattr(obj, "_fingerprint"):  # datasets.Dataset
        return {"__dataset__": obj._fingerprint}
    if isinstance(obj, torch.Tensor):
        return {"__tensor__": hashlib.sha256(obj.detach().cpu().contiguous().numpy().tobytes()).hexdigest()}
    if isinstance(obj, np.ndarray):
        return {"__array__": hashlib.sha256(np.ascontiguousarray(obj).tobytes()).hexdigest()}
    if isinstance(obj, dict):
        return {str(k): _canonical(v) for k, v in sorted(obj.items(), key=lambda kv: str(kv[0]))}
    if isinstance(obj, (list, tuple)):
        return [_canonical(v) for v in obj]
    if isinstance(obj, float):
        return repr(obj)
    if obj is None or isinstance(obj, (bool, int, str)):
        return obj
    raise TypeError(f"cannot fingerprint {type(obj).__name__}")


def fingerprint(*parts: Any) -> str:
    """A short stable hash of ``parts`` (dataclasses, dicts, lists, datasets, tensors, scalars)."""
    text = json.dumps(_canonical(list(parts)), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@contextlib.contextmanager
def atomic_dir(final: Path) -> Iterator[Path]:
    """Yield a temporary directory that is renamed to ``final`` only if the block succeeds."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
    try:
        yield tmp
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def atomic_save(obj: Any, path: Path) -> None:
    """``torch.save`` to ``path`` through a temporary file and an atomic rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    torch.save(obj, tmp)
    os.replace(tmp, path)


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """An exclusive inter-process lock on ``<path>.lock`` (two notebooks sharing one cache)."""
    import fcntl

    lock = Path(path).with_name(Path(path).name + ".lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def entry(kind: str, key: str) -> Path:
    """The directory of one cache entry."""
    return cache_root() / kind / key


def load_json(path: Path) -> Any:
    return json.loads(Path(path).read_text())


def save_json(obj: Any, path: Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(obj, indent=1, default=str))
    os.replace(tmp, path)


def memoise(kind: str, key: str, compute: Callable[[], Any], use_cache: bool = True) -> Any:
    """Return the pickled result stored under ``kind/key``, computing and storing it if absent.

    Two processes asking for the same absent entry (two notebooks, two sweep workers) do not both
    compute it: the second waits on the entry's lock, then loads what the first stored.
    """
    import pickle

    if not use_cache:
        return compute()
    path = entry(kind, key) / "result.pkl"

    def load() -> Any:
        with open(path, "rb") as f:
            return pickle.load(f)

    if path.exists():
        return load()
    with locked(path.parent):
        if path.exists():  # computed by another process while we waited
            return load()
        value = compute()
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".result.pkl.tmp{os.getpid()}")
        with open(tmp, "wb") as f:
            pickle.dump(value, f)
        os.replace(tmp, path)
    return value
