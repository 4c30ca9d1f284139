"""GeNN throughput: evaluations per second of ``genn.reservoir`` on the backend at hand.

One generation of ``--individuals N`` individuals (drawn from the optimizee's recommended space,
fixed seed) is evaluated by ``genn.reservoir`` in one call, as a worker would: on CUDA
individuals x tasks are one GeNN batch (``--batch-size`` entries per pass), on the CPU backend
they run one after the other. The rate is N over the time of that call; a warm-up call before it
(one individual) takes the model's build or its load from the compiled-model cache, as a
worker's first evaluation does. As a baseline in the same run, ``nest.reservoir`` evaluates the
first ``--baseline`` of the same individuals (same options, same seeds, one after the other):
``ratio`` is the GeNN rate over the NEST rate.

Last line: ``backend=<cuda|single_threaded_cpu> individuals=<N> per_s=<x> nest_per_s=<y>
ratio=<x/y>`` (the NEST figures are ``nan`` with ``--baseline 0``). ``--quick`` is a small
CPU-friendly run for ``benchmarks/run_all.py``.
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np

#: the evaluation of the default experiment (config/config.yaml): 3 tasks, 100 neurons
OPTIONS: dict[str, object] = {"n_tasks": 3, "n_classes": 3, "n_neurons": 100}
QUICK: dict[str, object] = {
    "n_tasks": 2,
    "n_neurons": 60,
    "n_train_per_class": 4,
    "n_test_per_class": 4,
    "pattern_ms": 60.0,
}


def population(n: int, seed: int) -> list[dict[str, float]]:
    """``n`` hyperparameter sets drawn from the reservoir's recommended space (fixed seed)."""
    from l2lflow.optimizees.nest.reservoir import RESERVOIR_SPACE

    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        p = {}
        for name, spec in RESERVOIR_SPACE.items():
            lo, hi = spec["low"], spec["high"]
            if spec["scale"] == "log":
                p[name] = float(math.exp(rng.uniform(math.log(lo), math.log(hi))))
            else:
                p[name] = float(rng.uniform(lo, hi))
        out.append(p)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--individuals", type=int, default=16)
    parser.add_argument("--baseline", type=int, default=2, help="individuals evaluated by NEST")
    parser.add_argument("--batch-size", type=int, default=1024, help="GeNN batch on CUDA")
    parser.add_argument("--backend", default="auto", help="auto, cuda or single_threaded_cpu")
    parser.add_argument("--precision", default="double", choices=["double", "float"])
    parser.add_argument("--quick", action="store_true", help="4 small individuals, 1 on NEST")
    args = parser.parse_args(argv)
    options = dict(QUICK if args.quick else OPTIONS)
    n = 4 if args.quick else args.individuals
    n_nest = min(n, 1 if args.quick else args.baseline)

    from l2lflow.optimizees import genn
    from l2lflow.optimizees.base import EvaluationContext
    from l2lflow.optimizees.genn_reservoir import reservoir

    params = population(n, seed=2026)
    seeds = [1000 + i for i in range(n)]
    contexts = [
        EvaluationContext(generation=0, individual=i, seed=s, task_seed=77)
        for i, s in enumerate(seeds)
    ]
    backend = genn.available_backend(args.backend)
    settings = {**options, "backend": backend, "precision": args.precision}
    t0 = time.perf_counter()
    reservoir(params[:1], seeds[:1], contexts=contexts[:1], batch_size=args.batch_size, **settings)
    print(f"warm-up (build or cached load, one individual): {time.perf_counter() - t0:.2f} s")
    t0 = time.perf_counter()
    results = reservoir(params, seeds, contexts=contexts, batch_size=args.batch_size, **settings)
    per_s = n / (time.perf_counter() - t0)
    fitness = np.array([r["fitness"] for r in results])
    print(f"genn.reservoir: mean accuracy {np.nanmean(fitness):.3f} over {n} individuals")

    nest_per_s = math.nan
    if n_nest:
        from l2lflow.optimizees.nest.reservoir import reservoir as nest_reservoir

        nest_reservoir({}, 1, context=contexts[0], **options)  # import nest, first kernel
        t0 = time.perf_counter()
        nest_fitness = [
            nest_reservoir(params[i], seeds[i], context=contexts[i], **options)["fitness"]
            for i in range(n_nest)
        ]
        nest_per_s = n_nest / (time.perf_counter() - t0)
        print(
            f"nest.reservoir: {n_nest} individuals, accuracy {np.round(nest_fitness, 3)} "
            f"(genn: {np.round(fitness[:n_nest], 3)})"
        )
    ratio = per_s / nest_per_s if nest_per_s > 0 else math.nan
    print(
        f"backend={backend} individuals={n} per_s={per_s:.4g} nest_per_s={nest_per_s:.4g} "
        f"ratio={ratio:.4g}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
