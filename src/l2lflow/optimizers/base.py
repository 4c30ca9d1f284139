"""The ask/tell contract every outer-loop optimizer follows.

Modelled on pycma's ``OOOptimizer`` and Nevergrad: the public :meth:`Optimizer.ask` and
:meth:`Optimizer.tell` do the bookkeeping that every optimizer needs (shape checks, clipping to
the unit box, turning maximisation and NaN into a loss to minimise, the RNG), and subclasses only
write the private ``_ask`` / ``_tell`` / ``_get_state`` / ``_set_state`` hooks.

Every optimizer works in the unit box ``[0, 1]^d``; :class:`l2lflow.space.ParameterSpace` maps
that box to the user's parameters (bounds, log scale, integers, choices). Its state is plain data
(JSON-able dicts, lists, numbers) so that a results store never holds a pickle. An optimizer that
cannot express its state as plain data returns ``None`` from :meth:`Optimizer.state_dict`, and
the experiment restores it by *replay*: a fresh optimizer with the same seed is asked and told
the generations recorded in the store again (:func:`replay`).
"""

from __future__ import annotations

import difflib
import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from typing import Any, ClassVar

import numpy as np

#: name -> optimizer class; filled by :func:`register`.
REGISTRY: dict[str, type[Optimizer]] = {}


def register(cls: type[Optimizer]) -> type[Optimizer]:
    """Class decorator: make an optimizer available by its ``name`` in experiment configs."""
    if not getattr(cls, "name", None):
        raise TypeError(f"{cls.__name__} needs a class attribute 'name'")
    if cls.name in REGISTRY and REGISTRY[cls.name] is not cls:
        raise ValueError(f"optimizer name {cls.name!r} is registered twice")
    REGISTRY[cls.name] = cls
    return cls


class OptimizerError(ValueError):
    """A wrong optimizer option or a broken ask/tell sequence."""


class Optimizer(ABC):
    """Base class of all outer-loop optimizers.

    Parameters
    ----------
    dimension:
        Number of parameters (the unit box's dimension).
    population_size:
        Individuals per generation; :meth:`ask` returns exactly this many rows.
    seed:
        Seed of the optimizer's own random generator (derived from the experiment seed).
    direction:
        ``"minimize"`` or ``"maximize"`` the fitness.
    grid_points:
        Per dimension, how many distinct values that parameter has (``None`` for continuous).
        Grid search uses it; other optimizers may ignore it.
    expressions:
        ``(first dimension, ExpressionSpec)`` of each expression parameter: its genes occupy
        the next ``genome_length`` dimensions (see :mod:`l2lflow.space`). The ``cgp`` optimizer
        mutates them as genomes; the others search them like choices.
    options:
        The optimizer's own options from the config (``optimizer.options``).
    """

    name: ClassVar[str] = ""
    #: told a matrix (population, objectives) instead of one fitness per individual
    multi_objective: ClassVar[bool] = False
    #: told each individual's output vector too (``tell(x, fitness, outputs=...)``), e.g. EnKF;
    #: the experiment reads it from the store array named by :attr:`outputs_key`
    uses_outputs: ClassVar[bool] = False
    #: whether the asks depend on the seed (False for a deterministic search such as the grid);
    #: the conformance suite then requires different seeds to give different asks, or the same
    #: ones (:func:`l2lflow.testing.check_different_seed_different_asks`)
    uses_seed: ClassVar[bool] = True
    #: option name -> default; unknown options are rejected with the list of allowed ones.
    default_options: ClassVar[dict[str, Any]] = {}

    def __init__(
        self,
        dimension: int,
        population_size: int,
        seed: int,
        direction: str = "minimize",
        grid_points: list[int | None] | None = None,
        expressions: list[tuple[int, Any]] | None = None,
        **options: Any,
    ) -> None:
        if dimension < 1:
            raise OptimizerError("the parameter space needs at least one parameter")
        if population_size < 1:
            raise OptimizerError("population_size must be >= 1")
        if direction not in ("minimize", "maximize"):
            raise OptimizerError(f"direction must be 'minimize' or 'maximize', not {direction!r}")
        unknown = sorted(set(options) - set(self.default_options))
        if unknown:
            allowed = ", ".join(sorted(self.default_options)) or "none"
            raise OptimizerError(
                f"optimizer.options.{unknown[0]}: unknown option of {self.name!r} (allowed: {allowed})"
            )
        self.dimension = int(dimension)
        self.population_size = int(population_size)
        self.seed = int(seed)
        self.direction = direction
        self.grid_points = list(grid_points) if grid_points is not None else [None] * dimension
        self.expressions = list(expressions or [])
        self.options = {**self.default_options, **options}
        self.rng = np.random.Generator(np.random.PCG64(self.seed))
        #: generations told so far
        self.generation = 0
        self._pending: np.ndarray | None = None
        self._setup()

    # ------------------------------------------------------------------ public contract
    def ask(self) -> np.ndarray:
        """Propose the next generation: an array ``(population_size, dimension)`` in ``[0, 1]``."""
        if self._pending is not None:
            raise OptimizerError("ask() called twice without tell()")
        x = np.asarray(self._ask(), dtype=np.float64)
        if x.shape != (self.population_size, self.dimension):
            raise OptimizerError(
                f"{self.name}._ask returned shape {x.shape}, "
                f"expected {(self.population_size, self.dimension)}"
            )
        if not np.all(np.isfinite(x)):
            # np.clip keeps NaN: it would reach the evaluations and make tell() unmatchable
            raise OptimizerError(f"{self.name}._ask returned non-finite values")
        x = np.clip(x, 0.0, 1.0)
        self._pending = x
        return x.copy()

    def tell(
        self, x: np.ndarray, fitness: Iterable[float], outputs: np.ndarray | None = None
    ) -> None:
        """Report the fitness of the individuals from the last :meth:`ask`.

        NaN and infinite fitness are treated as the worst possible value. ``outputs``
        ``(population_size, m)`` is required by optimizers with :attr:`uses_outputs` (and
        ignored by the others); a row with a non-finite value or a non-finite fitness marks a
        failed individual.
        """
        if self._pending is None:
            raise OptimizerError("tell() called without ask()")
        x = np.asarray(x, dtype=np.float64)
        if x.shape != self._pending.shape or not np.array_equal(x, self._pending):
            raise OptimizerError("tell() got other individuals than the last ask() returned")
        f = np.asarray(list(fitness), dtype=np.float64)
        if self.multi_objective and f.ndim == 2 and f.shape[0] == self.population_size:
            pass  # one column per objective, each oriented like ``direction``
        elif f.shape != (self.population_size,):
            raise OptimizerError(
                f"tell() needs {self.population_size} fitness values, got {f.shape}"
            )
        loss = f if self.direction == "minimize" else -f
        loss = np.where(np.isfinite(loss), loss, np.inf)
        if self.uses_outputs:
            if outputs is None:
                raise OptimizerError(
                    f"{self.name} needs the individuals' outputs: tell(x, fitness, outputs=...)"
                )
            out = np.asarray(outputs, dtype=np.float64)
            if out.ndim == 1:
                out = out[:, None]
            if out.ndim != 2 or out.shape[0] != self.population_size:
                raise OptimizerError(
                    f"tell() needs outputs of shape ({self.population_size}, m), got {out.shape}"
                )
            failed = ~np.all(np.isfinite(out), axis=1) | ~np.isfinite(loss[: len(out)])
            self._outputs = np.where(failed[:, None], np.nan, out)
        self._tell(x, loss)
        self._pending = None
        self.generation += 1

    def state_dict(self) -> dict[str, Any] | None:
        """The whole state as plain data, or ``None`` if this optimizer restores by replay."""
        own = self._get_state()
        if own is None:
            return None
        return {
            "name": self.name,
            "generation": self.generation,
            "rng": _plain(self.rng.bit_generator.state),
            "pending": None if self._pending is None else self._pending.tolist(),
            "state": _plain(own),
        }

    def search_state(self) -> dict[str, Any] | None:
        """The state people look at (search mean, step sizes, ...) as plain data; by default
        the checkpointed state, for optimizers that restore by replay their own summary."""
        own = self._get_state()
        return None if own is None else _plain(own)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned (on an optimizer built with the same arguments)."""
        if state.get("name") != self.name:
            raise OptimizerError(
                f"checkpoint is of optimizer {state.get('name')!r}, not {self.name!r}"
            )
        self.generation = int(state["generation"])
        self.rng.bit_generator.state = state["rng"]
        pending = state.get("pending")
        self._pending = None if pending is None else np.asarray(pending, dtype=np.float64)
        self._set_state(state["state"])

    def per_dimension(self, key: str) -> np.ndarray:
        """Option ``key`` as one positive value per box dimension: a number (every dimension)
        or a list of ``dimension`` numbers, in unit-box coordinates (a step of 0.1 is a tenth
        of that parameter's range, of its log range on a log scale)."""
        value = self.options[key]
        try:
            arr = np.asarray(value, dtype=np.float64)
        except (TypeError, ValueError):
            arr = np.asarray([np.nan])
        if arr.ndim == 0:
            arr = np.full(self.dimension, float(arr))
        if arr.shape != (self.dimension,) or not np.all(np.isfinite(arr) & (arr > 0)):
            raise OptimizerError(
                f"optimizer.options.{key} must be > 0: one number, or a list of {self.dimension} "
                f"(one per parameter, in the unit box), not {value!r}"
            )
        return arr

    @property
    def outputs_key(self) -> str | None:
        """Name of the optimizee's result array told as ``outputs`` (``None``: no outputs)."""
        return None

    @property
    def best(self) -> tuple[np.ndarray, float] | None:
        """The best point told so far and its loss, if the optimizer keeps track of it."""
        return None

    # ------------------------------------------------------------------ hooks for subclasses
    def _setup(self) -> None:  # noqa: B027  (optional hook)
        """Initialise internal state (called at the end of ``__init__``)."""

    @abstractmethod
    def _ask(self) -> np.ndarray:
        """Return ``(population_size, dimension)`` points; values outside [0, 1] are clipped."""

    @abstractmethod
    def _tell(self, x: np.ndarray, loss: np.ndarray) -> None:
        """Update from the asked points and their loss (lower is better; inf is worst)."""

    def _get_state(self) -> dict[str, Any] | None:
        """Internal state as plain data; ``None`` means: restore by replay."""
        return {}

    def _set_state(self, state: dict[str, Any]) -> None:  # noqa: B027  (optional hook)
        """Inverse of :meth:`_get_state`."""


class ParentsState:
    """Mixin: the state of an elitist optimizer is its ``parents`` (points) and their
    ``parent_loss``, both ``None`` before the first tell (NSGA-II, CGP)."""

    parents: np.ndarray | None
    parent_loss: np.ndarray | None
    dimension: int

    def _get_state(self) -> dict[str, Any]:
        return {"parents": self.parents, "parent_loss": self.parent_loss}

    def _set_state(self, state: dict[str, Any]) -> None:
        if state["parents"] is None:
            self.parents = self.parent_loss = None
        else:
            self.parents = as_array(state["parents"]).reshape(-1, self.dimension)
            self.parent_loss = as_array(state["parent_loss"])


def _plain(value: Any) -> Any:
    """Turn numpy containers and scalars into JSON-able Python values (exactly, floats by repr)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return _plain(value.tolist())
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, float) and not math.isfinite(value):
        # JSON has no inf/nan; keep them as strings that float() reads back
        return repr(value)
    return value


def as_array(value: Any) -> np.ndarray:
    """Read back an array saved by :func:`_plain` (``'inf'``/``'nan'`` strings included)."""
    return np.asarray(_unplain(value), dtype=np.float64)


def _unplain(value: Any) -> Any:
    if isinstance(value, list):
        return [_unplain(v) for v in value]
    if isinstance(value, str) and value in ("inf", "-inf", "nan"):
        return float(value)
    return value


def replay(
    make: Callable[[], Optimizer],
    fitness_history: Iterable[np.ndarray],
    until: int | None = None,
    outputs_history: list[np.ndarray] | None = None,
) -> Optimizer:
    """Rebuild an optimizer by asking and telling the recorded generations again.

    ``fitness_history[g]`` is the fitness told at generation ``g`` (as stored, failure fitness
    included), ``outputs_history[g]`` the outputs told with it (optimizers with
    :attr:`Optimizer.uses_outputs`). Because the optimizer's randomness comes only from its
    seeded generator, the replayed optimizer is in exactly the state of the original one.
    """
    opt = make()
    for g, fitness in enumerate(fitness_history):
        if until is not None and g >= until:
            break
        x = opt.ask()
        opt.tell(x, fitness, None if outputs_history is None else outputs_history[g])
    return opt


class FailureFill:
    """Replaces failed (infinite) losses by a finite loss worse than every success told so far.

    For optimizers backed by a library that wants finite values (Nevergrad, Optuna): a failure
    is then a bad point to move away from, never one that wins. Before any success the fill is 0.
    """

    def __init__(self) -> None:
        self.lo, self.hi = math.inf, -math.inf  # finite losses told so far

    def __call__(self, loss: np.ndarray) -> np.ndarray:
        finite = np.isfinite(loss)
        if finite.any():
            self.lo = min(self.lo, float(loss[finite].min()))
            self.hi = max(self.hi, float(loss[finite].max()))
        worst = self.hi + max(1.0, self.hi - self.lo) if math.isfinite(self.hi) else 0.0
        return np.where(finite, loss, worst if math.isfinite(worst) else self.hi)


#: prefix -> (module, function) that makes a bridge class on demand, e.g. ``nevergrad:TwoPointsDE``
BRIDGES: dict[str, tuple[str, str]] = {
    "nevergrad:": ("l2lflow.optimizers.nevergrad_bridge", "nevergrad_class"),
    "optuna:": ("l2lflow.optimizers.optuna_bridge", "optuna_class"),
}
_BRIDGE_CLASSES: dict[str, type[Optimizer]] = {}


def bridge_class(
    name: str, prefix: str, base: type[Optimizer], known: Iterable[str], example: str, **attrs: Any
) -> type[Optimizer]:
    """The class ``prefix + inner`` derived from ``base``, made once, with ``inner`` checked
    against ``known`` (an unknown one is refused with the close matches)."""
    if name in _BRIDGE_CLASSES:
        return _BRIDGE_CLASSES[name]
    inner = name[len(prefix) :]
    known = list(known)
    if inner not in known:
        close = difflib.get_close_matches(inner, known, n=5, cutoff=0.6)
        hint = f"close matches: {', '.join(prefix + c for c in close)}" if close else example
        raise OptimizerError(f"optimizer.name: unknown optimizer {name!r} ({hint})")
    cls = type(
        f"{base.__name__}_{inner}",
        (base,),
        {"name": name, "__module__": base.__module__, **attrs},
    )
    _BRIDGE_CLASSES[name] = cls
    return cls


def get_optimizer_class(name: str) -> type[Optimizer]:
    """Look an optimizer up by name, with the list of known names in the error: a registered
    name, a bridge (``nevergrad:<Name>``, ``optuna:<Sampler>``) or ``package.module:Class``, an
    optimizer class of your own on ``PYTHONPATH`` (imported like an optimizee function)."""
    import importlib

    from l2lflow import optimizers  # noqa: F401  (fills the registry)
    from l2lflow.imports import import_reference

    for prefix, (module, function) in BRIDGES.items():
        if name.startswith(prefix):
            return getattr(importlib.import_module(module), function)(name)
    if name in REGISTRY:
        return REGISTRY[name]
    if ":" not in name:
        known = ", ".join(sorted(REGISTRY))
        raise OptimizerError(
            f"optimizer.name: unknown optimizer {name!r} (known: {known}, "
            "nevergrad:<Name> for any Nevergrad optimizer, optuna:<Sampler>, "
            "or package.module:Class for a class of your own)"
        )
    try:
        cls = import_reference(name, "optimizer.name")
    except LookupError as exc:
        raise OptimizerError(str(exc)) from None
    if not (isinstance(cls, type) and issubclass(cls, Optimizer)):
        raise OptimizerError(
            f"optimizer.name: {name!r} is not a subclass of l2lflow.optimizers.Optimizer"
        )
    return cls
