"""GPU batching: evaluations per second of the PyTorch LSNN optimizee, batched vs one-by-one.

The ``torch.lsnn`` optimizee at the reference size of issue 5 (200 recurrent neurons, 40 %
adaptive, 20 inputs, 200 time steps, 5 inner BPTT steps per task, ``--tasks`` tasks per
evaluation) evaluates a generation of ``--individuals N`` individuals twice on the same device in
the same run: as one batch (or batches of ``--batch-size``), and one individual per call. The
one-by-one loop runs ``--loop`` individuals (a subset: at ~1 evaluation/s a full loop over 1,024
individuals would take a quarter of an hour) and its rate is their count over their time; the
batched rate is N over the time of the whole generation. Both exclude a warm-up call (the torch
import, CUDA context, first-call allocations). The looped individuals' fitness is compared with
their batched fitness: bitwise equal on CPU; on CUDA cuBLAS may choose other kernels for other
batch sizes, so the largest relative difference is reported (``--check`` turns a difference
beyond ``--rtol`` into exit code 1).

Memory: the optimizee evaluates a batch in passes that fit a quarter of the device's memory
(``torch_lsnn.slices_per_pass``; ``--max-batch-slices`` sets the individuals × tasks per pass
instead), so the default 1,024 individuals on a CPU take about 6.5 GB on a 24 GB machine, not
the 32 GB one pass would need. The line before the last gives the peak RSS of the process.

Last line: ``device=<cuda|cpu> individuals=<N> batched_per_s=<x> loop_per_s=<y> speedup=<x/y>``.
``--quick`` is a small CPU-friendly run for ``benchmarks/run_all.py``.
"""

from __future__ import annotations

import argparse
import math
import resource
import time

import numpy as np


def population(n: int, seed: int) -> list[dict[str, float]]:
    """``n`` hyperparameter sets drawn from the optimizee's recommended space (fixed seed),
    with ``frac_adaptive`` at the reference 0.4."""
    from l2lflow.optimizees.torch_lsnn import DEFAULT_SPACE

    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        p = {}
        for name, spec in DEFAULT_SPACE.items():
            lo, hi = spec["low"], spec["high"]
            if spec["scale"] == "log":
                p[name] = float(math.exp(rng.uniform(math.log(lo), math.log(hi))))
            else:
                p[name] = float(rng.uniform(lo, hi))
        p["frac_adaptive"] = 0.4
        out.append(p)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--individuals", type=int, default=1024)
    parser.add_argument("--loop", type=int, default=None, help="individuals run one by one")
    parser.add_argument("--batch-size", type=int, default=None, help="default: all at once")
    parser.add_argument("--tasks", type=int, default=4)
    parser.add_argument("--neurons", type=int, default=200)
    parser.add_argument("--inputs", type=int, default=20)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--inner-steps", type=int, default=5)
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    parser.add_argument("--compile", default=None, help="torch.compile mode (e.g. default)")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for torch")
    parser.add_argument(
        "--max-batch-slices",
        type=int,
        default=None,
        help="individuals x tasks per forward pass (default: what fits a quarter of the memory)",
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--check", action="store_true", help="fail on batched/loop mismatch")
    parser.add_argument("--rtol", type=float, default=1e-4)
    parser.add_argument("--quick", action="store_true", help="small CPU-friendly run")
    args = parser.parse_args(argv)
    if args.quick:
        args.individuals = min(args.individuals, 8)
        args.loop = 2 if args.loop is None else args.loop
    loop_n = args.loop if args.loop is not None else min(args.individuals, 8)
    loop_n = max(1, min(loop_n, args.individuals))

    import torch

    from l2lflow.optimizees.base import EvaluationContext
    from l2lflow.optimizees.torch_lsnn import (
        _resolve_device,
        device_memory_bytes,
        lsnn,
        slices_per_pass,
    )

    if args.threads:
        torch.set_num_threads(args.threads)
    device = _resolve_device(torch, args.device)
    options = {
        "n_neurons": args.neurons,
        "n_inputs": args.inputs,
        "n_steps": args.steps,
        "inner_steps": args.inner_steps,
        "n_tasks": args.tasks,
        "device": str(device),
        "dtype": args.dtype,
        "compile": args.compile or False,
        "max_batch_slices": args.max_batch_slices,
    }
    params = population(args.individuals, args.seed)
    seeds = [1000 + i for i in range(args.individuals)]
    task_seed = 12345

    def evaluate(idx: list[int]) -> list[dict]:
        contexts = [
            EvaluationContext(
                generation=0,
                individual=i,
                seed=seeds[i],
                task_seed=task_seed,
                threads=torch.get_num_threads(),
            )
            for i in idx
        ]
        out = lsnn([params[i] for i in idx], [seeds[i] for i in idx], contexts=contexts, **options)
        if device.type == "cuda":
            torch.cuda.synchronize()
        return out

    def timed(fn):  # noqa: ANN001, ANN202
        t0 = time.perf_counter()
        value = fn()
        return value, time.perf_counter() - t0

    evaluate([0])  # warm-up: import, CUDA context, allocator
    size = args.batch_size or args.individuals
    batches = [
        list(range(s, min(s + size, args.individuals))) for s in range(0, args.individuals, size)
    ]
    if size > 1 and args.compile:
        evaluate(batches[0])  # compiles for this batch shape
    batched, batched_s = timed(lambda: [r for b in batches for r in evaluate(b)])
    looped, loop_s = timed(lambda: [evaluate([i])[0] for i in range(loop_n)])

    a = np.array([batched[i]["fitness"] for i in range(loop_n)])
    b = np.array([r["fitness"] for r in looped])
    both = np.isfinite(a) & np.isfinite(b)
    same_nan = bool(np.array_equal(np.isnan(a), np.isnan(b)))
    bitwise = same_nan and bool(np.array_equal(a[both], b[both]))
    rel = (
        float(np.max(np.abs(a[both] - b[both]) / np.maximum(np.abs(b[both]), 1e-30)))
        if both.any()
        else 0.0
    )
    batched_per_s = args.individuals / batched_s
    loop_per_s = loop_n / loop_s
    print(
        f"torch={torch.__version__} cuda={torch.version.cuda} threads={torch.get_num_threads()} "
        f"size: neurons={args.neurons} adaptive=0.4 inputs={args.inputs} steps={args.steps} "
        f"inner_steps={args.inner_steps} tasks={args.tasks} dtype={args.dtype} "
        f"compile={args.compile or 'off'} batch_size={size}"
    )
    if device.type == "cuda":
        print(f"gpu={torch.cuda.get_device_name(device)}")
    print(
        f"batched: {args.individuals} individuals in {batched_s:.3f} s; one-by-one: {loop_n} "
        f"individuals in {loop_s:.3f} s (rate extrapolated from this subset)"
    )
    print(f"agreement on the {loop_n} looped individuals: bitwise={bitwise} max_rel_diff={rel:.3g}")
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB
    per_pass = args.max_batch_slices or slices_per_pass(
        device_memory_bytes(torch, device), args.neurons, args.inputs, args.steps, args.dtype
    )
    print(f"peak RSS {peak_mb:.0f} MB; at most {per_pass} individuals x tasks per pass")
    print(
        f"device={device.type} individuals={args.individuals} batched_per_s={batched_per_s:.4g} "
        f"loop_per_s={loop_per_s:.4g} speedup={batched_per_s / loop_per_s:.4g}"
    )
    if args.check and not (same_nan and rel <= args.rtol):
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
