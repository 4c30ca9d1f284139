"""How a generation is cut into Dask tasks (evaluation._chunk_size)."""

from __future__ import annotations

from l2lflow.evaluation import CHUNKS_PER_WORKER, TARGET_CHUNK_S, _chunk_size


def test_one_individual_per_task_until_a_runtime_is_known():
    # generation 0 of 16 long simulations on 2 workers: 16 tasks, not 4 of unequal length
    assert _chunk_size([], remaining=16, workers=2) == 1
    assert _chunk_size([], remaining=10_000, workers=2) == 1


def test_long_evaluations_go_one_per_task():
    assert _chunk_size([2 * TARGET_CHUNK_S] * 8, remaining=1000, workers=2) == 1


def test_short_evaluations_are_batched_but_every_worker_gets_tasks():
    runtimes = [TARGET_CHUNK_S / 1000] * 8  # about 1,000 evaluations make a target-sized task
    assert _chunk_size(runtimes, remaining=100_000, workers=2) == 1000
    # few left: cut so that each worker still gets CHUNKS_PER_WORKER tasks
    assert _chunk_size(runtimes, remaining=40, workers=2) == 40 // (2 * CHUNKS_PER_WORKER)
