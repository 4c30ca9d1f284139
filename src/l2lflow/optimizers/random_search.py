"""Random search: uniform samples in the unit box.

The baseline every other optimizer must beat, and a sensible choice when evaluations are so
noisy that no model of the landscape pays off. It has no state beyond its generator.
"""

from __future__ import annotations

import numpy as np

from l2lflow.optimizers.base import Optimizer, register


@register
class RandomSearch(Optimizer):
    """Each generation is ``population_size`` independent uniform points in ``[0, 1]^d``."""

    name = "random"

    def _ask(self) -> np.ndarray:
        return self.rng.random((self.population_size, self.dimension))

    def _tell(self, x: np.ndarray, loss: np.ndarray) -> None:
        """Nothing to learn: the results store keeps every point and its fitness."""
