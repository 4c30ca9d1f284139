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


#: every process a test starts carries its tag in this environment variable (inherited by the
#: engine, the Dask workers, the sandboxes and Slurm worker jobs), so no-orphan checks see only
#: their own test's processes, never those of runs beside it
TAG_VAR = "L2LFLOW_TEST_TAG"


def tagged_processes(tag: str) -> dict[int, str]:
    """pid -> command line of every live (not zombie) process whose environment carries ``tag``."""
    needle = f"{TAG_VAR}={tag}".encode()
    out = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                if needle not in f.read().split(b"\0"):
                    continue
            with open(f"/proc/{entry}/stat", "rb") as f:
                if f.read().rsplit(b")", 1)[-1].split()[0] == b"Z":
                    continue  # a zombie is dead; only its parent has not reaped it yet
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                out[int(entry)] = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue
    return out


def engine_processes(workdir: Path) -> list[str]:
    """Engine and sandbox processes of the :func:`run_snakemake` runs in ``workdir``."""
    return [
        f"{pid}: {cmd}"
        for pid, cmd in tagged_processes(str(workdir)).items()
        if "l2lflow.engine" in cmd or "_sandbox_main" in cmd
    ]
