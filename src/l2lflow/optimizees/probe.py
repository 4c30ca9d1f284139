"""``test.gpu_probe``: a GPU-requiring optimizee that only reports where it ran.

It needs no GPU library and costs nothing, so tests (and users checking a new site profile) can
prove that evaluations of a ``needs_gpu`` optimizee reach GPU workers only: each evaluation
returns, as metrics, what the worker it ran on was given (the ``CUDA_VISIBLE_DEVICES`` it was
pinned to, the Slurm job and whether its partition is the GPU partition); the store's ``worker``
column adds the worker name, host and Slurm job as text.
"""

from __future__ import annotations

import os
import socket
from typing import Any

from l2lflow.optimizees.base import EvaluationContext, register_optimizee
from l2lflow.optimizees.functions import sphere


def _visible_gpus() -> list[int]:
    """The GPU indices this process may use, from ``CUDA_VISIBLE_DEVICES`` (set by l2lflow's GPU
    pools and by Slurm's ``--gres=gpu``); non-numeric entries (UUIDs) count as -2."""
    value = os.environ.get("CUDA_VISIBLE_DEVICES", "").strip()
    if not value:
        return []
    return [int(v) if v.strip().isdigit() else -2 for v in value.split(",") if v.strip()]


@register_optimizee("test.gpu_probe", needs_gpu=True)
def gpu_probe(
    params: dict[str, Any],
    seed: int,
    *,
    context: EvaluationContext,
    gpu_partition: str = "gpus",
) -> dict[str, float]:
    """Sphere of the parameters, plus where the evaluation ran (needs a GPU worker).

    Metrics: ``gpu_count`` (entries of ``CUDA_VISIBLE_DEVICES``; 0 when unset or empty),
    ``gpu_index`` (the first of them, -1 without any), ``slurm_job`` (``SLURM_JOB_ID``, -1
    outside Slurm), ``on_gpu_partition`` (1 when ``SLURM_JOB_PARTITION`` is ``gpu_partition``).
    """
    gpus = _visible_gpus()
    job = os.environ.get("SLURM_JOB_ID", "")
    partition = os.environ.get("SLURM_JOB_PARTITION", "")
    context.log.info(
        "gpu_probe: host=%s CUDA_VISIBLE_DEVICES=%r SLURM_JOB_ID=%r partition=%r",
        socket.gethostname(),
        os.environ.get("CUDA_VISIBLE_DEVICES"),
        job,
        partition,
    )
    return {
        "fitness": sphere(params, seed),
        "gpu_count": float(len(gpus)),
        "gpu_index": float(gpus[0]) if gpus else -1.0,
        "slurm_job": float(job) if job.isdigit() else -1.0,
        "on_gpu_partition": float(partition == gpu_partition),
    }
