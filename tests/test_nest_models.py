"""Tests of the NEST optimizees: reproducibility, seeds, errors, task drawing, STDP, threads.

Each evaluation here is shrunk (fewer neurons, samples, milliseconds) so the file runs in well
under a minute; the behaviours tested do not depend on size.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

from l2lflow.optimizees.base import REGISTRY, EvaluationContext
from l2lflow.optimizees.nest import kernel

_NEST_OK = kernel.nest_available()
pytestmark = [
    pytest.mark.nest,
    pytest.mark.skipif(not _NEST_OK, reason="nest-simulator is not importable here"),
]

if _NEST_OK:
    from l2lflow.optimizees.nest.brunel import brunel
    from l2lflow.optimizees.nest.reservoir import draw_tasks, reservoir

ROOT = Path(__file__).resolve().parents[1]
BRUNEL_SMALL = {"n_neurons": 200, "sim_time_ms": 300.0, "record_rate_trace": True}
RESERVOIR_SMALL = {
    "n_tasks": 2,
    "n_neurons": 60,
    "n_train_per_class": 4,
    "n_test_per_class": 4,
    "pattern_ms": 60.0,
}


class _ListHandler(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def _context(seed: int, task_seed: int = 11, threads: int = 1, **kw) -> EvaluationContext:
    return EvaluationContext(
        generation=0, individual=0, seed=seed, task_seed=task_seed, threads=threads, **kw
    )


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k], equal_nan=True) for k in a)


def test_registered_with_capabilities():
    assert REGISTRY["nest.brunel"].array_dims == {"rate_trace": ("time_bin",)}
    reservoir_entry = REGISTRY["nest.reservoir"]
    assert reservoir_entry.meta_test
    assert reservoir_entry.array_dims == {"task_accuracy": ("task",)}


def test_reset_kernel_sets_seed_and_threads_every_time():
    nest = kernel.reset_kernel(2**62 + 5, threads=2)
    assert nest.local_num_threads == 2
    assert nest.rng_seed == kernel.nest_seed(2**62 + 5)
    nest = kernel.reset_kernel(7, threads=1, resolution=0.2)
    assert (nest.local_num_threads, nest.resolution) == (1, 0.2)
    assert nest.rng_seed == kernel.nest_seed(7)
    # seeds differing only in high bits map to different NEST seeds, all in range
    seeds = {kernel.nest_seed(s << 40) for s in range(1, 50)}
    assert len(seeds) == 49 and all(1 <= s <= kernel.NEST_SEED_MAX for s in seeds)


def test_chunk_plan_is_exact_and_on_min_delay_slices():
    plan = kernel.chunk_plan(1000.0, 10.0, 0.1, 1.5)
    assert sum(round(c / 0.1) for c in plan) == 10000
    assert all(round(c / 0.1) % 15 == 0 for c in plan[:-1])
    assert kernel.chunk_plan(25.3, 10.0, 0.1, 0.1)[-1] == pytest.approx(5.3)
    assert kernel.chunk_plan(0.0, 10.0, 0.1, 1.0) == []
    with pytest.raises(ValueError, match="multiple of the resolution"):
        kernel.chunk_plan(10.05, 10.0, 0.1, 1.0)


def test_chunked_simulate_equals_one_simulate():
    def spikes(chunked: bool) -> np.ndarray:
        nest = kernel.reset_kernel(3)
        n = nest.Create("iaf_psc_delta", 50)
        pg = nest.Create("poisson_generator", params={"rate": 20000.0})
        sr = nest.Create("spike_recorder")
        nest.Connect(pg, n, syn_spec={"weight": 0.1})
        nest.Connect(n, n, {"rule": "fixed_indegree", "indegree": 5}, {"delay": 1.5})
        nest.Connect(n, sr)
        if chunked:
            kernel.simulate(200.0)
        else:
            nest.Simulate(200.0)
        return np.asarray(sr.get("events")["times"])

    assert np.array_equal(spikes(True), spikes(False))


def test_nest_warnings_reach_the_log():
    log = logging.getLogger("test.nest.warnings")
    handler = _ListHandler()
    log.addHandler(handler)
    try:
        with kernel.nest_session(1, log=log) as nest:
            n = nest.Create("iaf_psc_delta", 2)
            nest.Connect(n, n, syn_spec={"delay": 1.5})
            kernel.simulate(10.0)  # 10 ms is not a multiple of the 1.5 ms min delay
    finally:
        log.removeHandler(handler)
    messages = [r.getMessage() for r in handler.records if r.levelno == logging.WARNING]
    assert any("minimal delay" in m for m in messages), messages


def test_foreign_stderr_lines_are_passed_through():
    log = logging.getLogger("test.nest.forward")
    handler = _ListHandler()
    log.addHandler(handler)
    with tempfile.TemporaryFile() as out:
        try:
            kernel._forward(
                "distributed.worker - INFO - hi\n[WARNING] [2026-01-01 00:00:00] careful\n",
                log,
                out.fileno(),
            )
        finally:
            log.removeHandler(handler)
        out.seek(0)
        assert out.read() == b"distributed.worker - INFO - hi\n"
    assert [r.getMessage() for r in handler.records] == ["NEST WARNING: careful"]


def test_brunel_same_seed_is_bit_identical_and_seeds_differ():
    a = brunel({}, 5, context=_context(5), **BRUNEL_SMALL)
    b = brunel({}, 5, context=_context(5), **BRUNEL_SMALL)
    c = brunel({}, 6, context=_context(6), **BRUNEL_SMALL)
    assert _same(a, b)
    assert not np.array_equal(a["rate_trace"], c["rate_trace"])
    assert a["fitness"] != c["fitness"]
    assert a["rate_trace"].shape == (150,)  # 300 ms in 2 ms bins
    for key in ("rate", "cv_isi", "synchrony", "d_rate", "d_cv_isi", "d_synchrony"):
        assert np.isfinite(a[key]), key


def test_brunel_regime_matters():
    quiet = brunel({"eta": 0.5}, 1, context=_context(1), n_neurons=200, sim_time_ms=300.0)
    driven = brunel({"eta": 2.0}, 1, context=_context(1), n_neurons=200, sim_time_ms=300.0)
    assert quiet["rate"] < 1.0 < driven["rate"]
    assert quiet["d_cv_isi"] == 5.0  # a (nearly) silent network has no CV: the NaN distance


def test_brunel_invalid_parameter_raises_nests_error():
    nest = kernel.get_nest()
    with pytest.raises(nest.NESTError, match="Delay must be greater than or equal to resolution"):
        brunel({"delay": -1.0}, 1, context=_context(1), n_neurons=100, sim_time_ms=200.0)
    with pytest.raises(ValueError, match="unknown parameter"):
        brunel({"gee": 5.0}, 1, context=_context(1))


def test_reservoir_invalid_parameter_raises_nests_error():
    nest = kernel.get_nest()
    with pytest.raises(nest.NESTError, match="(?i)tau|time constant|positive"):
        reservoir({"tau_m": -5.0}, 1, context=_context(1), **RESERVOIR_SMALL)


def test_reservoir_same_seed_is_bit_identical_and_seeds_differ():
    a = reservoir({}, 21, context=_context(21), **RESERVOIR_SMALL)
    b = reservoir({}, 21, context=_context(21), **RESERVOIR_SMALL)
    c = reservoir({}, 22, context=_context(22), **RESERVOIR_SMALL)
    assert _same(a, b)
    assert a["task_accuracy"].shape == (2,)
    assert a["rate"] != c["rate"]
    assert 0.0 <= a["fitness"] <= 1.0 and a["chance"] == pytest.approx(1 / 3)


def test_tasks_come_from_the_task_seed_only():
    first = draw_tasks(123, 3)
    again = draw_tasks(123, 3)
    other = draw_tasks(124, 3)
    for x, y in zip(first, again, strict=True):
        for cx, cy in zip(x.templates, y.templates, strict=True):
            assert all(np.array_equal(u, v) for u, v in zip(cx, cy, strict=True))
    assert not np.array_equal(first[0].templates[0][0], other[0].templates[0][0])
    # tasks differ from each other, and asking for more tasks keeps the first ones
    assert not np.array_equal(first[0].templates[0][0], first[1].templates[0][0])
    assert np.array_equal(draw_tasks(123, 5)[2].templates[1][3], first[2].templates[1][3])


def test_reservoir_draws_its_tasks_from_context_task_seed(monkeypatch):
    from l2lflow.optimizees.nest import reservoir as module

    drawn: list[tuple[int, list]] = []

    def spy(task_seed, n_tasks, **kw):
        tasks = draw_tasks(task_seed, n_tasks, **kw)
        drawn.append((task_seed, tasks))
        return tasks

    monkeypatch.setattr(module, "draw_tasks", spy)
    # two individuals of one generation (different seeds), then a new generation
    reservoir({}, 1, context=_context(1, task_seed=5), **RESERVOIR_SMALL)
    reservoir({}, 2, context=_context(2, task_seed=5), **RESERVOIR_SMALL)
    reservoir({}, 1, context=_context(1, task_seed=6), **RESERVOIR_SMALL)
    assert [seed for seed, _ in drawn] == [5, 5, 6]

    def templates(tasks):
        return [c for t in tasks for cls in t.templates for c in cls]

    same = zip(templates(drawn[0][1]), templates(drawn[1][1]), strict=True)
    assert all(np.array_equal(u, v) for u, v in same)
    assert not np.array_equal(templates(drawn[0][1])[0], templates(drawn[2][1])[0])


def test_reservoir_stdp_runs_and_changes_results():
    plain = reservoir({}, 3, context=_context(3), **RESERVOIR_SMALL)
    plastic = reservoir({"stdp_lambda": 0.05}, 3, context=_context(3), stdp=True, **RESERVOIR_SMALL)
    assert plastic["weight_change"] > 0.0
    assert plain["rate"] != plastic["rate"]


def test_threads_2_run():
    b = brunel({}, 1, context=_context(1, threads=2), n_neurons=200, sim_time_ms=200.0)
    r = reservoir({}, 1, context=_context(1, threads=2), **RESERVOIR_SMALL)
    assert np.isfinite(b["fitness"]) and np.isfinite(r["fitness"])
    assert kernel.get_nest().local_num_threads == 2


def test_user_example_model(tmp_path):
    path = ROOT / "config" / "examples" / "user_nest_model.py"
    spec = importlib.util.spec_from_file_location("user_nest_model", path)
    assert spec is not None and spec.loader is not None
    module = sys.modules.get("user_nest_model") or importlib.util.module_from_spec(spec)
    if "user_nest_model" not in sys.modules:
        sys.modules["user_nest_model"] = module
        spec.loader.exec_module(module)
    ctx = _context(9, scratch_root=str(tmp_path))
    result = module.tiny({}, 9, context=ctx)
    again = module.tiny({}, 9, context=ctx)
    assert _same(result, again)
    assert result["rate_trace"].shape == (50,) and result["rate"] > 0
    assert os.path.exists(ctx.scratch_dir / "spikes.npz")
