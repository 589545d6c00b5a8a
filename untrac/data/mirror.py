"""Where data comes from: the offline mirror named by ``UNTRAC_DATA_DIR``, or the Hugging Face hub.

The mirror layout is documented in the mirror's own README (``corpora/``, ``testsets/``,
``wordnet/``; JSON Lines, one record per line).  Every loader of :mod:`untrac.data.corpora` and
:mod:`untrac.data.testsets` reads the mirror when ``UNTRAC_DATA_DIR`` is set and the hub otherwise
(``origin="auto"``); ``origin="mirror"`` / ``origin="hub"`` force one of the two.

This module also writes such a mirror from the hub (:func:`write_mirror`, or
``python -m untrac.data.mirror OUT_DIR``), so that a machine with internet access can prepare the
data of Section 5.2 of the paper once and later work offline.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

ENV_VAR = "UNTRAC_DATA_DIR"

Origin = Literal["auto", "mirror", "hub"]
"""Where a loader reads from: ``"auto"`` (the mirror when ``UNTRAC_DATA_DIR`` is set, else the
hub), ``"mirror"`` (the mirror; error when unset) or ``"hub"`` (the Hugging Face hub)."""


class MirrorError(FileNotFoundError):
    """A mirror file is missing or malformed (the message says which, and how to fix it)."""


class DataUnavailableError(RuntimeError):
    """Neither the offline mirror nor the Hugging Face hub could provide a data set."""


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


def mirror_file(relpath: str) -> Path | None:
    """Path of ``relpath`` inside the mirror, ``None`` when no mirror is configured.

    Raises :class:`MirrorError` when a mirror is configured but lacks the file.
    """
    root = data_dir()
    if root is None:
        return None
    path = root / relpath
    if not path.exists():
        raise MirrorError(f"{path} not found: the mirror at {ENV_VAR}={root} lacks {relpath!r}.")
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


FieldTypes = Mapping[str, "type | tuple[type, ...]"]

_JSONL_CACHE: dict[tuple[str, int, int], tuple[tuple[int, dict[str, Any]], ...]] = {}
_JSONL_CACHE_SIZE = 16


def read_jsonl(relpath: str, required: FieldTypes | None = None) -> list[dict[str, Any]]:
    """Records of the mirror file ``relpath`` (JSON Lines), validated.

    ``required`` maps field names to the type(s) their value must have.  A missing file, a line
    that is not a JSON object, or a record lacking a required field (or holding a value of another
    type) raises :class:`MirrorError` naming the file and the 1-based line.  Blank lines are
    skipped.  Parsed files are cached in memory (keyed by path, size and modification time); the
    returned list and dicts are fresh copies, so callers may modify them.
    """
    path = mirror_file(relpath)
    if path is None:
        raise MirrorError(f"{ENV_VAR} is unset: cannot read mirror file {relpath!r}.")
    if not path.is_file():
        raise MirrorError(f"{path} is not a file (mirror {ENV_VAR}={path.parent}).")
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
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
                                  f"{sorted(record)}); rewrite the mirror with `python -m "
                                  f"untrac.data.mirror`.")
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
    return DataUnavailableError(
        f"could not load {source.describe()} from the Hugging Face hub "
        f"({type(exc).__name__}: {exc}). No offline mirror is configured: set {ENV_VAR} to a data "
        f"mirror directory (write one on a machine with internet access with "
        f"`python -m untrac.data.mirror OUT_DIR`), or fix the hub id/config/revision.")


def load_hub(source: HubSource, *, streaming: bool = False) -> Any:
    """``datasets.load_dataset`` for ``source``; failures become :class:`DataUnavailableError`.

    Returns a ``datasets.Dataset`` (or an ``IterableDataset`` when ``streaming``).  Errors raised
    later while iterating a streamed data set are not wrapped here: use :func:`iter_hub`.
    """
    try:
        import datasets

        return datasets.load_dataset(source.path, source.name, split=source.split,
                                     revision=source.revision, streaming=streaming)
    except Exception as exc:  # network, authentication (gated sets), missing config, ...
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
        raise _unavailable(source, exc) from exc


# --------------------------------------------------------------------------------------------
# Writing a mirror from the hub
# --------------------------------------------------------------------------------------------


def write_jsonl(path: Path, records: Iterable[Mapping[str, Any]]) -> int:
    """Write ``records`` as UTF-8 JSON Lines to ``path`` (atomically); returns the record count."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    count = 0
    with tmp.open("w", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(dict(record), ensure_ascii=False) + "\n")
            count += 1
    tmp.replace(path)
    return count


_README = """# Data mirror written by `python -m untrac.data.mirror`

Same layout and record schema as the project's offline mirror (see `untrac/data/mirror.py`);
point `UNTRAC_DATA_DIR` at this directory to work offline.  Written from the Hugging Face hub:

{lines}
"""


def write_mirror(out_dir: str | Path, *, corpora: Sequence[str] | None = None,
                 corpora_max_docs: int | None = None,
                 corpora_max_chars: int | None = 20_000_000,
                 testsets: Sequence[str] | None = ("toxigen", "winobias", "truthfulqa"),
                 toxigen_max_per_group: int | None = 4_000, seed: int = 0,
                 overwrite: bool = False,
                 log: Callable[[str], None] | None = print) -> dict[str, Path]:
    """Download the Section 5.2 data from the hub and write it in the mirror layout.

    Writes ``corpora/<file>.jsonl`` (records ``{"text", "source"}``) for each corpus of
    :data:`untrac.data.corpora.CORPORA` (or the names in ``corpora``), keeping the first
    ``corpora_max_docs`` documents and about ``corpora_max_chars`` characters of each (``None``:
    no limit).  The default 20 M characters give roughly 5 M tokens (~5,000 blocks of 1,024) per
    corpus; the paper's 40,000 blocks need about 170 M characters per corpus (400 M for Pile-CC in
    the different-size setting).  BookCorpus rows are single sentences, so cap it by characters.
    and ``testsets/<name>.jsonl`` in the schema of the shipped mirror for each name in
    ``testsets``.  ToxiGen keeps only the toxic (``prompt_label == 1``) generations, at most
    ``toxigen_max_per_group`` per target group (sampled with ``seed``).  The ``wordnet/`` files of
    the shipped mirror are not on the hub and are not written.

    The hub is always used, whatever ``UNTRAC_DATA_DIR`` says.  Existing files are kept unless
    ``overwrite``.  Returns ``{"corpora/web_mix.jsonl": path, ...}`` for the files written.
    """
    from untrac.data import corpora as corpora_mod
    from untrac.data import testsets as testsets_mod

    out = Path(out_dir).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    say = log or (lambda _msg: None)
    written: dict[str, Path] = {}
    provenance: list[str] = []

    def target(relpath: str) -> Path | None:
        path = out / relpath
        if path.exists() and not overwrite:
            say(f"keep {path} (exists; pass overwrite=True / --overwrite to replace it)")
            return None
        return path

    for name in (corpora_mod.CORPUS_NAMES if corpora is None else corpora):
        spec = corpora_mod.corpus_spec(name)
        path = target(spec.mirror_file)
        if path is None:
            continue
        say(f"{name}: downloading {spec.hub.describe()} ...")
        records = corpora_mod.corpus_records(name, max_docs=corpora_max_docs,
                                             max_chars=corpora_max_chars, origin="hub")
        count = write_jsonl(path, records)
        say(f"{name}: wrote {count} documents to {path}")
        written[spec.mirror_file] = path
        provenance.append(f"- `{spec.mirror_file}`: {name}, `{spec.hub.describe()}`, "
                          f"{count} documents")

    for name in testsets or ():
        relpath = testsets_mod.mirror_relpath(name)
        path = target(relpath)
        if path is None:
            continue
        say(f"{name}: downloading ...")
        options: dict[str, Any] = {}
        if name == "toxigen":
            options = {"max_per_group": toxigen_max_per_group, "seed": seed}
        records = testsets_mod.raw_records(name, origin="hub", **options)
        count = write_jsonl(path, records)
        say(f"{name}: wrote {count} records to {path}")
        written[relpath] = path
        provenance.append(f"- `{relpath}`: {count} records")

    if written:
        (out / "README.md").write_text(_README.format(lines="\n".join(provenance)),
                                       encoding="utf-8")
    return written


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``python -m untrac.data.mirror OUT_DIR [options]``."""
    parser = argparse.ArgumentParser(
        prog="python -m untrac.data.mirror",
        description="Download the pretraining corpora and test sets of Section 5.2 of the UnTrac "
                    "paper from the Hugging Face hub into an offline mirror; then set "
                    f"{ENV_VAR}=OUT_DIR to use it.")
    parser.add_argument("out_dir", type=Path, help="directory to write the mirror into")
    parser.add_argument("--corpora", nargs="*", default=None, metavar="NAME",
                        help="corpus names (default: all eight; none with an empty list)")
    parser.add_argument("--corpora-max-docs", type=_optional_int, default=None,
                        help="documents kept per corpus ('none': no limit, the default)")
    parser.add_argument("--corpora-max-chars", type=_optional_int, default=20_000_000,
                        help="characters kept per corpus ('none': no limit; default 2e7, about "
                             "5M tokens; the paper's 40k blocks of 1024 tokens need ~1.7e8)")
    parser.add_argument("--testsets", nargs="*", default=["toxigen", "winobias", "truthfulqa"],
                        metavar="NAME", help="test sets (default: all three)")
    parser.add_argument("--toxigen-max-per-group", type=_optional_int, default=4_000,
                        help="toxic ToxiGen statements kept per group ('none': all)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--overwrite", action="store_true", help="replace existing files")
    args = parser.parse_args(argv)
    try:
        written = write_mirror(args.out_dir, corpora=args.corpora,
                               corpora_max_docs=args.corpora_max_docs,
                               corpora_max_chars=args.corpora_max_chars,
                               testsets=args.testsets,
                               toxigen_max_per_group=args.toxigen_max_per_group,
                               seed=args.seed, overwrite=args.overwrite)
    except (DataUnavailableError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {len(written)} files; use them with {ENV_VAR}={args.out_dir}")
    return 0


def _optional_int(text: str) -> int | None:
    return None if text.lower() in {"none", "all", ""} else int(float(text))


if __name__ == "__main__":
    raise SystemExit(main())
