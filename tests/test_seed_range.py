"""The seeds an optimizee gets, and the documented helper that maps them into NEST's range.

A NEST script ported as an optimizee writes ``nest.SetKernelStatus({"rng_seed": seed})``; NEST
refuses l2lflow's 63-bit seeds ("RNG seed must be in (0, 2^32-1)"). ``l2lflow.seeds.nest_seed``
maps them, and is the very function the built-in NEST optimizees seed with (so the change of
home did not change any stored result: the values below are those of the earlier mapping).
"""

from __future__ import annotations

import pytest

from l2lflow import seeds


def test_every_seed_is_in_the_documented_range() -> None:
    drawn = [
        *seeds.evaluation_seeds(2**40 + 3, 5, 200).tolist(),
        *(seeds.task_seed(s, g) for s in (0, 1, 2**62) for g in range(20)),
        seeds.meta_test_seed(9),
        seeds.optimizer_seed(9),
    ]
    assert all(0 <= s <= seeds.SEED_MAX for s in drawn)
    assert max(drawn) > 2**32  # so NEST needs the mapping


def test_nest_seed_range_and_values_of_the_earlier_mapping() -> None:
    """Pinned values: the built-in NEST optimizees' results depend on them."""
    assert seeds.nest_seed(0) == 2968811711
    assert seeds.nest_seed(7) == 2083679833
    assert seeds.nest_seed(seeds.SEED_MAX) == 2601519615
    assert seeds.nest_seed(seeds.evaluation_seed(1, 0, 0)) == 3759204409
    mapped = {seeds.nest_seed(s << 40) for s in range(1, 200)}
    assert len(mapped) == 199 and all(1 <= s <= seeds.NEST_SEED_MAX for s in mapped)
    with pytest.raises(ValueError, match="seed must be >= 0"):
        seeds.nest_seed(-1)


def test_built_in_nest_optimizees_seed_through_the_helper() -> None:
    from l2lflow.optimizees.nest import kernel

    assert kernel.nest_seed is seeds.nest_seed


@pytest.mark.nest
def test_nest_refuses_the_raw_seed_and_accepts_the_mapped_one() -> None:
    """What a ported script meets with real NEST, and the documented way out."""
    pytest.importorskip("nest")
    from l2lflow.optimizees.nest.kernel import get_nest

    nest = get_nest()
    seed = seeds.evaluation_seed(1, 0, 0)
    nest.ResetKernel()
    with pytest.raises(Exception, match="RNG seed must be in"):
        nest.SetKernelStatus({"rng_seed": seed})
    for s in (0, seed, seeds.SEED_MAX):
        nest.ResetKernel()
        nest.SetKernelStatus({"rng_seed": seeds.nest_seed(s)})
        assert nest.GetKernelStatus("rng_seed") == seeds.nest_seed(s)
