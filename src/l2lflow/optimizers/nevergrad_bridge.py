"""Any Nevergrad optimizer by name: ``nevergrad:<Name>`` (e.g. ``nevergrad:NGOpt``).

The bridge drives Nevergrad's ask/tell API (``optimizer.ask()`` once per individual, then
``optimizer.tell(candidate, loss)`` for each) on an ``ng.p.Array`` bounded to the unit box,
with ``num_workers = population_size`` so that batch-aware optimizers know a whole generation
is evaluated in parallel. All randomness comes from the parametrization's
``numpy.random.RandomState``, seeded from the optimizer seed, so a run is reproducible.

Nevergrad's own checkpoint is a pickle, which a results store never holds: :meth:`_get_state`
returns ``None`` and the experiment restores the optimizer by *replay*, asking and telling the
generations recorded in the store again with the same seed (the conformance suite checks that
this continues bit-identically). Replay costs the optimizer's own time for every past
generation, which is small next to the evaluations.

The classes are made on demand (:func:`nevergrad_class`) instead of registering all of
Nevergrad's ~500 optimizers; the name is checked against ``nevergrad.optimizers.registry``.
"""

from __future__ import annotations

import warnings
from typing import Any, ClassVar

import numpy as np

from l2lflow.optimizers.base import FailureFill, Optimizer, OptimizerError, bridge_class

PREFIX = "nevergrad:"


def _registry() -> Any:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import nevergrad
    except ImportError:
        raise OptimizerError(
            "optimizer.name: nevergrad optimizers need the nevergrad package "
            "(pip install 'l2lflow[nevergrad]')"
        ) from None
    return nevergrad.optimizers.registry


def nevergrad_class(name: str) -> type[Optimizer]:
    """The optimizer class for ``nevergrad:<Name>``, checked against Nevergrad's registry."""
    ng_name = name[len(PREFIX) :]
    return bridge_class(
        name,
        PREFIX,
        NevergradOptimizer,
        _registry(),
        "see nevergrad.optimizers.registry, e.g. nevergrad:NGOpt",
        ng_name=ng_name,
    )


class NevergradOptimizer(Optimizer):
    """Base of the ``nevergrad:<Name>`` classes; restores by replay."""

    ng_name: ClassVar[str] = ""
    default_options: dict[str, Any] = {
        # total evaluations Nevergrad plans for (NGOpt chooses its algorithm by it);
        # None: 100 generations. Set it to generations x population_size.
        "budget": None,
        "init": 0.5,  # initial point: a number or one per dimension
        "sigma": None,  # initial mutation scale in unit-box coordinates; None: Nevergrad's
    }

    def _setup(self) -> None:
        registry = _registry()
        o = self.options
        budget = o["budget"]
        if budget is None:
            budget = 100 * self.population_size
        if not isinstance(budget, int) or isinstance(budget, bool) or budget < 1:
            raise OptimizerError(
                "optimizer.options.budget must be a positive integer (generations x population)"
            )
        import nevergrad as ng

        init = np.broadcast_to(np.asarray(o["init"], dtype=np.float64), (self.dimension,))
        if not np.all((init >= 0) & (init <= 1)):
            raise OptimizerError("optimizer.options.init must be in [0, 1]")
        param = ng.p.Array(init=init.copy(), lower=0.0, upper=1.0)
        if o["sigma"] is not None:
            if float(o["sigma"]) <= 0:
                raise OptimizerError("optimizer.options.sigma must be > 0")
            param.set_mutation(sigma=float(o["sigma"]))
        # derived from our seed, and never numpy's global generator
        param.random_state = np.random.RandomState(int(self.rng.integers(2**32)))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.ng = registry[self.ng_name](
                parametrization=param, budget=budget, num_workers=self.population_size
            )
        self._candidates: list[Any] | None = None
        self._fill = FailureFill()

    def _ask(self) -> np.ndarray:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                self._candidates = [self.ng.ask() for _ in range(self.population_size)]
        except Exception as exc:  # noqa: BLE001 - name the optimizer, keep the cause
            raise OptimizerError(
                f"{self.name} failed in Nevergrad's ask(): {type(exc).__name__}: {exc}"
            ) from exc
        return np.array([np.asarray(c.value, dtype=np.float64) for c in self._candidates])

    def _tell(self, x: np.ndarray, loss: np.ndarray) -> None:
        assert self._candidates is not None
        loss = self._fill(loss)  # failures: worse than the worst success so far, but finite
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for candidate, value in zip(self._candidates, loss, strict=True):
                self.ng.tell(candidate, float(value))
        self._candidates = None

    def _get_state(self) -> None:
        return None  # a pickle would be needed: restore by replay
