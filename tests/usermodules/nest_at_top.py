"""A NEST script ported as its users write them: ``import nest`` at the very top.

Importing the NEST 3.10 wheel breaks OpenSSL in the importing process (a TLS context created
afterwards segfaults), so l2lflow must never import this module where it runs its TLS-secured
Dask cluster (the engine) or anywhere else but in an evaluation's sandbox.
"""

from __future__ import annotations

from typing import Any

import nest  # noqa: I001 - at the top on purpose

from l2lflow.seeds import nest_seed


def tiny(
    params: dict[str, Any], seed: int, *, n_neurons: int = 20, sim_time_ms: float = 200.0
) -> dict[str, float]:
    """Rate of a few Poisson-driven neurons; fitness is the distance to 10 spikes/s."""
    nest.set_verbosity("M_ERROR")
    nest.ResetKernel()
    nest.SetKernelStatus({"rng_seed": nest_seed(seed), "local_num_threads": 1})
    neurons = nest.Create("iaf_psc_alpha", n_neurons)
    noise = nest.Create("poisson_generator", params={"rate": float(params["drive_rate"])})
    recorder = nest.Create("spike_recorder")
    nest.Connect(noise, neurons, syn_spec={"weight": 20.0})
    nest.Connect(neurons, recorder)
    nest.Simulate(sim_time_ms)
    rate = recorder.get("n_events") / n_neurons / (sim_time_ms / 1000.0)
    return {"fitness": abs(rate - 10.0), "rate": float(rate)}
