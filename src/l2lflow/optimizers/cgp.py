"""Cartesian genetic programming: (μ+λ) evolution of expressions and floats (``cgp``).

As in "Evolving to learn" (Jordan et al., eLife 2021, with hal-cgp): the ``n_parents`` best
individuals found so far are the parents; each generation asks ``population_size`` offspring,
each a mutated copy of a parent drawn at random; parents and offspring together are ranked by
loss and the best ``n_parents`` become the next parents. At equal loss an offspring wins over
its parent, so the search drifts through genomes of equal fitness (neutral drift, on which
CGP relies). Generation 0 is random.

Mutation, per expression parameter (its genes are the box dimensions ``spec`` describes, see
:mod:`l2lflow.space`): every gene changes with probability ``mutation_rate`` to another of its
values; if no *active* gene (one the formula depends on) changed, one active gene is changed,
so that every offspring is a different formula (Goldman & Punch's "single active mutation"
guarantee). Every other dimension (float, int, choice parameters) gets Gaussian noise of
``sigma`` in unit-box coordinates, reflected at the box's faces. Without expression parameters
``cgp`` is a (μ+λ) evolution strategy with a fixed step.

``reevaluate_parents: true`` spends the first ``n_parents`` individuals of each generation on
the parents themselves, so a parent's fitness is always measured on the current generation's
tasks (learning-to-learn fitness is noisy: each generation draws new tasks) and a lucky draw
cannot keep a parent forever.

The state (parents and their losses) is plain data: ``cgp`` checkpoints as JSON.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from l2lflow.optimizers.base import Optimizer, OptimizerError, ParentsState, register


@register
class CGP(ParentsState, Optimizer):
    """(μ+λ) evolution with CGP mutation for expression parameters, Gaussian for the rest."""

    name = "cgp"
    default_options: dict[str, Any] = {
        "n_parents": 4,  # μ (at most population_size)
        "mutation_rate": 0.1,  # per gene of an expression's genome
        "sigma": 0.1,  # Gaussian step of the other dimensions, in unit-box coordinates
        "reevaluate_parents": False,
    }

    def _setup(self) -> None:
        o = self.options
        if not (isinstance(o["n_parents"], int) and o["n_parents"] >= 1):
            raise OptimizerError("optimizer.options.n_parents must be an integer >= 1")
        if not 0.0 <= float(o["mutation_rate"]) <= 1.0:
            raise OptimizerError("optimizer.options.mutation_rate must be in [0, 1]")
        if float(o["sigma"]) <= 0:
            raise OptimizerError("optimizer.options.sigma must be > 0")
        self.n_parents = min(int(o["n_parents"]), self.population_size)
        if o["reevaluate_parents"] and self.population_size <= self.n_parents:
            raise OptimizerError(
                "optimizer.options.reevaluate_parents needs population_size > n_parents "
                f"({self.population_size} <= {self.n_parents})"
            )
        self.genomes = [(offset, spec) for offset, spec in self.expressions]
        self.continuous = np.ones(self.dimension, dtype=bool)
        for offset, spec in self.genomes:
            self.continuous[offset : offset + spec.genome_length] = False
        self.parents: np.ndarray | None = None  # (μ, dimension), best first
        self.parent_loss: np.ndarray | None = None

    # ------------------------------------------------------------------ genes <-> box
    @staticmethod
    def _to_box(genome: np.ndarray, alleles: np.ndarray) -> np.ndarray:
        """Gene values to the centres of their bins (what :mod:`l2lflow.space` decodes back)."""
        return (genome + 0.5) / alleles

    @staticmethod
    def _to_genes(u: np.ndarray, alleles: np.ndarray) -> np.ndarray:
        return np.minimum(np.floor(u * alleles).astype(np.int64), alleles - 1)

    def _random(self, n: int) -> np.ndarray:
        x = self.rng.random((n, self.dimension))
        for offset, spec in self.genomes:  # bin centres, so genes round-trip exactly
            cols = slice(offset, offset + spec.genome_length)
            x[:, cols] = self._to_box(self._to_genes(x[:, cols], spec.alleles), spec.alleles)
        return x

    def _mutate(self, parent: np.ndarray) -> np.ndarray:
        child = parent.copy()
        rate = float(self.options["mutation_rate"])
        for offset, spec in self.genomes:
            cols = slice(offset, offset + spec.genome_length)
            alleles = spec.alleles
            genome = self._to_genes(parent[cols], alleles)
            new = genome.copy()
            chosen = (self.rng.random(len(genome)) < rate) & (alleles > 1)
            active = spec.active(genome)
            if not np.any(chosen & active):
                candidates = np.flatnonzero(active & (alleles > 1))
                if candidates.size:
                    chosen[candidates[self.rng.integers(candidates.size)]] = True
            for i in np.flatnonzero(chosen):
                # uniformly one of the other values
                value = int(self.rng.integers(alleles[i] - 1))
                new[i] = value + (value >= genome[i])
            child[cols] = self._to_box(new, alleles)
        if self.continuous.any():
            step = self.rng.standard_normal(int(self.continuous.sum())) * float(
                self.options["sigma"]
            )
            y = np.abs(child[self.continuous] + step)  # reflect at 0 ...
            child[self.continuous] = 1.0 - np.abs(1.0 - np.mod(y, 2.0))  # ... and at 1
        return child

    # ------------------------------------------------------------------ ask / tell
    def _ask(self) -> np.ndarray:
        if self.parents is None:
            return self._random(self.population_size)
        rows = []
        if self.options["reevaluate_parents"]:
            rows = list(self.parents)
        while len(rows) < self.population_size:
            rows.append(self._mutate(self.parents[self.rng.integers(len(self.parents))]))
        return np.array(rows)

    def _tell(self, x: np.ndarray, loss: np.ndarray) -> None:
        # offspring first: the stable sort then prefers them at equal loss (neutral drift)
        if self.parents is None:
            pool_x, pool_loss = x, loss
        elif self.options["reevaluate_parents"]:  # the parents are x's first rows, re-measured
            m = len(self.parents)
            pool_x = np.vstack([x[m:], x[:m]])
            pool_loss = np.concatenate([loss[m:], loss[:m]])
        else:
            pool_x = np.vstack([x, self.parents])
            pool_loss = np.concatenate([loss, self.parent_loss])
        order = np.argsort(pool_loss, kind="stable")[: self.n_parents]
        self.parents = pool_x[order].copy()
        self.parent_loss = pool_loss[order].copy()

    @property
    def best(self) -> tuple[np.ndarray, float] | None:
        if self.parents is None:
            return None
        return self.parents[0].copy(), float(self.parent_loss[0])
