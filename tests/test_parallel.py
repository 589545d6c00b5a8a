"""Independent work runs in worker processes and gives the numbers a sequential run gives."""
from __future__ import annotations

import concurrent.futures as cf

import pytest
import torch

from conftest import needs_mirror


def _cfg(**kw):
    from untrac.training import TrainConfig

    return TrainConfig(**{"steps": 10, "batch_size": 4, "lr": 1e-2, "seed": 3, "checkpoint_every": 5, **kw})


def _fail(x: int) -> None:
    raise ArithmeticError(f"call {x} failed")


def test_worker_count_comes_from_the_environment(monkeypatch):
    from untrac import parallel

    monkeypatch.setenv("UNTRAC_WORKERS", "3")
    assert parallel.worker_count() == 3
    monkeypatch.setenv("UNTRAC_WORKERS", "0")
    with pytest.raises(ValueError, match="UNTRAC_WORKERS must be a positive integer"):
        parallel.worker_count()


def test_errors_of_a_call_reach_the_caller():
    from untrac import parallel

    with cf.ThreadPoolExecutor(2) as pool, pytest.raises(ArithmeticError, match="failed"):
        parallel.prefetch([(_fail, (1,), {}), (_fail, (2,), {})], pool, progress=False)
    future = parallel.InlineExecutor().submit(_fail, 3)
    assert isinstance(future.exception(), ArithmeticError)


@needs_mirror
def test_leave_dataset_out_in_worker_processes_equals_the_sequential_run(tiny, monkeypatch, tmp_path):
    from untrac import parallel, training

    model, train_sets, _, pad = tiny
    monkeypatch.setenv("UNTRAC_CACHE", str(tmp_path / "sequential"))
    monkeypatch.setenv("UNTRAC_WORKERS", "1")
    base, cfs = training.leave_dataset_out(model, train_sets, _cfg(), pad, progress=False)

    monkeypatch.setenv("UNTRAC_CACHE", str(tmp_path / "parallel"))
    calls = training.leave_dataset_out_calls(model, train_sets, _cfg(), pad)
    assert len(calls) == 1 + len(train_sets)
    with parallel.local_pool(2) as pool:
        assert parallel.prefetch(calls, pool, progress=False) == len(calls)
    assert training.leave_dataset_out_calls(model, train_sets, _cfg(), pad) == []  # all in the cache now
    monkeypatch.setattr(training, "batch_loss", lambda *a: pytest.fail("the sequential pass trained again"))
    pbase, pcfs = training.leave_dataset_out(model, train_sets, _cfg(), pad, progress=False)
    for a, b in [(base, pbase), *((cfs[k], pcfs[k]) for k in cfs)]:
        assert a.key == b.key
        assert all(torch.equal(x, y) for x, y in zip(a.model.state_dict().values(), b.model.state_dict().values()))
        assert [s for s, _ in a.checkpoints] == [s for s, _ in b.checkpoints] == [5, 10]


@needs_mirror
def test_any_executor_can_stand_in_for_the_pool(tiny):
    from untrac import parallel, training

    model, train_sets, _, pad = tiny
    with cf.ThreadPoolExecutor(2) as pool:
        parallel.prefetch(training.leave_dataset_out_calls(model, train_sets, _cfg(), pad), pool, progress=False)
    assert training.leave_dataset_out_calls(model, train_sets, _cfg(), pad) == []


def test_gather_returns_results_in_order_on_any_executor(monkeypatch):
    from untrac import parallel

    calls = [(pow, (2, k), {}) for k in range(6)]
    monkeypatch.setenv("UNTRAC_WORKERS", "1")
    assert parallel.gather(calls) == [1, 2, 4, 8, 16, 32]  # one worker: here, in order
    with cf.ThreadPoolExecutor(3) as pool:
        assert parallel.gather(calls, pool) == [1, 2, 4, 8, 16, 32]
        with pytest.raises(ZeroDivisionError):
            parallel.gather([(divmod, (1, 0), {})] + calls, pool)
