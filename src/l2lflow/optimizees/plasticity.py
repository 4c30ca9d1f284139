"""Evolving plasticity rules ("evolving to learn", Jordan et al., eLife 2021): the optimizees.

The individual's ``rule`` is an ``expression`` parameter (:mod:`l2lflow.expression`): the weight
change of every synapse as a formula of what a synapse can know. A neuron with ``n_inputs``
Poisson spike-train inputs, filtered into exponential presynaptic traces (``tau`` ms, 1 ms
steps), learns a task with that rule; ``eta`` (a float parameter, or the option) scales it. A
task is a *teacher*: a random weight vector, whose membrane potential ``w* · trace`` the student
neuron (potential ``w · trace``) must reproduce. Tasks are drawn from the generation's task
seed, so every individual of a generation learns the same tasks from the same spike trains.
The traces enter as deviations from their mean (balanced inputs), so ``pre`` has either sign.

* ``plasticity.error`` (error-driven, as the paper's error-driven task): the rule may see,
  every time step, ``pre`` (the presynaptic trace), ``post`` (the student's potential), ``target``
  (the teacher's potential) and ``w``. The delta rule ``eta * pre * (target - post)`` learns
  every task.
* ``plasticity.reward`` (reward-driven, as the paper's reward-driven task): the student's output
  is noisy (``post = post_mean + noise``) and, once per trial of ``steps`` ms, the rule may see
  ``pre`` (the trace averaged over the trial), ``post``, ``post_mean``, ``reward`` (minus the
  squared error of the trial; the target itself is hidden), ``baseline`` (a running mean of the
  reward) and ``w``. Node perturbation ``eta * (reward - baseline) * (post - post_mean) * pre``
  learns every task.

An expression's ``inputs`` name which of these its rule sees (any subset, in any order).

Fitness (maximised) is how well the student reproduces each teacher after learning, on new
spike trains with plasticity off: ``-log10`` of the mean normalised squared error, bounded to
[-3, 3] so that a rule whose weights diverge scores -3 instead of failing, and a rule that
learns every task to 0.1 % error scores 3 whatever its speed (rewarding speed beyond that would
favour learning rates at the edge of divergence, which then fail on the next generation's tasks). Per-task errors are
returned as ``task_nmse`` on ``(generation, individual, task)``.

Batched: the spike trains and traces are made once per call and shared by the individuals (the
same for any batch, so the batch size never changes a result); each individual's rule is then
evaluated on arrays of shape ``(tasks, inputs)`` per step.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from l2lflow.optimizees.base import EvaluationContext, register_optimizee

#: what each variant's rule may see; an expression's ``inputs`` are any of these, by name
INPUTS: dict[str, tuple[str, ...]] = {
    "error": ("pre", "post", "target", "w"),
    "reward": ("pre", "post", "post_mean", "reward", "baseline", "w"),
}
FITNESS_BOUNDS = (-3.0, 3.0)


def _traces(
    rng: np.random.Generator, trials: int, steps: int, n_tasks: int, n_inputs: int, tau: float
) -> np.ndarray:
    """Presynaptic traces ``(trials, steps, tasks, inputs)`` of Poisson spike trains whose rates
    (0-50 Hz) are drawn per trial and input, as deviations from the mean trace of 25 Hz (the
    inputs are balanced: a synapse's drive is positive or negative)."""
    rates = rng.uniform(0.0, 50.0, size=(trials, 1, n_tasks, n_inputs))
    spikes = rng.random((trials, steps, n_tasks, n_inputs)) < rates * 1e-3
    traces = np.empty(spikes.shape)
    x = np.zeros((trials, n_tasks, n_inputs))
    decay = np.exp(-1.0 / tau)
    for t in range(steps):
        x = x * decay + spikes[:, t]
        traces[:, t] = x
    return traces - 25e-3 / (1.0 - decay)


def _rule_inputs(rule: Any, variant: str) -> None:
    inputs = tuple(getattr(getattr(rule, "spec", None), "inputs", ()))
    if not inputs or not set(inputs) <= set(INPUTS[variant]):
        raise ValueError(
            f"plasticity.{variant}: the parameter 'rule' must be an expression whose inputs are "
            f"some of {list(INPUTS[variant])} (got {list(inputs) or type(rule).__name__})"
        )


def _apply(rule: Any, shape: tuple[int, int], **available: np.ndarray) -> np.ndarray:
    """The rule on the inputs it names, each broadcast to one value per synapse."""
    args = {
        name: np.broadcast_to(value if value.ndim == 2 else value[:, None], shape)
        for name, value in available.items()
        if name in rule.spec.inputs
    }
    return np.broadcast_to(rule(**args), shape)


def _learn(
    rule: Any, eta: float, variant: str, train: np.ndarray, teacher: np.ndarray, noise: np.ndarray
) -> np.ndarray:
    """The student's weights ``(tasks, inputs)`` after learning every training trial (NaN
    where they diverged)."""
    trials, steps, n_tasks, n_inputs = train.shape
    w = np.zeros((n_tasks, n_inputs))
    shape = (n_tasks, n_inputs)
    with np.errstate(all="ignore"):
        if variant == "error":
            targets = np.einsum("tsko,ko->tsk", train, teacher)
            for t in range(trials):
                for s in range(steps):
                    pre = train[t, s]
                    post = np.einsum("ko,ko->k", w, pre)
                    w = w + eta * _apply(rule, shape, pre=pre, post=post, target=targets[t, s], w=w)
                if not np.all(np.isfinite(w)) or np.abs(w).max() > 1e6:
                    return np.full(shape, np.nan)
        else:
            pre_all = train.mean(axis=1)  # (trials, tasks, inputs)
            targets = np.einsum("tko,ko->tk", pre_all, teacher)
            baseline = None
            for t in range(trials):
                pre = pre_all[t]
                post_mean = np.einsum("ko,ko->k", w, pre)
                post = post_mean + noise[t]
                reward = -((post - targets[t]) ** 2)
                baseline = reward if baseline is None else baseline
                w = w + eta * _apply(
                    rule,
                    shape,
                    pre=pre,
                    post=post,
                    post_mean=post_mean,
                    reward=reward,
                    baseline=baseline,
                    w=w,
                )
                baseline = baseline + 0.2 * (reward - baseline)
                if not np.all(np.isfinite(w)) or np.abs(w).max() > 1e6:
                    return np.full(shape, np.nan)
    return w


def _evaluate(
    variant: str,
    params: list[dict[str, Any]],
    contexts: list[EvaluationContext] | None,
    *,
    n_tasks: int,
    n_inputs: int,
    n_trials: int,
    steps: int,
    tau: float,
    eta: float,
    task_seed: int,
) -> list[dict[str, Any]]:
    if contexts is not None and len(contexts) != len(params):
        raise ValueError(f"{len(params)} parameter sets but {len(contexts)} contexts")
    for p in params:
        unknown = sorted(set(p) - {"rule", "eta"})
        if unknown or "rule" not in p:
            raise ValueError(
                f"plasticity.{variant} takes the parameters 'rule' (expression) and 'eta' "
                f"(float, optional); got {sorted(p)}"
            )
        _rule_inputs(p["rule"], variant)
    # every individual of a call learns the same tasks (the generation's task seed)
    by_seed: dict[int, list[int]] = {}
    for i in range(len(params)):
        seed = contexts[i].task_seed if contexts is not None else task_seed
        by_seed.setdefault(int(seed), []).append(i)
    results: list[dict[str, Any]] = [{} for _ in params]
    for seed, members in by_seed.items():
        rng = np.random.default_rng([seed, 0x5EED])
        teacher = rng.normal(0.0, 1.0, size=(n_tasks, n_inputs)) / np.sqrt(n_inputs)
        train = _traces(rng, n_trials, steps, n_tasks, n_inputs, tau)
        test = _traces(rng, 8, steps, n_tasks, n_inputs, tau)
        noise = rng.normal(0.0, 0.1, size=(n_trials, n_tasks))
        test_target = np.einsum("tsko,ko->tsk", test, teacher)
        scale = np.mean(test_target**2, axis=(0, 1))
        for i in members:
            w = _learn(
                params[i]["rule"], float(params[i].get("eta", eta)), variant, train, teacher, noise
            )
            with np.errstate(all="ignore"):
                error = np.mean((np.einsum("tsko,ko->tsk", test, w) - test_target) ** 2, (0, 1))
                nmse = np.where(np.isfinite(error), error / scale, np.inf)
                fitness = -np.log10(np.mean(nmse))
            fitness = float(np.clip(np.nan_to_num(fitness, nan=-np.inf), *FITNESS_BOUNDS))
            results[i] = {"fitness": fitness, "task_nmse": np.minimum(nmse, 1e6)}
    return results


def _variant(variant: str, summary: str) -> Any:
    def optimizee(
        params: list[dict[str, Any]],
        seeds: list[int],
        *,
        contexts: list[EvaluationContext] | None = None,
        n_tasks: int = 4,
        n_inputs: int = 10,
        n_trials: int = 20 if variant == "error" else 400,
        steps: int = 20,
        tau: float = 10.0,
        eta: float = 0.05,
        task_seed: int = 0,
    ) -> list[dict[str, Any]]:
        return _evaluate(
            variant,
            params,
            contexts,
            n_tasks=n_tasks,
            n_inputs=n_inputs,
            n_trials=n_trials,
            steps=steps,
            tau=tau,
            eta=eta,
            task_seed=task_seed,
        )

    optimizee.__doc__ = summary
    optimizee.__name__ = optimizee.__qualname__ = f"{variant}_driven"
    return register_optimizee(
        f"plasticity.{variant}", batched=True, meta_test=True, array_dims={"task_nmse": ("task",)}
    )(optimizee)


error_driven = _variant(
    "error",
    "Error-driven plasticity rule learning: a student neuron learns a teacher's potential "
    "with the evolved rule (maximise).",
)
reward_driven = _variant(
    "reward",
    "Reward-driven plasticity rule learning: a noisy student neuron learns from a scalar "
    "reward with the evolved rule (maximise).",
)
