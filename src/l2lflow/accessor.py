"""The ``ds.l2l`` accessor: questions about a results store answered as pandas tables.

``l2lflow.open_results`` registers it; with plain ``xr.open_zarr`` import this module first::

    import l2lflow.accessor  # noqa: F401  (registers ds.l2l)
    ds = xr.open_zarr("results/default/results.zarr")
    ds.l2l.best(3)

Every method reads only what it needs (a 10,000 × 100 store is read in well under a second),
and every fitness summary uses the successful evaluations only (``status == 1`` and a finite
fitness) and the experiment's ``direction`` ("best" is the minimum when minimising).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from l2lflow.store import DONE, FAILED, PROVENANCE_VARIABLES

DEFAULT_QUANTILES = (0.1, 0.25, 0.75, 0.9)
_DIMS = ("generation", "individual")


def _values(da: xr.DataArray) -> np.ndarray:
    """A variable's values as numpy; variable-width strings as plain ``str`` objects."""
    values = np.asarray(da.values)
    if values.dtype.kind in "TUSO" and values.dtype != object:
        values = values.astype(object)
    return values


@xr.register_dataset_accessor("l2l")
class L2LAccessor:
    """Summaries of an l2lflow results Dataset (``ds.l2l.best()``, ``ds.l2l.failures()``, ...)."""

    def __init__(self, ds: xr.Dataset) -> None:
        self._ds = ds

    # ------------------------------------------------------------------ what the store is
    @property
    def meta(self) -> dict[str, Any]:
        """The store's ``l2lflow`` attributes (config, direction, parameters, versions)."""
        meta = self._ds.attrs.get("l2lflow")
        if not isinstance(meta, dict):
            raise ValueError("not an l2lflow results Dataset (no 'l2lflow' attribute)")
        return meta

    @property
    def direction(self) -> str:
        """``"minimize"`` or ``"maximize"``."""
        return str(self.meta.get("direction", "minimize"))

    @property
    def parameters(self) -> list[str]:
        """The names of the parameters, in the order of the config's ``space``; an expression
        parameter by its formula text (``<name>_formula``), not its integer genome."""
        names = self.meta.get("parameters")
        if names is None:
            names = [
                k for k, v in self._ds.data_vars.items() if v.attrs.get("l2l_role") == "parameter"
            ]
        names = [f"{n}_formula" if f"{n}_formula" in self._ds else n for n in names]
        return [n for n in names if n in self._ds]

    @property
    def metrics(self) -> list[str]:
        """Extra scalar metrics (``metric_<name>`` variables), by variable name."""
        return sorted(
            k
            for k, v in self._ds.data_vars.items()
            if k.startswith("metric_") and tuple(v.dims) == _DIMS
        )

    @property
    def task_variables(self) -> list[str]:
        """Per-task arrays of the optimizee: variables on ``(generation, individual, task)``."""
        return sorted(
            k
            for k, v in self._ds.data_vars.items()
            if tuple(v.dims[:2]) == _DIMS and "task" in v.dims[2:] and v.ndim == 3
        )

    # ------------------------------------------------------------------ helpers
    def _ok(self) -> tuple[np.ndarray, np.ndarray]:
        """(fitness, mask of the successful evaluations), both (generation, individual)."""
        fitness = np.asarray(self._ds["fitness"].values, dtype=np.float64)
        status = np.asarray(self._ds["status"].values)
        n = min(fitness.shape[0], status.shape[0])
        fitness, status = fitness[:n], status[:n]
        return fitness, (status == DONE) & np.isfinite(fitness)

    def _key(self, fitness: np.ndarray) -> np.ndarray:
        """Sort key: smaller is better, whatever the direction."""
        return fitness if self.direction == "minimize" else -fitness

    def _generations(self, n: int | None = None) -> np.ndarray:
        gens = np.asarray(self._ds["generation"].values)
        return gens if n is None else gens[:n]

    def _rows(self, gen_idx: np.ndarray, ind_idx: np.ndarray, columns: Sequence[str]) -> dict:
        out: dict[str, Any] = {}
        for name in columns:
            out[name] = _values(self._ds[name])[gen_idx, ind_idx]
        return out

    # ------------------------------------------------------------------ best individuals
    def best(self, n: int = 1, *, distinct: bool = True) -> pd.DataFrame:
        """The ``n`` best evaluations of the whole run, best first (ties: the earliest).

        Columns: generation, individual, fitness, then one per parameter; the index is the rank.
        With ``distinct`` (the default) a parameter set counts once, at its best evaluation
        (elitist optimizers carry the same individual over several generations).
        """
        n = max(int(n), 0)
        fitness, ok = self._ok()
        key = np.where(ok, self._key(fitness), np.inf)
        order = np.argsort(key, axis=None, kind="stable")
        order = order[: int(ok.sum())]  # the successful ones, best first
        g, i = np.unravel_index(order, fitness.shape)
        params = self._rows(g, i, self.parameters)
        if distinct and n and self.parameters:
            seen: set[tuple] = set()
            keep = []
            for k, row in enumerate(zip(*params.values(), strict=True)):
                if row not in seen:
                    seen.add(row)
                    keep.append(k)
                    if len(keep) == n:
                        break
            keep_idx = np.asarray(keep, dtype=np.int64)
        else:
            keep_idx = np.arange(min(n, order.size))
        g, i = g[keep_idx], i[keep_idx]
        frame = pd.DataFrame(
            {
                "generation": self._generations()[g].astype(np.int64),
                "individual": np.asarray(i, dtype=np.int64),
                "fitness": fitness[g, i],
                **{k: v[keep_idx] for k, v in params.items()},
            }
        )
        frame.index.name = "rank"
        return frame

    def best_per_generation(self) -> pd.DataFrame:
        """The best evaluation of each generation (generations without one are left out).

        Indexed by generation; columns: individual, fitness, then one per parameter.
        """
        fitness, ok = self._ok()
        key = np.where(ok, self._key(fitness), np.inf)
        has = ok.any(axis=1)
        g = np.flatnonzero(has)
        i = np.argmin(key[g], axis=1) if g.size else g
        frame = pd.DataFrame(
            {
                "individual": np.asarray(i, dtype=np.int64),
                "fitness": fitness[g, i],
                **self._rows(g, i, self.parameters),
            },
            index=pd.Index(self._generations()[g].astype(np.int64), name="generation"),
        )
        return frame

    # ------------------------------------------------------------------ trajectories
    def fitness_trajectory(self, quantiles: Sequence[float] = DEFAULT_QUANTILES) -> pd.DataFrame:
        """Per generation: n_done, n_failed, best, mean, median, std, the ``quantiles``
        (columns ``q10``, ``q25``, ... of the successful evaluations), and ``best_so_far``.

        ``best`` and ``best_so_far`` follow ``direction``; generations without a successful
        evaluation have NaN there.
        """
        fitness, ok = self._ok()
        status = np.asarray(self._ds["status"].values)[: fitness.shape[0]]
        masked = np.where(ok, fitness, np.nan)
        any_ok = ok.any(axis=1)
        safe = np.where(any_ok[:, None], masked, 0.0)  # all-NaN rows: no warnings, NaN below

        def per_gen(values: np.ndarray) -> np.ndarray:
            return np.where(any_ok, values, np.nan)

        best = np.nanmin(safe, axis=1) if self.direction == "minimize" else np.nanmax(safe, axis=1)
        data: dict[str, Any] = {
            "n_done": ok.sum(axis=1),
            "n_failed": (status == FAILED).sum(axis=1),
            "best": per_gen(best),
            "mean": per_gen(np.nanmean(safe, axis=1)),
            "median": per_gen(np.nanmedian(safe, axis=1)),
            "std": per_gen(np.nanstd(safe, axis=1)),
        }
        for q in quantiles:
            data[_quantile_name(q)] = per_gen(np.nanquantile(safe, q, axis=1))
        best_series = pd.Series(data["best"])
        if self.direction == "minimize":
            data["best_so_far"] = best_series.cummin().to_numpy()
        else:
            data["best_so_far"] = best_series.cummax().to_numpy()
        return pd.DataFrame(
            data, index=pd.Index(self._generations(fitness.shape[0]), name="generation")
        )

    def parameter_spread(self, *, done_only: bool = False) -> pd.DataFrame:
        """Per generation mean, std, min and max of every numeric parameter.

        Columns are (parameter, statistic): ``spread["g"]["mean"]``. All sampled individuals
        count (the population the optimizer proposed), or only the successful ones with
        ``done_only``. Choice parameters with string values get ``n_unique`` and ``mode``.
        """
        status = np.asarray(self._ds["status"].values)
        mask = status == DONE if done_only else np.ones(status.shape, dtype=bool)
        frames = {}
        for name in self.parameters:
            values = _values(self._ds[name])[: status.shape[0]]
            if values.dtype.kind in "biuf":
                x = np.where(mask, values.astype(np.float64), np.nan)
                has = np.isfinite(x).any(axis=1)
                safe = np.where(has[:, None], x, 0.0)
                stats = {
                    "mean": np.nanmean(safe, axis=1),
                    "std": np.nanstd(safe, axis=1),
                    "min": np.nanmin(safe, axis=1),
                    "max": np.nanmax(safe, axis=1),
                }
                frames[name] = pd.DataFrame({k: np.where(has, v, np.nan) for k, v in stats.items()})
            else:
                rows = []
                for g in range(values.shape[0]):
                    col = pd.Series(values[g][mask[g]])
                    rows.append(
                        {
                            "n_unique": int(col.nunique()),
                            "mode": col.mode().iloc[0] if len(col) else None,
                        }
                    )
                frames[name] = pd.DataFrame(rows)
        index = pd.Index(self._generations(status.shape[0]), name="generation")
        if not frames:
            return pd.DataFrame(index=index)
        out = pd.concat(frames, axis=1)
        out.index = index
        out.columns.names = ["parameter", "statistic"]
        return out

    # ------------------------------------------------------------------ failures and tables
    def failures(self) -> pd.DataFrame:
        """Every failed evaluation (``status == 2``), with the reason from ``error``.

        Columns: generation, individual, attempts, worker, reason (the error's last line),
        error (the full traceback), then one per parameter.
        """
        status = np.asarray(self._ds["status"].values)
        g, i = np.nonzero(status == FAILED)
        errors = _values(self._ds["error"])[g, i] if "error" in self._ds else np.full(g.size, "")
        data: dict[str, Any] = {
            "generation": self._generations()[g].astype(np.int64),
            "individual": i.astype(np.int64),
        }
        for name in ("attempts", "worker"):
            if name in self._ds:
                data[name] = _values(self._ds[name])[g, i]
        data["reason"] = [_reason(e) for e in errors]
        data["error"] = list(errors)
        data.update(self._rows(g, i, self.parameters))
        return pd.DataFrame(data)

    def to_dataframe(
        self, *, provenance: bool = True, include_pending: bool = True
    ) -> pd.DataFrame:
        """One row per evaluation: generation, individual, parameters, fitness, status, seed,
        metrics (``metric_<name>``), any other variable on (generation, individual) and, with
        ``provenance``, runtime, attempts, worker, finished_at and error (logs and arrays such
        as per-task scores are left out: see ``ds.task_accuracy``).

        ``status`` is 0 pending, 1 done, 2 failed; ``include_pending=False`` drops the pending.
        """
        ds = self._ds
        n_gen = int(ds["status"].shape[0])
        pop = int(ds.sizes["individual"])
        g, i = np.divmod(np.arange(n_gen * pop), pop)
        data: dict[str, Any] = {
            "generation": np.repeat(self._generations(n_gen), pop).astype(np.int64),
            "individual": np.asarray(ds["individual"].values)[i].astype(np.int64),
        }
        columns = [*self.parameters, "fitness", "status", "seed", *self.metrics]
        # anything else on (generation, individual), e.g. pareto_rank of multi-objective runs
        columns += sorted(
            k
            for k, v in ds.data_vars.items()
            if tuple(v.dims) == _DIMS and k not in columns and k not in PROVENANCE_VARIABLES
        )
        if provenance:
            columns += [v for v in PROVENANCE_VARIABLES if v != "log"]
        for name in columns:
            if name in ds and tuple(ds[name].dims) == _DIMS:
                data[name] = _values(ds[name])[:n_gen].reshape(-1)
        frame = pd.DataFrame(data)
        if not include_pending:
            frame = frame[frame["status"] != 0].reset_index(drop=True)
        return frame

    def meta_test(self) -> pd.DataFrame:
        """Meta-test results (the best individuals re-tested on held-out tasks), by rank.

        Columns: generation, individual, fitness (during optimisation), meta_test_fitness,
        meta_test_status, meta_test metrics; empty if the experiment has no meta-test.
        """
        ds = self._ds
        names = [
            k
            for k, v in ds.data_vars.items()
            if k.startswith("meta_test") and v.dims == ("meta_test",)
        ]
        if not names:
            return pd.DataFrame()
        data = {k: _values(ds[k]) for k in names}
        frame = pd.DataFrame(data)
        frame = frame.rename(
            columns={"meta_test_generation": "generation", "meta_test_individual": "individual"}
        )
        if {"generation", "individual"} <= set(frame.columns):
            fitness = np.asarray(ds["fitness"].values)
            gens = list(self._generations())
            frame.insert(
                2,
                "fitness",
                [
                    fitness[gens.index(g), i] if g in gens else np.nan
                    for g, i in zip(frame["generation"], frame["individual"], strict=True)
                ],
            )
        frame.index.name = "rank"
        return frame

    def optimizer_state(self) -> pd.DataFrame:
        """The optimizer's own search state after each generation, one row per generation.

        What each optimizer keeps: e.g. the search mean and covariance of the cross-entropy
        method, the mean and σ of separable NES, CMA-ES's mean, step size σ and per-parameter
        standard deviations. A vector becomes one column per parameter (``mean[tau_m]``), a
        square matrix its diagonal (``cov.diag[tau_m]``), a number one column; other entries
        (random-generator state, sample buffers) are left out. Values are in the optimizer's
        coordinates: the unit box, 0..1 per parameter before the space's (log) scale.

        Optimizers with a JSON checkpoint are read from the store's checkpoints (no
        unpickling, no evaluation); those that restore by replay (CMA-ES, Nevergrad) are
        replayed from the stored fitness, which is deterministic. Multi-objective and
        output-driven (EnKF) replays are not supported: their frame is empty.
        """
        from l2lflow.store import ResultStore

        source = self._ds.encoding.get("source")
        if not source:
            raise ValueError(
                "optimizer_state() reads the store's checkpoints: open the Dataset with "
                "l2lflow.open_results (or xr.open_zarr) on the store, not a copy in memory"
            )
        store = ResultStore(Path(source).parent)  # the experiment folder holding the store
        n = store.n_aggregated()
        names = self.parameters
        rows: list[dict[str, float]] = []
        replay = None
        for g in range(n):
            ckpt = store.checkpoint(g) or {}
            state = (ckpt.get("optimizer") or {}).get("state")
            if state is None:
                if replay is None:
                    replay = _Replay(store, self.meta.get("config", {}))
                state = replay.state_after(g)
            rows.append(_flatten_state(state, names) if state else {})
        frame = pd.DataFrame(rows, index=pd.RangeIndex(n, name="generation"))
        return frame


class _Replay:
    """Replays a single-objective optimizer without a checkpoint (ask, tell the stored fitness)
    to read its state after each generation."""

    def __init__(self, store: Any, config: dict[str, Any]) -> None:
        from l2lflow import seeds
        from l2lflow.optimizers.base import get_optimizer_class
        from l2lflow.space import ParameterSpace

        cls = get_optimizer_class(config["optimizer"]["name"])
        space = ParameterSpace.from_config(config["space"])
        self.supported = not (cls.multi_objective or getattr(cls, "uses_outputs", False))
        self.store = store
        self.opt = cls(
            dimension=space.dimension,
            population_size=int(config["population_size"]),
            seed=seeds.optimizer_seed(int(config["seed"])),
            direction=config["direction"],
            grid_points=space.grid_points,
            **config["optimizer"].get("options", {}),
        )
        self.told = 0

    def state_after(self, generation: int) -> dict[str, Any] | None:
        if not self.supported:
            return None
        while self.told <= generation:
            x = self.opt.ask()
            self.opt.tell(x, self.store.fitness(self.told), None)
            self.told += 1
        return self.opt.search_state()


def _flatten_state(state: dict[str, Any], names: list[str]) -> dict[str, float]:
    """Numbers, per-parameter vectors and square matrices' diagonals of a state, as columns."""
    out: dict[str, float] = {}
    d = len(names)
    for key, value in state.items():
        if isinstance(value, bool) or value is None:
            continue
        if isinstance(value, int | float):
            out[key] = float(value)
            continue
        try:
            array = np.asarray(value, dtype=np.float64)
        except (TypeError, ValueError):
            continue
        if array.shape == (d,):
            out.update({f"{key}[{n}]": float(v) for n, v in zip(names, array, strict=True)})
        elif array.shape == (d, d):
            diag = np.diag(array)
            out.update({f"{key}.diag[{n}]": float(v) for n, v in zip(names, diag, strict=True)})
        elif array.ndim == 0:
            out[key] = float(array)
    return out


def _quantile_name(q: float) -> str:
    pct = 100 * float(q)
    return f"q{pct:g}".replace(".", "_")


def _reason(error: Any) -> str:
    """The last non-empty line of a traceback: ``RuntimeError: injected failure ...``."""
    lines = [line.strip() for line in str(error or "").splitlines() if line.strip()]
    return lines[-1] if lines else ""
