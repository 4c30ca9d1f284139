"""Figures of a results store (matplotlib, drawn off-screen: no display, no pyplot state).

``l2lflow plot results/default --out figures/`` writes them as PNG files; in Python::

    from l2lflow.plots import write_figures
    write_figures("results/default", "figures")        # {"fitness": Path(...), ...}

* ``fitness.png``: best, mean and median fitness per generation with the 10-90 % and 25-75 %
  quantile bands of the successful evaluations, the best so far, and the meta-test scores.
* ``parameters.png``: one panel per parameter: the population of every generation (coloured by
  fitness), its mean and the generation's best individual.
* ``tasks.png``: per-task scores (generation × task, mean over the successful individuals) of
  learning-to-learn optimizees, for every variable on a ``task`` dimension; only if there is one.
* ``runtime.png``: how long evaluations took: a histogram and the spread per generation.
* ``learning_curves.png``: the inner loop's loss per iteration (``learning_curve`` on
  ``(generation, individual, task, iteration)``, e.g. ``nest.eprop``) of the best individuals of
  the last generation against generation 0's; only if the store has one.

Large populations are drawn subsampled (at most ``MAX_POINTS`` scattered points per generation
and panel); the summary lines always use every evaluation.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

FIGURES = ("fitness", "parameters", "tasks", "runtime", "learning_curves")
MAX_POINTS = 300
DPI = 110


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)  # Agg, whatever the user's default backend is
    return fig


def _save(fig, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    return path


def _dataset(results: Any):
    """A Dataset with the accessor registered, from a Dataset or a results path."""
    import xarray as xr

    import l2lflow.accessor  # noqa: F401  (ds.l2l)

    if isinstance(results, xr.Dataset):
        return results
    from l2lflow.store import open_results

    return open_results(results)


def _subsample(n: int, k: int = MAX_POINTS, seed: int = 0) -> np.ndarray:
    """At most ``k`` sorted indices of ``range(n)``, the same on every call."""
    if n <= k:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=k, replace=False))


def _space(ds) -> dict[str, dict[str, Any]]:
    return dict(ds.attrs.get("l2lflow", {}).get("config", {}).get("space", {}))


def _title(ds, what: str) -> str:
    return f"{ds.attrs.get('l2lflow', {}).get('name', '')}: {what}".lstrip(": ")


def _marker(n_generations: int) -> dict[str, Any]:
    return {"marker": "o", "markersize": 3} if n_generations <= 40 else {}


# ---------------------------------------------------------------------------- fitness
def plot_fitness(results: Any, path: str | Path) -> Path:
    """Fitness over generations: best, mean, median, quantile bands, best so far, meta-test."""
    ds = _dataset(results)
    acc = ds.l2l
    traj = acc.fitness_trajectory(quantiles=(0.1, 0.25, 0.75, 0.9))
    gens = traj.index.to_numpy()
    fitness, ok = acc._ok()
    fig = _figure(7.5, 4.5)
    ax = fig.add_subplot()
    # the population, faintly
    xs, ys = [], []
    for k in range(fitness.shape[0]):
        good = np.flatnonzero(ok[k])
        pick = good[_subsample(good.size, seed=k)]
        xs.append(np.full(pick.size, gens[k], dtype=float))
        ys.append(fitness[k, pick])
    if xs:
        ax.scatter(
            np.concatenate(xs),
            np.concatenate(ys),
            s=4,
            color="0.55",
            alpha=0.3,
            linewidths=0,
            label="evaluations",
            rasterized=True,
        )
    ax.fill_between(
        gens, traj["q10"], traj["q90"], color="tab:blue", alpha=0.15, label="10–90 %", step=None
    )
    ax.fill_between(gens, traj["q25"], traj["q75"], color="tab:blue", alpha=0.3, label="25–75 %")
    mk = _marker(len(gens))
    ax.plot(gens, traj["median"], color="tab:blue", ls="--", lw=1.2, label="median")
    ax.plot(gens, traj["mean"], color="tab:blue", lw=1.5, label="mean", **mk)
    ax.plot(gens, traj["best"], color="tab:orange", lw=1.8, label="best", **mk)
    ax.plot(
        gens,
        traj["best_so_far"],
        color="tab:red",
        lw=1,
        ls=":",
        label="best so far",
        drawstyle="steps-post",
    )
    meta = acc.meta_test()
    if "meta_test_fitness" in meta:
        mt = meta["meta_test_fitness"].to_numpy(dtype=float)
        x = np.full(mt.size, (gens[-1] if gens.size else 0) + 1)
        ax.scatter(
            x, mt, marker="*", s=90, color="tab:green", zorder=5, label="meta-test (held-out tasks)"
        )
        ax.axvline(x[0] - 0.5, color="0.6", lw=0.8, ls="-")
    ok_values = fitness[ok]
    if (
        acc.direction == "minimize"
        and ok_values.size
        and ok_values.min() > 0
        and ok_values.max() / ok_values.min() > 100
    ):
        ax.set_yscale("log")
    n_failed = int(traj["n_failed"].sum())
    name = ds.attrs.get("l2lflow", {}).get("config", {}).get("optimizee", {}).get("fitness")
    ax.set_xlabel("generation")
    ax.set_ylabel(
        f"fitness{f' ({name})' if name and name != 'fitness' else ''} "
        f"({'lower' if acc.direction == 'minimize' else 'higher'} is better)"
    )
    extra = f"; {n_failed} failed evaluations left out" if n_failed else ""
    ax.set_title(_title(ds, f"fitness per generation{extra}"), fontsize=10)
    if gens.size and gens.size <= 20:
        ticks, labels = list(gens), [str(g) for g in gens]
        if "meta_test_fitness" in meta:
            ticks.append(gens[-1] + 1)
            labels.append("meta-\ntest")
        ax.set_xticks(ticks, labels)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best", ncols=2)
    return _save(fig, path)


# ---------------------------------------------------------------------------- parameters
def plot_parameters(results: Any, path: str | Path) -> Path:
    """One panel per parameter: population per generation (colour: fitness rank), mean, best."""
    ds = _dataset(results)
    acc = ds.l2l
    names = acc.parameters
    space = _space(ds)
    gens = np.asarray(ds["generation"].values)
    fitness, ok = acc._ok()
    n_gen = fitness.shape[0]
    gens = gens[:n_gen]
    # colour: the fitness rank within its generation (0 worst .. 1 best); grey when not done
    key = np.where(ok, -acc._key(fitness), -np.inf)
    rank = np.argsort(np.argsort(key, axis=1), axis=1) / max(fitness.shape[1] - 1, 1)
    best = acc.best_per_generation()
    ncols = min(3, max(len(names), 1))
    nrows = max(math.ceil(len(names) / ncols), 1)
    fig = _figure(3.4 * ncols + 0.8, 2.5 * nrows + 0.5)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    picks = [_subsample(fitness.shape[1], seed=k) for k in range(n_gen)]
    from matplotlib import colormaps

    cmap = colormaps["viridis"].with_extremes(bad="0.7")
    mappable = None
    for ax, name in zip(axes.flat, names, strict=False):
        values = np.asarray(ds[name].values)[:n_gen]
        labels = None
        if values.dtype.kind not in "biuf":  # choices: categories on the y axis
            labels = sorted({str(v) for v in values.ravel()})
            lookup = {v: j for j, v in enumerate(labels)}
            values = np.vectorize(lambda v, lookup=lookup: lookup[str(v)], otypes=[float])(values)
        values = values.astype(np.float64)
        x = np.concatenate([np.full(p.size, gens[k], dtype=float) for k, p in enumerate(picks)])
        y = np.concatenate([values[k, p] for k, p in enumerate(picks)])
        c = np.concatenate([np.where(ok[k, p], rank[k, p], np.nan) for k, p in enumerate(picks)])
        jitter = (np.random.default_rng(1).random(x.size) - 0.5) * 0.3
        mappable = ax.scatter(
            x + jitter,
            y,
            c=c,
            cmap=cmap,
            vmin=0,
            vmax=1,
            s=6,
            alpha=0.6,
            linewidths=0,
            plotnonfinite=True,
            rasterized=True,
        )
        if labels is None:
            ax.plot(gens, np.nanmean(values, axis=1), color="black", lw=1.3, label="mean")
        if name in best:
            best_y = best[name].to_numpy()
            if labels is not None:
                best_y = np.asarray([labels.index(str(v)) for v in best_y], dtype=float)
            ax.plot(best.index, best_y, color="tab:red", lw=0, marker="x", ms=4, label="best")
        spec = space.get(name, {})
        if labels is not None:
            ax.set_yticks(range(len(labels)), labels)
        elif spec.get("scale") == "log" and np.nanmin(values, initial=np.inf) > 0:
            ax.set_yscale("log")
            _plain_log_ticks(ax.yaxis, np.nanmin(values), np.nanmax(values))
        ax.set_title(name, fontsize=9)
        ax.tick_params(which="both", labelsize=7)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(names) :]:
        ax.set_visible(False)
    if names:
        axes.flat[0].legend(fontsize=6, loc="best")
        for ax in axes[-1]:
            ax.set_xlabel("generation", fontsize=8)
    if mappable is not None:
        bar = fig.colorbar(mappable, ax=axes, shrink=0.8, pad=0.01)
        bar.set_label("fitness rank in its generation (1 = best)", fontsize=7)
        bar.ax.tick_params(labelsize=6)
    fig.suptitle(_title(ds, "parameters per generation"), fontsize=10)
    return _save(fig, path)


def _plain_log_ticks(axis, lo: float, hi: float) -> None:
    """Tick labels like 20, 50, 100 on a log axis instead of 2×10¹ (the minor ones at 2 and 5
    only, and only if the axis spans less than about three decades)."""
    from matplotlib.ticker import FuncFormatter, NullFormatter

    def minor(v: float, _: Any) -> str:
        mantissa = round(v / 10 ** math.floor(math.log10(v))) if v > 0 else 0
        return f"{v:g}" if mantissa in (2, 5) else ""

    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_formatter(FuncFormatter(minor) if hi / lo < 300 else NullFormatter())


# ---------------------------------------------------------------------------- tasks
def plot_tasks(results: Any, path: str | Path) -> Path | None:
    """Heatmap generation × task (mean over the successful individuals) of every per-task
    variable; None (and nothing written) when the store has no ``task`` dimension."""
    ds = _dataset(results)
    acc = ds.l2l
    names = acc.task_variables
    if not names:
        return None
    _, ok = acc._ok()
    n_gen = ok.shape[0]
    fig = _figure(min(3.0 + 4.0 * len(names), 14), 1.6 + min(0.25 * n_gen, 6.0))
    axes = fig.subplots(1, len(names), squeeze=False)[0]
    gens = np.asarray(ds["generation"].values)[:n_gen]
    for ax, name in zip(axes, names, strict=True):
        da = ds[name]
        values = np.asarray(
            da.transpose("generation", "individual", "task").values, dtype=np.float64
        )[:n_gen]
        values = np.where(ok[:, :, None], values, np.nan)
        has = np.isfinite(values).any(axis=1)
        mean = np.where(has, np.nanmean(np.where(has[:, None, :], values, 0.0), axis=1), np.nan)
        n_task = mean.shape[1]
        im = ax.imshow(
            mean,
            aspect="auto",
            origin="lower",
            cmap="magma",
            interpolation="nearest",
            extent=(
                -0.5,
                n_task - 0.5,
                gens[0] - 0.5 if n_gen else -0.5,
                gens[-1] + 0.5 if n_gen else 0.5,
            ),
        )
        if n_task <= 20:
            ax.set_xticks(range(n_task))
        if n_gen <= 20:
            ax.set_yticks(gens)
            if n_task <= 8:
                for g in range(n_gen):
                    for t in range(n_task):
                        if np.isfinite(mean[g, t]):
                            light = im.norm(mean[g, t]) < 0.5
                            ax.text(
                                t,
                                gens[g],
                                f"{mean[g, t]:.2f}",
                                ha="center",
                                va="center",
                                fontsize=6,
                                color="white" if light else "black",
                            )
        ax.set_xlabel("task (new tasks every generation)", fontsize=8)
        ax.set_ylabel("generation", fontsize=8)
        ax.set_title(f"{name}, mean over individuals", fontsize=9)
        bar = fig.colorbar(im, ax=ax)
        bar.ax.tick_params(labelsize=7)
    fig.suptitle(_title(ds, "per-task scores"), fontsize=10)
    return _save(fig, path)


# ---------------------------------------------------------------------------- runtime
def plot_runtime(results: Any, path: str | Path) -> Path:
    """Runtime per evaluation: histogram (done / failed) and the spread per generation."""
    from l2lflow.store import DONE, FAILED

    ds = _dataset(results)
    runtime = np.asarray(ds["runtime"].values, dtype=np.float64)
    status = np.asarray(ds["status"].values)[: runtime.shape[0]]
    gens = np.asarray(ds["generation"].values)[: runtime.shape[0]]
    fig = _figure(10, 3.8)
    ax_hist, ax_gen = fig.subplots(1, 2, width_ratios=[1, 1.4])
    done = runtime[(status == DONE) & np.isfinite(runtime)]
    failed = runtime[(status == FAILED) & np.isfinite(runtime)]
    every = np.concatenate([done, failed])
    log = every.size and every.min() > 0 and every.max() / every.min() > 20
    if every.size:
        lo, hi = float(every.min()), float(every.max())
        if log:
            bins = np.geomspace(lo, hi * 1.0001, 40)
            ax_hist.set_xscale("log")
        else:
            bins = np.linspace(lo, hi + (1e-9 if hi == lo else 0), 40)
        ax_hist.hist(
            [done, failed],
            bins=bins,
            stacked=True,
            color=["tab:blue", "tab:red"],
            label=[f"done ({done.size})", f"failed ({failed.size})"],
        )
        ax_hist.legend(fontsize=7)
    ax_hist.set_xlabel("runtime per evaluation (s)")
    ax_hist.set_ylabel("evaluations")
    ax_hist.set_title("all evaluations", fontsize=9)
    finished = np.where(status != 0, runtime, np.nan)
    has = np.isfinite(finished).any(axis=1)
    if has.any():
        if gens.size <= 40:
            data = [row[np.isfinite(row)] for row in finished]
            keep = [k for k, d in enumerate(data) if d.size]
            ax_gen.boxplot(
                [data[k] for k in keep],
                positions=gens[keep],
                widths=0.6,
                showfliers=True,
                flierprops={"markersize": 2},
            )
            if gens.size > 20:
                ax_gen.set_xticks(gens[::5], [str(g) for g in gens[::5]])
        else:
            safe = np.where(has[:, None], finished, 0.0)
            q = {
                p: np.where(has, np.nanquantile(safe, p / 100, axis=1), np.nan)
                for p in (10, 50, 90)
            }
            ax_gen.fill_between(gens, q[10], q[90], alpha=0.3, label="10–90 %")
            ax_gen.plot(gens, q[50], label="median")
            ax_gen.legend(fontsize=7)
        if log:
            ax_gen.set_yscale("log")
    ax_gen.set_xlabel("generation")
    ax_gen.set_ylabel("runtime (s)")
    ax_gen.set_title("per generation", fontsize=9)
    ax_gen.grid(alpha=0.3)
    fig.suptitle(_title(ds, "runtime per evaluation"), fontsize=10)
    return _save(fig, path)


# ---------------------------------------------------------------------------- learning curves
def plot_learning_curves(results: Any, path: str | Path, top_k: int = 3) -> Path | None:
    """The inner loop's loss per iteration, mean over tasks, of the ``top_k`` best individuals of
    generation 0 and of the last generation: did the outer loop make learning *faster*, not
    only better at the end? Left raw, right relative to the first iteration (the tasks differ
    between generations, so raw losses of two generations differ in scale too). None (and
    nothing written) when the store has no ``learning_curve``."""
    ds = _dataset(results)
    if "learning_curve" not in ds.data_vars:
        return None
    acc = ds.l2l
    fitness, ok = acc._ok()
    curves = np.asarray(
        ds["learning_curve"].transpose("generation", "individual", "task", "iteration").values,
        dtype=np.float64,
    )[: ok.shape[0]].mean(axis=2)
    done = [g for g in range(ok.shape[0]) if ok[g].any()]
    if not done:
        return None
    fig = _figure(10.0, 3.6)
    axes = fig.subplots(1, 2)
    iteration = np.arange(1, curves.shape[2] + 1)
    gens = np.asarray(ds["generation"].values)
    shown = [(done[0], "0.55", "--")] + ([(done[-1], "C0", "-")] if done[-1] != done[0] else [])
    for g, colour, style in shown:
        key = np.where(ok[g], acc._key(fitness[g]), np.inf)
        best = np.argsort(key, kind="stable")[: min(top_k, int(ok[g].sum()))]
        for rank, i in enumerate(best):
            label = f"generation {gens[g]}: best {len(best)}" if rank == 0 else None
            first = curves[g, i, 0] if curves[g, i, 0] != 0 else np.nan
            for ax, values in ((axes[0], curves[g, i]), (axes[1], curves[g, i] / first)):
                ax.plot(iteration, values, color=colour, ls=style, lw=1.4 - 0.3 * rank, label=label)
    axes[0].set_ylabel("training loss (mean over tasks)", fontsize=8)
    axes[1].set_ylabel("loss / loss at iteration 1", fontsize=8)
    for ax in axes:
        ax.set_xlabel("inner-loop iteration", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=7)
    fig.suptitle(_title(ds, "inner-loop learning curves"), fontsize=10)
    return _save(fig, path)


# ---------------------------------------------------------------------------- all of them
_PLOTTERS = {
    "fitness": plot_fitness,
    "parameters": plot_parameters,
    "tasks": plot_tasks,
    "runtime": plot_runtime,
    "learning_curves": plot_learning_curves,
}


def write_figures(
    results: Any, out_dir: str | Path, names: Iterable[str] | None = None
) -> dict[str, Path]:
    """Write the figures (``names``, default all of :data:`FIGURES`) as ``<out_dir>/<name>.png``.

    Returns name -> path of the figures written (``tasks`` only where the store has tasks,
    ``learning_curves`` only where it has learning curves).
    """
    names = list(FIGURES if names is None else names)
    unknown = [n for n in names if n not in _PLOTTERS]
    if unknown:
        raise ValueError(f"unknown figure(s) {', '.join(unknown)} (known: {', '.join(FIGURES)})")
    ds = _dataset(results)
    keep = [v for v in ds.data_vars if v not in ("log", "error", "worker")]
    ds = ds[keep].load()  # one read of the store for every figure
    out = {}
    for name in names:
        path = _PLOTTERS[name](ds, Path(out_dir) / f"{name}.png")
        if path is not None:
            out[name] = path
    return out
