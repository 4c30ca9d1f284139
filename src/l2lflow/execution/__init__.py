"""Where evaluations run: Dask clusters (local, Slurm CPU pool, Slurm GPU pool) behind one API."""

from l2lflow.execution.core import WorkerPools, start_pools

__all__ = ["WorkerPools", "start_pools"]
