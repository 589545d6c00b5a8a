"""Every numbered notebook runs headless at ``smoke`` scale, exactly as ``make figures`` runs it
(papermill with injected parameters), writing into a temporary directory — never into figures/.

The executed notebook is then checked with nbval: re-executed from an empty cache, the cells tagged
``nbval-check-output`` (the result tables) must print the same numbers — the notebooks are
deterministic on CPU, not just error-free. ``00_quickstart`` runs with no data mirror at all (what a
fresh clone can run); 01-05 need it. Every notebook's parameters carry a type and a comment, which
``papermill --help-notebook`` shows."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import needs_mirror

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
WITHOUT_MIRROR = ("00",)  # the quick start: what a fresh clone runs, with no data mirror
NEED_MIRROR = [nb for nb in NOTEBOOKS if nb.name[:2] not in WITHOUT_MIRROR]


def _snapshot(directory: Path) -> dict[str, float]:
    return {str(p): p.stat().st_mtime for p in directory.rglob("*") if p.is_file()} if directory.exists() else {}


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=[nb.stem for nb in NOTEBOOKS])
def test_notebook_has_a_parameters_cell_and_no_stored_errors(notebook):
    nb = json.loads(notebook.read_text())
    tagged = [c for c in nb["cells"] if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1 and "scale" in "".join(tagged[0]["source"])
    assert not any(o.get("output_type") == "error" for c in nb["cells"] for o in c.get("outputs", []))
    checked = [c for c in nb["cells"] if "nbval-check-output" in c.get("metadata", {}).get("tags", [])]
    assert checked and all(c["cell_type"] == "code" for c in checked), "tag the result tables for nbval"


def _nbval(executed: Path, cache: Path) -> subprocess.CompletedProcess:
    """Re-execute ``executed`` with nbval (lax: only the tagged cells' outputs are compared)."""
    env = {**os.environ, "UNTRAC_CACHE": str(cache), "UNTRAC_PROGRESS": "0"}
    return subprocess.run([sys.executable, "-m", "pytest", "--nbval-lax", "--nbval-current-env", "-q",
                           "-p", "no:cacheprovider", "--rootdir", str(executed.parent), str(executed)],
                          env=env, capture_output=True, text=True, timeout=900)


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=[nb.stem for nb in NOTEBOOKS])
def test_notebook_parameters_are_typed_and_documented(notebook):
    """``papermill --help-notebook`` shows a type and a line of help for every parameter, and every
    notebook takes ``overrides`` (the README promises it)."""
    import papermill

    params = papermill.inspect_notebook(str(notebook))
    assert {"scale", "figures_dir", "overrides"} <= set(params)
    for name, p in params.items():
        assert p["inferred_type_name"] not in ("None", ""), f"{notebook.name}: parameter {name} has no type"
        assert p["help"], f"{notebook.name}: parameter {name} has no comment"
    assert params["overrides"]["inferred_type_name"] == "dict" and params["overrides"]["default"] == "{}"


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=[nb.stem for nb in NOTEBOOKS])
def test_notebook_narrative_needs_nothing_users_lack(notebook):
    """No pointers to documents a user of the repository does not have (the project's spec, its pilot)."""
    import re

    cells = json.loads(notebook.read_text())["cells"]
    text = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "markdown")
    assert not re.search(r"\b(spec|SPEC|pilot)\b", text), f"{notebook.name} refers to a document users do not have"


@needs_mirror
@pytest.mark.parametrize("notebook", NEED_MIRROR, ids=[nb.stem for nb in NEED_MIRROR])
def test_notebook_runs_at_smoke_scale(notebook, tmp_path):
    _runs_at_smoke_scale(notebook, tmp_path)


@pytest.mark.parametrize("prefix", WITHOUT_MIRROR)
def test_notebook_runs_at_smoke_scale_without_the_mirror(prefix, tmp_path, monkeypatch):
    """The quick start runs on a fresh clone: no ``UNTRAC_DATA_DIR`` for papermill's kernel nor for nbval's."""
    monkeypatch.delenv("UNTRAC_DATA_DIR", raising=False)
    (notebook,) = [nb for nb in NOTEBOOKS if nb.name.startswith(prefix)]
    _runs_at_smoke_scale(notebook, tmp_path)


def _runs_at_smoke_scale(notebook: Path, tmp_path: Path) -> None:
    from untrac.run_notebooks import run

    before = _snapshot(ROOT / "figures")
    (executed,) = run("smoke", tmp_path / "figures", only=[notebook.name[:2]])
    nb = json.loads(executed.read_text())
    assert not any(o.get("output_type") == "error" for c in nb["cells"] for o in c.get("outputs", []))
    written = list((tmp_path / "figures").glob(f"{notebook.name[:2]}_*"))
    assert any(p.suffix == ".png" for p in written) and any(p.suffix == ".csv" for p in written)
    assert _snapshot(ROOT / "figures") == before, "a smoke run wrote into figures/"
    streams = sum(len("".join(o.get("text", ""))) for c in nb["cells"] for o in c.get("outputs", []) if o["output_type"] == "stream")
    assert streams < 20_000, f"{streams} characters of text output (progress bars?) in the executed notebook"

    if notebook.name.startswith("02"):  # every installed method has its row in Tables 3 and 5
        import pandas as pd
        import untrac

        for name in ("table3_pearson", "table5_spearman", "table3_verdicts", "noise_floor", "example_check"):
            assert (tmp_path / "figures" / f"02_{name}.csv").exists(), name
        table3 = pd.read_csv(tmp_path / "figures" / "02_table3_pearson.csv")
        assert list(table3.columns[:3]) == ["method", "toxigen/equal", "toxigen/equal (paper)"]
        assert list(table3["method"]) == [*untrac.METHODS, untrac.truth.CEILING]  # smoke trains 2 seeds
        noise = pd.read_csv(tmp_path / "figures" / "02_noise_floor.csv")
        assert list(noise["setting"].unique()) == ["equal", "different"] and (noise["seeds"] == 2).all()
        verdicts = pd.read_csv(tmp_path / "figures" / "02_table3_verdicts.csv")
        assert set(verdicts["verdict"]) <= {"holds", "fails", "inconclusive"} and untrac.truth.CEILING in set(verdicts["versus"])
    if notebook.name.startswith("01"):
        import pandas as pd

        verdicts = pd.read_csv(tmp_path / "figures" / "01_verdicts.csv")
        assert list(verdicts["family"].unique()) == ["A", "B"] and set(verdicts["method"]) == {"UnTrac", "UnTrac-Inv"}
    if notebook.name.startswith("03"):
        import pandas as pd

        assert set(pd.read_csv(tmp_path / "figures" / "03_table4_verdicts.csv")["table"]) == {"optimizers", "learning rates"}
    if notebook.name.startswith("04"):
        import pandas as pd

        from untrac.experiments.unlearning import KLOM_CLAIMS

        assert set(pd.read_csv(tmp_path / "figures" / "04_klom_verdicts.csv")["claim"]) == set(KLOM_CLAIMS)
    if notebook.name.startswith("05"):
        import pandas as pd

        study = pd.read_csv(tmp_path / "figures" / "05_regime_study.csv")
        assert list(study["candidate"].unique()) == ["as is", "vocabulary / 4", "2x layers", "2x training"]
        syn = pd.read_csv(tmp_path / "figures" / "05_synthetic_regime_study.csv")
        assert list(syn["candidate"].unique()) == ["as is", "8 epochs", "vocabulary / 4"]
        assert set(syn["family"]) == {"A", "B"} and syn["exact_match"].between(0, 1).all()

    rerun = _nbval(executed, tmp_path / "fresh-cache")
    assert rerun.returncode == 0, f"the notebook's tables changed on re-execution:\n{rerun.stdout[-4000:]}"
    if notebook.name.startswith("03"):  # the check bites: a changed number in a tagged table fails it
        for cell in nb["cells"]:
            if "nbval-check-output" in cell.get("metadata", {}).get("tags", []):
                for output in cell["outputs"]:
                    if "data" in output:
                        output["data"]["text/plain"] = "0.123 ± 0.456"
        tampered = executed.with_name("tampered.ipynb")
        tampered.write_text(json.dumps(nb))
        assert _nbval(tampered, tmp_path / "fresh-cache").returncode != 0
