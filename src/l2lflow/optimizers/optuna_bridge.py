"""Optuna's samplers by name: ``optuna:<Sampler>`` (``optuna:TPE``, ``optuna:GP``, ...).

Model-based samplers (TPE, Gaussian-process Bayesian optimisation) reach good points in far
fewer evaluations than population-based optimizers, which matters when one evaluation is
minutes of simulation. The bridge drives Optuna's ask-and-tell interface on an in-memory study:
a generation is ``study.ask()`` ``population_size`` times (the whole batch asked before any is
told, so TPE's constant liar and GP's treatment of running trials see a parallel batch), then
``study.tell(trial, loss)`` for each. Every parameter is ``FloatDistribution(0, 1)``; the
experiment's parameter space maps the unit box to the user's parameters as for every optimizer.

The sampler is seeded from the optimizer seed, so a run is reproducible. Optuna's state (the
study's trials, the samplers' models) would have to be pickled, which a results store never
holds: :meth:`_get_state` returns ``None`` and the experiment restores the optimizer by *replay*
of the stored generations with the same seed (``l2lflow.optimizers.replay``), as for Nevergrad.
Replay costs the sampler's own time for every past generation (for GP about a second per trial
on a loaded 2-core machine), small next to minutes-long evaluations.

Failed evaluations (infinite or NaN loss) are told as a finite loss worse than every success
so far (:class:`~l2lflow.optimizers.base.FailureFill`), so a sampler moves away from regions
that fail instead of ignoring them, as Optuna does with failed trials.
"""

from __future__ import annotations

import inspect
import warnings
from typing import Any, ClassVar

import numpy as np

from l2lflow.optimizers.base import FailureFill, Optimizer, OptimizerError, bridge_class

PREFIX = "optuna:"

#: the name after ``optuna:`` -> Optuna sampler class name
SAMPLERS: dict[str, str] = {
    "TPE": "TPESampler",
    "GP": "GPSampler",
    "CmaEs": "CmaEsSampler",
    "NSGAII": "NSGAIISampler",
    "NSGAIII": "NSGAIIISampler",
    "QMC": "QMCSampler",
    "Random": "RandomSampler",
}

#: sampler arguments the bridge sets itself (the user cannot override them)
_SET_BY_BRIDGE = {"seed", "population_size", "popsize"}


def _optuna() -> Any:
    try:
        import optuna
    except ImportError:
        raise OptimizerError(
            "optimizer.name: optuna samplers need the optuna package "
            "(pip install 'l2lflow[optuna]')"
        ) from None
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    return optuna


def optuna_class(name: str) -> type[Optimizer]:
    """The optimizer class for ``optuna:<Sampler>`` (one of :data:`SAMPLERS`)."""
    return bridge_class(
        name,
        PREFIX,
        OptunaOptimizer,
        SAMPLERS,
        f"known: {', '.join(PREFIX + s for s in SAMPLERS)}",
        sampler_name=SAMPLERS.get(name[len(PREFIX) :], ""),
    )


class OptunaOptimizer(Optimizer):
    """Base of the ``optuna:<Sampler>`` classes; restores by replay."""

    sampler_name: ClassVar[str] = ""
    default_options: dict[str, Any] = {
        # keyword arguments of the Optuna sampler, e.g. {n_startup_trials: 8} for TPE and GP,
        # {sigma0: 0.2} for CmaEs, {multivariate: true} for TPE; seed and population size are
        # set by l2lflow
        "sampler_options": {},
    }

    def _setup(self) -> None:
        optuna = _optuna()
        sampler_cls = getattr(optuna.samplers, self.sampler_name)
        given = self.options["sampler_options"] or {}
        if not isinstance(given, dict):
            raise OptimizerError("optimizer.options.sampler_options must be a mapping")
        signature = inspect.signature(sampler_cls.__init__).parameters
        accepted = set(signature) - {"self"}
        allowed = sorted(accepted - _SET_BY_BRIDGE)
        for key, value in given.items():
            if key not in allowed:
                raise OptimizerError(
                    f"optimizer.options.sampler_options.{key}: not an option of optuna's "
                    f"{self.sampler_name} that l2lflow passes on (allowed: {', '.join(allowed)})"
                )
            # Optuna checks some types only when it samples: refuse them before the run
            default = signature[key].default
            for kind, ok in ((bool, (bool,)), (int, (int,)), (float, (int, float))):
                if isinstance(default, kind) and not (
                    isinstance(value, ok) and (kind is bool or not isinstance(value, bool))
                ):
                    raise OptimizerError(
                        f"optimizer.options.sampler_options.{key}: must be a {kind.__name__} "
                        f"like its default {default!r} (got {value!r})"
                    )
                if isinstance(default, kind):
                    break
        kwargs: dict[str, Any] = {"seed": int(self.rng.integers(2**32))}
        if "population_size" in accepted:  # NSGA-II/III: one Optuna generation = ours
            if self.population_size < 2:
                raise OptimizerError(f"{self.name} needs population_size >= 2")
            kwargs["population_size"] = self.population_size
        if "popsize" in accepted:  # CMA-ES
            if self.population_size < 2:
                raise OptimizerError(f"{self.name} needs population_size >= 2")
            kwargs["popsize"] = self.population_size
        if self.sampler_name == "QMCSampler":
            kwargs["scramble"] = True  # otherwise every seed gives the same Sobol points
        kwargs.update(given)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                sampler = sampler_cls(**kwargs)
        except (TypeError, ValueError) as exc:
            raise OptimizerError(
                f"optimizer.options.sampler_options: optuna's {self.sampler_name} refused "
                f"them: {exc}"
            ) from None
        self.study = optuna.create_study(
            sampler=sampler, storage=optuna.storages.InMemoryStorage(), direction="minimize"
        )
        self.distributions = {
            f"x{i}": optuna.distributions.FloatDistribution(0.0, 1.0) for i in range(self.dimension)
        }
        self._trials: list[Any] | None = None
        self._fill = FailureFill()

    def _ask(self) -> np.ndarray:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                self._trials = [
                    self.study.ask(self.distributions) for _ in range(self.population_size)
                ]
        except Exception as exc:  # noqa: BLE001 - name the optimizer, keep the cause
            raise OptimizerError(
                f"{self.name} failed in Optuna's ask(): {type(exc).__name__}: {exc}"
            ) from exc
        return np.array(
            [[t.params[k] for k in self.distributions] for t in self._trials], dtype=np.float64
        )

    def _tell(self, x: np.ndarray, loss: np.ndarray) -> None:
        assert self._trials is not None
        loss = self._fill(loss)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for trial, value in zip(self._trials, loss, strict=True):
                self.study.tell(trial, float(value))
        self._trials = None

    def _get_state(self) -> None:
        return None  # a pickle would be needed: restore by replay
