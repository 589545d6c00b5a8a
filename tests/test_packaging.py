"""The environment is described once: environment.yml lists the same requirements as pyproject.toml."""
from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_environment_yml_matches_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    wanted = set(project["dependencies"]) | set(extras["notebooks"]) | {d for d in extras["dev"] if not d.startswith("untrac")}
    listed = set(re.findall(r"^\s+- ([A-Za-z][\w.-]*[<>=!~][^\s#]*)\s*$", (ROOT / "environment.yml").read_text(), re.M))
    assert listed - {p for p in listed if p.startswith("python")} == wanted


def test_ci_runs_the_readme_test_command_with_the_mirror():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    assert "make test" in readme and "make test" in ci and "UNTRAC_DATA_DIR" in ci


def test_the_library_core_does_not_pull_a_notebook_server():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    core = " ".join(project["dependencies"])
    assert not any(name in core for name in ("jupyterlab", "papermill", "nbval", "ipykernel"))
    assert "untrac[notebooks]" in project["optional-dependencies"]["dev"]


def test_the_package_data_is_declared():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["untrac.data"]
    for pattern in config:
        assert list((ROOT / "untrac" / "data").glob(pattern)), pattern
