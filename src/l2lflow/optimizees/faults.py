"""Optimizees that misbehave on purpose: for fault-injection tests and for checking a setup.

``faulty`` computes the sphere function, except for the individuals named in ``faults``, which
raise, return NaN or inf, hang, abort or segfault the evaluation's process. ``counting`` leaves
one file per evaluation in ``counter_dir`` so that tests can count how often each individual
was evaluated (to prove that an interrupted run repeats only what was in flight). ``sleeping``
sleeps a reproducible lognormal time, to simulate many evaluation slots on a small machine.
"""

from __future__ import annotations

import ctypes
import os
import time
import uuid
from typing import Any

import numpy as np

from l2lflow.optimizees.base import EvaluationContext, register_optimizee
from l2lflow.optimizees.functions import sphere

FAULT_KINDS = ("raise", "nan", "inf", "hang", "abort", "segfault", "exit")


@register_optimizee("test.faulty")
def faulty(
    params: dict[str, Any],
    seed: int,
    *,
    context: EvaluationContext,
    faults: dict[str, str] | None = None,
    only_first_attempt: bool = False,
) -> float:
    """Sphere, but individual ``i`` misbehaves as ``faults[str(i)]`` says (see FAULT_KINDS)."""
    kind = (faults or {}).get(str(context.individual))
    if kind is None or (only_first_attempt and context.attempt > 0):
        return sphere(params, seed)
    if kind == "raise":
        raise RuntimeError(f"injected failure in individual {context.individual}")
    if kind == "nan":
        return float("nan")
    if kind == "inf":
        return float("inf")
    if kind == "hang":
        while True:
            time.sleep(3600)
    if kind == "abort":
        os.abort()
    if kind == "segfault":
        ctypes.string_at(0)
    if kind == "exit":
        os._exit(3)
    raise ValueError(f"unknown fault {kind!r} (known: {', '.join(FAULT_KINDS)})")


@register_optimizee("test.counting", meta_test=True)
def counting(
    params: dict[str, Any],
    seed: int,
    *,
    context: EvaluationContext,
    counter_dir: str,
    sleep_s: float = 0.0,
) -> dict[str, float]:
    """Sphere, after leaving a file ``g<gen>_i<ind>_<uuid>`` in ``counter_dir`` and sleeping
    (``meta_g<gen>_i<ind>_<uuid>`` in the meta-test, which re-evaluates the best individuals)."""
    phase = "meta_" if context.phase == "meta_test" else ""
    name = f"{phase}g{context.generation}_i{context.individual}_{uuid.uuid4().hex}"
    fd = os.open(os.path.join(counter_dir, name), os.O_CREAT | os.O_WRONLY, 0o644)
    os.close(fd)
    if sleep_s:
        time.sleep(sleep_s)
    value = sphere(params, seed)
    return {"fitness": value, "seed_mod": float(seed % 1000)}


@register_optimizee("test.sleeping")
def sleeping(
    params: dict[str, Any],
    seed: int,
    *,
    median_s: float = 0.2,
    sigma: float = 0.5,
) -> dict[str, float]:
    """Sphere after sleeping a lognormal time drawn from the seed (scale tests of dispatch).

    Sleeping holds no CPU and releases the GIL, so hundreds of evaluation slots (worker threads)
    can be simulated on a small machine; durations are reproducible from the seed, so every
    scheduling of the same generation does the same work.
    """
    duration = float(np.random.default_rng(seed).lognormal(np.log(median_s), sigma))
    time.sleep(duration)
    return {"fitness": sphere(params, seed), "slept_s": duration}
