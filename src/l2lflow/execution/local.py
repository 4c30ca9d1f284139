"""A Dask ``LocalCluster`` for one machine: worker processes with one thread each.

One thread per worker because a NEST kernel is per process (two threads in one worker give
silently wrong results; FACTS.md). TLS with throw-away credentials so that other users of a
shared login node cannot connect to the scheduler and run code as you; the dashboard listens
on localhost only.
"""

from __future__ import annotations

import logging
import os
from typing import Any


def local_worker_count(execution: dict[str, Any]) -> int:
    """Configured worker count, else one per usable CPU core."""
    if execution.get("workers"):
        return int(execution["workers"])
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def start_local_cluster(execution: dict[str, Any], *, local_directory: str | None = None):
    """Start a TLS-secured ``LocalCluster`` and return it (the caller makes the Client)."""
    import dask
    from distributed import LocalCluster

    n = local_worker_count(execution)
    with dask.config.set(
        {
            # workers must be able to start the sandbox process of each evaluation
            "distributed.worker.daemon": False,
            # a scheduler nobody talks to any more stops itself (covers a killed engine)
            "distributed.scheduler.idle-timeout": f"{int(execution.get('idle_timeout_s', 60))}s",
        }
    ):
        cluster = LocalCluster(
            n_workers=n,
            threads_per_worker=1,
            processes=True,
            security=True,
            host="127.0.0.1",
            dashboard_address=execution.get("dashboard_address", "127.0.0.1:0"),
            silence_logs=logging.ERROR,
            local_directory=local_directory,
            memory_limit=execution.get("memory_limit", "auto"),
        )
    return cluster
