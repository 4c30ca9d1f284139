"""Conformance suite for every registered optimizer (in the spirit of Optuna's sampler tests).

The rules themselves live in :mod:`l2lflow.testing.optimizer` (one public ``check_*`` function
each, the benchmark functions, the ask/tell loop), so that a user's own optimizer is held to the
same contract from the user's tests; this file parametrises them over every built-in.

Every test is parametrised over ``REGISTRY``, so a new optimizer is tested as soon as it is
registered; it only has to add a row to ``QUALITY`` (and declare ``uses_seed = False`` if it draws
no random numbers). Nevergrad optimizers are not registered (they are made by name on demand), so
the suite adds the ``nevergrad:<Name>`` entries of ``NEVERGRAD`` and skips them, with the reason,
when nevergrad is not installed. They restore by replay (``state_dict()`` is ``None``), which the
checkpoint tests exercise; the two tests of the JSON state skip them.
The same holds for the ``optuna:<Sampler>`` entries of ``OPTUNA`` (skipped without optuna); the
Gaussian-process sampler costs about a second per trial on a loaded 2-core machine, so its
entries are in the slow suite, with fewer generations where a test only checks the contract.

Optimizers with ``uses_outputs`` (EnKF) are told each individual's output vector too: the
residuals whose sum of squares is the benchmark (``z`` for the sphere,
``sqrt(z^2 - 10 cos(2 pi z) + 10)`` for Rastrigin, ``(10 (y_i+1 - y_i^2), 1 - y_i)`` for
Rosenbrock), to be matched to the target 0.
NSGA-II, multi-objective, is held here to a single-objective threshold (told one fitness column it
is an elitist GA); its multi-objective quality (ZDT1 hypervolume) is in test_multiobjective.py.

``QUALITY`` is the published table: the best fitness (over all evaluations) that each optimizer
must reach within its budget, on *every* seed in ``QUALITY_SEEDS`` (0, 1, 2). The functions are
the shifted sphere, Rastrigin and Rosenbrock in d=5: ``x`` in the unit box maps to
``z = -5.12 + 10.24 x`` and the optimum sits at ``z = SHIFT``, away from the box centre where
most optimizers start (an unshifted optimum at the starting mean would make the test
meaningless); Rosenbrock uses ``y = 0.4 z + 1`` (its usual box [-2.048, 2.048]). All have
minimum 0. Thresholds leave a margin (about 1.5-2x) over the worst value seen on seeds 0-9
(docs/optimizers.md lists both).
"""

from __future__ import annotations

import importlib.util
from typing import Any

import numpy as np
import pytest

from l2lflow.optimizers import REGISTRY, OptimizerError, get_optimizer_class
from l2lflow.testing import (
    FUNCTIONS,
    Quality,
    check_asks_in_box,
    check_checkpoint_between_ask_and_tell,
    check_checkpoint_between_generations,
    check_different_seed_different_asks,
    check_failed_fitness,
    check_found_by_name,
    check_maximize_is_minimize_of_negative,
    check_misuse_raises,
    check_quality,
    check_same_seed_same_asks,
    check_state_is_strict_json,
    check_unknown_options_refused,
    make,
    run_generations,
)
from l2lflow.testing.optimizer import DIMENSION

# optimizer -> function -> budget and threshold (best fitness reached, lower is better)
QUALITY: dict[str, dict[str, Quality]] = {
    name: {
        f: Quality(30, 32, t)
        for f, t in zip(("sphere", "rastrigin", "rosenbrock"), row, strict=True)
    }
    for name, row in {
        "random": (10.0, 45.0, 150.0),
        # the first 960 points of the 5^5 grid in product order: deterministic 16.2 / 57.9 / 31.5
        "grid": (20.0, 65.0, 35.0),
        "ga": (0.1, 15.0, 8.0),
        "cross_entropy": (0.01, 15.0, 8.0),
        "es": (0.5, 25.0, 8.0),
        "cmaes": (0.1, 30.0, 6.0),
        "nsga2": (0.2, 15.0, 8.0),  # one fitness column: an elitist GA
        "simulated_annealing": (2.5, 40.0, 20.0),
        "parallel_tempering": (2.5, 40.0, 25.0),
        "snes": (0.05, 25.0, 6.0),
        "face": (0.01, 20.0, 8.0),
        "gradient_descent": (0.1, 40.0, 12.0),
        # matches the residual vectors: exact for the sphere's linear residuals
        "enkf": (0.001, 45.0, 0.002),
        # without expression parameters: a (mu+lambda)-ES with a fixed step
        "cgp": (0.5, 30.0, 12.0),
        "nevergrad:TwoPointsDE": (0.5, 25.0, 10.0),
        "nevergrad:PSO": (25.0, 60.0, 350.0),
    }.items()
}
# Optuna's model-based samplers are made for small budgets (and TPE/GP cost grows with the
# trials told), so they are held to thresholds after 10 generations x 16 (GP: 5 x 8)
QUALITY.update(
    {
        name: {
            f: Quality(*budget, t)
            for f, t in zip(("sphere", "rastrigin", "rosenbrock"), row, strict=True)
        }
        for name, budget, row in (
            ("optuna:TPE", (10, 16), (0.8, 45.0, 40.0)),
            ("optuna:CmaEs", (10, 16), (5.0, 50.0, 40.0)),
            ("optuna:NSGAII", (10, 16), (7.0, 45.0, 80.0)),
            ("optuna:NSGAIII", (10, 16), (7.0, 35.0, 95.0)),
            ("optuna:QMC", (10, 16), (16.0, 75.0, 240.0)),
            ("optuna:Random", (10, 16), (20.0, 75.0, 260.0)),
            ("optuna:GP", (5, 8), (0.8, 80.0, 500.0)),
        )
    }
)
#: Nevergrad optimizers run by the suite (any other nevergrad:<Name> works the same way)
NEVERGRAD = ["nevergrad:TwoPointsDE", "nevergrad:PSO"]
HAS_NEVERGRAD = importlib.util.find_spec("nevergrad") is not None
_NO_NG = pytest.mark.skipif(not HAS_NEVERGRAD, reason="nevergrad is not installed")
#: Optuna samplers run by the suite; GP (about a second per trial) only in the slow suite
OPTUNA = ["optuna:TPE", "optuna:CmaEs", "optuna:NSGAII", "optuna:NSGAIII", "optuna:QMC"]
OPTUNA += ["optuna:Random", "optuna:GP"]
EXPENSIVE = {"optuna:GP"}
HAS_OPTUNA = importlib.util.find_spec("optuna") is not None
_NO_OPTUNA = pytest.mark.skipif(not HAS_OPTUNA, reason="optuna is not installed")
NAMES = (
    sorted(REGISTRY)
    + [pytest.param(n, marks=_NO_NG, id=n) for n in NEVERGRAD]
    + [
        pytest.param(n, marks=[_NO_OPTUNA, *([pytest.mark.slow] if n in EXPENSIVE else [])], id=n)
        for n in OPTUNA
    ]
)

#: non-default options whose code paths the defaults do not reach
VARIANTS: list[tuple[str, dict[str, Any]]] = [
    ("cross_entropy", {"full_covariance": True}),
    ("ga", {"n_elite": 0, "crossover_probability": 1.0}),
    ("grid", {"points_per_dimension": 2}),
    *[
        ("simulated_annealing", {"cooling_schedule": s, "n_iterations": 5})
        for s in (
            "logarithmic",
            "linear_multiplicative",
            "quadratic_additive",
            "exponential_additive",
            "trigonometric_additive",
        )
    ],
    ("parallel_tempering", {"cooling_schedule": "linear_additive", "n_iterations": 4}),
    ("snes", {"mirrored_sampling": False, "fitness_shaping": False}),
    *[("gradient_descent", {"update": u}) for u in ("classic", "stochastic", "adamax", "rmsprop")],
    ("enkf", {"worst_n": 2, "best_n": 3, "gamma": 0.0}),
    ("face", {"max_pool_generations": 1, "min_elite": 1}),
    ("cgp", {"reevaluate_parents": True, "n_parents": 2}),
    # one initial step per parameter (unit box), DIMENSION = 3
    ("snes", {"sigma": [0.05, 0.2, 0.4]}),
    ("cross_entropy", {"sigma": [0.05, 0.2, 0.4]}),
    ("face", {"sigma": [0.05, 0.2, 0.4]}),
    ("es", {"noise_std": [0.01, 0.05, 0.1]}),
    ("cmaes", {"sigma0": [0.05, 0.2, 0.4]}),
]

#: ES-family options that take one value per parameter, and a list for DIMENSION = 3
PER_PARAMETER = {
    "snes": "sigma",
    "cross_entropy": "sigma",
    "face": "sigma",
    "es": "noise_std",
    "cmaes": "sigma0",
}


@pytest.mark.parametrize("name", sorted(PER_PARAMETER))
def test_per_parameter_steps_shape_the_first_generation(name: str) -> None:
    key = PER_PARAMETER[name]
    steps = np.array([0.01, 0.04, 0.16])
    x = make(name, population_size=64, **{key: steps.tolist()}).ask()
    spread = x.std(axis=0)
    assert spread[0] < spread[1] < spread[2], spread  # each dimension its own step
    same = make(name, population_size=64, **{key: 0.04}).ask()
    assert np.array_equal(same, make(name, population_size=64, **{key: [0.04] * DIMENSION}).ask())
    with pytest.raises(OptimizerError, match=rf"optimizer.options.{key} must be > 0.*list of 3"):
        make(name, **{key: [0.1, 0.2]})
    with pytest.raises(OptimizerError, match=rf"optimizer.options.{key}"):
        make(name, **{key: [0.1, -0.2, 0.1]})


# ---------------------------------------------------------------------- 1. reproducibility
@pytest.mark.parametrize("name", NAMES)
def test_same_seed_same_asks(name: str) -> None:
    check_same_seed_same_asks(name)


@pytest.mark.parametrize("name", NAMES)
def test_different_seed_different_asks(name: str) -> None:
    check_different_seed_different_asks(name)


# ---------------------------------------------------------------------- 2. checkpoints
@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("k", [0, 1, 4])
def test_checkpoint_between_generations(name: str, k: int) -> None:
    check_checkpoint_between_generations(name, after=[k])


@pytest.mark.parametrize("name", NAMES)
def test_checkpoint_between_ask_and_tell(name: str) -> None:
    check_checkpoint_between_ask_and_tell(name)  # skipped for optimizers restored by replay


@pytest.mark.parametrize(("name", "options"), VARIANTS)
def test_option_variants_checkpoint_and_failures(name: str, options: dict[str, Any]) -> None:
    check_checkpoint_between_generations(name, options, after=[3])
    check_failed_fitness(name, options)


# ---------------------------------------------------------------------- 3. shape and box
@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("pop", [1, 2, 3, 7, 16])
@pytest.mark.parametrize("dim", [1, 4])
def test_asks_in_box_with_right_shape(name: str, pop: int, dim: int) -> None:
    short = name in EXPENSIVE
    check_asks_in_box(
        name,
        population_sizes=[pop],
        dimensions=[dim],
        generations=4 if short else 12,
        push_generations=2 if short else 8,
    )


# ---------------------------------------------------------------------- 4. failures
@pytest.mark.parametrize("name", NAMES)
def test_nan_and_inf_fitness(name: str) -> None:
    check_failed_fitness(name)


# ---------------------------------------------------------------------- 5. direction
@pytest.mark.parametrize("name", NAMES)
def test_maximize_is_minimize_of_negative(name: str) -> None:
    check_maximize_is_minimize_of_negative(name)


# ---------------------------------------------------------------------- 6. quality
@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("function", sorted(FUNCTIONS))
def test_quality(name: str, function: str) -> None:
    if name not in QUALITY or function not in QUALITY[name]:
        pytest.fail(f"add {name!r} / {function!r} to the QUALITY table of {__file__}")
    check_quality(name, function, QUALITY[name][function])


# ---------------------------------------------------------------------- 7. configuration
@pytest.mark.parametrize("name", NAMES)
def test_unknown_option_names_allowed_ones(name: str) -> None:
    check_unknown_options_refused(name)


@pytest.mark.parametrize("name", NAMES)
def test_registered_under_its_name(name: str) -> None:
    check_found_by_name(name)


def test_unknown_optimizer_lists_known_ones() -> None:
    with pytest.raises(OptimizerError) as err:
        get_optimizer_class("nope")
    assert "nope" in str(err.value)
    assert all(name in str(err.value) for name in REGISTRY)


# ---------------------------------------------------------------------- 8. plain state
@pytest.mark.parametrize("name", NAMES)
def test_state_is_strict_json(name: str) -> None:
    check_state_is_strict_json(name)  # skipped for optimizers restored by replay


# ---------------------------------------------------------------------- misuse
@pytest.mark.parametrize("name", NAMES)
def test_misuse_raises(name: str) -> None:
    check_misuse_raises(name)


# ---------------------------------------------------------------------- grid specifics
def test_grid_walks_the_whole_grid_then_wraps() -> None:
    opt = get_optimizer_class("grid")(2, 4, 0, grid_points=[3, None], points_per_dimension=2)
    asks, _ = run_generations(opt, 2)
    points = np.vstack(asks)[:6]
    expected = [((i + 0.5) / 3, (j + 0.5) / 2) for i in range(3) for j in range(2)]
    assert np.allclose(points, expected)
    assert np.array_equal(np.vstack(asks)[6:], points[:2])  # wrapped around
    assert np.array_equal(np.floor(points[:, 0] * 3), [0, 0, 1, 1, 2, 2])  # bins map to ints
