"""Mirror integrity: manifests (the mirror's own, or the packaged one of the shipped mirror), the
once-per-process check of each file, and content fingerprints."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import types
from pathlib import Path

import pytest

from conftest import MIRROR, needs_mirror
from untrac.data import mirror, synthetic, testsets
from untrac.data import write_mirror as writer
from untrac.data.mirror import (ENV_VAR, MirrorError, build_manifest, manifest_in_force,
                                mirror_fingerprint, packaged_manifest, read_jsonl)


def _write(path: Path, lines: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def _own_mirror(root: Path) -> Path:
    _write(root / "corpora/news.jsonl", [json.dumps({"text": f"doc {i}"}) for i in range(3)])
    _write(root / "testsets/extra.jsonl", ['{"text": "x"}'])
    return root


def _copy_of_shipped(tmp_path: Path, *relpaths: str) -> Path:
    """A copy of the shipped mirror's README and ``relpaths`` (other files symlinked)."""
    src, out = Path(MIRROR), tmp_path / "copy"
    for rel in packaged_manifest()["files"]:
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        if rel == "README.md" or rel in relpaths:
            shutil.copyfile(src / rel, out / rel)
        else:
            os.symlink(src / rel, out / rel)
    return out


def _truncate(path: Path, lines: int) -> None:
    kept = path.read_text(encoding="utf-8").splitlines(keepends=True)[:lines]
    path.write_text("".join(kept), encoding="utf-8")


# ---------------------------------------------------------------------------------------------
# The shipped mirror and the packaged manifest
# ---------------------------------------------------------------------------------------------


@needs_mirror
def test_packaged_manifest_describes_the_shipped_mirror():
    assert build_manifest(MIRROR)["files"] == packaged_manifest()["files"]
    manifest, where = manifest_in_force(MIRROR)
    assert "untrac/data/manifest.json" in where
    assert manifest["files"]["testsets/truthfulqa.jsonl"]["records"] == 817


@needs_mirror
def test_truthfulqa_cut_at_a_line_boundary_fails_loudly(monkeypatch, tmp_path):
    copy = _copy_of_shipped(tmp_path, "testsets/truthfulqa.jsonl")
    _truncate(copy / "testsets/truthfulqa.jsonl", 400)
    monkeypatch.setenv(ENV_VAR, str(copy))
    with pytest.raises(MirrorError) as info:
        testsets.load_truthfulqa()  # before: silently 2 categories instead of 9
    message = str(info.value)
    assert "truthfulqa.jsonl" in message and "truncated" in message
    assert "expected 817 records" in message and "found 400 records" in message
    assert "untrac.data.write_mirror" in message
    assert len(testsets.load_winobias()) > 0  # the intact files still load


@needs_mirror
def test_truncated_wordnet_index_fails_loudly(monkeypatch, tmp_path):
    copy = _copy_of_shipped(tmp_path, "wordnet/index.noun")
    _truncate(copy / "wordnet/index.noun", 50_000)
    with pytest.raises(MirrorError, match=r"index\.noun does not match.*expected \d+ records"):
        synthetic.read_wordnet(copy)
    monkeypatch.setenv(ENV_VAR, str(copy))
    synthetic.wordnet_lemmas.cache_clear()
    try:
        with pytest.raises(MirrorError, match=r"index\.noun"):
            synthetic.wordnet_lemmas()
    finally:
        synthetic.wordnet_lemmas.cache_clear()


@needs_mirror
def test_a_copy_with_another_readme_is_an_own_mirror(monkeypatch, tmp_path):
    copy = _copy_of_shipped(tmp_path, "testsets/truthfulqa.jsonl")
    (copy / "README.md").write_text("# my mirror\n", encoding="utf-8")
    _truncate(copy / "testsets/truthfulqa.jsonl", 400)
    assert manifest_in_force(copy) is None
    monkeypatch.setenv(ENV_VAR, str(copy))
    assert len(read_jsonl("testsets/truthfulqa.jsonl")) == 400  # unchecked, as asked


# ---------------------------------------------------------------------------------------------
# A mirror's own MANIFEST.json
# ---------------------------------------------------------------------------------------------


def test_own_manifest_catches_truncation_until_rewritten(monkeypatch, tmp_path, capsys):
    root = _own_mirror(tmp_path / "m")
    writer.write_manifest(root)
    monkeypatch.setenv(ENV_VAR, str(root))
    assert len(read_jsonl("corpora/news.jsonl")) == 3
    _truncate(root / "corpora/news.jsonl", 2)
    with pytest.raises(MirrorError) as info:
        read_jsonl("corpora/news.jsonl")
    message = str(info.value)
    assert str(root / "corpora/news.jsonl") in message and str(root / "MANIFEST.json") in message
    assert "expected 3 records" in message and "found 2 records" in message
    assert f"--manifest {root}" in message
    news = root / "corpora/news.jsonl"
    news.write_text('{"text": "doc 0"}\n{"text": "doc X"}\n{"text": "doc 2"}\n', encoding="utf-8")
    os.utime(news, ns=(news.stat().st_atime_ns, news.stat().st_mtime_ns + 10**9))  # a new version
    with pytest.raises(MirrorError, match="altered"):  # same size and count, other content
        read_jsonl("corpora/news.jsonl")
    assert writer.main(["--manifest", str(root)]) == 0  # record the change on purpose
    assert "MANIFEST.json" in capsys.readouterr().out
    assert [r["text"] for r in read_jsonl("corpora/news.jsonl")][1] == "doc X"


def test_files_not_in_a_manifest_are_not_checked(monkeypatch, tmp_path):
    root = _own_mirror(tmp_path / "m")
    monkeypatch.setenv(ENV_VAR, str(root))
    assert manifest_in_force() is None  # no MANIFEST.json, no shipped README
    assert len(read_jsonl("corpora/news.jsonl")) == 3
    writer.write_manifest(root)
    _write(root / "testsets/later.jsonl", ['{"text": "added after the manifest"}'])
    assert read_jsonl("testsets/later.jsonl") == [{"text": "added after the manifest"}]


def test_malformed_manifest_is_reported(monkeypatch, tmp_path):
    root = _own_mirror(tmp_path / "m")
    (root / "MANIFEST.json").write_text('{"files": "nope"}', encoding="utf-8")
    monkeypatch.setenv(ENV_VAR, str(root))
    with pytest.raises(MirrorError, match="MANIFEST.json: not a mirror manifest"):
        read_jsonl("corpora/news.jsonl")
    (root / "MANIFEST.json").write_text("{", encoding="utf-8")
    with pytest.raises(MirrorError, match="unreadable manifest"):
        read_jsonl("corpora/news.jsonl")


def test_each_file_is_hashed_once_per_version(monkeypatch, tmp_path):
    root = _own_mirror(tmp_path / "m")
    writer.write_manifest(root)
    hashed: list[int] = []

    def sha256(*args):
        hashed.append(1)
        return hashlib.sha256(*args)

    monkeypatch.setattr(mirror, "hashlib", types.SimpleNamespace(sha256=sha256))
    monkeypatch.setattr(mirror, "_DIGESTS", {})  # forget what write_manifest hashed
    monkeypatch.setenv(ENV_VAR, str(root))
    for _ in range(3):
        read_jsonl("corpora/news.jsonl")
        mirror.mirror_file("corpora/news.jsonl")
    assert len(hashed) == 1
    _write(root / "corpora/news.jsonl", ['{"text": "new"}'])  # a new version is checked again
    with pytest.raises(MirrorError):
        read_jsonl("corpora/news.jsonl")
    assert len(hashed) == 2
    assert mirror.mirror_file("corpora/news.jsonl", verify=False) == root / "corpora/news.jsonl"


# ---------------------------------------------------------------------------------------------
# Fingerprints
# ---------------------------------------------------------------------------------------------


def test_fingerprint_follows_content_not_place(monkeypatch, tmp_path):
    monkeypatch.delenv(ENV_VAR, raising=False)
    assert mirror_fingerprint() == "hub"
    first = _own_mirror(tmp_path / "a")
    hashed = mirror_fingerprint(first)
    assert len(hashed) == 64
    writer.write_manifest(first)
    assert mirror_fingerprint(first) == hashed  # from the manifest now: same content, same value
    second = _own_mirror(tmp_path / "b")
    (second / "README.md").write_text("# notes\n", encoding="utf-8")  # not content
    monkeypatch.setenv(ENV_VAR, str(second))
    assert mirror_fingerprint() == hashed
    _write(second / "testsets/extra.jsonl", ['{"text": "y"}'])
    assert mirror_fingerprint() != hashed


@needs_mirror
def test_fingerprint_of_the_shipped_mirror_needs_no_hashing(tmp_path):
    copy = tmp_path / "links"  # the shipped files, without README: hashed, no manifest applies
    for rel in packaged_manifest()["files"]:
        if rel != "README.md":
            (copy / rel).parent.mkdir(parents=True, exist_ok=True)
            os.symlink(Path(MIRROR) / rel, copy / rel)
    assert manifest_in_force(copy) is None
    assert mirror_fingerprint(MIRROR) == mirror_fingerprint(copy)
