"""Nothing an optimizee starts outlives its sandbox: not after a run, a timeout, or a killed worker.

The optimizee (tests/usermodules/spawner.py, a user module) starts a child, an orphaned forked
grandchild and a ``setsid`` daemon per evaluation, each sleeping for ten minutes, and notes
their pids; the tests look for survivors among those pids (checked by command line, so a
recycled pid is never mistaken for one).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from helpers import TAG_VAR, run_snakemake, snakemake_cmd, write_config

from l2lflow.execution.sandbox import Sandbox, current_sandbox, reset_sandbox
from l2lflow.execution.task import evaluate_chunk
from l2lflow.execution.work import EvaluationSpec

pytestmark = pytest.mark.resilience

USERMODULES = Path(__file__).resolve().parent / "usermodules"
#: how long the killers may take once the sandbox is gone (a loaded 2-core machine)
GONE_WITHIN_S = 60.0


@pytest.fixture
def user_path(monkeypatch) -> str:
    """PYTHONPATH with the test's user modules, for this process and every child it starts."""
    path = os.pathsep.join([str(USERMODULES), os.environ.get("PYTHONPATH", "")])
    monkeypatch.setenv("PYTHONPATH", path)
    monkeypatch.syspath_prepend(str(USERMODULES))
    return path


def probes(pid_dir: Path) -> dict[str, int]:
    """kind-pid -> pid of every process the optimizee noted."""
    return {name: int(name.rsplit("-", 1)[1]) for name in os.listdir(pid_dir)}


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            if f.read().rsplit(b")", 1)[-1].split()[0] == b"Z":
                return False
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return b"l2lflow-orphan-probe" in f.read()
    except OSError:
        return False


def survivors(pid_dir: Path, timeout: float = GONE_WITHIN_S) -> dict[str, int]:
    """Poll until no noted process is alive; return those still alive after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        left = {k: p for k, p in probes(pid_dir).items() if alive(p)}
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.1)


def kill_all(pid_dir: Path) -> None:
    for pid in probes(pid_dir).values():
        if alive(pid):
            os.kill(pid, signal.SIGKILL)


def spawn_spec(pid_dir: Path, **options) -> EvaluationSpec:
    return EvaluationSpec(
        optimizee="spawner:spawn",
        options={"pid_dir": str(pid_dir), **options},
        timeout_s=options.pop("timeout_s", None),
    )


def wait_for_probes(pid_dir: Path, n: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while len(probes(pid_dir)) < n:
        assert time.monotonic() < deadline, f"only {probes(pid_dir)} started"
        time.sleep(0.05)


def test_a_sandbox_outlives_the_thread_that_started_it(user_path: str) -> None:
    """Linux ties the parent-death signal to the thread that forked: a sandbox started from a
    Dask executor thread must not die when that thread ends (its worker is still alive)."""
    started: list[Sandbox] = []

    def executor_thread() -> None:
        started.append(current_sandbox())
        item = {"individual": 0, "generation": 0, "seed": 1, "params": {"a": 2.0}}
        spec = EvaluationSpec(optimizee="sphere")
        assert started[0].start_chunk(spec, [item])
        assert started[0].next_result(spec, item)["ok"]  # up and past its own setup

    try:
        thread = threading.Thread(target=executor_thread)
        thread.start()
        thread.join()
        time.sleep(1.0)
        assert started and started[0].alive, "the sandbox died with the thread that started it"
    finally:
        reset_sandbox()


def test_a_timeout_kills_the_evaluations_descendants(tmp_path: Path, user_path: str) -> None:
    pid_dir = tmp_path / "pids"
    pid_dir.mkdir()
    spec = EvaluationSpec(
        optimizee="spawner:spawn",
        options={"pid_dir": str(pid_dir), "hang_s": 600.0},
        timeout_s=5.0,
    )
    item = {"individual": 0, "generation": 0, "seed": 1, "params": {"a": 2.0}}
    try:
        [result] = evaluate_chunk(spec, [item])
        assert result["reason"] == "timeout", result
        assert len(probes(pid_dir)) == 3, probes(pid_dir)
        left = survivors(pid_dir)
        assert not left, f"alive after the timeout: {left}"
    finally:
        kill_all(pid_dir)
        reset_sandbox()


def test_a_killed_worker_takes_the_evaluations_descendants_along(
    tmp_path: Path, user_path: str
) -> None:
    """SIGKILL of a real Dask worker mid-evaluation: its sandbox dies, and so does everything
    the optimizee started (the sandbox's guard kills them)."""
    from l2lflow.execution import start_pools

    pid_dir = tmp_path / "pids"
    pid_dir.mkdir()
    spec = EvaluationSpec(
        optimizee="spawner:spawn", options={"pid_dir": str(pid_dir), "hang_s": 600.0}
    )
    item = {"individual": 0, "generation": 0, "seed": 1, "params": {"a": 2.0}}
    pools = start_pools({"backend": "local", "workers": 1}, local_directory=str(tmp_path))
    try:
        client = pools.client("cpu")
        [worker_pid] = client.run(os.getpid).values()
        future = client.submit(evaluate_chunk, spec, [item], pure=False)
        wait_for_probes(pid_dir, 3)
        started = probes(pid_dir)
        future.cancel()  # no rerun on the restarted worker (its processes are not the question)
        os.kill(worker_pid, signal.SIGKILL)
        left = {k: p for k, p in survivors(pid_dir).items() if k in started}
        assert not left, f"alive after the worker was killed: {left}"
    finally:
        pools.close()
        kill_all(pid_dir)


def test_nothing_an_optimizee_starts_survives_the_run(tmp_path: Path, user_path: str) -> None:
    """A whole Snakemake run of a user optimizee that leaves processes behind in every
    evaluation: when the run is over, none of them is left."""
    pid_dir = tmp_path / "pids"
    pid_dir.mkdir()
    cfg = write_config(
        tmp_path,
        name="spawner",
        generations=2,
        population_size=4,
        optimizee={"name": "spawner:spawn", "options": {"pid_dir": str(pid_dir)}},
        execution={"workers": 2, "idle_timeout_s": 20},
    )
    proc = run_snakemake(tmp_path, cfg, check=False)
    try:
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert len(probes(pid_dir)) == 2 * 4 * 3
        left = survivors(pid_dir)
        assert not left, f"{len(left)} processes outlived the run: {sorted(left)}"
    finally:
        kill_all(pid_dir)


# ---------------------------------------------------------------------------- the engine of a dead run
def _start_run(tmp_path: Path, cfg: Path, log: Path) -> subprocess.Popen:
    with open(log, "ab") as out:
        return subprocess.Popen(
            snakemake_cmd(tmp_path, cfg),
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, TAG_VAR: str(tmp_path)},
            start_new_session=True,
        )


def _kill_after(proc: subprocess.Popen, sentinel: Path, log: Path) -> None:
    """SIGKILL Snakemake and its jobs the moment ``sentinel`` appears: between two steps."""
    while not sentinel.exists():
        assert proc.poll() is None, log.read_text()
        time.sleep(0.005)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def test_the_engine_of_a_run_killed_between_steps_goes_within_seconds(tmp_path: Path) -> None:
    """Snakemake killed between steps (not during `evaluate`, where the engine notices its
    client go): a new run may claim the results at once, and the engine notices that its run's
    process died and stops within seconds, not after its idle timeout (here 10 minutes)."""
    cfg = write_config(
        tmp_path, name="dead", generations=4, execution={"workers": 1, "idle_timeout_s": 600}
    )
    results = tmp_path / "results" / "dead"
    log = tmp_path / "snakemake.log"
    proc = _start_run(tmp_path, cfg, log)
    _kill_after(proc, results / "steps" / "000000.aggregated", log)
    engine = int((results / ".l2lflow.lock").read_text().split()[0])
    # at once, a new run announces itself as the rerun's onstart does (a short-lived process
    # standing in for its Snakemake): not refused as "in use" by the dead run's engine
    claim = subprocess.run(
        [
            "sh",
            "-c",
            'L2LFLOW_RUN_PID=$$ exec "$0" -m l2lflow step claim --results "$1"',
            sys.executable,
            str(results),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "L2LFLOW_RUN_ID": "the-rerun", TAG_VAR: str(tmp_path)},
    )
    assert claim.returncode == 0, claim.stderr
    start = time.monotonic()
    while alive_pid(engine) and time.monotonic() - start < GONE_WITHIN_S:
        time.sleep(0.1)
    took = time.monotonic() - start
    print(f"\nengine of a run killed between steps gone after {took:.1f} s (idle timeout 600 s)")
    assert not alive_pid(engine), f"the engine outlived its killed run by {took:.0f} s"
    from l2lflow.client import engine_pid

    assert engine_pid(results) is None


@pytest.mark.slow
def test_a_rerun_right_after_a_kill_between_steps_works(tmp_path: Path) -> None:
    """Killed between steps, rerun at once: not refused as "in use" by the dying engine.
    (``--unlock`` only clears Snakemake's own lock, which its SIGKILL leaves; l2lflow needs no
    flag.)"""
    cfg = write_config(
        tmp_path, name="rerun", generations=3, execution={"workers": 1, "idle_timeout_s": 600}
    )
    results = tmp_path / "results" / "rerun"
    log = tmp_path / "snakemake.log"
    proc = _start_run(tmp_path, cfg, log)
    _kill_after(proc, results / "steps" / "000001.aggregated", log)
    _unlock(tmp_path, cfg)
    rerun = run_snakemake(tmp_path, cfg, check=False)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert (results / "steps" / "000002.aggregated").exists()


def alive_pid(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[-1].split()[0] != b"Z"
    except OSError:
        return False


def _unlock(tmp_path: Path, cfg: Path) -> None:
    subprocess.run(snakemake_cmd(tmp_path, cfg, "--unlock"), capture_output=True, check=True)
