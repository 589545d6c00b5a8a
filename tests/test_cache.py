"""The cache is trustworthy: no code runs from it, keys cover everything, corruption is caught,
finishing an entry survives interruption, and bad inputs fail with a message naming them."""
from __future__ import annotations

import json
import os
import pickle
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import tiny_spec


class Planted:
    """Unpickling this runs ``os.system`` — what an attacker with write access would plant."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def _cfg(**kw):
    from untrac.training import TrainConfig

    return TrainConfig(**{"steps": 12, "batch_size": 4, "lr": 1e-2, "seed": 3, "resume_every": 5, **kw})


def _same(a, b) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


# ----------------------------------------------------------------------------- no code from the cache

def test_results_round_trip_without_pickle(tmp_path):
    from untrac import cache
    from untrac.methods.result import Cost, Influence

    inf = Influence("UnTrac", ["a", "b"], ["t"], np.array([[1.0], [2.5]]), steps=[0, 4],
                    trajectory=np.zeros((2, 2, 1)), cost=Cost(seconds=1.5, forward_examples=3), config={"lr": 1e-3})
    value = {"inf": inf, 3: (np.float64(0.1), [1, None, "x"]), "frame": pd.DataFrame({"a": [1, 2], "s": ["x", None]}, index=[5, 6])}
    out = cache.memoise("test", "k", lambda: value)
    again = cache.memoise("test", "k", lambda: pytest.fail("recomputed"))
    for got in (out, again):
        assert isinstance(got["inf"], Influence) and got["inf"].cost.forward_examples == 3
        np.testing.assert_array_equal(got["inf"].values, inf.values)
        assert got[3][0] == np.float64(0.1) and got[3][1] == [1, None, "x"]
        pd.testing.assert_frame_equal(got["frame"], value["frame"])
    assert not list(cache.entry("test", "k").glob("*.pkl"))


def test_a_planted_result_never_runs_and_is_recomputed(tmp_path):
    from untrac import cache

    marker = tmp_path / "pwned"
    cache.memoise("test", "k", lambda: {"x": 1})
    where = cache.entry("test", "k")
    (where / "result.pkl").write_bytes(pickle.dumps(Planted(marker)))  # the old format: never read
    tree = {"__dataclass__": "os:system", "fields": {"command": f"touch {marker}"}}
    (where / "result.json").write_text(json.dumps(tree))
    meta = json.loads((where / "meta.json").read_text())
    meta["files"]["result.json"] = cache.sha256_file(where / "result.json")  # even with a forged hash
    (where / "meta.json").write_text(json.dumps(meta))
    with pytest.warns(RuntimeWarning, match="refusing to rebuild os:system"):
        assert cache.memoise("test", "k", lambda: {"x": 2}) == {"x": 2}
    assert not marker.exists()


def test_a_planted_resume_file_never_runs(tiny, tmp_path):
    from untrac import cache, training

    model, train_sets, _, pad = tiny
    marker = tmp_path / "pwned"
    key = cache.fingerprint("train", training.VERSION, model, train_sets, _cfg(), 12)
    partial = cache.entry("models", key + ".partial")
    partial.mkdir(parents=True)
    torch.save({"step": 5, "evil": Planted(marker)}, partial / "resume.pt")
    with pytest.warns(RuntimeWarning, match="ignoring unreadable resume point"):
        trained = training.train(model, train_sets, _cfg(), pad, progress=False)
    assert not marker.exists() and trained.key == key
    assert _same(trained.model, training.train(model, train_sets, _cfg(), pad, use_cache=False, progress=False).model)


def test_a_corrupt_model_entry_is_named_and_retrained(tiny):
    from untrac import training

    model, train_sets, _, pad = tiny
    first = training.train(model, train_sets, _cfg(), pad, progress=False)
    data = bytearray((first.path / "model.pt").read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte: loads silently without the hash check
    (first.path / "model.pt").write_bytes(bytes(data))
    with pytest.warns(RuntimeWarning, match=f"{first.path}.*model.pt.*sha256"):
        second = training.train(model, train_sets, _cfg(), pad, progress=False)
    assert _same(first.model, second.model)
    (second.path / "meta.json").write_text('{"files": ')  # truncated metadata
    with pytest.warns(RuntimeWarning, match="unreadable meta.json"):
        third = training.train(model, train_sets, _cfg(), pad, progress=False)
    assert _same(first.model, third.model)


# ----------------------------------------------------------------------------- keys cover everything

def test_keys_tell_models_apart_that_share_weight_shapes(tokenizer):
    from untrac import cache
    from untrac.models import ModelSpec, build_model

    spec = tiny_spec()
    a = build_model(spec, tokenizer, seed=0)
    b = build_model(ModelSpec(**{**spec.__dict__, "n_heads": 4}), tokenizer, seed=0)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    assert cache.fingerprint(a) != cache.fingerprint(b)  # same weights, different attention heads
    frozen = build_model(spec, tokenizer, seed=0)
    frozen.get_input_embeddings().weight.requires_grad_(False)
    assert cache.fingerprint(a) != cache.fingerprint(frozen)
    assert cache.fingerprint(a) == cache.fingerprint(build_model(spec, tokenizer, seed=0))
    assert cache.fingerprint(a.double()) != cache.fingerprint(build_model(spec, tokenizer, seed=0))


def test_keys_follow_mixture_order_and_content_not_tokenizer_objects(tiny, tokenizer, synthetic_raw, tmp_path):
    from transformers import PreTrainedTokenizerFast

    from untrac import cache
    from untrac.data.batching import encode
    from untrac.models import SPECIAL_TOKENS

    _, train_sets, _, _ = tiny
    reordered = dict(reversed(list(train_sets.items())))
    assert cache.fingerprint(train_sets) != cache.fingerprint(reordered)  # mixture() concatenates in order
    tokenizer.backend_tokenizer.save(str(tmp_path / "tokenizer.json"))
    loaded = PreTrainedTokenizerFast(tokenizer_file=str(tmp_path / "tokenizer.json"), **SPECIAL_TOKENS)
    again = {k: encode(v, loaded) for k, v in synthetic_raw.items() if k != "test"}
    assert [ds._fingerprint for ds in again.values()] != [ds._fingerprint for ds in train_sets.values()]
    assert cache.fingerprint(again) == cache.fingerprint(train_sets)


def test_training_with_frozen_embeddings_is_not_served_the_trained_ones(tiny):
    from untrac import training

    model, train_sets, _, pad = tiny
    full = training.train(model, train_sets, _cfg(), pad, progress=False)
    model.get_input_embeddings().weight.requires_grad_(False)
    try:
        frozen = training.train(model, train_sets, _cfg(), pad, progress=False)
    finally:
        model.get_input_embeddings().weight.requires_grad_(True)
    assert frozen.key != full.key
    assert torch.equal(frozen.model.get_input_embeddings().weight, model.get_input_embeddings().weight)


def test_code_version_is_part_of_the_key():
    from untrac import cache

    calls = []

    def produce(x: int) -> int:
        calls.append(x)
        return x

    v1, v2 = cache.cached("test", version=1)(produce), cache.cached("test", version=2)(produce)
    assert v1(3) == v1(3) == v2(3) == 3 and calls == [3, 3]


# ----------------------------------------------------------------------------- finishing and resuming

@pytest.mark.parametrize("phase", ["link", "save", "seal", "rename"])
def test_an_interrupted_commit_loses_no_checkpoint(tiny, monkeypatch, phase):
    from untrac import cache, training

    model, train_sets, _, pad = tiny

    class Killed(Exception):
        pass

    def die(*a, **k):
        raise Killed

    real_save, real_replace = torch.save, os.replace
    with monkeypatch.context() as m:
        if phase == "save":  # checkpoints are written; die on the final model.pt
            m.setattr(torch, "save", lambda obj, path, *a, **k: die() if Path(path).name == "model.pt" else real_save(obj, path))
        elif phase == "rename":  # die when the finished directory is renamed into place
            m.setattr(os, "replace", lambda src, dst: die() if Path(src).is_dir() else real_replace(src, dst))
        elif phase == "link":
            m.setattr(os, "link", die)
        else:
            m.setattr(cache, "seal", die)
        with pytest.raises(Killed):
            training.train(model, train_sets, _cfg(checkpoint_every=4), pad, progress=False)
    trained = training.train(model, train_sets, _cfg(checkpoint_every=4), pad, progress=False)
    assert [s for s, _ in trained.checkpoints] == [4, 8, 12] and len(trained.checkpoint_states()) == 3


def test_resumed_run_logs_the_same_losses(tiny, monkeypatch):
    from untrac import training

    model, train_sets, _, pad = tiny
    cfg = _cfg(steps=40, resume_every=7)
    reference = training.train(model, train_sets, cfg, pad, use_cache=False, progress=False).log["loss"]
    real, calls = training.batch_loss, []

    def dying(*args):
        calls.append(1)
        if len(calls) == 23:
            raise KeyboardInterrupt
        return real(*args)

    monkeypatch.setattr(training, "batch_loss", dying)
    with pytest.raises(KeyboardInterrupt):
        training.train(model, train_sets, cfg, pad, progress=False)
    monkeypatch.setattr(training, "batch_loss", real)
    resumed = training.train(model, train_sets, cfg, pad, progress=False).log["loss"]
    assert [tuple(x) for x in resumed] == [tuple(x) for x in reference]


# ----------------------------------------------------------------------------- files and processes

def test_complete_entries_load_without_the_lock(monkeypatch):
    from untrac import cache

    cache.memoise("test", "k", lambda: 1)
    monkeypatch.setattr(cache, "locked", lambda *a: pytest.fail("took the lock to read a complete entry"))
    assert cache.memoise("test", "k", lambda: 2) == 1


def test_entries_honour_the_umask():
    from untrac import cache

    old = os.umask(0o022)
    try:
        cache.memoise("test", "k", lambda: 1)
    finally:
        os.umask(old)
    where = cache.entry("test", "k")
    assert where.stat().st_mode & 0o777 == 0o755 and (where / "result.json").stat().st_mode & 0o777 == 0o644


def test_two_writers_of_one_directory_both_succeed(tmp_path):
    from untrac import cache

    errors = []

    def write(i: int) -> None:
        try:
            with cache.atomic_dir(tmp_path / "entry") as tmp:
                (tmp / "file").write_text("same")
        except Exception as err:  # noqa: BLE001
            errors.append(err)

    for _ in range(30):
        threads = [threading.Thread(target=write, args=(i,)) for i in range(4)]
        [t.start() for t in threads]
        [t.join() for t in threads]
    assert not errors and (tmp_path / "entry" / "file").read_text() == "same"


# ----------------------------------------------------------------------------- inputs are validated

@pytest.mark.parametrize("field,value,match", [
    ("steps", 0, "steps"), ("steps", -3, "steps"), ("steps", "3", "steps"), ("batch_size", 0, "batch_size"),
    ("batch_size", -1, "batch_size"), ("lr", 0.0, "lr"), ("lr", float("nan"), "lr"), ("clip", -1.0, "clip"),
    ("clip", 0.0, "clip"), ("resume_every", 0, "resume_every"), ("checkpoint_every", 0, "checkpoint_every"),
    ("optimizer", "lion", "optimizer"), ("weight_decay", -0.1, "weight_decay"),
])
def test_bad_train_config_values(field, value, match):
    from untrac.training import TrainConfig

    with pytest.raises(ValueError, match=f"TrainConfig.{match}"):
        TrainConfig(**{"steps": 3, field: value})


@pytest.mark.parametrize("field,value", [("steps", -3), ("steps", 0), ("batch_size", 0), ("eval_every", -1),
                                         ("eval_every", 0), ("lr", -1e-3), ("epochs", 0), ("optimizer", "lion")])
def test_bad_unlearn_config_values(field, value):
    from untrac import UnlearnConfig

    with pytest.raises(ValueError, match=f"UnlearnConfig.{field}"):
        UnlearnConfig(**{field: value})


def test_wrong_types_at_the_public_boundary(tiny):
    from untrac import attribute
    from untrac.training import train

    model, train_sets, test_sets, pad = tiny
    with pytest.raises(TypeError, match="train_sets must be a dict"):
        train(model, list(train_sets.values()), _cfg(), pad, progress=False)
    with pytest.raises(TypeError, match="pad_id"):
        train(model, train_sets, _cfg(), None, progress=False)
    with pytest.raises(TypeError, match="config must be a TrainConfig"):
        train(model, train_sets, {"steps": 3}, pad, progress=False)
    with pytest.raises(TypeError, match=r"test_sets\['test'\] must be a datasets.Dataset"):
        attribute("GradDot", model, train_sets, {"test": [1, 2]}, pad)


def test_a_tokenizer_model_mismatch_is_named_at_train_and_attribute_time(tiny, tokenizer):
    from untrac import ModelTokenizerMismatch, attribute, build_model
    from untrac.models import ModelSpec
    from untrac.training import train

    _, train_sets, test_sets, pad = tiny
    small = build_model(tiny_spec(), tokenizer, seed=0)
    small.resize_token_embeddings(50)
    with pytest.raises(ModelTokenizerMismatch, match="holds token id .* embeds only 50"):
        train(small, train_sets, _cfg(), pad, progress=False)
    with pytest.raises(ModelTokenizerMismatch, match="embeds only 50"):
        attribute("GradDot", small, train_sets, test_sets, pad)
    del ModelSpec


# ----------------------------------------------------------------------------- the cost ledger

def test_entries_record_their_cost_net_of_the_entries_they_compute(tiny, tmp_path, monkeypatch):
    """An entry's ``seconds`` is its own computation: a stored result (or a trained model) it makes on the
    way is counted in that entry, not twice; the ledger lists every entry a run used, once."""
    import time

    from untrac import cache, training

    monkeypatch.setenv(cache.LEDGER_VAR, str(tmp_path / "ledger.jsonl"))
    model, train_sets, _, pad = tiny

    def outer() -> int:
        time.sleep(0.05)
        cache.memoise("test", "inner", lambda: time.sleep(0.3) or 1)
        trained = training.train(model, train_sets, _cfg(steps=300), pad, progress=False)
        return 2 + len(trained.key) * 0

    assert cache.memoise("test", "outer", outer) == 2
    assert cache.memoise("test", "outer", lambda: pytest.fail("recomputed")) == 2  # a hit: listed once
    seconds = {(e["kind"], e["key"]): e["seconds"] for e in cache.ledger(tmp_path / "ledger.jsonl")}
    # a warm run opens only the outer entry, yet its ledger lists what a cold run computes: the inner ones too
    monkeypatch.setenv(cache.LEDGER_VAR, str(tmp_path / "warm.jsonl"))
    assert cache.memoise("test", "outer", lambda: pytest.fail("recomputed")) == 2
    assert {(e["kind"], e["key"]): e["seconds"] for e in cache.ledger(tmp_path / "warm.jsonl")} == seconds
    model_key = next(k for kind, k in seconds if kind == "models")
    trained_s = cache.load_json(cache.entry("models", model_key) / cache.META)["seconds"]
    assert len(seconds) == 3 and seconds[("test", "inner")] >= 0.3 and trained_s > 0.3
    assert 0.05 <= seconds[("test", "outer")] < 0.25  # net of the inner entry's 0.3 s and of the training
    assert seconds[("models", model_key)] == trained_s


def test_ledger_lines_from_a_broken_file_and_no_ledger_at_all(tmp_path, monkeypatch):
    from untrac import cache

    monkeypatch.delenv(cache.LEDGER_VAR, raising=False)
    cache.memoise("test", "quiet", lambda: 1)  # no ledger: nothing written anywhere, nothing fails
    assert cache.ledger(tmp_path / "absent.jsonl") == []
    path = tmp_path / "ledger.jsonl"
    path.write_text('{"kind": "a", "key": "1", "what": null, "seconds": 2.0, "written": 0}\n{"kind": "a", "ke\n'
                    '{"kind": "a", "key": "1", "what": null, "seconds": 9.0, "written": 0}\n')
    assert [e["seconds"] for e in cache.ledger(path)] == [2.0]  # a torn line is skipped, a repeat ignored


def test_cost_table_adds_up_across_notebooks():
    from untrac.run_notebooks import cost_table

    def e(kind, key, seconds, written, what=None):
        return {"kind": kind, "key": key, "what": what, "seconds": seconds, "written": written}

    costs = [("01_a", 10.0, 100.0, [e("models", "m1", 4.0, 50.0), e("models", "m2", 6.0, 150.0),
                                    e("influence", "i1", 1.5, 150.0, "UnTrac")]),
             ("02_b", 5.0, 200.0, [e("models", "m2", 6.0, 150.0), e("sweep", "s1", None, 210.0)])]
    t = cost_table(costs, "smoke").set_index(["notebook", "what"])
    assert t.loc[("01_a", "models"), ["entries", "computed", "core_seconds", "new_core_seconds"]].tolist() == [2, 1, 10.0, 10.0]
    assert t.loc[("01_a", "influence: UnTrac"), "core_seconds"] == 1.5
    assert t.loc[("01_a", "(wall seconds of this run)"), "core_seconds"] == 10.0
    assert t.loc[("02_b", "models"), ["computed", "core_seconds", "new_core_seconds"]].tolist() == [0, 6.0, 0.0]
    assert t.loc[("02_b", "sweep"), ["unrecorded", "computed"]].tolist() == [1, 1]


def test_a_cached_function_says_whether_a_call_is_served_from_the_cache():
    from untrac import cache

    @cache.cached("test", version=1)
    def double(x: int, progress: bool = True) -> int:
        return 2 * x

    assert not double.is_cached(3)
    assert double(3) == 6 and double.is_cached(3) and double.is_cached(3, progress=False)  # progress: not in the key
    assert not double.is_cached(4)


def test_cost_table_rows_of_a_later_run_replace_the_same_notebooks_rows(tmp_path):
    from untrac.run_notebooks import cost_table, write_cost_table

    def one(name, wall):
        return (name, wall, 0.0, [{"kind": "models", "key": name, "what": None, "seconds": wall, "written": 1.0}])

    write_cost_table(cost_table([one("01_a", 5.0), one("02_b", 7.0)], "mini"), tmp_path)
    write_cost_table(cost_table([one("01_a", 9.0)], "mini"), tmp_path)  # notebook 01 again, alone
    table = pd.read_csv(tmp_path / "run_cost.csv")
    assert table[table.what == "models"].set_index("notebook")["core_seconds"].to_dict() == {"01_a": 9.0, "02_b": 7.0}
    assert list(table.notebook) == sorted(table.notebook) and "| 02_b | mini | models |" in (tmp_path / "run_cost.md").read_text()
