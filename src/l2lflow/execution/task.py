"""What runs on a Dask worker: the task :func:`evaluate_chunk`, one evaluation (:func:`run_one`)
or one batched call (:func:`run_batch`), and the checks that turn an optimizee's return value
into a result record the store can hold.

A chunk runs in the worker's sandbox process (:mod:`l2lflow.execution.sandbox`) unless the
experiment sets ``evaluation.isolate: false``; there the same :func:`run_one` /
:func:`run_batch` run, and results stream back one per item.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import time
import traceback
import warnings
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import numpy as np

from l2lflow.execution.sandbox import SANDBOX_LOCK, Sandbox, current_sandbox, reset_sandbox
from l2lflow.execution.work import (
    Chunk,
    ChunkResults,
    EvaluationResult,
    EvaluationSpec,
    failure,
    success,
)

_RESOLVED: dict[str, Any] = {}


def _optimizee(ref: str):
    if ref not in _RESOLVED:
        from l2lflow.optimizees.base import resolve_optimizee

        _RESOLVED[ref] = resolve_optimizee(ref)
    return _RESOLVED[ref]


class _ListHandler(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


STORE_VARIABLES = frozenset(
    {
        "generation",
        "individual",
        "fitness",
        "status",
        "seed",
        "runtime",
        "attempts",
        "finished_at",
        "worker",
        "error",
        "log",
        "optimizer",
        "objective",
        "objectives",
        "pareto_rank",
    }
)
#: prefixes of variables the store derives from results (scalar metrics, meta-test results)
RESERVED_PREFIXES = ("metric_", "meta_test")


class ResultError(ValueError):
    """An optimizee's return value that cannot be stored (bad key, type or shape). It is
    deterministic, so the evaluation fails at once instead of being retried."""


def _check_key(key: Any, is_array: bool, parameters: frozenset[str]) -> str:
    """``key`` if it can name a result in the store, else a :class:`ResultError` with the rule."""
    if not isinstance(key, str) or not key.isidentifier():
        raise ResultError(
            f"result key {key!r}: a result key must be a Python identifier (letters, digits "
            "and '_', not starting with a digit; no dots, path separators or spaces)"
        )
    if not is_array:
        return key  # scalar metrics are stored as metric_<key>: no clash possible
    rule = (
        f"result {key!r} is an array, stored under its own name, which {{}}; rename it "
        f"(scalar results are stored as metric_<key> and may use any identifier)"
    )
    if key in STORE_VARIABLES:
        raise ResultError(rule.format("is a variable of the store itself"))
    if key in parameters:
        raise ResultError(rule.format("is a parameter of the space"))
    if key.startswith(RESERVED_PREFIXES):
        raise ResultError(
            rule.format(f"starts with a reserved prefix ({', '.join(RESERVED_PREFIXES)})")
        )
    return key


def _number(key: str, value: Any) -> np.ndarray:
    """``value`` as a numeric array; bools as fitness or metric and non-numbers are refused."""
    if isinstance(value, (str, bytes)) or value is None:
        raise ResultError(f"result {key!r} is {type(value).__name__}, expected a number or array")
    arr = np.asarray(value)
    if arr.dtype.kind not in "biuf":
        raise ResultError(f"result {key!r} has dtype {arr.dtype}, expected numbers")
    if arr.ndim == 0 and arr.dtype.kind == "b":
        raise ResultError(
            f"result {key!r} is a bool ({value!r}): fitness and metrics must be numbers "
            "(return 1.0/0.0 if that is what you mean)"
        )
    return arr


def _normalise(
    value: Any,
    fitness_key: str,
    objectives: tuple[tuple[str, float], ...] = (),
    parameters: frozenset[str] = frozenset(),
) -> tuple[float, dict[str, float], dict[str, np.ndarray]]:
    """Turn an optimizee's return value into (fitness, scalar metrics, arrays).

    Raises :class:`ResultError` for a value that cannot be stored: a key that is not an
    identifier (it becomes a variable name in the store), an array named like a variable of the
    store or a parameter, a bool as fitness or metric, or anything that is not a number/array.
    """
    if objectives:
        if not isinstance(value, Mapping):
            raise ResultError(
                "with optimizee.objectives the optimizee must return a dict of metrics"
            )
        missing = [name for name, _ in objectives if name not in value]
        if missing:
            raise ResultError(
                f"the optimizee returned no objective {missing[0]!r} "
                f"(returned: {', '.join(map(str, value))})"
            )
        _, metrics, arrays = _normalise(
            {**value, "__fitness__": 0.0}, "__fitness__", (), parameters
        )
        for name, _ in objectives:
            if name not in metrics:
                raise ResultError(f"objective {name!r} is an array, expected a scalar")
            if not math.isfinite(metrics[name]):
                return float("nan"), metrics, arrays
        return sum(f * metrics[name] for name, f in objectives), metrics, arrays
    metrics: dict[str, float] = {}
    arrays: dict[str, np.ndarray] = {}
    if isinstance(value, Mapping):
        for key, v in value.items():
            arr = _number(str(key), v)
            name = _check_key(key, arr.ndim > 0 and key != fitness_key, parameters)
            if arr.ndim == 0:
                metrics[name] = float(arr)
            else:
                arrays[name] = arr.astype(np.float64) if arr.dtype.kind != "b" else arr
        if fitness_key not in metrics:
            raise ResultError(
                f"the optimizee returned no scalar {fitness_key!r} "
                f"(returned: {', '.join(map(str, value)) or 'nothing'}); "
                "set optimizee.fitness to the metric to optimise"
            )
        fitness = metrics.pop(fitness_key)
    else:
        if isinstance(value, (str, bytes)) or value is None:
            raise ResultError(
                f"the optimizee returned {type(value).__name__}, expected a number or dict"
            )
        arr = _number("fitness", value)
        if arr.ndim != 0:
            raise ResultError(
                f"the optimizee returned an array of shape {arr.shape}; a fitness is a "
                "number (return a dict to store arrays beside it)"
            )
        fitness = float(arr)
    return fitness, metrics, arrays


_EVALUATION_LOG = logging.getLogger("l2lflow.evaluation.current")
_EVALUATION_LOG.propagate = False
_EVALUATION_LOG.setLevel(logging.INFO)


def _context(spec: EvaluationSpec, item: Mapping[str, Any], log: logging.Logger) -> Any:
    """The ``EvaluationContext`` an optimizee sees for one work item."""
    from l2lflow.optimizees.base import EvaluationContext

    return EvaluationContext(
        generation=int(item["generation"]),
        individual=int(item["individual"]),
        seed=int(item["seed"]),
        attempt=int(item.get("attempt", 0)),
        threads=spec.threads,
        scratch_root=spec.scratch_root,
        experiment_seed=spec.experiment_seed,
        task_seed=int(item.get("task_seed", 0)),
        phase=str(item.get("phase", "optimize")),
        log=log,
    )


def warm_optimizee(spec: EvaluationSpec) -> None:
    """Import the optimizee and run its ``warm_up`` (see :func:`~l2lflow.execution.sandbox.warm_up`)."""
    optimizee = _optimizee(spec.optimizee)
    if optimizee.warm_up is not None:
        optimizee.warm_up()


def run_one(spec: EvaluationSpec, item: Mapping[str, Any]) -> EvaluationResult:
    """Evaluate one individual in this process and return a plain result dict (never raises)."""
    handler = _ListHandler()
    log = _EVALUATION_LOG
    log.addHandler(handler)
    start = time.perf_counter()
    try:
        optimizee = _optimizee(spec.optimizee)
        context = _context(spec, item, log)
        kwargs = dict(spec.options)
        if optimizee.accepts_context:
            kwargs["context"] = context
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            value = optimizee.function(dict(item["params"]), int(item["seed"]), **kwargs)
        for w in caught:
            handler.lines.append(f"WARNING {w.category.__name__}: {w.message}")
        return _record(spec, item, value, time.perf_counter() - start, "\n".join(handler.lines))
    except BaseException as exc:  # noqa: BLE001 - everything becomes a failed evaluation
        if isinstance(exc, KeyboardInterrupt):
            raise
        return failure(
            item,
            "exception",
            "".join(traceback.format_exception(exc)),
            time.perf_counter() - start,
            "\n".join(handler.lines),
        )
    finally:
        log.removeHandler(handler)


def run_batch(spec: EvaluationSpec, items: list[Mapping[str, Any]]) -> list[EvaluationResult]:
    """Evaluate a chunk with one call of a batched optimizee; one result per item, in order.

    An exception fails the whole batch (the engine retries it in smaller pieces); a NaN fails
    only its own individual.
    """

    if not spec.batched:
        return [run_one(spec, item) for item in items]
    handler = _ListHandler()
    log = _EVALUATION_LOG
    log.addHandler(handler)
    start = time.perf_counter()
    try:
        optimizee = _optimizee(spec.optimizee)
        contexts = [_context(spec, item, log) for item in items]
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            values = optimizee.function(
                [dict(item["params"]) for item in items],
                [int(item["seed"]) for item in items],
                contexts=contexts,
                **spec.options,
            )
        for w in caught:
            handler.lines.append(f"WARNING {w.category.__name__}: {w.message}")
        values = list(values)
        if len(values) != len(items):
            raise ValueError(
                f"the batched optimizee returned {len(values)} results for {len(items)} individuals"
            )
    except BaseException as exc:  # noqa: BLE001 - the whole batch failed
        if isinstance(exc, KeyboardInterrupt):
            raise
        text = "".join(traceback.format_exception(exc))
        runtime = (time.perf_counter() - start) / max(1, len(items))
        return [
            failure(item, "exception", text, runtime, "\n".join(handler.lines)) for item in items
        ]
    finally:
        log.removeHandler(handler)
    runtime = (time.perf_counter() - start) / max(1, len(items))
    log_text = "\n".join(handler.lines)
    return [
        _record(spec, item, value, runtime, log_text)
        for item, value in zip(items, values, strict=True)
    ]


def _record(
    spec: EvaluationSpec, item: Mapping[str, Any], value: Any, runtime: float, log: str
) -> EvaluationResult:
    """The record of one completed evaluation's return value: done with a finite fitness;
    failed as ``result`` when the value cannot be stored, as ``nonfinite`` (with the metrics
    and arrays it returned) for a NaN/inf fitness. Both are deterministic: never retried."""
    try:
        fitness, metrics, arrays = _normalise(
            value, spec.fitness_key, spec.objectives, frozenset(item["params"])
        )
    except ResultError as exc:
        return failure(item, "result", f"ResultError: {exc}", runtime, log)
    if not math.isfinite(fitness):
        return failure(item, "nonfinite", f"fitness is {fitness!r}", runtime, log, metrics, arrays)
    return success(item, fitness, metrics, arrays, runtime, log)


def worker_identity() -> str:
    """Where an evaluation ran: Dask worker name, Slurm job id and host."""
    parts = []
    try:
        from distributed import get_worker

        parts.append(f"worker={get_worker().name}")
    except Exception:  # noqa: BLE001 - not inside a Dask worker
        parts.append(f"pid={os.getpid()}")
    job = os.environ.get("SLURM_JOB_ID")
    if job:
        parts.append(f"slurm_job={job}")
        if os.environ.get("SLURM_JOB_PARTITION"):
            parts.append(f"partition={os.environ['SLURM_JOB_PARTITION']}")
    if os.environ.get("CUDA_VISIBLE_DEVICES"):
        parts.append(f"gpu={os.environ['CUDA_VISIBLE_DEVICES']}")
    parts.append(f"host={socket.gethostname()}")
    return " ".join(parts)


def evaluate_chunk(spec: EvaluationSpec, items: list[dict[str, Any]] | Chunk) -> ChunkResults:
    """The Dask task: evaluate a few individuals one after the other (never raises for them).

    In a sandbox, the chunk is sent at once and results stream back; after a timeout or a
    crash, the sandbox is replaced and the rest of the chunk goes to the new one (for a batched
    optimizee, whose one call evaluates the whole chunk, the rest failed with it).
    """
    if isinstance(items, Chunk):
        items = items.items
    where = worker_identity()
    results: list[EvaluationResult] = []
    if not spec.isolate:
        results = run_batch(spec, items)
    else:
        with SANDBOX_LOCK:  # one chunk per sandbox at a time
            todo = list(items)
            while todo:
                sandbox = current_sandbox()
                if not sandbox.start_chunk(spec, todo):
                    reset_sandbox()
                    sandbox = current_sandbox()
                    sandbox.start_chunk(spec, todo)
                for k, item in enumerate(todo):
                    if spec.batched and k == 0:
                        result = _first_of_batch(sandbox, spec, todo)
                    else:
                        result = sandbox.next_result(spec, item)
                    results.append(result)
                    if not result["ok"] and result["reason"] in ("timeout", "crash"):
                        reset_sandbox()
                        if spec.batched:  # one call for all: every individual of it failed
                            results.extend(
                                {**result, "individual": other["individual"]}
                                for other in todo[k + 1 :]
                            )
                            todo = []
                            break
                        todo = todo[k + 1 :]
                        break
                else:
                    todo = []
    for result in results:
        result["worker"] = where
    return ChunkResults(results)


def _first_of_batch(
    sandbox: Sandbox, spec: EvaluationSpec, items: list[dict[str, Any]]
) -> EvaluationResult:
    """Wait for the first result of a batched call of ``len(items)`` individuals.

    ``evaluation.timeout_s`` bounds one evaluation, so a batch of n gets n × timeout_s (its
    results arrive together, when the call returns); the rest then arrive at once.
    """
    n = len(items)
    if spec.timeout_s is None or n == 1:
        return sandbox.next_result(spec, items[0])
    result = sandbox.next_result(replace(spec, timeout_s=spec.timeout_s * n), items[0])
    if not result["ok"] and result["reason"] == "timeout":
        result["error"] = (
            f"TimeoutError: the batched call of {n} individuals ran longer than {n} × "
            f"evaluation.timeout_s = {spec.timeout_s * n:g} s and was killed"
        )
    return result
