"""Write an offline data mirror from the Hugging Face hub, and record mirror manifests.

Command line (see ``--help``)::

    python -m untrac.data.write_mirror OUT_DIR [--corpora ...] [--testsets ...] [...]
    python -m untrac.data.write_mirror --manifest DIR [--output FILE]
    python -m untrac.data.write_mirror --packaged DIR

The first downloads the data of Section 5.2 of the paper (:func:`write_mirror`) so that a machine
with internet access can prepare it once and later work offline (``UNTRAC_DATA_DIR=OUT_DIR``); it
also writes the mirror's ``MANIFEST.json``.  ``--manifest`` records the current content of a
mirror (after editing it on purpose) in ``DIR/MANIFEST.json``.  ``--packaged`` regenerates the
files packaged with untrac from the project's shipped mirror: the manifest
``untrac/data/manifest.json`` and the WordNet word lists of the synthetic tasks.

The top of the data layer: it imports the readers (:mod:`untrac.data.mirror`, ``corpora``,
``testsets``); nothing imports it.
"""
from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

from untrac.data import corpora as corpora_mod
from untrac.data import testsets as testsets_mod
from untrac.data.mirror import (ENV_VAR, MANIFEST_NAME, PACKAGED_MANIFEST, DataUnavailableError,
                                MirrorError, build_manifest, packaged_manifest)


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


def write_manifest(root: str | Path, output: str | Path | None = None) -> Path:
    """Record the content of the mirror at ``root`` (:func:`untrac.data.mirror.build_manifest`)
    in ``output`` (default ``root/MANIFEST.json``), atomically; returns the path written."""
    root = Path(root).expanduser()
    target = Path(output).expanduser() if output is not None else root / MANIFEST_NAME
    text = json.dumps(build_manifest(root), indent=1, sort_keys=True) + "\n"
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(target)
    return target


def packaged_paths() -> dict[str, Path]:
    """Where the packaged files live in the source tree: ``manifest`` and ``word_lists``."""
    from untrac.data import synthetic

    base = Path(str(resources.files("untrac.data")))
    return {"manifest": base / PACKAGED_MANIFEST, "word_lists": synthetic.packaged_words_path()}


def write_packaged(mirror: str | Path) -> dict[str, Path]:
    """Regenerate the packaged manifest and word lists from the shipped mirror at ``mirror``."""
    from untrac.data import synthetic

    paths = packaged_paths()
    write_manifest(mirror, paths["manifest"])
    packaged_manifest.cache_clear()
    synthetic.write_word_lists(paths["word_lists"], mirror)
    return paths


_README = """# Data mirror written by `python -m untrac.data.write_mirror`

Same layout and record schema as the project's offline mirror (see `untrac/data/mirror.py`);
point `UNTRAC_DATA_DIR` at this directory to work offline.  `MANIFEST.json` records each file's
size, record count and SHA-256; untrac checks the files against it when reading them.  Written
from the Hugging Face hub:

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
    Also writes ``testsets/<name>.jsonl`` in the schema of the shipped mirror for each name in
    ``testsets``.  ToxiGen keeps only the toxic (``prompt_label == 1``) generations, at most
    ``toxigen_max_per_group`` per target group (sampled with ``seed``).  The ``wordnet/`` files of
    the shipped mirror are not on the hub and are not written.  Finally ``MANIFEST.json`` records
    every file of the mirror (:func:`write_manifest`).

    The hub is always used, whatever ``UNTRAC_DATA_DIR`` says.  Existing files are kept unless
    ``overwrite``.  Returns ``{"corpora/web_mix.jsonl": path, ...}`` for the files written.
    """
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
    say(f"recorded the mirror's content in {write_manifest(out)}")
    return written


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``python -m untrac.data.write_mirror OUT_DIR [options]`` (see ``--help``)."""
    parser = argparse.ArgumentParser(
        prog="python -m untrac.data.write_mirror",
        description="Download the pretraining corpora and test sets of Section 5.2 of the UnTrac "
                    "paper from the Hugging Face hub into an offline mirror; then set "
                    f"{ENV_VAR}=OUT_DIR to use it.")
    parser.add_argument("out_dir", type=Path, nargs="?", help="directory to write the mirror into")
    parser.add_argument("--manifest", type=Path, metavar="DIR",
                        help="only record the content of the mirror DIR in DIR/MANIFEST.json")
    parser.add_argument("--output", "-o", type=Path, metavar="FILE",
                        help="with --manifest: write the manifest to FILE instead")
    parser.add_argument("--packaged", type=Path, metavar="DIR",
                        help="only regenerate the manifest and word lists packaged with untrac "
                             "from the project's shipped mirror DIR")
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
    if sum(x is not None for x in (args.out_dir, args.manifest, args.packaged)) != 1:
        parser.error("give exactly one of OUT_DIR, --manifest DIR or --packaged DIR")
    try:
        if args.manifest is not None:
            print(f"wrote {write_manifest(args.manifest, args.output)}")
            return 0
        if args.packaged is not None:
            for path in write_packaged(args.packaged).values():
                print(f"wrote {path}")
            return 0
        written = write_mirror(args.out_dir, corpora=args.corpora,
                               corpora_max_docs=args.corpora_max_docs,
                               corpora_max_chars=args.corpora_max_chars,
                               testsets=args.testsets,
                               toxigen_max_per_group=args.toxigen_max_per_group,
                               seed=args.seed, overwrite=args.overwrite)
    except (DataUnavailableError, MirrorError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {len(written)} files; use them with {ENV_VAR}={args.out_dir}")
    return 0


def _optional_int(text: str) -> int | None:
    return None if text.lower() in {"none", "all", ""} else int(float(text))


if __name__ == "__main__":
    raise SystemExit(main())
