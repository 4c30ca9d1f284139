"""Benchmark functions as optimizees: cheap, known optima, for tests and for tuning optimizers.

Each takes the individual's parameters (any names; their values form the point ``x`` in the
order of the parameter space) and optional Gaussian ``noise`` on the result, drawn from the
evaluation's seed so that noisy results are reproducible.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from l2lflow.optimizees.base import register_optimizee


def _point(params: dict[str, Any]) -> np.ndarray:
    return np.fromiter((float(v) for v in params.values()), dtype=np.float64, count=len(params))


def _noisy(value: float, seed: int, noise: float) -> float:
    if noise:
        value += float(np.random.default_rng(seed).normal(0.0, noise))
    return value


@register_optimizee("sphere")
def sphere(params: dict[str, Any], seed: int, noise: float = 0.0) -> float:
    """Sphere: sum of x_i^2; minimum 0 at the origin."""
    x = _point(params)
    return _noisy(float(np.dot(x, x)), seed, noise)


@register_optimizee("rastrigin")
def rastrigin(params: dict[str, Any], seed: int, noise: float = 0.0) -> float:
    """Rastrigin: 10 d + sum(x_i^2 - 10 cos(2 pi x_i)); many local minima, global 0 at 0."""
    x = _point(params)
    value = 10.0 * x.size + float(np.sum(x * x - 10.0 * np.cos(2.0 * math.pi * x)))
    return _noisy(value, seed, noise)


@register_optimizee("rosenbrock")
def rosenbrock(params: dict[str, Any], seed: int, noise: float = 0.0) -> float:
    """Rosenbrock: sum 100 (x_{i+1} - x_i^2)^2 + (1 - x_i)^2; minimum 0 at (1, ..., 1)."""
    x = _point(params)
    value = float(np.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1.0 - x[:-1]) ** 2))
    return _noisy(value, seed, noise)


@register_optimizee("ackley")
def ackley(params: dict[str, Any], seed: int, noise: float = 0.0) -> float:
    """Ackley: a nearly flat outer region with a deep hole; minimum 0 at the origin."""
    x = _point(params)
    d = x.size
    value = (
        -20.0 * math.exp(-0.2 * math.sqrt(float(np.dot(x, x)) / d))
        - math.exp(float(np.sum(np.cos(2.0 * math.pi * x))) / d)
        + 20.0
        + math.e
    )
    return _noisy(value, seed, noise)


@register_optimizee("zdt1")
def zdt1(params: dict[str, Any], seed: int, noise: float = 0.0) -> dict[str, float]:
    """ZDT1 (Zitzler, Deb, Thiele 2000): two objectives, convex Pareto front f2 = 1 - sqrt(f1).

    Parameters in [0, 1]; returns ``f1``, ``f2`` (both minimised) and ``fitness`` = f1 + f2.
    """
    x = np.clip(_point(params), 0.0, 1.0)
    f1 = float(x[0])
    g = 1.0 + 9.0 * float(np.mean(x[1:])) if x.size > 1 else 1.0
    f2 = g * (1.0 - math.sqrt(f1 / g))
    return {"f1": _noisy(f1, seed, noise), "f2": f2, "fitness": f1 + f2}


@register_optimizee("linear_fit")
def linear_fit(
    params: dict[str, Any], seed: int, n_samples: int = 20, data_seed: int = 0, noise: float = 0.0
) -> dict[str, Any]:
    """Fit a linear model ``y = A w`` to data: the parameters are the weights ``w``.

    The design ``A`` (``n_samples`` x d, standard normal) and the true weights
    ``w* = linspace(-1, 1, d)`` come from ``data_seed``; ``y = A w*`` plus optional noise. Returns
    ``outputs`` = the residuals ``A w - y`` (a vector: what the ensemble Kalman filter matches
    to its targets, 0) and ``fitness`` = their mean square (minimum 0 at ``w*`` without noise).
    """
    w = _point(params)
    rng = np.random.default_rng(data_seed)
    design = rng.standard_normal((int(n_samples), w.size))
    y = design @ np.linspace(-1.0, 1.0, w.size)
    if noise:
        y = y + rng.normal(0.0, noise, y.shape)
    residuals = design @ w - y
    return {"fitness": float(np.mean(residuals**2)), "outputs": residuals}
