"""The command line, `untrac attribute`: end to end on tiny JSONL files (offline, --tiny), the same
numbers as a direct untrac.attribute call, --help, the method listing and errors naming the argument."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from datasets import Dataset

import untrac
from untrac import cli
from untrac.data.batching import encode

ROOT = Path(__file__).resolve().parent.parent

TRAIN = {
    "succ": [{"prompt": f"What comes after {i}?", "target": f" {i + 1}"} for i in range(0, 12, 2)],
    "spell": [{"prompt": f"Spell {i}:", "target": f" {w}"} for i, w in enumerate("zero one two three four".split())],
    "prose": [{"text": "The quick brown fox jumps over the lazy dog."}, {"text": "A tiny corpus of two lines."}],
}
TEST = {
    "next": [{"prompt": f"What is the number after {i}?", "target": f" {i + 1}"} for i in range(20, 25)],
    "words": [{"prompt": "Say two:", "target": " two"}, {"prompt": "Say four:", "target": " four"}],
}


def _write(tmp_path: Path) -> tuple[list[str], list[str]]:
    args = {}
    for group in (TRAIN, TEST):
        for name, rows in group.items():
            path = tmp_path / f"{name}.jsonl"
            path.write_text("".join(json.dumps(r) + "\n" for r in rows))
            args[name] = f"{name}={path}"
    return [x for k in TRAIN for x in ("--train", args[k])], [x for k in TEST for x in ("--test", args[k])]


def _direct(method: str, **settings) -> pd.DataFrame:
    """What the command documents, by the public API: a BPE on prompt + target of every example (training
    sets, then test sets), the tiny OPT of seed 0, a text row scored as an empty prompt + the text."""
    def raw(rows):
        return Dataset.from_dict({"prompt": [r.get("prompt", "") for r in rows],
                                  "target": [r.get("target", r.get("text")) for r in rows]})

    spec = untrac.ModelSpec(arch="opt", n_layers=1, d_model=32, n_heads=2, d_ff=64, max_positions=512, vocab_size=512)
    assert cli.tiny_spec() == spec
    texts = [r.get("prompt", "") + r.get("target", r.get("text", "")) for g in (TRAIN, TEST) for rows in g.values()
             for r in rows]
    tok = untrac.build_tokenizer(spec, texts=texts)
    model = untrac.build_model(spec, tok, seed=0)
    train = {k: encode(raw(v), tok) for k, v in TRAIN.items()}
    test = {k: encode(raw(v), tok) for k, v in TEST.items()}
    return untrac.attribute(method, model, train, test, tok.pad_token_id, progress=False, **settings).to_frame()


def _command() -> list[str]:
    script = Path(sys.executable).with_name("untrac")  # the console script of [project.scripts]
    return [str(script)] if script.exists() else [sys.executable, "-m", "untrac.cli"]


def test_attribute_end_to_end_equals_a_direct_call(tmp_path):
    train, test = _write(tmp_path)
    out = tmp_path / "results" / "influence.csv"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_DATASETS_CACHE": str(tmp_path / "hf")}
    run = subprocess.run([*_command(), "attribute", "--tiny", *train, *test, "--method", "UnTrac-Inv",
                          "--set", "lr=1e-3", "--set", "epochs=2", "--out", str(out), "--device", "cpu"],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert "UNTRAINED" in run.stderr  # the tiny model says what its numbers are worth
    frame = pd.read_csv(out)
    assert list(frame.columns) == ["method", "train", "test", "influence"]
    assert frame.shape == (6, 4) and set(frame["method"]) == {"UnTrac-Inv"}
    assert list(zip(frame["train"], frame["test"])) == [(k, s) for k in TRAIN for s in TEST]
    expected = _direct("UnTrac-Inv", lr=1e-3, epochs=2)
    np.testing.assert_allclose(frame["influence"], expected["influence"], rtol=1e-12, atol=0)
    assert np.all(np.isfinite(frame["influence"])) and frame["influence"].abs().sum() > 0
    for name in (*TRAIN, *TEST):  # the printed table names every set
        assert name in run.stdout


def test_python_dash_m_a_local_model_directory_and_json_lines(tmp_path):
    train, test = _write(tmp_path)
    spec = cli.tiny_spec()
    tok = untrac.build_tokenizer(spec, texts=["What comes after 1? 2", "Spell 3: three"] * 20)
    model = untrac.build_model(spec, tok, seed=3)
    saved = tmp_path / "my-model"
    model.save_pretrained(saved)
    tok.save_pretrained(saved)
    out = tmp_path / "influence.jsonl"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_DATASETS_CACHE": str(tmp_path / "hf")}
    run = subprocess.run([sys.executable, "-m", "untrac.cli", "attribute", "--model", str(saved), *train, *test,
                          "--method", "GradDot", "--out", str(out), "-q", "--device", "cpu"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(r["train"], r["test"]) for r in rows] == [(k, s) for k in TRAIN for s in TEST]

    def raw(rows):
        return Dataset.from_dict({"prompt": [r.get("prompt", "") for r in rows],
                                  "target": [r.get("target", r.get("text")) for r in rows]})

    train_sets = {k: encode(raw(v), tok) for k, v in TRAIN.items()}
    test_sets = {k: encode(raw(v), tok) for k, v in TEST.items()}
    expected = untrac.attribute("GradDot", model, train_sets, test_sets, tok.pad_token_id, progress=False)
    np.testing.assert_allclose([r["influence"] for r in rows], expected.values.ravel(), rtol=1e-6)


def test_train_steps_then_a_method_that_needs_checkpoints(tmp_path, capsys):
    train, test = _write(tmp_path)
    out = tmp_path / "tracin.csv"
    assert cli.main(["attribute", "--tiny", "--train-steps", "8", "--train-set", "batch_size=4", *train, *test,
                     "--method", "TracIn", "--out", str(out), "-q", "--device", "cpu"]) == 0
    frame = pd.read_csv(out)
    assert frame.shape == (6, 4) and set(frame["method"]) == {"TracIn"} and np.isfinite(frame["influence"]).all()
    assert "TracIn influence" in capsys.readouterr().out


def test_every_training_example_scored_with_its_text(tmp_path, capsys):
    train, test = _write(tmp_path)
    out = tmp_path / "examples.jsonl"
    assert cli.main(["attribute", "--tiny", *train, *test, "--method", "GradDot", "--examples", str(out), "-q",
                     "--device", "cpu"]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == sum(len(v) for v in TRAIN.values()) * len(TEST)
    assert set(rows[0]) == {"method", "train", "index", "test", "influence", "text"}
    first = next(r for r in rows if r["train"] == "prose" and r["index"] == 1)
    assert first["text"] == TRAIN["prose"][1]["text"]
    assert "highest influence on 'next'" in capsys.readouterr().out


def test_help_explains_the_data_and_shows_an_example(capsys):
    with pytest.raises(SystemExit) as done:
        cli.main(["attribute", "--help"])
    assert done.value.code == 0
    text = capsys.readouterr().out
    for words in ("NAME=PATH", '"prompt"', '"target"', "start with a space", '"text"', "every token",
                  "--tiny", "UNTRAINED", "--train-steps", "--set FIELD=VALUE", "examples:", "untrac attribute --model",
                  "untrac methods", ".csv"):
        assert words in text, words
    assert cli.main([]) == 2  # no command: the overview


@pytest.mark.parametrize("argv", [["methods"], ["--list-methods"], ["attribute", "--list-methods"]])
def test_list_methods_with_settings_and_defaults(argv, capsys):
    assert cli.main(argv) == 0
    text = capsys.readouterr().out
    for name, method in untrac.methods.available().items():
        assert name in text
        for field in method.fields():
            assert f"{field} = " in text
    assert "lr = 5e-05" in text and "needs: checkpoints" in text


def test_set_values_are_parsed():
    assert cli.parse_assignments("--set", ["a=3", "b=1e-4", "c=true", "d=None", "e=adam", "f=0.1,0.2", "g=[1, 2]"]) == {
        "a": 3, "b": 1e-4, "c": True, "d": None, "e": "adam", "f": (0.1, 0.2), "g": (1, 2)}
    assert cli.parse_named("--train", "web=data/web.jsonl") == ("web", "data/web.jsonl")
    assert cli.parse_named("--train", "data/web.jsonl") == ("web", "data/web.jsonl")  # named after the file


@pytest.mark.parametrize("extra, message", [
    (["--train", "a=missing.jsonl"], "--train a=missing.jsonl: file not found"),
    (["--train", "=TRAIN"], "--train '=TRAIN': expected NAME=PATH"),
    (["--train", "a="], "expected NAME=PATH"),
    (["--train", "TRAIN", "--method", "Untrac"], "--method: unknown method 'Untrac'; choose from"),
    (["--train", "TRAIN", "--set", "lrr=1"], "--set: method 'UnTrac-Inv' has no setting 'lrr'"),
    (["--train", "TRAIN", "--set", "lr"], "--set 'lr': expected FIELD=VALUE"),
    (["--train", "TRAIN", "--set", "lr=-1"], "--set: UnlearnConfig.lr must be"),
    (["--train", "TRAIN", "--config", "n_layer=2"], "--config: ModelSpec has no field 'n_layer'"),
    (["--train", "TRAIN", "--out", "x.xlsx"], "--out x.xlsx: unknown output type '.xlsx'"),
    (["--train", "TRAIN", "--method", "TracIn"], "--method TracIn needs the checkpoints"),
    (["--train", "TRAIN", "--train-steps", "2", "--train-set", "lrr=1"], "--train-set: TrainConfig has no field 'lrr'"),
    (["--train", "TRAIN", "--train-steps", "0"], "TrainConfig.steps must be"),
    (["--train", "TRAIN", "--method", "UnTrac", "--examples", "e.csv"], "--examples: UnTrac scores whole sets only"),
    (["--train", "TRAIN", "--train", "TRAIN"], "the name 'a' is given twice"),
    (["--train", "a=BAD"], "needs 'prompt' and 'target' columns, or a 'text' column; it has ['question']"),
    (["--train", "a=NOTES.md"], "unknown file type '.md'"),
    ([], "--train is required"),
])
def test_errors_name_the_bad_argument(extra, message, tmp_path, capsys, monkeypatch):
    (tmp_path / "a.jsonl").write_text(json.dumps({"prompt": "Q", "target": " A"}) + "\n")
    (tmp_path / "bad.jsonl").write_text(json.dumps({"question": "Q"}) + "\n")
    (tmp_path / "t.jsonl").write_text(json.dumps({"prompt": "Q", "target": " A"}) + "\n")
    (tmp_path / "notes.md").write_text("hello\n")
    swap = {"TRAIN": f"a={tmp_path / 'a.jsonl'}", "a=BAD": f"a={tmp_path / 'bad.jsonl'}",
            "a=NOTES.md": f"a={tmp_path / 'notes.md'}", "a=missing.jsonl": "a=missing.jsonl"}
    argv = ["attribute", "--tiny", "--test", f"t={tmp_path / 't.jsonl'}", "-q"] + [swap.get(x, x) for x in extra]
    monkeypatch.chdir(tmp_path)
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("untrac attribute: error: ") and message in err, err


def test_a_model_is_required_and_exclusive(tmp_path, capsys):
    (tmp_path / "a.jsonl").write_text(json.dumps({"prompt": "Q", "target": " A"}) + "\n")
    base = ["attribute", "--train", str(tmp_path / "a.jsonl"), "--test", f"t={tmp_path / 'a.jsonl'}"]
    assert cli.main(base) == 2
    assert "--model is required" in capsys.readouterr().err
    assert cli.main(base + ["--model", "x", "--tiny"]) == 2
    assert "exclude each other" in capsys.readouterr().err
    assert cli.main(base + ["--model", str(tmp_path)]) == 2
    assert "a directory without config.json" in capsys.readouterr().err


def test_the_console_script_is_declared():
    import tomllib

    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts == {"untrac": "untrac.cli:main"}


@pytest.mark.parametrize("module", ["untrac", "untrac.cli"])
def test_python_dash_m_lists_the_methods(module):
    run = subprocess.run([sys.executable, "-m", module, "methods"], cwd=ROOT, capture_output=True, text=True,
                         timeout=120, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert run.returncode == 0, run.stderr
    assert "UnTrac-Inv" in run.stdout and "Overlap (TF-IDF)" in run.stdout
