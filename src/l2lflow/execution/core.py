"""The Executor: a run's worker pools (one Dask client per pool, started once per run and
shared by all generations) behind one small backend interface, :class:`PoolBackend`.

A pool is a set of workers of one kind: ``cpu`` (NEST and plain Python optimizees) and ``gpu``
(optimizees that declare ``needs_gpu``). Locally there is one LocalCluster; with Slurm each pool
is its own dask-jobqueue ``SLURMCluster`` (its own scheduler), which keeps GPU jobs and CPU jobs
apart by construction: a CPU evaluation is never sent to a GPU pool's scheduler at all.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import sys
from dataclasses import dataclass, field
from typing import Any, Protocol

log = logging.getLogger("l2lflow.execution")


class PoolError(RuntimeError):
    """The run has no worker pool for what the optimizee needs (a config matter: one line)."""


@dataclass
class Executor:
    """Where a run's evaluations go: its worker pools (clusters and clients, by pool name), and
    the two entry points that send work there: :meth:`evaluate_generation` and
    :meth:`meta_test` (both through :mod:`l2lflow.execution.dispatch`).

    Started once per run by :func:`start_pools` and shared by all its generations.
    """

    clusters: dict[str, Any] = field(default_factory=dict)
    clients: dict[str, Any] = field(default_factory=dict)
    #: the most evaluation slots (worker threads) each pool can have: an adaptive Slurm pool
    #: starts with few or no workers and grows only when it sees queued work, so dispatch keeps
    #: this many slots' worth of tasks submitted, not only the connected workers' worth
    capacity: dict[str, int] = field(default_factory=dict)

    def client(self, name: str):
        """The client of pool ``name`` (GPU work only ever goes to the ``gpu`` pool)."""
        if name not in self.clients:
            hint = f"configure execution.pools.{name}"
            if name == "gpu":
                hint = (
                    "with the local backend a GPU worker starts only when `nvidia-smi -L` lists "
                    "a GPU and execution.gpu is auto; with Slurm configure execution.pools.gpu; "
                    "or set evaluation.device: cpu to run it on CPU workers"
                )
            raise PoolError(
                f"this optimizee needs a '{name}' worker pool, but the run has only: "
                f"{', '.join(self.clients) or 'none'} ({hint})"
            )
        return self.clients[name]

    def evaluate_generation(
        self,
        pool: str,
        store: Any,
        generation: int,
        spec: Any,
        config: dict[str, Any],
        **options: Any,
    ) -> Any:
        """Evaluate the open individuals of ``generation`` on pool ``pool`` (see
        :func:`l2lflow.execution.dispatch.evaluate_generation` for ``options``)."""
        from l2lflow.execution.dispatch import evaluate_generation

        return evaluate_generation(
            self.client(pool), store, generation, spec, config, **self._placement(pool), **options
        )

    def meta_test(
        self,
        pool: str,
        store: Any,
        chosen: list[tuple[int, int]],
        spec: Any,
        config: dict[str, Any],
        **options: Any,
    ) -> list[dict[str, Any]]:
        """Evaluate the ``chosen`` individuals on held-out tasks on pool ``pool`` (see
        :func:`l2lflow.execution.dispatch.evaluate_meta_test` for ``options``)."""
        from l2lflow.execution.dispatch import evaluate_meta_test

        return evaluate_meta_test(
            self.client(pool), store, chosen, spec, config, **self._placement(pool), **options
        )

    def _placement(self, pool: str) -> dict[str, Any]:
        """How tasks for ``pool`` are submitted: a GPU pool's need one ``GPU`` resource each;
        an adaptive pool's slots are what it can grow to (0: a fixed pool)."""
        return {
            "resources": {"GPU": 1} if pool == "gpu" else None,
            "slots": self.capacity.get(pool, 0),
        }

    def worker_count(self, name: str) -> int:
        client = self.clients[name]
        return len(client.scheduler_info(n_workers=-1).get("workers", {}))

    def close(self) -> None:
        """Close every client and cluster; Slurm jobs are cancelled by their cluster."""
        for client in self.clients.values():
            with contextlib.suppress(Exception):
                client.close(timeout=10)
        for cluster in self.clusters.values():
            with contextlib.suppress(Exception):
                cluster.close(timeout=10)
        self.clients.clear()
        self.clusters.clear()


def dashboard_address(value: Any) -> str | None:
    """The scheduler dashboard address for ``execution.dashboard`` (``None``: no dashboard).

    Off by default because on a shared login node every local user can open it (worker logs,
    task keys, call stacks). When on, it binds to 127.0.0.1 only; another host is refused.
    Raises ``ValueError`` with what is allowed.
    """
    allowed = 'false, true, a port (8787), or "127.0.0.1:PORT"'
    if value is None or value is False:
        return None
    if value is True:
        return "127.0.0.1:0"
    if isinstance(value, int) and 0 <= value <= 65535:
        return f"127.0.0.1:{value}"
    if isinstance(value, str):
        host, sep, port = value.rpartition(":")
        if sep and port.isdigit() and int(port) <= 65535 and host in ("", "127.0.0.1", "localhost"):
            return f"127.0.0.1:{int(port)}"
        if value.isdigit() and int(value) <= 65535:
            return f"127.0.0.1:{int(value)}"
        if sep and host not in ("", "127.0.0.1", "localhost"):
            raise ValueError(
                f"{value!r}: the dashboard binds to 127.0.0.1 only (other users of the machine "
                "could open it otherwise); view it from elsewhere with ssh -L"
            )
    raise ValueError(f"{value!r} is not a dashboard setting (allowed: {allowed})")


#: Dask's periodic checks that wake every process of a cluster while the evaluations run.
#: Every 20 ms each worker and the scheduler timed their own event loop (a diagnostic for
#: "event loop was unresponsive" warnings), and every 100 ms each worker and nanny checked the
#: worker's memory. On a machine whose cores all simulate, each wake-up preempts a simulation:
#: with 2 workers on 2 cores the two sandboxes were preempted ~150 times a second each and
#: waited 2.3 s for a core during a 23-s generation, and the workers used 0.55 s of CPU each.
#: With both at 1 s: ~70 preemptions a second, 0.9 s of waiting, 0.14 s per worker
#: (``benchmarks/nest_throughput.py``, CPU times and ``/proc/<pid>/schedstat`` of every
#: process). A memory check once a second still stops a runaway worker.
QUIET_LOOPS = {
    "distributed.admin.tick.interval": "1s",
    "distributed.worker.memory.monitor-interval": "1s",
}

#: what a worker does not do when the run has no dashboard (see :func:`cluster_config`)
WORKER_WITHOUT_DASHBOARD = {"distributed.worker.profile.enabled": False}


def dask_environment(settings: dict[str, Any]) -> dict[str, str]:
    """Dask config ``settings`` as the ``DASK_*`` environment variables Dask reads at import
    (``distributed.admin.tick.interval`` -> ``DASK_DISTRIBUTED__ADMIN__TICK__INTERVAL``)."""
    return {
        "DASK_" + key.upper().replace(".", "__").replace("-", "_"): str(value)
        for key, value in settings.items()
    }


#: what every Slurm worker's job script exports (:data:`QUIET_LOOPS`), and what it also exports
#: when the run has no dashboard (:data:`WORKER_WITHOUT_DASHBOARD`)
QUIET_LOOPS_ENV = dask_environment(QUIET_LOOPS)
NO_DASHBOARD_ENV = dask_environment(WORKER_WITHOUT_DASHBOARD)


@contextlib.contextmanager
def cluster_config(dashboard: str | None):
    """Dask config for a cluster's scheduler, nannies and workers while it starts (the workers
    of a local cluster get their nanny's config; Slurm workers get the same through
    :data:`QUIET_LOOPS_ENV` and :data:`NO_DASHBOARD_ENV` in their job script).

    Always: :data:`QUIET_LOOPS`. Without a dashboard, also: the scheduler's and workers' HTTP
    servers (they listen even without the dashboard, and by default serve ``/info`` pages with
    worker logs and call stacks, and Prometheus metrics) serve ``/health`` only; the system
    monitor, whose plots nobody looks at, samples every 2 s instead of every 0.5 s and without
    disk counters (the scheduler and the nannies run in the engine, and their sampling was a
    tenth of the engine's CPU time while it evaluated: ``benchmarks/engine_throughput.py``
    profiled); and the workers do not sample every thread's stack every 10 ms for the
    dashboard's profile pages (4 % of a core per waiting worker beside the simulations, 2.7 %
    without it).
    """
    import dask

    settings: dict[str, Any] = dict(QUIET_LOOPS)
    if dashboard is None:
        health = ["distributed.http.health"]
        settings.update(
            {
                "distributed.scheduler.http.routes": health,
                "distributed.worker.http.routes": health,
                "distributed.admin.system-monitor.interval": "2s",
                "distributed.admin.system-monitor.disk": False,
                **WORKER_WITHOUT_DASHBOARD,
            }
        )
    with dask.config.set(settings):
        yield


class PoolBackend(Protocol):
    """Where a run's pools come from: which pools an ``execution`` config asks for, and how one
    of them starts. Registered by name in :data:`BACKENDS` (``execution.backend``)."""

    def pool_specs(self, execution: dict[str, Any]) -> dict[str, dict[str, Any]]:
        """Pool name -> its spec, for every pool the config asks for on this machine."""
        ...

    def start(
        self,
        name: str,
        spec: dict[str, Any],
        execution: dict[str, Any],
        *,
        local_directory: str | None = None,
    ) -> tuple[Any, int]:
        """Start pool ``name``'s cluster; returns it and the most evaluation slots it can grow
        to (0: a fixed pool, whose slots are its connected workers' threads)."""
        ...


#: ``execution.backend`` name -> ``module:class`` of its :class:`PoolBackend` (imported on use)
BACKENDS: dict[str, str] = {
    "local": "l2lflow.execution.local:LocalBackend",
    "slurm": "l2lflow.execution.slurm:SlurmBackend",
}


def load_backend(name: str) -> PoolBackend:
    """The backend registered as ``name``, its module imported now.

    Call it from the main thread before pools start from another thread: a backend module may
    do what only the main thread may (the Slurm one's dask-jobqueue sets a signal handler).
    """
    if name not in BACKENDS:
        raise PoolError(
            f"execution.backend: {name!r} is not a backend (known: {', '.join(sorted(BACKENDS))})"
        )
    module, _, cls = BACKENDS[name].partition(":")
    return getattr(importlib.import_module(module), cls)()


def backend_imported(name: str) -> bool:
    """Whether backend ``name``'s module is imported already (so any thread may start it)."""
    module = BACKENDS.get(name, "").partition(":")[0]
    return module in sys.modules


def start_pools(execution: dict[str, Any], *, local_directory: str | None = None) -> Executor:
    """Start the pools an execution config describes and connect a client to each."""
    from distributed import Client

    backend = load_backend(execution.get("backend", "local"))
    pools = Executor()
    try:
        for name, spec in backend.pool_specs(execution).items():
            cluster, capacity = backend.start(
                name, spec, execution, local_directory=local_directory
            )
            pools.clusters[name] = cluster
            pools.clients[name] = Client(cluster, set_as_default=False)
            if capacity:
                pools.capacity[name] = capacity
    except BaseException:
        pools.close()
        raise
    return pools
