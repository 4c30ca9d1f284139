"""Ensemble Kalman filter optimizer (Iglesias et al. 2013; L2L's EnsembleKalmanFilter).

For optimizees that return a vector of outputs ``G(u)`` to match ``targets`` ``y`` (a model
fit, a network's outputs on a batch of inputs): the population is the ensemble, and each
generation moves every member ``u_j`` by the Kalman gain estimated from the ensemble itself,
with no gradient::

    u_j <- u_j + C_uG (C_GG + gamma I)^-1 (y - G(u_j))

where ``C_uG`` and ``C_GG`` are the ensemble's cross- and output covariances. The optimizee
returns the outputs as an array (named by the ``outputs`` option, default ``outputs``) next to
its fitness, and the experiment tells them to the optimizer from the store. Fitness is used
only to pick members for resampling: with ``worst_n > 0`` the ``worst_n`` worst members are
redrawn from a Gaussian fitted to the ``best_n`` best (L2L's ``sample`` with
``pick_method='gaussian'``), which fights the ensemble's collapse.

Failed members (non-finite fitness or outputs) take no part in the covariances and are redrawn
around the successful ones. The ensemble works in unit-box coordinates and is clipped to the
box; the update is affine-invariant, so linear-scale parameters behave as in user units.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from l2lflow.optimizers.base import Optimizer, OptimizerError, as_array, register


@register
class EnsembleKalmanFilter(Optimizer):
    """EnKF inversion: the ensemble is the population, outputs are matched to ``targets``."""

    name = "enkf"
    uses_outputs = True
    default_options: dict[str, Any] = {
        "gamma": 0.01,  # observation noise variance (regularises the gain)
        "targets": 0.0,  # y: a number (broadcast) or one per output
        "outputs": "outputs",  # name of the optimizee's result array holding G(u)
        "mean": 0.5,  # initial ensemble: N(mean, sigma^2) clipped to the box
        "sigma": 0.3,
        "worst_n": 0,  # members redrawn each generation (0: no resampling)
        "best_n": 0,  # ... from a Gaussian around this many best (0: the whole ensemble)
    }

    def _setup(self) -> None:
        o = self.options
        if self.population_size < 2:
            raise OptimizerError("enkf needs population_size >= 2 (an ensemble to estimate a gain)")
        if float(o["gamma"]) < 0:
            raise OptimizerError("optimizer.options.gamma must be >= 0")
        if float(o["sigma"]) <= 0:
            raise OptimizerError("optimizer.options.sigma must be > 0")
        if not isinstance(o["outputs"], str) or not o["outputs"]:
            raise OptimizerError("optimizer.options.outputs must be the name of a result array")
        if not 0 <= int(o["worst_n"]) < self.population_size:
            raise OptimizerError("optimizer.options.worst_n must be in [0, population_size)")
        if not 0 <= int(o["best_n"]) <= self.population_size - int(o["worst_n"]):
            raise OptimizerError(
                "optimizer.options.best_n must be in [0, population_size - worst_n]"
            )
        self.targets = np.atleast_1d(np.asarray(o["targets"], dtype=np.float64))
        if self.targets.ndim != 1 or not np.all(np.isfinite(self.targets)):
            raise OptimizerError("optimizer.options.targets must be a number or a list of numbers")
        mean = np.broadcast_to(np.asarray(o["mean"], dtype=np.float64), (self.dimension,))
        z = self.rng.standard_normal((self.population_size, self.dimension))
        self.ensemble = np.clip(mean + float(o["sigma"]) * z, 0.0, 1.0)
        self._outputs: np.ndarray | None = None

    @property
    def outputs_key(self) -> str:
        return str(self.options["outputs"])

    def _ask(self) -> np.ndarray:
        return self.ensemble

    def _tell(self, x: np.ndarray, loss: np.ndarray) -> None:
        g = self._outputs  # set by Optimizer.tell, failed rows NaN
        assert g is not None
        ok = np.all(np.isfinite(g), axis=1)
        u = x.copy()
        if ok.sum() >= 2:
            if self.targets.size not in (1, g.shape[1]):
                raise OptimizerError(
                    f"optimizer.options.targets has {self.targets.size} values but the "
                    f"optimizee returned {g.shape[1]} outputs"
                )
            y = np.broadcast_to(self.targets, (g.shape[1],))
            uo, go = x[ok], g[ok]
            du, dg = uo - uo.mean(axis=0), go - go.mean(axis=0)
            n = len(uo)
            c_ug = du.T @ dg / n
            c_gg = dg.T @ dg / n
            gain_rhs = np.linalg.solve(
                c_gg + float(self.options["gamma"]) * np.eye(len(y)) + 1e-12 * np.eye(len(y)),
                (y - go).T,
            )
            u[ok] = uo + (c_ug @ gain_rhs).T
        redraw = ~ok
        worst_n = int(self.options["worst_n"])
        if worst_n:
            order = np.argsort(np.where(ok, loss, np.inf), kind="stable")
            redraw[order[-worst_n:]] = True
        if redraw.any() and (~redraw).any():
            keep = np.flatnonzero(~redraw)
            best_n = int(self.options["best_n"])
            if best_n:
                ranked = keep[np.argsort(loss[keep], kind="stable")]
                keep = ranked[:best_n]
            centre, spread = u[keep].mean(axis=0), u[keep].std(axis=0) + 1e-3
            z = self.rng.standard_normal((int(redraw.sum()), self.dimension))
            u[redraw] = centre + spread * z
        self.ensemble = np.clip(u, 0.0, 1.0)
        self._outputs = None

    def _get_state(self) -> dict[str, Any]:
        return {"ensemble": self.ensemble}

    def _set_state(self, state: dict[str, Any]) -> None:
        self.ensemble = as_array(state["ensemble"]).reshape(self.population_size, self.dimension)
