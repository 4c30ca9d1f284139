"""Job scripts of the Slurm worker pools, generated without Slurm (default suite).

They check what a site would reject or, worse, silently run wrong: partition, account, GPUs,
time, prologue, one single-threaded worker per process, one pinned worker per GPU, TLS.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import dask
import pytest
import yaml
from dask.utils import parse_bytes
from distributed.security import Security

from l2lflow.execution.slurm import job_script, slurm_cluster
from l2lflow.execution.slurm_pool import pool_defaults, resolve_pool, scheduler_options

PROFILES = Path(__file__).resolve().parents[1] / "profiles"


def pools(profile: str) -> dict:
    return yaml.safe_load((PROFILES / profile / "execution.yaml").read_text())["execution"]["pools"]


@pytest.fixture(autouse=True)
def budget(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("L2LFLOW_ACCOUNT", "jinb33")
    return "jinb33"


def worker_lines(script: str) -> list[str]:
    return [line for line in script.splitlines() if "distributed.cli.dask_worker" in line]


def memory_limit(line: str) -> float:
    return parse_bytes(re.search(r"--memory-limit (\S+)", line).group(1))


def assert_tls(script: str) -> None:
    for line in worker_lines(script):
        assert " tls://" in line and "--protocol tls://" in line
        for flag in ("--tls-ca-file", "--tls-cert", "--tls-key"):
            assert re.search(rf"{flag} /\S+", line), flag


def test_workers_profile_themselves_only_for_a_dashboard() -> None:
    """Without a dashboard a worker job switches off Dask's 10-ms stack sampling (nobody reads
    it, and it competes with the simulations on the node)."""
    line = "export DASK_DISTRIBUTED__WORKER__PROFILE__ENABLED=False"
    cpu = pools("juwels")["cpu"]
    assert line in job_script(cpu, "cpu", Security.temporary()).splitlines()
    with_dashboard = {**cpu, "dashboard_address": "127.0.0.1:0"}
    assert line not in job_script(with_dashboard, "cpu", Security.temporary()).splitlines()


def test_worker_jobs_check_their_event_loop_and_memory_once_a_second() -> None:
    """Every worker job slows Dask's 20-ms event-loop check and 100-ms memory check to 1 s (each
    wake-up preempts a simulation on a node whose cores all simulate), unless the user's
    prologue set them."""
    cpu = pools("juwels")["cpu"]
    tick = "DASK_DISTRIBUTED__ADMIN__TICK__INTERVAL"
    memory = "DASK_DISTRIBUTED__WORKER__MEMORY__MONITOR_INTERVAL"

    def exported(pool: dict) -> list[str]:
        """What the job script's exports give the worker for both settings (run by bash)."""
        lines = job_script(pool, "cpu", Security.temporary()).splitlines()
        exports = [line for line in lines if line.startswith("export ")]
        script = "\n".join([*exports, f"echo ${tick} ${memory}"])
        env = {k: v for k, v in os.environ.items() if k not in (tick, memory)}
        return subprocess.run(
            ["bash", "-c", script], capture_output=True, text=True, check=True, env=env
        ).stdout.split()

    assert exported(cpu) == ["1s", "1s"]
    mine = {**cpu, "prologue": [*cpu["prologue"], f"export {tick}=50ms"]}
    assert exported(mine) == ["50ms", "1s"]


def test_juwels_cpu_pool() -> None:
    script = job_script(pools("juwels")["cpu"], "cpu", Security.temporary())
    for line in (
        "#SBATCH -p batch",
        "#SBATCH -A jinb33",
        "#SBATCH --cpus-per-task=48",
        "#SBATCH -t 02:00:00",
        "module load Stages/2025 GCC Python",
        'source "${L2LFLOW_VENV:-$VIRTUAL_ENV}/bin/activate"',
        "export OMP_NUM_THREADS=2",
    ):
        assert line in script.splitlines(), line
    assert "#SBATCH --mem" not in script  # whole nodes: skipped
    (line,) = worker_lines(script)
    assert "--nworkers 24" in line and "--nthreads 1" in line
    assert "--interface ib0" in line
    assert "--lifetime 110m --lifetime-stagger 4m" in line
    assert memory_limit(line) == pytest.approx(80e9 / 24, rel=0.01)
    # a CPU pool carries no GPU resource and pins nothing
    assert "GPU" not in script and "CUDA_VISIBLE_DEVICES" not in script and "gres" not in script
    assert_tls(script)


def check_gpu_pool(script: str, name: str, gpus: int, per_worker_bytes: float) -> None:
    lines = worker_lines(script)
    assert len(lines) == gpus
    for i, line in enumerate(lines):
        assert line.startswith(f"CUDA_VISIBLE_DEVICES=${{L2L_GPUS[{i}]}} ")
        assert line.endswith(" &")
        assert f"--name {name}-0-{i} " in line
        assert "--nthreads 1" in line and "--nworkers" not in line
        assert "--resources GPU=1" in line
        assert memory_limit(line) == pytest.approx(per_worker_bytes, rel=0.01)
    assert script.rstrip().splitlines()[-2:] == [
        "wait",
        "wait  # again, if a signal interrupted the first one",
    ]
    assert_tls(script)


def test_juwels_gpu_pool() -> None:
    script = job_script(pools("juwels")["gpu"], "gpu", Security.temporary())
    header = script.splitlines()
    for line in ("#SBATCH -p gpus", "#SBATCH -A jinb33", "#SBATCH --gres=gpu:4"):
        assert line in header, line
    assert "#SBATCH --cpus-per-task=40" in header and "#SBATCH -t 02:00:00" in header
    assert "module load Stages/2025 GCC Python" in header
    assert "export OMP_NUM_THREADS=10" in header
    check_gpu_pool(script, "gpu", 4, 160e9 / 4)


def test_juwels_booster_pools() -> None:
    booster = pools("juwels-booster")
    script = job_script(booster["gpu"], "gpu", Security.temporary())
    header = script.splitlines()
    for line in (
        "#SBATCH -p booster",
        "#SBATCH -A jinb33",
        "#SBATCH --gres=gpu:4",
        "#SBATCH --cpus-per-task=48",
        "#SBATCH -t 04:00:00",
        "module load Stages/2025 GCC Python",
        "export OMP_NUM_THREADS=12",
    ):
        assert line in header, line
    assert "#SBATCH --mem" not in script
    check_gpu_pool(script, "gpu", 4, 100e9)
    cpu = job_script(booster["cpu"], "cpu", Security.temporary())
    assert "--nworkers 48" in cpu and "GPU" not in cpu and "gres" not in cpu


def test_pinning_shell_logic(tmp_path: Path) -> None:
    """Run the generated launcher with a fake interpreter that prints its GPU and its name."""
    fake = tmp_path / "fake-python"
    fake.write_text('#!/bin/sh\necho "gpu=$CUDA_VISIBLE_DEVICES name=$5"\n')
    fake.chmod(0o755)
    script = tmp_path / "job.sh"
    script.write_text(job_script({"cores": 2, "gpus_per_job": 2, "python": str(fake)}, "g"))

    def run(visible: str | None) -> tuple[list[str], str]:
        env = {k: v for k, v in os.environ.items() if k != "CUDA_VISIBLE_DEVICES"}
        if visible is not None:
            env["CUDA_VISIBLE_DEVICES"] = visible
        out = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True)
        assert out.returncode == 0, out.stderr
        return sorted(out.stdout.split("\n"))[1:], out.stderr

    # the i-th GPU Slurm granted, not the index i (shared nodes without device cgroups)
    assert run("5,7")[0] == ["gpu=5 name=g-0-0", "gpu=7 name=g-0-1"]
    assert run(None)[0] == ["gpu=0 name=g-0-0", "gpu=1 name=g-0-1"]
    lines, err = run("3")  # fewer than asked for: said loudly, then 0..N-1
    assert lines == ["gpu=0 name=g-0-0", "gpu=1 name=g-0-1"] and "need 2" in err


def test_one_gpu_job_keeps_the_plain_worker_name() -> None:
    (line,) = worker_lines(job_script({"gpus_per_job": 1}, "gpu"))
    assert "--name gpu-0 " in line and "--resources GPU=1" in line
    assert "#SBATCH --gres=gpu:1" in job_script({"gpus_per_job": 1}, "gpu")


def test_without_security_the_script_is_plain_tcp() -> None:
    script = job_script({}, "cpu")
    assert " tcp://" in script and "--tls-" not in script and "tls://" not in script


def test_local_slurm_profile() -> None:
    local = pools("local-slurm")
    cpu = job_script(local["cpu"], "cpu", Security.temporary())
    assert "#SBATCH -p batch" in cpu and "#SBATCH -A ci" in cpu and "--interface lo" in cpu
    assert "GPU" not in cpu
    gpu = job_script(local["gpu"], "gpu", Security.temporary())
    assert "#SBATCH -p gpus" in gpu and "#SBATCH --gres=gpu:1" in gpu
    check_gpu_pool(gpu.replace("--name gpu-0 ", "--name gpu-0-0 "), "gpu", 1, 1e9)


@pytest.mark.parametrize("profile", ["juwels", "juwels-booster", "slurm", "local-slurm"])
def test_every_profile_pool_resolves(profile: str) -> None:
    for name, pool in pools(profile).items():
        p = resolve_pool(pool)
        assert p["cores"] % p["processes"] == 0, name
        assert (p["gpus_per_job"] > 0) == (name == "gpu")


def test_scheduler_options_idle_timeout_and_local_dashboard() -> None:
    opts = scheduler_options(resolve_pool({"idle_timeout": 20}))
    assert opts["idle_timeout"] == 20
    assert opts["dashboard_address"] is None and opts["dashboard"] is False  # off by default
    opts = scheduler_options(resolve_pool({"dashboard_address": 8787}))
    assert opts["dashboard_address"] == "127.0.0.1:8787" and opts["dashboard"] is True
    with pytest.raises(ValueError, match="127.0.0.1 only"):
        resolve_pool({"dashboard_address": "0.0.0.0:8787"})
    assert "idle_timeout" not in scheduler_options(resolve_pool({"idle_timeout": None}))


def test_pool_from_dask_jobqueue_config() -> None:
    user = {
        "queue": "dq",
        "account": "acc",
        "cores": 4,
        "memory": "8GB",
        "walltime": "03:00:00",
        "job-script-prologue": ["module load X"],
        "interface": "ib0",
    }
    with dask.config.set({f"jobqueue.slurm.{k}": v for k, v in user.items()}):
        script = job_script({"use_dask_config": True, "walltime": "00:30:00"}, "cpu")
    header = script.splitlines()
    for line in ("#SBATCH -p dq", "#SBATCH -A acc", "#SBATCH --cpus-per-task=4"):
        assert line in header, line
    assert "#SBATCH -t 00:30:00" in header  # given keys win over the dask config
    assert "module load X" in header and "--interface ib0" in script
    assert "--nworkers 4" in script and "--nthreads 1" in script
    # without the flag the dask config is ignored
    with dask.config.set({f"jobqueue.slurm.{k}": v for k, v in user.items()}):
        assert "#SBATCH -p dq" not in job_script({}, "cpu")


@pytest.mark.parametrize(
    "pool, message",
    [
        ({"partiton": "batch"}, "unknown pool keys"),
        ({"gpus_per_job": 4, "processes": 2, "cores": 4}, "one worker per GPU"),
        ({"cores": 2, "processes": 4}, "processes <= cores"),
        ({"walltime": "01:00:00", "lifetime": "58m", "lifetime_stagger": "4m"}, "before the"),
        ({"walltime": "60"}, "HH:MM:SS"),
        ({"account": "${L2LFLOW_NO_SUCH_VARIABLE}"}, "unset environment variable"),
        ({"min_jobs": 3, "max_jobs": 1}, "min_jobs"),
    ],
)
def test_bad_pools_are_refused_before_submitting(pool: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        resolve_pool(pool)


def test_no_cluster_without_tls() -> None:
    with pytest.raises(ValueError, match="TLS"):
        slurm_cluster({}, name="cpu", security=None)


def test_defaults_cover_the_documented_keys() -> None:
    documented = {
        "partition", "account", "cores", "processes", "memory", "walltime", "gpus_per_job",
        "job_extra_directives", "prologue", "interface", "min_jobs", "max_jobs", "lifetime",
        "idle_timeout", "local_directory", "log_directory", "python", "dashboard_address",
        "use_dask_config",
    }  # fmt: skip
    assert documented <= set(pool_defaults())


def _slurm_config(pool: dict) -> dict:
    return {
        "name": "t",
        "seed": 1,
        "generations": 1,
        "population_size": 2,
        "optimizer": {"name": "random"},
        "optimizee": {"name": "sphere"},
        "space": {"a": {"low": -1.0, "high": 1.0}},
        "execution": {"backend": "slurm", "pools": {"cpu": pool}},
    }


@pytest.mark.parametrize(
    "pool, message",
    [
        ({"partiton": "batch"}, "unknown pool keys ['partiton']"),
        ({"cores": 2, "processes": 4}, "processes <= cores"),
        ({"walltime": "60"}, "HH:MM:SS"),
        ({"memory": "lots"}, "lots"),
        ({"min_jobs": 3, "max_jobs": 1}, "min_jobs"),
    ],
)
def test_bad_pools_are_one_line_config_errors(pool: dict, message: str) -> None:
    """Config validation resolves the pools: the key path, what is wrong, one line."""
    from l2lflow.config import ConfigError, validate_config

    with pytest.raises(ConfigError) as err:
        validate_config(_slurm_config(pool))
    text = str(err.value)
    assert text.startswith("execution.pools.cpu: ") and message in text and "\n" not in text
    with pytest.raises(ConfigError, match=r"^execution\.pools\.cpu: "):
        slurm_cluster(pool, name="cpu", security=True)  # the engine's path: nothing submitted


def test_unset_account_is_refused_where_the_run_starts(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """``${L2LFLOW_ACCOUNT}`` unset: a config check elsewhere passes, Snakemake refuses at once."""
    from l2lflow.config import ConfigError, validate_config
    from l2lflow.workflow import experiment_config

    monkeypatch.delenv("L2LFLOW_ACCOUNT", raising=False)
    config = _slurm_config({"account": "${L2LFLOW_ACCOUNT}"})
    assert validate_config(config)["execution"]["pools"]["cpu"]["account"] == "${L2LFLOW_ACCOUNT}"
    with pytest.raises(ConfigError, match=r"^execution\.pools\.cpu: .*L2LFLOW_ACCOUNT"):
        experiment_config(config, tmp_path / "unused.yaml", [])
    with pytest.raises(ConfigError, match="unset environment variable"):
        slurm_cluster({"account": "${L2LFLOW_ACCOUNT}"}, name="cpu", security=True)

    # the whole command: one line, exit != 0, nothing written
    cfg = tmp_path / "t.yaml"
    cfg.write_text(yaml.safe_dump({**_slurm_config({}), "results": str(tmp_path / "results")}))
    repo = PROFILES.parent
    out = subprocess.run(
        [sys.executable, "-m", "snakemake", "-s", str(repo / "Snakefile"), "--directory",
         str(tmp_path), "--profile", str(PROFILES / "juwels"), "--configfile", str(cfg), "-n"],
        capture_output=True,
        text=True,
        timeout=120,
        env={k: v for k, v in os.environ.items() if k != "L2LFLOW_ACCOUNT"},
    )  # fmt: skip
    assert out.returncode != 0
    output = out.stdout + out.stderr  # Snakemake prints a workflow error on stdout
    lines = [line for line in output.splitlines() if line.startswith("l2lflow: ")]
    assert lines == [
        "l2lflow: execution.pools.cpu: pool key 'account': '${L2LFLOW_ACCOUNT}' names an unset "
        "environment variable (e.g. export L2LFLOW_ACCOUNT=<your budget> before starting the "
        "engine)"
    ], output
    assert not (tmp_path / "results").exists()


def test_importing_the_slurm_backend_keeps_the_processs_sigint_handler() -> None:
    """dask_jobqueue sets ``SIGINT -> sys.exit()`` when imported; the backend puts the handler
    back at once (main thread), refuses a first import from another thread in one line (that
    thread could not set a handler), and checking a pool spec imports no dask_jobqueue at all."""
    script = """
import signal, sys, threading
from l2lflow.execution.slurm_pool import resolve_pool
resolve_pool({"cores": 2})
assert "dask_jobqueue" not in sys.modules, "checking a pool imported dask_jobqueue"
errors = []
def other():
    try:
        import l2lflow.execution.slurm
    except RuntimeError as exc:
        errors.append(str(exc))
thread = threading.Thread(target=other)
thread.start()
thread.join()
print("THREAD", errors)
mine = lambda *_: None
signal.signal(signal.SIGINT, mine)
import l2lflow.execution.slurm
print("KEPT", signal.getsignal(signal.SIGINT) is mine)
"""
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True
    ).stdout
    assert "KEPT True" in out, out
    assert "must first be imported from the main thread" in out, out
