"""Unit tests of the parameter space (unit box -> typed parameters) and of the seed derivation."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest

from l2lflow import seeds
from l2lflow.space import Parameter, ParameterSpace

#: u values spread evenly over [0, 1): bin centres of N equal bins (exactly uniform)
N = 6000
UNIFORM = (np.arange(N) + 0.5) / N


def f(low: float, high: float, scale: str = "linear") -> Parameter:
    return Parameter("x", "float", low=low, high=high, scale=scale)


# ---------------------------------------------------------------- floats
@pytest.mark.parametrize(
    ("low", "high"), [(-5.12, 5.12), (0.0, 1.0), (-1.0, 1.0), (0.1, 0.3), (10.0, 20.0)]
)
def test_linear_float_hits_bounds(low: float, high: float) -> None:
    values = f(low, high).decode(np.array([0.0, 0.5, 1.0]))
    assert values.dtype == np.float64
    assert values[0] == low and values[2] == high
    assert values[1] == pytest.approx((low + high) / 2, rel=1e-12, abs=1e-12)


@pytest.mark.parametrize(("low", "high"), [(1e-3, 1e3), (0.1, 7.3), (1e-5, 0.3), (2.0, 64.0)])
def test_log_float_hits_bounds(low: float, high: float) -> None:
    values = f(low, high, "log").decode(np.array([0.0, 0.5, 1.0]))
    assert values.dtype == np.float64
    assert values[0] == pytest.approx(low, rel=1e-12)
    assert values[2] == pytest.approx(high, rel=1e-12)
    assert values[1] == pytest.approx(math.sqrt(low * high), rel=1e-12)  # geometric midpoint


def test_log_float_is_uniform_in_log() -> None:
    values = f(1e-3, 1e3, "log").decode(UNIFORM)
    counts = np.histogram(np.log10(values), bins=6, range=(-3, 3))[0]
    assert (counts == N // 6).all()


def test_float_bounds_exact_and_never_outside() -> None:
    rng = np.random.default_rng(0)
    for _ in range(2000):
        low, high = np.sort(rng.uniform(-100, 100, 2))
        lo_log, hi_log = np.sort(np.exp(rng.uniform(-12, 12, 2)))
        for p in (f(low, high), f(lo_log, hi_log, "log")):
            values = p.decode(np.array([0.0, 1.0]))
            assert values[0] == p.low and values[1] == p.high, (p, values.tolist())
            inner = p.decode(rng.uniform(size=100))
            assert (inner >= p.low).all() and (inner <= p.high).all(), p


def test_decode_clips_outside_unit_box() -> None:
    p = f(-2.0, 3.0)
    assert p.decode(np.array([-0.5, 1.5])).tolist() == [-2.0, 3.0]
    q = Parameter("n", "int", low=1, high=4)
    assert q.decode(np.array([-1.0, 2.0])).tolist() == [1, 4]


# ---------------------------------------------------------------- ints
@pytest.mark.parametrize(("low", "high"), [(-2, 3), (0, 1), (1, 10), (5, 6), (-7, -3)])
def test_int_every_value_reachable_and_equally_likely(low: int, high: int) -> None:
    p = Parameter("n", "int", low=float(low), high=float(high))
    assert p.grid_points == high - low + 1
    values = p.decode(UNIFORM)
    assert values.dtype == np.int64
    counts = Counter(values.tolist())
    assert sorted(counts) == list(range(low, high + 1))
    assert len(set(counts.values())) == 1, counts  # N is divisible by every bin count here
    ends = p.decode(np.array([0.0, 1.0]))
    assert ends.tolist() == [low, high]


def test_int_bins_are_equal_width() -> None:
    """u in [k/n, (k+1)/n) gives the k-th integer: no half-width bins at the ends."""
    p = Parameter("n", "int", low=0, high=3)
    edges = np.array([0.0, 0.2499, 0.25, 0.4999, 0.5, 0.7499, 0.75, 0.9999, 1.0])
    assert p.decode(edges).tolist() == [0, 0, 1, 1, 2, 2, 3, 3, 3]


def test_int_log_scale_reaches_every_integer() -> None:
    p = Parameter("n", "int", low=1, high=100, scale="log")
    assert p.grid_points is None
    values = p.decode(np.linspace(0.0, 1.0, 200_001))
    assert values.dtype == np.int64
    assert set(values.tolist()) == set(range(1, 101))
    assert p.decode(np.array([0.0, 1.0])).tolist() == [1, 100]


# ---------------------------------------------------------------- choices
@pytest.mark.parametrize(
    ("choices", "dtype"),
    [
        (("stdp", "static", "tsodyks"), "<U7"),
        ((True, False), "bool"),
        ((1, 2, 4, 8), "int64"),
        ((0.5, 1, 2.5), "float64"),
        (("a",), "<U1"),
    ],
)
def test_choice_every_choice_reachable_and_equally_likely(choices: tuple, dtype: str) -> None:
    p = Parameter("c", "choice", choices=choices)
    assert p.grid_points == len(choices)
    assert p.dtype == dtype
    values = p.decode(UNIFORM)
    assert values.dtype == np.dtype(dtype)
    counts = Counter(values.tolist())
    assert set(counts) == set(choices)
    assert set(counts.values()) == {N // len(choices)}
    assert values[0] == choices[0]
    assert p.decode(np.array([1.0]))[0] == choices[-1]


def test_float_and_int_dtypes_and_grid_points() -> None:
    assert f(0, 1).dtype == "float64" and f(0, 1).grid_points is None
    assert f(1, 10, "log").grid_points is None
    assert Parameter("n", "int", low=0, high=9).dtype == "int64"


# ---------------------------------------------------------------- the space
SPACE = {
    "tau": {"low": 1, "high": 100, "scale": "log"},
    "w": {"low": -1.0, "high": 1.0},
    "n": {"type": "int", "low": 2, "high": 5},
    "rule": {"type": "choice", "choices": ["stdp", "static"]},
    "plastic": {"type": "choice", "choices": [True, False]},
}


def test_space_from_config_keeps_order_and_kinds() -> None:
    space = ParameterSpace.from_config(SPACE)
    assert space.names == list(SPACE)
    assert space.dimension == 5
    assert space.grid_points == [None, None, 4, 2, 2]
    assert [p.kind for p in space.parameters] == ["float", "float", "int", "choice", "choice"]


def test_space_decode_generation_and_individual() -> None:
    space = ParameterSpace.from_config(SPACE)
    x = np.array([[0.0] * 5, [1.0] * 5, [0.5] * 5])
    values = space.decode(x)
    assert set(values) == set(SPACE)
    assert all(len(column) == 3 for column in values.values())
    first = ParameterSpace.individual(values, 0)
    last = ParameterSpace.individual(values, 1)
    assert first["tau"] == pytest.approx(1.0) and last["tau"] == pytest.approx(100.0)
    assert (first["w"], last["w"]) == (-1.0, 1.0)
    assert (first["n"], last["n"]) == (2, 5)
    assert (first["rule"], last["rule"]) == ("stdp", "static")
    assert (first["plastic"], last["plastic"]) == (True, False)
    # plain Python values: what an optimizee gets (and what JSON can hold)
    types = {name: type(value) for name, value in first.items()}
    assert types == {"tau": float, "w": float, "n": int, "rule": str, "plastic": bool}


def test_space_decode_one_point() -> None:
    space = ParameterSpace.from_config({"x": {"low": 0, "high": 10}})
    assert space.decode(np.array([0.3]))["x"].tolist() == pytest.approx([3.0])


# ---------------------------------------------------------------- seeds
def test_seeds_are_deterministic() -> None:
    assert seeds.evaluation_seed(42, 3, 7) == seeds.evaluation_seed(42, 3, 7)
    assert seeds.task_seed(42, 3) == seeds.task_seed(42, 3)
    assert seeds.optimizer_seed(42) == seeds.optimizer_seed(42)
    assert seeds.meta_test_seed(42) == seeds.meta_test_seed(42)


def test_seeds_are_stable_across_releases() -> None:
    """Pinned values: a change here changes every published result (do it on purpose only)."""
    assert seeds.evaluation_seed(42, 0, 0) == 4023566668781233738
    assert seeds.evaluation_seed(42, 3, 7) == 1211516123133314162
    assert seeds.optimizer_seed(42) == 67091864417934941
    assert seeds.task_seed(42, 3) == 6311617037592823905
    assert seeds.meta_test_seed(42) == 1873989265477067874


def test_evaluation_seeds_distinct_across_generation_and_individual() -> None:
    grid = [seeds.evaluation_seed(7, g, i) for g in range(30) for i in range(40)]
    assert len(set(grid)) == len(grid)
    # (generation, individual) is ordered: (1, 2) is not (2, 1)
    assert seeds.evaluation_seed(7, 1, 2) != seeds.evaluation_seed(7, 2, 1)
    # other experiment seeds give other streams
    assert seeds.evaluation_seed(7, 0, 0) != seeds.evaluation_seed(8, 0, 0)


def test_seed_kinds_never_collide() -> None:
    """Evaluation, optimizer, task and meta-test seeds come from disjoint streams."""
    everything = (
        [seeds.evaluation_seed(3, g, i) for g in range(10) for i in range(10)]
        + [seeds.task_seed(3, g) for g in range(10)]
        + [seeds.optimizer_seed(3), seeds.meta_test_seed(3)]
    )
    assert len(set(everything)) == len(everything)
    assert seeds.task_seed(3, 0) != seeds.evaluation_seed(3, 0, 0)


def test_evaluation_seeds_array_matches_scalar() -> None:
    array = seeds.evaluation_seeds(42, 5, 16)
    assert array.dtype == np.int64 and array.shape == (16,)
    assert array.tolist() == [seeds.evaluation_seed(42, 5, i) for i in range(16)]


@pytest.mark.parametrize("experiment_seed", [0, 1, 2**31 - 1, 2**32, 2**63 - 1, 2**64 + 5])
def test_seeds_are_int64_safe(experiment_seed: int) -> None:
    limit = np.iinfo(np.int64).max
    values = [
        seeds.evaluation_seed(experiment_seed, g, i) for g in (0, 1, 10**6) for i in (0, 1, 10**6)
    ]
    values += [
        seeds.optimizer_seed(experiment_seed),
        seeds.task_seed(experiment_seed, 10**6),
        seeds.meta_test_seed(experiment_seed),
    ]
    for value in values:
        assert type(value) is int
        assert 0 <= value <= limit
    assert np.array(values, dtype=np.int64).tolist() == values
    np.random.default_rng(values[0])  # numpy's generators take them as they are
