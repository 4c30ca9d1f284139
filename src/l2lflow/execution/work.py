"""Work items and results: what travels between the engine, the Dask workers and the store.

The engine cuts a generation into :class:`Chunk` s (columns of work items, made in one place,
:func:`work_chunk`); every evaluation shares one :class:`EvaluationSpec`. A worker answers a
chunk with one :class:`ChunkResults` holding one :class:`EvaluationResult` per item, built only
by :func:`success`, :func:`failure` and :func:`unstorable`; dispatch hands the final ones to the
store as :class:`StoredResult`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypedDict

import numpy as np


@dataclass(frozen=True)
class EvaluationSpec:
    """What every evaluation of an experiment shares (sent with each chunk; small and picklable)."""

    optimizee: str
    options: dict[str, Any] = field(default_factory=dict)
    fitness_key: str = "fitness"
    timeout_s: float | None = None
    threads: int = 1
    experiment_seed: int = 0
    scratch_root: str | None = None
    #: run in a sandbox process (timeouts and crash isolation); False runs in the worker itself
    isolate: bool = True
    #: the optimizee evaluates a whole chunk in one call (see optimizees.base)
    batched: bool = False
    #: (metric, factor) pairs: fitness = sum of factor * metric (multi-objective experiments)
    objectives: tuple[tuple[str, float], ...] = ()


class EvaluationResult(TypedDict, total=False):
    """One evaluation's result as a worker returns it (built only by :func:`success`,
    :func:`failure` and :func:`unstorable`; a dict at run time: it is pickled by the hundred
    thousand and written to the store column by column)."""

    individual: int
    ok: bool
    fitness: float
    metrics: dict[str, float]
    arrays: dict[str, np.ndarray]
    runtime: float
    error: str
    log: str
    #: why it failed: exception, timeout, crash, result, nonfinite, worker (failures only)
    reason: str
    #: where it ran: Dask worker, Slurm job, host (set by the task)
    worker: str


class StoredResult(EvaluationResult, total=False):
    """A final result as dispatch hands it to :meth:`l2lflow.store.ResultStore.write_results`."""

    status: int
    attempts: int
    finished_at: float


def failure(
    item: Mapping[str, Any],
    reason: str,
    error: str,
    runtime: float,
    log: str = "",
    metrics: dict[str, float] | None = None,
    arrays: dict[str, np.ndarray] | None = None,
) -> EvaluationResult:
    """The result record of a failed evaluation; ``metrics`` and ``arrays`` are what a completed
    evaluation returned beside a non-finite fitness (stored with it: they say what went wrong)."""
    return {
        "individual": item["individual"],
        "ok": False,
        "reason": reason,
        "error": error,
        "log": log,
        "runtime": runtime,
        "fitness": math.nan,
        "metrics": dict(metrics or {}),
        "arrays": dict(arrays or {}),
    }


def success(
    item: Mapping[str, Any],
    fitness: float,
    metrics: dict[str, float],
    arrays: dict[str, np.ndarray],
    runtime: float,
    log: str,
) -> EvaluationResult:
    """The result record of an evaluation that gave a finite fitness (twin of :func:`failure`)."""
    return {
        "individual": item["individual"],
        "ok": True,
        "fitness": fitness,
        "metrics": metrics,
        "arrays": arrays,
        "runtime": runtime,
        "error": "",
        "log": log,
    }


def unstorable(result: EvaluationResult, error: str) -> EvaluationResult:
    """``result`` (of a completed evaluation) failed as ``result``: what it returned cannot be
    stored (e.g. a shape that differs from the run's), so none of its metrics or arrays is
    kept; where and how long it ran is."""
    return {**result, "ok": False, "reason": "result", "error": error, "metrics": {}, "arrays": {}}


class ChunkResults(list[EvaluationResult]):
    """A task's results (one record per item, in order): a list that Dask moves as one pickle.

    Dask serialises a plain list's elements one by one, each with its own header; gathering a
    generation of 20,000 results that way cost the engine 13 times the CPU time of one pickle
    per task, and was the largest part of its time per result.
    """


@dataclass(frozen=True)
class Chunk:
    """The work items of one Dask task, as columns: built on the engine with a few numpy slices
    per task (no dict per individual, and Dask does not walk anything inside); the per-item
    dicts an optimizee's context is made from exist only on the worker (:attr:`items`)."""

    generations: np.ndarray
    individuals: np.ndarray
    seeds: np.ndarray
    attempts: np.ndarray
    #: parameter name -> this chunk's values (the store's dtype)
    params: dict[str, np.ndarray]
    task_seed: int = 0
    phase: str = "optimize"
    #: parameter name -> its ``ExpressionSpec``: such a parameter's values are genomes, which
    #: the optimizee gets compiled into a callable
    expressions: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.individuals)

    @property
    def items(self) -> list[dict[str, Any]]:
        """One work-item dict per individual (Python scalars, as ``ndarray.item()`` gives)."""
        columns = {name: values.tolist() for name, values in self.params.items()}
        for name, spec in self.expressions.items():
            columns[name] = [spec.compile(genome) for genome in columns[name]]
        return [
            {
                "generation": g,
                "individual": i,
                "seed": seed,
                "params": {name: column[k] for name, column in columns.items()},
                "attempt": attempt,
                "task_seed": self.task_seed,
                "phase": self.phase,
            }
            for k, (g, i, seed, attempt) in enumerate(
                zip(
                    self.generations.tolist(),
                    self.individuals.tolist(),
                    self.seeds.tolist(),
                    self.attempts.tolist(),
                    strict=True,
                )
            )
        ]


def work_chunk(
    generations: np.ndarray | int,
    individuals: np.ndarray,
    seeds: np.ndarray,
    params: dict[str, np.ndarray],
    attempts: np.ndarray | int = 0,
    *,
    task_seed: int = 0,
    phase: str = "optimize",
    expressions: dict[str, Any] | None = None,
) -> Chunk:
    """The one place work items are made: ``individuals`` with their ``seeds``, parameter
    values (name -> one value, or an expression's genome, per individual) and attempt numbers
    (a scalar: the same for all). ``ParameterSpace.work_chunk`` selects them from the store's
    columns."""
    individuals = np.asarray(individuals, dtype=np.int64)
    n = len(individuals)
    return Chunk(
        generations=np.broadcast_to(np.asarray(generations, dtype=np.int64), (n,)),
        individuals=individuals,
        seeds=np.asarray(seeds, dtype=np.int64).reshape(n),
        attempts=np.broadcast_to(np.asarray(attempts, dtype=np.int64), (n,)),
        params={name: np.asarray(column) for name, column in params.items()},
        task_seed=int(task_seed),
        phase=phase,
        expressions=dict(expressions or {}),
    )
