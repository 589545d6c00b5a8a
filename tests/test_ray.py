"""Scale-out on Ray: the same models as a sequential run, dead workers retried, nothing computed twice.

The tests that need Ray run on one small local cluster (2 CPUs, no dashboard) shared by the module,
and are skipped when Ray (an optional extra: ``pip install 'untrac[ray]'``) is not installed.
"""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch


def _has_ray() -> bool:
    try:
        return importlib.util.find_spec("ray") is not None
    except (ImportError, ValueError):  # a broken or blocked installation
        return False


HAS_RAY = _has_ray()
NO_RAY = "needs Ray, an optional extra: install untrac[ray] (pip install 'untrac[ray]')"
STEPS = 10


def _cfg(**kw):
    from untrac.training import TrainConfig

    return TrainConfig(**{"steps": STEPS, "batch_size": 4, "lr": 1e-2, "seed": 3, "checkpoint_every": 5,
                          "resume_every": 5, **kw})


# -- calls that run in Ray workers (this module travels by value: workers cannot import it) ----------

def _counting(log: str, fn, /, *args, **kwargs):
    """``fn(*args, **kwargs)``, appending one line to ``log`` per training step it takes."""
    from untrac import training

    real = training.batch_loss

    def step(*a, **k):
        with open(log, "a") as f:
            f.write(f"{os.getpid()}\n")
        return real(*a, **k)

    training.batch_loss = step
    try:
        return fn(*args, **kwargs)
    finally:
        training.batch_loss = real


def _dies_once(marker: str, at_step: int, fn, /, *args, **kwargs):
    """``fn(*args, **kwargs)``, but the first attempt's worker process dies at training step
    ``at_step`` (``marker`` tells the attempts apart); every attempt logs its steps to ``marker.steps``."""
    from untrac import training

    attempt = 1 + sum(1 for _ in open(marker)) if os.path.exists(marker) else 1
    with open(marker, "a") as f:
        f.write(f"{os.getpid()}\n")
    real, taken = training.batch_loss, []

    def step(*a, **k):
        taken.append(1)
        if attempt == 1 and len(taken) == at_step:
            os._exit(1)  # the worker dies mid-training (as a killed process or a lost node would)
        with open(marker + ".steps", "a") as f:
            f.write(f"{attempt}\n")
        return real(*a, **k)

    training.batch_loss = step
    try:
        return fn(*args, **kwargs)
    finally:
        training.batch_loss = real


def _environment(path: str) -> None:
    import torch as t

    keys = ("UNTRAC_CACHE", "UNTRAC_WORKERS", "UNTRAC_PROGRESS", "UNTRAC_EXECUTOR", "OMP_NUM_THREADS")
    Path(path).write_text(repr({**{k: os.environ.get(k) for k in keys}, "threads": t.get_num_threads()}))


def _fail(x: int) -> None:
    raise ArithmeticError(f"call {x} failed")


# -- fixtures -------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def ray_cluster():
    """One local Ray cluster for the module: 2 CPUs, no dashboard, a small object store."""
    if not HAS_RAY:
        pytest.skip(NO_RAY)
    import ray
    from ray import cloudpickle

    module = sys.modules[__name__]
    cloudpickle.register_pickle_by_value(module)
    with pytest.MonkeyPatch.context() as m:
        m.setenv("RAY_USAGE_STATS_ENABLED", "0")  # no usage report (CI runs offline)
        ray.init(num_cpus=2, num_gpus=0, include_dashboard=False, object_store_memory=128 * 2**20)
    try:
        yield ray
    finally:
        ray.shutdown()
        cloudpickle.unregister_pickle_by_value(module)


def _sequential(model, train_sets, pad, cache: Path, monkeypatch):
    from untrac import training

    monkeypatch.setenv("UNTRAC_CACHE", str(cache))
    base, cfs = training.leave_dataset_out(model, train_sets, _cfg(), pad, progress=False)
    return {None: base, **cfs}


def _same_models(reference, model, train_sets, pad, monkeypatch):
    """The sequential pass over the Ray-filled cache trains nothing and gives ``reference``'s models."""
    from untrac import training

    assert training.leave_dataset_out_calls(model, train_sets, _cfg(), pad) == []  # every entry is there
    with monkeypatch.context() as m:
        m.setattr(training, "batch_loss", lambda *a: pytest.fail("the sequential pass trained again"))
        base, cfs = training.leave_dataset_out(model, train_sets, _cfg(), pad, progress=False)
    for name, b in {None: base, **cfs}.items():
        a = reference[name]
        assert a.key == b.key and a.path != b.path
        sa, sb = a.model.state_dict(), b.model.state_dict()
        assert list(sa) == list(sb)
        assert all(torch.equal(sa[k], sb[k]) for k in sa), f"model -{name} differs"
        assert [s for s, _ in a.checkpoints] == [s for s, _ in b.checkpoints] == [5, 10]
        for (_, pa), (_, pb) in zip(a.checkpoints, b.checkpoints):
            ca, cb = torch.load(pa, weights_only=True), torch.load(pb, weights_only=True)
            assert list(ca) == list(cb) and all(torch.equal(ca[k], cb[k]) for k in ca)


# -- without Ray ----------------------------------------------------------------------------------------

def test_importing_untrac_does_not_import_ray():
    code = ("import sys, untrac, untrac.parallel, untrac.engines, untrac.training; "
            "assert 'ray' not in sys.modules, 'untrac imported ray'")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr


def test_without_ray_the_error_says_how_to_install_it(monkeypatch):
    from untrac import parallel
    from untrac.engines import RayExecutor

    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` fails as if it were not installed
    with pytest.raises(ImportError, match=r"pip install 'untrac\[ray\]'"):
        RayExecutor()
    monkeypatch.setenv("UNTRAC_EXECUTOR", "ray")
    with pytest.raises(ImportError, match=r"install untrac\[ray\]"):
        parallel.executor_from()


def test_the_executor_is_chosen_by_the_environment(monkeypatch):
    from untrac import parallel

    monkeypatch.delenv("UNTRAC_EXECUTOR", raising=False)
    assert parallel.executor_spec() == "local"
    for spec in ("local", "ray", "ray:auto", "ray:10.0.0.1:6379", "ray://head:10001"):
        monkeypatch.setenv("UNTRAC_EXECUTOR", spec)
        assert parallel.executor_spec() == spec
    for bad in ("dask", "ray:", "ray://", "RAY"):
        with pytest.raises(ValueError, match="UNTRAC_EXECUTOR must be"):
            parallel.executor_spec(bad)
    assert isinstance(parallel.executor_from("local", workers=1), parallel.InlineExecutor)
    monkeypatch.setenv("UNTRAC_GPUS_PER_TASK", "-1")
    with pytest.raises(ValueError, match="UNTRAC_GPUS_PER_TASK must be a number >= 0"):
        parallel.executor_from("ray")
    env = parallel.worker_env({"EXTRA": "1"})
    assert (env["OMP_NUM_THREADS"], env["UNTRAC_WORKERS"], env["UNTRAC_PROGRESS"], env["UNTRAC_EXECUTOR"],
            env["EXTRA"]) == ("1", "1", "0", "local", "1")


# -- on a local Ray cluster -----------------------------------------------------------------------------

def test_leave_dataset_out_on_ray_equals_the_sequential_run_and_trains_each_model_once(
        ray_cluster, tiny, monkeypatch, tmp_path):
    from untrac import parallel, training
    from untrac.engines import RayExecutor

    model, train_sets, _, pad = tiny
    reference = _sequential(model, train_sets, pad, tmp_path / "sequential", monkeypatch)

    cache, log = tmp_path / "ray", tmp_path / "steps.log"
    monkeypatch.setenv("UNTRAC_CACHE", str(cache))
    calls = training.leave_dataset_out_calls(model, train_sets, _cfg(), pad)
    assert len(calls) == 1 + len(train_sets)
    # every unit twice, side by side: the twin waits on the entry's lock, then loads what the first stored
    twice = [(_counting, (str(log), fn, *args), kwargs) for fn, args, kwargs in calls for _ in range(2)]
    executor = RayExecutor(env={"UNTRAC_CACHE": str(cache)}, max_retries=0)
    try:
        assert parallel.prefetch(twice, executor, progress=False) == len(twice)
    finally:
        executor.shutdown()
    steps = log.read_text().split()
    assert len(steps) == len(calls) * STEPS  # each model trained once, by one task
    assert str(os.getpid()) not in steps  # ... in the Ray workers, not here
    metas = list(cache.rglob("meta.json"))
    assert len(metas) == len(calls)  # one finished entry per model, no partial leftovers
    assert not list(cache.rglob("*.partial"))
    _same_models(reference, model, train_sets, pad, monkeypatch)


def test_a_worker_that_dies_mid_training_is_retried_and_resumes(ray_cluster, tiny, monkeypatch, tmp_path):
    from untrac import parallel, training
    from untrac.engines import RayExecutor

    model, train_sets, _, pad = tiny
    reference = _sequential(model, train_sets, pad, tmp_path / "sequential", monkeypatch)

    cache, marker = tmp_path / "ray", tmp_path / "attempts"
    monkeypatch.setenv("UNTRAC_CACHE", str(cache))
    calls = training.leave_dataset_out_calls(model, train_sets, _cfg(), pad)
    (fn, args, kwargs), rest = calls[0], calls[1:]
    assert kwargs["exclude"] is None  # the base model: its worker dies at step 8, after the resume point of step 5
    faulty = [(_dies_once, (str(marker), 8, fn, *args), kwargs), *rest]
    executor = RayExecutor(env={"UNTRAC_CACHE": str(cache)}, max_retries=2)
    try:
        assert parallel.prefetch(faulty, executor, progress=False) == len(calls)
        assert isinstance(executor.submit(_fail, 1).exception(timeout=60), ArithmeticError)  # errors: not retried
    finally:
        executor.shutdown()
    attempts = marker.read_text().split()
    assert len(attempts) == 2 and attempts[0] != attempts[1]  # a second worker process ran it again
    steps = (tmp_path / "attempts.steps").read_text().split()
    assert steps.count("1") == 7  # the first attempt died in its 8th step
    assert steps.count("2") == STEPS - 5  # the retry resumed from step 5
    _same_models(reference, model, train_sets, pad, monkeypatch)


def test_untrac_executor_ray_makes_prefetch_use_ray(ray_cluster, monkeypatch, tmp_path):
    from untrac import parallel
    from untrac.engines import RayExecutor

    monkeypatch.setenv("UNTRAC_EXECUTOR", "ray")  # UNTRAC_WORKERS=1 here (conftest): Ray is used all the same
    monkeypatch.setenv("UNTRAC_GPUS_PER_TASK", "0")
    try:
        pool = parallel.shared_pool()
        assert isinstance(pool, RayExecutor) and (pool.num_cpus, pool.num_gpus) == (1, 0)
        assert parallel.shared_pool() is pool
        out = [tmp_path / f"env{i}.txt" for i in range(2)]
        assert parallel.prefetch([(_environment, (str(p),), {}) for p in out], progress=False) == 2
    finally:
        parallel._shutdown_shared()
    assert ray_cluster.is_initialized()  # the shared executor did not start Ray, so it leaves it running
    for p in out:
        seen = eval(p.read_text())  # noqa: S307  (our own repr of a dict of strings)
        assert seen == {"UNTRAC_CACHE": os.environ["UNTRAC_CACHE"], "UNTRAC_WORKERS": "1", "UNTRAC_PROGRESS": "0",
                        "UNTRAC_EXECUTOR": "local", "OMP_NUM_THREADS": "1", "threads": 1}
