"""Engine throughput: how many finished evaluations per second can one engine absorb?

On JUWELS one engine on the login node feeds every Slurm worker: it cuts generations into Dask
tasks, receives the results, and writes them to the Zarr store. With thousands of workers
finishing short evaluations, that one process is the bottleneck. This benchmark runs the
engine's real code (``Experiment``: sample → evaluate → aggregate, Dask LocalCluster, sandboxes,
Zarr store) on a no-op optimizee (``sphere``: microseconds) with a large population, and counts
the CPU seconds the engine process spends (``time.process_time``: its own threads, the Dask
scheduler's event loop included, which runs inside the engine) per finished evaluation. The
workers' own CPU time is not counted: on a cluster it is spent elsewhere.

Last line: ``results_per_s=<evaluations / engine CPU seconds during evaluate>``.
Target >= 20,000 (4,800 JUWELS cores finishing 0.25-s evaluations).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--population", type=int, default=20000)
    parser.add_argument("--generations", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="population 2,000, 2 generations")
    args = parser.parse_args()
    if args.quick:
        args.population, args.generations = 2000, 2

    from l2lflow.config import validate_config
    from l2lflow.experiment import Experiment

    with tempfile.TemporaryDirectory() as tmp:
        config = validate_config(
            {
                "name": "engine-throughput",
                "seed": 1,
                "generations": args.generations,
                "population_size": args.population,
                "optimizer": {"name": "random"},
                "optimizee": {"name": "sphere"},
                "space": {f"x{i}": {"low": -1.0, "high": 1.0} for i in range(6)},
                "execution": {"workers": args.workers},
                "results": str(Path(tmp) / "results"),
            }
        )
        exp = Experiment(config)
        exp.pools()
        cpu = {"sample": 0.0, "evaluate": 0.0, "aggregate": 0.0}
        wall = dict.fromkeys(cpu, 0.0)
        for g in range(args.generations):
            for step in ("sample", "evaluate", "aggregate"):
                c0, w0 = time.process_time(), time.perf_counter()
                getattr(exp, step)(g)
                cpu[step] += time.process_time() - c0
                wall[step] += time.perf_counter() - w0
        done = int((exp.store.array("status")[...] == 1).sum())
        exp.close()

    n = args.population * args.generations
    assert done == n, f"{done} of {n} evaluations done"
    for step in cpu:
        print(
            f"{step:9s}: engine CPU {cpu[step]:7.2f} s ({1e6 * cpu[step] / n:6.1f} µs per "
            f"evaluation), wall {wall[step]:7.2f} s"
        )
    print(
        f"{n} evaluations; wall-clock rate on {args.workers} local workers: "
        f"{n / wall['evaluate']:.0f}/s (bounded by the workers here, not the engine)"
    )
    print(f"results_per_s={n / cpu['evaluate']:.0f}")


if __name__ == "__main__":
    main()
