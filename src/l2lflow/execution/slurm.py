"""The Slurm backend: one dask-jobqueue ``SLURMCluster`` per pool, built from its *pool spec*.

A pool spec is the experiment config's ``execution.pools.<name>`` dict (keys, defaults and
checks in :mod:`l2lflow.execution.slurm_pool`; job-script text in
:mod:`l2lflow.execution.jobscript`; the TLS folder in :mod:`l2lflow.execution.credentials`). The engine on the login node owns one cluster (= one Dask scheduler, in the
engine's own process) per pool; the evaluations run in workers that dask-jobqueue submits as
Slurm jobs. Choices made here, and why:

- ``--nthreads 1`` for every worker: one NEST kernel per process (two threads in one worker give
  wrong rates). A job books ``cores`` CPUs and runs ``processes`` workers; each worker may use
  ``cores // processes`` OpenMP threads inside (exported as ``OMP_NUM_THREADS`` and
  ``L2LFLOW_THREADS_PER_WORKER``).
- GPU pools run one single-process worker per GPU, each with its own ``CUDA_VISIBLE_DEVICES`` and
  ``--resources GPU=1``. ``dask worker --nworkers N`` cannot give each process its own environment,
  so :class:`PinnedSLURMJob` rewrites the command into N background workers and a ``wait``.
- TLS always (:func:`slurm_cluster` refuses ``security=None``): a scheduler on a shared login node
  is reachable by every user there. The workers' credential files go to a fresh owner-only
  folder per cluster under the pool's ``shared_temp_directory`` (home by default), removed on
  ``close()`` (:mod:`l2lflow.execution.credentials`).
- Walltime: ``lifetime`` (+ ``lifetime_stagger``) retires workers before Slurm kills them, and the
  adaptive scaler replaces them (for jobs of several workers only with the fix in
  :class:`L2LSLURMCluster`); ``adapt_wait`` keeps idle workers for a while so a generation loop
  does not requeue its jobs between generations (dask-jobqueue issue #701).
- An engine that dies: the scheduler lives in the engine process, so a SIGKILL takes it down and
  the workers exit on their own (lost scheduler; ``death_timeout`` if it never answered). An engine
  that hangs: ``idle_timeout`` closes the scheduler after that long without any task activity
  (Dask's ``distributed.scheduler.idle-timeout``; it counts tasks, not connected clients).
- dask-jobqueue 0.9.0 sets a SIGINT handler (``sys.exit()``) when imported: from a thread other
  than the main one that raises ``ValueError: signal only works in main thread``, and in the main
  thread it replaces the process's own Ctrl-C handling. This module is therefore first imported
  from the main thread (the engine does it when a config's backend is ``slurm``, see
  :func:`l2lflow.execution.core.load_backend`), which puts the previous handler back at once;
  a first import from another thread is refused with one line saying so.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import shutil
import signal
import sys
import tempfile
import threading
import types
from typing import Any

import dask
from dask.utils import parse_timedelta
from distributed.security import Security

from l2lflow.execution.core import cluster_config, dashboard_address
from l2lflow.execution.credentials import credential_dir
from l2lflow.execution.jobscript import job_kwargs, pinned_command
from l2lflow.execution.slurm_pool import resolve_pool, scheduler_options


def _import_dask_jobqueue() -> None:
    """Import dask_jobqueue from the main thread, keeping the SIGINT handler it replaces."""
    if "dask_jobqueue.runner" in sys.modules:
        return
    if threading.current_thread() is not threading.main_thread():
        raise RuntimeError(
            "l2lflow.execution.slurm must first be imported from the main thread "
            "(dask_jobqueue sets a SIGINT handler when imported, which only the main thread "
            "may do); import it at start-up, as the engine does for a slurm backend"
        )
    before = signal.getsignal(signal.SIGINT)
    try:
        import dask_jobqueue.runner  # noqa: F401
    finally:
        if before is not None:  # None: a handler not set from Python, which cannot be restored
            signal.signal(signal.SIGINT, before)


_import_dask_jobqueue()

from dask_jobqueue import SLURMCluster  # noqa: E402
from dask_jobqueue.core import JobQueueCluster  # noqa: E402
from dask_jobqueue.slurm import SLURMJob  # noqa: E402

__all__ = [
    "L2LSLURMCluster",
    "PinnedSLURMJob",
    "SlurmBackend",
    "adapt",
    "job_script",
    "slurm_cluster",
]

#: Where the job script looks for a scheduler when none runs yet (job_script() only).
_PLACEHOLDER_HOST = "SCHEDULER-HOST:8786"  # no <>: the script stays runnable


class PinnedSLURMJob(SLURMJob):
    """``SLURMJob`` whose GPU jobs start one pinned single-process worker per GPU."""

    def __init__(self, *args: Any, gpus_per_job: int = 0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.gpus_per_job = gpus_per_job
        if gpus_per_job:
            self._command_template = pinned_command(
                self._command_template, str(self.name), gpus_per_job
            )


class L2LSLURMCluster(SLURMCluster):
    """``SLURMCluster`` with :class:`PinnedSLURMJob` jobs, replacement of multi-worker jobs, and
    TLS files that live only as long as the cluster.

    ``credential_dir`` (a fresh private folder) receives dask-jobqueue's TLS files; it is removed
    on ``close()`` and when construction fails.
    """

    job_cls = PinnedSLURMJob

    def __init__(self, *args: Any, credential_dir: str | None = None, **kwargs: Any) -> None:
        self._credential_dir = credential_dir
        try:
            super().__init__(*args, shared_temp_directory=credential_dir, **kwargs)
        except BaseException:
            self._remove_credentials()
            raise

    def _remove_credentials(self) -> None:
        for key in ("ca_file", "cert", "key"):
            f = getattr(self, f"_job_{key}", None)
            if f is not None:
                with contextlib.suppress(OSError):
                    f.close()  # a NamedTemporaryFile: closing deletes it
        if self._credential_dir:
            shutil.rmtree(self._credential_dir, ignore_errors=True)

    async def _close(self) -> None:
        try:
            await super()._close()
        finally:
            self._remove_credentials()

    def _job_of(self, worker_name: str) -> str | None:
        """The job (``worker_spec`` key) a grouped worker ``<job>-<i>`` belongs to, if any."""
        for job, spec in self.worker_spec.items():
            if worker_name in {f"{job}{suffix}" for suffix in spec.get("group", ())}:
                return job
        return None

    def _update_worker_status(self, op: str, msg: Any) -> None:
        """Forget a multi-worker job once all its workers are gone, so adaptive replaces it.

        distributed's ``SpecCluster`` does this only for one-worker jobs: it looks the worker's
        name (``<job>-<i>``) up among the jobs, never finds it, and adaptive keeps counting the
        dead job (dask/distributed#9102, still open in 2026.8). Measured here: a ``processes=2``
        job whose workers reached ``--lifetime`` was never replaced.
        """
        if op == "remove":
            job = self._job_of(self.scheduler_info["workers"][msg]["name"])
            process = self.workers.get(job) if job is not None else None
            if process is not None:

                def forget() -> None:
                    # `is process`: by now adaptive may have started a new job of the same name
                    alive = self.scheduler_info["workers"].values()
                    if self.workers.get(job) is process and not any(
                        self._job_of(w["name"]) == job for w in alive
                    ):
                        self._futures.add(asyncio.ensure_future(process.close()))
                        del self.workers[job]

                delay = parse_timedelta(dask.config.get("distributed.deploy.lost-worker-timeout"))
                asyncio.get_running_loop().call_later(delay, forget)
        super()._update_worker_status(op, msg)


def slurm_cluster(
    pool: dict[str, Any],
    *,
    name: str,
    security: Security | bool,
    adaptive: bool = True,
) -> L2LSLURMCluster:
    """Start the scheduler of one pool (in this process) and, if ``adaptive``, its scaler.

    ``security`` is a ``distributed.security.Security`` (``Security.temporary()``) or ``True``
    for a fresh temporary one; ``None``/``False`` is refused. With ``adaptive=False`` nothing is
    submitted until ``cluster.scale(...)``. ``Client(cluster)`` carries the credentials;
    ``cluster.close()`` cancels the jobs and deletes the credential files.
    """
    if security is None or security is False:
        raise ValueError("refusing a scheduler without TLS; pass Security.temporary()")
    if security is True:
        security = Security.temporary()
    try:
        p = resolve_pool(pool)
    except (ValueError, TypeError) as exc:  # one line naming the pool, not an internal error
        from l2lflow.config import ConfigError

        raise ConfigError(f"execution.pools.{name}: {exc}") from None
    with cluster_config(p["dashboard_address"]):  # no /info pages without the dashboard
        cluster = L2LSLURMCluster(
            name=name,
            security=security,
            interface=p["interface"],
            credential_dir=credential_dir(p["shared_temp_directory"], name),
            scheduler_options=scheduler_options(p),
            **job_kwargs(p, name),
        )
    if adaptive and p["max_jobs"] > 0:
        adapt(cluster, p)
    return cluster


def adapt(cluster: JobQueueCluster, pool: dict[str, Any]) -> Any:
    """Adaptive scaling between ``min_jobs`` and ``max_jobs``; idle workers stay ``adapt_wait`` s."""
    p = resolve_pool(pool)  # idempotent on a resolved pool
    interval = 1.0
    return cluster.adapt(
        minimum_jobs=int(p["min_jobs"]),
        maximum_jobs=int(p["max_jobs"]),
        interval=f"{interval}s",
        wait_count=max(1, math.ceil(float(p["adapt_wait"]) / interval)),
    )


def job_script(pool: dict[str, Any], name: str, security: Security | None = None) -> str:
    """The job script the pool's workers would be submitted with, without starting anything.

    The scheduler address is a placeholder. With ``security``, the credentials are written the way
    dask-jobqueue does it (its own code) into a temporary folder that is gone when this returns,
    so the paths in the script are only illustrative.
    """
    p = resolve_pool(pool)
    with tempfile.TemporaryDirectory() as tmp:
        holder = types.SimpleNamespace(shared_temp_directory=tmp)
        if security is not None:
            security = JobQueueCluster._get_worker_security(holder, security)
        protocol = "tls://" if security is not None else None
        job = PinnedSLURMJob(
            f"{protocol or 'tcp://'}{_PLACEHOLDER_HOST}",
            name=f"{name}-0",
            interface=p["interface"],
            protocol=protocol,
            security=security,
            **job_kwargs(p, name),
        )
        for f in vars(holder).values():
            if hasattr(f, "close"):
                f.close()
    return job.job_script()


class SlurmBackend:
    """Every ``execution.pools.<name>`` as its own adaptive Slurm cluster (one scheduler each),
    which keeps GPU jobs and CPU jobs apart by construction."""

    def pool_specs(self, execution: dict[str, Any]) -> dict[str, dict[str, Any]]:
        dashboard = execution.get("dashboard", False)
        return {
            name: spec
            if "dashboard_address" in spec
            else {**spec, "dashboard_address": dashboard_address(dashboard)}
            for name, spec in execution["pools"].items()
        }

    def start(
        self, name: str, spec: dict[str, Any], execution: dict[str, Any], **_: Any
    ) -> tuple[L2LSLURMCluster, int]:
        """The pool's cluster, adaptive between its min_jobs and max_jobs, and its capacity."""
        cluster = slurm_cluster(spec, name=name, security=True)
        resolved = resolve_pool(spec)  # as slurm_cluster just did: it cannot fail
        # a GPU pool runs one evaluation per GPU; a CPU pool one per core (thread)
        per_job = int(resolved["gpus_per_job"]) or int(resolved["cores"])
        return cluster, int(resolved["max_jobs"]) * per_job
