"""Every random number in an experiment comes from one seed, through numpy's ``SeedSequence``.

Seeds are derived from *what* is computed (experiment seed, generation, individual), never from
*when* or *where* it runs, so the number of workers, the order of completion and interruptions
cannot change a result.

Range: every seed handed to an optimizee (``seed``, ``context.task_seed``) is an integer in
``[0, 2**63 - 1]`` (it fits numpy's int64). Simulators with a narrower seed type need a mapping:
:func:`nest_seed` for NEST's ``rng_seed`` (``0 < s < 2**32 - 1``).
"""

from __future__ import annotations

import numpy as np

# spawn-key roots: one per kind of randomness, so that streams never overlap
_EVALUATION = 0
_OPTIMIZER = 1
_TASKS = 2
_META_TEST = 3

#: the largest seed an optimizee gets (seeds are drawn in ``[0, SEED_MAX]``)
SEED_MAX = 2**63 - 1
#: NEST accepts ``rng_seed`` only in ``(0, 2**32 - 1)``: :func:`nest_seed` maps into [1, this]
NEST_SEED_MAX = 2**32 - 2


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


def nest_seed(seed: int) -> int:
    """Map an l2lflow seed (``[0, 2**63 - 1]``) deterministically into NEST's ``rng_seed`` range.

    NEST refuses ``nest.SetKernelStatus({"rng_seed": seed})`` with l2lflow's 63-bit seeds ("RNG
    seed must be in (0, 2^32-1)"); use ``nest.SetKernelStatus({"rng_seed": nest_seed(seed)})``.
    The seed goes through a ``SeedSequence`` rather than ``seed % 2**32`` so that seeds that
    differ only in their high bits still give different NEST streams. The built-in NEST
    optimizees (``reset_kernel``, ``nest_session``) seed NEST through this function, so a ported
    script that uses it gets the same streams as they do.
    """
    seed = int(seed)
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    state = np.random.SeedSequence(seed).generate_state(1, np.uint32)[0]
    return 1 + int(state) % NEST_SEED_MAX
