"""Device routing with the local backend: which worker pool evaluates what (CPU-only machine).

- A ``needs_gpu`` optimizee on a run without a GPU pool fails at once with one clear line.
- ``evaluation.device: cpu`` forces it onto the CPU workers, which see no GPU at all.
- When ``nvidia-smi -L`` lists a GPU, the local cluster adds a GPU worker pinned to it; GPU work
  lands there only, and ``execution.gpu: off`` keeps a run on CPU workers. This machine has no
  GPU, so that test puts a stand-in ``nvidia-smi`` first on PATH: everything else (the two real
  Dask clusters, the ``GPU=1`` resource, the pinned ``CUDA_VISIBLE_DEVICES``, the store) is real.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from helpers import write_config

from l2lflow.execution.local import local_gpus

no_real_gpu = pytest.mark.skipif(
    bool(local_gpus()), reason="this machine has a GPU: the no-GPU-pool path cannot be shown"
)


def _probe_config(tmp_path: Path, **evaluation: object) -> Path:
    return write_config(
        tmp_path,
        name="probe",
        generations=1,
        population_size=4,
        optimizer={"name": "random"},
        optimizee={"name": "test.gpu_probe"},
        evaluation={"retries": 0, "timeout_s": 30, **evaluation},
        execution={"workers": 1, "idle_timeout_s": 20},
    )


@no_real_gpu
def test_needs_gpu_without_gpu_pool_is_one_clear_error_line(tmp_path: Path) -> None:
    cfg = _probe_config(tmp_path)
    start = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "l2lflow", "run", str(cfg)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    elapsed = time.monotonic() - start
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("l2lflow: error:")]
    assert len(errors) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert "needs a 'gpu' worker pool" in errors[0] and "evaluation.device: cpu" in errors[0]
    assert elapsed < 90  # no hang waiting for a GPU worker that will never come


def test_device_cpu_forces_cpu_workers_which_see_no_gpu(tmp_path: Path, monkeypatch) -> None:
    """Even if this process was given a GPU, the local CPU workers hide it."""
    import xarray as xr

    from l2lflow.config import load_config
    from l2lflow.experiment import Experiment

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    config = load_config(_probe_config(tmp_path, device="cpu"), {"execution": {"gpu": "off"}})
    exp = Experiment(config)
    assert exp.pool_name() == "cpu"
    exp.run()
    ds = xr.open_zarr(Path(config["results"]) / "results.zarr")
    assert (ds.metric_gpu_count.values == 0).all()
    assert (ds.metric_gpu_index.values == -1).all()


@pytest.fixture
def stand_in_gpu(tmp_path: Path, monkeypatch) -> None:
    """An ``nvidia-smi`` that lists one GPU, first on PATH (see the module docstring)."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    smi = bindir / "nvidia-smi"
    smi.write_text("#!/bin/sh\necho 'GPU 0: Stand-in GPU (UUID: GPU-00000000)'\n")
    smi.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)


def test_local_gpu_pool_gets_gpu_work_only(tmp_path: Path, stand_in_gpu) -> None:
    import xarray as xr

    from l2lflow.config import load_config
    from l2lflow.experiment import Experiment

    assert local_gpus() == ["0"]
    config = load_config(_probe_config(tmp_path))
    exp = Experiment(config)
    try:
        pools = exp.pools()
        assert sorted(pools.clients) == ["cpu", "gpu"]
        gpu_workers = pools.client("gpu").scheduler_info(n_workers=-1)["workers"].values()
        assert [w["resources"] for w in gpu_workers] == [{"GPU": 1}]
        assert exp.pool_name() == "gpu"
        exp.sample(0)
        exp.evaluate(0)
        exp.aggregate(0)
    finally:
        exp.close()
    ds = xr.open_zarr(Path(config["results"]) / "results.zarr")
    assert (ds.metric_gpu_index.values == 0).all() and (ds.metric_gpu_count.values == 1).all()
    assert all("gpu=0" in str(w) for w in np.ravel(ds.worker.values))

    # a GPU-preferring optimizee goes to the GPU pool when there is one; execution.gpu: off
    # leaves only CPU workers, and evaluation.device: cpu picks them even with a GPU pool
    lsnn = load_config(
        write_config(
            tmp_path / "lsnn",
            name="lsnn",
            optimizee={"name": "torch.lsnn"},
            space={"inner_lr": {"low": 1e-3, "high": 0.1, "scale": "log"}},
        )
    )
    exp = Experiment(lsnn)
    try:
        assert exp.pool_name() == "gpu"
    finally:
        exp.close()
    off = Experiment({**lsnn, "execution": {**lsnn["execution"], "gpu": "off"}})
    try:
        assert sorted(off.pools().clients) == ["cpu"] and off.pool_name() == "cpu"
    finally:
        off.close()
    # evaluation.device is part of the results' identity: its own results folder
    forced = Experiment(
        {
            **lsnn,
            "results": str(tmp_path / "lsnn-forced"),
            "evaluation": {**lsnn["evaluation"], "device": "cpu"},
        }
    )
    assert forced.pool_name() == "cpu"  # decided by the config alone: no pools started
