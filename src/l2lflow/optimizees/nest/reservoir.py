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
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from l2lflow.optimizees.base import EvaluationContext, register_optimizee
from l2lflow.optimizees.nest.kernel import nest_session, simulate

#: hyperparameters and their defaults (pA, ms, Hz); a missing one takes its default
DEFAULT_PARAMS: dict[str, float] = {
    "w_exc": 60.0,  # recurrent excitatory PSC amplitude (pA)
    "g": 4.0,  # inhibitory PSC = -g * w_exc
    "p_conn": 0.1,  # recurrent connection probability
    "tau_m": 20.0,  # membrane time constant (ms)
    "input_gain": 300.0,  # input -> reservoir PSC amplitude (pA)
    "bg_rate": 800.0,  # Poisson background per neuron (Hz, PSC 50 pA)
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
DEFAULT_SPACE: dict[str, dict[str, Any]] = {
    "w_exc": {"low": 5.0, "high": 500.0, "scale": "log", "type": "float"},
    "g": {"low": 0.5, "high": 10.0, "scale": "linear", "type": "float"},
    "p_conn": {"low": 0.02, "high": 0.4, "scale": "log", "type": "float"},
    "tau_m": {"low": 5.0, "high": 50.0, "scale": "log", "type": "float"},
    "input_gain": {"low": 10.0, "high": 2000.0, "scale": "log", "type": "float"},
    "bg_rate": {"low": 10.0, "high": 5000.0, "scale": "log", "type": "float"},
}

#: extra dimensions for evolving a plasticity rule (use with the ``stdp`` option)
STDP_SPACE: dict[str, dict[str, Any]] = {
    "stdp_lambda": {"low": 1e-4, "high": 0.1, "scale": "log", "type": "float"},
    "stdp_alpha": {"low": 0.2, "high": 3.0, "scale": "log", "type": "float"},
    "stdp_tau_plus": {"low": 5.0, "high": 50.0, "scale": "log", "type": "float"},
    "stdp_tau_minus": {"low": 5.0, "high": 50.0, "scale": "log", "type": "float"},
    "stdp_wmax": {"low": 1.0, "high": 5.0, "scale": "linear", "type": "float"},
}

_NEURON = {
    "C_m": 250.0,
    "E_L": -70.0,
    "V_reset": -70.0,
    "V_th": -55.0,
    "t_ref": 2.0,
    "tau_syn_ex": 5.0,
    "tau_syn_in": 5.0,
}
_BG_WEIGHT = 50.0  # pA
_DELAY = 1.5  # ms, recurrent and input synapses


@dataclass(frozen=True)
class SpikeTask:
    """One classification task: a spike template per class.

    ``templates[c][i]`` holds the sorted spike times (ms, in ``[0, duration_ms)``) of class ``c``
    on input channel ``i``.
    """

    templates: tuple[tuple[np.ndarray, ...], ...]
    duration_ms: float

    @property
    def n_classes(self) -> int:
        return len(self.templates)

    @property
    def n_inputs(self) -> int:
        return len(self.templates[0])


def _rng(entropy: int, *key: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(int(entropy), spawn_key=key))


def draw_tasks(
    task_seed: int,
    n_tasks: int,
    *,
    n_classes: int = 3,
    n_inputs: int = 20,
    duration_ms: float = 100.0,
    rate_hz: float = 20.0,
) -> list[SpikeTask]:
    """The tasks of a task seed: a pure function of its arguments (no evaluation seed).

    Task ``t`` comes from its own stream ``(task_seed, t)``, so asking for more tasks leaves the
    first ones unchanged.
    """
    tasks = []
    for t in range(int(n_tasks)):
        rng = _rng(task_seed, t)
        templates = tuple(
            tuple(
                np.sort(rng.uniform(0.0, duration_ms, rng.poisson(rate_hz * duration_ms / 1000)))
                for _ in range(n_inputs)
            )
            for _ in range(n_classes)
        )
        tasks.append(SpikeTask(templates, float(duration_ms)))
    return tasks


def make_sample(
    template: tuple[np.ndarray, ...],
    duration_ms: float,
    rng: np.random.Generator,
    *,
    jitter_ms: float,
    p_delete: float,
    extra_rate_hz: float,
) -> list[np.ndarray]:
    """A noisy copy of a template: jittered spikes, some deleted, some random ones added."""
    sample = []
    for spikes in template:
        kept = spikes[rng.random(len(spikes)) >= p_delete]
        moved = kept + rng.normal(0.0, jitter_ms, len(kept))
        extra = rng.uniform(0.0, duration_ms, rng.poisson(extra_rate_hz * duration_ms / 1000))
        times = np.concatenate([moved, extra])
        sample.append(np.sort(times[(times >= 0.0) & (times < duration_ms)]))
    return sample


def ridge_readout(
    x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, n_classes: int, ridge: float
) -> tuple[np.ndarray, np.ndarray]:
    """Fit a ridge-regression readout on one-hot targets; return (train, test) predictions.

    Features are standardised with the training statistics (constant features become 0, so a
    silent reservoir gives a constant prediction, i.e. chance). The dual form solves an
    ``n_train x n_train`` system, which is small since there are more features than samples.
    """
    mean = x_train.mean(axis=0)
    std = x_train.std(axis=0)
    std[std == 0] = np.inf
    a = np.hstack([(x_train - mean) / std, np.ones((len(x_train), 1))])
    b = np.hstack([(x_test - mean) / std, np.ones((len(x_test), 1))])
    targets = np.eye(n_classes)[y_train]
    gram = a @ a.T + ridge * a.shape[1] * np.eye(len(a))
    w = a.T @ np.linalg.solve(gram, targets)
    return np.argmax(a @ w, axis=1), np.argmax(b @ w, axis=1)


def _features(
    times: np.ndarray,
    senders: np.ndarray,
    first_id: int,
    n_neurons: int,
    onsets: np.ndarray,
    period_ms: float,
    n_bins: int,
) -> np.ndarray:
    """Spike counts per (sample, neuron, time bin) over each sample's presentation period."""
    features = np.zeros((len(onsets), n_neurons, n_bins))
    if len(times) == 0 or len(onsets) == 0:
        return features.reshape(len(onsets), -1)
    k = np.searchsorted(onsets, times, side="right") - 1
    offset = times - onsets[np.maximum(k, 0)]
    ok = (k >= 0) & (offset < period_ms)
    b = np.minimum((offset[ok] / period_ms * n_bins).astype(int), n_bins - 1)
    np.add.at(features, (k[ok], senders[ok] - first_id, b), 1.0)
    return features.reshape(len(onsets), -1)


def run_task(
    task: SpikeTask,
    params: dict[str, float],
    seed: int,
    context: EvaluationContext,
    *,
    n_neurons: int,
    n_train_per_class: int,
    n_test_per_class: int,
    gap_ms: float,
    jitter_ms: float,
    p_delete: float,
    extra_rate_hz: float,
    input_p: float,
    n_bins: int,
    ridge: float,
    stdp: bool,
    resolution: float,
) -> dict[str, float]:
    """The inner loop on one task: build, present, read out. ``seed`` is this task's own."""
    rng = _rng(seed, 0)
    n_classes = task.n_classes
    period = task.duration_ms + gap_ms
    # samples: train then test, each in a random order (classes interleaved)
    y_train = rng.permutation(np.repeat(np.arange(n_classes), n_train_per_class))
    y_test = rng.permutation(np.repeat(np.arange(n_classes), n_test_per_class))
    noise = {"jitter_ms": jitter_ms, "p_delete": p_delete, "extra_rate_hz": extra_rate_hz}
    train = [make_sample(task.templates[c], task.duration_ms, rng, **noise) for c in y_train]
    test = [make_sample(task.templates[c], task.duration_ms, rng, **noise) for c in y_test]
    # with STDP the training samples are presented first with plasticity on, then all samples
    # again with the weights frozen: the readout must see the network it will be tested with
    schedule = (train if stdp else []) + train + test
    onsets = gap_ms + period * np.arange(len(schedule))
    steps_per_ms = 1.0 / resolution
    channels = []
    for i in range(task.n_inputs):
        t = np.concatenate([s[i] + o for s, o in zip(schedule, onsets, strict=True)])
        t = np.unique(np.round(t * steps_per_ms))  # on the grid, one spike per step
        channels.append(t[t > 0] * resolution)

    p = params
    n_exc = int(round(0.8 * n_neurons))
    w_exc, w_inh = p["w_exc"], -p["g"] * p["w_exc"]
    with nest_session(seed, context.threads, resolution, log=context.log) as nest:
        neuron = {**_NEURON, "tau_m": p["tau_m"], "V_m": -70.0}
        if stdp:
            neuron["tau_minus"] = p["stdp_tau_minus"]
        pop = nest.Create("iaf_psc_exp", n_neurons, params=neuron)
        # random initial potentials so that neurons do not start in lockstep
        pop.V_m = nest.random.uniform(-70.0, -56.0)
        exc, inh = pop[:n_exc], pop[n_exc:]
        bernoulli = {"rule": "pairwise_bernoulli", "p": p["p_conn"], "allow_autapses": False}
        nest.Connect(exc, pop, bernoulli, {"weight": w_exc, "delay": _DELAY})
        nest.Connect(inh, pop, bernoulli, {"weight": w_inh, "delay": _DELAY})
        bg = nest.Create("poisson_generator", params={"rate": p["bg_rate"]})
        nest.Connect(bg, pop, syn_spec={"weight": _BG_WEIGHT, "delay": _DELAY})

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
                "delay": _DELAY,
                "lambda": p["stdp_lambda"],
                "alpha": p["stdp_alpha"],
                "tau_plus": p["stdp_tau_plus"],
                "mu_plus": p["stdp_mu_plus"],
                "mu_minus": p["stdp_mu_minus"],
                "Wmax": w_max,
            }
        else:
            syn = {"weight": p["input_gain"], "delay": _DELAY}
        nest.Connect(parrots, pop, input_rule, syn)
        recorder = nest.Create("spike_recorder")
        nest.Connect(pop, recorder)

        weight_change = 0.0
        if stdp:
            plastic_end = onsets[len(train)]
            simulate(plastic_end)
            conns = nest.GetConnections(source=parrots, synapse_model="stdp_synapse")
            # lambda = 0 freezes the weights (checked in NEST 3.10: they stay bit-identical);
            # rebuilding with static synapses would also redraw the network
            conns.set({"lambda": 0.0})
            w = np.asarray(conns.get("weight"), dtype=float)
            weight_change = float(np.mean(np.abs(w - p["input_gain"])) / p["input_gain"])
            simulate(onsets[-1] + period - plastic_end)
        else:
            simulate(onsets[-1] + period)
        events = recorder.get("events")
        first_id = int(pop[0].global_id)

    times = np.asarray(events["times"], dtype=float)
    senders = np.asarray(events["senders"], dtype=np.int64)
    frozen = onsets[len(schedule) - len(train) - len(test) :]
    x = _features(times, senders, first_id, n_neurons, frozen, period, n_bins)
    x_train, x_test = x[: len(train)], x[len(train) :]
    pred_train, pred_test = ridge_readout(x_train, y_train, x_test, n_classes, ridge)
    t_frozen = times >= frozen[0]
    duration_s = (onsets[-1] + period - frozen[0]) / 1000.0
    return {
        "accuracy": float(np.mean(pred_test == y_test)),
        "train_accuracy": float(np.mean(pred_train == y_train)),
        "rate": float(np.count_nonzero(t_frozen) / n_neurons / duration_s),
        "weight_change": weight_change,
    }


@register_optimizee("nest.reservoir", meta_test=True, array_dims={"task_accuracy": ("task",)})
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
    tasks = draw_tasks(
        ctx.task_seed,
        n_tasks,
        n_classes=n_classes,
        n_inputs=n_inputs,
        duration_ms=pattern_ms,
        rate_hz=input_rate_hz,
    )
    results = []
    for t, task in enumerate(tasks):
        # each task's reservoir and samples get their own stream of the evaluation seed
        own_seed = int(_rng(seed, 1, t).integers(2**62))
        results.append(
            run_task(
                task,
                p,
                own_seed,
                ctx,
                n_neurons=n_neurons,
                n_train_per_class=n_train_per_class,
                n_test_per_class=n_test_per_class,
                gap_ms=gap_ms,
                jitter_ms=jitter_ms,
                p_delete=p_delete,
                extra_rate_hz=extra_rate_hz,
                input_p=input_p,
                n_bins=n_bins,
                ridge=ridge,
                stdp=stdp,
                resolution=resolution,
            )
        )
    accuracy = np.array([r["accuracy"] for r in results])
    out: dict[str, Any] = {
        "fitness": float(accuracy.mean()),
        "task_accuracy": accuracy,
        "train_accuracy": float(np.mean([r["train_accuracy"] for r in results])),
        "rate": float(np.mean([r["rate"] for r in results])),
        "chance": 1.0 / n_classes,
    }
    if stdp:
        out["weight_change"] = float(np.mean([r["weight_change"] for r in results]))
    return out
