"""A small real workload end to end: does the pipeline beat one plain Python loop?

20 generations × 12 individuals of a 400-neuron Brunel network (1 s of biological time each,
cross-entropy optimizer) through ``snakemake`` (rules → engine → Dask LocalCluster with 2
workers → Zarr store), everything included: Snakemake's start and DAG, the engine, the cluster,
every generation's sample/evaluate/aggregate steps. In the same run, the same parameter sets
(read back from the store) are simulated one after the other in this process, as a user's own
script would, NEST's import included. Both sides compute the same fitness bitwise (checked).

This is the workload where fixed costs (Snakemake and cluster start), per-generation costs and
generations that wait for their slowest member all show, so it is the honest end-to-end
figure for small NEST experiments on a laptop or login node. The same simulations in a plain
``multiprocessing.Pool`` (generation by generation) show what a hand-written parallel loop
reaches on the same machine in the same run.

Last line: ``speedup=<sequential time / pipeline time>``. Target >= 1.6 (2 workers).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml
from _pipeline import brunel_in_pool, snakemake_command  # benchmarks/_pipeline.py


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--generations", type=int, default=20)
    parser.add_argument("--population", type=int, default=12)
    parser.add_argument("--neurons", type=int, default=400)
    parser.add_argument("--sim-ms", type=float, default=1000.0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="3 generations × 6, 200 ms")
    args = parser.parse_args()
    if args.quick:
        args.generations, args.population, args.sim_ms = 3, 6, 200.0

    from l2lflow.optimizees.nest.brunel import DEFAULT_SPACE

    options = {"n_neurons": args.neurons, "sim_time_ms": args.sim_ms}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        config = {
            "name": "nest-generations",
            "seed": 5,
            "generations": args.generations,
            "population_size": args.population,
            "optimizer": {"name": "cross_entropy"},
            "optimizee": {"name": "nest.brunel", "options": options},
            "space": DEFAULT_SPACE,
            "execution": {"workers": args.workers},
            "results": str(tmp / "results"),
        }
        cfg = tmp / "nest_generations.yaml"
        cfg.write_text(yaml.safe_dump(config, sort_keys=False))
        t0 = time.perf_counter()
        subprocess.run(
            snakemake_command(tmp, cfg, "all"),
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        pipeline_s = time.perf_counter() - t0

        import l2lflow

        ds = l2lflow.open_results(tmp / "results").load()
        names = list(DEFAULT_SPACE)
        params = {n: ds[n].values for n in names}
        seeds = ds.seed.values
        stored = ds.fitness.values
        runtimes = ds.runtime.values

    from l2lflow.optimizees.base import EvaluationContext
    from l2lflow.optimizees.nest.brunel import brunel

    t0 = time.perf_counter()
    import nest  # noqa: F401  (timed: a user's script pays it too)

    sequential = np.empty_like(stored)
    for g in range(args.generations):
        for i in range(args.population):
            p = {n: params[n][g, i].item() for n in names}
            ctx = EvaluationContext(generation=g, individual=i, seed=int(seeds[g, i]))
            sequential[g, i] = brunel(p, int(seeds[g, i]), context=ctx, **options)["fitness"]
    sequential_s = time.perf_counter() - t0
    same = np.array_equal(sequential, stored, equal_nan=True)
    members = [
        [
            ({n: params[n][g, i].item() for n in names}, int(seeds[g, i]))
            for i in range(args.population)
        ]
        for g in range(args.generations)
    ]
    pool_fitness, pool_s = brunel_in_pool(members, options, args.workers)
    pool_same = np.array_equal(np.asarray(pool_fitness), stored, equal_nan=True)

    n = args.generations * args.population
    per_gen_bound = np.maximum(runtimes.sum(axis=1) / args.workers, runtimes.max(axis=1)).sum()
    print(
        f"pipeline: {pipeline_s:.2f} s for {args.generations} generations × {args.population} "
        f"({n} simulations of {args.neurons} neurons × {args.sim_ms:.0f} ms) on "
        f"{args.workers} workers, Snakemake/engine/cluster start included"
    )
    print(
        f"  of which simulations: {runtimes.sum():.2f} s in all; generation-wise lower bound "
        f"{per_gen_bound:.2f} s (each generation waits for its slowest member)"
    )
    print(f"sequential in one process: {sequential_s:.2f} s (same fitness bitwise: {same})")
    print(
        f"plain multiprocessing.Pool({args.workers}), generation by generation: {pool_s:.2f} s "
        f"(same fitness bitwise: {pool_same}); its speedup {sequential_s / pool_s:.3f} is what "
        "a hand-written parallel loop reaches here"
    )
    print(f"speedup={sequential_s / pipeline_s:.3f}")


if __name__ == "__main__":
    main()
