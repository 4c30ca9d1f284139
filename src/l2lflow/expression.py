"""Symbolic expressions as parameters: Cartesian genetic programming (CGP) genomes.

"Evolving to learn" (Jordan, Schmidt, Senn & Petrovici, eLife 2021) searches plasticity rules as
formulas of presynaptic and postsynaptic traces, the weight and an error or reward signal. An
``expression`` parameter holds such a formula as a CGP genome (Miller 2011): one row of
``n_nodes`` nodes, each an operation (gene 1) of two earlier nodes or inputs (genes 2 and 3),
and one output gene naming the node (or input) whose value is the formula. The genome is a
fixed-length integer vector, so it fits the store's ``(generation, individual, gene)`` layout;
gene ``i`` takes :meth:`ExpressionSpec.alleles` ``[i]`` values. Nodes the output does not reach
are inactive: they change nothing (neutral drift, which CGP relies on).

What no maintained library offers here is written here: the genome layout, its evaluation on
numpy or torch arrays (Python operators only, so both work) and its translation to sympy. The
paper's own library (hal-cgp) pins numpy ~1.18; sympy simplifies the formulas.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

#: operation name -> (arity, numeric function, sympy function); binary ones use both inputs
OPERATIONS: dict[str, tuple[int, Callable[..., Any], Callable[..., Any]]] = {
    "add": (2, lambda a, b: a + b, lambda a, b: a + b),
    "sub": (2, lambda a, b: a - b, lambda a, b: a - b),
    "mul": (2, lambda a, b: a * b, lambda a, b: a * b),
    "div": (2, lambda a, b: a / b, lambda a, b: a / b),
    "neg": (1, lambda a, b: -a, lambda a, b: -a),
    "square": (1, lambda a, b: a * a, lambda a, b: a * a),
}
DEFAULT_OPERATIONS = ("add", "sub", "mul", "div")
GENES_PER_NODE = 3  # operation, first input, second input


@dataclass(frozen=True)
class ExpressionSpec:
    """What an expression may be made of: its inputs (the callable's arguments, in order),
    fixed constants, the primitive operations, and the genome size (``n_nodes``)."""

    inputs: tuple[str, ...]
    operations: tuple[str, ...] = DEFAULT_OPERATIONS
    n_nodes: int = 10
    constants: tuple[float, ...] = ()

    @classmethod
    def from_config(cls, spec: dict[str, Any]) -> ExpressionSpec:
        return cls(
            inputs=tuple(spec["inputs"]),
            operations=tuple(spec.get("operations", DEFAULT_OPERATIONS)),
            n_nodes=int(spec.get("n_nodes", 10)),
            constants=tuple(float(c) for c in spec.get("constants", ())),
        )

    @property
    def n_sources(self) -> int:
        """Inputs and constants: the first addresses a node's input genes can name."""
        return len(self.inputs) + len(self.constants)

    @property
    def genome_length(self) -> int:
        return GENES_PER_NODE * self.n_nodes + 1

    @functools.cached_property
    def alleles(self) -> np.ndarray:
        """How many values each gene takes: operations for gene 1 of a node, every source and
        earlier node for its input genes, every source and node for the output gene."""
        counts = []
        for k in range(self.n_nodes):
            counts += [len(self.operations), self.n_sources + k, self.n_sources + k]
        counts.append(self.n_sources + self.n_nodes)
        return np.array(counts, dtype=np.int64)

    def random_genome(self, rng: np.random.Generator) -> np.ndarray:
        return np.floor(rng.random(self.genome_length) * self.alleles).astype(np.int64)

    def active(self, genome: Sequence[int]) -> np.ndarray:
        """Mask of the genes that the output depends on (the output gene always counts)."""
        genome = np.asarray(genome, dtype=np.int64)
        active = np.zeros(self.genome_length, dtype=bool)
        active[-1] = True
        needed = {int(genome[-1])}
        for k in range(self.n_nodes - 1, -1, -1):
            if self.n_sources + k not in needed:
                continue
            base = GENES_PER_NODE * k
            arity = OPERATIONS[self.operations[genome[base]]][0]
            active[base : base + 1 + arity] = True
            needed.update(int(genome[base + 1 + j]) for j in range(arity))
        return active

    def _walk(self, genome: Sequence[int], sources: list[Any], column: int) -> Any:
        """The output's value, computing the active nodes from ``sources`` with the
        operations' ``column`` (1: numeric, 2: sympy)."""
        genome = [int(g) for g in genome]
        active = self.active(genome)
        values: dict[int, Any] = dict(enumerate(sources))
        for k in range(self.n_nodes):
            base = GENES_PER_NODE * k
            if not active[base]:
                continue
            fn = OPERATIONS[self.operations[genome[base]]][column]
            values[self.n_sources + k] = fn(values[genome[base + 1]], values[genome[base + 2]])
        return values[genome[-1]]

    def compile(self, genome: Sequence[int]) -> Expression:
        """The callable an optimizee receives."""
        return Expression(self, tuple(int(g) for g in genome))

    def sympy(self, genome: Sequence[int]) -> Any:
        """The formula as an (unsimplified) sympy expression of the inputs' symbols."""
        import sympy

        symbols = [sympy.Symbol(name, real=True) for name in self.inputs]
        constants = [sympy.nsimplify(c) for c in self.constants]
        return self._walk(genome, [*symbols, *constants], 2)

    def formula(self, genome: Sequence[int]) -> str:
        """The simplified formula as text (what the store keeps and ``ds.l2l.best()`` shows)."""
        return _simplified_text(self, tuple(int(g) for g in self._active_genome(genome)))

    def _active_genome(self, genome: Sequence[int]) -> np.ndarray:
        """The genome with inactive genes zeroed: equal for equal formulas-to-be (cache key)."""
        genome = np.asarray(genome, dtype=np.int64)
        return np.where(self.active(genome), genome, 0)


@functools.lru_cache(maxsize=65536)
def _simplified_text(spec: ExpressionSpec, active_genome: tuple[int, ...]) -> str:
    import sympy

    return str(sympy.simplify(spec.sympy(active_genome)))


@dataclass(frozen=True)
class Expression:
    """An evolved formula: call it like a function of the spec's inputs (positionally, in
    order, or by name) on numbers, numpy arrays or torch tensors; ``formula`` is its text."""

    spec: ExpressionSpec
    genome: tuple[int, ...]

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if kwargs:
            missing = [n for n in self.spec.inputs[len(args) :] if n not in kwargs]
            if missing:
                raise TypeError(f"expression needs inputs {list(self.spec.inputs)}: {missing}")
            args = (*args, *(kwargs[n] for n in self.spec.inputs[len(args) :]))
        if len(args) != len(self.spec.inputs):
            raise TypeError(f"expression takes {len(self.spec.inputs)} inputs {self.spec.inputs}")
        out = self.spec._walk(self.genome, [*args, *self.spec.constants], 1)
        if not hasattr(out, "shape") and hasattr(args[0], "shape"):
            out = args[0] * 0 + out  # a constant formula still gives one value per element
        return out

    @property
    def formula(self) -> str:
        return self.spec.formula(self.genome)

    def sympy(self) -> Any:
        return self.spec.sympy(self.genome)

    def __str__(self) -> str:
        return self.formula
