"""Every random number in an experiment comes from one seed, through numpy's ``SeedSequence``.

Seeds are derived from *what* is computed (experiment seed, generation, individual), never from
*when* or *where* it runs, so the number of workers, the order of completion and interruptions
cannot change a result.
"""

from __future__ import annotations

import numpy as np

# spawn-key roots: one per kind of randomness, so that streams never overlap
_EVALUATION = 0
_OPTIMIZER = 1
_TASKS = 2
_META_TEST = 3


def _draw(entropy: int, *key: int) -> int:
    seq = np.random.SeedSequence(int(entropy), spawn_key=tuple(int(k) for k in key))
    return int(seq.generate_state(1, np.uint64)[0] >> np.uint64(1))  # fits in int64


def evaluation_seed(experiment_seed: int, generation: int, individual: int) -> int:
    """The seed of one evaluation (the same on every retry and every rerun)."""
    return _draw(experiment_seed, _EVALUATION, generation, individual)


def evaluation_seeds(experiment_seed: int, generation: int, population_size: int) -> np.ndarray:
    """:func:`evaluation_seed` for a whole generation, as an int64 array."""
    return np.array(
        [evaluation_seed(experiment_seed, generation, i) for i in range(population_size)],
        dtype=np.int64,
    )


def optimizer_seed(experiment_seed: int) -> int:
    """The seed of the outer-loop optimizer's own generator."""
    return _draw(experiment_seed, _OPTIMIZER)


def task_seed(experiment_seed: int, generation: int) -> int:
    """The seed of the tasks drawn for a generation: the same for every individual in it."""
    return _draw(experiment_seed, _TASKS, generation)


def meta_test_seed(experiment_seed: int) -> int:
    """The seed of the held-out meta-test tasks, disjoint from every generation's tasks."""
    return _draw(experiment_seed, _META_TEST)
