"""The optimizer contract, checked the way every built-in optimizer is checked.

A run relies on more than an optimizer that finds good points: it resumes bit-identically after
any interruption, survives failed evaluations, and refuses bad options in one line. Each rule
below is one public ``check_*`` function (so a test suite can parametrise over them, as
``tests/test_optimizers.py`` does for every built-in), and :func:`check_optimizer` runs them all:

* ``same_seed_same_asks``: the asks come only from the optimizer's seeded ``self.rng`` (numpy's
  global generator and the clock play no part), so a rerun proposes the same individuals;
* ``different_seed_different_asks``: the seed is used (unless the class says ``uses_seed = False``);
* ``checkpoint_between_generations``: a restored optimizer (from its JSON state, or by replay for
  one whose ``state_dict()`` is ``None``) continues with exactly the asks of an uninterrupted one;
* ``checkpoint_between_ask_and_tell``: the same with an ask pending (JSON state only: replay
  starts from a told generation);
* ``asks_in_box``: asks have shape ``(population_size, dimension)``, float64, inside ``[0, 1]``,
  also while the fitness pushes towards a corner; a population size the optimizer cannot use is
  refused with a message naming ``population_size``;
* ``failed_fitness``: NaN and infinite fitness (some individuals, a whole generation) never make
  the asks non-finite or the state non-JSON;
* ``maximize_is_minimize_of_negative``: ``direction="maximize"`` on ``-f`` asks what
  ``"minimize"`` asks on ``f``;
* ``unknown_options_refused``: an unknown option is refused, naming it and the allowed ones;
* ``found_by_name``: a config can name it (a registered name, or ``package.module:Class``), and
  its default options work;
* ``state_is_strict_json``: ``state_dict()`` is JSON without NaN or infinity, before and after asks;
* ``misuse_raises``: tell before ask, ask twice, tell of other points or shapes raise
  :class:`~l2lflow.optimizers.OptimizerError`, and the right call still works afterwards;
* ``quality`` (only with thresholds): the best fitness on the shifted benchmark functions
  :func:`sphere`, :func:`rastrigin`, :func:`rosenbrock` reaches a stated threshold on every seed.

A violated rule raises ``AssertionError`` whose message starts with the optimizer's name and the
rule's name. A rule that does not apply raises :class:`NotApplicable`, which pytest reports as a
skip.

The benchmark functions take points of the unit box ``x`` (rows), map them to
``z = -5.12 + 10.24 x - SHIFT`` (the optimum away from the box centre, where most optimizers
start) and have minimum 0; Rosenbrock uses ``y = 0.4 z + 1`` (its usual box [-2.048, 2.048]).
Optimizers with ``uses_outputs`` (EnKF) are told each individual's residual vector, whose sum of
squares is the function (:data:`RESIDUALS`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np

from l2lflow.optimizers.base import (
    BRIDGES,
    Optimizer,
    OptimizerError,
    get_optimizer_class,
    replay,
)

#: an optimizer's config name (``"cmaes"``, ``"optuna:TPE"``) or its class
OptimizerLike = str | type[Optimizer]
Function = Callable[[np.ndarray], np.ndarray]

#: box dimension and population size of the contract checks (the quality check has its own)
DIMENSION = 3
POPULATION = 6
#: seeds and dimension of the quality check
QUALITY_SEEDS = (0, 1, 2)
QUALITY_DIMENSION = 5
#: where the benchmark functions' optimum sits in ``z`` coordinates (first ``d`` entries)
SHIFT = np.array([1.7, -2.6, 3.1, -0.9, 2.3, -1.4])

try:  # pytest shows a rule that does not apply as a skip, with its reason
    from pytest import skip as _skip

    _NotApplicableBase: type[BaseException] = _skip.Exception
except ImportError:  # pragma: no cover - pytest is only needed to run tests
    _NotApplicableBase = Exception


class NotApplicable(_NotApplicableBase):  # type: ignore[misc,valid-type]
    """A rule that does not apply to this optimizer (pytest reports it as a skip)."""


class Quality(NamedTuple):
    """A quality requirement: after ``generations`` × ``population`` evaluations the best
    fitness is at most ``threshold`` (lower is better)."""

    generations: int
    population: int
    threshold: float


# ---------------------------------------------------------------------- benchmark functions
def _z(x: np.ndarray) -> np.ndarray:
    return -5.12 + 10.24 * x - SHIFT[: x.shape[1]]


def sphere(x: np.ndarray) -> np.ndarray:
    """Shifted sphere of each row of ``x`` (unit box); minimum 0."""
    return np.sum(_z(x) ** 2, axis=1)


def rastrigin(x: np.ndarray) -> np.ndarray:
    """Shifted Rastrigin of each row of ``x`` (unit box, mapped to [-5.12, 5.12]); minimum 0."""
    z = _z(x)
    return 10.0 * z.shape[1] + np.sum(z**2 - 10.0 * np.cos(2.0 * np.pi * z), axis=1)


def _y(x: np.ndarray) -> np.ndarray:
    """Rosenbrock's coordinates: the box maps to [-2.048, 2.048]^d - shift, optimum at y = 1."""
    return _z(x) * (2.048 / 5.12) + 1.0


def rosenbrock(x: np.ndarray) -> np.ndarray:
    """Shifted Rosenbrock of each row of ``x`` (unit box, mapped to [-2.048, 2.048]); minimum 0."""
    y = _y(x)
    return np.sum(100.0 * (y[:, 1:] - y[:, :-1] ** 2) ** 2 + (1.0 - y[:, :-1]) ** 2, axis=1)


FUNCTIONS: dict[str, Function] = {
    "sphere": sphere,
    "rastrigin": rastrigin,
    "rosenbrock": rosenbrock,
}


def _rastrigin_residuals(x: np.ndarray) -> np.ndarray:
    z = _z(x)
    return np.sqrt(z**2 - 10.0 * np.cos(2.0 * np.pi * z) + 10.0)


def _rosenbrock_residuals(x: np.ndarray) -> np.ndarray:
    y = _y(x)
    return np.hstack([10.0 * (y[:, 1:] - y[:, :-1] ** 2), 1.0 - y[:, :-1]])


#: the output vector told to optimizers with ``uses_outputs``: its sum of squares is the function
RESIDUALS: dict[Function, Function] = {
    sphere: _z,
    rastrigin: _rastrigin_residuals,
    rosenbrock: _rosenbrock_residuals,
}


# ---------------------------------------------------------------------- ask/tell helpers
def optimizer_class(optimizer: OptimizerLike) -> type[Optimizer]:
    """The class of ``optimizer`` (looked up by name as a config does, or given)."""
    return get_optimizer_class(optimizer) if isinstance(optimizer, str) else optimizer


def make(
    optimizer: OptimizerLike,
    seed: int = 0,
    *,
    dimension: int = DIMENSION,
    population_size: int = POPULATION,
    direction: str = "minimize",
    **options: Any,
) -> Optimizer:
    """A fresh optimizer in the unit box of ``dimension``, with ``options`` as a config gives them."""
    cls = optimizer_class(optimizer)
    return cls(dimension, population_size, seed, direction=direction, **options)


def tell(opt: Optimizer, x: np.ndarray, fx: np.ndarray, f: Function = sphere) -> None:
    """``opt.tell``, with the residuals of ``f`` as outputs for optimizers that use them."""
    opt.tell(x, fx, RESIDUALS.get(f, _z)(x) if opt.uses_outputs else None)


def run_generations(
    opt: Optimizer, generations: int, f: Function = sphere
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Ask and tell ``generations`` times on ``f``; return the asks and the fitness told."""
    asks, fits = [], []
    for _ in range(generations):
        x = opt.ask()
        fx = f(x)
        tell(opt, x, fx, f)
        asks.append(x)
        fits.append(fx)
    return asks, fits


def restores_by_replay(opt: Optimizer) -> bool:
    """Whether ``opt`` has no plain-data state (``state_dict()`` is ``None``): a run then
    restores it by replaying the stored generations."""
    return opt.state_dict() is None


def _name(optimizer: OptimizerLike) -> str:
    cls = optimizer_class(optimizer)
    return cls.name or cls.__name__


def _require(ok: bool, optimizer: OptimizerLike, rule: str, detail: str) -> None:
    """Fail with a message that names the optimizer and the rule it broke."""
    if not ok:
        raise AssertionError(f"{_name(optimizer)} breaks '{rule}': {detail}")


def _strict_json(state: Any, optimizer: OptimizerLike) -> Any:
    """``state`` through strict JSON (as a results store keeps it); a failure names the rule."""
    try:
        return json.loads(json.dumps(state, allow_nan=False))
    except (TypeError, ValueError) as err:
        _require(
            False, optimizer, "state_is_strict_json", f"state_dict() is not strict JSON: {err}"
        )


def restore(
    optimizer: OptimizerLike,
    opt: Optimizer,
    asks: Sequence[np.ndarray],
    fits: Sequence[np.ndarray],
    f: Function = sphere,
    **options: Any,
) -> Optimizer:
    """A fresh optimizer in ``opt``'s state after ``asks``/``fits`` (told on ``f``), restored as
    a run restores it: from its state through strict JSON, else by replay."""
    state = opt.state_dict()
    build = lambda: make(  # noqa: E731
        optimizer,
        opt.seed,
        dimension=opt.dimension,
        population_size=opt.population_size,
        direction=opt.direction,
        **options,
    )
    if state is None:
        outputs = [RESIDUALS.get(f, _z)(x) for x in asks] if opt.uses_outputs else None
        return replay(build, fits, outputs_history=outputs)
    fresh = build()
    fresh.load_state_dict(_strict_json(state, optimizer))
    return fresh


def _first_difference(a: Sequence[np.ndarray], b: Sequence[np.ndarray]) -> int | None:
    """The first generation whose asks differ (None if all are bit-identical)."""
    for g, (u, v) in enumerate(zip(a, b, strict=True)):
        if not np.array_equal(u, v):
            return g
    return None


# ---------------------------------------------------------------------- the rules
def check_same_seed_same_asks(
    optimizer: OptimizerLike, options: Mapping[str, Any] | None = None, generations: int = 6
) -> None:
    """Two optimizers with the same seed ask the same points, whatever numpy's global
    generator does in between (a rerun or retry must propose the same individuals)."""
    options = dict(options or {})
    first, _ = run_generations(make(optimizer, 7, **options), generations)
    opt = make(optimizer, 7, **options)
    second = []
    for _ in range(generations):
        np.random.rand(3)  # numpy's global generator must play no part
        x = opt.ask()
        tell(opt, x, sphere(x))
        second.append(x)
    g = _first_difference(first, second)
    _require(
        g is None,
        optimizer,
        "same_seed_same_asks",
        f"seed 7 gave other asks the second time (generation {g}); draw random numbers only "
        "from self.rng, never from numpy's global generator, the clock or another source",
    )


def check_different_seed_different_asks(
    optimizer: OptimizerLike, options: Mapping[str, Any] | None = None, generations: int = 3
) -> None:
    """Seeds 1 and 2 give different asks, unless the class declares ``uses_seed = False``
    (then they must give the same ones)."""
    options = dict(options or {})
    a, _ = run_generations(make(optimizer, 1, **options), generations)
    b, _ = run_generations(make(optimizer, 2, **options), generations)
    same = _first_difference(a, b) is None
    if optimizer_class(optimizer).uses_seed:
        _require(
            not same,
            optimizer,
            "different_seed_different_asks",
            f"seeds 1 and 2 gave the same asks for {generations} generations: the seed is "
            "ignored (draw every random number from self.rng, which the base class seeds; "
            "declare uses_seed = False if the search is deterministic by design)",
        )
    else:
        _require(
            same,
            optimizer,
            "different_seed_different_asks",
            "declares uses_seed = False, yet seeds 1 and 2 gave different asks",
        )


def check_checkpoint_between_generations(
    optimizer: OptimizerLike,
    options: Mapping[str, Any] | None = None,
    after: Iterable[int] = (0, 1, 4),
    generations: int = 8,
) -> None:
    """Restored after each of ``after`` generations (JSON state or replay), the optimizer asks
    what an uninterrupted one asks for the rest of the ``generations``."""
    options = dict(options or {})
    full, _ = run_generations(make(optimizer, **options), generations)
    for k in after:
        opt = make(optimizer, **options)
        asks, fits = run_generations(opt, k)
        how = "by replay" if restores_by_replay(opt) else "from its JSON state"
        continued, _ = run_generations(
            restore(optimizer, opt, asks, fits, **options), generations - k
        )
        g = _first_difference(full[k:], continued)
        _require(
            g is None,
            optimizer,
            "checkpoint_between_generations",
            f"restored {how} after {k} generation{'' if k == 1 else 's'}, it asked other points than an "
            f"uninterrupted run at generation {None if g is None else k + g}",
        )


def check_checkpoint_between_ask_and_tell(
    optimizer: OptimizerLike, options: Mapping[str, Any] | None = None
) -> None:
    """Checkpointed with an ask pending, the restored optimizer refuses a second ask, takes the
    tell of the pending points and continues as an uninterrupted one."""
    options = dict(options or {})
    full, _ = run_generations(make(optimizer, **options), 6)
    opt = make(optimizer, **options)
    run_generations(opt, 2)
    x = opt.ask()
    state = opt.state_dict()
    if state is None:
        raise NotApplicable(
            f"{_name(optimizer)} restores by replay, which starts from a told generation"
        )
    rule = "checkpoint_between_ask_and_tell"
    fresh = make(optimizer, **options)
    fresh.load_state_dict(_strict_json(state, optimizer))
    try:
        fresh.ask()
    except OptimizerError:
        pass
    else:
        _require(False, optimizer, rule, "the restored optimizer forgot its pending ask")
    tell(fresh, x, sphere(x))
    continued, _ = run_generations(fresh, 3)
    _require(np.array_equal(x, full[2]), optimizer, rule, "the pending ask differs from a rerun's")
    g = _first_difference(full[3:], continued)
    _require(
        g is None,
        optimizer,
        rule,
        f"restored with an ask pending, it asked other points at generation {None if g is None else 3 + g}",
    )


def check_asks_in_box(
    optimizer: OptimizerLike,
    options: Mapping[str, Any] | None = None,
    population_sizes: Iterable[int] = (1, 2, 3, 7, 16),
    dimensions: Iterable[int] = (1, 4),
    generations: int = 12,
    push_generations: int = 8,
) -> None:
    """Asks are float64 arrays ``(population_size, dimension)`` inside the unit box, for every
    size, also after ``push_generations`` of fitness that pulls towards a corner (boundary
    handling) followed by random fitness. A size the optimizer cannot use must be refused
    with a message naming ``population_size``."""
    options = dict(options or {})
    rule = "asks_in_box"
    for dim in dimensions:
        for pop in population_sizes:
            try:
                opt = make(optimizer, dimension=dim, population_size=pop, **options)
            except OptimizerError as err:
                _require(
                    "population_size" in str(err),
                    optimizer,
                    rule,
                    f"refused dimension {dim} × population {pop} without naming population_size: {err}",
                )
                continue
            noise = np.random.default_rng(0)
            for g in range(generations):
                x = opt.ask()
                _require(
                    x.shape == (pop, dim) and x.dtype == np.float64,
                    optimizer,
                    rule,
                    f"asked {x.dtype} {x.shape}, expected float64 {(pop, dim)}",
                )
                _require(
                    bool(np.all((x >= 0.0) & (x <= 1.0))),
                    optimizer,
                    rule,
                    f"asked points outside [0, 1] (generation {g}, min {x.min()}, max {x.max()})",
                )
                fx = -x.sum(axis=1) if g < push_generations else noise.standard_normal(pop)
                tell(opt, x, fx)


def check_failed_fitness(
    optimizer: OptimizerLike,
    options: Mapping[str, Any] | None = None,
    population_size: int = 8,
    generations: int = 8,
) -> None:
    """Failed evaluations (NaN, +inf, -inf fitness for some individuals; a whole generation of
    NaN, one of inf) leave the asks finite and inside the box, and the state strict JSON."""
    options = dict(options or {})
    opt = make(optimizer, population_size=population_size, **options)
    bad = [np.nan, np.inf, -np.inf]
    for g in range(generations + 1):
        x = opt.ask()
        _require(
            bool(np.all(np.isfinite(x)) and np.all((x >= 0.0) & (x <= 1.0))),
            optimizer,
            "failed_fitness",
            f"after failed evaluations it asked non-finite points or points outside [0, 1] "
            f"(generation {g})",
        )
        if g == generations:
            break
        fx = sphere(x)
        if g == 2:
            fx[:] = np.nan  # a whole generation failed
        elif g == 3:
            fx[:] = np.inf
        else:
            fx[: len(bad)] = bad[: len(fx)]  # some individuals failed
        tell(opt, x, fx)
        _strict_json(opt.state_dict(), optimizer)


def check_maximize_is_minimize_of_negative(
    optimizer: OptimizerLike, options: Mapping[str, Any] | None = None, generations: int = 10
) -> None:
    """``direction="maximize"`` on ``-sphere`` asks exactly what ``"minimize"`` asks on the
    sphere (the direction is only a sign)."""
    options = dict(options or {})
    lo_asks, lo_fits = run_generations(
        make(optimizer, 3, population_size=8, **options), generations
    )
    hi = make(optimizer, 3, population_size=8, direction="maximize", **options)
    hi_asks, hi_fits = run_generations(hi, generations, lambda x: -sphere(x))
    g = _first_difference(lo_asks, hi_asks)
    _require(
        g is None,
        optimizer,
        "maximize_is_minimize_of_negative",
        f"maximizing -f asked other points than minimizing f at generation {g}",
    )
    _require(
        min(f.min() for f in lo_fits) == -max(f.max() for f in hi_fits),
        optimizer,
        "maximize_is_minimize_of_negative",
        "maximizing -f reached another best than minimizing f",
    )


def check_unknown_options_refused(optimizer: OptimizerLike) -> None:
    """An unknown option is refused with an :class:`OptimizerError` naming it and every allowed one."""
    cls = optimizer_class(optimizer)
    rule = "unknown_options_refused"
    try:
        cls(DIMENSION, POPULATION, 0, no_such_option=1)
    except OptimizerError as err:
        msg = str(err)
    else:
        _require(False, optimizer, rule, "no_such_option=1 was accepted")
    _require(
        "no_such_option" in msg, optimizer, rule, f"the refusal does not name the option: {msg}"
    )
    missing = [o for o in cls.default_options if o not in msg]
    _require(
        not missing or "none" in msg,
        optimizer,
        rule,
        f"the refusal does not list the allowed options {missing}: {msg}",
    )


def config_names(cls: type[Optimizer]) -> list[str]:
    """The names a config can give ``optimizer.name`` to get ``cls``: its registered name,
    and ``package.module:Class`` when that import finds it."""
    names = []
    for name in (cls.name, f"{cls.__module__}:{cls.__qualname__}"):
        try:
            if name and get_optimizer_class(name) is cls:
                names.append(name)
        except OptimizerError:
            pass
    return names


def check_found_by_name(optimizer: OptimizerLike, options: Mapping[str, Any] | None = None) -> None:
    """A config can name this optimizer (a registered name that finds this very class, or
    ``package.module:Class``), and the default options (with ``options``) make a working one."""
    cls = optimizer_class(optimizer)
    rule = "found_by_name"
    if isinstance(optimizer, str):
        imported = ":" in optimizer and not optimizer.startswith(tuple(BRIDGES))
        _require(
            imported or cls.name == optimizer, optimizer, rule, f"{optimizer!r} made a {cls.name!r}"
        )
    else:
        _require(
            bool(config_names(cls)),
            optimizer,
            rule,
            f"no optimizer.name finds {cls.__module__}.{cls.__qualname__}: define it at the top "
            "level of a module on PYTHONPATH and name it 'package.module:Class' in the config",
        )
    make(optimizer, **dict(options or {}))


def check_state_is_strict_json(
    optimizer: OptimizerLike, options: Mapping[str, Any] | None = None, generations: int = 3
) -> None:
    """``state_dict()`` is strict JSON (no NaN, no infinity, no objects) before and after each
    ask, also after infinite fitness: a results store keeps it as text, never as a pickle."""
    options = dict(options or {})
    opt = make(optimizer, **options)
    if restores_by_replay(opt):
        raise NotApplicable(f"{_name(optimizer)} restores by replay (state_dict() is None)")
    for _ in range(generations):
        _strict_json(opt.state_dict(), optimizer)
        x = opt.ask()
        _strict_json(opt.state_dict(), optimizer)
        tell(opt, x, np.full(opt.population_size, np.inf))


def check_misuse_raises(optimizer: OptimizerLike, options: Mapping[str, Any] | None = None) -> None:
    """A broken ask/tell sequence raises :class:`OptimizerError` (tell before ask, ask twice,
    tell of other points, of another shape, of another number of fitness values), and the
    right tell still works afterwards."""
    opt = make(optimizer, **dict(options or {}))
    pop, dim = opt.population_size, opt.dimension

    def refused(what: str, call: Callable[[], Any]) -> None:
        try:
            call()
        except OptimizerError:
            return
        _require(False, optimizer, "misuse_raises", f"{what} did not raise OptimizerError")

    refused("tell() before any ask()", lambda: opt.tell(np.full((pop, dim), 0.5), np.zeros(pop)))
    x = opt.ask()
    refused("a second ask() before tell()", opt.ask)
    other = x.copy()
    other[0, 0] = 1.0 - other[0, 0] if other[0, 0] != 0.5 else 0.25
    refused("tell() of other points than asked", lambda: opt.tell(other, np.zeros(pop)))
    refused("tell() of fewer points", lambda: opt.tell(x[:-1], np.zeros(pop - 1)))
    refused("tell() of too many fitness values", lambda: opt.tell(x, np.zeros(pop + 1)))
    tell(opt, x, np.zeros(pop))
    _require(
        opt.generation == 1,
        optimizer,
        "misuse_raises",
        "the right tell() after refused ones failed",
    )


def check_quality(
    optimizer: OptimizerLike,
    function: str,
    quality: Quality,
    options: Mapping[str, Any] | None = None,
    seeds: Iterable[int] = QUALITY_SEEDS,
    dimension: int = QUALITY_DIMENSION,
) -> None:
    """On every seed, the best fitness on benchmark ``function`` (a key of :data:`FUNCTIONS`)
    after ``quality.generations`` × ``quality.population`` evaluations is at most
    ``quality.threshold``. An optimizer with a ``budget`` option is given that budget."""
    f = FUNCTIONS[function]
    options = dict(options or {})
    if "budget" in optimizer_class(optimizer).default_options:  # e.g. Nevergrad plans for it
        options.setdefault("budget", quality.generations * quality.population)
    for seed in seeds:
        opt = make(
            optimizer, seed, dimension=dimension, population_size=quality.population, **options
        )
        _, fits = run_generations(opt, quality.generations, f)
        reached = min(float(fx.min()) for fx in fits)
        _require(
            reached <= quality.threshold,
            optimizer,
            "quality",
            f"on {function}, seed {seed}: best {reached:.4g} > threshold {quality.threshold:.4g} "
            f"after {quality.generations} × {quality.population}",
        )


# ---------------------------------------------------------------------- all of them
#: rule name -> check taking (optimizer, options); ``quality`` needs thresholds (see below)
CHECKS: dict[str, Callable[[OptimizerLike, Mapping[str, Any] | None], None]] = {
    "same_seed_same_asks": check_same_seed_same_asks,
    "different_seed_different_asks": check_different_seed_different_asks,
    "checkpoint_between_generations": check_checkpoint_between_generations,
    "checkpoint_between_ask_and_tell": check_checkpoint_between_ask_and_tell,
    "asks_in_box": check_asks_in_box,
    "failed_fitness": check_failed_fitness,
    "maximize_is_minimize_of_negative": check_maximize_is_minimize_of_negative,
    "unknown_options_refused": lambda optimizer, options: check_unknown_options_refused(optimizer),
    "found_by_name": check_found_by_name,
    "state_is_strict_json": check_state_is_strict_json,
    "misuse_raises": check_misuse_raises,
}


@dataclass
class OptimizerReport:
    """Which rules passed, and which did not apply (with the reason)."""

    passed: list[str] = field(default_factory=list)
    not_applicable: dict[str, str] = field(default_factory=dict)


def check_optimizer(
    optimizer: OptimizerLike,
    options: Mapping[str, Any] | None = None,
    checks: Iterable[str] | None = None,
    quality: Mapping[str, Quality] | None = None,
) -> OptimizerReport:
    """Check ``optimizer`` (a config name or a class) against every rule of the contract (the
    module docstring lists them), or only the rule names in ``checks``.

    ``options`` are the optimizer's options, as ``optimizer.options`` in a config. ``quality``
    maps benchmark names (``"sphere"``, ``"rastrigin"``, ``"rosenbrock"``) to the
    :class:`Quality` the optimizer must reach; without it the quality rule does not apply.
    The first violated rule raises ``AssertionError`` naming it.
    """
    known = [*CHECKS, "quality"]
    selected = list(known if checks is None else checks)
    unknown = [c for c in selected if c not in known]
    if unknown:
        raise ValueError(f"unknown check {unknown[0]!r} (known: {', '.join(known)})")
    report = OptimizerReport()
    for rule in selected:
        try:
            if rule != "quality":
                CHECKS[rule](optimizer, options)
            elif not quality:
                raise NotApplicable(
                    "no quality thresholds given (quality={'sphere': Quality(...)})"
                )
            else:
                for function, q in quality.items():
                    check_quality(optimizer, function, q, options)
        except NotApplicable as why:
            report.not_applicable[rule] = str(why)
        except AssertionError:
            raise
        except Exception as err:  # an unexpected error still names the rule it broke
            raise AssertionError(
                f"{_name(optimizer)} breaks '{rule}': {type(err).__name__}: {err}"
            ) from err
        else:
            report.passed.append(rule)
    return report
