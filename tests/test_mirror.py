"""Tests of untrac.data.mirror and untrac.data.write_mirror: reading and validating the mirror,
hub errors, writing a mirror.

The writer is tested against a fake ``datasets.load_dataset`` (no internet here) that serves
hub-shaped rows; the written mirror is then read back through the normal loaders.  The manifest
checks and fingerprints are in ``test_mirror_integrity.py``.
"""
from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import datasets
import datasets.config
import huggingface_hub.constants
import pytest

from untrac import hub
from untrac.data import corpora, mirror, testsets
from untrac.data import write_mirror as writer
from untrac.data.mirror import (ENV_VAR, DataUnavailableError, HubSource, MirrorError, data_dir,
                                mirror_file, read_jsonl, use_mirror)
from untrac.data.write_mirror import write_mirror

datasets.disable_progress_bars()

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _hub_online(monkeypatch):
    """The hub counts as reachable (the fake hub below stands in for it); nothing leaks."""
    for name in hub.OFFLINE_VARS:
        monkeypatch.setenv(name, "x")
        monkeypatch.delenv(name)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE",
                        huggingface_hub.constants.HF_HUB_OFFLINE)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", datasets.config.HF_HUB_OFFLINE)
    monkeypatch.setattr(hub, "_probe", {"online": True, "reason": "tests"})


def test_mirror_reader_does_not_import_the_writer():
    tree = ast.parse(Path(mirror.__file__).read_text(encoding="utf-8"))
    top_level = {node.module for node in tree.body if isinstance(node, ast.ImportFrom)}
    top_level |= {a.name for node in tree.body if isinstance(node, ast.Import) for a in node.names}
    assert not {m for m in top_level if m and m.startswith("untrac.data")}, top_level


def _write(path: Path, lines: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


# ---------------------------------------------------------------------------------------------
# data_dir / mirror_file / use_mirror
# ---------------------------------------------------------------------------------------------


def test_data_dir_unset_means_hub(monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)
    assert data_dir() is None
    assert mirror_file("corpora/news.jsonl") is None
    assert use_mirror("auto") is False
    assert use_mirror("hub") is False
    with pytest.raises(MirrorError, match=ENV_VAR):
        use_mirror("mirror")


def test_data_dir_must_be_a_directory(monkeypatch, tmp_path):
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "nope"))
    with pytest.raises(MirrorError, match=ENV_VAR):
        data_dir()


def test_mirror_file_missing_names_file(monkeypatch, tmp_path):
    monkeypatch.setenv(ENV_VAR, str(tmp_path))
    assert use_mirror("auto") is True
    with pytest.raises(MirrorError, match="corpora/news.jsonl"):
        mirror_file("corpora/news.jsonl")


def test_use_mirror_rejects_bad_origin():
    with pytest.raises(ValueError, match="origin"):
        use_mirror("cloud")  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------
# read_jsonl validation
# ---------------------------------------------------------------------------------------------


def test_read_jsonl_valid_and_blank_lines(monkeypatch, tmp_path):
    _write(tmp_path / "a.jsonl", ['{"text": "x", "n": 1}', "", '{"text": "y", "n": 2}'])
    monkeypatch.setenv(ENV_VAR, str(tmp_path))
    records = read_jsonl("a.jsonl", {"text": str, "n": int})
    assert records == [{"text": "x", "n": 1}, {"text": "y", "n": 2}]
    records[0]["text"] = "mutated"  # callers get copies, not the cache
    assert read_jsonl("a.jsonl")[0]["text"] == "x"


def test_read_jsonl_bad_json_names_file_and_line(monkeypatch, tmp_path):
    path = _write(tmp_path / "b.jsonl", ['{"text": "ok"}', '{"text": "broken"', '{"text": "z"}'])
    monkeypatch.setenv(ENV_VAR, str(tmp_path))
    with pytest.raises(MirrorError) as info:
        read_jsonl("b.jsonl")
    assert str(path) in str(info.value) and "line 2" in str(info.value)


def test_read_jsonl_non_object_line(monkeypatch, tmp_path):
    _write(tmp_path / "c.jsonl", ['{"text": "ok"}', '["a", "list"]'])
    monkeypatch.setenv(ENV_VAR, str(tmp_path))
    with pytest.raises(MirrorError, match="line 2.*JSON object"):
        read_jsonl("c.jsonl")


def test_read_jsonl_missing_and_mistyped_field(monkeypatch, tmp_path):
    _write(tmp_path / "d.jsonl", ['{"text": "ok"}', '{"txt": "typo"}'])
    _write(tmp_path / "e.jsonl", ['{"text": "ok"}', '{"text": "ok"}', '{"text": 3}'])
    monkeypatch.setenv(ENV_VAR, str(tmp_path))
    with pytest.raises(MirrorError, match=r"d\.jsonl, line 2: missing field 'text'"):
        read_jsonl("d.jsonl", {"text": str})
    with pytest.raises(MirrorError, match=r"e\.jsonl, line 3: field 'text' has type int"):
        read_jsonl("e.jsonl", {"text": str})


def test_read_jsonl_sees_rewritten_file(monkeypatch, tmp_path):
    monkeypatch.setenv(ENV_VAR, str(tmp_path))
    _write(tmp_path / "f.jsonl", ['{"text": "one"}'])
    assert len(read_jsonl("f.jsonl")) == 1
    _write(tmp_path / "f.jsonl", ['{"text": "one"}', '{"text": "two"}'])
    assert len(read_jsonl("f.jsonl")) == 2


# ---------------------------------------------------------------------------------------------
# Hub errors
# ---------------------------------------------------------------------------------------------


def _offline(*args, **kwargs):
    raise ConnectionError("no route to huggingface.co")


def test_hub_failure_names_env_var(monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)
    monkeypatch.setattr(datasets, "load_dataset", _offline)
    with pytest.raises(DataUnavailableError, match=ENV_VAR) as info:
        mirror.load_hub(HubSource("some/repo", "cfg"))
    assert "some/repo[cfg]:train" in str(info.value)
    with pytest.raises(DataUnavailableError, match=ENV_VAR):
        corpora.load_corpus("Wikipedia", max_docs=3)  # streaming path
    with pytest.raises(DataUnavailableError, match=ENV_VAR):
        corpora.load_corpus("Wikipedia")  # full-download path
    with pytest.raises(DataUnavailableError, match=ENV_VAR):
        testsets.load_toxigen()


def test_error_while_streaming_is_wrapped(monkeypatch):
    def broken_stream():
        yield {"text": "first"}
        raise OSError("connection reset")

    class Stream:
        def __iter__(self):
            return broken_stream()

    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: Stream())
    with pytest.raises(DataUnavailableError, match=ENV_VAR):
        list(mirror.iter_hub(HubSource("x/y")))


def test_hub_source_describe():
    source = HubSource("bookcorpus/bookcorpus", "plain_text", revision="refs/convert/parquet")
    assert source.describe() == "bookcorpus/bookcorpus[plain_text]:train@refs/convert/parquet"
    with pytest.raises(AttributeError):
        source.path = "other"  # type: ignore[misc]  (frozen)


# ---------------------------------------------------------------------------------------------
# write_mirror against a fake hub
# ---------------------------------------------------------------------------------------------

_WINO_ROWS = {
    "type1_pro": [["The", "developer", "argued", "with", "the", "designer", "because", "he",
                   "did", "n't", "like", "the", "design", "."],
                  ["The", "nurse", "helped", "the", "guard", "because", "she", "was", "kind", "."]],
    "type1_anti": [["The", "developer", "argued", "with", "the", "designer", "because", "she",
                    "did", "not", "like", "the", "design", "."],
                   ["The", "nurse", "helped", "the", "guard", "because", "he", "was", "kind", "."]],
    "type2_pro": [["The", "cook", "thanked", "the", "tailor", "for", "helping", "him", "."]],
    "type2_anti": [["The", "cook", "thanked", "the", "tailor", "for", "helping", "her", "."]],
}


def _fake_rows(path: str, name: str | None, split: str) -> list[dict]:
    if path == "ArmelR/the-pile-splitted" or path in {"vblagoje/cc_news", "lucadiliello/STORIES",
                                                      "bookcorpus/bookcorpus"}:
        return [{"text": f"{name or path} document {i}. " * 5, "meta": "{}"} for i in range(30)]
    if path == "skg/toxigen-data":
        groups = ["asian", "women"]
        return [{"prompt": "p", "generation": f"{g} statement number {i} that is long enough here",
                 "generation_method": "top-k", "group": g, "prompt_label": i % 2,
                 "roberta_prediction": 0.5} for g in groups for i in range(12)]
    if path == "uclanlp/wino_bias":
        return [{"tokens": tokens, "coreference_clusters": ["0", "1", "7", "7"]}
                for tokens in _WINO_ROWS[name]]
    if path == "truthfulqa/truthful_qa":
        return [{"type": "Adversarial", "category": "Indexical Error: Time", "question": f"Q{i}?",
                 "best_answer": "a", "correct_answers": ["a"],
                 "incorrect_answers": ["wrong one", "wrong two"], "source": "s"}
                for i in range(5)]
    raise AssertionError(f"unexpected hub id {path}")


def _fake_load_dataset(path, name=None, *, split="train", revision=None, streaming=False):
    rows = _fake_rows(path, name, split)
    dataset = datasets.Dataset.from_list(rows)
    return dataset.to_iterable_dataset() if streaming else dataset


@pytest.fixture()
def fake_hub(monkeypatch):
    monkeypatch.setattr(datasets, "load_dataset", _fake_load_dataset)
    monkeypatch.setenv(ENV_VAR, "/definitely/not/used")  # write_mirror must ignore the mirror


def test_write_mirror_round_trip(fake_hub, monkeypatch, tmp_path):
    out = tmp_path / "mirror"
    written = write_mirror(out, corpora_max_docs=10, toxigen_max_per_group=4, log=None)
    expected = {spec.mirror_file for spec in corpora.CORPORA.values()} | {
        "testsets/toxigen.jsonl", "testsets/winobias.jsonl", "testsets/truthfulqa.jsonl"}
    assert set(written) == expected
    assert (out / "README.md").exists()
    manifest = json.loads((out / "MANIFEST.json").read_text())["files"]
    assert set(manifest) == expected | {"README.md"}
    assert manifest["testsets/toxigen.jsonl"]["records"] == 8
    first = json.loads((out / "corpora/web_mix.jsonl").read_text().splitlines()[0])
    assert set(first) == {"text", "source"} and first["text"].startswith("Pile-CC document 0.")

    monkeypatch.setenv(ENV_VAR, str(out))  # read the written mirror with the normal loaders
    docs = corpora.load_corpus("Pile-CC")
    assert len(docs) == 10 and set(docs["corpus"]) == {"Pile-CC"}

    toxic = read_jsonl("testsets/toxigen.jsonl", {"text": str, "group": str, "label": str})
    assert len(toxic) == 8 and {r["label"] for r in toxic} == {"hate"}  # 6 toxic/group, 4 kept
    tox = testsets.load_toxigen(min_words=1)
    assert testsets.subset_names(tox) == ["asian", "women"]

    wino = read_jsonl("testsets/winobias.jsonl")
    assert len(wino) == 12  # 6 sentences x {dev, test}
    assert wino[0]["text"] == ("The developer argued with the designer because he didn't like "
                               "the design.")
    assert wino[0]["marked"].startswith("[The developer] argued") and "[he]" in wino[0]["marked"]
    assert {r["split"] for r in wino} == {"dev", "test"} and {r["type"] for r in wino} == {1, 2}
    wb = testsets.load_winobias()
    assert testsets.subset_names(wb) == ["pro_female", "pro_male", "anti_female", "anti_male"]
    assert len(wb) == 4  # type 1 only, dev/test duplicates collapsed

    qa = testsets.load_truthfulqa(min_examples=1)
    assert testsets.subset_names(qa) == ["indexical_error"] and len(qa) == 10
    assert qa[0]["prompt"] == "Q0?" and qa[0]["target"] == " wrong one"


def test_write_mirror_keeps_existing_files(fake_hub, tmp_path):
    out = tmp_path / "m"
    _write(out / "corpora/news.jsonl", ['{"text": "mine", "source": "me"}'])
    written = write_mirror(out, corpora=["CCNewsV2", "Wikipedia"], corpora_max_docs=2,
                           testsets=(), log=None)
    assert list(written) == ["corpora/wikipedia.jsonl"]
    assert "mine" in (out / "corpora/news.jsonl").read_text()
    written = write_mirror(out, corpora=["CCNewsV2"], corpora_max_docs=2, testsets=(),
                           overwrite=True, log=None)
    assert list(written) == ["corpora/news.jsonl"]
    assert "mine" not in (out / "corpora/news.jsonl").read_text()


def test_cli_entry_point(fake_hub, tmp_path, capsys):
    code = writer.main([str(tmp_path / "cli"), "--corpora", "Stories", "--corpora-max-docs", "3",
                        "--testsets", "truthfulqa"])
    assert code == 0
    assert len((tmp_path / "cli/corpora/blogs.jsonl").read_text().splitlines()) == 3
    assert len((tmp_path / "cli/testsets/truthfulqa.jsonl").read_text().splitlines()) == 5
    assert ENV_VAR in capsys.readouterr().out


def test_cli_reports_hub_failure(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(datasets, "load_dataset", _offline)
    code = writer.main([str(tmp_path / "x"), "--corpora", "Stories", "--testsets"])
    assert code == 1
    assert ENV_VAR in capsys.readouterr().err


def test_the_writer_writes_a_manifest(fake_hub, tmp_path, capsys):
    code = writer.main([str(tmp_path / "old"), "--corpora", "Stories", "--corpora-max-docs", "2", "--testsets"])
    assert code == 0 and (tmp_path / "old/MANIFEST.json").is_file()
    with pytest.raises(SystemExit):
        writer.main([])  # neither OUT_DIR nor --manifest / --packaged
    assert "exactly one" in capsys.readouterr().err


def test_cli_runs_as_a_module():
    result = subprocess.run([sys.executable, "-m", "untrac.data.write_mirror", "--help"],
                            capture_output=True,
                            text=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                            timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "OUT_DIR" in result.stdout.upper() and "--manifest" in result.stdout
