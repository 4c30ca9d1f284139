"""Slurm overhead: time from ``scale`` to connected workers, and per-generation cost on Slurm.

Needs the local test Slurm (``.ci/slurm/start.sh``); without one it prints ``skipped=no_slurm``.

1. ``scale_connect_s``: a CPU pool of the ``local-slurm`` profile with no workers; the median
   over ``--repeats`` of the time from ``cluster.scale(n)`` to ``n`` TLS workers connected (the
   jobs are submitted, scheduled, start Python and dask, and connect back).
2. The same small experiment (sphere, cross-entropy, ``--population`` × ``--generations``)
   through the engine's own steps (``Experiment.sample/evaluate/aggregate``) on a local Dask
   cluster of 2 workers and on the profile's Slurm pools (2 one-core worker jobs): ``*_start_s``
   is the first generation including starting the pool (and, on Slurm, the jobs); ``*_gen_ms``
   the median of the later generations, when the workers are up. ``overhead_ms`` is the
   difference: what a generation costs more on Slurm once the jobs run.

Last line: ``scale_connect_s=.. local_start_s=.. slurm_start_s=.. local_gen_ms=..
slurm_gen_ms=.. overhead_ms=..``. Target: overhead_ms <= 100.
"""

from __future__ import annotations

import argparse
import copy
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def slurm_answers() -> bool:
    if shutil.which("sinfo") is None:
        return False
    try:
        out = subprocess.run(["sinfo", "-h"], capture_output=True, text=True, timeout=5)
    except subprocess.TimeoutExpired:
        return False
    return out.returncode == 0 and bool(out.stdout.strip())


def profile_pools(tmp: Path) -> dict[str, Any]:
    """The local-slurm profile's pools, with logs and TLS files under ``tmp``."""
    from l2lflow.config import load_yaml

    execution = load_yaml(REPO / "profiles" / "local-slurm" / "execution.yaml")["execution"]
    pools = copy.deepcopy(execution["pools"])
    for pool in pools.values():
        pool["log_directory"] = str(tmp / "slurm-logs")
        pool["shared_temp_directory"] = str(tmp / "tls")
    return pools


def scale_to_connected(pool: dict[str, Any], n: int) -> float:
    """Seconds from ``scale(n)`` to ``n`` connected workers of a fresh cluster."""
    from distributed import Client

    from l2lflow.execution.slurm import slurm_cluster

    with slurm_cluster(pool, name="bench", security=True, adaptive=False) as cluster:
        with Client(cluster) as client:
            t0 = time.perf_counter()
            cluster.scale(n)
            client.wait_for_workers(n, timeout=120)
            return time.perf_counter() - t0


def generation_times(config: dict[str, Any]) -> list[float]:
    """Wall seconds of each generation (sample + evaluate + aggregate) of one fresh run."""
    from l2lflow.config import validate_config
    from l2lflow.experiment import Experiment

    exp = Experiment(validate_config(config))
    times = []
    try:
        for g in range(exp.generations):
            t0 = time.perf_counter()
            exp.sample(g)
            exp.evaluate(g)
            exp.aggregate(g)
            times.append(time.perf_counter() - t0)
    finally:
        exp.close()
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--population", type=int, default=16)
    parser.add_argument("--generations", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3, help="scale-to-connected repeats")
    parser.add_argument("--quick", action="store_true", help="4 generations, 1 repeat")
    args = parser.parse_args()
    if args.quick:
        args.generations, args.repeats = 4, 1
    if not slurm_answers():
        print("no Slurm answers (start one with .ci/slurm/start.sh)", file=sys.stderr)
        print("skipped=no_slurm")
        return

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        pools = profile_pools(tmp)
        connect = [scale_to_connected(pools["cpu"], 2) for _ in range(args.repeats)]
        print(f"scale(2) -> 2 workers connected: {[round(c, 2) for c in connect]} s", flush=True)

        base = {
            "name": "overhead",
            "seed": 1,
            "generations": args.generations,
            "population_size": args.population,
            "optimizer": {"name": "cross_entropy"},
            "optimizee": {"name": "sphere"},
            "space": {"a": {"low": -2.0, "high": 2.0}, "b": {"low": -2.0, "high": 2.0}},
        }
        runs = {
            "local": {"backend": "local", "workers": 2},
            "slurm": {"backend": "slurm", "pools": pools},
        }
        figures: dict[str, float] = {"scale_connect_s": statistics.median(connect)}
        for name, execution in runs.items():
            config = dict(base, execution=execution, results=str(tmp / name))
            times = generation_times(config)
            later = times[1:] or times
            figures[f"{name}_start_s"] = times[0]
            figures[f"{name}_gen_ms"] = 1000 * statistics.median(later)
            print(
                f"{name}: first generation {times[0]:.2f} s, later ones "
                f"{[round(1000 * t) for t in later]} ms",
                flush=True,
            )
        figures["overhead_ms"] = figures["slurm_gen_ms"] - figures["local_gen_ms"]
    print(
        " ".join(f"{k}={v:.2f}" if k.endswith("_s") else f"{k}={v:.1f}" for k, v in figures.items())
    )


if __name__ == "__main__":
    main()
