"""Scale: a function optimizee at 10,000 individuals × 100 generations through the real pipeline.

Runs Rastrigin (10 parameters, GA) with ``--population`` individuals for ``--generations``
generations through ``snakemake --cores 1`` (rules → engine → Dask workers → Zarr store), and
measures what a large sweep costs around the evaluations themselves:

* ``total``: the whole ``snakemake`` run, engine and cluster start and stop included;
* ``dag``: ``snakemake -n`` on the same config before the run, i.e. how long Snakemake takes to
  build the 3-jobs-per-generation DAG (interpreter start included: what a user waits for),
  with its CPU time and, for reference, ``snakemake --version`` (Snakemake's own start);
* ``open``: ``xr.open_zarr`` of the finished store in a fresh process (imports done before the
  clock starts), and for reference reading all of ``fitness``, ``ds.l2l.fitness_trajectory()``
  and ``l2lflow status``;
* the store's size on disk and its file count (HPC file systems hate millions of small files:
  the store has one chunk per variable and generation, so files ≈ variables × generations).

Last line: ``scale_total_s=<s> dag_s=<s> open_s=<s> files=<n>`` (``files``: the store's).
Targets: dag_s <= 2, open_s <= 2. ``--quick`` is 1,000 × 10 (for ``benchmarks/run_all.py``).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml
from _pipeline import snakemake_command  # benchmarks/_pipeline.py (the script's folder)

#: run in a fresh interpreter: the store is opened cold, as a user's notebook would
OPEN_PROBE = """
import json, sys, time
import numpy as np, xarray as xr, zarr  # imports are not what we measure
import l2lflow.accessor  # noqa: F401
from l2lflow.status import render_status
path = sys.argv[1]
t0 = time.perf_counter(); ds = xr.open_zarr(path + "/results.zarr"); t1 = time.perf_counter()
fitness = ds.fitness.values; t2 = time.perf_counter()
traj = ds.l2l.fitness_trajectory(); t3 = time.perf_counter()
text = render_status(path); t4 = time.perf_counter()
assert fitness.shape == (int(sys.argv[2]), int(sys.argv[3])) and np.isfinite(fitness).all()
assert len(traj) == fitness.shape[0] and "finished" in text.splitlines()[0]
print(json.dumps({"open": t1 - t0, "read_fitness": t2 - t1, "trajectory": t3 - t2,
                  "status": t4 - t3, "variables": len(ds.data_vars)}))
"""


def _children_cpu() -> float:
    """CPU seconds (user + system) of the finished child processes so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _files(path: Path) -> tuple[int, int]:
    """(number of files, bytes on disk) under ``path``."""
    n = size = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            n += 1
            size += os.lstat(os.path.join(root, name)).st_blocks * 512
    return n, size


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--population", type=int, default=10_000)
    parser.add_argument("--generations", type=int, default=100)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="1,000 × 10 instead")
    parser.add_argument("--keep", type=Path, help="run in this folder and keep it")
    args = parser.parse_args(argv)
    if args.quick:
        args.population, args.generations = 1000, 10

    with tempfile.TemporaryDirectory() as scratch:
        tmp = args.keep or Path(scratch)
        tmp.mkdir(parents=True, exist_ok=True)
        results = tmp / "results"
        config = {
            "name": "scale",
            "seed": 1,
            "generations": args.generations,
            "population_size": args.population,
            "optimizer": {"name": "ga"},
            "optimizee": {"name": "rastrigin"},
            "space": {f"x{i}": {"low": -5.12, "high": 5.12} for i in range(10)},
            "execution": {"workers": args.workers},
            "results": str(results),
        }
        cfg = tmp / "scale.yaml"
        cfg.write_text(yaml.safe_dump(config, sort_keys=False))
        quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.PIPE, "text": True}

        # Snakemake's own start (imports, plugins, argument parsing) as a baseline
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "snakemake", "--version"], **quiet)
        start_s = time.perf_counter() - t0
        cpu0 = _children_cpu()
        t0 = time.perf_counter()
        dry = subprocess.run(snakemake_command(tmp, cfg, "-n"), **quiet)
        dag_s = time.perf_counter() - t0
        dag_cpu_s = _children_cpu() - cpu0
        if dry.returncode != 0:
            print(dry.stderr, file=sys.stderr)
            return 1

        t0 = time.perf_counter()
        run = subprocess.run(snakemake_command(tmp, cfg, "all"), **quiet)
        total_s = time.perf_counter() - t0
        if run.returncode != 0:
            print(run.stderr, file=sys.stderr)
            return 1

        probe = subprocess.run(
            [
                sys.executable,
                "-c",
                OPEN_PROBE,
                str(results),
                str(args.generations),
                str(args.population),
            ],
            capture_output=True,
            text=True,
        )
        if probe.returncode != 0:
            print(probe.stderr, file=sys.stderr)
            return 1
        t = json.loads(probe.stdout.strip().splitlines()[-1])
        store_files, store_bytes = _files(results / "results.zarr")
        folder_files, _ = _files(results)
        meta_files, _ = _files(tmp / ".snakemake")

    n = args.population * args.generations
    print(
        f"{args.population} individuals × {args.generations} generations = {n:,} evaluations "
        f"on {args.workers} workers"
    )
    print(
        f"total {total_s:.1f} s ({1000 * total_s / n:.3f} ms per evaluation, Snakemake, engine "
        f"and cluster start included)"
    )
    print(
        f"snakemake -n (DAG of {3 * args.generations} jobs) {dag_s:.2f} s ({dag_cpu_s:.2f} s "
        f"CPU), of which Snakemake's own start (snakemake --version) {start_s:.2f} s"
    )
    print(
        f"cold xr.open_zarr {t['open']:.3f} s; all of fitness {t['read_fitness']:.3f} s; "
        f"ds.l2l.fitness_trajectory() {t['trajectory']:.3f} s; l2lflow status {t['status']:.3f} s"
    )
    print(
        f"store: {store_bytes / 2**20:.1f} MiB on disk in {store_files} files "
        f"({t['variables']} variables); results folder {folder_files} files "
        f"(+ {meta_files} in Snakemake's .snakemake/)"
    )
    print(
        f"scale_total_s={total_s:.1f} dag_s={dag_s:.2f} open_s={t['open']:.3f} files={store_files}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
