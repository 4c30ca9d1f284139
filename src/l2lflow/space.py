"""The parameter space: maps the optimizers' unit box to the user's typed parameters.

Optimizers only ever see ``[0, 1]^d``; this module turns a point of that box into
``{"tau_m": 12.3, "n_hidden": 64, "synapse": "stdp"}`` (linear or log scale, rounding for ints,
equal bins for choices), so every optimizer handles every kind of parameter.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Parameter:
    name: str
    kind: str  # float | int | choice
    low: float = 0.0
    high: float = 1.0
    scale: str = "linear"
    choices: tuple[Any, ...] = ()

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
        """Unit-box coordinates (1-D) to this parameter's values."""
        u = np.clip(np.asarray(u, dtype=np.float64), 0.0, 1.0)
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
        return len(self.parameters)

    @property
    def grid_points(self) -> list[int | None]:
        return [p.grid_points for p in self.parameters]

    def decode(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """A generation ``(population, dimension)`` in the unit box → one array per parameter."""
        x = np.atleast_2d(np.asarray(x, dtype=np.float64))
        return {p.name: p.decode(x[:, j]) for j, p in enumerate(self.parameters)}

    @staticmethod
    def individual(values: dict[str, np.ndarray], index: int) -> dict[str, Any]:
        """The parameters of one individual as plain Python values (what an optimizee gets)."""
        return {name: column[index].item() for name, column in values.items()}
