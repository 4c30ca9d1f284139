"""l2lflow.testing: the optimizer and optimizee conformance checks pass correct user code and
catch violations, with a message naming the broken rule."""

from __future__ import annotations

import importlib.util
import os
import sys
import textwrap
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from l2lflow.optimizers import REGISTRY, Optimizer, OptimizerError, register
from l2lflow.testing import (
    CHECKS,
    Quality,
    check_asks_in_box,
    check_optimizee,
    check_optimizer,
    check_state_is_strict_json,
    config_names,
)

SPACE = {"a": {"low": -2.0, "high": 2.0}, "b": {"low": 0.1, "high": 10.0, "scale": "log"}}

#: user optimizees as a user writes them, each breaking one part of the contract (or none)
USER_MODELS = """
import os
import numpy as np

def good(params, seed):
    if params["b"] < 0:
        raise ValueError(f"b must be positive, got {params['b']}")
    return float(np.random.default_rng(seed).normal() + params["a"] ** 2)

def clock(params, seed):
    return float(np.frombuffer(os.urandom(8), dtype=np.uint64)[0] % 1000)

_BROKEN = False

def contagious(params, seed):
    global _BROKEN
    if params["b"] < 0:
        _BROKEN = True
        raise ValueError("bad b")
    if _BROKEN:
        raise RuntimeError("state left behind by an earlier individual")
    return params["a"] ** 2

def crash_on_bad(params, seed):
    if params["b"] < 0:
        os._exit(3)
    return params["a"] ** 2
"""

USER_BATCHED = """
import numpy as np
from l2lflow.optimizees.base import register_optimizee

@register_optimizee("user.batch_mean", batched=True)
def batch_mean(params, seeds, *, contexts):
    a = np.array([p["a"] for p in params])
    return list(a - a.mean())  # depends on the rest of the batch
"""


@pytest.fixture
def user_modules(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Modules on PYTHONPATH for this process and the sandboxes it starts."""
    (tmp_path / "user_models.py").write_text(textwrap.dedent(USER_MODELS))
    (tmp_path / "user_batched.py").write_text(textwrap.dedent(USER_BATCHED))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv(
        "PYTHONPATH", os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])
    )


def test_a_deterministic_model_passes_and_a_bad_parameter_fails_alone(user_modules) -> None:
    report = check_optimizee("user_models:good", space=SPACE, bad_params={"b": -1.0})
    assert report.checks == ["determinism", "bad-parameter isolation"]
    assert len(report.results) == 4 and all(r["ok"] for r in report.results)


def test_a_crash_on_bad_parameters_still_fails_only_that_individual(user_modules) -> None:
    report = check_optimizee("user_models:crash_on_bad", space=SPACE, bad_params={"b": -1.0})
    assert "bad-parameter isolation" in report.checks


def test_nondeterminism_is_caught(user_modules) -> None:
    with pytest.raises(AssertionError, match="is not deterministic"):
        check_optimizee("user_models:clock", space=SPACE)


def test_an_individual_that_poisons_the_next_ones_is_caught(user_modules) -> None:
    with pytest.raises(AssertionError, match="took individuals"):
        check_optimizee("user_models:contagious", space=SPACE, bad_params={"b": -1.0})


def test_batch_dependence_is_caught(user_modules) -> None:
    import user_batched  # noqa: F401  (registers user.batch_mean here; the sandbox imports it too)

    with pytest.raises(AssertionError, match="is not batch-invariant"):
        check_optimizee("user_batched:batch_mean", space=SPACE)


@pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="torch is not installed")
def test_the_batched_torch_lsnn_keeps_the_contract() -> None:
    from l2lflow.optimizees.torch_lsnn import DEFAULT_SPACE

    tiny = {"n_neurons": 16, "n_inputs": 8, "n_steps": 32, "inner_steps": 3, "n_tasks": 2}
    report = check_optimizee(
        "torch.lsnn",
        space=DEFAULT_SPACE,
        options={**tiny, "n_points": 4, "device": "cpu"},
        individuals=3,
        bad_params={"tau_m": -1.0},
    )
    assert report.checks == ["determinism", "batch invariance", "bad-parameter isolation"]


# ---------------------------------------------------------------------- optimizers
def _shipped_example() -> ModuleType:
    """config/examples/user_optimizer.py, the README's optimizer, imported as its config names
    it (``user_optimizer:LocalSearch``) without putting config/examples on this process's path."""
    if "user_optimizer" not in sys.modules:
        path = Path(__file__).resolve().parents[1] / "config" / "examples" / "user_optimizer.py"
        spec = importlib.util.spec_from_file_location("user_optimizer", path)
        module = importlib.util.module_from_spec(spec)
        sys.modules["user_optimizer"] = module
        spec.loader.exec_module(module)
    return sys.modules["user_optimizer"]


#: a user's correct optimizer: Gaussian steps around the best point so far
LocalSearch: type[Optimizer] = _shipped_example().LocalSearch


class ReplayedLocalSearch(LocalSearch):
    """Correct too, without a plain-data state: a run restores it by replay."""

    name = "user.replayed_local_search"

    def _get_state(self) -> None:
        return None


class SeedIgnoring(LocalSearch):
    name = "user.seed_ignoring"

    def _setup(self) -> None:
        super()._setup()
        self.rng = np.random.default_rng(0)  # the seed is ignored


class Forgetful(LocalSearch):
    name = "user.forgetful"

    def _get_state(self) -> dict:
        return {"best_loss": self.best_loss}  # the centre is lost on restore

    def _set_state(self, state: dict) -> None:
        self.best_loss = float(state["best_loss"])


class OwnGenerator(LocalSearch):
    name = "user.own_generator"

    def _get_state(self) -> dict:
        return {**super()._get_state(), "rng": np.random.default_rng(1)}  # an object, not JSON


class OutOfBox(LocalSearch):
    name = "user.out_of_box"

    def ask(self) -> np.ndarray:  # overrides the base class's, skipping its clipping
        if self._pending is not None:
            raise OptimizerError("ask() called twice without tell()")
        self._pending = self.center + 0.5 * self.rng.normal(
            size=(self.population_size, self.dimension)
        )
        return self._pending.copy()


USER_OPTIMIZERS = [
    LocalSearch,
    ReplayedLocalSearch,
    SeedIgnoring,
    Forgetful,
    OwnGenerator,
    OutOfBox,
]


@pytest.fixture
def user_optimizers():
    """The user's optimizers registered for this test only."""
    before = dict(REGISTRY)
    for cls in USER_OPTIMIZERS:
        register(cls)
    yield
    REGISTRY.clear()
    REGISTRY.update(before)


def test_a_user_optimizer_registered_at_test_time_passes_check_optimizer(user_optimizers) -> None:
    report = check_optimizer(
        "user.local_search", quality={"sphere": Quality(30, 32, threshold=0.5)}
    )
    assert report.passed == [*CHECKS, "quality"]
    assert report.not_applicable == {}
    # the names a config can use: the registered one, and the module:Class reference
    assert config_names(LocalSearch) == ["user.local_search", "user_optimizer:LocalSearch"]
    rules = ["found_by_name", "checkpoint_between_generations"]
    by_reference = check_optimizer("user_optimizer:LocalSearch", {"step": 0.1}, checks=rules)
    assert by_reference.passed == rules


def test_an_optimizer_restored_by_replay_skips_only_the_json_rules(user_optimizers) -> None:
    report = check_optimizer(ReplayedLocalSearch)
    assert sorted(report.not_applicable) == [
        "checkpoint_between_ask_and_tell",
        "quality",  # no thresholds given: not checked, and not reported as passed
        "state_is_strict_json",
    ]
    assert "restores by replay" in report.not_applicable["state_is_strict_json"]
    assert report.passed == [r for r in CHECKS if r not in report.not_applicable]
    with pytest.raises(pytest.skip.Exception, match="restores by replay"):
        check_state_is_strict_json(ReplayedLocalSearch)  # a user's pytest shows a skip


@pytest.mark.parametrize(
    ("cls", "rule"),
    [
        (SeedIgnoring, "different_seed_different_asks"),
        (Forgetful, "checkpoint_between_generations"),
        (OwnGenerator, "state_is_strict_json"),
        (OutOfBox, "asks_in_box"),
    ],
    ids=lambda v: v if isinstance(v, str) else v.name,
)
def test_a_broken_user_optimizer_fails_naming_the_rule(user_optimizers, cls, rule) -> None:
    with pytest.raises(AssertionError, match=f"^{cls.name} breaks '{rule}'"):
        check_optimizer(cls)


def test_each_rule_is_a_function_of_its_own(user_optimizers) -> None:
    with pytest.raises(AssertionError, match="outside \\[0, 1\\]"):
        check_asks_in_box(OutOfBox, population_sizes=[4], dimensions=[2])
    check_asks_in_box(LocalSearch, population_sizes=[4], dimensions=[2])


def test_an_optimizer_no_config_can_name_is_caught() -> None:
    class Hidden(LocalSearch):  # neither registered nor importable as module:Class
        name = "user.hidden"

    with pytest.raises(AssertionError, match="breaks 'found_by_name'.*'package.module:Class'"):
        check_optimizer(Hidden, checks=["found_by_name"])
    with pytest.raises(ValueError, match="unknown check 'no_such_rule'"):
        check_optimizer(LocalSearch, checks=["no_such_rule"])
