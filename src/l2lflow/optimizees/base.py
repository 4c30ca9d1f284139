"""What one evaluation of an individual is, and how optimizees are found by name.

An *optimizee* is a plain function::

    def my_model(params: dict, seed: int, *, context: EvaluationContext, **options) -> float | dict

``params`` holds the individual's parameter values by name, ``seed`` is the evaluation's seed
(derived from the experiment seed, the generation and the individual; never from scheduling
order), ``options`` are ``optimizee.options`` from the config. The ``context`` keyword is passed
only when the function declares it. A float return is the fitness; a dict returns several
metrics (the config's ``optimizee.fitness`` names the one that is the fitness), and numpy arrays
in it land in the store on ``(generation, individual, ...)``.

Registered optimizees carry *capabilities*: whether they need (or prefer) a GPU, and whether
they can evaluate a *batch* of individuals in one call. A batched optimizee is called as::

    def my_batched(params: list[dict], seeds: list[int], *, contexts: list[EvaluationContext],
                   **options) -> list[float | dict]

with one entry per individual, and must give each individual the same result whatever the
batch it is in (per-individual seeds, no cross-talk), so that the batch size never changes a
result.
"""

from __future__ import annotations

import inspect
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from l2lflow.imports import import_reference


class OptimizeeError(ValueError):
    """A wrong optimizee reference or options."""


@dataclass(frozen=True)
class Optimizee:
    """A resolved optimizee: the callable and what it can do."""

    name: str
    function: Callable[..., Any]
    needs_gpu: bool = False
    #: runs on a CPU too, but belongs on a GPU worker when the run has a GPU pool
    prefers_gpu: bool = False
    batched: bool = False
    #: array results by name -> names of their own dimensions, e.g. {"task_accuracy": ("task",)}
    array_dims: dict[str, tuple[str, ...]] = field(default_factory=dict)
    #: whether it supports a meta-test phase (re-evaluation of the best on held-out tasks)
    meta_test: bool = False
    description: str = ""
    #: the fitness a guess scores, from the optimizee's options (e.g. 1 / n_classes of a
    #: classification task), drawn on the figures; None where there is no such level
    chance: Callable[[dict[str, Any]], float] | None = None
    #: what to do once per process before the first evaluation (e.g. ``import nest``, 0.5 s),
    #: called when the run's workers start, while Snakemake still prepares the first generation
    warm_up: Callable[[], Any] | None = None

    @property
    def accepts_context(self) -> bool:
        return "context" in _signature(self.function).parameters or _has_var_keyword(self.function)


#: name -> Optimizee; filled by :func:`register_optimizee`.
REGISTRY: dict[str, Optimizee] = {}


def register_optimizee(
    name: str,
    *,
    needs_gpu: bool = False,
    prefers_gpu: bool = False,
    batched: bool = False,
    array_dims: dict[str, tuple[str, ...]] | None = None,
    meta_test: bool = False,
    chance: Callable[[dict[str, Any]], float] | None = None,
    warm_up: Callable[[], Any] | None = None,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator that registers a function as an optimizee under ``name``."""

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        if name in REGISTRY and REGISTRY[name].function is not fn:
            raise ValueError(f"optimizee name {name!r} is registered twice")
        doc = (inspect.getdoc(fn) or "").split("\n")[0]
        REGISTRY[name] = Optimizee(
            name,
            fn,
            needs_gpu=needs_gpu,
            prefers_gpu=prefers_gpu,
            batched=batched,
            array_dims=dict(array_dims or {}),
            meta_test=meta_test,
            description=doc,
            chance=chance,
            warm_up=warm_up,
        )
        return fn

    return decorate


@dataclass
class EvaluationContext:
    """What an evaluation may know about itself beyond its parameters and seed."""

    generation: int
    individual: int
    seed: int
    attempt: int = 0
    #: the experiment's seed, and the seed of this generation's task set (the same for every
    #: individual of the generation; a learning-to-learn optimizee draws its tasks from it)
    experiment_seed: int = 0
    task_seed: int = 0
    #: "optimize" during the run, "meta_test" when the best individuals are re-evaluated on
    #: held-out tasks after the last generation
    phase: str = "optimize"
    #: threads the evaluation may use (e.g. NEST's ``local_num_threads``)
    threads: int = 1
    #: a folder for this evaluation's own files (traces, recordings); created on first use
    scratch_root: str | None = None
    log: logging.Logger = field(default_factory=lambda: logging.getLogger("l2lflow.evaluation"))

    @property
    def scratch_dir(self) -> Path:
        """``<results>/scratch/g<generation>/i<individual>``, created when first asked for."""
        if self.scratch_root is None:
            raise RuntimeError("this evaluation has no scratch folder")
        path = Path(self.scratch_root) / f"g{self.generation:06d}" / f"i{self.individual:06d}"
        path.mkdir(parents=True, exist_ok=True)
        return path


def _signature(fn: Callable[..., Any]) -> inspect.Signature:
    try:
        return inspect.signature(fn)
    except (TypeError, ValueError) as exc:  # builtins without signature
        raise OptimizeeError(f"cannot inspect the signature of {fn!r}: {exc}") from None


def _has_var_keyword(fn: Callable[..., Any]) -> bool:
    return any(p.kind is inspect.Parameter.VAR_KEYWORD for p in _signature(fn).parameters.values())


def resolve_optimizee(reference: str) -> Optimizee:
    """Find an optimizee by registered name or ``package.module:function`` import string."""
    from l2lflow import optimizees  # noqa: F401  (fills the registry)

    if reference in REGISTRY:
        return REGISTRY[reference]
    if ":" not in reference:
        known = ", ".join(sorted(REGISTRY))
        raise OptimizeeError(
            f"optimizee.name: unknown optimizee {reference!r} "
            f"(known: {known}; or give 'package.module:function')"
        )
    try:
        fn = import_reference(reference, "optimizee.name")
    except LookupError as exc:
        raise OptimizeeError(str(exc)) from None
    if not callable(fn):
        raise OptimizeeError(f"optimizee.name: {reference!r} is not callable")
    registered = next((o for o in REGISTRY.values() if o.function is fn), None)
    if registered is not None:
        return registered
    return Optimizee(reference, fn)


def check_signature(optimizee: Optimizee, options: dict[str, Any]) -> None:
    """Check that the function can be called as ``fn(params, seed, **options)``.

    Raises :class:`OptimizeeError` naming the offending key, so that a wrong signature or a
    misspelt option is found when the config is validated, not on a worker hours later.
    """
    sig = _signature(optimizee.function)
    params = list(sig.parameters.values())
    positional = [
        p
        for p in params
        if p.kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    ]
    var_positional = any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in params)
    if len(positional) < 2 and not var_positional:
        raise OptimizeeError(
            f"optimizee.name: {optimizee.name!r} must accept (params, seed, **options); "
            f"its signature is {optimizee.function.__name__}{sig}"
        )
    required_extra = [
        p.name
        for p in positional[2:]
        if p.default is inspect.Parameter.empty and p.name not in options and p.name != "context"
    ] + [
        p.name
        for p in params
        if p.kind is inspect.Parameter.KEYWORD_ONLY
        and p.default is inspect.Parameter.empty
        and p.name not in options
        and p.name != "context"
    ]
    if required_extra:
        raise OptimizeeError(
            f"optimizee.options.{required_extra[0]}: required by {optimizee.name!r} "
            f"({optimizee.function.__name__}{sig}) but not given"
        )
    if _has_var_keyword(optimizee.function):
        return
    accepted = {p.name for p in positional[2:]} | {
        p.name for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY
    }
    accepted.discard("context")
    for key in options:
        if key not in accepted:
            allowed = ", ".join(sorted(accepted)) or "none"
            raise OptimizeeError(
                f"optimizee.options.{key}: {optimizee.name!r} has no option {key!r} (allowed: {allowed})"
            )


def checked_params(
    params: dict[str, Any],
    defaults: dict[str, float],
    optimizee: str,
    valid: Callable[[dict[str, float]], bool],
) -> tuple[dict[str, float], bool]:
    """An individual's parameters with ``defaults`` filled in, and whether they are usable.

    For batched optimizees: an unknown name is a configuration error (raised); non-finite or
    out-of-range values (``valid`` says which) are not, they fail only their own individual, so
    the defaults stand in for them and keep the batch's tensors well-formed.
    """
    unknown = sorted(set(params) - set(defaults))
    if unknown:
        raise ValueError(
            f"unknown parameter(s) {unknown} for {optimizee}; known: {sorted(defaults)}"
        )
    p = {**defaults, **{k: float(v) for k, v in params.items()}}
    ok = all(math.isfinite(v) for v in p.values()) and valid(p)
    return (p if ok else dict(defaults)), ok
