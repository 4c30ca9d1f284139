"""How a generation is cut into Dask tasks (evaluation._chunk_size)."""

from __future__ import annotations

from l2lflow.execution.dispatch import (
    CHUNKS_PER_WORKER,
    MAX_TASKS_PER_S,
    MIN_TASK_S,
    TARGET_CHUNK_S,
    _chunk_size,
)


def test_one_individual_per_task_until_a_runtime_is_known():
    # generation 0 of 16 long simulations on 2 workers: 16 tasks, not 4 of unequal length
    assert _chunk_size([], remaining=16, workers=2) == 1
    assert _chunk_size([], remaining=10_000, workers=2) == 1


def test_long_evaluations_go_one_per_task():
    assert _chunk_size([2 * TARGET_CHUNK_S] * 8, remaining=1000, workers=2) == 1


def test_short_evaluations_are_batched_but_every_worker_gets_tasks():
    runtimes = [TARGET_CHUNK_S / 1000] * 8  # about 1,000 evaluations make a target-sized task
    assert _chunk_size(runtimes, remaining=100_000, workers=2) == 1000
    # few left (but each task still well above MIN_TASK_S): cut so that each worker still gets
    # CHUNKS_PER_WORKER tasks
    assert _chunk_size(runtimes, remaining=4000, workers=2) == 4000 // (2 * CHUNKS_PER_WORKER)


def test_no_task_holds_less_work_than_its_round_trip_costs():
    """Once runtimes are known, a task holds at least MIN_TASK_S of work: 32 evaluations of
    microseconds go as one task, not cut into ever smaller ones for 2 workers."""
    mean = MIN_TASK_S / 100  # 100 evaluations make the least task
    runtimes = [mean] * 8
    assert _chunk_size(runtimes, remaining=32, workers=2) == 32
    assert _chunk_size(runtimes, remaining=1000, workers=2) == 250  # the fair share is larger
    assert _chunk_size(runtimes, remaining=300, workers=2) == 100  # shrinking stops at the floor
    # evaluations longer than the target still go one per task, and so do unknown ones
    assert _chunk_size([2 * TARGET_CHUNK_S] * 8, remaining=40, workers=2) == 1
    assert _chunk_size([], remaining=40, workers=2) == 1


def test_many_slots_get_longer_chunks_so_the_engine_keeps_up():
    """256 slots finishing 0.25-s evaluations one per task would ask ~1,000 tasks a second of
    the engine; chunks grow until the slots ask at most MAX_TASKS_PER_S."""
    runtimes = [0.25] * 64
    slots = 256
    size = _chunk_size(runtimes, remaining=100_000, workers=slots)
    assert size > 1
    assert slots / (size * 0.25) <= MAX_TASKS_PER_S
    # a few slots: the usual target, so 0.25-s evaluations still go one per task
    assert _chunk_size(runtimes, remaining=100_000, workers=2) == 1
    # and every slot still gets work when the generation is small
    assert _chunk_size(runtimes, remaining=600, workers=slots) == 2


def test_a_slow_sandbox_start_is_not_counted_in_the_evaluation_timeout(tmp_path, monkeypatch):
    """On a busy machine a fresh sandbox takes seconds to start; that is not the evaluation's.

    A ``sitecustomize`` that sleeps in sandboxes only (their environment carries the sandbox
    token) makes every sandbox start take 3 s; with ``timeout_s: 2`` each evaluation that pays
    for a start used to time out, and the timeout's fresh sandbox failed the next one too.
    """
    import os

    import numpy as np

    from l2lflow.config import validate_config
    from l2lflow.execution.sandbox import SANDBOX_TOKEN_VAR
    from l2lflow.experiment import Experiment
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


def test_work_items_are_columns_that_expand_to_the_values_the_store_holds():
    """A chunk's work items travel as columns; on the worker each item's values are the Python
    scalars ``ndarray.item()`` gives for the store's row (bit-identical parameters and seeds)."""
    import numpy as np

    from l2lflow.execution.work import work_chunk

    rng = np.random.default_rng(3)
    params = {"x": rng.normal(size=6), "n": np.arange(6, dtype=np.int64) * 7}
    seeds = rng.integers(0, 2**63 - 1, size=6, dtype=np.int64)
    rows = np.array([4, 1, 5])
    chunk = work_chunk(
        2, rows, seeds[rows], {k: v[rows] for k, v in params.items()}, 1, task_seed=9
    )
    assert len(chunk) == 3
    for item, i in zip(chunk.items, rows.tolist(), strict=True):
        assert item == {
            "generation": 2,
            "individual": i,
            "seed": seeds[i].item(),
            "params": {"x": params["x"][i].item(), "n": params["n"][i].item()},
            "attempt": 1,
            "task_seed": 9,
            "phase": "optimize",
        }
        assert type(item["params"]["x"]) is float and type(item["params"]["n"]) is int


def test_results_written_in_batches_all_reach_the_store(tmp_path):
    """The writer keeps its copy of the row it writes: a later batch must not lose an earlier
    one, and a reader sees every batch."""
    import numpy as np

    from l2lflow.config import validate_config
    from l2lflow.store import DONE, FAILED, ResultStore

    config = validate_config(
        {
            "name": "batches",
            "seed": 1,
            "population_size": 6,
            "generations": 1,
            "optimizer": {"name": "random"},
            "optimizee": {"name": "sphere"},
            "space": {"x": {"low": -1.0, "high": 1.0}},
            "results": str(tmp_path / "results"),
        }
    )
    store = ResultStore.create(tmp_path / "results", config)
    store.append_generation(0, {"x": np.linspace(-1, 1, 6)}, np.arange(6))

    def result(i: int, ok: bool) -> dict:
        return {
            "individual": i,
            "status": DONE if ok else FAILED,
            "fitness": float(i),
            "metrics": {"m": i / 2} if ok else {},
            "arrays": {"trace": np.full(3, float(i))} if ok else {},
            "runtime": 0.1,
            "attempts": 1,
            "worker": f"w{i}",
            "error": "" if ok else "[exception] boom",
            "log": "",
        }

    store.write_results(0, [result(3, True), result(0, False)])
    store.write_results(0, [result(5, True)])
    store.write_results(0, [result(1, True), result(2, False), result(4, True)])
    back = ResultStore(tmp_path / "results")
    assert back.status(0).tolist() == [FAILED, DONE, FAILED, DONE, DONE, DONE]
    assert back.fitness(0).tolist() == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
    assert np.asarray(back.array("worker")[0, :]).tolist() == [f"w{i}" for i in range(6)]
    assert np.asarray(back.array("error")[0, :]).tolist()[2] == "[exception] boom"
    metric = np.asarray(back.array("metric_m")[0, :])
    assert np.isnan(metric[[0, 2]]).all() and metric[[1, 3, 4, 5]].tolist() == [0.5, 1.5, 2, 2.5]
    trace = np.asarray(back.array("trace")[0, :])
    assert np.isnan(trace[[0, 2]]).all() and trace[5].tolist() == [5.0] * 3
