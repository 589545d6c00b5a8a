"""Independent work on every core, through the standard executor interface.

The experiments are written as plain sequential code over cached functions (``train``, ``fit``,
``cached_attribute``, sweep cells). :func:`prefetch` first runs a batch of such calls in worker
processes, each of which stores its result in the shared content-keyed cache; the sequential code
that follows then finds every entry there. Results are therefore the ones a sequential run gives,
bit for bit on CPU: every worker runs one intra-op thread, as the Makefile's ``OMP_NUM_THREADS=1``
does. The cache's entry locks stop two processes from computing one entry twice.

Any :class:`concurrent.futures.Executor` can stand in for the local pool (a distributed engine's,
for example): pass it as ``executor=``. The default pool has ``UNTRAC_WORKERS`` workers (default:
the number of cores); ``UNTRAC_WORKERS=1`` runs everything in this process.

``UNTRAC_EXECUTOR`` chooses the default executor without code changes (:func:`executor_from`):
``local`` (the default: the process pool above), ``ray`` (a local Ray cluster, or the one
``RAY_ADDRESS`` names), ``ray:auto`` (the cluster this machine belongs to), ``ray:HOST:PORT`` or
``ray://HOST:PORT`` (Ray Client); see :class:`untrac.engines.RayExecutor`. Each Ray task asks for
``UNTRAC_CPUS_PER_TASK`` CPUs (default 1) and ``UNTRAC_GPUS_PER_TASK`` GPUs (default 0).
"""
from __future__ import annotations

import atexit
import concurrent.futures as cf
import contextlib
import multiprocessing
import os
import sys
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from .engines import ENV_VAR, EXECUTOR_VAR, RayExecutor, worker_env

CPUS_VAR = "UNTRAC_CPUS_PER_TASK"
GPUS_VAR = "UNTRAC_GPUS_PER_TASK"

Call = tuple[Callable[..., Any], Sequence[Any], dict[str, Any]]
"""``(function, args, kwargs)``: one unit of independent work (a picklable, module-level function)."""


def worker_count() -> int:
    """``UNTRAC_WORKERS``, or the number of cores this process may use."""
    value = os.environ.get(ENV_VAR)
    if value:
        try:
            n = int(value)
        except ValueError as err:
            raise ValueError(f"{ENV_VAR} must be a positive integer, not {value!r}") from err
        if n < 1:
            raise ValueError(f"{ENV_VAR} must be a positive integer, not {value!r}")
        return n
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


class InlineExecutor(cf.Executor):
    """An executor that runs each call at once in this process (one worker, or nothing to split)."""

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> cf.Future:
        future: cf.Future = cf.Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as err:  # noqa: BLE001  (delivered through the future, as a pool would)
            future.set_exception(err)
        return future


@contextlib.contextmanager
def _main_not_reimported():
    """Start workers without re-running the caller's script: a ``spawn`` worker imports the main
    module of a plain ``python script.py`` run (everything not under ``if __name__ == "__main__"``),
    which a script written for one process does not expect. Only untrac's own functions travel."""
    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None)
    hide = main is not None and getattr(main, "__spec__", None) is None and path is not None
    if hide:
        del main.__file__
    try:
        yield
    finally:
        if hide:
            main.__file__ = path


def _discard(fn: Callable[..., Any], args: Sequence[Any], kwargs: dict[str, Any]) -> None:
    """Run one call in a worker for its cached side effect; nothing travels back but errors."""
    fn(*args, **kwargs)


def _init_worker(threads: int, env: dict[str, str]) -> None:
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C / a kernel's interrupt is the parent's to handle
    os.environ.update(env)
    import torch

    torch.set_num_threads(threads)


def executor_spec(spec: str | None = None) -> str:
    """``spec`` (default: ``UNTRAC_EXECUTOR``, else ``local``), checked."""
    value = (os.environ.get(EXECUTOR_VAR, "") if spec is None else spec).strip() or "local"
    if value in ("local", "ray") or (value.startswith("ray:") and value[len("ray:"):].strip("/")):
        return value
    raise ValueError(f"{EXECUTOR_VAR} must be 'local', 'ray', 'ray:auto', 'ray:HOST:PORT' or 'ray://HOST:PORT', "
                     f"not {value!r}")


def _per_task(var: str, default: float) -> float:
    value = os.environ.get(var, "").strip()
    if not value:
        return default
    try:
        n = float(value)
    except ValueError as err:
        raise ValueError(f"{var} must be a number >= 0, not {value!r}") from err
    if n < 0:
        raise ValueError(f"{var} must be a number >= 0, not {value!r}")
    return int(n) if n.is_integer() else n


def executor_from(spec: str | None = None, workers: int | None = None) -> cf.Executor:
    """A new executor for ``spec`` (default ``UNTRAC_EXECUTOR``; see the module's notes): ``local``
    gives :func:`local_pool` ``(workers)``; ``ray``, ``ray:auto``, ``ray:HOST:PORT`` and
    ``ray://HOST:PORT`` give a :class:`~untrac.engines.RayExecutor` whose tasks ask for
    ``UNTRAC_CPUS_PER_TASK`` CPUs (default 1) and ``UNTRAC_GPUS_PER_TASK`` GPUs (default 0)."""
    spec = executor_spec(spec)
    if spec == "local":
        return local_pool(workers)
    address = None if spec == "ray" else spec if spec.startswith("ray://") else spec[len("ray:"):]
    return RayExecutor(address=address, num_cpus=_per_task(CPUS_VAR, 1), num_gpus=_per_task(GPUS_VAR, 0))


def local_pool(workers: int | None = None) -> cf.Executor:
    """A process pool of ``workers`` (default :func:`worker_count`) one-thread workers, or an
    :class:`InlineExecutor` for one worker."""
    n = worker_count() if workers is None else workers
    if n <= 1:
        return InlineExecutor()
    keep = worker_env()
    return cf.ProcessPoolExecutor(max_workers=n, mp_context=multiprocessing.get_context("spawn"),
                                  initializer=_init_worker, initargs=(1, keep))


_SHARED: dict[tuple, cf.Executor] = {}


def shared_pool() -> cf.Executor:
    """This process's executor, started once and reused (the workers' start-up — importing torch —
    is paid once per process); shut down at exit. ``UNTRAC_EXECUTOR`` chooses it
    (:func:`executor_from`): by default a pool of :func:`worker_count` workers."""
    spec = executor_spec()
    n = (spec, worker_count()) if spec == "local" else (spec, os.environ.get(CPUS_VAR), os.environ.get(GPUS_VAR))
    if n not in _SHARED:
        for old in _SHARED.values():
            old.shutdown(wait=False, cancel_futures=True)
        _SHARED.clear()
        _SHARED[n] = local_pool(n[1]) if spec == "local" else executor_from(spec)
        if not _SHARED_EXIT:
            atexit.register(_shutdown_shared)
            _SHARED_EXIT.append(True)
    return _SHARED[n]


_SHARED_EXIT: list[bool] = []


def _shutdown_shared() -> None:
    for pool in _SHARED.values():
        pool.shutdown(wait=False, cancel_futures=True)
    _SHARED.clear()


def _here(calls: list[Call], executor: cf.Executor | None) -> bool:
    """Whether ``calls`` stay in this process: no executor given, and one call or one local worker."""
    return executor is None and (len(calls) <= 1 or (executor_spec() == "local" and worker_count() <= 1))


def prefetch(calls: Iterable[Call], executor: cf.Executor | None = None, *, progress: bool = True,
             desc: str = "in parallel") -> int:
    """Run ``calls`` on ``executor`` (default: :func:`shared_pool`) so that their results are in
    the cache; return how many ran. The first error is raised once every call has ended.

    With one local worker (or fewer than two calls) nothing is prefetched: the sequential code that
    follows computes it all, exactly as it would have.
    """
    from .progress import bar

    calls = list(calls)
    if _here(calls, executor):
        return 0
    pool = shared_pool() if executor is None else executor
    with _main_not_reimported():  # the pool's workers start at the first submit
        futures = [pool.submit(_discard, fn, tuple(args), dict(kwargs)) for fn, args, kwargs in calls]
    errors = []
    for future in bar(cf.as_completed(futures), enabled=progress, total=len(futures), desc=desc):
        if future.exception() is not None:
            errors.append(future.exception())
    if errors:
        raise errors[0]
    return len(calls)


def gather(calls: Iterable[Call], executor: cf.Executor | None = None) -> list[Any]:
    """The results of ``calls``, in order, computed on ``executor`` (default: :func:`shared_pool`; with
    one local worker, here one after the other): for independent work whose small results are not
    worth a cache entry each. The first error is raised."""
    calls = list(calls)
    if _here(calls, executor):
        return [fn(*args, **kwargs) for fn, args, kwargs in calls]
    pool = shared_pool() if executor is None else executor
    with _main_not_reimported():
        futures = [pool.submit(fn, *args, **kwargs) for fn, args, kwargs in calls]
    return [f.result() for f in futures]


__all__ = ["CPUS_VAR", "ENV_VAR", "EXECUTOR_VAR", "GPUS_VAR", "Call", "InlineExecutor", "executor_from", "executor_spec",
           "gather", "local_pool", "prefetch", "shared_pool", "worker_count", "worker_env"]
