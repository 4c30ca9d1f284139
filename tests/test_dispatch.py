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


def test_a_slow_sandbox_start_is_not_counted_in_the_evaluation_timeout(tmp_path, monkeypatch):
    """On a busy machine a fresh sandbox takes seconds to start; that is not the evaluation's.

    A ``sitecustomize`` that sleeps in sandboxes only (their environment carries the sandbox
    token) makes every sandbox start take 3 s; with ``timeout_s: 2`` each evaluation that pays
    for a start used to time out, and the timeout's fresh sandbox failed the next one too.
    """
    import os

    import numpy as np

    from l2lflow.config import validate_config
    from l2lflow.experiment import Experiment
    from l2lflow.runner import SANDBOX_TOKEN_VAR
    from l2lflow.store import DONE

    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(
        f"import os, time\nif os.environ.get({SANDBOX_TOKEN_VAR!r}):\n    time.sleep(3)\n"
    )
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]))
    config = validate_config(
        {
            "name": "slow-start",
            "seed": 1,
            "generations": 1,
            "population_size": 4,
            "optimizer": {"name": "random"},
            "optimizee": {"name": "test.faulty", "options": {"faults": {"1": "abort"}}},
            "space": {"a": {"low": -1.0, "high": 1.0}},
            "evaluation": {"retries": 0, "timeout_s": 2},
            "execution": {"workers": 2},
            "results": str(tmp_path / "results"),
        }
    )
    exp = Experiment(config)
    try:
        exp.sample(0)
        exp.evaluate(0)
        status = np.asarray(exp.store.status(0))
        errors = [str(e) for e in exp.store.array("error")[0, :]]
    finally:
        exp.close()
    # individual 1 crashes its sandbox; everyone else, including those in the fresh sandbox
    # that follows the crash, finishes
    assert [i for i in range(4) if status[i] != DONE] == [1], errors
    assert "[crash]" in errors[1]
