"""A content-keyed artefact store: one key scheme, one layout, no code from disk.

Every expensive artefact (trained model, tokenizer, influence result, sweep cell) lives in a
directory ``<root>/<kind>/<key>/``. The key is a fingerprint of everything that determines the
artefact (:func:`fingerprint`): configs, seeds, models by class, config, dtype, weights and which
parameters train, datasets by the *content* of their token ids, and the producing function's name
and code version. Every entry holds a ``meta.json`` with the sha256 of each of its files, checked
on load; a corrupt entry is reported by name and recomputed.

Nothing is unpickled: results are stored as JSON plus an ``.npz`` of arrays,
tensors with ``torch.load(weights_only=True)`` (:mod:`untrac.codec`). Writes go to a temporary directory renamed into
place (a run killed half-way leaves no entry), entries honour the umask, one process computes an
entry while others wait on its lock, and a read-only cache still serves its complete entries.

:func:`cached` is the one way results are memoised::

    @cache.cached("influence", version=1)
    def ground_truth_of(base: Trained, counterfactuals: dict, tests: dict, pad_id: int) -> Influence: ...

The root is ``$UNTRAC_CACHE`` or ``~/.cache/untrac``.
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import inspect
import json
import os
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import codec

ENV_VAR = "UNTRAC_CACHE"
LEDGER_VAR = "UNTRAC_LEDGER"  # a file: every entry a run uses is appended to it (see :func:`ledger`)
FORMAT = 2  # the storage format; part of every key (entries of older formats are never read)
NUMERICS = 2  # the shared loss arithmetic (models.example_losses); bumped when a change moves its bits
META = "meta.json"


class CorruptEntry(RuntimeError):
    """A cache entry whose files do not match the hashes recorded when it was written."""


def cache_root() -> Path:
    """The cache directory (``$UNTRAC_CACHE`` or ``~/.cache/untrac``)."""
    return Path(os.environ.get(ENV_VAR) or Path.home() / ".cache" / "untrac").expanduser()


def entry(kind: str, key: str) -> Path:
    """The directory of one cache entry."""
    return cache_root() / kind / key


# ----------------------------------------------------------------------------- fingerprints

_DATASET_HASHES: dict[tuple[str, int], str] = {}


def _tensor_digest(t: torch.Tensor) -> str:
    t = t.detach().cpu().contiguous().reshape(-1)
    h = hashlib.sha256(f"{t.dtype}".encode())
    h.update(t.view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def dataset_digest(ds: Any) -> str:
    """sha256 of a ``datasets.Dataset``'s content: its ``input_ids`` and ``labels`` (the columns that
    determine training and scoring), or every column if it has neither; independent of how the
    dataset object (or the tokenizer that made it) was created."""
    import pyarrow as pa

    memo = (getattr(ds, "_fingerprint", None), len(ds))
    if memo[0] is not None and memo in _DATASET_HASHES:
        return _DATASET_HASHES[memo]
    cols = [c for c in ("input_ids", "labels") if c in ds.column_names] or list(ds.column_names)
    table = ds.select_columns(cols).with_format("arrow")[:]
    h = hashlib.sha256(json.dumps([cols, len(ds)]).encode())
    for name in cols:
        col = table.column(name).combine_chunks()
        if pa.types.is_list(col.type) or pa.types.is_large_list(col.type):
            offsets = np.asarray(col.offsets, dtype=np.int64)
            values = np.asarray(col.flatten(), dtype=np.int64)
            h.update((offsets - offsets[0]).tobytes())
            h.update(values.tobytes())
        else:
            h.update(json.dumps(col.to_pylist(), sort_keys=True, default=str).encode())
    digest = h.hexdigest()
    if memo[0] is not None:
        _DATASET_HASHES[memo] = digest
    return digest


def module_description(model: torch.nn.Module) -> dict[str, Any]:
    """What determines a model's behaviour: class, config, dtype, weights and trained parameters."""
    config = getattr(model, "config", None)
    cfg = {}
    if config is not None and hasattr(config, "to_dict"):
        cfg = {k: v for k, v in config.to_dict().items() if not k.startswith("_") and k not in ("transformers_version",)}
    state = model.state_dict()
    return {
        "class": f"{type(model).__module__}.{type(model).__qualname__}",
        "config": _canonical(cfg),
        "weights": hashlib.sha256("".join(f"{k}:{tuple(v.shape)}:{_tensor_digest(v)}" for k, v in state.items()).encode()).hexdigest(),
        "trainable": [n for n, p in model.named_parameters() if p.requires_grad],
        "frozen": [n for n, p in model.named_parameters() if not p.requires_grad],
    }


def _canonical(obj: Any) -> Any:
    """A JSON-able canonical form of configs, datasets, models, tensors and containers.

    Mappings keep their order (a mixture of datasets is concatenated in that order); objects
    with a ``__fingerprint__()`` method (a trained model's cache entry) stand for that value.
    """
    if hasattr(obj, "__fingerprint__") and not isinstance(obj, type):
        return {"__fp__": obj.__fingerprint__()}
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        # a field marked metadata={"fingerprint": "omit-default"} enters the key only when it is set:
        # adding such a field to a settings class keeps the keys of every existing result
        return {"__type__": type(obj).__name__, **{
            f.name: _canonical(getattr(obj, f.name)) for f in dataclasses.fields(obj)
            if not (f.metadata.get("fingerprint") == "omit-default" and getattr(obj, f.name) == f.default)}}
    if hasattr(obj, "_fingerprint") and hasattr(obj, "column_names"):  # datasets.Dataset
        return {"__dataset__": dataset_digest(obj)}
    if isinstance(obj, torch.nn.Module):
        return {"__model__": module_description(obj)}
    if isinstance(obj, torch.Tensor):
        return {"__tensor__": [list(obj.shape), _tensor_digest(obj)]}
    if isinstance(obj, np.ndarray):
        return {"__array__": [str(obj.dtype), list(obj.shape), hashlib.sha256(np.ascontiguousarray(obj).tobytes()).hexdigest()]}
    if isinstance(obj, dict):
        return {"__map__": [[_canonical(k), _canonical(v)] for k, v in obj.items()]}
    if isinstance(obj, (list, tuple)):
        return [_canonical(v) for v in obj]
    if isinstance(obj, (float, np.floating)):
        return repr(float(obj))
    if isinstance(obj, np.integer):
        return int(obj)
    if obj is None or isinstance(obj, (bool, int, str)):
        return obj
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"cannot fingerprint {type(obj).__name__}")


def fingerprint(*parts: Any) -> str:
    """A short stable hash of ``parts`` (dataclasses, dicts in order, datasets by content, models,
    tensors, scalars), with the storage format."""
    text = json.dumps(_canonical([FORMAT, NUMERICS, *parts]), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:20]


# ----------------------------------------------------------------------------- files

def _umask() -> int:
    old = os.umask(0o022)
    os.umask(old)
    return old


def _honour_umask(path: Path, directory: bool) -> None:
    mode = (0o777 if directory else 0o666) & ~_umask()
    with contextlib.suppress(OSError):
        os.chmod(path, mode)


@contextlib.contextmanager
def atomic_dir(final: Path) -> Iterator[Path]:
    """Yield a temporary directory that becomes ``final`` only if the block succeeds.

    If another process completed ``final`` meanwhile, its entry is kept and ours discarded (the
    two are the same artefact); an interrupted block leaves nothing behind.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
    _honour_umask(tmp, directory=True)
    try:
        yield tmp
        for p in tmp.rglob("*"):
            _honour_umask(p, directory=p.is_dir())
        try:
            os.replace(tmp, final)
        except OSError:
            if not final.exists():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def atomic_save(obj: Any, path: Path) -> None:
    """``torch.save`` to ``path`` through a temporary file and an atomic rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    torch.save(obj, tmp)
    _honour_umask(tmp, directory=False)
    os.replace(tmp, path)


def load_tensors(path: Path) -> Any:
    """Load a ``torch.save`` file of tensors and plain containers; never runs code from the file."""
    return torch.load(path, map_location="cpu", weights_only=True)


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """An exclusive inter-process lock on ``<path>.lock`` (two notebooks sharing one cache).

    On a read-only cache no lock can be taken: the block runs unlocked (it can only read).
    """
    import fcntl

    lock = Path(path).with_name(Path(path).name + ".lock")
    try:
        lock.parent.mkdir(parents=True, exist_ok=True)
        handle = open(lock, "a")
    except OSError:
        yield
        return
    with handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def load_json(path: Path) -> Any:
    return json.loads(Path(path).read_text())


def save_json(obj: Any, path: Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(obj, indent=1, default=str))
    _honour_umask(tmp, directory=False)
    os.replace(tmp, path)


def seal(directory: Path, **info: Any) -> None:
    """Write ``meta.json`` into an entry being built: ``info`` plus the sha256 of every file."""
    directory = Path(directory)
    files = {p.name: sha256_file(p) for p in sorted(directory.iterdir()) if p.is_file() and p.name != META}
    save_json({**info, "files": files}, directory / META)


def verify(directory: Path) -> dict[str, Any]:
    """The entry's metadata, after checking every file against its recorded sha256.

    Raises :class:`CorruptEntry` naming the entry, the file and how to clear it.
    """
    directory = Path(directory)
    hint = f"delete {directory} (or the whole cache, {cache_root()}) to recompute it"
    try:
        meta = load_json(directory / META)
        files = meta["files"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise CorruptEntry(f"cache entry {directory}: unreadable {META} ({err}); {hint}") from err
    for name, digest in files.items():
        path = directory / name
        if not path.is_file() or sha256_file(path) != digest:
            raise CorruptEntry(f"cache entry {directory}: {name} is missing or does not match its sha256; {hint}")
    _record(directory, meta)
    return meta


@dataclasses.dataclass
class Cost:
    """One entry's computation in progress: its own seconds once done (:func:`costing`), the seconds of
    the stored computations it made on the way, and every entry it used (kept in its ``meta.json``)."""

    seconds: float = 0.0
    nested: float = 0.0
    uses: list[list[str]] = dataclasses.field(default_factory=list)


_OPEN: list[Cost] = []  # the computations in progress in this process, innermost last


@contextlib.contextmanager
def costing() -> Iterator[Cost]:
    """Time the computation of an entry, net of the entries it computes itself (a pretrained base
    model inside its index entry), so that a ledger's sum counts every second once."""
    cost = Cost()
    _OPEN.append(cost)
    t0 = time.perf_counter()
    try:
        yield cost
    finally:
        elapsed = time.perf_counter() - t0
        _OPEN.pop()
        cost.seconds = elapsed - cost.nested
        if _OPEN:
            _OPEN[-1].nested += elapsed


def spent(seconds: float) -> None:
    """Count ``seconds`` of a stored computation timed without :func:`costing` (training records its own
    loop time) as nested in the computation in progress, if any."""
    if _OPEN:
        _OPEN[-1].nested += seconds


def _record(directory: Path, meta: dict[str, Any]) -> None:
    """Note that the run used this entry: in the computation in progress (its ``uses``), and in the ledger
    named by ``$UNTRAC_LEDGER``, if any — the entry's kind, key, what made it, the seconds its computation
    took and when it was written, then the same for every entry its computation used (a cold run computes
    those too, though a warm run never opens them). Never fails the run (a worker on a machine without the
    ledger's directory writes nothing)."""
    if _OPEN:
        _OPEN[-1].uses.append([directory.parent.name, directory.name])
    path = os.environ.get(LEDGER_VAR)
    if not path:
        return
    lines, todo, seen = [], [(directory, meta)], set()
    while todo:
        where, info = todo.pop()
        if where in seen:
            continue
        seen.add(where)
        with contextlib.suppress(OSError):
            lines.append(json.dumps({"kind": where.parent.name, "key": where.name,
                                     "what": info.get("method") or info.get("producer"), "seconds": info.get("seconds"),
                                     "written": (where / META).stat().st_mtime}))
        for kind, key in info.get("uses") or []:
            with contextlib.suppress(OSError, ValueError):
                todo.append((entry(kind, key), load_json(entry(kind, key) / META)))
    with contextlib.suppress(OSError):
        with open(path, "a") as f:  # short appends: whole lines even with several workers
            f.write("".join(line + "\n" for line in lines))


def ledger(path: Path) -> list[dict[str, Any]]:
    """The entries a ledger file lists, each once (its first line), in order of first use."""
    seen: dict[tuple[str, str], dict[str, Any]] = {}
    if Path(path).is_file():
        for text in Path(path).read_text().splitlines():
            with contextlib.suppress(ValueError):
                row = json.loads(text)
                seen.setdefault((row["kind"], row["key"]), row)
    return list(seen.values())


def is_complete(directory: Path) -> bool:
    return (Path(directory) / META).is_file()


def discard(directory: Path, reason: str) -> None:
    """Warn about a corrupt entry and move it out of the way so it is recomputed."""
    warnings.warn(f"{reason}; recomputing it", RuntimeWarning, stacklevel=3)
    with contextlib.suppress(OSError):
        shutil.rmtree(directory)


# ----------------------------------------------------------------------------- memoisation

def memoise(kind: str, key: str, compute: Callable[[], Any], use_cache: bool = True, **info: Any) -> Any:
    """The result stored under ``kind/key``, computing and storing it if absent (or corrupt).

    Two processes asking for the same absent entry do not both compute it: the second waits on the
    entry's lock, then loads what the first stored. A cache that cannot be written is only read.
    """
    if not use_cache:
        return compute()
    where = entry(kind, key)

    def load() -> Any:
        verify(where)
        return codec.read(where)

    if is_complete(where):
        try:
            return load()
        except (CorruptEntry, OSError, ValueError, KeyError, TypeError, AttributeError) as err:
            discard(where, f"cache entry {where} is corrupt ({err})")
    with locked(where):
        if is_complete(where):  # computed by another process while we waited
            try:
                return load()
            except (CorruptEntry, OSError, ValueError, KeyError, TypeError, AttributeError) as err:
                discard(where, f"cache entry {where} is corrupt ({err})")
        with costing() as cost:
            value = compute()
        try:
            with atomic_dir(where) as tmp:
                codec.write(value, tmp)
                # what the entry cost (the cold-run ledger sums it) and the entries its computation used
                seal(tmp, kind=kind, key=key, seconds=round(cost.seconds, 3), uses=cost.uses, **info)
            with contextlib.suppress(OSError, ValueError):
                _record(where, load_json(where / META))
        except PermissionError as err:
            warnings.warn(f"cache {cache_root()} is not writable ({err}); result not stored", RuntimeWarning, stacklevel=2)
    return value


def cached(kind: str, version: int = 1, ignore: tuple[str, ...] = ("progress",)) -> Callable:
    """Decorate a function so that its result is memoised under ``kind``.

    The key is the function's qualified name, ``version`` (bump it when the code changes what it
    returns) and a :func:`fingerprint` of its bound arguments (``ignore`` left out). The decorated
    function takes an extra keyword ``use_cache=True``; ``fn.is_cached(*args, **kwargs)`` says whether a
    call would be served from the cache.
    """

    def wrap(fn: Callable) -> Callable:
        sig = inspect.signature(fn)
        name = f"{fn.__module__}.{fn.__qualname__}"

        def key_of(args: tuple, kwargs: dict) -> str:
            bound = sig.bind(*args, **kwargs)
            bound.apply_defaults()
            return fingerprint(name, version, {k: v for k, v in bound.arguments.items() if k not in ignore})

        @functools.wraps(fn)
        def inner(*args: Any, use_cache: bool = True, **kwargs: Any) -> Any:
            key = key_of(args, kwargs)
            return memoise(kind, key, lambda: fn(*args, **kwargs), use_cache, producer=name, version=version)

        inner.uncached = fn  # type: ignore[attr-defined]
        inner.is_cached = lambda *args, **kwargs: is_complete(entry(kind, key_of(args, kwargs)))  # type: ignore[attr-defined]
        return inner

    return wrap
