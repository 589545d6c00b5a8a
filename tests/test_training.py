"""Fixed-step training, the leave-dataset-out ground truth (Eq. 1), caching and resumption."""
from __future__ import annotations

import pytest
import torch



def _cfg(**kw):
    from untrac.training import TrainConfig

    return TrainConfig(**{"steps": 12, "batch_size": 4, "lr": 1e-2, "seed": 3, "resume_every": 5, **kw})


def _same(a, b) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_cache_returns_identical_model_without_training(tiny, monkeypatch):
    from untrac import training

    model, train_sets, _, pad = tiny
    first = training.train(model, train_sets, _cfg(), pad, progress=False)
    monkeypatch.setattr(training, "batch_loss", lambda *a: pytest.fail("trained again instead of loading"))
    second = training.train(model, train_sets, _cfg(), pad, progress=False)
    assert first.key == second.key and _same(first.model, second.model)
    assert not _same(first.model, model)  # it did train, and init is untouched


class Interrupted(Exception):
    """Stands in for a run killed half-way (Ctrl-C, a lost machine)."""


def test_interrupted_training_resumes_bit_for_bit(tiny, monkeypatch, tmp_path):
    from untrac import training

    model, train_sets, _, pad = tiny
    reference = training.train(model, train_sets, _cfg(), pad, use_cache=False, progress=False).model
    real, calls = training.batch_loss, []

    def dying(*args):
        calls.append(1)
        if len(calls) == 8:  # after the resume point at step 5
            raise Interrupted
        return real(*args)

    monkeypatch.setattr(training, "batch_loss", dying)
    with pytest.raises(Interrupted):
        training.train(model, train_sets, _cfg(), pad, progress=False)
    calls.clear()
    monkeypatch.setattr(training, "batch_loss", lambda *a: (calls.append(1), real(*a))[1])
    resumed = training.train(model, train_sets, _cfg(), pad, progress=False)
    assert len(calls) == 12 - 5  # only the steps after the resume point
    assert _same(resumed.model, reference)


def test_leave_dataset_out_excludes_one_and_keeps_steps(tiny):
    from untrac.training import leave_dataset_out, mixture

    model, train_sets, _, pad = tiny
    for name in train_sets:
        kept = mixture(train_sets, exclude=name)
        assert len(kept) == sum(len(v) for k, v in train_sets.items() if k != name)
    base, cfs = leave_dataset_out(model, train_sets, _cfg(checkpoint_every=4), pad, progress=False)
    assert set(cfs) == set(train_sets)
    assert {c.log["steps"] for c in cfs.values()} == {base.log["steps"]} == {12}
    assert [s for s, _ in base.checkpoints] == [4, 8, 12] and len(base.checkpoint_states()) == 3
    assert len({c.key for c in cfs.values()} | {base.key}) == 5
    _, classic = leave_dataset_out(model, train_sets, _cfg(), pad, variant="classic", progress=False)
    assert {c.log["steps"] for c in classic.values()} == {9}  # 12 steps x 3/4 of the examples


def test_training_is_deterministic(tiny):
    from untrac.training import train

    model, train_sets, _, pad = tiny
    a = train(model, train_sets, _cfg(), pad, use_cache=False, progress=False).model
    b = train(model, train_sets, _cfg(), pad, use_cache=False, progress=False).model
    c = train(model, train_sets, _cfg(seed=4), pad, use_cache=False, progress=False).model
    assert _same(a, b) and not _same(a, c)


def test_bad_training_input(tiny):
    from untrac.training import make_optimizer, train

    model, train_sets, _, pad = tiny
    with pytest.raises(ValueError, match="cannot leave out 'nope'"):
        train(model, train_sets, _cfg(), pad, exclude="nope", progress=False)
    with pytest.raises(ValueError, match="is empty"):
        train(model, {**train_sets, "train1": train_sets["train1"].select([])}, _cfg(), pad, progress=False)
    with pytest.raises(ValueError, match="unknown optimizer"):
        make_optimizer("lion", model.parameters(), 1e-3)
    with pytest.raises(FloatingPointError, match="lower the learning rate"):
        train(model.float(), train_sets, _cfg(lr=1e30, optimizer="sgd", clip=None), pad, use_cache=False, progress=False)


def test_cache_entry_lock_excludes_another_process(tmp_path):
    import subprocess
    import sys

    from untrac.cache import locked

    probe = ("import fcntl,sys; f=open(sys.argv[1],'w')\n"
             "try: fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB); print('free')\n"
             "except BlockingIOError: print('held')")
    lockfile = str(tmp_path / "entry.lock")
    with locked(tmp_path / "entry"):
        inside = subprocess.run([sys.executable, "-c", probe, lockfile], capture_output=True, text=True).stdout.strip()
    outside = subprocess.run([sys.executable, "-c", probe, lockfile], capture_output=True, text=True).stdout.strip()
    assert (inside, outside) == ("held", "free")
