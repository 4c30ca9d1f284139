"""Genetic algorithm in the style of L2L's DEAP-based ``GeneticAlgorithmOptimizer``.

One generation: keep the ``n_elite`` best individuals unchanged, fill the rest by tournament
selection (``tools.selTournament``), blend crossover of consecutive pairs (``tools.cxBlend``)
and Gaussian mutation (``tools.mutGaussian``), as DEAP's ``eaSimple`` loop does. Re-implemented
on numpy so that every random draw comes from the optimizer's own seeded generator (DEAP uses
Python's global ``random``, which would break replay and checkpoints). Offspring are clipped to
the unit box. The first generation is uniform in the box.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from l2lflow.optimizers.base import Optimizer, OptimizerError, as_array, register


@register
class GeneticAlgorithm(Optimizer):
    """Elitist GA: tournament selection, blend crossover, per-gene Gaussian mutation."""

    name = "ga"
    default_options: dict[str, Any] = {
        "tournament_size": 3,
        "crossover_probability": 0.7,  # per pair (DEAP's CXPB)
        "alpha": 0.5,  # cxBlend: children lie up to alpha * |x1 - x2| beyond their parents
        "mutation_probability": 0.5,  # per individual (DEAP's MUTPB)
        "gene_probability": 0.3,  # per gene of a mutated individual (mutGaussian's indpb)
        "sigma": 0.1,  # std of the Gaussian mutation, in unit-box coordinates
        "n_elite": 1,
    }

    def _setup(self) -> None:
        o = self.options
        if int(o["tournament_size"]) < 1:
            raise OptimizerError("optimizer.options.tournament_size must be >= 1")
        for key in ("crossover_probability", "mutation_probability", "gene_probability"):
            if not 0.0 <= float(o[key]) <= 1.0:
                raise OptimizerError(f"optimizer.options.{key} must be in [0, 1]")
        if float(o["alpha"]) < 0 or float(o["sigma"]) < 0:
            raise OptimizerError("optimizer.options.alpha and sigma must be >= 0")
        if int(o["n_elite"]) < 0:
            raise OptimizerError("optimizer.options.n_elite must be >= 0")
        # at least one offspring per generation, otherwise the population could never change
        self.n_elite = min(int(o["n_elite"]), self.population_size - 1)
        self.population: np.ndarray | None = None  # last told individuals
        self.loss: np.ndarray | None = None  # and their loss

    def _ask(self) -> np.ndarray:
        n, d = self.population_size, self.dimension
        if self.population is None:
            return self.rng.random((n, d))
        o = self.options
        order = np.argsort(self.loss, kind="stable")
        elite = self.population[order[: self.n_elite]]
        m = n - self.n_elite
        # tournament: the best of tournament_size individuals drawn with replacement
        contenders = self.rng.integers(0, n, size=(m, int(o["tournament_size"])))
        winners = contenders[np.arange(m), np.argmin(self.loss[contenders], axis=1)]
        kids = self.population[winners].copy()
        # cxBlend on consecutive pairs; an odd last child is only mutated
        alpha = float(o["alpha"])
        for i in range(0, m - 1, 2):
            if self.rng.random() < float(o["crossover_probability"]):
                gamma = (1.0 + 2.0 * alpha) * self.rng.random(d) - alpha
                a, b = kids[i].copy(), kids[i + 1].copy()
                kids[i] = (1.0 - gamma) * a + gamma * b
                kids[i + 1] = gamma * a + (1.0 - gamma) * b
        # mutGaussian
        mutate = self.rng.random(m) < float(o["mutation_probability"])
        genes = (self.rng.random((m, d)) < float(o["gene_probability"])) & mutate[:, None]
        kids += genes * self.rng.normal(0.0, float(o["sigma"]), size=(m, d))
        return np.vstack([elite, np.clip(kids, 0.0, 1.0)])

    def _tell(self, x: np.ndarray, loss: np.ndarray) -> None:
        self.population = x.copy()
        self.loss = loss.copy()

    def _get_state(self) -> dict[str, Any]:
        return {"population": self.population, "loss": self.loss}

    def _set_state(self, state: dict[str, Any]) -> None:
        pop, loss = state["population"], state["loss"]
        self.population = None if pop is None else as_array(pop).reshape(-1, self.dimension)
        self.loss = None if loss is None else as_array(loss)
