"""Beyond one machine: a Ray cluster as a :class:`concurrent.futures.Executor`.

Every independent unit of work (a leave-one-out model, an attribution run, a sweep cell) is a call
that :func:`untrac.parallel.prefetch` submits to an executor and that stores its result in the
shared content-keyed cache. :class:`RayExecutor` runs those calls as Ray tasks, on this machine or on
a cluster whose nodes share the cache directory (``UNTRAC_CACHE``) and the data: the sequential code
that follows then loads every result from the cache. A task whose worker dies (a killed process, a
lost node) is run again by Ray, up to ``max_retries`` times; the cache's entry locks stop two tasks
from computing one entry twice, and a training resumes from its last resume point.

Ray is an optional dependency (``pip install 'untrac[ray]'``): importing untrac never imports it.
``UNTRAC_EXECUTOR=ray`` (or ``ray:auto``, ``ray:HOST:PORT``, ``ray://HOST:PORT``) makes it the
default executor of :func:`~untrac.parallel.prefetch` (see :func:`untrac.parallel.executor_from`).
"""
from __future__ import annotations

import concurrent.futures as cf
import os
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

INSTALL_HINT = "install untrac[ray] (pip install 'untrac[ray]')"
ENV_VAR = "UNTRAC_WORKERS"  # worker processes of the local pool (untrac.parallel)
EXECUTOR_VAR = "UNTRAC_EXECUTOR"  # local | ray | ray:auto | ray:HOST:PORT | ray://HOST:PORT


def import_ray():
    """The ``ray`` module, or an ImportError that says how to install it."""
    try:
        import ray
    except ImportError as err:
        raise ImportError(f"running untrac's work on Ray (RayExecutor, UNTRAC_EXECUTOR=ray) needs the ray "
                          f"package, which is not installed: {INSTALL_HINT}") from err
    return ray


def _run_in_env(env: Mapping[str, str], fn: Callable[..., Any], args: Sequence[Any], kwargs: dict[str, Any]) -> Any:
    """One task: ``fn(*args, **kwargs)`` with ``env`` in ``os.environ`` (restored afterwards: a Ray
    worker process may serve the tasks of several executors) and ``OMP_NUM_THREADS`` torch threads."""
    previous = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        import torch

        torch.set_num_threads(max(1, int(env.get("OMP_NUM_THREADS", "1"))))
        return fn(*args, **kwargs)
    finally:
        for k, v in previous.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def worker_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment a worker runs with: this process's ``UNTRAC_*``, ``HF_*`` and ``OMP_*``
    variables, one intra-op thread, no progress bars and no pools inside workers; then ``extra``."""
    keep = {k: v for k, v in os.environ.items() if k.startswith(("UNTRAC_", "HF_", "OMP_"))}
    keep["OMP_NUM_THREADS"] = "1"
    keep["UNTRAC_PROGRESS"] = "0"  # workers draw no bars; the caller's bar counts finished calls
    keep[ENV_VAR] = "1"  # a worker's own prefetches run inline: no pools inside pools
    keep[EXECUTOR_VAR] = "local"
    keep.update({str(k): str(v) for k, v in (extra or {}).items()})
    return keep


class RayExecutor(cf.Executor):
    """A :class:`concurrent.futures.Executor` whose calls run as Ray tasks.

    ``address``: the cluster (``None``: the one ``RAY_ADDRESS`` names, else a new local one;
    ``"auto"``; ``"HOST:PORT"``; ``"ray://HOST:PORT"`` for Ray Client); ignored when this process is
    already connected to Ray. Each task asks for ``num_cpus`` CPUs and ``num_gpus`` GPUs (Ray sets
    ``CUDA_VISIBLE_DEVICES``: a task sees its GPUs as ``cuda:0``, ...) and is run again up to
    ``max_retries`` times if its worker process dies (an exception raised by the call is not
    retried: it reaches the caller through the future). Each task runs with this process's
    ``UNTRAC_*``, ``HF_*`` and ``OMP_*`` variables as they are when it is submitted,
    ``OMP_NUM_THREADS=1`` (one torch thread: the numbers of a sequential run), ``UNTRAC_WORKERS=1``,
    ``UNTRAC_EXECUTOR=local``, ``UNTRAC_PROGRESS=0``, then ``env`` on top (the same variables are
    the job's ``runtime_env`` when this executor starts Ray). Further keyword arguments go to
    ``ray.init`` (e.g. ``num_cpus=``, ``include_dashboard=False``).

    :meth:`shutdown` disconnects from Ray only if this executor connected.
    """

    def __init__(self, address: str | None = None, num_cpus: float = 1, num_gpus: float = 0, max_retries: int = 3,
                 env: Mapping[str, str] | None = None, **init_kwargs: Any) -> None:
        for name, value in (("num_cpus", num_cpus), ("num_gpus", num_gpus)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ValueError(f"{name} must be a number >= 0, not {value!r}")
        if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < -1:
            raise ValueError(f"max_retries must be an integer >= -1 (-1: retry forever), not {max_retries!r}")
        ray = import_ray()
        self.extra_env = {str(k): str(v) for k, v in (env or {}).items()}
        self.address, self.num_cpus, self.num_gpus, self.max_retries = address, num_cpus, num_gpus, max_retries
        self._owns_ray = not ray.is_initialized()
        if self._owns_ray:
            ray.init(address=address, ignore_reinit_error=True, runtime_env={"env_vars": worker_env(self.extra_env)},
                     **init_kwargs)
        self._task = ray.remote(_run_in_env).options(num_cpus=num_cpus, num_gpus=num_gpus, max_retries=max_retries)
        self._pending: dict[cf.Future, Any] = {}
        self._lock = threading.Lock()
        self._closed = False

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> cf.Future:
        with self._lock:
            if self._closed:
                raise RuntimeError("cannot schedule new futures after shutdown")
            ref = self._task.remote(self.env(), fn, args, kwargs)
            future = ref.future()
            self._pending[future] = ref
        future.add_done_callback(self._forget)
        return future

    def env(self) -> dict[str, str]:
        """The environment of a task submitted now."""
        return worker_env(self.extra_env)

    def _forget(self, future: cf.Future) -> None:
        with self._lock:
            self._pending.pop(future, None)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        import ray

        with self._lock:
            self._closed = True
            pending = dict(self._pending)
        if cancel_futures and ray.is_initialized():
            for future, ref in pending.items():
                future.cancel()
                try:
                    ray.cancel(ref)
                except Exception:  # noqa: BLE001  (already finished, or the cluster is gone)
                    pass
        if wait:
            cf.wait(pending)
        if self._owns_ray and ray.is_initialized():
            ray.shutdown()
        self._owns_ray = False

    def __repr__(self) -> str:
        where = self.address or os.environ.get("RAY_ADDRESS") or "local"
        return (f"RayExecutor(address={where!r}, num_cpus={self.num_cpus}, num_gpus={self.num_gpus}, "
                f"max_retries={self.max_retries})")


__all__ = ["ENV_VAR", "EXECUTOR_VAR", "INSTALL_HINT", "RayExecutor", "import_ray", "worker_env"]
