"""Inspecting results: ``l2lflow status``, the ``ds.l2l`` accessor, plots, export, and a second
reader (tensorstore) that must see the same store as xarray.

Two kinds of store: *synthetic* ones written through :class:`ResultStore` with known values and
timestamps (so that elapsed time, ETA, best individuals and failures have exact expected values,
with a failure, per-task arrays, a choice parameter and a meta-test), and one *real* run through
Snakemake, watched by ``l2lflow status`` while it runs.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers import snakemake_cmd, write_config

import l2lflow
from l2lflow.cli import main
from l2lflow.config import validate_config
from l2lflow.space import ParameterSpace
from l2lflow.status import format_status, run_status
from l2lflow.store import DONE, FAILED, ResultStore, StoreError

T0 = 1_700_000_000.0
POP = 4
ERROR = (
    "Traceback (most recent call last):\n"
    '  File "model.py", line 3, in f\n'
    "RuntimeError: injected failure in individual 2\n"
)


def fitness_of(g: int, k: int) -> float:
    return g + k / 10


def finish_time(g: int, k: int, pause_after: int | None) -> float:
    """Every generation takes 10 s: individual k ends 4 + 2k s after the previous generation
    (individual 0 runs 4 s, the others 2 s); a pause of an hour after ``pause_after``."""
    shift = 3600.0 if pause_after is not None and g > pause_after else 0.0
    return T0 + shift + 10 * g + 4 + 2 * k


def build_store(
    path: Path,
    *,
    generations: int,
    complete: int,
    partial_done: int = 0,
    meta_test: bool = False,
    pause_after: int | None = None,
) -> Path:
    """A store with ``complete`` evaluated and aggregated generations, then one with
    ``partial_done`` finished individuals (if > 0); individual 2 of generation 1 failed."""
    config = validate_config(
        {
            "name": path.name,
            "seed": 3,
            "generations": generations,
            "population_size": POP,
            "direction": "maximize",
            "optimizer": {"name": "random"},
            "optimizee": {"name": "sphere"},
            "space": {
                "a": {"low": -1.0, "high": 1.0},
                "b": {"low": 0.1, "high": 10.0, "scale": "log"},
                "n": {"type": "int", "low": 1, "high": 9},
                "rule": {"type": "choice", "choices": ["stdp", "static"]},
            },
            "results": str(path),
        }
    )
    space = ParameterSpace.from_config(config["space"])
    store = ResultStore.create(path, config)
    store.set_array_dims({"task_accuracy": ("task",)})
    rng = np.random.default_rng(0)
    n_rows = complete + (1 if partial_done else 0)
    for g in range(n_rows):
        store.append_generation(g, space.decode(rng.random((POP, 4))), np.arange(POP) + 100 * g)
        todo = range(POP) if g < complete else range(partial_done)
        results = []
        for k in todo:
            failed = g == 1 and k == 2
            f = fitness_of(g, k)
            results.append(
                {
                    "individual": k,
                    "status": FAILED if failed else DONE,
                    "fitness": 0.0 if failed else f,
                    "metrics": {} if failed else {"chance": 1 / 3},
                    "arrays": {} if failed else {"task_accuracy": np.array([f, f + 0.1, f - 0.1])},
                    "runtime": 4.0 if k == 0 else 2.0,
                    "attempts": 2 if failed else 1,
                    "worker": f"worker={k % 2}",
                    "error": ERROR if failed else "",
                    "log": "",
                    "finished_at": finish_time(g, k, pause_after),
                }
            )
        store.write_results(g, results)
        if g < complete:
            store.save_checkpoint(g, {}, {"n_done": POP})
    if meta_test:
        store.write_meta_test(
            [
                {
                    "generation": complete - 1,
                    "individual": 3,
                    "ok": True,
                    "fitness": 0.5,
                    "metrics": {"chance": 1 / 3},
                    "arrays": {"task_accuracy": np.array([0.5, 0.6, 0.4])},
                },
                {
                    "generation": complete - 1,
                    "individual": 2,
                    "ok": False,
                    "fitness": None,
                    "error": "RuntimeError: boom",
                },
            ]
        )
    return path


@pytest.fixture(scope="module")
def stores(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("stores")
    return {
        # a run writing generation 4 of 6: two of its four individuals are done
        "running": build_store(root / "running", generations=6, complete=4, partial_done=2),
        # a finished run of 5 generations, stopped for an hour after generation 1, with meta-test
        "finished": build_store(
            root / "finished", generations=5, complete=5, meta_test=True, pause_after=1
        ),
    }


# ---------------------------------------------------------------------------- status
def test_status_of_a_running_store_has_exact_elapsed_and_eta(stores) -> None:
    from l2lflow.client import StoreLock

    lock = StoreLock(stores["running"])  # what the engine of a running run holds
    lock.acquire()
    try:
        st = run_status(stores["running"], now=T0 + 46.5)
    finally:
        lock.release()
    assert [(r.done, r.failed, r.pending) for r in st.rows] == [
        (4, 0, 0),
        (3, 1, 0),
        (4, 0, 0),
        (4, 0, 0),
        (2, 0, 2),
    ]
    assert [r.aggregated for r in st.rows] == [True] * 4 + [False]
    assert [r.duration_s for r in st.rows[:4]] == pytest.approx([10.0] * 4)
    assert st.rows[4].duration_s == pytest.approx(6.5)  # so far
    assert st.generation_s == pytest.approx(10.0)
    # 1 generation not sampled yet + half of generation 4 pending: 1.5 × 10 s
    assert st.eta_s == pytest.approx(15.0)
    assert st.elapsed_s == pytest.approx(46.5)
    assert not st.finished
    assert st.rows[1].best == pytest.approx(1.3) and st.rows[1].mean == pytest.approx(
        np.mean([1.0, 1.1, 1.3])
    )
    assert st.best["generation"] == 4 and st.best["individual"] == 1
    assert set(st.best["params"]) == {"a", "b", "n", "rule"}
    text = format_status(st)
    assert "ETA 15 s" in text and "elapsed 46 s" in text and "(maximize fitness; running)" in text
    assert "best: generation 4, individual 1, fitness 4.1: a=" in text and "rule=" in text


def test_status_leaves_out_pauses_and_reports_a_finished_run(stores) -> None:
    st = run_status(stores["finished"], now=T0 + 10 * 86400)
    assert [r.duration_s for r in st.rows] == pytest.approx([10.0] * 5)
    assert st.elapsed_s == pytest.approx(50.0)  # not the hour in between
    assert st.finished and st.eta_s == 0
    assert [m["status"] for m in st.meta_test] == [DONE, FAILED]
    text = format_status(st)
    assert "elapsed 50 s, 10 s per generation, done" in text
    assert "meta-test #0 (generation 4, individual 3) on held-out tasks: 0.5" in text
    assert "meta-test #1 (generation 4, individual 2) on held-out tasks: failed" in text
    # seconds after the last result: a finished run's clock has stopped at its last result
    just_after = run_status(stores["finished"], now=T0 + 3600 + 50 + 2)
    assert just_after.elapsed_s == pytest.approx(50.0) and just_after.finished


def test_status_of_a_store_being_created(tmp_path) -> None:
    # the engine writes the store's metadata before its arrays: status must not trip over that
    path = build_store(tmp_path / "new", generations=3, complete=0)
    shutil.rmtree(path / "results.zarr" / "status")
    st = run_status(path)
    assert st.rows == [] and not st.finished and st.best is None and st.elapsed_s == 0
    text = format_status(st)
    assert "0/3 generations sampled" in text and "ETA ? (no result yet)" in text


def test_status_of_a_stopped_run_says_when_it_last_wrote(stores) -> None:
    st = run_status(stores["running"], now=T0 + 46 + 3600)
    assert st.elapsed_s == pytest.approx(46.0)  # the hour since is not run time
    assert st.eta_s == pytest.approx(15.0)
    assert "ETA 15 s once resumed (last result 1:00:00 ago)" in format_status(st)


def test_status_cli_table_json_and_errors(stores, capsys, tmp_path) -> None:
    assert main(["status", str(stores["finished"] / "results.zarr")]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].startswith("experiment finished: 5/5 generations sampled")
    assert main(["status", str(stores["finished"]), "--last", "2"]) == 0
    out = capsys.readouterr().out
    assert "... 3 earlier generations" in out and "\n    3 " in out and "\n    1 " not in out
    assert main(["status", str(stores["running"]), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["generations"] == 6 and len(doc["rows"]) == 5 and doc["rows"][4]["pending"] == 2
    assert main(["status", str(tmp_path / "nothing")]) == 2
    assert "no results store" in capsys.readouterr().err
    # --watch on a path without a store (a typo) ends with the same error instead of waiting
    assert main(["status", str(tmp_path / "nothing"), "--watch", "--interval", "0.1"]) == 2
    assert "no results store" in capsys.readouterr().err


def test_status_reads_the_lock_holder_for_liveness(stores, tmp_path) -> None:
    """Alive exactly while someone holds the results lock on this host; unknown elsewhere."""
    import socket

    from l2lflow.client import StoreLock
    from l2lflow.status import engine_alive

    folder = tmp_path / "copy"
    shutil.copytree(stores["running"], folder)
    assert engine_alive(folder) is False  # never locked
    lock = StoreLock(folder)
    lock.acquire()
    try:
        assert engine_alive(folder) is True and run_status(folder).state == "running"
    finally:
        lock.release()
    # the text of a dead holder stays: a live pid there (reused) is not the holder
    other = subprocess.Popen(["sleep", "60"])
    try:
        (folder / ".l2lflow.lock").write_text(f"{other.pid} {socket.gethostname()}\n")
        assert engine_alive(folder) is False
        assert run_status(folder, now=T0 + 46.5).state == "not running"
    finally:
        other.kill()
        other.wait()
    (folder / ".l2lflow.lock").write_text(f"{other.pid} some-login-node\n")
    assert engine_alive(folder) is None  # another host: the time since the last result decides
    assert run_status(folder, now=T0 + 46.5).state == "running"
    assert run_status(folder, now=T0 + 46 + 3600).state == "not running"


def test_status_knows_a_killed_run_at_once(tmp_path) -> None:
    """`l2lflow run` killed mid-generation: status says "not running" right away, not after a
    minute without results (the engine's pid in the lock file is gone)."""
    import signal

    counter = tmp_path / "count"
    counter.mkdir()
    cfg = write_config(
        tmp_path,
        name="dead",
        generations=3,
        population_size=8,
        optimizee={"name": "test.counting", "options": {"counter_dir": str(counter), "sleep_s": 1}},
        execution={"workers": 1, "idle_timeout_s": 20},
    )
    results = tmp_path / "results" / "dead"
    proc = subprocess.Popen(
        [sys.executable, "-m", "l2lflow", "run", str(cfg)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        st = None
        while time.monotonic() < deadline:
            try:
                st = run_status(results)
            except Exception:  # noqa: BLE001 - the store is being created
                st = None
            if st is not None and any(r.done for r in st.rows):
                break
            time.sleep(0.2)
        assert st is not None and st.state == "running", st
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        st = run_status(results)
        assert st.state == "not running" and not st.finished
        assert "; not running)" in format_status(st)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)


# ---------------------------------------------------------------------------- accessor
def test_open_results_registers_the_accessor(stores) -> None:
    ds = l2lflow.open_results(stores["finished"])
    acc = ds.l2l
    assert acc.parameters == ["a", "b", "n", "rule"]
    assert acc.direction == "maximize"
    assert acc.metrics == ["metric_chance"]
    assert acc.task_variables == ["task_accuracy"]


def test_best_and_best_per_generation_follow_direction(stores) -> None:
    ds = l2lflow.open_results(stores["finished"])
    best = ds.l2l.best(3)
    assert list(best.columns) == ["generation", "individual", "fitness", "a", "b", "n", "rule"]
    assert best[["generation", "individual"]].values.tolist() == [[4, 3], [4, 2], [4, 1]]
    assert best["fitness"].tolist() == pytest.approx([4.3, 4.2, 4.1])
    assert best.loc[0, "a"] == pytest.approx(float(ds.a.values[4, 3]))
    assert best.loc[0, "rule"] == str(ds.rule.values[4, 3])
    per_gen = ds.l2l.best_per_generation()
    assert per_gen.index.tolist() == [0, 1, 2, 3, 4]
    assert per_gen["individual"].tolist() == [3] * 5  # individual 2 of gen 1 failed, 3 is best
    assert per_gen["fitness"].tolist() == pytest.approx([0.3, 1.3, 2.3, 3.3, 4.3])
    assert len(ds.l2l.best(100)) == 5 * POP - 1  # every successful evaluation, once


def test_best_counts_a_parameter_set_once(stores, tmp_path) -> None:
    ds = l2lflow.open_results(stores["finished"]).load()
    for name in ("a", "b", "n", "rule"):  # generation 4 repeats generation 3 (elitism)
        ds[name][4] = ds[name][3].values
    assert ds.l2l.best(2)[["generation", "individual"]].values.tolist() == [[4, 3], [4, 2]]
    ds["fitness"][4, :] = ds["fitness"][3, :].values
    best = ds.l2l.best(2)
    assert best[["generation", "individual"]].values.tolist() == [[3, 3], [3, 2]]
    assert ds.l2l.best(2, distinct=False)[["generation", "individual"]].values.tolist() == [
        [3, 3],
        [4, 3],
    ]


def test_fitness_trajectory_uses_successful_evaluations_and_direction(stores) -> None:
    ds = l2lflow.open_results(stores["running"])
    traj = ds.l2l.fitness_trajectory()
    assert list(traj.columns) == [
        "n_done",
        "n_failed",
        "best",
        "mean",
        "median",
        "std",
        "q10",
        "q25",
        "q75",
        "q90",
        "best_so_far",
    ]
    assert traj["n_done"].tolist() == [4, 3, 4, 4, 2]
    assert traj["n_failed"].tolist() == [0, 1, 0, 0, 0]
    assert traj["best"].tolist() == pytest.approx([0.3, 1.3, 2.3, 3.3, 4.1])
    assert traj.loc[1, "mean"] == pytest.approx(np.mean([1.0, 1.1, 1.3]))  # the failed 0.0 out
    assert traj.loc[0, "median"] == pytest.approx(0.15)
    assert traj.loc[0, "q25"] == pytest.approx(np.quantile([0, 0.1, 0.2, 0.3], 0.25))
    assert traj["best_so_far"].is_monotonic_increasing
    # the same store read as "minimize": best is the minimum, best so far never rises
    ds.attrs["l2lflow"] = {**ds.attrs["l2lflow"], "direction": "minimize"}
    low = ds.l2l.fitness_trajectory(quantiles=[0.5])
    assert low["best"].tolist() == pytest.approx([0.0, 1.0, 2.0, 3.0, 4.0])
    assert low["best_so_far"].tolist() == pytest.approx([0.0] * 5)
    assert "q50" in low.columns


def test_parameter_spread(stores) -> None:
    ds = l2lflow.open_results(stores["finished"])
    spread = ds.l2l.parameter_spread()
    assert spread.index.tolist() == [0, 1, 2, 3, 4]
    a = ds.a.values
    assert spread["a"]["mean"].tolist() == pytest.approx(a.mean(axis=1).tolist())
    assert spread["a"]["std"].tolist() == pytest.approx(a.std(axis=1).tolist())
    assert spread["n"]["min"].tolist() == pytest.approx(ds.n.values.min(axis=1).tolist())
    assert spread["b"]["max"].tolist() == pytest.approx(ds.b.values.max(axis=1).tolist())
    assert set(spread["rule"].columns) == {"n_unique", "mode"}
    assert set(spread["rule"]["mode"]) <= {"stdp", "static"}
    done = ds.l2l.parameter_spread(done_only=True)
    ok = np.delete(a[1], 2)
    assert done.loc[1, ("a", "mean")] == pytest.approx(ok.mean())


def test_failures_give_the_reason(stores) -> None:
    ds = l2lflow.open_results(stores["finished"])
    fails = ds.l2l.failures()
    assert len(fails) == 1
    row = fails.iloc[0]
    assert (row["generation"], row["individual"], row["attempts"]) == (1, 2, 2)
    assert row["reason"] == "RuntimeError: injected failure in individual 2"
    assert row["error"] == ERROR
    assert row["a"] == pytest.approx(float(ds.a.values[1, 2]))


def test_to_dataframe_is_one_row_per_evaluation(stores) -> None:
    ds = l2lflow.open_results(stores["running"])
    df = ds.l2l.to_dataframe()
    assert len(df) == 5 * POP
    assert list(df.columns[:8]) == [
        "generation",
        "individual",
        "a",
        "b",
        "n",
        "rule",
        "fitness",
        "status",
    ]
    assert {
        "seed",
        "metric_chance",
        "runtime",
        "attempts",
        "worker",
        "finished_at",
        "error",
    } <= set(df.columns)
    assert "log" not in df.columns and "task_accuracy" not in df.columns
    assert df["status"].tolist().count(0) == 2  # the pending of generation 4
    row = df[(df.generation == 1) & (df.individual == 2)].iloc[0]
    assert row["status"] == FAILED and "injected failure" in row["error"]
    assert ds.l2l.to_dataframe(include_pending=False, provenance=False).shape == (18, 10)


def test_meta_test_table(stores) -> None:
    mt = l2lflow.open_results(stores["finished"]).l2l.meta_test()
    assert mt[["generation", "individual"]].values.tolist() == [[4, 3], [4, 2]]
    assert mt["fitness"].tolist() == pytest.approx([4.3, 4.2])
    assert mt["meta_test_fitness"].iloc[0] == pytest.approx(0.5)
    assert np.isnan(mt["meta_test_fitness"].iloc[1])
    assert l2lflow.open_results(stores["running"]).l2l.meta_test().empty


def test_accessor_with_plain_open_zarr(stores) -> None:
    code = (
        "import xarray as xr, l2lflow.accessor\n"
        f"ds = xr.open_zarr({str(stores['finished'] / 'results.zarr')!r})\n"
        "print(ds.l2l.best().fitness.iloc[0])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert float(out.stdout) == pytest.approx(4.3)


# ---------------------------------------------------------------------------- plots
def _assert_png(path: Path) -> None:
    from matplotlib.image import imread

    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert path.stat().st_size > 15_000, f"{path.name}: {path.stat().st_size} bytes"
    img = imread(path)
    assert img.shape[0] > 300 and img.shape[1] > 500
    assert np.unique(img.reshape(-1, img.shape[-1]), axis=0).shape[0] > 50, "an almost blank image"


def test_plots_of_a_store_with_tasks(stores, tmp_path, capsys) -> None:
    out = tmp_path / "figs"
    assert main(["plot", str(stores["finished"]), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    names = sorted(p.name for p in out.iterdir())
    assert names == ["fitness.png", "metrics.png", "parameters.png", "runtime.png", "tasks.png"]
    for name in names:
        _assert_png(out / name)
        assert str(out / name) in printed
    assert main(["plot", str(stores["running"]), "--figures", "tasks"]) == 0
    assert (stores["running"] / "figures" / "tasks.png").exists()
    assert not (stores["running"] / "figures" / "fitness.png").exists()
    assert main(["plot", str(stores["running"]), "--figures", "fitness,nope"]) == 2


def test_plot_of_a_store_without_tasks_writes_no_heatmap(tmp_path) -> None:
    from l2lflow.plots import plot_tasks, write_figures

    path = build_store(tmp_path / "plain", generations=2, complete=2)
    ds = l2lflow.open_results(path).load()
    ds = ds.drop_vars("task_accuracy")
    assert plot_tasks(ds, tmp_path / "t.png") is None
    written = write_figures(ds, tmp_path / "figs")
    assert sorted(written) == ["fitness", "metrics", "parameters", "runtime"]


def test_figures_read_without_the_config(tmp_path) -> None:
    """Units on the parameter axes, the chance level, meta-test markers side by side, readable
    heatmap numbers, and a symlog axis where a penalty would flatten a curve."""
    from l2lflow import plots

    path = build_store(tmp_path / "units", generations=3, complete=3, meta_test=True)
    ds = l2lflow.open_results(path).load()
    config = ds.attrs["l2lflow"]["config"]
    config["space"]["b"]["unit"] = "ms"
    config["optimizee"] = {"name": "nest.reservoir", "options": {"n_classes": 4}}
    assert plots.chance_level(ds) == pytest.approx(0.25)
    assert plots.chance_level({"optimizee": {"name": "sphere"}}) is None
    fig = plots.plot_parameters(ds, None)
    labels = {ax.get_title(): ax.get_ylabel() for ax in fig.axes if ax.get_title()}
    assert labels["b"] == "ms" and labels["a"] == ""
    # two meta-test scores that are equal: both markers visible, apart, each labelled
    ds["meta_test_fitness"].values[:] = [0.5, 0.5]
    ds["meta_test_status"].values[:] = [DONE, DONE]
    ax = plots.plot_fitness(ds, None).axes[0]
    stars = next(c for c in ax.collections if c.get_label() == "meta-test (held-out tasks)")
    xs = stars.get_offsets()[:, 0]
    assert len(set(np.round(xs, 6))) == 2
    assert {t.get_text() for t in ax.texts} >= {"#0", "#1"}
    chance = [line for line in ax.lines if line.get_label().startswith("chance")]
    assert chance and chance[0].get_ydata()[0] == pytest.approx(0.25)
    tasks = plots.plot_tasks(ds, None)
    numbers = [t for t in tasks.axes[0].texts if t.get_text()[:1].isdigit()]
    assert numbers and min(t.get_fontsize() for t in numbers) >= 9
    # a penalty returned by a few evaluations would flatten the curve: symlog
    fitness = ds["fitness"].values
    assert plots._flattened_by_outliers(fitness[np.isfinite(fitness)]) is None
    ds["metric_chance"].values[0, 0] = -1e6
    metrics = plots.plot_metrics(ds, None)
    assert metrics.axes[0].get_yscale() == "symlog" and metrics.axes[0].get_title() == "chance"
    ds["fitness"].values[0, :2] = -1e6
    assert plots.plot_fitness(ds, None).axes[0].get_yscale() == "symlog"


# ---------------------------------------------------------------------------- export
def test_export_csv_and_parquet_round_trip(stores, tmp_path, capsys) -> None:
    ds = l2lflow.open_results(stores["running"])
    expected = ds.l2l.to_dataframe()
    assert main(["export", str(stores["running"]), "--format", "csv"]) == 0
    csv_path = stores["running"] / "results.csv"
    back = pd.read_csv(csv_path, keep_default_na=False, na_values=[""])
    assert list(back.columns) == list(expected.columns)
    numeric = [c for c in expected.columns if expected[c].dtype.kind in "biuf"]
    for c in numeric:
        np.testing.assert_allclose(back[c].to_numpy(float), expected[c].to_numpy(float), rtol=1e-15)
    assert back["rule"].tolist() == expected["rule"].tolist()
    assert back["error"].fillna("").tolist() == expected["error"].tolist()

    pq = tmp_path / "out" / "evals.parquet"
    assert main(["export", str(stores["running"]), "--format", "parquet", "--out", str(pq)]) == 0
    back = pd.read_parquet(pq)
    pd.testing.assert_frame_equal(back, expected, check_dtype=False)
    for c in numeric:
        assert back[c].dtype == expected[c].dtype, c  # parquet keeps the dtypes
    capsys.readouterr()
    assert main(["export", str(stores["running"]), "--out", "-", "--done-only"]) == 0
    assert len(pd.read_csv(io.StringIO(capsys.readouterr().out))) == 18


def test_export_parquet_without_pyarrow_says_so(stores, tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # import pyarrow -> ImportError
    pq = tmp_path / "x.parquet"
    assert main(["export", str(stores["running"]), "--format", "parquet", "--out", str(pq)]) == 2
    assert "needs pyarrow" in capsys.readouterr().err
    assert not pq.exists()


# ---------------------------------------------------------------------------- a second reader
def test_tensorstore_reads_the_same_arrays(stores) -> None:
    ts = pytest.importorskip("tensorstore")
    path = stores["finished"] / "results.zarr"
    ds = l2lflow.open_results(stores["finished"])
    # every numeric variable on (generation, individual, ...); strings (worker, error, choice
    # parameters) use Zarr data types tensorstore does not read
    numeric = sorted(
        k
        for k, v in ds.data_vars.items()
        if v.dims[:2] == ("generation", "individual") and v.dtype.kind in "biuf"
    )
    assert {"fitness", "status", "seed", "a", "n", "runtime", "task_accuracy"} <= set(numeric)
    for name in numeric:
        arr = ts.open(
            {"driver": "zarr3", "kvstore": {"driver": "file", "path": str(path / name)}},
            read=True,
        ).result()
        assert arr.domain.labels[:2] == ("generation", "individual")
        # one chunk per generation: (1, population, ...)
        assert tuple(arr.chunk_layout.read_chunk.shape[:2]) == (1, POP)
        values = arr.read().result()
        expected = ds[name].values
        assert values.dtype == expected.dtype and values.shape == expected.shape
        assert values.tobytes() == expected.tobytes(), name


# ---------------------------------------------------------------------------- a real run
def test_status_while_snakemake_runs_then_everything_on_its_store(tmp_path) -> None:
    """A real (slow) run: status and --watch while it writes; then the accessor, plots,
    export and tensorstore on what the pipeline wrote."""
    counter = tmp_path / "count"
    counter.mkdir()
    cfg = write_config(
        tmp_path,
        name="live",
        generations=3,
        population_size=6,
        optimizee={
            "name": "test.counting",
            "options": {"counter_dir": str(counter), "sleep_s": 0.3},
        },
        execution={"workers": 1, "idle_timeout_s": 20},
    )
    results = tmp_path / "results" / "live"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        snakemake_cmd(tmp_path, cfg),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    watcher = None
    seen = []
    try:
        deadline = time.monotonic() + 120
        while proc.poll() is None and time.monotonic() < deadline:
            if (results / "results.zarr" / "zarr.json").exists():
                if watcher is None:
                    watcher = subprocess.Popen(
                        [
                            sys.executable,
                            "-m",
                            "l2lflow",
                            "status",
                            str(results),
                            "--watch",
                            "--interval",
                            "0.2",
                        ],
                        stdout=subprocess.PIPE,
                        stderr=subprocess.STDOUT,
                        text=True,
                    )
                try:
                    st = run_status(results)
                except StoreError:  # zarr.json is there, the l2lflow metadata not yet
                    pass
                else:
                    seen.append((len(st.rows), sum(r.pending for r in st.rows), st.finished))
            time.sleep(0.1)
        assert proc.wait(timeout=120) == 0, proc.stderr.read()
        assert watcher is not None, "the store never appeared"
        watch_out, _ = watcher.communicate(timeout=30)  # --watch ends once the run is finished
    finally:
        for p in (proc, watcher):
            if p is not None and p.poll() is None:
                p.kill()
    assert watcher.returncode == 0
    assert any(not finished and pending > 0 for _, pending, finished in seen), seen
    assert any(0 < n_rows < 3 for n_rows, _, _ in seen), seen
    assert "(minimize fitness; finished)" in watch_out and "done" in watch_out

    st = run_status(results)
    assert st.finished and [r.done for r in st.rows] == [6, 6, 6]
    # no pause: elapsed is the first start to the last end, and the generations fill it
    live = l2lflow.open_results(results)
    starts = live.finished_at.values - live.runtime.values
    assert st.elapsed_s == pytest.approx(live.finished_at.values.max() - starts.min())
    assert sum(r.duration_s for r in st.rows) == pytest.approx(st.elapsed_s)
    assert all(0.3 <= r.duration_s < 60 for r in st.rows), [r.duration_s for r in st.rows]

    ds = l2lflow.open_results(results)
    best = ds.l2l.best()
    assert best["fitness"].iloc[0] == pytest.approx(float(ds.fitness.min()))
    traj = ds.l2l.fitness_trajectory()
    assert traj["best"].tolist() == pytest.approx(ds.fitness.min("individual").values.tolist())
    assert traj["best_so_far"].is_monotonic_decreasing
    df = ds.l2l.to_dataframe()
    assert len(df) == 18 and "metric_seed_mod" in df.columns and (df.status == DONE).all()
    assert ds.l2l.failures().empty

    from l2lflow.plots import write_figures

    written = write_figures(results, tmp_path / "figs")
    assert sorted(written) == ["fitness", "metrics", "parameters", "runtime"]
    for path in written.values():
        _assert_png(path)

    ts = pytest.importorskip("tensorstore")
    arr = ts.open(
        {
            "driver": "zarr3",
            "kvstore": {"driver": "file", "path": str(results / "results.zarr" / "fitness")},
        },
        read=True,
    ).result()
    assert arr.read().result().tobytes() == ds.fitness.values.tobytes()


# ---------------------------------------------------------------------------- optimizer state, Pareto
@pytest.fixture(scope="module")
def pools(tmp_path_factory):
    """One local worker pool for the small in-process runs below."""
    from l2lflow.execution import start_pools

    pool = start_pools(
        {"backend": "local", "workers": 1},
        local_directory=str(tmp_path_factory.mktemp("dask")),
    )
    yield pool
    pool.close()


def _run(tmp_path, pools, name: str, **overrides) -> Path:
    from l2lflow.experiment import Experiment

    cfg = yaml_config(tmp_path, name=name, **overrides)
    Experiment(cfg, pools=pools).run()
    return Path(cfg["results"])


def yaml_config(tmp_path, **overrides) -> dict:
    from l2lflow.config import load_config

    return load_config(write_config(tmp_path, **overrides))


@pytest.mark.parametrize(
    "optimizer, columns",
    [
        ("cross_entropy", ["mean[a]", "mean[b]", "cov.diag[a]", "cov.diag[b]"]),
        ("snes", ["mean[a]", "mean[b]", "sigma[a]", "sigma[b]"]),
        ("cmaes", ["mean[a]", "mean[b]", "sigma", "std[a]", "std[b]"]),  # replayed
    ],
)
def test_optimizer_state_per_generation(tmp_path, pools, optimizer, columns) -> None:
    results = _run(tmp_path, pools, optimizer, optimizer={"name": optimizer}, generations=3)
    state = l2lflow.open_results(results).l2l.optimizer_state()
    assert list(state.index) == [0, 1, 2]
    assert set(columns) <= set(state.columns), list(state.columns)
    assert np.isfinite(state[columns].to_numpy()).all()
    assert ((state[["mean[a]", "mean[b]"]] >= 0) & (state[["mean[a]", "mean[b]"]] <= 1)).all(None)
    if optimizer == "cmaes":  # the replay is the run: the next generation asked from this mean
        from l2lflow.store import ResultStore

        assert ResultStore(results).checkpoint(2)["optimizer"] is None  # no checkpoint to read
        assert state["sigma"].iloc[0] != state["sigma"].iloc[2]


def test_multi_objective_status_plot_and_summary(tmp_path, pools) -> None:
    """A Pareto front instead of a "best" of f1 + f2: status, the figure, the closing summary."""
    from l2lflow.display import RunDisplay
    from l2lflow.plots import plot_pareto, write_figures

    results = _run(
        tmp_path,
        pools,
        "zdt",
        optimizer={"name": "nsga2"},
        optimizee={
            "name": "zdt1",
            "objectives": [{"name": "f1", "direction": "minimize"}, {"name": "f2"}],
        },
        space={f"x{k}": {"low": 0.0, "high": 1.0} for k in range(3)},
        generations=4,
        population_size=12,
    )
    st = run_status(results)
    assert st.best is None and st.front is not None
    assert 1 <= st.front["size"] <= 12 and st.front["hypervolume"] > 0
    assert all(r.front_size is not None and r.hypervolume > 0 for r in st.rows)
    text = format_status(st)
    assert "Pareto front (generation 3):" in text and "best:" not in text
    assert "hypervolume" in text.splitlines()[1]
    written = write_figures(results, tmp_path / "figs")
    assert "pareto" in written and "metrics" in written
    _assert_png(written["pareto"])
    fig = plot_pareto(results, None)
    assert fig.axes[0].get_xlabel().startswith("f1") and fig.axes[0].get_ylabel().startswith("f2")
    assert "hypervolume" in fig.axes[1].get_ylabel()
    display = RunDisplay(io.StringIO(), tty=False)
    display.attach(results, l2lflow.open_results(results).attrs["l2lflow"]["config"])
    summary = display.summary()
    assert "Pareto front:" in summary and "best fitness" not in summary
