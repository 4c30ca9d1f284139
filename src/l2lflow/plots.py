"""Figures of a results store (matplotlib, drawn off-screen: no display, no pyplot state).

``l2lflow plot results/default --out figures/`` writes them as PNG files; in Python::

    from l2lflow.plots import write_figures
    write_figures("results/default", "figures")        # {"fitness": Path(...), ...}

* ``fitness.png``: best, mean and median fitness per generation with the 10-90 % and 25-75 %
  quantile bands of the successful evaluations, the best so far, the meta-test scores (side by
  side, each labelled, so equal scores never hide each other) and the chance level where the
  optimizee has one (e.g. 1 / n_classes of a classification task).
* ``parameters.png``: one panel per parameter: the population of every generation (coloured by
  fitness), its mean and the generation's best individual; the axis names the parameter's
  ``unit`` from the config's space.
* ``metrics.png``: every scalar metric the optimizee returns (``metric_<name>``) per generation:
  median, 10-90 % band and the value of the generation's best individual; only if there is one.
* ``pareto.png``: multi-objective runs: the objectives of the last generation coloured by Pareto
  rank with earlier fronts, and the front's hypervolume and size per generation.
* ``tasks.png``: per-task scores (generation × task, mean over the successful individuals) of
  learning-to-learn optimizees, for every variable on a ``task`` dimension; only if there is one.
* ``runtime.png``: how long evaluations took: a histogram and the spread per generation.
* ``learning_curves.png``: the inner loop's loss per iteration (``learning_curve`` on
  ``(generation, individual, task, iteration)``, e.g. ``nest.eprop``) of the best individuals of
  the last generation against generation 0's; only if the store has one.

A value axis where a few outliers (a failure penalty such as -1e6 returned by the optimizee)
would flatten everything else into a line (range over 50 × the interquartile range) switches to a symmetric log scale (linear around the
bulk of the values, logarithmic beyond).

Large populations are drawn subsampled (at most ``MAX_POINTS`` scattered points per generation
and panel); the summary lines always use every evaluation.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

FIGURES = ("fitness", "parameters", "tasks", "runtime", "metrics", "pareto", "learning_curves")
MAX_POINTS = 300
DPI = 110


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)  # Agg, whatever the user's default backend is
    return fig


def _save(fig, path: str | Path | None) -> Any:
    """Write ``fig`` as PNG to ``path`` and return the path; with ``path=None`` return the
    Figure itself (to look at, or to check in a test)."""
    if path is None:
        return fig
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


def _config(ds) -> dict[str, Any]:
    return dict(ds.attrs.get("l2lflow", {}).get("config", {}))


def _units(ds) -> dict[str, str]:
    """Parameter name -> its ``unit`` from the config's space (only those that have one)."""
    return {
        k: str(v["unit"]) for k, v in _space(ds).items() if isinstance(v, dict) and v.get("unit")
    }


def chance_level(source: Any) -> float | None:
    """The fitness a guess scores, when the optimizee declares one for its options (and the
    fitness is the optimizee's own ``fitness``), else None. ``source``: a results Dataset or
    an experiment config."""
    config = source if isinstance(source, dict) else _config(source)
    optimizee = config.get("optimizee", {})
    if optimizee.get("fitness", "fitness") != "fitness" or optimizee.get("objectives"):
        return None
    try:
        from l2lflow.optimizees.base import resolve_optimizee

        chance = resolve_optimizee(optimizee["name"]).chance
        return None if chance is None else float(chance(dict(optimizee.get("options") or {})))
    except Exception:  # noqa: BLE001 - a user module not importable here: no chance line
        return None


def _fitness_label(ds, direction: str) -> str:
    """What the fitness is: the metric's name, or the weighted sum of the objectives."""
    optimizee = _config(ds).get("optimizee", {})
    better = "lower" if direction == "minimize" else "higher"
    objectives = optimizee.get("objectives") or []
    if objectives:
        terms = []
        for o in objectives:
            w = float(o.get("weight", 1.0))
            sign = "-" if o.get("direction", direction) != direction else "+"
            terms.append(f"{sign} {'' if w == 1 else f'{w:g}·'}{o['name']}")
        total = " ".join(terms).lstrip("+ ").replace("- ", "-", 1) if terms else ""
        return f"fitness = {total} ({better} is better)"
    name = optimizee.get("fitness")
    return f"fitness{f' ({name})' if name and name != 'fitness' else ''} ({better} is better)"


def _flattened_by_outliers(values: np.ndarray) -> float | None:
    """The linear threshold for a symlog axis when a few extreme values would flatten the rest
    (the full range over 50 × the interquartile range, or over 50 × the values' size when the
    bulk is constant), else None."""
    v = values[np.isfinite(values)]
    if v.size < 5:
        return None
    q25, q75 = np.quantile(v, [0.25, 0.75])
    core, full = q75 - q25, v.max() - v.min()
    bulk = max(abs(q25), abs(q75))
    scale = core if core > 0 else bulk  # a constant bulk: compare with its size
    if full == 0 or (scale > 0 and full <= 50 * scale):
        return None
    return float(max(bulk, core) or 1.0)


def _value_scale(ax, values: np.ndarray, *, positive_log: bool = False) -> None:
    """Log for positive values spanning decades (``positive_log``), symlog when outliers would
    flatten the curve, else linear."""
    v = values[np.isfinite(values)]
    if positive_log and v.size and v.min() > 0 and v.max() / v.min() > 100:
        ax.set_yscale("log")
        return
    linthresh = _flattened_by_outliers(v)
    if linthresh is not None:
        ax.set_yscale("symlog", linthresh=linthresh)
        ax.annotate(
            f"symmetric log axis beyond ±{linthresh:.3g} (outliers)",
            xy=(0.01, 0.01),
            xycoords="axes fraction",
            fontsize=6,
            color="0.4",
        )


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
        _meta_test_markers(ax, (gens[-1] if gens.size else 0) + 1, mt)
    chance = chance_level(ds)
    if chance is not None:
        ax.axhline(chance, color="0.3", lw=1, ls="-.", label=f"chance ({chance:.3g})")
    _value_scale(ax, fitness[ok], positive_log=acc.direction == "minimize")
    n_failed = int(traj["n_failed"].sum())
    ax.set_xlabel("generation")
    ax.set_ylabel(_fitness_label(ds, acc.direction))
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


def _meta_test_markers(ax, x0: float, scores: np.ndarray) -> None:
    """The meta-test scores side by side around ``x0``, each labelled with its rank, so that
    equal scores never hide each other."""
    n = scores.size
    offsets = np.linspace(-0.3, 0.3, n) if n > 1 else np.zeros(n)
    ax.scatter(
        x0 + offsets,
        scores,
        marker="*",
        s=90,
        color="tab:green",
        edgecolors="black",
        linewidths=0.4,
        zorder=5,
        label="meta-test (held-out tasks)",
    )
    for k, (dx, y) in enumerate(zip(offsets, scores, strict=True)):
        if np.isfinite(y):
            ax.annotate(
                f"#{k}",
                (x0 + dx, y),
                textcoords="offset points",
                xytext=(0, 6),
                ha="center",
                fontsize=6,
            )
    ax.axvline(x0 - 0.5, color="0.6", lw=0.8, ls="-")


# ---------------------------------------------------------------------------- parameters
def plot_parameters(results: Any, path: str | Path) -> Path:
    """One panel per parameter: population per generation (colour: fitness rank), mean, best."""
    ds = _dataset(results)
    acc = ds.l2l
    names = acc.parameters
    space = _space(ds)
    units = _units(ds)
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
        if name in units:
            ax.set_ylabel(units[name], fontsize=8)
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
    n_tasks = max(int(ds.sizes.get("task", 1)), 1)
    width = min(max(2.0 + len(names) * (1.5 + 0.7 * min(n_tasks, 12)), 6.0), 16)
    fig = _figure(width, 1.8 + min(0.4 * n_gen, 8.0))
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
        if n_gen <= 30:
            ax.set_yticks(gens)
            if n_task <= 12:
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
                                fontsize=9 if n_gen <= 15 else 7,
                                color="white" if light else "black",
                            )
        ax.set_xlabel("task (new tasks every generation)", fontsize=9)
        ax.set_ylabel("generation", fontsize=9)
        ax.tick_params(labelsize=8)
        ax.set_title(f"{name}, mean over individuals", fontsize=10)
        bar = fig.colorbar(im, ax=ax)
        bar.ax.tick_params(labelsize=8)
        chance = chance_level(ds)
        if chance is not None and im.norm.vmin <= chance <= im.norm.vmax:
            bar.ax.axhline(chance, color="cyan", lw=1.5)
            bar.ax.text(
                1.05,
                chance,
                " chance",
                transform=bar.ax.get_yaxis_transform(),
                fontsize=7,
                va="center",
            )
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


# ---------------------------------------------------------------------------- metrics
def plot_metrics(results: Any, path: str | Path) -> Path | None:
    """Every scalar metric the optimizee returns, per generation: median, 10-90 % band and the
    value of the generation's best individual (by fitness). None (nothing written) when the
    store has no ``metric_<name>`` variable."""
    ds = _dataset(results)
    acc = ds.l2l
    names = acc.metrics
    if not names:
        return None
    fitness, ok = acc._ok()
    n_gen = fitness.shape[0]
    gens = np.asarray(ds["generation"].values)[:n_gen]
    key = np.where(ok, acc._key(fitness), np.inf)
    best_i = np.argmin(key, axis=1) if n_gen else np.zeros(0, dtype=int)
    ncols = min(3, len(names))
    nrows = math.ceil(len(names) / ncols)
    fig = _figure(max(3.6 * ncols + 0.4, 6.0), 2.7 * nrows + 0.8)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    mk = _marker(n_gen)
    for ax, name in zip(axes.flat, names, strict=False):
        values = np.asarray(ds[name].values, dtype=np.float64)[:n_gen]
        values = np.where(ok, values, np.nan)
        has = np.isfinite(values).any(axis=1)
        safe = np.where(has[:, None], values, 0.0)
        q = (
            {
                p: np.where(
                    has,
                    np.nanquantile(np.where(np.isfinite(safe), safe, np.nan), p, axis=1),
                    np.nan,
                )
                for p in (0.1, 0.5, 0.9)
            }
            if n_gen
            else {0.1: [], 0.5: [], 0.9: []}
        )
        ax.fill_between(gens, q[0.1], q[0.9], color="tab:blue", alpha=0.25, label="10–90 %")
        ax.plot(gens, q[0.5], color="tab:blue", lw=1.4, label="median", **mk)
        best = values[np.arange(n_gen), best_i] if n_gen else np.zeros(0)
        best = np.where(has, best, np.nan)
        ax.plot(gens, best, color="tab:orange", lw=1.2, label="best individual", **mk)
        _value_scale(ax, values)
        ax.set_title(name.removeprefix("metric_"), fontsize=9)
        ax.tick_params(which="both", labelsize=7)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(names) :]:
        ax.set_visible(False)
    axes.flat[0].legend(fontsize=6, loc="best")
    for ax in axes[-1]:
        ax.set_xlabel("generation", fontsize=8)
    fig.suptitle(_title(ds, "metrics the optimizee returned (successful evaluations)"), fontsize=10)
    return _save(fig, path)


# ---------------------------------------------------------------------------- Pareto front
def plot_pareto(results: Any, path: str | Path) -> Path | None:
    """Multi-objective runs: the last generation's objectives coloured by Pareto rank, with the
    fronts of earlier generations; the hypervolume and size of the front per generation. None
    (nothing written) for a single-objective run."""
    from l2lflow.status import front_statistics

    ds = _dataset(results)
    config = _config(ds)
    objectives = (config.get("optimizee") or {}).get("objectives") or []
    if len(objectives) < 2 or "objectives" not in ds or "pareto_rank" not in ds:
        return None
    _, ok = ds.l2l._ok()
    n_gen = ok.shape[0]
    values = np.asarray(
        ds["objectives"].transpose("generation", "individual", "objective").values,
        dtype=np.float64,
    )[:n_gen]
    ranks = np.asarray(ds["pareto_rank"].values)[:n_gen]
    done = [g for g in range(n_gen) if (ranks[g] >= 0).any()]
    if not done:
        return None
    stats = front_statistics(values, ranks, config)
    gens = np.asarray(ds["generation"].values)[:n_gen]
    names = [o["name"] for o in objectives]
    fig = _figure(11.0, 4.2)
    ax_obj, ax_hv = fig.subplots(1, 2, width_ratios=[1.2, 1])
    from matplotlib import colormaps

    last = done[-1]
    earlier = done[:-1][:: max(1, len(done) // 6)]
    cmap = colormaps["Blues"]
    for k, g in enumerate(earlier):
        front = values[g][ranks[g] == 0]
        front = front[np.argsort(front[:, 0])]
        ax_obj.plot(
            front[:, 0],
            front[:, 1],
            color=cmap(0.3 + 0.5 * k / max(len(earlier), 1)),
            lw=1,
            marker=".",
            ms=3,
            label=f"front of generation {gens[g]}",
        )
    r = ranks[last]
    shown = r >= 0
    sc = ax_obj.scatter(
        values[last][shown, 0],
        values[last][shown, 1],
        c=r[shown],
        cmap="viridis_r",
        s=18,
        edgecolors="black",
        linewidths=0.3,
        zorder=4,
    )
    front = values[last][r == 0]
    front = front[np.argsort(front[:, 0])]
    ax_obj.plot(front[:, 0], front[:, 1], color="tab:red", lw=1.8, zorder=5,
                label=f"front of generation {gens[last]} ({len(front)})")  # fmt: skip
    bar = fig.colorbar(sc, ax=ax_obj, pad=0.01)
    bar.set_label(f"Pareto rank in generation {gens[last]} (0 = front)", fontsize=7)
    bar.ax.tick_params(labelsize=7)
    ax_obj.set_xlabel(
        f"{names[0]} ({objectives[0].get('direction', config.get('direction', 'minimize'))})"
    )
    ax_obj.set_ylabel(
        f"{names[1]} ({objectives[1].get('direction', config.get('direction', 'minimize'))})"
    )
    ax_obj.legend(fontsize=6, loc="best")
    ax_obj.grid(alpha=0.3)
    ax_obj.set_title("objectives", fontsize=9)
    ax_hv.plot(gens, stats["hypervolume"], color="tab:purple", lw=1.6, label="hypervolume",
               **_marker(n_gen))  # fmt: skip
    ax_hv.set_xlabel("generation")
    reference = ", ".join(f"{v:.3g}" for v in stats["reference"])
    ax_hv.set_ylabel(f"hypervolume (reference point {reference})", fontsize=8)
    ax_size = ax_hv.twinx()
    ax_size.step(gens, stats["sizes"], where="mid", color="0.4", lw=1, label="front size")
    ax_size.set_ylabel("individuals on the front", fontsize=8)
    ax_hv.grid(alpha=0.3)
    lines = ax_hv.get_legend_handles_labels()
    more = ax_size.get_legend_handles_labels()
    ax_hv.legend(lines[0] + more[0], lines[1] + more[1], fontsize=7, loc="lower right")
    ax_hv.set_title("the front per generation", fontsize=9)
    fig.suptitle(_title(ds, f"Pareto front of {' and '.join(names)}"), fontsize=10)
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


# ---------------------------------------------------------------------------- report landing
def write_landing(results: Any, path: str | Path, fitness_png: str | Path) -> Path:
    """The landing text of ``snakemake --report`` (reStructuredText): the run's findings (best
    fitness and parameters or the Pareto front, meta-test, failures) and the fitness figure,
    embedded, so that the report opens on the results; Snakemake draws the workflow graph
    beside it."""
    import base64

    from l2lflow.display import duration, result_lines
    from l2lflow.status import run_status

    st = run_status(results)
    ds = _dataset(results)
    config = _config(ds)
    state = "finished" if st.finished else f"{st.n_aggregated} of {st.generations} generations"
    title = f"l2lflow experiment {st.name}"
    head = (
        f"{state}: {st.generations} generations × {st.population_size} individuals, "
        f"{config.get('optimizer', {}).get('name', '?')} on "
        f"{config.get('optimizee', {}).get('name', '?')} ({st.direction} {st.fitness_name}), "
        f"run time {duration(st.elapsed_s)}"
    )
    found = result_lines(st, config)
    image = base64.b64encode(Path(fitness_png).read_bytes()).decode()
    text = "\n".join(
        [
            "{% raw %}",
            title,
            "=" * len(title),
            "",
            head,
            "",
            *(f"| {line}" for line in found),
            "",
            # docutils refuses lines over 10,000 characters; it joins a split URI again
            ".. image:: data:image/png;base64,",
            *(f"   {image[k : k + 76]}" for k in range(0, len(image), 76)),
            "   :width: 100%",
            "   :alt: fitness per generation",
            "",
            "Every figure with its caption: **Results** (left). The workflow's steps, one "
            "sample → evaluate → aggregate per generation, are the graph beside this text.",
            "{% endraw %}",
            "",
        ]
    )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


# ---------------------------------------------------------------------------- all of them
_PLOTTERS = {
    "fitness": plot_fitness,
    "parameters": plot_parameters,
    "tasks": plot_tasks,
    "runtime": plot_runtime,
    "metrics": plot_metrics,
    "pareto": plot_pareto,
    "learning_curves": plot_learning_curves,
}


def write_figures(
    results: Any, out_dir: str | Path, names: Iterable[str] | None = None
) -> dict[str, Path]:
    """Write the figures (``names``, default all of :data:`FIGURES`) as ``<out_dir>/<name>.png``.

    Returns name -> path of the figures written (``tasks`` only where the store has tasks,
    ``metrics`` only where it has metrics, ``pareto`` only for multi-objective runs,
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
