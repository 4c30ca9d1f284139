"""What an optimizee returns, checked: malformed results, NaN fitness, all-failed generations,
batch timeouts. Real engine steps, Dask workers, sandboxes and Zarr stores read back."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from helpers import assert_same_results, run_snakemake, write_config

import l2lflow
from l2lflow.config import load_config
from l2lflow.execution.dispatch import GenerationFailed
from l2lflow.experiment import Experiment
from l2lflow.store import DONE, FAILED

#: a user's module: generation 0 returns well-formed results (fixing each result's shape),
#: generation 1 a different kind of malformed result per individual
MALFORMED = """
import math
import numpy as np


def model(params, seed, *, context):
    fitness = float(params["a"] ** 2 + params["b"] ** 2)
    good = {"fitness": fitness, "m": 2.5, "trace": np.arange(10.0)}
    if context.generation == 0:
        return good
    bad = {
        1: {**good, "trace": np.arange(3.0)},             # shorter array
        2: {**good, "trace": np.ones((10, 10))},          # another rank
        3: {**good, "status": np.zeros(8)},               # an array named like a store variable
        4: {**good, "../../x": 1.0},                      # a path as key
        5: True,                                          # a bool as fitness
        6: {**good, "flag": np.bool_(True)},              # a numpy bool metric
        7: {**good, "m": np.arange(2.0)},                 # a scalar turned array
        8: {**good, "fitness": math.nan, "m": 7.0, "trace": np.full(10, 3.0)},  # NaN fitness
        9: {**good, "a": np.zeros(10)},                   # an array named like a parameter
    }
    return bad.get(context.individual, good)
"""


def _user_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, text: str) -> None:
    """Write a user's optimizee module where the engine, workers and sandboxes import it."""
    models = tmp_path / "models"
    models.mkdir(exist_ok=True)
    (models / f"{name}.py").write_text(textwrap.dedent(text))
    monkeypatch.syspath_prepend(str(models))
    monkeypatch.setenv(
        "PYTHONPATH", os.pathsep.join(filter(None, [str(models), os.environ.get("PYTHONPATH")]))
    )


@pytest.fixture(scope="module")
def malformed_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp_path = tmp_path_factory.mktemp("malformed")
    with pytest.MonkeyPatch.context() as monkeypatch:
        _user_module(tmp_path, monkeypatch, "malformed_model", MALFORMED)
        cfg = write_config(
            tmp_path,
            name="malformed",
            generations=2,
            population_size=12,
            optimizee={"name": "malformed_model:model"},
            evaluation={"retries": 1, "timeout_s": 60, "failure_fitness": 1e6},
            execution={"workers": 2, "idle_timeout_s": 20},
        )
        Experiment(load_config(cfg)).run()  # completes: no bad result aborts the run
    return tmp_path / "results" / "malformed"


def test_malformed_results_fail_their_own_individual_with_the_rule(malformed_run: Path) -> None:
    ds = l2lflow.open_results(malformed_run).load()
    assert (ds.status.values[0] == DONE).all()
    status, err = ds.status.values[1], ds.error.values[1]
    assert list(np.flatnonzero(status == FAILED)) == list(range(1, 10)), status
    assert (status[[0, 10, 11]] == DONE).all()
    # deterministic failures are not retried
    assert (ds.attempts.values[1][1:10] == 1).all(), ds.attempts.values[1]
    assert (ds.fitness.values[1][1:10] == 1e6).all()
    expected = {
        1: ["[result]", "'trace'", "shape (3,)", "shape (10,)"],
        2: ["[result]", "'trace'", "shape (10, 10)", "shape (10,)"],
        3: ["[result]", "'status'", "variable of the store"],
        4: ["[result]", "'../../x'", "Python identifier"],
        5: ["[result]", "bool"],
        6: ["[result]", "'flag'", "bool"],
        7: ["[result]", "'m'", "shape (2,)", "a scalar"],
        9: ["[result]", "'a'", "parameter of the space"],
    }
    for i, parts in expected.items():
        for part in parts:
            assert part in err[i], (i, err[i])
    # never broadcast: the trace keeps the first success's shape, failed rows hold nothing
    assert ds.trace.shape == (2, 12, 10)
    np.testing.assert_array_equal(ds.trace.values[1, 0], np.arange(10.0))
    assert np.isnan(ds.trace.values[1, [1, 2, 3, 4, 5, 6, 7, 9]]).all()
    # nothing outside the store's own variables was created
    assert "x" not in ds and "metric_flag" not in ds and "metric_x" not in ds
    assert not (malformed_run.parent / "x").exists()
    store = malformed_run / "results.zarr"
    assert not [p for p in store.rglob("*") if p.is_dir() and p.name == "x"]


def test_nan_fitness_is_not_retried_and_keeps_what_it_returned(malformed_run: Path) -> None:
    ds = l2lflow.open_results(malformed_run).load()
    assert ds.status.values[1, 8] == FAILED
    assert ds.attempts.values[1, 8] == 1  # the same seed would give the same NaN
    assert "[nonfinite]" in ds.error.values[1, 8] and "nan" in ds.error.values[1, 8]
    assert ds.fitness.values[1, 8] == 1e6
    # the finite metrics and arrays that came with the NaN are stored
    assert ds.metric_m.values[1, 8] == 7.0
    np.testing.assert_array_equal(ds.trace.values[1, 8], np.full(10, 3.0))


def test_result_shapes_are_persisted_for_a_resume(malformed_run: Path) -> None:
    from l2lflow.store import ResultStore

    store = ResultStore(malformed_run)
    assert store.result_shapes() == {"m": (), "trace": (10,)}
    assert store.attrs["result_shapes"] == {"m": [], "trace": [10]}
    # failed individuals with stored metrics are a healthy store
    check = subprocess.run(
        [sys.executable, "-m", "l2lflow", "check", str(malformed_run)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert check.returncode == 0, check.stdout + check.stderr


BROKEN = """
from pathlib import Path

FLAG = Path(__file__).with_name("broken")


def model(params, seed, *, context):
    if FLAG.exists():
        # what NEST says to nest.SetKernelStatus({"rng_seed": seed}) with a seed >= 2**32
        raise ValueError("RNG seed must be in (0, 2^32-1)")
    return float(params["a"] ** 2 + params["b"] ** 2)
"""


@pytest.mark.slow  # three runs (a reference, the broken one, the fixed rerun): ~30 s idle
@pytest.mark.timeout(900)
def test_a_generation_that_fails_entirely_stops_snakemake_and_a_fixed_rerun_redoes_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every evaluation of generation 1 fails: Snakemake exits non-zero with the first failure's
    traceback, the failures stay in the store; after the fix the same command evaluates the
    generation again and the store ends as a never-broken run's."""
    _user_module(tmp_path, monkeypatch, "broken_model", BROKEN)
    common = dict(
        generations=2,
        population_size=4,
        optimizee={"name": "broken_model:model"},
        evaluation={"retries": 1, "timeout_s": 60},
        execution={"workers": 1, "idle_timeout_s": 20},
    )
    reference = write_config(tmp_path / "ref", name="ref", **common)
    Experiment(load_config(reference)).run()

    flag = tmp_path / "models" / "broken"
    flag.touch()
    cfg = write_config(tmp_path, name="broken", **common)
    proc = run_snakemake(tmp_path, cfg, check=False, timeout=240)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out[-3000:]
    assert "generation 0: all 4 evaluations failed" in out, out[-3000:]
    assert "RNG seed must be in (0, 2^32-1)" in out and "Traceback" in out, out[-3000:]
    ds = l2lflow.open_results(tmp_path / "results" / "broken").load()
    assert (ds.status.values[0] == FAILED).all() and (ds.attempts.values[0] == 2).all()
    assert all("RNG seed must be" in e for e in ds.error.values[0])
    assert ds.sizes["generation"] == 1  # generation 1 was never sampled

    flag.unlink()  # the user fixes the model and runs the same command
    run_snakemake(tmp_path, cfg, timeout=240)
    ds = l2lflow.open_results(tmp_path / "results" / "broken").load()
    assert (ds.status.values == DONE).all()
    assert_same_results(tmp_path / "results" / "broken", tmp_path / "ref" / "results" / "ref")


def test_on_all_failed_continue_tells_the_optimizer_and_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _user_module(tmp_path, monkeypatch, "broken_model", BROKEN)
    (tmp_path / "models" / "broken").touch()
    common = dict(
        generations=2,
        population_size=3,
        optimizee={"name": "broken_model:model"},
        evaluation={"retries": 0, "failure_fitness": 5.0},
        execution={"workers": 1, "idle_timeout_s": 20},
    )
    with pytest.raises(GenerationFailed, match="generation 0: all 3 evaluations failed"):
        Experiment(load_config(write_config(tmp_path / "stop", name="stop", **common))).run()
    cfg = write_config(
        tmp_path / "go",
        name="go",
        **{**common, "evaluation": {**common["evaluation"], "on_all_failed": "continue"}},
    )
    Experiment(load_config(cfg)).run()
    ds = l2lflow.open_results(tmp_path / "go" / "results" / "go").load()
    assert (ds.status.values == FAILED).all() and (ds.fitness.values == 5.0).all()


SLOW_BATCH = '''
import time

from l2lflow.optimizees.base import register_optimizee


@register_optimizee("test.slow_batch", batched=True)
def slow_batch(params, seeds, *, contexts=None, seconds_each=0.5):
    """Takes ``seconds_each`` per individual; individual 0 of generation 1 hangs its batch."""
    if any(c.generation == 1 and c.individual == 0 for c in contexts):
        time.sleep(3600)
    time.sleep(seconds_each * len(params))
    return [float(p["a"] ** 2 + p["b"] ** 2) for p in params]
'''


def test_timeout_bounds_each_evaluation_of_a_batch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch of 4 that takes 0.5 s per individual runs under timeout_s = 1.5 (it gets 4 × 1.5 s);
    a hung batch of 4 is killed after 4 × timeout_s, failing all of its individuals."""
    _user_module(tmp_path, monkeypatch, "slow_batch_model", SLOW_BATCH)
    cfg = write_config(
        tmp_path,
        name="batch",
        generations=2,
        population_size=8,
        optimizee={"name": "slow_batch_model:slow_batch"},
        evaluation={"retries": 0, "timeout_s": 1.5, "batch_size": 4, "failure_fitness": 9.0},
        execution={"workers": 1, "idle_timeout_s": 20},
    )
    Experiment(load_config(cfg)).run()
    ds = l2lflow.open_results(tmp_path / "results" / "batch").load()
    assert (ds.status.values[0] == DONE).all(), ds.error.values[0]
    status, err = ds.status.values[1], ds.error.values[1]
    assert list(status) == [FAILED] * 4 + [DONE] * 4, err
    for e in err[:4]:
        assert "[timeout]" in e and "batched call of 4 individuals" in e and "6 s" in e, e


META = '''
import numpy as np

from l2lflow.optimizees.base import register_optimizee


@register_optimizee("test.meta_shapes", meta_test=True)
def meta_shapes(params, seed, *, context):
    """A trace of 4 values in the run; the meta-test of the best returns 3."""
    n = 3 if context.phase == "meta_test" and context.individual == 0 else 4
    return {"fitness": float(params["a"] ** 2 + params["b"] ** 2), "trace": np.ones(n)}
'''


def test_meta_test_results_are_checked_against_the_runs_shapes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _user_module(tmp_path, monkeypatch, "meta_model", META)
    cfg = write_config(
        tmp_path,
        name="meta",
        generations=1,
        population_size=4,
        optimizee={"name": "meta_model:meta_shapes", "meta_test": {"top_k": 4}},
        execution={"workers": 1, "idle_timeout_s": 20},
    )
    Experiment(load_config(cfg)).run()
    ds = l2lflow.open_results(tmp_path / "results" / "meta").load()
    assert ds.meta_test_trace.shape == (4, 4)
    wrong = list(ds.meta_test_individual.values).index(0)
    assert ds.meta_test_status.values[wrong] == FAILED
    err = ds.meta_test_error.values[wrong]
    assert "'trace'" in err and "shape (3,)" in err and "shape (4,)" in err, err
    others = [k for k in range(4) if k != wrong]
    assert (ds.meta_test_status.values[others] == DONE).all()
    np.testing.assert_array_equal(ds.meta_test_trace.values[others], np.ones((3, 4)))


RACE = '''
import time

import numpy as np


def model(params, seed, *, context):
    """Individual 1 returns a trace of 3, the others of 2; individual 0 arrives last."""
    if context.individual == 0:
        time.sleep(2.0)
    n = 3 if context.individual == 1 else 2
    return {"fitness": float(params["a"] ** 2 + params["b"] ** 2), "trace": np.ones(n)}
'''


def test_the_lowest_individual_fixes_a_shape_whatever_arrives_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Which individual a shape mismatch fails does not depend on arrival order: individual 0
    (slow) fixes the trace's shape, individual 1 (fast, another shape) fails."""
    _user_module(tmp_path, monkeypatch, "race_model", RACE)
    cfg = write_config(
        tmp_path,
        name="race",
        generations=1,
        population_size=4,
        optimizee={"name": "race_model:model"},
        execution={"workers": 2, "idle_timeout_s": 20},
    )
    Experiment(load_config(cfg)).run()
    ds = l2lflow.open_results(tmp_path / "results" / "race").load()
    assert list(ds.status.values[0]) == [DONE, FAILED, DONE, DONE], ds.error.values[0]
    assert "shape (3,)" in ds.error.values[0, 1] and "shape (2,)" in ds.error.values[0, 1]
    assert ds.trace.shape == (1, 4, 2)
