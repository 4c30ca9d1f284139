"""A Dask ``LocalCluster`` for one machine: worker processes with one thread each.

One thread per worker because a NEST kernel is per process (two threads in one worker give
silently wrong results and errors such as ``UnknownNode``, measured). TLS with throw-away credentials so that other users of a
shared login node cannot connect to the scheduler and run code as you; the dashboard is off
unless ``execution.dashboard`` asks for it, and then listens on 127.0.0.1 only.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
from typing import Any

log = logging.getLogger("l2lflow.execution")


class LocalBackend:
    """One ``LocalCluster`` of CPU workers on this machine (the ``cpu`` pool), and a second one
    of one worker on the first GPU (the ``gpu`` pool) when ``execution.gpu`` is ``auto`` and
    ``nvidia-smi -L`` lists a GPU."""

    def pool_specs(self, execution: dict[str, Any]) -> dict[str, dict[str, Any]]:
        pools: dict[str, dict[str, Any]] = {"cpu": {}}
        if execution.get("gpu", "auto") == "auto" and local_gpus():
            pools["gpu"] = {}
        return pools

    def start(
        self,
        name: str,
        spec: dict[str, Any],
        execution: dict[str, Any],
        *,
        local_directory: str | None = None,
    ) -> tuple[Any, int]:
        if name == "gpu":
            return start_local_gpu_cluster(execution, local_directory=local_directory), 0
        # CPU workers see no GPU: a torch optimizee with device "auto" routed to the cpu pool
        # (evaluation.device: cpu, or no gpu pool) then really runs on the CPU
        cluster = start_local_cluster(
            execution, local_directory=local_directory, env={"CUDA_VISIBLE_DEVICES": ""}
        )
        if cluster.scheduler.http_server is not None and execution.get("dashboard", False):
            log.info("Dask dashboard (127.0.0.1 only): %s", cluster.dashboard_link)
        return cluster, 0


def local_worker_count(execution: dict[str, Any]) -> int:
    """Configured worker count, else one per usable CPU core."""
    if execution.get("workers"):
        return int(execution["workers"])
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def local_gpus() -> list[str]:
    """Indices of the CUDA GPUs on this machine (``nvidia-smi -L``), empty without any."""
    if not shutil.which("nvidia-smi"):
        return []
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return []
    if out.returncode != 0:
        return []
    return [str(i) for i, line in enumerate(out.stdout.splitlines()) if line.startswith("GPU ")]


def start_local_gpu_cluster(execution: dict[str, Any], *, local_directory: str | None = None):
    """One worker on the first local GPU, advertising ``GPU=1`` (the local ``gpu`` pool)."""
    gpu = local_gpus()[0]
    return start_local_cluster(
        {**execution, "workers": 1},
        local_directory=local_directory,
        resources={"GPU": 1},
        env={"CUDA_VISIBLE_DEVICES": gpu},
    )


def start_local_cluster(
    execution: dict[str, Any], *, local_directory: str | None = None, **worker_kwargs: Any
):
    """Start a TLS-secured ``LocalCluster`` and return it (the caller makes the Client)."""
    import dask
    from distributed import LocalCluster

    from l2lflow.execution.core import cluster_config, dashboard_address

    n = local_worker_count(execution)
    dashboard = dashboard_address(execution.get("dashboard", False))
    with (
        dask.config.set(
            {
                # workers must be able to start the sandbox process of each evaluation
                "distributed.worker.daemon": False,
            }
        ),
        cluster_config(dashboard),
    ):
        cluster = _start_with_retries(
            LocalCluster,
            n_workers=n,
            threads_per_worker=1,
            processes=True,
            security=True,
            host="127.0.0.1",
            dashboard_address=dashboard,
            silence_logs=logging.ERROR,
            local_directory=local_directory,
            memory_limit=execution.get("memory_limit", "auto"),
            **worker_kwargs,
        )
    return cluster


#: a cluster start is tried this often before its error is the run's
START_ATTEMPTS = 3


def _start_with_retries(factory: Any, **kwargs: Any):
    """``factory(**kwargs)``, tried again when a worker died while the cluster started.

    Why: a worker process killed during the start (the OOM killer on a full login node, a user's
    ``kill``) makes ``LocalCluster`` raise "Nanny failed to start" and closes what it had
    started; the run should go on with fresh workers instead of failing.
    """
    for attempt in range(1, START_ATTEMPTS + 1):
        try:
            return factory(**kwargs)
        except RuntimeError as exc:  # distributed's "Nanny failed to start" / "Cluster failed ..."
            if attempt == START_ATTEMPTS:
                raise
            log.warning(
                "the Dask cluster failed to start (%s; attempt %d of %d): starting it again",
                exc,
                attempt,
                START_ATTEMPTS,
            )
    raise AssertionError("unreachable")
