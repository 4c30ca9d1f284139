"""The ``optuna:<Sampler>`` bridge beyond the conformance suite: inside a real experiment
(resumed by replaying the store), the GP sampler on a tiny budget in the default suite, and
the config errors (unknown sampler, sampler options)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
from helpers import write_config
from test_optimizers_experiment import _assert_restores_every_generation, _run

from l2lflow.config import ConfigError, load_config
from l2lflow.experiment import Experiment
from l2lflow.optimizers import get_optimizer_class, replay

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("optuna") is None, reason="optuna is not installed"
)
SPACE = {f"w{i}": {"low": -2.0, "high": 2.0} for i in range(3)}


def test_tpe_in_an_experiment_resumes_by_replay_bit_identically(tmp_path: Path) -> None:
    cfg, ds = _run(
        tmp_path,
        4,
        population_size=6,
        optimizer={"name": "optuna:TPE", "options": {"sampler_options": {"n_startup_trials": 6}}},
        optimizee={"name": "sphere"},
        space=SPACE,
    )
    assert ds.fitness.shape == (4, 6)
    store = Experiment(cfg).store
    # no optimizer state is stored (Optuna's would be a pickle): restore means replay
    assert all(store.checkpoint(g).get("optimizer") is None for g in range(4))
    _assert_restores_every_generation(cfg, 4)
    # the model-based generations beat the random first one
    assert float(ds.fitness[1:].min()) < float(ds.fitness[0].min())


def test_gp_sampler_small_budget_replays_bit_identically() -> None:
    """GP costs about a second per trial under load: 3 generations of 3 in 2-D, 2 random."""
    cls = get_optimizer_class("optuna:GP")

    def make():
        return cls(2, 3, 5, sampler_options={"n_startup_trials": 2})

    opt, fits, asks = make(), [], []
    for _ in range(3):
        x = opt.ask()
        fx = np.sum((x - 0.3) ** 2, axis=1)
        opt.tell(x, fx)
        asks.append(x)
        fits.append(fx)
    again = replay(make, fits[:2])
    np.testing.assert_array_equal(again.ask(), asks[2])


def test_unknown_sampler_lists_the_known_ones(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="optuna:TPE") as err:
        load_config(write_config(tmp_path, optimizer={"name": "optuna:TPS"}))
    assert str(err.value).startswith("optimizer.name")


@pytest.mark.parametrize(
    ("options", "key"),
    [
        ({"sampler_options": {"no_such": 1}}, "sampler_options.no_such"),
        ({"sampler_options": {"seed": 3}}, "sampler_options.seed"),  # set by l2lflow
        ({"sampler_options": {"n_startup_trials": "ten"}}, "sampler_options"),
        ({"sampler_options": [1, 2]}, "sampler_options"),
    ],
)
def test_bad_sampler_options_are_one_clear_line(tmp_path: Path, options: dict, key: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(write_config(tmp_path, optimizer={"name": "optuna:TPE", "options": options}))
    msg = str(err.value)
    assert msg.startswith(f"optimizer.options.{key}") and "\n" not in msg, msg
