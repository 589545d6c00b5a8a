"""A fresh clone's paths: without the data mirror the tests that need it are skipped, loudly; a mirror
promised (CI: UNTRAC_REQUIRE_MIRROR=1, or UNTRAC_DATA_DIR set) but absent is an error naming the way
to get one; and the tiny fixture mirror of tests/fixtures/mirror serves the readers' unit tests."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import FIXTURE_MIRROR

ROOT = Path(__file__).resolve().parent.parent
MIRROR_TEST = "tests/test_synthetic.py::test_family_b_answers_are_right"  # a fast test marked needs_mirror


def _pytest(env_changes: dict[str, str | None], *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("UNTRAC_DATA_DIR", "UNTRAC_REQUIRE_MIRROR")}
    env.update({k: v for k, v in env_changes.items() if v is not None})
    env["OMP_NUM_THREADS"] = "1"
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


# ----------------------------------------------------------------------------- a missing mirror


def test_without_a_mirror_the_mirror_tests_are_skipped_and_the_run_says_how_to_get_one():
    run = _pytest({}, MIRROR_TEST)
    out = run.stdout + run.stderr
    assert run.returncode == 0, out
    assert "1 skipped" in out
    assert "1 tests SKIPPED: no offline data mirror" in out and "UNTRAC_DATA_DIR is not set" in out
    assert "make data" in out and "untrac.data.write_mirror" in out


@pytest.mark.parametrize("env, why", [
    ({"UNTRAC_REQUIRE_MIRROR": "1"}, "UNTRAC_REQUIRE_MIRROR=1 but UNTRAC_DATA_DIR is not set"),
    ({"UNTRAC_REQUIRE_MIRROR": "1", "UNTRAC_DATA_DIR": "/nonexistent/mirror"},
     "UNTRAC_DATA_DIR=/nonexistent/mirror is not a directory"),
    ({"UNTRAC_DATA_DIR": "/nonexistent/mirror"}, "UNTRAC_DATA_DIR=/nonexistent/mirror is not a directory"),
])
def test_a_promised_mirror_that_is_missing_fails_before_any_test(env, why):
    run = _pytest(env, MIRROR_TEST)
    out = run.stdout + run.stderr
    assert run.returncode == 4, out  # pytest's usage error: nothing ran, nothing was skipped
    assert why in out and "make data" in out
    assert "passed" not in out and "skipped" not in out


def test_ci_requires_the_mirror_and_runs_the_readme_command():
    ci = (ROOT / ".ci" / "run").read_text()
    assert "UNTRAC_REQUIRE_MIRROR=1" in ci and "make test" in ci
    if shutil.which("bash") is None:
        pytest.skip("no bash")
    env = {**os.environ, "UNTRAC_DATA_DIR": "/nonexistent/mirror"}
    run = subprocess.run(["bash", str(ROOT / ".ci" / "run")], env=env, capture_output=True, text=True, timeout=60)
    assert run.returncode == 1 and "UNTRAC_DATA_DIR=/nonexistent/mirror is not a directory" in run.stderr


@pytest.mark.skipif(shutil.which("make") is None, reason="no make")
def test_make_names_the_mirror_or_says_how_to_get_one():
    def make(*args: str) -> subprocess.CompletedProcess:
        env = {k: v for k, v in os.environ.items() if k != "UNTRAC_DATA_DIR"}
        return subprocess.run(["make", "-s", "--no-print-directory", *args], cwd=ROOT, env=env, capture_output=True,
                              text=True, timeout=60)

    found = make("check-mirror", f"UNTRAC_DATA_DIR={FIXTURE_MIRROR}")
    assert found.returncode == 0 and f"offline data mirror: {FIXTURE_MIRROR}" in found.stdout
    for value, why in (("/nonexistent/mirror", "UNTRAC_DATA_DIR=/nonexistent/mirror is not a directory"),
                       ("", "UNTRAC_DATA_DIR is not set")):
        missing = make("check-mirror", f"UNTRAC_DATA_DIR={value}")
        assert missing.returncode != 0, missing.stdout
        assert why in missing.stderr and "make data" in missing.stderr and "untrac.data.write_mirror" in missing.stderr
    # make test: an unset mirror is a note (the run goes on), a missing directory an error
    dry = make("-n", "test", "UNTRAC_DATA_DIR=")
    assert "will be SKIPPED" in dry.stdout and "exit 0" in dry.stdout and "pytest" in dry.stdout
    assert "exit 1" in make("-n", "test", "UNTRAC_DATA_DIR=/nonexistent/mirror").stdout
    # make figures checks the mirror first, except at paper scale (the hub)
    assert "check-mirror" not in make("-n", "figures", "SCALE=paper").stdout
    figures = make("figures", "UNTRAC_DATA_DIR=/nonexistent/mirror")
    assert figures.returncode != 0 and "make figures UNTRAC_DATA_DIR=DIR" in figures.stderr
    assert "untrac.data.write_mirror" in make("-n", "data", "DATA_DIR=/tmp/m").stdout


# ----------------------------------------------------------------------------- the fixture mirror


def test_the_fixture_mirror_is_tiny_documented_and_checked():
    from untrac.data.mirror import MANIFEST_NAME, build_manifest, manifest_in_force

    files = [p for p in FIXTURE_MIRROR.rglob("*") if p.is_file()]
    assert sum(p.stat().st_size for p in files) < 200_000
    assert (FIXTURE_MIRROR / "README.md").is_file() and "Origin" in (FIXTURE_MIRROR / "README.md").read_text()
    recorded = json.loads((FIXTURE_MIRROR / MANIFEST_NAME).read_text())
    assert recorded["files"] == build_manifest(FIXTURE_MIRROR)["files"]  # regenerate with make_fixture_mirror.py
    manifest, where = manifest_in_force(FIXTURE_MIRROR)
    assert where.endswith(MANIFEST_NAME)  # its own manifest, not the shipped mirror's


def test_corpora_from_the_fixture_mirror(fixture_mirror):
    from untrac.data.corpora import CORPUS_NAMES, load_corpus, pretraining_mixture
    from untrac.models import train_tokenizer

    for name in CORPUS_NAMES:
        docs = load_corpus(name)
        assert docs.column_names == ["text", "corpus"] and len(docs) == 3 and set(docs["corpus"]) == {name}
    tokenizer = train_tokenizer([t for name in CORPUS_NAMES for t in load_corpus(name)["text"]], 300)
    mix = pretraining_mixture(tokenizer, 16, 4, seed=0)
    assert list(mix) == list(CORPUS_NAMES)
    assert all(len(b) == 4 and all(len(ids) == 16 for ids in b["input_ids"]) for b in mix.values())
    again = pretraining_mixture(tokenizer, 16, 4, seed=0, corpora=["Wikipedia"])
    assert again["Wikipedia"]["input_ids"] == mix["Wikipedia"]["input_ids"]


def test_testsets_from_the_fixture_mirror(fixture_mirror):
    from untrac.data.testsets import (TOXIGEN_GROUPS, WINOBIAS_SUBSETS, load_testset, load_toxigen, load_truthfulqa,
                                      load_winobias, subset_names)

    toxigen = load_toxigen(max_per_subset=None)
    assert subset_names(toxigen) == sorted(TOXIGEN_GROUPS)
    assert len(toxigen) == 2 * len(TOXIGEN_GROUPS)  # the 30-word and the neutral placeholders are filtered out
    winobias = load_winobias(max_per_subset=None)
    assert set(subset_names(winobias)) == set(WINOBIAS_SUBSETS)
    assert all(p == "" or isinstance(p, str) for p in winobias["prompt"]) and all(winobias["target"])
    truthfulqa = load_truthfulqa(min_examples=1, max_per_subset=None)
    assert set(subset_names(truthfulqa)) == {"misconceptions", "law", "confusion", "indexical_error"}
    assert all(t.startswith(" ") for t in truthfulqa["target"])
    assert len(load_testset("winobias", max_per_subset=1)) == len(WINOBIAS_SUBSETS)


def test_a_truncated_fixture_copy_fails_loudly(monkeypatch, tmp_path):
    from untrac.data.mirror import MirrorError
    from untrac.data.testsets import load_truthfulqa

    copy = tmp_path / "mirror"
    shutil.copytree(FIXTURE_MIRROR, copy)
    path = copy / "testsets" / "truthfulqa.jsonl"
    path.write_text("".join(path.read_text().splitlines(keepends=True)[:-1]))
    monkeypatch.setenv("UNTRAC_DATA_DIR", str(copy))
    with pytest.raises(MirrorError, match="truthfulqa.jsonl does not match.*truncated"):
        load_truthfulqa(min_examples=1)
