"""The parameter space: maps the optimizers' unit box to the user's typed parameters.

Optimizers only ever see ``[0, 1]^d``; this module turns a point of that box into
``{"tau_m": 12.3, "n_hidden": 64, "synapse": "stdp"}`` (linear or log scale, rounding for ints,
equal bins for choices), so every optimizer handles every kind of parameter.

An ``expression`` parameter (a formula, see :mod:`l2lflow.expression`) takes one box dimension
per gene of its CGP genome, each decoded like a choice among that gene's values: every
optimizer can search it, and the ``cgp`` optimizer mutates it as a genome. Its value is the
integer genome (stored on ``(generation, individual, <name>_gene)``) with the simplified formula
beside it (``<name>_formula``); an optimizee gets a callable :class:`~l2lflow.expression.Expression`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from l2lflow.expression import ExpressionSpec


@dataclass(frozen=True)
class Parameter:
    name: str
    kind: str  # float | int | choice | expression
    low: float = 0.0
    high: float = 1.0
    scale: str = "linear"
    choices: tuple[Any, ...] = ()
    expression: ExpressionSpec | None = None

    @property
    def width(self) -> int:
        """Dimensions of the unit box this parameter takes (an expression: one per gene)."""
        return self.expression.genome_length if self.expression is not None else 1

    @property
    def grid_points(self) -> int | None:
        """How many distinct values the parameter has (None for a continuous one)."""
        if self.kind == "choice":
            return len(self.choices)
        if self.kind == "int" and self.scale == "linear":
            return int(self.high - self.low) + 1
        return None

    @property
    def dtype(self) -> str:
        """The store's dtype for this parameter's values."""
        if self.kind == "expression":
            return "int64"
        if self.kind == "float":
            return "float64"
        if self.kind == "int":
            return "int64"
        first = self.choices[0]
        if isinstance(first, bool):
            return "bool"
        if isinstance(first, str):
            return f"<U{max(len(c) for c in self.choices)}"
        if all(isinstance(c, int) for c in self.choices):
            return "int64"
        return "float64"

    def decode(self, u: np.ndarray) -> np.ndarray:
        """Unit-box coordinates (1-D; an expression's: one column per gene) to its values."""
        u = np.clip(np.asarray(u, dtype=np.float64), 0.0, 1.0)
        if self.expression is not None:  # each gene: equal bins, one per value
            alleles = self.expression.alleles
            return np.minimum(np.floor(u * alleles).astype(np.int64), alleles - 1)
        if self.kind == "choice":
            idx = np.minimum((u * len(self.choices)).astype(np.int64), len(self.choices) - 1)
            return np.array(self.choices, dtype=self.dtype)[idx]
        if self.scale == "log":
            lo, hi = math.log(self.low), math.log(self.high)
            values = np.exp(lo + u * (hi - lo))
        else:
            values = self.low + u * (self.high - self.low)
        # floating point may miss the bounds by an ulp: the box's corners are the bounds exactly
        values = np.clip(
            np.where(u == 0.0, self.low, np.where(u == 1.0, self.high, values)), self.low, self.high
        )
        if self.kind == "int":
            if self.scale == "linear":
                # equal-width bins, one per integer, so that every integer is equally likely
                n = int(self.high - self.low) + 1
                values = self.low + np.minimum(np.floor(u * n), n - 1)
            values = np.clip(np.rint(values), self.low, self.high).astype(np.int64)
        return values


#: optimizer options that take one value per parameter: a number, a list, or a mapping by name
PER_PARAMETER_OPTIONS = ("sigma", "noise_std", "sigma0")


class ParameterSpace:
    """An ordered set of :class:`Parameter` (the order fixes the optimizer's dimensions)."""

    def __init__(self, parameters: list[Parameter]) -> None:
        self.parameters = parameters

    @classmethod
    def from_config(cls, space: dict[str, dict[str, Any]]) -> ParameterSpace:
        params = []
        for name, spec in space.items():
            kind = spec.get("type", "float")
            if kind == "choice":
                params.append(Parameter(name, kind, choices=tuple(spec["choices"])))
            elif kind == "expression":
                params.append(Parameter(name, kind, expression=ExpressionSpec.from_config(spec)))
            else:
                params.append(
                    Parameter(
                        name,
                        kind,
                        low=float(spec["low"]),
                        high=float(spec["high"]),
                        scale=spec.get("scale", "linear"),
                    )
                )
        return cls(params)

    @property
    def names(self) -> list[str]:
        return [p.name for p in self.parameters]

    @property
    def dimension(self) -> int:
        return sum(p.width for p in self.parameters)

    @property
    def grid_points(self) -> list[int | None]:
        """Per box dimension, how many distinct values it has (None: continuous)."""
        points: list[int | None] = []
        for p in self.parameters:
            if p.expression is not None:
                points += [int(a) for a in p.expression.alleles]
            else:
                points.append(p.grid_points)
        return points

    @property
    def expressions(self) -> list[tuple[int, ExpressionSpec]]:
        """(first box dimension, spec) of each expression parameter (what ``cgp`` mutates)."""
        out, offset = [], 0
        for p in self.parameters:
            if p.expression is not None:
                out.append((offset, p.expression))
            offset += p.width
        return out

    def decode(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """A generation ``(population, dimension)`` in the unit box → one array per parameter
        (an expression's: the genomes ``(population, genes)`` and ``<name>_formula`` texts)."""
        x = np.atleast_2d(np.asarray(x, dtype=np.float64))
        values: dict[str, np.ndarray] = {}
        offset = 0
        for p in self.parameters:
            if p.expression is not None:
                genomes = p.decode(x[:, offset : offset + p.width])
                values[p.name] = genomes
                values[f"{p.name}_formula"] = np.array(
                    [p.expression.formula(g) for g in genomes], dtype=str
                )
            else:
                values[p.name] = p.decode(x[:, offset])
            offset += p.width
        return values

    def optimizer_options(self, options: dict[str, Any]) -> dict[str, Any]:
        """``options`` with each per-parameter option given as a mapping by parameter name
        (:data:`PER_PARAMETER_OPTIONS`) turned into one value per box dimension, in space
        order (an expression's value for each of its genes); the values stay unit-box steps."""
        out = dict(options)
        for key in PER_PARAMETER_OPTIONS:
            value = out.get(key)
            if not isinstance(value, dict):
                continue
            unknown = sorted(set(value) - set(self.names))
            missing = [n for n in self.names if n not in value]
            if unknown or missing:
                from l2lflow.optimizers.base import OptimizerError

                what = f"unknown {unknown}" if unknown else f"missing {missing}"
                raise OptimizerError(
                    f"optimizer.options.{key}: a mapping needs one value for every parameter "
                    f"of space ({what}; parameters: {', '.join(self.names)})"
                )
            out[key] = [value[p.name] for p in self.parameters for _ in range(p.width)]
        return out

    def optimizee_values(self, values: dict[str, np.ndarray], index: int) -> dict[str, Any]:
        """What the optimizee gets for individual ``index`` of stored ``values``: plain Python
        values, and a callable :class:`~l2lflow.expression.Expression` per expression."""
        return {
            p.name: p.expression.compile(values[p.name][index])
            if p.expression is not None
            else values[p.name][index].item()
            for p in self.parameters
        }

    def work_chunk(
        self,
        generation: int,
        rows: np.ndarray,
        seeds: Any,
        values: dict[str, np.ndarray],
        attempts: Any = 0,
        *,
        task_seed: int = 0,
        phase: str = "optimize",
    ) -> Any:
        """The work items of individuals ``rows`` of stored ``values`` as one
        :class:`~l2lflow.execution.work.Chunk` (columns; each item's optimizee values are what
        :meth:`optimizee_values` gives, made on the worker)."""
        from l2lflow.execution.work import work_chunk

        return work_chunk(
            generation,
            rows,
            seeds,
            {p.name: np.asarray(values[p.name])[rows] for p in self.parameters},
            attempts,
            task_seed=task_seed,
            phase=phase,
            expressions={p.name: p.expression for p in self.parameters if p.expression},
        )

    @staticmethod
    def individual(values: dict[str, np.ndarray], index: int) -> dict[str, Any]:
        """The parameters of one individual as plain Python values (what an optimizee gets)."""
        return {name: column[index].item() for name, column in values.items()}
