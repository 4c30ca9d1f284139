"""Learning to learn with an LSNN in PyTorch: evolve the network so that a few BPTT steps fit a new
sine wave. Batched: a whole generation (individuals × tasks) runs as one set of tensors.

The network is an LSNN (Bellec et al. 2018): recurrent LIF neurons, a fraction of them ALIF
neurons whose threshold rises with their own recent spikes (adaptation), spikes through a
Heaviside step whose gradient is replaced by a piecewise-linear pseudo-derivative. A linear
readout of the low-pass filtered spikes gives the output ``y(t)``.

Task family: regression of random sinusoids ``y = A sin(f x + phase)`` (MAML's family: A in
[0.1, 5], phase in [0, pi], f = 1 or in [0.5, 2] with ``vary_frequency``), x in [-5, 5]. A task is
shown as a spike sequence: ``n_points`` x values one after the other, each for
``n_steps / n_points`` time steps, population-coded over ``n_inputs`` input neurons (Gaussian
tuning curves, Bernoulli spikes); the target of every step is the current point's y, scored on the
second half of each point's window (the first half lets the network settle). A task has a training
sequence and a held-out sequence of *other* x values of the same sine. The family lives in
:mod:`l2lflow.tasks.sine`, shared with ``nest.eprop``: ``task_family: sine`` (random frequency too)
gives both optimizees the same tasks for the same task seed.

The input must be strong enough for the network's output to depend on x rather than on time.
Measured at the reference size (6 tasks, 8 hyperparameter sets): with 200 Hz peak input rate,
input gain 5 and a 20 ms readout filter, five inner steps lowered the training error but left the
held-out error where it was (the network fitted the training sequence in time, not y(x)); with
the defaults below (1,000 Hz, gain 10, 5 ms) the held-out MSE falls from 2.78 before learning to
1.31 after it (Adam, ``inner_lr`` 0.1, ``w_scale`` 0.3), and bad hyperparameters make it 6.9:
learning generalises and the outer loop has something to optimise.

Inner loop, per individual and task: ``inner_steps`` gradient steps (BPTT through the whole
training sequence, Adam or SGD with the evolved ``inner_lr``) on input, recurrent and readout
weights, all starting from the individual's initial weights. Fitness = MSE on the held-out
sequence after learning, averaged over ``n_tasks`` tasks, to be **minimised**. The outer loop
therefore tunes what makes *learning* work (time constants, adaptation, learning rate, weight
scale, fraction of adaptive neurons), not a solution to one task.

Randomness has two owners (as in ``nest.reservoir``): the tasks, their x values and input spikes
come from ``context.task_seed`` only (the same for every individual of a generation; a held-out
seed in the meta-test phase); an individual's initial weights come from its own seed, drawn on
the CPU with one ``torch.Generator`` per individual, so they never depend on the batch.

Batch-size independence, and how it is kept. Every individual × task is one slice of the batch
dimension ``k = individual * n_tasks + task``; nothing mixes slices: recurrent, input and readout
products are ``torch.bmm`` (one matrix per slice), every reduction over time or neurons is a
``bmm`` with a 0/1 vector or a count of spikes (integers, exact in any order), constants such as
``exp(-dt / tau)`` are computed per individual in float64 NumPy and only then turned into
tensors, and no fused op that a CPU kernel would evaluate with an FMA in its vector body but not
in its scalar tail (``add(alpha=)``, ``addcmul``, ``lerp``) is used. The loss whose gradient is
taken is the sum over slices, so each slice gets the gradient of its own loss. Measured: on CPU
(MKL, 1 or 2 threads) every individual's results are bitwise identical whatever batch it is in
(``tests/test_torch_lsnn.py``). On CUDA cuBLAS may pick a different GEMM kernel for another
batch count, so only rounding-level agreement can be expected there; spiking thresholds can
amplify that, and ``benchmarks/gpu_batch.py --check`` measures it.
"""

from __future__ import annotations

import functools
import math
import os
from typing import Any

import numpy as np

from l2lflow.optimizees.base import EvaluationContext, checked_params, register_optimizee
from l2lflow.tasks.sine import draw_tasks, encode_task, family_varies_frequency, point_schedule

#: hyperparameters and their defaults (ms for time constants); a missing one takes its default
DEFAULT_PARAMS: dict[str, float] = {
    "tau_m": 20.0,  # membrane time constant (ms)
    "tau_a": 200.0,  # adaptation time constant of ALIF neurons (ms)
    "beta": 1.0,  # adaptation strength: threshold = 1 + beta * a
    "inner_lr": 0.01,  # learning rate of the inner loop
    "w_scale": 1.0,  # scale of the initial input and recurrent weights
    "frac_adaptive": 0.4,  # fraction of ALIF neurons (the others are LIF)
}

#: recommended search space of the outer loop
DEFAULT_SPACE: dict[str, dict[str, Any]] = {
    "tau_m": {"low": 5.0, "high": 100.0, "scale": "log", "type": "float"},
    "tau_a": {"low": 20.0, "high": 2000.0, "scale": "log", "type": "float"},
    "beta": {"low": 0.0, "high": 3.0, "scale": "linear", "type": "float"},
    "inner_lr": {"low": 1e-4, "high": 0.3, "scale": "log", "type": "float"},
    "w_scale": {"low": 0.1, "high": 10.0, "scale": "log", "type": "float"},
    "frac_adaptive": {"low": 0.0, "high": 1.0, "scale": "linear", "type": "float"},
}

# ---------------------------------------------------------------------------- torch parts
_INSTALL_HINT = (
    "torch.lsnn needs PyTorch: `pip install -e '.[torch]'` (on CPU-only machines first "
    "`pip install torch --index-url https://download.pytorch.org/whl/cpu` to avoid the CUDA build)"
)


@functools.cache
def _torch_parts() -> Any:
    """Import torch and build the pieces that need it (once per process)."""
    try:
        import torch
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(_INSTALL_HINT) from exc

    class SpikeFunction(torch.autograd.Function):
        """Heaviside forward; piecewise-linear pseudo-derivative ``d * max(0, 1 - |x|)`` backward."""

        @staticmethod
        def forward(ctx: Any, x: Any, dampening: float) -> Any:
            ctx.save_for_backward(x)
            ctx.dampening = dampening
            return (x > 0).to(x.dtype)

        @staticmethod
        def backward(ctx: Any, grad: Any) -> Any:
            (x,) = ctx.saved_tensors
            return grad * (ctx.dampening * torch.clamp(1.0 - torch.abs(x), min=0.0)), None

    def step(z, v, a, s, i_t, w_rec, c):  # noqa: ANN001, ANN202 - tensors
        """One time step of every network of the batch (LSNN update, reset by subtraction)."""
        rec = torch.bmm(z.unsqueeze(1), w_rec).squeeze(1)
        a = c["rho"] * a + c["one_minus_rho"] * z
        thr = 1.0 + c["beta"] * a
        # no gradient through the reset (as in e-prop): it only destabilises BPTT
        v = c["alpha"] * v + c["one_minus_alpha"] * (i_t + rec) - (z * thr).detach()
        z = SpikeFunction.apply((v - thr) / thr, c["dampening"])
        s = c["kappa"] * s + z
        return z, v, a, s

    return torch, SpikeFunction, step


@functools.cache
def _compiled_step(mode: str | None) -> Any:
    torch, _, step = _torch_parts()
    return torch.compile(step, mode=mode, dynamic=False)


def _resolve_device(torch: Any, device: str) -> Any:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device not in ("cpu", "cuda") and not str(device).startswith("cuda:"):
        raise ValueError(f"device must be 'auto', 'cpu' or 'cuda', got {device!r}")
    return torch.device(device)


def _valid(p: dict[str, float]) -> bool:
    """Whether finite parameters describe a network that can be simulated."""
    return (
        p["tau_m"] > 0
        and p["tau_a"] > 0
        and p["beta"] >= 0
        and p["inner_lr"] >= 0
        and p["w_scale"] >= 0
        and 0.0 <= p["frac_adaptive"] <= 1.0
    )


def _checked(params: dict[str, Any]) -> tuple[dict[str, float], bool]:
    """Parameters with defaults filled in, and whether they describe a valid network."""
    return checked_params(params, DEFAULT_PARAMS, "torch.lsnn", _valid)


@register_optimizee(
    "torch.lsnn",
    batched=True,
    prefers_gpu=True,
    meta_test=True,
    array_dims={"task_mse": ("task",)},
)
def lsnn(
    params: list[dict[str, Any]],
    seeds: list[int],
    *,
    contexts: list[EvaluationContext] | None = None,
    n_neurons: int = 200,
    n_inputs: int = 20,
    n_steps: int = 200,
    inner_steps: int = 5,
    n_tasks: int = 4,
    n_points: int = 10,
    vary_frequency: bool = False,
    task_family: str = "maml",
    inner_optimizer: str = "adam",
    input_gain: float = 10.0,
    tau_out: float = 5.0,
    dt: float = 1.0,
    max_rate_hz: float = 1000.0,
    dampening: float = 0.3,
    max_mse: float = 1e6,
    device: str = "auto",
    dtype: str = "float32",
    compile: bool | str = False,
    max_batch_slices: int | None = None,
) -> list[dict[str, Any]]:
    """An LSNN learns new sine waves with a few BPTT steps; fitness = held-out MSE after
    learning, averaged over ``n_tasks`` tasks from ``context.task_seed`` (minimise). Batched.

    Parameters (per individual): ``tau_m``, ``tau_a``, ``beta``, ``inner_lr``, ``w_scale``,
    ``frac_adaptive`` (see :data:`DEFAULT_PARAMS`). Options: network size (``n_neurons``,
    ``n_inputs``), sequence (``n_steps`` of ``dt`` ms showing ``n_points`` x values),
    ``task_family`` (``"maml"``: f = 1 unless ``vary_frequency``; ``"sine"``: random frequency,
    the family ``nest.eprop`` learns by default, see :mod:`l2lflow.tasks.sine`),
    ``inner_steps`` of ``inner_optimizer`` (``"adam"`` or ``"sgd"``), ``device`` (``"auto"``:
    CUDA when available), ``dtype`` (``"float32"``/``"float64"``), ``compile`` (``True`` or a
    ``torch.compile`` mode such as ``"reduce-overhead"``: fuses each time step; off by default),
    ``max_batch_slices`` (individuals × tasks per forward pass; ``None``: as many as fit in
    :data:`MEMORY_FRACTION` of the device's memory, see :func:`slices_per_pass`; a larger batch
    is evaluated in several passes of whole individuals, with the same bits on a CPU).

    Returns per individual: ``fitness`` (held-out MSE after learning), ``pre_mse`` (before),
    ``train_mse`` (training loss at the last inner step), ``rate`` (mean firing rate in Hz on the
    held-out sequence after learning), ``task_mse`` (per task, on the ``task`` dimension). A
    diverging individual (non-finite values, or a held-out MSE above ``max_mse``) gets a NaN
    fitness, which l2lflow records as a failed evaluation of that individual only.
    """
    if len(params) != len(seeds):
        raise ValueError(f"{len(params)} parameter sets but {len(seeds)} seeds")
    if contexts is not None and len(contexts) != len(params):
        raise ValueError(f"{len(params)} parameter sets but {len(contexts)} contexts")
    if inner_optimizer not in ("adam", "sgd"):
        raise ValueError(f"inner_optimizer must be 'adam' or 'sgd', got {inner_optimizer!r}")
    if dtype not in ("float32", "float64"):
        raise ValueError(f"dtype must be 'float32' or 'float64', got {dtype!r}")
    vary_frequency = bool(vary_frequency) or family_varies_frequency(task_family)
    if max_batch_slices is not None and int(max_batch_slices) < 1:
        raise ValueError(f"max_batch_slices must be at least 1, got {max_batch_slices!r}")
    n_ind = len(params)
    if n_ind == 0:
        return []
    torch, _, step = _torch_parts()
    dev = _resolve_device(torch, device)
    if compile:
        step = _compiled_step(None if compile is True else str(compile))
    if contexts is None:
        contexts = [
            EvaluationContext(generation=0, individual=i, seed=s) for i, s in enumerate(seeds)
        ]
    elif dev.type == "cpu":
        torch.set_num_threads(max(1, int(contexts[0].threads)))
    if max_batch_slices is None:
        max_batch_slices = slices_per_pass(
            device_memory_bytes(torch, dev), int(n_neurons), int(n_inputs), int(n_steps), dtype
        )
    per_pass = max(1, int(max_batch_slices) // int(n_tasks))
    if per_pass < n_ind:
        contexts[0].log.info(
            "torch.lsnn: %d individuals x %d tasks in %d passes of at most %d individuals "
            "(max_batch_slices=%d)",
            n_ind,
            n_tasks,
            math.ceil(n_ind / per_pass),
            per_pass,
            max_batch_slices,
        )
    options = dict(
        n_neurons=n_neurons,
        n_inputs=n_inputs,
        n_steps=n_steps,
        inner_steps=inner_steps,
        n_tasks=n_tasks,
        n_points=n_points,
        vary_frequency=vary_frequency,
        inner_optimizer=inner_optimizer,
        input_gain=input_gain,
        tau_out=tau_out,
        dt=dt,
        max_rate_hz=max_rate_hz,
        dampening=dampening,
        max_mse=max_mse,
        dtype=dtype,
    )
    out: list[dict[str, Any]] = []
    for a in range(0, n_ind, per_pass):
        b = a + per_pass
        out.extend(_one_pass(params[a:b], seeds[a:b], contexts[a:b], torch, step, dev, **options))
    return out


#: the share of the device's memory one forward pass may plan to use (the rest: other
#: processes, the allocator's slack, and the error of :func:`slice_bytes`)
MEMORY_FRACTION = 0.25


def slice_bytes(n_neurons: int, n_inputs: int, n_steps: int, dtype: str = "float32") -> int:
    """Bytes one individual × task slice takes at the peak of an inner BPTT step.

    Per time step autograd keeps a few dozen vectors of ``n_neurons`` (states, thresholds, the
    surrogate's inputs, the probes and their gradients, the stacked traces and spikes); per
    slice the weights, their Adam moments, gradients and update temporaries are about 8
    recurrent matrices. Measured on CPU at the reference size (200 neurons, 20 inputs, 200
    steps, float32): 7.7 MB per slice (peak RSS of 10 vs 2 individuals × 4 tasks); this gives
    7.8 MB.
    """
    size = 8 if dtype == "float64" else 4
    per_step = 40 * n_neurons + 2 * n_inputs
    weights = 8 * (n_neurons * n_neurons + n_inputs * n_neurons)
    return size * (n_steps * per_step + weights)


def device_memory_bytes(torch: Any, dev: Any) -> int:
    """The memory of the device a pass runs on: the GPU's, or the machine's RAM.

    The total, not what is free now, so that the split (and on a GPU, whose kernels may round
    differently for other batch sizes, the results) does not depend on what else runs.
    """
    if dev.type == "cuda":
        return int(torch.cuda.get_device_properties(dev).total_memory)
    return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))


def slices_per_pass(
    memory_bytes: int, n_neurons: int, n_inputs: int, n_steps: int, dtype: str = "float32"
) -> int:
    """How many individual × task slices one pass may hold: :data:`MEMORY_FRACTION` of
    ``memory_bytes`` over :func:`slice_bytes` (at least one)."""
    return max(
        1, int(memory_bytes * MEMORY_FRACTION) // slice_bytes(n_neurons, n_inputs, n_steps, dtype)
    )


def _one_pass(
    params: list[dict[str, Any]],
    seeds: list[int],
    contexts: list[EvaluationContext],
    torch: Any,
    step: Any,
    dev: Any,
    *,
    n_neurons: int,
    n_inputs: int,
    n_steps: int,
    inner_steps: int,
    n_tasks: int,
    n_points: int,
    vary_frequency: bool,
    inner_optimizer: str,
    input_gain: float,
    tau_out: float,
    dt: float,
    max_rate_hz: float,
    dampening: float,
    max_mse: float,
    dtype: str,
) -> list[dict[str, Any]]:
    """Evaluate ``params`` as one set of tensors (see :func:`lsnn`)."""
    n_ind = len(params)
    tdtype = getattr(torch, dtype)
    n, n_in, n_t, n_tasks = int(n_neurons), int(n_inputs), int(n_steps), int(n_tasks)
    bt = n_ind * n_tasks
    checked = [_checked(p) for p in params]
    valid = np.array([ok for _, ok in checked])
    hp = [p for p, _ in checked]

    # --- tasks: encoded once per distinct task seed, shared by every individual holding it
    task_seeds = [int(c.task_seed) for c in contexts]
    distinct = sorted(set(task_seeds))
    encoded = []
    for ts in distinct:
        tasks = draw_tasks(ts, n_tasks, n_points=n_points, vary_frequency=vary_frequency)
        encoded.extend(
            encode_task(
                task,
                ts,
                t,
                n_inputs=n_in,
                n_steps=n_t,
                n_points=n_points,
                dt=dt,
                max_rate_hz=max_rate_hz,
            )
            for t, task in enumerate(tasks)
        )
    spikes = torch.from_numpy(np.stack([e[0] for e in encoded]))  # [U*T, 2, S, I]
    targets = torch.from_numpy(np.stack([e[1] for e in encoded]))  # [U*T, 2, S]
    group = np.array([distinct.index(ts) for ts in task_seeds])
    rows = torch.from_numpy((group[:, None] * n_tasks + np.arange(n_tasks)).reshape(-1))
    spikes = spikes.to(dev, tdtype).index_select(0, rows.to(dev))  # [BT, 2, S, I]
    targets = targets.to(dev, tdtype).index_select(0, rows.to(dev))
    x_train, x_test = spikes[:, 0].contiguous(), spikes[:, 1].contiguous()
    y_train, y_test = targets[:, 0].contiguous(), targets[:, 1].contiguous()
    _, scored = point_schedule(n_t, n_points)
    mask = torch.from_numpy(scored.astype(np.float32)).to(dev, tdtype)
    mask = mask.expand(bt, n_t).unsqueeze(2).contiguous()  # [BT, S, 1]
    n_scored = float(scored.sum())

    # --- per-individual constants, computed in float64 NumPy (independent of the batch)
    def per_slice(values: list[float]) -> Any:
        col = np.repeat(np.asarray(values, dtype=np.float64), n_tasks)[:, None]
        return torch.from_numpy(col).to(dev, tdtype)

    alpha = [math.exp(-dt / p["tau_m"]) for p in hp]
    rho = [math.exp(-dt / p["tau_a"]) for p in hp]
    n_adaptive = np.array([round(p["frac_adaptive"] * n) for p in hp])
    beta_rows = np.where(
        np.arange(n)[None, :] < n_adaptive[:, None], np.array([p["beta"] for p in hp])[:, None], 0.0
    )
    consts = {
        "alpha": per_slice(alpha),
        "one_minus_alpha": per_slice([1.0 - a for a in alpha]),
        "rho": per_slice(rho),
        "one_minus_rho": per_slice([1.0 - r for r in rho]),
        "beta": torch.from_numpy(np.repeat(beta_rows, n_tasks, axis=0)).to(dev, tdtype),
        "kappa": math.exp(-dt / tau_out),
        "dampening": float(dampening),
    }
    lr = per_slice([p["inner_lr"] for p in hp]).unsqueeze(2)  # [BT, 1, 1]

    # --- initial weights: one CPU generator per individual, then copied for each task
    w_in, w_rec, w_out = [], [], []
    for p, seed in zip(hp, seeds, strict=True):
        g = torch.Generator(device="cpu")
        g.manual_seed(int(seed))
        w_in.append(torch.randn(n_in, n, generator=g) * (p["w_scale"] * input_gain / n_in**0.5))
        rec = torch.randn(n, n, generator=g) * (p["w_scale"] / n**0.5)
        w_rec.append(rec.fill_diagonal_(0.0))
        w_out.append(torch.randn(n, 1, generator=g) * (1.0 / n))
    off_diagonal = (1.0 - torch.eye(n, dtype=tdtype, device=dev)).unsqueeze(0)
    weights = [
        torch.stack(w).to(dev, tdtype).repeat_interleave(n_tasks, dim=0).contiguous()
        for w in (w_in, w_rec, w_out)
    ] + [torch.zeros(bt, 1, 1, dtype=tdtype, device=dev)]  # readout bias

    def run(x: Any, w: list[Any], probes: list[Any] | None = None) -> tuple[Any, Any, Any]:
        """Simulate every slice on sequence ``x``: the readout [BT, S], spike counts [BT] and the
        spikes entering each step [BT, S, N].

        ``probes`` (zero tensors that require grad, one per step) are added to each step's
        synaptic drive, so that their gradients are dL/d(drive_t). The input and recurrent
        weight gradients are then two bmm's over the whole sequence (x^T G and Z^T G) instead of
        one outer product per step accumulated by autograd: much less memory traffic.
        """
        w_in_, w_rec_, w_out_, b_out_ = w
        current = torch.bmm(x, w_in_).transpose(0, 1).contiguous()  # [S, BT, N]
        z = torch.zeros(bt, n, dtype=tdtype, device=dev)
        v, a, s = torch.zeros_like(z), torch.zeros_like(z), torch.zeros_like(z)
        traces, inputs = [], []
        for t in range(n_t):
            inputs.append(z.detach())
            drive = current[t] if probes is None else current[t] + probes[t]
            z, v, a, s = step(z, v, a, s, drive, w_rec_, consts)
            traces.append(s)
        y = torch.bmm(torch.stack(traces, dim=1), w_out_).squeeze(2) + b_out_.squeeze(2)
        spikes_in = torch.stack(inputs, dim=1)  # z_{t-1} for t = 0..S-1
        # spike counts are integers, exact in any summation order; z_{S-1} closes the count
        count = spikes_in.sum(dim=(1, 2)) + z.detach().sum(dim=1)
        return y, count, spikes_in

    def mse(y: Any, target: Any) -> Any:
        err = y - target
        return torch.bmm((err * err).unsqueeze(1), mask).reshape(bt) / n_scored

    with torch.no_grad():
        pre = mse(run(x_test, weights)[0], y_test)
    weights = [w.contiguous() for w in weights]
    moments = [(torch.zeros_like(w), torch.zeros_like(w)) for w in weights]
    finite = torch.ones(bt, dtype=torch.bool, device=dev)
    train = torch.full((bt,), math.nan, dtype=tdtype, device=dev)
    for k in range(1, int(inner_steps) + 1):
        with torch.enable_grad():
            readout = [
                weights[2].clone().requires_grad_(True),
                weights[3].clone().requires_grad_(True),
            ]
            probes = [
                torch.zeros(bt, n, dtype=tdtype, device=dev, requires_grad=True) for _ in range(n_t)
            ]
            y, _, spikes_in = run(x_train, [weights[0], weights[1], *readout], probes)
            loss = mse(y, y_train)
            grads = torch.autograd.grad(loss.sum(), readout + probes)
        with torch.no_grad():
            drive_grad = torch.stack(grads[2:], dim=1)  # [BT, S, N]
            grads = [
                torch.bmm(x_train.transpose(1, 2), drive_grad),
                torch.bmm(spikes_in.transpose(1, 2), drive_grad) * off_diagonal,
                grads[0],
                grads[1],
            ]
            train = loss.detach()
            finite &= torch.isfinite(train)
            for w, grad, (m1, m2) in zip(weights, grads, moments, strict=True):
                if inner_optimizer == "adam":
                    m1.copy_(0.9 * m1 + 0.1 * grad)
                    m2.copy_(0.999 * m2 + 0.001 * (grad * grad))
                    update = (m1 / (1.0 - 0.9**k)) / (torch.sqrt(m2 / (1.0 - 0.999**k)) + 1e-8)
                else:
                    update = grad
                w.copy_(w - lr * update)
    with torch.no_grad():
        y, count, _ = run(x_test, weights)
        post = mse(y, y_test)
    finite &= torch.isfinite(post)

    post_np = post.double().cpu().numpy().reshape(n_ind, n_tasks)
    pre_np = pre.double().cpu().numpy().reshape(n_ind, n_tasks)
    train_np = train.double().cpu().numpy().reshape(n_ind, n_tasks)
    count_np = count.double().cpu().numpy().reshape(n_ind, n_tasks)
    ok = finite.cpu().numpy().reshape(n_ind, n_tasks).all(axis=1) & valid
    duration_s = n_t * dt / 1000.0
    out = []
    for i in range(n_ind):
        diverged = not ok[i] or not np.all(post_np[i] <= max_mse)
        out.append(
            {
                "fitness": math.nan if diverged else float(post_np[i].mean()),
                "pre_mse": float(pre_np[i].mean()),
                "train_mse": float(train_np[i].mean()),
                "rate": float(count_np[i].sum() / (n_tasks * n * duration_s)),
                "task_mse": post_np[i].copy(),
            }
        )
        if diverged:
            reason = "invalid parameters" if not valid[i] else "diverged"
            contexts[i].log.warning(
                "individual %d: %s (fitness NaN)", contexts[i].individual, reason
            )
    return out
