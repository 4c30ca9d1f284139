"""The Executor: where and how evaluations run (one of the four parts of l2lflow).

The four parts, and where each lives:

- **Optimizer** (:mod:`l2lflow.optimizers`): proposes a generation's parameters, is told their
  fitness (``ask`` / ``tell``).
- **Optimizee** (:mod:`l2lflow.optimizees`): the model a parameter set is evaluated with
  (``function(params, seed) -> fitness or dict``).
- **ResultStore** (:mod:`l2lflow.store`): one Zarr store per experiment; every evaluation's
  parameters, seed, status and results, and the optimizer's checkpoints.
- **Executor** (this package): sends a generation's evaluations to Dask workers, runs each in a
  sandbox process, retries what failed, and streams the results into the store.

The Executor's modules, one job each:

- ``core.py``: :class:`Executor` (a run's pools and its two entry points, ``evaluate_generation``
  and ``meta_test``), the :class:`PoolBackend` interface, the backend registry
  (``BACKENDS``), :func:`start_pools`, and the Dask config every cluster starts with
  (:func:`cluster_config`: Dask's periodic checks once a second, no dashboard pages unless
  asked for).
- ``local.py``: ``LocalBackend``: a TLS ``LocalCluster`` on this machine (and a GPU pool).
- ``slurm.py``: ``SlurmBackend``: one adaptive dask-jobqueue ``SLURMCluster`` per pool.
- ``slurm_pool.py``: the Slurm pool spec: keys, defaults, checks (no dask-jobqueue import).
- ``jobscript.py``: job keyword arguments, and the exports and GPU-pinning text of a Slurm job
  script.
- ``credentials.py``: the owner-only folder of a Slurm pool's TLS files, and its removal.
- ``dispatch.py``: a generation's work → Dask tasks (chunked by runtime) → results streamed to
  the store; retries, progress, interruption; the meta-test goes through the same
  ``Dispatcher``.
- ``work.py``: the typed work items (``EvaluationSpec``, the columnar ``Chunk``,
  ``work_chunk``) and the result records (``success`` / ``failure``, ``ChunkResults``).
- ``task.py``: what runs on a worker: the Dask task ``evaluate_chunk``, ``run_one`` /
  ``run_batch``, and the checks that turn a return value into a storable result.
- ``sandbox.py``: process isolation: the sandbox process, its spawner thread, parent-death
  signal, subreaper and guard (nothing an optimizee starts outlives it).
"""

from l2lflow.execution.core import Executor, PoolBackend, start_pools

__all__ = ["Executor", "PoolBackend", "start_pools"]
