"""l2lflow.testing: the optimizee conformance checks pass the built-ins and catch violations."""

from __future__ import annotations

import importlib.util
import os
import textwrap
from pathlib import Path

import pytest

from l2lflow.testing import check_optimizee

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
