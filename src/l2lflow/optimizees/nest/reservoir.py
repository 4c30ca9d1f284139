"""Learning to learn with a NEST reservoir: evolve the reservoir so a linear readout learns fast.

A *task family* of spike-pattern classification tasks. One task has ``n_classes`` classes, each a
frozen Poisson spike template on ``n_inputs`` channels; a sample is a jittered, noisy copy of its
class's template (Gaussian spike-time jitter, deleted and added spikes). For each task the inner
loop builds a NEST E/I reservoir from the hyperparameters, presents the training samples one
after the other in a single simulation (gaps between them let activity settle; one simulation is
far cheaper than one per sample), counts each reservoir neuron's spikes in a few time bins per
sample, fits a ridge-regression readout on one-hot targets, and scores it on held-out samples.
The outer loop tunes the reservoir (and optionally an STDP rule on the input synapses) so that
this inner learning works on *new* tasks: fitness = mean test accuracy over ``n_tasks`` tasks,
to be **maximised**; chance level is ``1 / n_classes``.

Randomness has two owners, on purpose:

* the tasks (templates) come from ``context.task_seed`` only, so every individual of a generation
  is scored on the same tasks (a fair comparison) and each generation sees new ones (no
  overfitting to one task set); in the meta-test phase the engine passes a held-out task seed;
* sample noise, presentation order and the network's random connectivity come from the
  evaluation ``seed``.

The task family, the samples, the features and the readout are simulator-free and shared with
``genn.reservoir`` (:mod:`l2lflow.tasks.spike_patterns`): this module is only the NEST network.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from l2lflow.optimizees.base import EvaluationContext, register_optimizee
from l2lflow.optimizees.nest.kernel import get_nest, nest_session, simulate
from l2lflow.tasks.spike_patterns import (
    SpikeTask,
    TaskFamily,
    draw_tasks,
    summarize,
    task_seeds,
)

#: the network's hyperparameters and their defaults (pA, ms, Hz), genn.reservoir's too
RESERVOIR_PARAMS: dict[str, float] = {
    "w_exc": 60.0,  # recurrent excitatory PSC amplitude (pA)
    "g": 4.0,  # inhibitory PSC = -g * w_exc
    "p_conn": 0.1,  # recurrent connection probability
    "tau_m": 20.0,  # membrane time constant (ms)
    "input_gain": 300.0,  # input -> reservoir PSC amplitude (pA)
    "bg_rate": 800.0,  # Poisson background per neuron (Hz, PSC 50 pA)
}

#: recommended search space over :data:`RESERVOIR_PARAMS`
RESERVOIR_SPACE: dict[str, dict[str, Any]] = {
    "w_exc": {"low": 5.0, "high": 500.0, "scale": "log", "type": "float"},
    "g": {"low": 0.5, "high": 10.0, "scale": "linear", "type": "float"},
    "p_conn": {"low": 0.02, "high": 0.4, "scale": "log", "type": "float"},
    "tau_m": {"low": 5.0, "high": 50.0, "scale": "log", "type": "float"},
    "input_gain": {"low": 10.0, "high": 2000.0, "scale": "log", "type": "float"},
    "bg_rate": {"low": 10.0, "high": 5000.0, "scale": "log", "type": "float"},
}

#: the reservoir neuron, ``iaf_psc_exp`` (mV, ms, pF); genn.reservoir reproduces this network
NEURON: dict[str, float] = {
    "C_m": 250.0,
    "E_L": -70.0,
    "V_reset": -70.0,
    "V_th": -55.0,
    "t_ref": 2.0,
    "tau_syn_ex": 5.0,
    "tau_syn_in": 5.0,
}
#: initial membrane potentials are uniform in this range (mV), so neurons do not start in lockstep
V_INIT_RANGE = (-70.0, -56.0)
BG_WEIGHT_PA = 50.0  # PSC amplitude of each background Poisson spike
DELAY_MS = 1.5  # recurrent, input and background synapses
E_FRACTION = 0.8  # the first 80 % of the neurons are excitatory


#: hyperparameters and their defaults (pA, ms, Hz); a missing one takes its default
DEFAULT_PARAMS: dict[str, float] = {
    **RESERVOIR_PARAMS,
    # STDP on input synapses (used with the ``stdp`` option only)
    "stdp_lambda": 0.01,  # learning rate
    "stdp_alpha": 1.0,  # depression / potentiation ratio
    "stdp_tau_plus": 20.0,  # potentiation window (ms)
    "stdp_tau_minus": 20.0,  # depression window (ms, a property of the neuron in NEST)
    "stdp_mu_plus": 0.0,  # weight dependence of potentiation (0 additive, 1 multiplicative)
    "stdp_mu_minus": 0.0,  # weight dependence of depression
    "stdp_wmax": 2.0,  # maximal weight, in units of input_gain
}

#: recommended search space for the default experiment (STDP parameters excluded)
DEFAULT_SPACE: dict[str, dict[str, Any]] = RESERVOIR_SPACE

#: extra dimensions for evolving a plasticity rule (use with the ``stdp`` option)
STDP_SPACE: dict[str, dict[str, Any]] = {
    "stdp_lambda": {"low": 1e-4, "high": 0.1, "scale": "log", "type": "float"},
    "stdp_alpha": {"low": 0.2, "high": 3.0, "scale": "log", "type": "float"},
    "stdp_tau_plus": {"low": 5.0, "high": 50.0, "scale": "log", "type": "float"},
    "stdp_tau_minus": {"low": 5.0, "high": 50.0, "scale": "log", "type": "float"},
    "stdp_wmax": {"low": 1.0, "high": 5.0, "scale": "linear", "type": "float"},
}


def run_task(
    task: SpikeTask,
    params: dict[str, float],
    seed: int,
    context: EvaluationContext,
    family: TaskFamily,
    *,
    n_neurons: int,
    input_p: float,
    stdp: bool,
    resolution: float,
) -> dict[str, float]:
    """The inner loop on one task: build, present, read out. ``seed`` is this task's own."""
    shown = family.present(task, seed, resolution, stdp)
    onsets, channels = shown.onsets, shown.channels
    n_train = len(shown.y_train)

    p = params
    n_exc = int(round(E_FRACTION * n_neurons))
    w_exc, w_inh = p["w_exc"], -p["g"] * p["w_exc"]
    with nest_session(seed, context.threads, resolution, log=context.log) as nest:
        neuron = {**NEURON, "tau_m": p["tau_m"], "V_m": -70.0}
        if stdp:
            neuron["tau_minus"] = p["stdp_tau_minus"]
        pop = nest.Create("iaf_psc_exp", n_neurons, params=neuron)
        # random initial potentials so that neurons do not start in lockstep
        pop.V_m = nest.random.uniform(*V_INIT_RANGE)
        exc, inh = pop[:n_exc], pop[n_exc:]
        bernoulli = {"rule": "pairwise_bernoulli", "p": p["p_conn"], "allow_autapses": False}
        nest.Connect(exc, pop, bernoulli, {"weight": w_exc, "delay": DELAY_MS})
        nest.Connect(inh, pop, bernoulli, {"weight": w_inh, "delay": DELAY_MS})
        bg = nest.Create("poisson_generator", params={"rate": p["bg_rate"]})
        nest.Connect(bg, pop, syn_spec={"weight": BG_WEIGHT_PA, "delay": DELAY_MS})

        generators = nest.Create("spike_generator", task.n_inputs)
        generators.set([{"spike_times": c} for c in channels])
        # parrots relay the generators' spikes: plastic synapses need a neuron as source
        parrots = nest.Create("parrot_neuron", task.n_inputs)
        nest.Connect(generators, parrots, "one_to_one")
        input_rule = {"rule": "pairwise_bernoulli", "p": input_p}
        if stdp:
            w_max = p["stdp_wmax"] * p["input_gain"]
            syn = {
                "synapse_model": "stdp_synapse",
                "weight": p["input_gain"],
                "delay": DELAY_MS,
                "lambda": p["stdp_lambda"],
                "alpha": p["stdp_alpha"],
                "tau_plus": p["stdp_tau_plus"],
                "mu_plus": p["stdp_mu_plus"],
                "mu_minus": p["stdp_mu_minus"],
                "Wmax": w_max,
            }
        else:
            syn = {"weight": p["input_gain"], "delay": DELAY_MS}
        nest.Connect(parrots, pop, input_rule, syn)
        recorder = nest.Create("spike_recorder")
        nest.Connect(pop, recorder)

        weight_change = 0.0
        if stdp:
            plastic_end = onsets[n_train]
            simulate(plastic_end)
            conns = nest.GetConnections(source=parrots, synapse_model="stdp_synapse")
            # lambda = 0 freezes the weights (checked in NEST 3.10: they stay bit-identical);
            # rebuilding with static synapses would also redraw the network
            conns.set({"lambda": 0.0})
            w = np.asarray(conns.get("weight"), dtype=float)
            weight_change = float(np.mean(np.abs(w - p["input_gain"])) / p["input_gain"])
            simulate(shown.end_ms - plastic_end)
        else:
            simulate(shown.end_ms)
        events = recorder.get("events")
        first_id = int(pop[0].global_id)

    times = np.asarray(events["times"], dtype=float)
    senders = np.asarray(events["senders"], dtype=np.int64)
    return {
        **family.score(shown, times, senders, first_id, n_neurons),
        "weight_change": weight_change,
    }


@register_optimizee(
    "nest.reservoir",
    meta_test=True,
    array_dims={"task_accuracy": ("task",)},
    chance=lambda options: 1.0 / int(options.get("n_classes", 3)),
    warm_up=get_nest,
)
def reservoir(
    params: dict[str, Any],
    seed: int,
    *,
    context: EvaluationContext | None = None,
    n_tasks: int = 3,
    n_classes: int = 3,
    n_inputs: int = 20,
    pattern_ms: float = 100.0,
    input_rate_hz: float = 20.0,
    jitter_ms: float = 20.0,
    p_delete: float = 0.4,
    extra_rate_hz: float = 15.0,
    n_train_per_class: int = 6,
    n_test_per_class: int = 8,
    gap_ms: float = 20.0,
    n_neurons: int = 100,
    input_p: float = 0.2,
    n_bins: int = 2,
    ridge: float = 0.1,
    stdp: bool = False,
    resolution: float = 0.1,
) -> dict[str, Any]:
    """Spike-pattern classification by a NEST reservoir + ridge readout; fitness = mean test
    accuracy over ``n_tasks`` tasks drawn from ``context.task_seed`` (maximise).

    Parameters (``params``): ``w_exc``, ``g``, ``p_conn``, ``tau_m``, ``input_gain``, ``bg_rate``
    and, with ``stdp=True``, the STDP rule's ``stdp_*`` parameters (see :data:`DEFAULT_PARAMS`).
    With ``stdp`` the input synapses are ``stdp_synapse`` s, plastic while the training samples
    are first presented, then frozen (``lambda = 0``) for the readout's training and test.

    Returns ``fitness`` (mean test accuracy), ``task_accuracy`` (per task, an array on the
    ``task`` dimension), ``train_accuracy``, ``rate`` (mean reservoir rate, Hz, frozen phase),
    ``chance`` (1 / n_classes) and, with ``stdp``, ``weight_change`` (mean |dw| / input_gain).
    """
    ctx = context or EvaluationContext(generation=0, individual=0, seed=seed)
    unknown = sorted(set(params) - set(DEFAULT_PARAMS))
    if unknown:
        raise ValueError(
            f"unknown parameter(s) {unknown} for nest.reservoir; known: {sorted(DEFAULT_PARAMS)}"
        )
    p = {**DEFAULT_PARAMS, **{k: float(v) for k, v in params.items()}}
    family = TaskFamily.from_options(locals())
    tasks = draw_tasks(ctx.task_seed, n_tasks, **family.draw_options)
    # each task's reservoir and samples get their own stream of the evaluation seed
    results = [
        run_task(
            task,
            p,
            own_seed,
            ctx,
            family,
            n_neurons=n_neurons,
            input_p=input_p,
            stdp=stdp,
            resolution=resolution,
        )
        for task, own_seed in zip(tasks, task_seeds(seed, n_tasks), strict=True)
    ]
    out = summarize(results, n_classes)
    if stdp:
        out["weight_change"] = float(np.mean([r["weight_change"] for r in results]))
    return out
