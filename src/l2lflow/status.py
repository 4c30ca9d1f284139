"""``l2lflow status``: what a run has done so far, readable while the engine writes the store."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from l2lflow.store import DONE, FAILED, PENDING, ResultStore, store_path


def _results_dir(path: str | Path) -> Path:
    path = Path(path)
    return path.parent if path.name == store_path(".").name else path


def status_table(results: str | Path) -> list[dict]:
    """One row per sampled generation: counts, best and mean fitness, wall time."""
    store = ResultStore(_results_dir(results))
    direction = store.attrs.get("direction", "minimize")
    rows = []
    status = np.asarray(store.array("status")[...])
    fitness = np.asarray(store.array("fitness")[...])
    finished = np.asarray(store.array("finished_at")[...])
    aggregated = store.n_aggregated()
    for g in range(status.shape[0]):
        s, f = status[g], fitness[g]
        ok = f[(s == DONE) & np.isfinite(f)]
        best = (ok.min() if direction == "minimize" else ok.max()) if ok.size else np.nan
        t = finished[g][np.isfinite(finished[g])]
        rows.append(
            {
                "generation": g,
                "done": int(np.sum(s == DONE)),
                "failed": int(np.sum(s == FAILED)),
                "pending": int(np.sum(s == PENDING)),
                "best": float(best),
                "mean": float(ok.mean()) if ok.size else float("nan"),
                "last_finished": float(t.max()) if t.size else float("nan"),
                "aggregated": g < aggregated,
            }
        )
    return rows


def render_status(results: str | Path) -> str:
    """A plain-text table of :func:`status_table` plus the best individual so far."""
    store = ResultStore(_results_dir(results))
    config = store.config
    rows = status_table(results)
    lines = [
        f"experiment {store.attrs['name']}: {len(rows)}/{config['generations']} generations "
        f"sampled, {sum(r['aggregated'] for r in rows)} finished "
        f"({config['direction']} {config['optimizee'].get('fitness', 'fitness')})",
        f"{'gen':>5} {'done':>6} {'failed':>6} {'pending':>7} {'best':>12} {'mean':>12}",
    ]
    for r in rows:
        lines.append(
            f"{r['generation']:>5} {r['done']:>6} {r['failed']:>6} {r['pending']:>7} "
            f"{r['best']:>12.6g} {r['mean']:>12.6g}"
        )
    starts = [r["last_finished"] for r in rows if np.isfinite(r["last_finished"])]
    if len(rows) >= 2 and len(starts) >= 2:
        per_gen = (starts[-1] - starts[0]) / max(1, len(starts) - 1)
        left = config["generations"] - sum(r["aggregated"] for r in rows)
        lines.append(f"about {per_gen:.1f} s per generation; ETA {left * per_gen:.0f} s")
    fitness = np.asarray(store.array("fitness")[...])
    status = np.asarray(store.array("status")[...])
    good = np.where((status == DONE) & np.isfinite(fitness), fitness, np.nan)
    if np.isfinite(good).any():
        flat = np.nanargmin(good) if config["direction"] == "minimize" else np.nanargmax(good)
        g, i = np.unravel_index(flat, good.shape)
        params = {n: store.array(n)[g, i].item() for n in store.parameter_names}
        shown = ", ".join(
            f"{k}={v:.6g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items()
        )
        lines.append(f"best: generation {g}, individual {i}, fitness {good[g, i]:.6g}: {shown}")
    return "\n".join(lines)


def watch(results: str | Path, interval: float = 2.0) -> int:
    """Redraw the status every ``interval`` seconds until Ctrl-C."""
    try:
        while True:
            print("\033[2J\033[H" + render_status(results), flush=True)
            time.sleep(interval)
    except KeyboardInterrupt:
        return 0
