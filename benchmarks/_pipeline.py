"""Shared by the benchmarks that time the real pipeline (not a benchmark itself: run_all skips
names that start with ``_``)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def snakemake_command(workdir: Path, configfile: Path, *extra: str) -> list[str]:
    """``snakemake`` on the repository's Snakefile in ``workdir``: one core, quiet."""
    return [
        sys.executable,
        "-m",
        "snakemake",
        "-s",
        str(REPO / "Snakefile"),
        "--directory",
        str(workdir),
        "--configfile",
        str(configfile),
        "--cores",
        "1",
        "--quiet",
        *extra,
    ]


def _brunel_one(job: tuple[dict, int, int, int, dict]) -> float:
    from l2lflow.optimizees.base import EvaluationContext
    from l2lflow.optimizees.nest.brunel import brunel

    params, seed, generation, individual, options = job
    ctx = EvaluationContext(generation=generation, individual=individual, seed=seed)
    return brunel(params, seed, context=ctx, **options)["fitness"]


def brunel_in_pool(
    generations: list[list[tuple[dict, int]]], options: dict, workers: int
) -> tuple[list[list[float]], float]:
    """The same Brunel simulations in a plain ``multiprocessing.Pool(workers)``, one generation
    after the other (each waits for its slowest member, as an L2L generation must), one
    simulation per task: what a hand-written parallel script gets on this machine, pool start
    and each process's ``import nest`` included. Returns (fitness per generation, seconds)."""
    import multiprocessing
    import time

    start = time.perf_counter()
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        fitness = [
            pool.map(
                _brunel_one,
                [(p, seed, g, i, options) for i, (p, seed) in enumerate(members)],
                chunksize=1,
            )
            for g, members in enumerate(generations)
        ]
    return fitness, time.perf_counter() - start


def in_order_makespan(durations: Any, slots: int) -> float:
    """Makespan of list scheduling in the given order (each task to the first free slot): the
    best a dispatcher that cannot know durations beforehand reaches, with no overhead at all."""
    import heapq

    finish = [0.0] * slots
    for d in list(durations):
        heapq.heappush(finish, heapq.heappop(finish) + float(d))
    return max(finish)
