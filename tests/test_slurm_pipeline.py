"""The whole pipeline on the real local Slurm (``.ci/slurm/start.sh``; ``-m slurm``).

``snakemake --profile profiles/local-slurm`` runs the rules on this host (the "login node") and
the evaluations in Dask workers that the engine submits as Slurm jobs. What is checked, with real
jobs only:

- every evaluation ran in a Slurm job: the store's ``worker`` column names the job and partition,
  and ``sacct`` lists exactly those jobs for the run;
- with both pools configured, a GPU optimizee's evaluations ran only in ``gpus`` jobs (pinned to
  the GPU), a CPU optimizee's only in ``batch`` jobs, and neither run submitted the other's jobs;
- ``scancel`` of a worker job mid-generation: the run finishes, every individual done once;
- no job is left in the queue (and no process of the run on this host) after success, after a
  failed run, and after SIGKILL of the whole orchestrator (Snakemake and the engine) or of
  Snakemake alone.

A run's jobs are told apart from other users of the same Slurm by their working directory
(each test runs Snakemake in its own ``tmp_path``; ``squeue %Z``, ``sacct WorkDir``), and its
processes on this host by a tag in their environment, which Slurm passes on to the worker jobs.
"""

from __future__ import annotations

import collections
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
from helpers import REPO, TAG_VAR, snakemake_cmd, tagged_processes, write_config

import l2lflow
from l2lflow.store import DONE

pytestmark = [pytest.mark.slurm, pytest.mark.timeout(240)]

PROFILE = REPO / "profiles" / "local-slurm"
#: the profile's worker ``death_timeout`` (10 s) plus job teardown on a busy 2-core machine
GONE_TIMEOUT_S = 30.0
_WORKER = re.compile(r"slurm_job=(\d+)(?: partition=(\S+))?")


# ------------------------------------------------------------------------------ Slurm queries
def queued(workdir: Path) -> dict[str, str]:
    """Job id -> state of the jobs in the queue that were submitted from ``workdir``."""
    out = subprocess.run(
        ["squeue", "-h", "-o", "%A|%T|%Z"], capture_output=True, text=True, timeout=30
    )
    assert out.returncode == 0, out.stderr
    jobs = {}
    for line in out.stdout.splitlines():
        job, state, where = line.split("|", 2)
        if Path(where) == workdir:
            jobs[job] = state
    return jobs


def accounted(workdir: Path, expect: set[str] | None = None) -> dict[str, dict[str, str]]:
    """Job id -> {name, partition, state} from ``sacct`` for the jobs submitted from ``workdir``.

    ``sacct`` lags ``squeue`` a little: with ``expect``, poll until those jobs are all listed.
    """
    deadline = time.monotonic() + 30
    while True:
        out = subprocess.run(
            ["sacct", "-n", "-X", "-P", "-S", "now-1hours", "-o",
             "JobID,JobName%60,Partition,State,WorkDir%400"],
            capture_output=True,
            text=True,
            timeout=30,
        )  # fmt: skip
        assert out.returncode == 0, f"sacct failed: {out.stderr}"
        jobs = {}
        for line in out.stdout.splitlines():
            job, name, partition, state, where = line.split("|", 4)
            if where and Path(where) == workdir:
                jobs[job] = {"name": name, "partition": partition, "state": state}
        if expect is None or expect <= set(jobs) or time.monotonic() > deadline:
            return jobs
        time.sleep(0.5)


def wait_queue_empty(workdir: Path, timeout: float = GONE_TIMEOUT_S) -> float:
    """Seconds until no job of ``workdir`` is queued; fails with the jobs left after ``timeout``."""
    t0 = time.monotonic()
    while queued(workdir):
        if time.monotonic() - t0 > timeout:
            pytest.fail(f"jobs still queued {timeout} s after the run ended: {queued(workdir)}")
        time.sleep(0.25)
    return time.monotonic() - t0


def where_evaluated(results: Path) -> list[tuple[int, int, str | None, str | None]]:
    """(generation, individual, Slurm job, partition) of every evaluation in the store."""
    ds = l2lflow.open_results(results).load()
    out = []
    for g in range(ds.sizes["generation"]):
        for i in range(ds.sizes["individual"]):
            m = _WORKER.search(str(ds.worker.values[g, i]))
            out.append((g, i, m.group(1) if m else None, m.group(2) if m else None))
    return out


# ------------------------------------------------------------------------------ processes
def tagged_env(tag: str, **extra: str) -> dict[str, str]:
    return {**os.environ, TAG_VAR: tag, "PYTHONUNBUFFERED": "1", **extra}


def wait_no_processes(tag: str, timeout: float = GONE_TIMEOUT_S) -> float:
    t0 = time.monotonic()
    while left := tagged_processes(tag):
        if time.monotonic() - t0 > timeout:
            pytest.fail(f"processes of the run left {timeout} s after it ended: {left}")
        time.sleep(0.25)
    return time.monotonic() - t0


def profile_cmd(workdir: Path, configfile: Path, *extra: str) -> list[str]:
    return [*snakemake_cmd(workdir, configfile, *extra), "--profile", str(PROFILE)]


def run_profile(
    workdir: Path, configfile: Path, tag: str, *extra: str, check: bool = True, **env: str
) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        profile_cmd(workdir, configfile, *extra),
        capture_output=True,
        text=True,
        timeout=200,
        env=tagged_env(tag, **env),
        cwd=workdir,
    )
    if check and proc.returncode != 0:
        pytest.fail(f"snakemake failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def engine_pid(results: Path) -> int | None:
    """The pid in the results folder's lock file (the engine holds the lock while it runs)."""
    try:
        return int((results / ".l2lflow.lock").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def counts(counter: Path) -> collections.Counter:
    """Evaluations started per ``g<gen>_i<ind>`` (``test.counting`` leaves one file each)."""
    return collections.Counter("_".join(p.split("_")[:2]) for p in os.listdir(counter))


def wait_for(predicate, timeout: float, what: str, step: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not within {timeout} s")
        time.sleep(step)


@pytest.fixture
def slurm(local_slurm: dict[str, str]) -> dict[str, str]:
    """The local Slurm with both partitions of the profile and working accounting (sacct)."""
    missing = {"batch", "gpus"} - set(local_slurm)
    if missing:
        pytest.skip(f"the local Slurm lacks partitions {sorted(missing)} (.ci/slurm/start.sh)")
    probe = subprocess.run(["sacct", "-n", "-X", "-j", "1"], capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"sacct does not work (accounting off?): {probe.stderr.strip()[:200]}")
    return local_slurm


# ------------------------------------------------------------------------------ tests
def test_profile_runs_evaluate_in_slurm_jobs_of_their_own_partition(slurm, tmp_path: Path) -> None:
    """``snakemake --profile profiles/local-slurm``, which configures both pools: a CPU experiment
    and a GPU experiment side by side on the same Slurm. Every evaluation ran in a Slurm job of
    its own kind's partition, and each run submitted only its own pool's jobs."""
    tag = f"slurm-{uuid.uuid4().hex}"
    runs = {}
    t0 = time.monotonic()
    for kind, optimizee, generations in (("gpu", "test.gpu_probe", 2), ("cpu", "sphere", 3)):
        workdir = tmp_path / kind
        cfg = write_config(
            workdir,
            name=kind,
            generations=generations,
            population_size=6,
            optimizee={"name": optimizee},
        )
        proc = subprocess.Popen(
            profile_cmd(workdir, cfg),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=tagged_env(tag),
            cwd=workdir,
        )
        runs[kind] = (workdir, proc)
    for kind, (_, proc) in runs.items():
        out, _ = proc.communicate(timeout=200)
        assert proc.returncode == 0, f"{kind} run failed:\n{out}"
    elapsed = time.monotonic() - t0
    gpu_dir, cpu_dir = runs["gpu"][0], runs["cpu"][0]

    # the CPU experiment: right results, every evaluation in a batch job that sacct knows
    cpu_ds = l2lflow.open_results(cpu_dir / "results" / "cpu").load()
    assert (cpu_ds.status.values == DONE).all()
    np.testing.assert_allclose(
        cpu_ds.fitness.values, cpu_ds.a.values**2 + cpu_ds.b.values**2, rtol=1e-14
    )
    cpu_where = where_evaluated(cpu_dir / "results" / "cpu")
    cpu_store_jobs = {job for *_, job, _ in cpu_where}
    assert None not in cpu_store_jobs, f"evaluations outside Slurm: {cpu_where}"
    assert {part for *_, part in cpu_where} == {"batch"}
    assert not any("gpu=" in w for w in cpu_ds.worker.values.ravel())

    # the GPU experiment: measured inside each evaluation, pinned to the job's one GPU in a
    # gpus-partition job
    gpu_ds = l2lflow.open_results(gpu_dir / "results" / "gpu").load()
    assert (gpu_ds.status.values == DONE).all()
    assert (gpu_ds.metric_on_gpu_partition.values == 1).all()
    assert (gpu_ds.metric_gpu_count.values == 1).all()
    assert (gpu_ds.metric_gpu_index.values == 0).all()
    assert all("gpu=0" in w for w in gpu_ds.worker.values.ravel())
    gpu_where = where_evaluated(gpu_dir / "results" / "gpu")
    gpu_store_jobs = {job for *_, job, _ in gpu_where}
    assert {part for *_, part in gpu_where} == {"gpus"}
    assert {int(j) for j in gpu_store_jobs} == set(gpu_ds.metric_slurm_job.values.ravel())

    # what each run submitted (sacct): the GPU run only GPU-pool jobs in gpus, the CPU run only
    # CPU-pool jobs in batch, and few of them: one cluster serves all generations of a run
    gpu_jobs = accounted(gpu_dir, expect=gpu_store_jobs)
    cpu_jobs = accounted(cpu_dir, expect=cpu_store_jobs)
    assert gpu_store_jobs <= set(gpu_jobs) and cpu_store_jobs <= set(cpu_jobs)
    assert {(j["name"], j["partition"]) for j in gpu_jobs.values()} == {("l2lflow-gpu", "gpus")}
    assert {(j["name"], j["partition"]) for j in cpu_jobs.values()} == {("l2lflow-cpu", "batch")}
    assert len(cpu_jobs) <= 2 and len(gpu_jobs) == 1, (cpu_jobs, gpu_jobs)

    # success: nothing of either run is left in the queue or on this host
    gone = max(wait_queue_empty(workdir) for workdir, _ in runs.values())
    wait_no_processes(tag)
    print(
        f"\nGPU run (2 gen) and CPU run (3 gen) side by side in {elapsed:.1f} s: GPU jobs "
        f"{sorted(gpu_jobs)} (gpus), CPU jobs {sorted(cpu_jobs)} (batch); queue empty "
        f"{gone:.1f} s after both returned"
    )


def test_scancel_of_a_worker_job_mid_generation(slurm, tmp_path: Path) -> None:
    """A worker job cancelled while it evaluates: the run completes, each individual once."""
    tag = f"slurm-{uuid.uuid4().hex}"
    counter = tmp_path / "count"
    counter.mkdir()
    pop = 8
    cfg = write_config(
        tmp_path,
        name="cancel",
        generations=2,
        population_size=pop,
        optimizee={
            "name": "test.counting",
            "options": {"counter_dir": str(counter), "sleep_s": 1.0},
        },
        evaluation={"retries": 1, "timeout_s": 60},
    )
    proc = subprocess.Popen(
        profile_cmd(tmp_path, cfg),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=tagged_env(tag),
        cwd=tmp_path,
    )
    try:
        # generation 1 under way (chunks of one individual by then) on two running worker jobs
        wait_for(
            lambda: (
                any(k.startswith("g1_") for k in counts(counter))
                and list(queued(tmp_path).values()).count("RUNNING") == 2
            ),
            timeout=150,
            what="generation 1 on two running worker jobs",
        )
        victim = min(queued(tmp_path))
        started_before = sum(counts(counter).values())
        subprocess.run(["scancel", victim], check=True, timeout=30)
        out, _ = proc.communicate(timeout=200)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out

    ds = l2lflow.open_results(tmp_path / "results" / "cancel").load()
    assert (ds.status.values == DONE).all(), ds.error.values
    n = counts(counter)
    assert sorted(n) == sorted(f"g{g}_i{i}" for g in range(2) for i in range(pop))
    repeated = {k: v - 1 for k, v in n.items() if v > 1}
    # only what ran on the cancelled job at that moment (one chunk of one individual) is redone
    assert sum(repeated.values()) <= 2, repeated
    assert all(k.startswith("g1_") for k in repeated), repeated
    assert (ds.attempts.values <= 2).all()
    sacct = accounted(tmp_path, expect={victim})
    assert sacct[victim]["state"].startswith("CANCELLED"), sacct
    # the victim's evaluations before the cancel stay attributed to it; the rest ran elsewhere
    after = {job for g, _, job, _ in where_evaluated(tmp_path / "results" / "cancel") if g == 1}
    assert after - {victim}, "generation 1 finished on another job"
    wait_queue_empty(tmp_path)
    wait_no_processes(tag)
    print(
        f"\nscancel {victim} after {started_before} evaluations started: repeated {repeated}, "
        f"jobs {sorted(sacct)} ({', '.join(j['state'] for j in sacct.values())})"
    )


SHAPE_SHIFTER = '''
"""Returns an array whose shape changes from generation 0 to 1: the store refuses that."""
import numpy as np


def shape_shifter(params, seed, *, context):
    trace = np.zeros(2 + context.generation)
    return {"fitness": float(params["a"] ** 2 + params["b"] ** 2), "trace": trace}
'''


def test_failed_run_leaves_no_job(slurm, tmp_path: Path) -> None:
    """A run that fails in generation 1 (after jobs ran in 0): Snakemake fails, the queue empties."""
    tag = f"slurm-{uuid.uuid4().hex}"
    (tmp_path / "shifty.py").write_text(textwrap.dedent(SHAPE_SHIFTER))
    cfg = write_config(
        tmp_path,
        name="fail",
        generations=3,
        population_size=6,
        optimizee={"name": "shifty:shape_shifter"},
    )
    # the user's module is found by the engine and, through the exported environment, by the
    # worker jobs
    proc = run_profile(tmp_path, cfg, tag, check=False, PYTHONPATH=str(tmp_path))
    assert proc.returncode != 0
    assert "fixed shape" in proc.stdout + proc.stderr, proc.stderr[-3000:]
    ds = l2lflow.open_results(tmp_path / "results" / "fail").load()
    assert (ds.status.values[0] == DONE).all()  # generation 0 ran in Slurm jobs ...
    assert {part for g, _, _, part in where_evaluated(tmp_path / "results" / "fail") if g == 0} == {
        "batch"
    }
    gone = wait_queue_empty(tmp_path)  # ... which the failure took down with the engine
    wait_no_processes(tag)
    print(f"\nfailed run: queue empty {gone:.1f} s after snakemake returned")


@pytest.mark.parametrize(
    "victims",
    [
        "everything",
        pytest.param("snakemake", marks=pytest.mark.slow),
        pytest.param("hung", marks=pytest.mark.slow),
        pytest.param("ctrl-c", marks=pytest.mark.slow),
    ],
)
def test_killed_orchestrator_leaves_no_job(slurm, tmp_path: Path, victims: str) -> None:
    """Mid-evaluate, SIGKILL Snakemake and the engine (``everything``: the scheduler dies with the
    engine, the workers notice within their death timeout), SIGKILL Snakemake only (the engine
    sees its client gone and stops its pools), send SIGINT to Snakemake's process group as a
    terminal's Ctrl-C does (``ctrl-c``: the same for the engine, but Snakemake exits by itself),
    or freeze Snakemake with SIGSTOP (``hung``: the engine finishes the step, the idle workers
    are released after the pool's ``adapt_wait``, and the engine stops after
    ``execution.idle_timeout_s`` without requests).
    No job outlives the idle timeout, and a rerun finishes with only in-flight work repeated."""
    tag = f"slurm-{uuid.uuid4().hex}"
    counter = tmp_path / "count"
    counter.mkdir()
    idle_timeout = 15
    cfg = write_config(
        tmp_path,
        name="kill",
        generations=2,
        population_size=6,
        optimizee={
            "name": "test.counting",
            "options": {"counter_dir": str(counter), "sleep_s": 1.0},
        },
        execution={"idle_timeout_s": idle_timeout},
    )
    results = tmp_path / "results" / "kill"
    proc = subprocess.Popen(
        profile_cmd(tmp_path, cfg),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=tagged_env(tag),
        cwd=tmp_path,
        start_new_session=True,
    )
    try:
        wait_for(
            lambda: (
                any(k.startswith("g1_") for k in counts(counter))
                and "RUNNING" in queued(tmp_path).values()
            ),
            timeout=150,
            what="generation 1 evaluating in a running job",
        )
        engine = engine_pid(results)
        assert engine is not None
        if victims == "hung":
            os.killpg(proc.pid, signal.SIGSTOP)  # Snakemake and its step's client, frozen
            gone = wait_queue_empty(tmp_path, timeout=idle_timeout + GONE_TIMEOUT_S)
            wait_for(lambda: not _alive(engine), timeout=GONE_TIMEOUT_S, what="engine stops")
            os.killpg(proc.pid, signal.SIGKILL)
        elif victims == "ctrl-c":
            os.killpg(proc.pid, signal.SIGINT)
            assert proc.wait(timeout=60) != 0
        else:
            os.killpg(proc.pid, signal.SIGKILL)  # Snakemake and its step's client
            if victims == "everything":
                os.kill(engine, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    killed_at = sum(counts(counter).values())
    if victims != "hung":
        gone = wait_queue_empty(tmp_path, timeout=idle_timeout + GONE_TIMEOUT_S)
    wait_no_processes(tag)

    run_profile(tmp_path, cfg, tag, "--unlock")
    run_profile(tmp_path, cfg, tag)
    ds = l2lflow.open_results(results).load()
    assert (ds.status.values == DONE).all()
    n = counts(counter)
    assert len(n) == 2 * 6
    repeated = {k: v - 1 for k, v in n.items() if v > 1}
    # in flight at the kill: at most 2 chunks per worker, 2 workers, chunks of 1 individual by
    # now; a hung Snakemake loses nothing (the engine finished and stored the generation)
    assert all(k.startswith("g1_") for k in repeated) and sum(repeated.values()) <= 4, repeated
    if victims == "hung":
        assert not repeated
    assert {part for *_, part in where_evaluated(results)} == {"batch"}
    wait_queue_empty(tmp_path)
    wait_no_processes(tag)
    print(
        f"\n{victims}: queue empty {gone:.1f} s after the kill/stop ({killed_at} evaluations "
        f"started by then); rerun repeated {sum(repeated.values())}"
    )


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_bytes().rsplit(b")", 1)[-1].split()[0] != b"Z"


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-v", "-s"]))
