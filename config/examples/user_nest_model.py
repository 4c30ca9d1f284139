"""An example of a user's own NEST optimizee, used as ``optimizee.name: user_nest_model:tiny``.

Put this folder on ``PYTHONPATH`` (or make the module importable otherwise) on the client *and*
the workers. What the example shows:

* ``nest_session(seed, context.threads, log=context.log)``: a reset kernel seeded from the
  evaluation seed (the same seed and thread count give bit-identical spikes), with NEST's
  warnings forwarded to the experiment's log, and a lock so no other thread touches the kernel
  (a script that seeds NEST itself writes ``nest.SetKernelStatus({"rng_seed": nest_seed(seed)})``
  with ``from l2lflow.seeds import nest_seed``: NEST refuses l2lflow's 63-bit seeds as they are);
* ``simulate(t)``: the run in ~10 ms chunks, so the Dask worker keeps heartbeating;
* ``context.scratch_dir``: a per-evaluation folder for files too big for the results store;
* the returned dict: ``fitness``, a scalar metric, and a numpy array that the store keeps on
  ``(generation, individual, time_bin)`` as declared in ``array_dims``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from l2lflow.optimizees.base import EvaluationContext, register_optimizee
from l2lflow.optimizees.nest import nest_session, simulate


@register_optimizee("example.user_nest_model", array_dims={"rate_trace": ("time_bin",)})
def tiny(
    params: dict[str, Any],
    seed: int,
    *,
    context: EvaluationContext,
    n_neurons: int = 50,
    sim_time_ms: float = 500.0,
    bin_ms: float = 10.0,
    target_rate: float = 10.0,
) -> dict[str, Any]:
    """Tune Poisson drive and recurrent inhibition of 50 neurons to a target rate (minimise)."""
    drive = float(params.get("drive_rate", 8000.0))  # Hz of the Poisson input
    w_inh = float(params.get("w_inh", -20.0))  # pA
    with nest_session(seed, context.threads, log=context.log) as nest:
        neurons = nest.Create("iaf_psc_alpha", n_neurons)
        noise = nest.Create("poisson_generator", params={"rate": drive})
        recorder = nest.Create("spike_recorder")
        nest.Connect(noise, neurons, syn_spec={"weight": 20.0})
        nest.Connect(
            neurons,
            neurons,
            {"rule": "fixed_indegree", "indegree": 10},
            {"weight": w_inh, "delay": 1.0},
        )
        nest.Connect(neurons, recorder)
        simulate(sim_time_ms)
        times = np.asarray(recorder.get("events")["times"], dtype=float)
        senders = np.asarray(recorder.get("events")["senders"], dtype=np.int64)

    rate = len(times) / n_neurons / (sim_time_ms / 1000.0)
    counts, _ = np.histogram(times, bins=np.arange(0.0, sim_time_ms + 1e-9, bin_ms))
    if context.scratch_root is not None:  # raw spikes are files, not store entries
        np.savez_compressed(context.scratch_dir / "spikes.npz", times=times, senders=senders)
    return {
        "fitness": abs(rate - target_rate),
        "rate": rate,
        "rate_trace": counts / n_neurons / (bin_ms / 1000.0),
    }
