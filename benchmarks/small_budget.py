"""Small budgets: which optimizer to pick when an evaluation costs minutes.

Every optimizer (the built-in ones, a few Nevergrad ones, every Optuna sampler of the bridge) gets
``--generations`` × ``--population`` evaluations (default 5 × 16 = 80) on the conformance
suite's shifted sphere, Rastrigin and Rosenbrock in d = 6 (as many parameters as the default
experiment tunes), on seeds ``0 .. --seeds-1``. It prints a Markdown table of the best fitness
reached (median over the seeds, worst in brackets; minimum 0) and the optimizer's own time per
generation (ask + tell, no evaluation), with ``uptime``'s load beside it.

    python benchmarks/small_budget.py                  # the table in docs/optimizers.md
    python benchmarks/small_budget.py --only optuna:TPE,cmaes --seeds 5

The functions and the ask/tell loop are the conformance suite's (``l2lflow.testing``, run over
every built-in by ``tests/test_optimizers.py``), so EnKF is told the residual vectors there too.

Last line: ``optimizers=<how many were compared> failed=<how many failed to run>``; the table
above it is the result (no target: which optimizer wins depends on the function).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import time

import numpy as np

from l2lflow.optimizers import REGISTRY, get_optimizer_class
from l2lflow.testing import FUNCTIONS, run_generations

NEVERGRAD = ["nevergrad:TwoPointsDE", "nevergrad:PSO", "nevergrad:CMA", "nevergrad:DE"]
OPTUNA = ["optuna:TPE", "optuna:GP", "optuna:CmaEs", "optuna:NSGAII", "optuna:NSGAIII"]
OPTUNA += ["optuna:QMC", "optuna:Random"]
DIMENSION = 6


def candidates() -> list[str]:
    names = sorted(REGISTRY)
    if importlib.util.find_spec("nevergrad"):
        names += NEVERGRAD
    if importlib.util.find_spec("optuna"):
        names += OPTUNA
    return names


def measure(name: str, generations: int, population: int, seeds: int) -> dict[str, object]:
    """Best fitness per function and seed, and the optimizer's seconds per generation."""
    out: dict[str, object] = {}
    spent = 0.0
    for function, f in sorted(FUNCTIONS.items()):
        best = []
        for seed in range(seeds):
            options = {"budget": generations * population} if name.startswith("nevergrad:") else {}
            start = time.perf_counter()
            opt = get_optimizer_class(name)(DIMENSION, population, seed, **options)
            _, fits = run_generations(opt, generations, f)
            spent += time.perf_counter() - start
            best.append(min(float(fx.min()) for fx in fits))
        out[function] = best
    out["s_per_generation"] = spent / (len(FUNCTIONS) * seeds * generations)
    return out


def cell(values: list[float]) -> str:
    return f"{np.median(values):.3g} ({max(values):.3g})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--generations", type=int, default=5)
    parser.add_argument("--population", type=int, default=16)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--only", help="comma-separated optimizer names (default: all)")
    parser.add_argument("--quick", action="store_true", help="2 × 8, one seed, without optuna:GP")
    args = parser.parse_args()
    names = args.only.split(",") if args.only else candidates()
    if args.quick:
        args.generations, args.population, args.seeds = 2, 8, 1
        names = [n for n in names if n != "optuna:GP"]  # its own time is ~1 min a generation
    load = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    print(
        f"{args.generations} generations x {args.population}, d={DIMENSION}, "
        f"seeds 0-{args.seeds - 1}, {os.cpu_count()} CPUs; before: {load}"
    )
    print()
    print("| optimizer | sphere | Rastrigin | Rosenbrock | optimizer s/generation |")
    print("|---|---|---|---|---|")
    failed = 0
    for name in names:
        try:
            r = measure(name, args.generations, args.population, args.seeds)
        except Exception as exc:  # noqa: BLE001 - one broken optimizer must not hide the rest
            print(f"| {name} | failed: {type(exc).__name__}: {str(exc)[:60]} | | | |", flush=True)
            failed += 1
            continue
        row = " | ".join(cell(r[f]) for f in ("sphere", "rastrigin", "rosenbrock"))
        print(f"| {name} | {row} | {r['s_per_generation']:.3g} |", flush=True)
    print()
    print("after:", subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())
    print(f"optimizers={len(names)} failed={failed}")


if __name__ == "__main__":
    main()
