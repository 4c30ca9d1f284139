"""NSGA-II (Deb et al. 2002): multi-objective evolution that keeps a Pareto front.

Parents and offspring are merged, sorted into non-dominated fronts, and the next parents are
the best fronts, the last one thinned by crowding distance so the front stays spread out.
Offspring come from binary tournaments on (front, crowding), simulated binary crossover and
polynomial mutation, all in the unit box. Told a single fitness column it is a plain elitist GA.
"""

from __future__ import annotations

import numpy as np

from l2lflow.optimizers.base import Optimizer, OptimizerError, ParentsState, register


def non_dominated_fronts(loss: np.ndarray) -> list[np.ndarray]:
    """Indices of each Pareto front of ``loss`` (rows = points, columns = objectives, minimised)."""
    n = loss.shape[0]
    le = np.all(loss[:, None, :] <= loss[None, :, :], axis=2)
    lt = np.any(loss[:, None, :] < loss[None, :, :], axis=2)
    dominates = le & lt  # [i, j]: i dominates j
    counts = dominates.sum(axis=0)
    fronts = []
    remaining = np.ones(n, dtype=bool)
    current = np.flatnonzero(counts == 0)
    while current.size:
        fronts.append(current)
        remaining[current] = False
        counts = counts - dominates[current].sum(axis=0)
        current = np.flatnonzero((counts == 0) & remaining)
    return fronts


def crowding_distance(loss: np.ndarray) -> np.ndarray:
    """Crowding distance of each point of one front (boundary points get infinity)."""
    n, k = loss.shape
    distance = np.zeros(n)
    if n <= 2:
        return np.full(n, np.inf)
    for j in range(k):
        order = np.argsort(loss[:, j], kind="stable")
        values = loss[order, j]
        with np.errstate(invalid="ignore"):  # inf - inf for failed individuals: no span
            span = values[-1] - values[0]
        distance[order[0]] = distance[order[-1]] = np.inf
        if span > 0 and np.isfinite(span):
            distance[order[1:-1]] += (values[2:] - values[:-2]) / span
    return distance


def pareto_ranks(loss: np.ndarray) -> np.ndarray:
    """Front number of each point (0 = the Pareto front)."""
    ranks = np.empty(loss.shape[0], dtype=np.int64)
    for r, front in enumerate(non_dominated_fronts(loss)):
        ranks[front] = r
    return ranks


def hypervolume_2d(loss: np.ndarray, reference: tuple[float, float]) -> float:
    """Area dominated by 2-objective points (minimised) up to ``reference``."""
    pts = loss[np.all(np.isfinite(loss), axis=1)]
    pts = pts[(pts[:, 0] < reference[0]) & (pts[:, 1] < reference[1])]
    if pts.size == 0:
        return 0.0
    pts = pts[np.argsort(pts[:, 0], kind="stable")]
    area, best_f2 = 0.0, reference[1]
    for f1, f2 in pts:
        if f2 < best_f2:
            area += (reference[0] - f1) * (best_f2 - f2)
            best_f2 = f2
    return float(area)


@register
class NSGA2(ParentsState, Optimizer):
    name = "nsga2"
    multi_objective = True
    default_options = {
        "crossover_probability": 0.9,
        "eta_crossover": 15.0,  # SBX distribution index: larger = children closer to parents
        "mutation_probability": None,  # per gene; None = 1 / dimension
        "eta_mutation": 20.0,
    }

    def _setup(self) -> None:
        if self.population_size < 2:
            raise OptimizerError("population_size: nsga2 needs at least 2 individuals")
        self.parents: np.ndarray | None = None
        self.parent_loss: np.ndarray | None = None

    # -------------------------------------------------------------- selection
    def _rank_and_crowding(self, loss: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        ranks = np.empty(loss.shape[0], dtype=np.int64)
        crowd = np.empty(loss.shape[0])
        for r, front in enumerate(non_dominated_fronts(loss)):
            ranks[front] = r
            crowd[front] = crowding_distance(loss[front])
        return ranks, crowd

    def _tournament(self, ranks: np.ndarray, crowd: np.ndarray) -> int:
        a, b = self.rng.integers(0, ranks.size, size=2)
        if ranks[a] != ranks[b]:
            return int(a if ranks[a] < ranks[b] else b)
        return int(a if crowd[a] >= crowd[b] else b)

    # -------------------------------------------------------------- variation
    def _sbx(self, p1: np.ndarray, p2: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        eta = float(self.options["eta_crossover"])
        u = self.rng.random(self.dimension)
        beta = np.where(
            u <= 0.5, (2 * u) ** (1 / (eta + 1)), (1 / (2 * (1 - u))) ** (1 / (eta + 1))
        )
        c1 = 0.5 * ((1 + beta) * p1 + (1 - beta) * p2)
        c2 = 0.5 * ((1 - beta) * p1 + (1 + beta) * p2)
        return c1, c2

    def _mutate(self, x: np.ndarray) -> np.ndarray:
        eta = float(self.options["eta_mutation"])
        pm = self.options["mutation_probability"] or 1.0 / self.dimension
        mask = self.rng.random(self.dimension) < pm
        u = self.rng.random(self.dimension)
        delta = np.where(
            u < 0.5, (2 * u) ** (1 / (eta + 1)) - 1, 1 - (2 * (1 - u)) ** (1 / (eta + 1))
        )
        return np.clip(np.where(mask, x + delta, x), 0.0, 1.0)

    def _ask(self) -> np.ndarray:
        if self.parents is None:
            return self.rng.random((self.population_size, self.dimension))
        ranks, crowd = self._rank_and_crowding(self.parent_loss)
        children = []
        while len(children) < self.population_size:
            p1 = self.parents[self._tournament(ranks, crowd)]
            p2 = self.parents[self._tournament(ranks, crowd)]
            if self.rng.random() < float(self.options["crossover_probability"]):
                c1, c2 = self._sbx(p1, p2)
            else:
                c1, c2 = p1.copy(), p2.copy()
            children.extend([self._mutate(c1), self._mutate(c2)])
        return np.asarray(children[: self.population_size])

    def _tell(self, x: np.ndarray, loss: np.ndarray) -> None:
        loss = loss.reshape(self.population_size, -1)
        if self.parents is None:
            pool_x, pool_loss = x, loss
        else:
            pool_x = np.vstack([self.parents, x])
            pool_loss = np.vstack([self.parent_loss, loss])
        # inf (failed) sorts last; keep it comparable by a large finite stand-in
        comparable = np.where(np.isfinite(pool_loss), pool_loss, np.finfo(np.float64).max)
        chosen: list[int] = []
        for front in non_dominated_fronts(comparable):
            if len(chosen) + front.size <= self.population_size:
                chosen.extend(front.tolist())
            else:
                crowd = crowding_distance(comparable[front])
                order = np.argsort(-crowd, kind="stable")
                chosen.extend(front[order[: self.population_size - len(chosen)]].tolist())
                break
        self.parents = pool_x[chosen]
        self.parent_loss = pool_loss[chosen]
