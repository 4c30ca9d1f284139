"""Many workers: does one engine keep hundreds of evaluation slots busy?

A JUWELS run feeds hundreds to thousands of worker slots from one engine. This benchmark
simulates that on a small machine: a Dask LocalCluster of a few worker processes with many
threads each (``--slots`` in all), and an optimizee that *sleeps* a lognormal time drawn from
its seed (``test.sleeping``: no CPU, GIL released, the same durations in every run), population
2,048 over several generations, through the engine's real code (``Experiment``: sample →
evaluate → aggregate, chunked dispatch, Zarr store; evaluations in-process, ``isolate: false``,
since a sandbox per thread would need hundreds of processes here).

Figures: ``slot_efficiency`` = busy slot-seconds (the stored runtimes) / (slots × wall time of
the generation loop, sample and aggregate included); ``lpt_bound`` = the same ratio for the best
schedule a clairvoyant dispatcher could reach per generation (longest-processing-time-first of
the real durations; each generation must finish before the next is sampled). ``in_order_bound``
(printed above the last line): the same for a dispatcher that does not know the durations
beforehand and hands out the individuals in order, with no overhead at all.

Last line: ``slots=<n> slot_efficiency=<x> lpt_bound=<y>``. Target: slot_efficiency >= 0.85.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

import numpy as np
from _pipeline import in_order_makespan  # benchmarks/_pipeline.py (the script's folder)


def lpt_makespan(durations: np.ndarray, slots: int) -> float:
    """Makespan of longest-processing-time-first list scheduling on ``slots`` equal slots."""
    return in_order_makespan(sorted(durations.tolist(), reverse=True), slots)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--slots", type=int, default=256)
    parser.add_argument("--processes", type=int, default=4, help="worker processes")
    parser.add_argument("--population", type=int, default=2048)
    parser.add_argument("--generations", type=int, default=3)
    parser.add_argument("--median-s", type=float, default=1.0)
    parser.add_argument("--sigma", type=float, default=0.5)
    parser.add_argument("--quick", action="store_true", help="64 slots, population 256, 2 gens")
    args = parser.parse_args()
    if args.quick:
        args.slots, args.population, args.generations, args.median_s = 64, 256, 2, 0.3

    from distributed import Client, LocalCluster

    from l2lflow.config import validate_config
    from l2lflow.execution.core import Executor
    from l2lflow.experiment import Experiment

    threads = max(1, args.slots // args.processes)
    slots = threads * args.processes
    with tempfile.TemporaryDirectory() as tmp:
        config = validate_config(
            {
                "name": "many-workers",
                "seed": 2,
                "generations": args.generations,
                "population_size": args.population,
                "optimizer": {"name": "random"},
                "optimizee": {
                    "name": "test.sleeping",
                    "options": {"median_s": args.median_s, "sigma": args.sigma},
                },
                "space": {f"x{i}": {"low": -1.0, "high": 1.0} for i in range(6)},
                "evaluation": {"isolate": False, "retries": 0},
                "results": str(Path(tmp) / "results"),
            }
        )
        cluster = LocalCluster(
            n_workers=args.processes,
            threads_per_worker=threads,
            processes=True,
            security=True,
            host="127.0.0.1",
            dashboard_address=None,
            silence_logs=logging.ERROR,
            local_directory=tmp,
        )
        client = Client(cluster, set_as_default=False)
        exp = Experiment(config, pools=Executor(clusters={"cpu": cluster}, clients={"cpu": client}))
        t0 = time.perf_counter()
        engine_cpu = 0.0  # this process: dispatch, store writes and the Dask scheduler
        for g in range(args.generations):
            exp.sample(g)
            c0 = time.process_time()
            exp.evaluate(g)
            engine_cpu += time.process_time() - c0
            exp.aggregate(g)
        wall = time.perf_counter() - t0
        runtimes = np.asarray(exp.store.array("runtime")[...], dtype=np.float64)
        done = int((exp.store.array("status")[...] == 1).sum())
        exp.close()
        client.close()
        cluster.close()

    n = args.population * args.generations
    assert done == n, f"{done} of {n} evaluations done"
    busy = float(runtimes.sum())
    best = sum(lpt_makespan(runtimes[g], slots) for g in range(args.generations))
    blind = sum(in_order_makespan(runtimes[g], slots) for g in range(args.generations))
    print(
        f"{n} evaluations ({args.generations} generations × {args.population}, lognormal "
        f"median {args.median_s} s, sigma {args.sigma}) on {slots} slots "
        f"({args.processes} processes × {threads} threads): wall {wall:.2f} s, "
        f"busy {busy:.1f} slot-s, LPT schedule {best:.2f} s"
    )
    print(
        f"engine CPU during evaluate: {1e6 * engine_cpu / n:.0f} µs per evaluation (chunks as "
        f"dispatch cut them): one engine keeps up with ~{n / engine_cpu:.0f} finished "
        "evaluations/s of these durations"
    )
    print(
        f"without knowing durations beforehand (list scheduling in individual order, zero "
        f"overhead): {blind:.2f} s, slot efficiency {busy / (slots * blind):.3f} (in_order_bound)"
    )
    print(
        f"slots={slots} slot_efficiency={busy / (slots * wall):.3f} "
        f"lpt_bound={busy / (slots * best):.3f}"
    )


if __name__ == "__main__":
    main()
