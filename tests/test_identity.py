"""What a resume checks: every setting that changes results is in the config's identity (hash).

A resume with another value of such a setting would silently mix results of two
configurations in one store, so it is refused; a setting that only decides how and where an
evaluation runs may change (README "Resume, extend, and what may change"). Each claim is shown
here: ``evaluation.threads`` changes real NEST spikes and is guarded; ``isolate`` does not change
a real NEST optimizee's results and is not; old stores keep their hash.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path

import numpy as np
import pytest
from helpers import REPO, write_config
from test_config_errors import BASE

from l2lflow.config import config_hash, describe_changes, load_config, result_config
from l2lflow.config import validate_config as validated


def with_evaluation(**evaluation) -> dict:
    config = copy.deepcopy(BASE)
    config["evaluation"] = evaluation
    return validated(config)


@pytest.mark.parametrize(
    ("key", "value"), [("threads", 2), ("batch_size", 16), ("device", "cpu"), ("device", "gpu")]
)
def test_result_changing_evaluation_settings_are_in_the_identity(key, value) -> None:
    assert config_hash(with_evaluation(**{key: value})) != config_hash(with_evaluation())
    default = result_config(with_evaluation())
    changes = describe_changes(default, result_config(with_evaluation(**{key: value})))
    assert any(c.startswith(f"evaluation.{key}: ") and repr(value) in c for c in changes), changes


@pytest.mark.parametrize(
    ("section", "key", "value"),
    [
        ("evaluation", "retries", 5),
        ("evaluation", "timeout_s", 9.5),
        ("evaluation", "isolate", False),
        ("execution", "workers", 7),
        ("execution", "idle_timeout_s", 3),
        ("execution", "gpu", "off"),
        (None, "generations", 50),
    ],
)
def test_settings_that_only_decide_how_and_where_may_change(section, key, value) -> None:
    config = copy.deepcopy(BASE)
    if section is None:
        config[key] = value
    else:
        config[section] = {key: value}
    assert config_hash(validated(config)) == config_hash(validated(BASE))


def test_stores_made_before_keep_their_hash() -> None:
    """Hashes computed before threads, batch_size and device joined the identity (defaults)."""
    assert config_hash(validated(BASE)) == "53656ff3804559c8"
    explicit = with_evaluation(failure_fitness=3.0, retries=4, threads=1, device="auto")
    assert config_hash(explicit) == "64245ec58de456c4"


def test_resume_with_other_threads_is_refused(tmp_path: Path) -> None:
    """The bug: a store made with threads 1 accepted a resume with threads 2."""
    from l2lflow.experiment import Experiment
    from l2lflow.store import StoreError, check_compatible

    cfg = write_config(tmp_path, population_size=2, execution={"workers": 1})
    config = load_config(cfg)
    Experiment(config).close()  # creates the store
    check_compatible(config["results"], config)  # the same config resumes
    other = copy.deepcopy(config)
    other["evaluation"]["threads"] = 2
    with pytest.raises(StoreError, match=r"another configuration \(evaluation\.threads: 1 -> 2\)"):
        check_compatible(config["results"], other)


@pytest.mark.nest
def test_nest_thread_count_changes_spikes() -> None:
    """Why threads is guarded: same seed, other thread count, other spikes (real NEST)."""
    pytest.importorskip("nest")
    from l2lflow.optimizees.nest.kernel import nest_session, simulate

    def spikes(threads: int) -> np.ndarray:
        with nest_session(12345, threads) as nest:
            neurons = nest.Create("iaf_psc_alpha", 40)
            noise = nest.Create("poisson_generator", params={"rate": 9000.0})
            recorder = nest.Create("spike_recorder")
            nest.Connect(noise, neurons, syn_spec={"weight": 20.0})
            nest.Connect(neurons, neurons, {"rule": "fixed_indegree", "indegree": 5})
            nest.Connect(neurons, recorder)
            simulate(200.0)
            events = recorder.get("events")
            order = np.lexsort((events["senders"], events["times"]))
            return np.stack([events["times"][order], events["senders"][order]])

    one, again, two = spikes(1), spikes(1), spikes(2)
    assert np.array_equal(one, again)
    assert one.shape != two.shape or not np.array_equal(one, two)


@pytest.mark.nest
def test_isolate_does_not_change_a_nest_optimizees_results(tmp_path: Path, monkeypatch) -> None:
    """Why isolate may change on resume: sandbox or worker process, the same bits (real NEST,
    the user-model example, through the engine's own evaluation path)."""
    pytest.importorskip("nest")
    from l2lflow.experiment import Experiment
    from l2lflow.store import open_results

    examples = str(REPO / "config" / "examples")
    monkeypatch.syspath_prepend(examples)  # here, and in the workers (README: PYTHONPATH)
    monkeypatch.setenv(
        "PYTHONPATH", os.pathsep.join(filter(None, [examples, os.environ.get("PYTHONPATH")]))
    )
    stored = {}
    for isolate in (True, False):
        cfg = write_config(
            tmp_path / str(isolate),
            name="iso",
            population_size=3,
            generations=1,
            optimizer={"name": "random"},
            optimizee={"name": "user_nest_model:tiny", "options": {"sim_time_ms": 100.0}},
            space={"drive_rate": {"low": 6000.0, "high": 12000.0}},
            evaluation={"isolate": isolate, "retries": 0},
            execution={"workers": 1, "idle_timeout_s": 20},
        )
        exp = Experiment(load_config(cfg))
        try:
            exp.sample(0)
            exp.evaluate(0)
        finally:
            exp.close()
        ds = open_results(exp.results_dir).load()
        assert (ds["status"].values == 1).all(), ds["error"].values
        stored[isolate] = {k: ds[k].values.copy() for k in ("fitness", "metric_rate")}
    for key in stored[True]:
        assert np.array_equal(stored[True][key], stored[False][key]), key
