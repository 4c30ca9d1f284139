"""The new optimizers inside a real experiment: EnKF told the optimizee's output vectors from
the store, a Nevergrad optimizer resumed by replaying the store, a user's optimizer class named
``package.module:Class``, and config checks of them."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import numpy as np
import pytest
import yaml
from helpers import run_snakemake, write_config

import l2lflow
from l2lflow.config import ConfigError, load_config
from l2lflow.experiment import Experiment

SPACE = {f"w{i}": {"low": -2.0, "high": 2.0} for i in range(3)}
needs_nevergrad = pytest.mark.skipif(
    importlib.util.find_spec("nevergrad") is None, reason="nevergrad is not installed"
)


def _run(tmp_path: Path, generations: int, **overrides) -> tuple[dict, object]:
    cfg = load_config(
        write_config(
            tmp_path,
            generations=generations,
            execution={"workers": 1, "idle_timeout_s": 20},
            **overrides,
        )
    )
    Experiment(cfg).run()
    return cfg, l2lflow.open_results(cfg["results"])


def _assert_restores_every_generation(cfg: dict, generations: int) -> None:
    """A fresh experiment rebuilds the optimizer before each stored generation (from the
    checkpoint, or by replaying the store) and proposes exactly what was stored: the path a
    resumed or extended run takes."""
    for g in range(1, generations):
        exp = Experiment(cfg)
        asked = exp.space.decode(exp._optimizer_before(g).ask())
        stored = exp.store.parameters(g)
        for name in exp.space.names:
            np.testing.assert_array_equal(asked[name], stored[name])


def test_enkf_fits_a_linear_model_from_output_vectors_and_resumes(tmp_path: Path) -> None:
    cfg, ds = _run(
        tmp_path,
        4,
        population_size=10,
        optimizer={"name": "enkf", "options": {"gamma": 0.001}},
        optimizee={"name": "linear_fit", "options": {"n_samples": 12}},
        space=SPACE,
    )
    assert ds.outputs.shape == (4, 10, 12)  # the vectors EnKF was told
    best = ds.fitness.min(dim="individual").values
    # linear residuals: one Kalman step nearly solves it (w* = (-1, 0, 1))
    assert best[-1] < 1e-3 * best[0], best
    w = [float(ds[f"w{i}"].values[-1].mean()) for i in range(3)]
    np.testing.assert_allclose(w, [-1.0, 0.0, 1.0], atol=0.02)
    _assert_restores_every_generation(cfg, 4)


def test_enkf_without_outputs_says_which_array_it_needs(tmp_path: Path) -> None:
    with pytest.raises(Exception, match="returned no array 'outputs'"):
        _run(
            tmp_path,
            1,
            population_size=4,
            optimizer={"name": "enkf"},
            optimizee={"name": "sphere"},
            space=SPACE,
        )


@needs_nevergrad
def test_nevergrad_resumes_by_replay_bit_identically(tmp_path: Path) -> None:
    cfg, ds = _run(
        tmp_path,
        5,
        population_size=6,
        optimizer={"name": "nevergrad:TwoPointsDE", "options": {"budget": 30}},
        optimizee={"name": "rastrigin"},
        space=SPACE,
    )
    assert ds.fitness.shape == (5, 6)
    store = Experiment(cfg).store
    # no optimizer state is stored (Nevergrad's would be a pickle): restore means replay
    assert all(store.checkpoint(g).get("optimizer") is None for g in range(5))
    _assert_restores_every_generation(cfg, 5)


@needs_nevergrad
def test_unknown_nevergrad_name_lists_close_matches(tmp_path: Path) -> None:
    path = write_config(tmp_path, optimizer={"name": "nevergrad:TwoPointDE"})
    with pytest.raises(ConfigError, match="nevergrad:TwoPointsDE") as err:
        load_config(path)
    assert str(err.value).startswith("optimizer.name")


@needs_nevergrad
def test_nevergrad_option_errors_name_the_option(tmp_path: Path) -> None:
    path = write_config(
        tmp_path, optimizer={"name": "nevergrad:TwoPointsDE", "options": {"budget": -3}}
    )
    with pytest.raises(ConfigError, match="optimizer.options.budget"):
        load_config(path)


def test_per_parameter_sigma_by_name_is_the_list_in_space_order(tmp_path: Path) -> None:
    """A mapping by parameter name gives the same run as the list in ``space`` order."""
    runs = []
    for name, sigma in (("byname", {"w2": 0.3, "w0": 0.01, "w1": 0.1}), ("list", [0.01, 0.1, 0.3])):
        cfg, ds = _run(
            tmp_path / name,
            2,
            population_size=8,
            optimizer={"name": "snes", "options": {"sigma": sigma}},
            optimizee={"name": "sphere"},
            space=SPACE,
        )
        runs.append(np.stack([ds[f"w{i}"].values for i in range(3)]))
    np.testing.assert_array_equal(runs[0], runs[1])
    spread = runs[0][:, 0].std(axis=1)
    assert spread[0] < spread[1] < spread[2], spread
    with pytest.raises(ConfigError, match=r"optimizer.options.sigma: .*missing \['w2'\]"):
        load_config(
            write_config(
                tmp_path,
                space=SPACE,
                optimizer={"name": "snes", "options": {"sigma": {"w0": 0.1, "w1": 0.1}}},
            )
        )


@pytest.mark.parametrize(
    ("optimizer", "key"),
    [
        ({"name": "simulated_annealing", "options": {"cooling_schedule": "slow"}}, "cooling"),
        ({"name": "gradient_descent", "options": {"update": "nadam"}}, "update"),
        ({"name": "parallel_tempering", "options": {"min_temperature": 0}}, "min_temperature"),
        ({"name": "face", "options": {"max_pool_generations": 0}}, "max_pool_generations"),
        ({"name": "enkf", "options": {"worst_n": 8}}, "worst_n"),
        ({"name": "snes", "options": {"sigma": -1}}, "sigma"),
    ],
)
def test_bad_options_are_one_clear_line(tmp_path: Path, optimizer: dict, key: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(write_config(tmp_path, optimizer=optimizer))
    msg = str(err.value)
    assert msg.startswith("optimizer.options.") and key in msg and "\n" not in msg, msg


EXAMPLES = Path(__file__).resolve().parents[1] / "config" / "examples"


@pytest.fixture
def examples_on_pythonpath(monkeypatch: pytest.MonkeyPatch) -> None:
    """config/examples importable here and in every process a run starts (README: PYTHONPATH)."""
    monkeypatch.syspath_prepend(str(EXAMPLES))
    monkeypatch.setenv(
        "PYTHONPATH", os.pathsep.join([str(EXAMPLES), os.environ.get("PYTHONPATH", "")])
    )


def test_a_user_optimizer_named_module_class_runs_through_snakemake_and_resumes(
    tmp_path: Path, examples_on_pythonpath: None
) -> None:
    """The shipped example config (optimizer.name: user_optimizer:LocalSearch) as the README
    runs it: the engine imports the class, checkpoints its JSON state, and a fresh experiment
    restored from the store proposes exactly what was stored."""
    example = yaml.safe_load((EXAMPLES / "user_optimizer.yaml").read_text())
    overrides = {k: v for k, v in example.items() if k not in ("evaluation", "execution")}
    path = write_config(tmp_path, **{**overrides, "generations": 3})
    run_snakemake(tmp_path, path)
    cfg = load_config(path)
    ds = l2lflow.open_results(cfg["results"])
    assert ds.fitness.shape == (3, example["population_size"])
    assert np.all(np.isfinite(ds.fitness.values))
    _assert_restores_every_generation(cfg, 3)


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("user_optimizer:LocalSerch", "module 'user_optimizer' has no attribute 'LocalSerch'"),
        ("no_such_module:LocalSearch", "cannot import module 'no_such_module'"),
        ("json:dumps", "'json:dumps' is not a subclass of l2lflow.optimizers.Optimizer"),
    ],
)
def test_a_wrong_module_class_reference_is_one_clear_line(
    tmp_path: Path, examples_on_pythonpath: None, name: str, message: str
) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(write_config(tmp_path, optimizer={"name": name}))
    msg = str(err.value)
    assert msg.startswith("optimizer.name: ") and message in msg and "\n" not in msg, msg
