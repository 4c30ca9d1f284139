"""Dispatch overhead: how much the pipeline costs per evaluation of a cheap function.

Runs a function optimizee (Rastrigin, 10 parameters, GA) with population 1,000 × 20 generations
on 2 local workers through the real pipeline (``snakemake --cores 1``: rules → engine → Dask →
Zarr), and in the same run the same evaluations (the same parameter sets, read back from the
store) through a plain ``multiprocessing.Pool(2).map``, generation by generation. The evaluations
themselves cost microseconds, so the figures are pure overhead.

Last line: ``per_eval_ms=<amortised ms per evaluation> pool_ratio=<ours / pool>``.
Targets: per_eval_ms <= 1, pool_ratio <= 4 (L2L: ~10,000 ms per evaluation).
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--population", type=int, default=1000)
    parser.add_argument("--generations", type=int, default=20)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        config = {
            "name": "dispatch",
            "seed": 1,
            "generations": args.generations,
            "population_size": args.population,
            "optimizer": {"name": "ga"},
            "optimizee": {"name": "rastrigin"},
            "space": {f"x{i}": {"low": -5.12, "high": 5.12} for i in range(10)},
            "execution": {"workers": args.workers},
            "results": str(tmp / "results"),
        }
        cfg = tmp / "dispatch.yaml"
        cfg.write_text(yaml.safe_dump(config, sort_keys=False))
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
    print(f"per_eval_ms={1000 * ours / n:.3f} pool_ratio={ours / pool_s:.2f}")


if __name__ == "__main__":
    main()
