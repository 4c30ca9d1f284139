"""Grid search: a full factorial grid, walked in order.

Points sit at the centres of equal bins, ``(k + 0.5) / n``, so that the space's mapping of the
unit box to integers or choices hits every value exactly once per dimension. A dimension with
``grid_points[d]`` (an integer or choice parameter) gets that many values; continuous ones get
``points_per_dimension``. The walk is in ``itertools.product`` order (last dimension fastest) and
wraps around when the grid is exhausted, so every generation still has ``population_size``
points. The state is just the position, and the optimizer draws no random numbers at all.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from l2lflow.optimizers.base import Optimizer, OptimizerError, register


@register
class GridSearch(Optimizer):
    """Asks the next ``population_size`` points of the grid each generation."""

    name = "grid"
    uses_seed = False  # the grid is walked in product order
    default_options: dict[str, Any] = {"points_per_dimension": 5}

    def _setup(self) -> None:
        ppd = self.options["points_per_dimension"]
        if isinstance(ppd, bool) or not isinstance(ppd, int) or ppd < 1:
            raise OptimizerError(
                f"optimizer.options.points_per_dimension must be an integer >= 1, not {ppd!r}"
            )
        if len(self.grid_points) != self.dimension:
            raise OptimizerError(
                f"grid_points has {len(self.grid_points)} entries for {self.dimension} dimensions"
            )
        self.shape = [int(ppd) if n is None else int(n) for n in self.grid_points]
        if min(self.shape) < 1:
            raise OptimizerError(f"grid_points must be >= 1, not {self.grid_points}")
        self.size = 1
        for n in self.shape:
            self.size *= n  # a Python int: no overflow even for huge grids
        self.position = 0

    def _index(self, flat: int) -> list[int]:
        """Mixed-radix digits of ``flat``, first dimension slowest."""
        digits = []
        for n in reversed(self.shape):
            flat, k = divmod(flat, n)
            digits.append(k)
        return digits[::-1]

    def _ask(self) -> np.ndarray:
        shape = np.asarray(self.shape, dtype=np.float64)
        rows = [self._index((self.position + i) % self.size) for i in range(self.population_size)]
        return (np.asarray(rows, dtype=np.float64) + 0.5) / shape

    def _tell(self, x: np.ndarray, loss: np.ndarray) -> None:
        self.position = (self.position + self.population_size) % self.size

    def _get_state(self) -> dict[str, Any]:
        return {"position": self.position}

    def _set_state(self, state: dict[str, Any]) -> None:
        self.position = int(state["position"])
