"""``genn.reservoir``: nest.reservoir's learning-to-learn experiment on GeNN (CPU backend here).

Simulation tests skip where ``pygenn`` does not import (GeNN 5 has no PyPI wheel), except under
``L2LFLOW_REQUIRE_PYGENN=1`` (CI), where they run. The reservoir model compiles once per process
and shape (~4 s) and is reused from the compiled-model cache by later processes.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import numpy as np
import pytest
import yaml
from helpers import REPO, write_config

import l2lflow
from l2lflow.config import load_config
from l2lflow.experiment import Experiment
from l2lflow.optimizees import genn, genn_reservoir
from l2lflow.optimizees.base import EvaluationContext, resolve_optimizee
from l2lflow.optimizees.nest import reservoir as nest_reservoir
from l2lflow.store import DONE

HAS_PYGENN = importlib.util.find_spec("pygenn") is not None
needs_pygenn = pytest.mark.skipif(
    not HAS_PYGENN and not os.environ.get("L2LFLOW_REQUIRE_PYGENN"),
    reason="pygenn does not import: GeNN 5 has no PyPI wheel; build it from source (README)",
)

#: a shrunk evaluation (the behaviours tested do not depend on size); nest.reservoir's options
SMALL = {
    "n_tasks": 2,
    "n_neurons": 60,
    "n_train_per_class": 4,
    "n_test_per_class": 4,
    "pattern_ms": 60.0,
}


def _contexts(seeds: list[int], task_seed: int = 11) -> list[EvaluationContext]:
    return [
        EvaluationContext(generation=0, individual=i, seed=s, task_seed=task_seed)
        for i, s in enumerate(seeds)
    ]


def _genn(params: list[dict], seeds: list[int], task_seed: int = 11, **options) -> list[dict]:
    return genn_reservoir.reservoir(
        params,
        seeds,
        contexts=_contexts(seeds, task_seed),
        backend="single_threaded_cpu",
        **{**SMALL, **options},
    )


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k], equal_nan=True) for k in a)


def test_registered_like_nest_reservoir_with_the_same_parameters_and_options() -> None:
    ours, nest = resolve_optimizee("genn.reservoir"), resolve_optimizee("nest.reservoir")
    assert ours.batched and ours.prefers_gpu and ours.meta_test
    assert ours.array_dims == nest.array_dims == {"task_accuracy": ("task",)}
    assert genn_reservoir.DEFAULT_PARAMS == nest_reservoir.RESERVOIR_PARAMS
    assert genn_reservoir.DEFAULT_SPACE == nest_reservoir.RESERVOIR_SPACE
    import inspect

    def options(fn) -> dict:
        return {
            k: p.default
            for k, p in inspect.signature(fn).parameters.items()
            if p.kind is p.KEYWORD_ONLY and not k.startswith("context")
        }

    shared = options(ours.function).keys() & options(nest.function).keys()
    assert options(nest.function).keys() - shared == {"stdp"}  # the one NEST-only option
    assert {k: options(ours.function)[k] for k in shared} == {
        k: options(nest.function)[k] for k in shared
    }


def test_the_default_experiment_validates_with_genn_by_its_name_alone(tmp_path: Path) -> None:
    """config/config.yaml (nest.reservoir) is a valid genn.reservoir experiment after changing
    only ``optimizee.name``: same parameters, same options."""
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    config["optimizee"]["name"] = "genn.reservoir"
    config["results"] = str(tmp_path / "r")
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(config))
    assert load_config(path)["optimizee"]["name"] == "genn.reservoir"


def test_membrane_propagator_is_nests_and_finite_at_equal_time_constants() -> None:
    dt, tau_s, c = 0.1, nest_reservoir.NEURON["tau_syn_ex"], nest_reservoir.NEURON["C_m"]
    tau_m = 20.0
    nest_p21 = tau_s * tau_m / (c * (tau_m - tau_s)) * (np.exp(-dt / tau_m) - np.exp(-dt / tau_s))
    assert genn_reservoir.membrane_propagator(tau_m, dt) == pytest.approx(nest_p21, rel=1e-12)
    at = genn_reservoir.membrane_propagator(tau_s, dt)
    near = genn_reservoir.membrane_propagator(tau_s * (1 + 1e-9), dt)
    assert at == pytest.approx(near, rel=1e-6) and at == pytest.approx(dt / c * np.exp(-dt / tau_s))


@needs_pygenn
def test_an_individuals_result_does_not_depend_on_its_batch_and_bad_ones_fail_alone() -> None:
    params = [{}, {"tau_m": -1.0}, {"w_exc": 150.0, "input_gain": 800.0}]
    seeds = [21, 22, 23]
    together = _genn(params, seeds)
    before = genn.BUILD_COUNT
    alone = [_genn([params[i]], [seeds[i]])[0] for i in (2, 0)]
    assert genn.BUILD_COUNT == before  # one compiled model for every call of this shape
    assert _same(together[2], alone[0]) and _same(together[0], alone[1])  # bitwise, any order
    assert np.isnan(together[1]["fitness"]) and np.isfinite(together[0]["fitness"])
    r = together[0]
    assert r["task_accuracy"].shape == (2,) and r["chance"] == pytest.approx(1 / 3)
    assert r["fitness"] == pytest.approx(r["task_accuracy"].mean())
    assert r["rate"] > 0 and 0.0 <= r["fitness"] <= 1.0
    # the tasks come from the task seed: another generation, other tasks, other results
    assert not _same(_genn([{}], [21], task_seed=12)[0], r)
    with pytest.raises(ValueError, match=r"unknown parameter\(s\) \['stdp_lambda'\]"):
        _genn([{"stdp_lambda": 0.1}], [1])


#: parameter sets of the cross-simulator check: the defaults, a strongly driven and a strongly
#: recurrent reservoir (the largest disagreement measured)
CROSS_SETS = {
    "default": {},
    "strong_input": {"input_gain": 1000.0},
    "strong_recurrence": {"w_exc": 200.0, "g": 3.0, "p_conn": 0.2},
}


@needs_pygenn
@pytest.mark.nest
def test_nest_and_genn_reservoirs_agree() -> None:
    """Same tasks, same samples, same parameters: NEST and GeNN give firing rates within 10 %
    and held-out accuracies within 0.12 of each other (4 evaluations x 2 tasks x 12 test
    samples per set). Measured on these seeds: rates within 3.1 %, accuracies within 0.094;
    over 16 evaluations per set: rates within 1.1 %, except 8.9 % for the strongly recurrent
    set, accuracies within 0.057. Not bitwise: the networks are drawn by different generators
    and the simulators order their float operations differently."""
    pytest.importorskip("nest", reason="nest-simulator is not installed")
    from l2lflow.optimizees.nest.reservoir import reservoir as nest_reservoir

    seeds = [101, 102, 103, 104]
    contexts = [
        EvaluationContext(generation=0, individual=i, seed=s, task_seed=500 + i)
        for i, s in enumerate(seeds)
    ]
    for name, p in CROSS_SETS.items():
        ours = genn_reservoir.reservoir(
            [p] * len(seeds), seeds, contexts=contexts, backend="single_threaded_cpu", **SMALL
        )
        theirs = [
            nest_reservoir(p, s, context=c, **SMALL) for s, c in zip(seeds, contexts, strict=True)
        ]
        acc = [np.mean([r["task_accuracy"] for r in rs]) for rs in (ours, theirs)]
        rate = [np.mean([r["rate"] for r in rs]) for rs in (ours, theirs)]
        print(
            f"{name}: accuracy genn {acc[0]:.3f} nest {acc[1]:.3f}, rate {rate[0]:.1f} {rate[1]:.1f}"
        )
        assert abs(rate[0] - rate[1]) <= 0.10 * rate[1], name
        assert abs(acc[0] - acc[1]) <= 0.12, name


@needs_pygenn
@pytest.mark.slow
def test_the_outer_loop_improves_the_genn_reservoir(tmp_path: Path) -> None:
    """A small learning-to-learn run through the real pipeline (Dask workers, sandboxes, store):
    the population's held-out accuracy on each generation's new tasks rises, and the meta-test
    re-evaluates the best on never-seen tasks."""

    from l2lflow.config import load_config

    cfg = load_config(
        write_config(
            tmp_path,
            name="genn-l2l",
            seed=2026,
            generations=4,
            population_size=8,
            direction="maximize",
            optimizer={"name": "cross_entropy", "options": {"elite_fraction": 0.25}},
            optimizee={
                "name": "genn.reservoir",
                "options": {**SMALL, "backend": "single_threaded_cpu"},
                "meta_test": {"top_k": 2},
            },
            space={k: dict(v) for k, v in genn_reservoir.DEFAULT_SPACE.items()},
            evaluation={"retries": 1, "timeout_s": 300, "batch_size": 4},  # both workers busy
        )
    )
    Experiment(cfg).run()
    ds = l2lflow.open_results(Path(cfg["results"]))
    assert (ds.status == DONE).all()
    mean = ds.fitness.mean("individual").values
    print("mean held-out accuracy per generation:", np.round(mean, 3))
    assert mean[-1] > mean[0] + 0.05
    assert ds.task_accuracy.shape == (4, 8, 2)
    assert ds.meta_test_task_accuracy.shape == (2, 2)
    assert (ds.meta_test_fitness.values > 1 / 3).all()  # above chance on new tasks


@needs_pygenn
def test_genn_reservoir_keeps_the_optimizee_contract_through_the_sandbox() -> None:
    """What a run relies on, through the path a run uses (sandbox processes): the same bits in
    two fresh processes (each loads the compiled model from the cache), batch invariance, and a
    bad parameter set failing alone."""
    from l2lflow.testing import check_optimizee

    report = check_optimizee(
        "genn.reservoir",
        space={k: dict(v) for k, v in genn_reservoir.DEFAULT_SPACE.items()},
        options={**SMALL, "n_tasks": 1, "backend": "single_threaded_cpu"},
        individuals=3,
        bad_params={"tau_m": -1.0},
    )
    assert report.checks == ["determinism", "batch invariance", "bad-parameter isolation"]
