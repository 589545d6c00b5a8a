"""Where data comes from: the offline mirror named by ``UNTRAC_DATA_DIR``, or the Hugging Face hub.

The mirror layout is documented in the mirror's own README (``corpora/``, ``testsets/``,
``wordnet/``; JSON Lines, one record per line).  Every loader of :mod:`untrac.data.corpora` and
:mod:`untrac.data.testsets` reads the mirror when ``UNTRAC_DATA_DIR`` is set and the hub otherwise
(``origin="auto"``); ``origin="mirror"`` / ``origin="hub"`` force one of the two.

Mirror files are checked once per process against a manifest (size, record count, SHA-256 per
file; :func:`manifest_in_force`), so that a truncated or altered copy fails loudly instead of
silently changing the data.  :func:`mirror_fingerprint` names the mirror's content, for cache keys.

This module only reads.  A mirror is written from the hub by :mod:`untrac.data.write_mirror`
(``python -m untrac.data.write_mirror OUT_DIR``).
"""
from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from untrac.hub import HubUnavailable, hub_access, offline, unavailable

ENV_VAR = "UNTRAC_DATA_DIR"
MANIFEST_NAME = "MANIFEST.json"
MANIFEST_FORMAT = "untrac-mirror-manifest/1"
PACKAGED_MANIFEST = "manifest.json"
"""The manifest of the shipped mirror, a package resource of :mod:`untrac.data`."""

WRITE_HINT = ("re-copy the mirror from its source, or rewrite it with `python -m "
              "untrac.data.write_mirror OUT_DIR`")

Origin = Literal["auto", "mirror", "hub"]
"""Where a loader reads from: ``"auto"`` (the mirror when ``UNTRAC_DATA_DIR`` is set, else the
hub), ``"mirror"`` (the mirror; error when unset) or ``"hub"`` (the Hugging Face hub)."""


class MirrorError(FileNotFoundError):
    """A mirror file is missing, malformed or altered (the message says which, and how to fix)."""


class DataUnavailableError(RuntimeError):
    """Neither the offline mirror nor the Hugging Face hub could provide a data set."""


class HubOfflineError(DataUnavailableError, HubUnavailable):
    """The hub cannot be reached, and no mirror (nor the local Hugging Face cache) has the data."""


@dataclass(frozen=True)
class HubSource:
    """Where one data set lives on the Hugging Face hub; every field is a ``load_dataset`` argument.

    ``datasets`` >= 4 no longer runs loading scripts, so point ``path`` at a repository holding
    Parquet/Arrow files, or use the hub's automatic conversion with
    ``revision="refs/convert/parquet"``.  ``text_field`` names the column holding the text.
    """

    path: str
    name: str | None = None
    split: str = "train"
    revision: str | None = None
    text_field: str = "text"

    def describe(self) -> str:
        """A short human-readable id, e.g. ``ArmelR/the-pile-splitted[Pile-CC]:train``."""
        out = self.path
        if self.name is not None:
            out += f"[{self.name}]"
        out += f":{self.split}"
        if self.revision is not None:
            out += f"@{self.revision}"
        return out


# --------------------------------------------------------------------------------------------
# Reading the mirror
# --------------------------------------------------------------------------------------------


def data_dir() -> Path | None:
    """The mirror directory from ``$UNTRAC_DATA_DIR``, or ``None`` when unset (then use the hub)."""
    value = os.environ.get(ENV_VAR)
    if not value:
        return None
    path = Path(value).expanduser()
    if not path.is_dir():
        raise MirrorError(f"{ENV_VAR}={value!r} is not a directory; point it at the data mirror.")
    return path


def mirror_file(relpath: str, *, verify: bool = True) -> Path | None:
    """Path of ``relpath`` inside the mirror, ``None`` when no mirror is configured.

    Raises :class:`MirrorError` when a mirror is configured but lacks the file, or (``verify``)
    when the file does not match the manifest in force (:func:`verify_file`).
    """
    root = data_dir()
    if root is None:
        return None
    path = root / relpath
    if not path.exists():
        raise MirrorError(f"{path} not found: the mirror at {ENV_VAR}={root} lacks {relpath!r}.")
    if verify:
        verify_file(root, relpath)
    return path


def use_mirror(origin: Origin = "auto") -> bool:
    """Whether a loader called with ``origin`` reads the mirror (``True``) or the hub."""
    if origin == "auto":
        return data_dir() is not None
    if origin == "mirror":
        if data_dir() is None:
            raise MirrorError(f"origin='mirror' but {ENV_VAR} is unset; point it at the data "
                              f"mirror.")
        return True
    if origin == "hub":
        return False
    raise ValueError(f"origin must be 'auto', 'mirror' or 'hub', not {origin!r}")


# --------------------------------------------------------------------------------------------
# Integrity: manifests and fingerprints
# --------------------------------------------------------------------------------------------

_DIGESTS: dict[tuple[str, int, int], dict[str, Any]] = {}
_MANIFESTS: dict[tuple[str, int, int], dict[str, Any]] = {}
_NOT_CONTENT = frozenset({"README.md", MANIFEST_NAME})  # left out of the fingerprint


def _stat_key(path: Path) -> tuple[str, int, int]:
    stat = path.stat()
    return str(path.resolve()), stat.st_size, stat.st_mtime_ns


def file_entry(path: str | Path) -> dict[str, Any]:
    """``{"bytes", "records", "sha256"}`` of one file (``records``: its non-blank lines), computed
    once per process per file version (cached by path, size and modification time)."""
    path = Path(path)
    key = _stat_key(path)
    entry = _DIGESTS.get(key)
    if entry is None:
        digest, records = hashlib.sha256(), 0
        with path.open("rb") as handle:
            for line in handle:
                digest.update(line)
                records += not line.isspace()
        entry = {"bytes": key[1], "records": records, "sha256": digest.hexdigest()}
        _DIGESTS[key] = entry
    return dict(entry)


def _data_files(root: Path) -> Iterator[Path]:
    for path in root.rglob("*"):
        rel = path.relative_to(root)
        if (path.is_file() and rel.as_posix() != MANIFEST_NAME and not path.name.endswith(".tmp")
                and not any(part.startswith(".") for part in rel.parts)):
            yield path


def build_manifest(root: str | Path) -> dict[str, Any]:
    """The manifest of the mirror at ``root``: every file but ``MANIFEST.json`` (and hidden or
    ``*.tmp`` files), as ``{"format": ..., "files": {relpath: {"bytes", "records", "sha256"}}}``."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise MirrorError(f"{root} is not a directory.")
    files = {path.relative_to(root).as_posix(): file_entry(path)
             for path in sorted(_data_files(root))}
    return {"format": MANIFEST_FORMAT, "files": files}


def _checked_manifest(data: Any, where: str) -> dict[str, Any]:
    files = data.get("files") if isinstance(data, dict) else None
    fields = {"bytes": int, "records": int, "sha256": str}
    if not isinstance(files, dict) or data.get("format") != MANIFEST_FORMAT or not all(
            isinstance(e, dict) and all(isinstance(e.get(k), t) for k, t in fields.items())
            for e in files.values()):
        raise MirrorError(f"{where}: not a mirror manifest of format {MANIFEST_FORMAT!r}; rewrite "
                          f"it with `python -m untrac.data.write_mirror --manifest DIR`.")
    return data


def _load_manifest(path: Path) -> dict[str, Any]:
    key = _stat_key(path)
    if key not in _MANIFESTS:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise MirrorError(f"{path}: unreadable manifest ({exc}); rewrite it with `python -m "
                              f"untrac.data.write_mirror --manifest {path.parent}`.") from exc
        _MANIFESTS[key] = _checked_manifest(data, str(path))
    return _MANIFESTS[key]


@lru_cache(maxsize=1)
def packaged_manifest() -> dict[str, Any]:
    """The manifest of the project's shipped mirror, packaged with untrac (do not modify it)."""
    resource = resources.files("untrac.data").joinpath(PACKAGED_MANIFEST)
    try:
        data = json.loads(resource.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:  # a broken install: warn, and check nothing
        warnings.warn(f"untrac/data/{PACKAGED_MANIFEST} is missing or unreadable ({exc}): copies "
                      f"of the shipped data mirror are not checked; reinstall untrac.",
                      RuntimeWarning, stacklevel=2)
        return {"format": MANIFEST_FORMAT, "files": {}}
    return _checked_manifest(data, f"untrac/data/{PACKAGED_MANIFEST}")


def manifest_in_force(root: str | Path | None = None) -> tuple[dict[str, Any], str] | None:
    """``(manifest, where it is from)`` that the files of the mirror ``root`` (default: the
    configured one) are checked against: the mirror's own ``MANIFEST.json``; else, for a copy of
    the project's shipped mirror (same ``README.md``), the packaged ``untrac/data/manifest.json``;
    else ``None`` (your own mirror without manifest: nothing is checked)."""
    root = Path(root).expanduser() if root is not None else data_dir()
    if root is None:
        return None
    own = root / MANIFEST_NAME
    if own.is_file():
        return _load_manifest(own), str(own)
    shipped = packaged_manifest()
    readme, expected = root / "README.md", shipped["files"].get("README.md")
    if expected and readme.is_file() and file_entry(readme)["sha256"] == expected["sha256"]:
        return shipped, f"the shipped mirror's manifest (untrac/data/{PACKAGED_MANIFEST})"
    return None


def verify_file(root: str | Path, relpath: str) -> None:
    """Check the mirror file ``root/relpath`` against the manifest in force (if it lists it):
    hashed once per process per file version; :class:`MirrorError` names the file, the expected
    and found record counts and hashes, and how to fix it."""
    root = Path(root).expanduser()
    in_force = manifest_in_force(root)
    relpath = Path(relpath).as_posix()
    if in_force is None or relpath not in in_force[0]["files"]:
        return
    expected, where = in_force[0]["files"][relpath], in_force[1]
    path = root / relpath
    found = file_entry(path)
    if found["sha256"] == expected["sha256"]:
        return
    state = "truncated" if found["bytes"] < expected["bytes"] else "altered"
    raise MirrorError(
        f"{path} does not match {where}: expected {expected['records']} records, "
        f"{expected['bytes']} bytes, sha256 {expected['sha256'][:16]}..., found "
        f"{found['records']} records, {found['bytes']} bytes, sha256 {found['sha256'][:16]}... "
        f"The file is {state}: {WRITE_HINT} (for a mirror you changed on purpose, record its "
        f"content with `python -m untrac.data.write_mirror --manifest {root}`).")


def mirror_fingerprint(root: str | Path | None = None) -> str:
    """A stable hash of the content of the mirror ``root`` (default: the configured one), for
    cache keys: SHA-256 over the sorted ``(relpath, sha256)`` of its files but ``README.md`` and
    ``MANIFEST.json``, from the manifest in force (no hashing) or else by hashing every file.
    Equal content, equal fingerprint, wherever the mirror lives; ``"hub"`` when none is set."""
    root = Path(root).expanduser() if root is not None else data_dir()
    if root is None:
        return "hub"
    in_force = manifest_in_force(root)
    files = in_force[0]["files"] if in_force else build_manifest(root)["files"]
    content = sorted((rel, entry["sha256"]) for rel, entry in files.items()
                     if rel not in _NOT_CONTENT)
    return hashlib.sha256(json.dumps(content, separators=(",", ":")).encode()).hexdigest()


# --------------------------------------------------------------------------------------------
# Reading JSON Lines
# --------------------------------------------------------------------------------------------

FieldTypes = Mapping[str, "type | tuple[type, ...]"]

_JSONL_CACHE: dict[tuple[str, int, int], tuple[tuple[int, dict[str, Any]], ...]] = {}
_JSONL_CACHE_SIZE = 16


def read_jsonl(relpath: str, required: FieldTypes | None = None) -> list[dict[str, Any]]:
    """Records of the mirror file ``relpath`` (JSON Lines), validated.

    The file is first checked against the manifest in force (:func:`verify_file`).  ``required``
    maps field names to the type(s) their value must have.  A missing file, a line that is not a
    JSON object, or a record lacking a required field (or holding a value of another type) raises
    :class:`MirrorError` naming the file and the 1-based line.  Blank lines are skipped.  Parsed
    files are cached in memory (keyed by path, size and modification time); the returned list and
    dicts are fresh copies, so callers may modify them.
    """
    path = mirror_file(relpath)
    if path is None:
        raise MirrorError(f"{ENV_VAR} is unset: cannot read mirror file {relpath!r}.")
    if not path.is_file():
        raise MirrorError(f"{path} is not a file (mirror {ENV_VAR}={path.parent}).")
    key = _stat_key(path)
    records = _JSONL_CACHE.get(key)
    if records is None:
        records = tuple(_parse_jsonl(path))
        while len(_JSONL_CACHE) >= _JSONL_CACHE_SIZE:
            _JSONL_CACHE.pop(next(iter(_JSONL_CACHE)))
        _JSONL_CACHE[key] = records
    checked = []
    for lineno, record in records:
        for field, types in (required or {}).items():
            if field not in record:
                raise MirrorError(f"{path}, line {lineno}: missing field {field!r} (record keys: "
                                  f"{sorted(record)}); {WRITE_HINT}.")
            value = record[field]
            is_bool = isinstance(value, bool) and bool not in _as_tuple(types)  # bool is an int
            if not isinstance(value, types) or is_bool:
                raise MirrorError(f"{path}, line {lineno}: field {field!r} has type "
                                  f"{type(value).__name__}, expected {_type_names(types)}.")
        checked.append({k: list(v) if isinstance(v, list) else v for k, v in record.items()})
    return checked


def _parse_jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    try:
        handle = path.open(encoding="utf-8")
    except OSError as exc:
        raise MirrorError(f"{path}: cannot be read ({exc}).") from exc
    with handle:
        try:
            for lineno, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise MirrorError(f"{path}, line {lineno}: invalid JSON ({exc.msg} at column "
                                      f"{exc.colno}).") from exc
                if not isinstance(record, dict):
                    raise MirrorError(f"{path}, line {lineno}: expected a JSON object, got "
                                      f"{type(record).__name__}.")
                yield lineno, record
        except UnicodeDecodeError as exc:
            raise MirrorError(f"{path}: not valid UTF-8 ({exc}).") from exc


def _as_tuple(types: type | tuple[type, ...]) -> tuple[type, ...]:
    return types if isinstance(types, tuple) else (types,)


def _type_names(types: type | tuple[type, ...]) -> str:
    return " or ".join(t.__name__ for t in _as_tuple(types))


# --------------------------------------------------------------------------------------------
# Reading the hub
# --------------------------------------------------------------------------------------------


def _unavailable(source: HubSource, exc: BaseException) -> DataUnavailableError:
    if isinstance(exc, HubUnavailable):
        return HubOfflineError(f"could not load {source.describe()}: {exc}")
    return DataUnavailableError(
        f"could not load {source.describe()} from the Hugging Face hub "
        f"({type(exc).__name__}: {exc}). No offline mirror is configured: set {ENV_VAR} to a data "
        f"mirror directory (write one on a machine with internet access with "
        f"`python -m untrac.data.write_mirror OUT_DIR`), or fix the hub id/config/revision.")


def load_hub(source: HubSource, *, streaming: bool = False) -> Any:
    """``datasets.load_dataset`` for ``source``; failures become :class:`DataUnavailableError`.

    Returns a ``datasets.Dataset`` (or an ``IterableDataset`` when ``streaming``).  When the hub is
    out of reach (:func:`untrac.hub.offline`), the libraries are put into offline mode first, so
    the call fails within about a second unless the local Hugging Face cache has the data; the
    error is then a :class:`HubOfflineError` (also an :class:`untrac.hub.HubUnavailable`).
    Errors raised later while iterating a streamed data set are not wrapped here: use
    :func:`iter_hub`.
    """
    try:
        import datasets

        with hub_access(f"loading {source.describe()}"):
            return datasets.load_dataset(source.path, source.name, split=source.split,
                                         revision=source.revision, streaming=streaming)
    except Exception as exc:  # offline, network, authentication (gated sets), missing config, ...
        raise _unavailable(source, exc) from exc


def iter_hub(source: HubSource, *, limit: int | None = None) -> Iterator[dict[str, Any]]:
    """Stream the first ``limit`` rows (all when ``None``) of ``source`` from the hub."""
    stream = load_hub(source, streaming=True)
    try:
        for i, row in enumerate(stream):
            if limit is not None and i >= limit:
                break
            yield row
    except DataUnavailableError:
        raise
    except Exception as exc:
        if offline():
            exc = unavailable(f"streaming {source.describe()}", str(exc))
        raise _unavailable(source, exc) from exc
