"""Learning to learn with a GeNN reservoir: ``nest.reservoir``'s experiment, on GeNN.

The same task family, samples, features, readout and fitness as ``nest.reservoir`` (all in
:mod:`l2lflow.tasks.spike_patterns`), the same hyperparameters (``w_exc``, ``g``, ``p_conn``,
``tau_m``, ``input_gain``, ``bg_rate``) and the same options, so one experiment config runs on
NEST or on GeNN by changing only ``optimizee.name``. For the same task seed and evaluation seed
both see the same input spikes; the networks are drawn from the same distributions but from
different generators, so results agree statistically, not bitwise
(``tests/test_genn_reservoir.py`` measures by how much).

The network is NEST's (its constants are ``nest.reservoir``'s): ``iaf_psc_exp`` neurons (80 % excitatory, 20 % inhibitory, exponential
PSCs of 5 ms), integrated as NEST integrates them (exact propagators for the membrane and the
synaptic current, a refractory counter, the threshold checked after the update), Bernoulli
recurrent and input connectivity without autapses, 1.5 ms synaptic delays (input spikes also
take NEST's 1 ms spike-generator-to-parrot hop), and Poisson background input per neuron (PSC
50 pA) drawn while the model runs by a per-neuron xorshift32 generator seeded from the
evaluation seed. What is left are the simulators' own differences (float order, NEST's exact
spike-time bookkeeping), which is why the agreement is statistical.

How it runs (see :mod:`l2lflow.optimizees.genn`): one model per worker and shape, compiled once;
an *item* is one (individual, task) pair, whose parameters, connectivity, initial potentials,
generator states and input spikes are loaded as state. On ``single_threaded_cpu`` the items run
one after the other; on CUDA, individuals x tasks are one GeNN batch (``batch_size`` entries per
pass). A parameter set that cannot be simulated (e.g. a negative ``tau_m``) fails only its own
individual (NaN fitness), the others of the batch are unaffected.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from l2lflow.optimizees.base import EvaluationContext, checked_params, register_optimizee
from l2lflow.optimizees.genn import (
    available_backend,
    batch_size_for,
    batched_static_pulse,
    compiled_model,
    passes,
    stack,
)
from l2lflow.optimizees.nest.reservoir import (
    BG_WEIGHT_PA,
    DELAY_MS,
    E_FRACTION,
    NEURON,
    RESERVOIR_PARAMS,
    RESERVOIR_SPACE,
    V_INIT_RANGE,
)
from l2lflow.tasks.spike_patterns import (
    Presentation,
    SpikeTask,
    TaskFamily,
    draw_tasks,
    summarize,
    task_rng,
    task_seeds,
)

DEFAULT_PARAMS: dict[str, float] = dict(RESERVOIR_PARAMS)
DEFAULT_SPACE: dict[str, dict[str, Any]] = RESERVOIR_SPACE

#: NEST's default delay, which the input spikes take from spike_generator to parrot_neuron
_PARROT_DELAY_MS = 1.0
#: a background rate whose per-step Poisson mean is above this is refused (the draw's loop
#: is capped), far above the search space's 5 kHz
_MAX_BG_PER_STEP = 20.0

# xorshift32 (13, 17, 5); GeNN 5.4's code parser rejects ``>>``, so right shifts are written as
# the unsigned divisions they equal
_NEURON_CODE = """
if (RefracSteps == 0) {
    V = (P22 * V) + (P21 * I);
}
else {
    RefracSteps -= 1;
}
uint32_t x = Rng;
x ^= x << 13;
x ^= x / 131072u;
x ^= x << 5;
Rng = x;
const scalar u = (scalar)(x / 256u) * 5.9604644775390625e-8;
scalar p = ExpMinusLambda;
scalar c = p;
int k = 0;
while (u > c && k < 200) {
    k++;
    p *= Lambda / (scalar)k;
    c += p;
}
I = (P11 * I) + Isyn + (BgWeight * (scalar)k);
"""


def _define(n: int, n_inputs: int, dt: float) -> Any:
    """The model definition for ``n`` reservoir neurons and ``n_inputs`` input channels."""

    def define(model: Any) -> dict[str, Any]:
        from pygenn import VarAccess, create_neuron_model, init_postsynaptic, init_weight_update

        lif = create_neuron_model(
            "l2lflow_iaf_psc_exp",
            params=["Theta", "Vreset", ("RefracCount", "int"), "P11", "BgWeight"],
            vars=[
                ("V", "scalar"),  # membrane potential relative to E_L (mV)
                ("I", "scalar"),  # synaptic current (pA)
                ("RefracSteps", "int"),
                ("Rng", "uint32_t"),  # xorshift32 state of the background input
                ("P22", "scalar", VarAccess.READ_ONLY_SHARED_NEURON),
                ("P21", "scalar", VarAccess.READ_ONLY_SHARED_NEURON),
                ("Lambda", "scalar", VarAccess.READ_ONLY_SHARED_NEURON),
                ("ExpMinusLambda", "scalar", VarAccess.READ_ONLY_SHARED_NEURON),
            ],
            sim_code=_NEURON_CODE,
            threshold_condition_code="V >= Theta",
            reset_code="V = Vreset;\nRefracSteps = RefracCount;",
        )
        source = create_neuron_model(
            "l2lflow_spike_times",
            vars=[
                ("StartSpike", "unsigned int"),
                ("EndSpike", "unsigned int", VarAccess.READ_ONLY_DUPLICATE),
            ],
            extra_global_params=[("SpikeTimes", "scalar*")],
            # half a step of slack: a time on the grid fires in its own step whatever the rounding
            threshold_condition_code=(
                "StartSpike != EndSpike && t >= SpikeTimes[StartSpike] - (0.5 * dt)"
            ),
            reset_code="StartSpike++;",
        )
        batch = model.batch_size
        # arrays, not constants: initialised from the host at every load, never on the device
        entry = stack([np.zeros(1)] * batch, batch)
        neuron = stack([np.zeros(n)] * batch, batch)
        tau_syn = NEURON["tau_syn_ex"]
        reservoir = model.add_neuron_population(
            "reservoir",
            n,
            lif,
            {
                "Theta": NEURON["V_th"] - NEURON["E_L"],
                "Vreset": NEURON["V_reset"] - NEURON["E_L"],
                "RefracCount": int(round(NEURON["t_ref"] / dt)),
                "P11": math.exp(-dt / tau_syn),
                "BgWeight": BG_WEIGHT_PA,
            },
            {
                "V": neuron,
                "I": 0.0,
                "RefracSteps": 0,
                "Rng": neuron.astype(np.uint32),
                "P22": entry,
                "P21": entry,
                "Lambda": entry,
                "ExpMinusLambda": entry,
            },
        )
        reservoir.spike_recording_enabled = True
        channels = stack([np.zeros(n_inputs, dtype=np.uint32)] * batch, batch)
        inputs = model.add_neuron_population(
            "input", n_inputs, source, {}, {"StartSpike": channels, "EndSpike": channels}
        )
        groups = {"reservoir": reservoir, "input": inputs}
        # NEST delivers a spike of step k with delay d in step k + d; GeNN one step after the
        # spike plus the axonal delay
        for name, pre, delay_ms in (
            ("recurrent", reservoir, DELAY_MS),
            ("input_synapses", inputs, DELAY_MS + _PARROT_DELAY_MS),
        ):
            weights = stack([np.zeros(pre.num_neurons * n)] * batch, batch)
            synapses = model.add_synapse_population(
                name,
                "DENSE",
                pre,
                reservoir,
                init_weight_update(batched_static_pulse(), {}, {"g": weights}),
                init_postsynaptic("DeltaCurr"),
            )
            steps = int(round(delay_ms / dt)) - (1 if pre is reservoir else 2)
            synapses.axonal_delay_steps = max(0, steps)
            groups[name] = synapses
        return groups

    return define


def membrane_propagator(tau_m: float, dt: float) -> float:
    """NEST's ``P21`` of ``iaf_psc_exp``: the potential (mV) after one step per pA of synaptic
    current at the step's start, exact for an exponentially decaying current (finite also at
    ``tau_m == tau_syn``)."""
    tau_s, c_m = NEURON["tau_syn_ex"], NEURON["C_m"]
    x = 1.0 / tau_s - 1.0 / tau_m
    factor = dt if abs(x) < 1e-12 else math.expm1(dt * x) / x
    return math.exp(-dt / tau_s) * factor / c_m


def _valid(p: dict[str, float]) -> bool:
    """Whether finite parameters describe a network GeNN can simulate (NEST refuses the rest)."""
    return p["tau_m"] > 0 and 0.0 <= p["p_conn"] <= 1.0 and p["bg_rate"] >= 0


@dataclass
class _Item:
    """One (individual, task) pair: what is loaded into one batch entry."""

    individual: int
    task: SpikeTask
    seed: int  # the task's own seed, from the individual's evaluation seed


def _entry(
    item: _Item,
    p: dict[str, float],
    family: TaskFamily,
    n: int,
    input_p: float,
    dt: float,
) -> tuple[Presentation, dict[str, Any]]:
    """An item's presentation and state values, from its parameters and its own seed only."""
    shown = family.present(item.task, item.seed, dt)
    rng = task_rng(item.seed, 1)  # the samples use stream 0 of the same seed
    n_exc = int(round(E_FRACTION * n))
    rows = np.where(np.arange(n) < n_exc, p["w_exc"], -p["g"] * p["w_exc"])
    mask = rng.random((n, n)) < p["p_conn"]
    np.fill_diagonal(mask, False)  # no autapses
    recurrent = np.where(mask, rows[:, None], 0.0)
    inputs = np.where(rng.random((item.task.n_inputs, n)) < input_p, p["input_gain"], 0.0)
    low, high = V_INIT_RANGE
    lam = p["bg_rate"] * dt / 1000.0
    return shown, {
        "V": rng.uniform(low, high, n) - NEURON["E_L"],
        "Rng": rng.integers(1, 2**32, n, dtype=np.uint64).astype(np.uint32),
        "P22": math.exp(-dt / p["tau_m"]),
        "P21": membrane_propagator(p["tau_m"], dt),
        "Lambda": lam,
        "ExpMinusLambda": math.exp(-lam),
        "recurrent": recurrent.reshape(-1),  # row-major pre x post, a DENSE matrix's order
        "input_synapses": inputs.reshape(-1),
    }


@register_optimizee(
    "genn.reservoir",
    batched=True,
    prefers_gpu=True,
    meta_test=True,
    array_dims={"task_accuracy": ("task",)},
)
def reservoir(
    params: list[dict[str, Any]],
    seeds: list[int],
    *,
    contexts: list[EvaluationContext] | None = None,
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
    resolution: float = 0.1,
    backend: str = "auto",
    batch_size: int = 1024,
    precision: str = "double",
    build_dir: str | None = None,
) -> list[dict[str, Any]]:
    """Spike-pattern classification by a GeNN reservoir + ridge readout; fitness = mean test
    accuracy over ``n_tasks`` tasks drawn from ``context.task_seed`` (maximise). Batched.

    Parameters and options are ``nest.reservoir``'s (without ``stdp``), plus ``backend``
    (``auto``: ``cuda`` on a worker given a GPU, else ``single_threaded_cpu``), ``batch_size``
    (GeNN batch entries per pass on CUDA, one per individual x task; the CPU backend runs one
    at a time), ``precision`` (``double`` or ``float``) and ``build_dir`` (compiled-model
    cache). Returns per individual what ``nest.reservoir`` returns: ``fitness``,
    ``task_accuracy`` (per task, on the ``task`` dimension), ``train_accuracy``, ``rate`` and
    ``chance``. An individual whose parameters cannot be simulated gets a NaN fitness.
    """
    if len(params) != len(seeds):
        raise ValueError(f"{len(params)} parameter sets but {len(seeds)} seeds")
    if contexts is not None and len(contexts) != len(params):
        raise ValueError(f"{len(params)} parameter sets but {len(contexts)} contexts")
    ctxs = contexts or [
        EvaluationContext(generation=0, individual=i, seed=s) for i, s in enumerate(seeds)
    ]
    chosen = available_backend(backend, ctxs[0].log if ctxs else None)
    batch = batch_size_for(chosen, batch_size)
    checked = [checked_params(p, DEFAULT_PARAMS, "genn.reservoir", _valid) for p in params]
    for i, (p, _) in enumerate(checked):
        if p["bg_rate"] * resolution / 1000.0 > _MAX_BG_PER_STEP:
            checked[i] = (dict(DEFAULT_PARAMS), False)
    if not params:
        return []
    family = TaskFamily.from_options(locals())
    tasks_of: dict[int, list[SpikeTask]] = {}  # task seed -> tasks (shared by a generation)
    items = []
    for i, ctx in enumerate(ctxs):
        if ctx.task_seed not in tasks_of:
            tasks_of[ctx.task_seed] = draw_tasks(ctx.task_seed, n_tasks, **family.draw_options)
        own = task_seeds(seeds[i], n_tasks)
        items += [_Item(i, task, own[t]) for t, task in enumerate(tasks_of[ctx.task_seed])]
    n = int(n_neurons)
    net = compiled_model(
        f"l2lflow_reservoir_n{n}_i{int(n_inputs)}",
        (n, int(n_inputs)),
        _define(n, int(n_inputs), resolution),
        backend=chosen,
        batch_size=batch,
        dt=resolution,
        precision=precision,
        build_dir=build_dir,
    )
    scores: list[dict[str, float]] = [{} for _ in items]
    for chunk, slots in passes(len(items), batch):
        entries = [
            _entry(items[k], checked[items[k].individual][0], family, n, input_p, resolution)
            for k in slots
        ]
        steps = int(round(entries[0][0].end_ms / resolution))
        state: dict[tuple[str, str], np.ndarray] = {
            ("reservoir", name): stack([e[name] for _, e in entries], batch)
            for name in ("V", "Rng", "P22", "P21", "Lambda", "ExpMinusLambda")
        }
        for name in ("recurrent", "input_synapses"):
            state[(name, "g")] = stack([e[name] for _, e in entries], batch)
        # every entry's input spikes in one array; each channel indexes its own range
        times, starts, ends, offset = [], [], [], 0
        for shown, _ in entries:
            lengths = np.array([len(c) for c in shown.channels], dtype=np.int64)
            first = offset + np.concatenate([[0], np.cumsum(lengths)[:-1]])
            starts.append(first.astype(np.uint32))
            ends.append((first + lengths).astype(np.uint32))
            times += shown.channels
            offset += int(lengths.sum())
        times.append(np.array([math.inf]))  # never empty; never reached
        state[("input", "StartSpike")] = stack(starts, batch)
        state[("input", "EndSpike")] = stack(ends, batch)
        net.start(state, {("input", "SpikeTimes"): np.concatenate(times)}, record_steps=steps)
        net.run(steps)
        recorded = net.spikes("reservoir")
        for b, k in enumerate(chunk):
            spike_times, ids = recorded[b]
            # GeNN stamps a spike with its step's start, NEST with its end: use NEST's
            scores[k] = family.score(entries[b][0], spike_times + resolution, ids, 0, n)
    out = []
    for i in range(len(params)):
        result = summarize(
            [s for item, s in zip(items, scores, strict=True) if item.individual == i], n_classes
        )
        if not checked[i][1]:
            result["fitness"] = math.nan
        out.append(result)
    return out
