"""Shared helpers of the test suite: configs, Snakemake runs, store comparison."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[1]
SNAKEFILE = REPO / "Snakefile"


def write_config(tmp_path: Path, **overrides: Any) -> Path:
    """A small, fast sphere experiment in ``tmp_path``; keyword arguments override keys."""
    config: dict[str, Any] = {
        "name": "t",
        "seed": 7,
        "generations": 3,
        "population_size": 8,
        "optimizer": {"name": "cross_entropy"},
        "optimizee": {"name": "sphere"},
        "space": {"a": {"low": -2.0, "high": 2.0}, "b": {"low": 0.01, "high": 10, "scale": "log"}},
        "evaluation": {"retries": 1, "timeout_s": 30},
        "execution": {"workers": 2, "idle_timeout_s": 20},
    }
    config.update(overrides)
    config.setdefault("results", str(tmp_path / "results" / config["name"]))
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / f"{config['name']}.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def snakemake_cmd(workdir: Path, configfile: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "snakemake",
        "-s",
        str(SNAKEFILE),
        "--directory",
        str(workdir),
        "--configfile",
        str(configfile),
        "--cores",
        "1",
        "--rerun-incomplete",
        *extra,
    ]


def run_snakemake(workdir: Path, configfile: Path, *extra: str, check: bool = True, timeout=300):
    proc = subprocess.run(
        snakemake_cmd(workdir, configfile, *extra),
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHONUNBUFFERED": "1", TAG_VAR: str(workdir)},
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def result_arrays(results_dir: Path) -> dict[str, np.ndarray]:
    """Every deterministic variable of a store (parameters, fitness, status, seeds, metrics)."""
    import zarr

    root = zarr.open_group(
        str(Path(results_dir) / "results.zarr"), mode="r", use_consolidated=False
    )
    skip = {"runtime", "attempts", "worker", "error", "log", "finished_at"}
    out = {name: np.asarray(root[name][...]) for name in root.array_keys() if name not in skip}
    states = root["optimizer/state"]
    out["optimizer/state"] = np.asarray([s for s in states[...]], dtype=object)
    return out


def assert_same_results(a: Path, b: Path) -> None:
    ra, rb = result_arrays(a), result_arrays(b)
    assert sorted(ra) == sorted(rb)
    for name in ra:
        x, y = ra[name], rb[name]
        if name == "optimizer/state":
            import json

            # the summary is deterministic too; compare the whole JSON
            assert [json.loads(s) for s in x] == [json.loads(s) for s in y], name
            continue
        assert x.dtype == y.dtype, name
        assert x.shape == y.shape, name
        assert x.tobytes() == y.tobytes(), f"{name} differs"


#: every process a Snakemake run of a test starts inherits this variable (its workdir), so the
#: no-orphan checks see only the processes of their own test, not those of parallel runs
TAG_VAR = "L2LFLOW_TEST_WORKDIR"


def engine_processes(workdir: Path | None = None) -> list[str]:
    """Command lines of l2lflow engine and sandbox processes still running (no-orphan checks).

    With ``workdir``, only those started by :func:`run_snakemake` runs in that folder.
    """
    out = []
    tag = f"{TAG_VAR}={workdir}".encode() if workdir is not None else None
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            cmd = (Path("/proc") / pid / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if "l2lflow.engine" not in cmd and "_sandbox_main" not in cmd:
            continue
        if tag is not None:
            try:
                environ = (Path("/proc") / pid / "environ").read_bytes().split(b"\0")
            except OSError:
                continue
            if tag not in environ:
                continue
        out.append(f"{pid}: {cmd}")
    return out
