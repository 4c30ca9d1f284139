"""e-prop throughput: how many ``nest.eprop`` evaluations one core does per hour at the example's size.

Evaluates ``--individuals`` hyperparameter sets drawn (seeded) from ``nest.eprop``'s search space,
one after the other in this process on one thread, with the options of
``config/examples/eprop_sine.yaml`` (30 recurrent neurons, 20 inputs, 200 ms sequences,
20 e-prop iterations, 2 tasks). NEST's import (once per worker in a run) is timed apart and not
counted. The figure is CPU time (``time.process_time``: what a core-hour budget is charged, and
on a shared machine less sensitive to other load than wall time, which is printed beside it). As
the baseline, measured in the same run on the same tasks, seeds and hyperparameters:
``torch.lsnn`` (BPTT in PyTorch, one CPU thread, evaluated one individual at a time), which runs
its ``inner_steps`` as BPTT steps; the ratio says what the biologically plausible inner loop
costs on a CPU against gradient descent through time. Spike rates, and so NEST's cost, depend on
the hyperparameters: the figure is the mean over the drawn sets.

Last line: ``evaluations_per_core_hour=<x>``. Target >= 1000.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import yaml

EXAMPLE = Path(__file__).resolve().parents[1] / "config" / "examples" / "eprop_sine.yaml"


def draw_params(n: int, seed: int) -> list[dict[str, float]]:
    """``n`` hyperparameter sets from nest.eprop's search space, shared with torch.lsnn's."""
    from l2lflow.optimizees.nest.eprop import DEFAULT_SPACE
    from l2lflow.optimizees.torch_lsnn import DEFAULT_PARAMS as BPTT_PARAMS

    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        p = {}
        for name, dim in DEFAULT_SPACE.items():
            if name not in BPTT_PARAMS:
                continue  # c_reg: e-prop only, keeps its default
            lo, hi = dim["low"], dim["high"]
            u = rng.random()
            p[name] = float(lo * (hi / lo) ** u if dim["scale"] == "log" else lo + (hi - lo) * u)
        out.append(p)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--individuals", type=int, default=8)
    parser.add_argument("--quick", action="store_true", help="2 individuals")
    parser.add_argument("--no-bptt", action="store_true", help="skip the torch.lsnn baseline")
    args = parser.parse_args()
    n = 2 if args.quick else args.individuals

    options = yaml.safe_load(EXAMPLE.read_text())["optimizee"]["options"]
    params = draw_params(n, seed=1)
    seeds = [1000 + i for i in range(n)]
    task_seed = 77

    from l2lflow.optimizees.base import EvaluationContext
    from l2lflow.optimizees.nest.eprop import eprop
    from l2lflow.optimizees.nest.kernel import get_nest

    t0 = time.perf_counter()
    get_nest()
    import_s = time.perf_counter() - t0
    contexts = [EvaluationContext(0, i, s, task_seed=task_seed) for i, s in enumerate(seeds)]
    t0, c0 = time.perf_counter(), time.process_time()
    eprop_fitness = [
        eprop(p, s, context=c, **options)["fitness"]
        for p, s, c in zip(params, seeds, contexts, strict=True)
    ]
    eprop_wall, eprop_s = (time.perf_counter() - t0) / n, (time.process_time() - c0) / n
    print(f"NEST import: {import_s:.2f} s (once per worker, not counted)")
    print(
        f"nest.eprop: {eprop_s:.3f} CPU-s ({eprop_wall:.3f} s wall) per evaluation ({n} "
        f"individuals, options {options}); median held-out MSE {np.nanmedian(eprop_fitness):.3f}"
    )

    if not args.no_bptt:
        try:
            import torch
        except ImportError:
            print("torch.lsnn baseline skipped: torch is not installed")
        else:
            from l2lflow.optimizees.torch_lsnn import lsnn

            torch.set_num_threads(1)
            t0, c0 = time.perf_counter(), time.process_time()
            bptt_fitness = [
                lsnn([p], [s], contexts=[c], device="cpu", **options)[0]["fitness"]
                for p, s, c in zip(params, seeds, contexts, strict=True)
            ]
            bptt_wall, bptt_s = (time.perf_counter() - t0) / n, (time.process_time() - c0) / n
            print(
                f"torch.lsnn (BPTT, 1 thread, same tasks): {bptt_s:.3f} CPU-s ({bptt_wall:.3f} s "
                f"wall) per evaluation; "
                f"median held-out MSE {np.nanmedian(bptt_fitness):.3f}; "
                f"e-prop/BPTT time ratio {eprop_s / bptt_s:.2f}"
            )
    print(f"evaluations_per_core_hour={3600.0 / eprop_s:.0f}")


if __name__ == "__main__":
    main()
