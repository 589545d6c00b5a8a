"""Shared fixtures: a tiny tokenizer, tiny models and tiny synthetic data (float64 where exactness matters).

The offline data mirror (``UNTRAC_DATA_DIR``): tests marked ``needs_mirror`` read the real one and
are skipped when ``UNTRAC_DATA_DIR`` is unset, with a summary at the end of the run saying how many
and how to get a mirror. ``UNTRAC_DATA_DIR`` naming no directory, or ``UNTRAC_REQUIRE_MIRROR=1`` (set
by CI) without a mirror, is an error before any test runs.
``fixture_mirror`` points ``UNTRAC_DATA_DIR`` at the tiny excerpt mirror in ``tests/fixtures/mirror``
(same layout, a few records a file) for unit tests of the readers that need no real data.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

torch.set_num_threads(1)

FIXTURE_MIRROR = Path(__file__).resolve().parent / "fixtures" / "mirror"
MIRROR = os.environ.get("UNTRAC_DATA_DIR")
REQUIRE_MIRROR = os.environ.get("UNTRAC_REQUIRE_MIRROR", "").strip().lower() in ("1", "true", "yes", "on")
GET_A_MIRROR = ("get a mirror with `make data` (writes it from the Hugging Face hub: `python -m untrac.data.write_mirror "
                "DIR`, DIR default ../shared/data), or point UNTRAC_DATA_DIR at an existing mirror directory")


def mirror_problem() -> str | None:
    """Why the real mirror cannot be read (None when it can)."""
    if not MIRROR:
        return "UNTRAC_DATA_DIR is not set"
    if not Path(MIRROR).is_dir():
        return f"UNTRAC_DATA_DIR={MIRROR} is not a directory"
    return None


MIRROR_SKIP = "needs the offline data mirror"  # every such skip reason starts so (the summary counts them)
needs_mirror = pytest.mark.skipif(mirror_problem() is not None, reason=f"{MIRROR_SKIP}: {mirror_problem()}")


def _is_shipped_mirror() -> bool:
    if mirror_problem() is not None:
        return False
    from untrac.data.mirror import manifest_in_force, packaged_manifest

    in_force = manifest_in_force(MIRROR)
    return in_force is not None and in_force[0]["files"] == packaged_manifest()["files"]


needs_shipped_mirror = pytest.mark.skipif(
    not _is_shipped_mirror(),
    reason=f"{MIRROR_SKIP} the project ships (exact record counts): "
           f"{mirror_problem() or f'UNTRAC_DATA_DIR={MIRROR} is another mirror (e.g. written from the hub)'}")
"""For tests of the exact content of the project's shipped mirror (a mirror written from the hub differs)."""


def pytest_configure(config: pytest.Config) -> None:
    """A mirror promised but absent is an error: UNTRAC_DATA_DIR naming no directory, or
    UNTRAC_REQUIRE_MIRROR=1 (CI) without a mirror. An unset UNTRAC_DATA_DIR skips the tests that need it."""
    problem = mirror_problem()
    if problem is not None and (REQUIRE_MIRROR or MIRROR):
        why = "UNTRAC_REQUIRE_MIRROR=1 but " + problem if REQUIRE_MIRROR else problem
        raise pytest.UsageError(
            f"{why}: the tests that need the offline data mirror (the notebooks, the corpora and test-set readers) "
            f"cannot run. {GET_A_MIRROR[0].upper()}{GET_A_MIRROR[1:]}; or leave UNTRAC_DATA_DIR unset"
            f"{' and UNTRAC_REQUIRE_MIRROR unset' if REQUIRE_MIRROR else ''} to skip those tests.")


_SKIPPED_KEY = pytest.StashKey[tuple]()  # (files, count) of the tests a missing mirror skipped


def _skip_reason(report) -> str:
    longrepr = report.longrepr
    return str(longrepr[2] if isinstance(longrepr, tuple) and len(longrepr) == 3 else longrepr)


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    """Count the tests a missing mirror skipped (reported after the closing line, by pytest_unconfigure)."""
    if mirror_problem() is not None:
        skipped = [r for r in terminalreporter.stats.get("skipped", []) if "mirror" in _skip_reason(r).lower()]
        config.stash[_SKIPPED_KEY] = sorted({r.nodeid.split("::")[0] for r in skipped}), len(skipped)


def pytest_unconfigure(config: pytest.Config) -> None:
    """Say loudly, last, how many tests a missing mirror skipped and how to run them."""
    files, count = config.stash.get(_SKIPPED_KEY, ([], 0))
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if not count or reporter is None:
        return
    reporter.write_sep("=", f"{count} tests SKIPPED: no offline data mirror", yellow=True, bold=True)
    reporter.write_line(
        f"{mirror_problem()}, so the tests that read the real data (the notebooks at smoke scale, the corpora and "
        f"test-set readers, ...) did not run: in {', '.join(Path(f).name for f in files)}.")
    reporter.write_line(f"To run them, {GET_A_MIRROR}.")
    reporter.write_line("(CI sets UNTRAC_REQUIRE_MIRROR=1: there a missing mirror is an error, not a skip.)")


@pytest.fixture
def fixture_mirror(monkeypatch: pytest.MonkeyPatch) -> Path:
    """``UNTRAC_DATA_DIR`` -> the tiny excerpt mirror of ``tests/fixtures/mirror`` (for this test)."""
    monkeypatch.setenv("UNTRAC_DATA_DIR", str(FIXTURE_MIRROR))
    return FIXTURE_MIRROR


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test gets its own artefact cache; nothing is written to the user's cache. Work runs in
    this process (``UNTRAC_WORKERS=1``) unless a test asks for workers (tests/test_parallel.py)."""
    monkeypatch.setenv("UNTRAC_CACHE", str(tmp_path_factory.mktemp("cache")))
    monkeypatch.setenv("UNTRAC_WORKERS", os.environ.get("UNTRAC_TEST_WORKERS", "1"))


@pytest.fixture(scope="session")
def tokenizer():
    from untrac.models import train_tokenizer

    words = ["What is the number that comes after", "Determine the number that succeeds", "Provide your answer in",
             "numerical form", "words", "the length of", "one two three four five six seven eight nine zero",
             "0 1 2 3 4 5 6 7 8 9", "The quick brown fox jumps over the lazy dog."]
    return train_tokenizer(words * 20, 320)


def tiny_spec(arch: str = "opt"):
    from untrac.models import ModelSpec

    return ModelSpec(arch=arch, n_layers=1, d_model=16, n_heads=2, d_ff=32, max_positions=96)


@pytest.fixture(scope="session")
def synthetic_raw():
    from untrac.data.synthetic import synthetic_task

    return synthetic_task("A", 12, seed=0)  # the word lists are packaged: no mirror needed


@pytest.fixture
def tiny(tokenizer, synthetic_raw):
    """(model in float64, encoded train sets, encoded test sets, pad id)."""
    from untrac.data.batching import encode
    from untrac.models import build_model

    model = build_model(tiny_spec(), tokenizer, seed=0).double()
    enc = {k: encode(v, tokenizer) for k, v in synthetic_raw.items()}
    return model, {k: v for k, v in enc.items() if k != "test"}, {"test": enc["test"]}, tokenizer.pad_token_id


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The longest tests (every notebook at smoke scale, the device check's CPU part) first, so that the
    parallel workers of ``make test`` finish together instead of one waiting on a late notebook."""
    items.sort(key=lambda item: 0 if "smoke_scale" in item.nodeid or "device_check_cpu_part" in item.nodeid else 1)
