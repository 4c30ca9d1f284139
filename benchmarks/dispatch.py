"""Dispatch overhead: how much the pipeline costs per evaluation and per generation.

Runs a function optimizee (Rastrigin, 10 parameters, GA) with population 1,000 × 20 generations
on 2 local workers through the real pipeline (``snakemake --cores 1``: rules → engine → Dask →
Zarr), and in the same run the same evaluations (the same parameter sets, read back from the
store) through a plain ``multiprocessing.Pool(2).map``, generation by generation. The evaluations
themselves cost microseconds, so the figures are pure overhead.

A second pipeline run, population 32 × 20 generations, times what one generation costs when
its evaluations are nothing: ``per_gen_ms`` is the median time between the last evaluations of
consecutive generations (Snakemake's three jobs per generation, the steps' processes, the
engine's sample, evaluate and aggregate); ``first_eval_s`` is the time from the ``snakemake``
command to the first finished evaluation (Snakemake's start, the engine's, the cluster's).

Last line: ``per_eval_ms=<amortised ms per evaluation> pool_ratio=<ours / pool>
per_gen_ms=<ms per generation at population 32>``.
Targets: per_eval_ms <= 0.5, pool_ratio <= 10 (the long-term aim is 4), per_gen_ms <= 250.
"""

from __future__ import annotations

import argparse
import multiprocessing
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml
from _pipeline import snakemake_command  # benchmarks/_pipeline.py (the script's folder)


def _rastrigin(x: np.ndarray) -> float:
    from l2lflow.optimizees.functions import rastrigin

    return rastrigin({f"x{i}": v for i, v in enumerate(x)}, 0)


def _config(tmp: Path, population: int, generations: int, workers: int) -> Path:
    config = {
        "name": "dispatch",
        "seed": 1,
        "generations": generations,
        "population_size": population,
        "optimizer": {"name": "ga"},
        "optimizee": {"name": "rastrigin"},
        "space": {f"x{i}": {"low": -5.12, "high": 5.12} for i in range(10)},
        "execution": {"workers": workers},
        "results": str(tmp / "results"),
    }
    path = tmp / "dispatch.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def _generation_cost(population: int, generations: int, workers: int) -> tuple[float, float]:
    """(median seconds per generation, seconds to the first finished evaluation)."""
    import l2lflow

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        cmd = snakemake_command(tmp, _config(tmp, population, generations, workers), "all")
        started = time.time()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        finished_at = l2lflow.open_results(tmp / "results").finished_at.values
    last = np.nanmax(finished_at, axis=1)  # each generation's last evaluation
    return float(np.median(np.diff(last))), float(np.nanmin(finished_at) - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--population", type=int, default=1000)
    parser.add_argument("--generations", type=int, default=20)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--small-population", type=int, default=32)
    parser.add_argument("--small-generations", type=int, default=20)
    args = parser.parse_args()
    per_gen_s, first_eval_s = _generation_cost(
        args.small_population, args.small_generations, args.workers
    )

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        cfg = _config(tmp, args.population, args.generations, args.workers)
        cmd = snakemake_command(tmp, cfg, "all")
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        ours = time.perf_counter() - t0

        import l2lflow

        ds = l2lflow.open_results(tmp / "results").load()
        x = np.stack([ds[f"x{i}"].values for i in range(10)], axis=-1)  # (gen, ind, 10)
        t0 = time.perf_counter()
        with multiprocessing.get_context("spawn").Pool(args.workers) as pool:
            pool_fitness = [pool.map(_rastrigin, list(x[g])) for g in range(args.generations)]
        pool_s = time.perf_counter() - t0
        assert np.array_equal(np.asarray(pool_fitness), ds.fitness.values), "same evaluations"

    n = args.population * args.generations
    print(
        f"pipeline: {ours:.2f} s for {n} evaluations ({args.generations} generations, "
        f"{args.workers} workers, Snakemake + engine start and stop included)"
    )
    print(f"multiprocessing.Pool.map: {pool_s:.2f} s for the same evaluations")
    print(
        f"population {args.small_population} × {args.small_generations}: first evaluation "
        f"{first_eval_s:.2f} s after the snakemake command started (first_eval_s)"
    )
    print(
        f"per_eval_ms={1000 * ours / n:.3f} pool_ratio={ours / pool_s:.2f} "
        f"per_gen_ms={1000 * per_gen_s:.0f}"
    )


if __name__ == "__main__":
    main()
