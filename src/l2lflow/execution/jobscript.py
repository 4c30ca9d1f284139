"""The job scripts of a Slurm pool: the keyword arguments of dask-jobqueue's job class for a
resolved pool spec, and the text surgery that turns one ``dask worker --nworkers N`` line into
N workers pinned to one GPU each.

Why the surgery: ``dask worker --nworkers N`` cannot give each process its own environment, and a
GPU pool runs one single-process worker per GPU with its own ``CUDA_VISIBLE_DEVICES``.
"""

from __future__ import annotations

import importlib.util
import re
import shlex
import sys
from pathlib import Path
from typing import Any

import dask
import yaml

from l2lflow.execution.core import NO_DASHBOARD_ENV, QUIET_LOOPS_ENV

#: dask-jobqueue config section of pools without ``use_dask_config``: the package's own defaults,
#: so that a user's ``jobqueue.slurm`` (e.g. a ``queue`` or ``account`` in ~/.config/dask) cannot
#: leak into a pool whose ``partition``/``account`` is null (dask-jobqueue reads the config for
#: every argument given as None).
_PRISTINE_SECTION = "l2lflow-slurm"


def config_name(p: dict[str, Any]) -> str:
    if p["use_dask_config"]:
        return "slurm"
    if dask.config.get(f"jobqueue.{_PRISTINE_SECTION}", default=None) is None:
        # found, not imported: importing dask_jobqueue replaces the SIGINT handler (see slurm.py)
        package = importlib.util.find_spec("dask_jobqueue")
        assert package is not None and package.origin is not None, "dask-jobqueue is missing"
        shipped = Path(package.origin).with_name("jobqueue.yaml")
        defaults = yaml.safe_load(shipped.read_text())["jobqueue"]["slurm"]
        dask.config.update_defaults({"jobqueue": {_PRISTINE_SECTION: defaults}})
    return _PRISTINE_SECTION


def has_gpu_request(directives: list[str]) -> bool:
    return any(re.search(r"--(gres=\S*gpu|gpus|gpus-per-\w+)\b", d) for d in directives)


def job_kwargs(p: dict[str, Any], name: str) -> dict[str, Any]:
    """Keyword arguments for the Job class (everything but the scheduler-side ones)."""
    threads = p["cores"] // p["processes"]
    resources = dict(p["resources"])
    if p["gpus_per_job"]:
        resources["GPU"] = 1
    args = list(p["worker_extra_args"])
    if resources:
        args += ["--resources", ",".join(f"{k}={v}" for k, v in sorted(resources.items()))]
    if p["lifetime"]:
        args += ["--lifetime", str(p["lifetime"])]
        if p["lifetime_stagger"]:
            args += ["--lifetime-stagger", str(p["lifetime_stagger"])]
    directives = list(p["job_extra_directives"])
    if p["gpus_per_job"] and not has_gpu_request(directives):
        directives.append(f"--gres=gpu:{p['gpus_per_job']}")
    prologue = list(p["prologue"]) + [
        f"export OMP_NUM_THREADS={threads}",
        f"export L2LFLOW_THREADS_PER_WORKER={threads}",
        f"export L2LFLOW_POOL={shlex.quote(name)}",
    ]
    # a value the user's prologue exported wins over ours
    prologue += [f"export {key}=${{{key}:-{value}}}" for key, value in QUIET_LOOPS_ENV.items()]
    if p.get("dashboard_address") is None:
        prologue += [f"export {key}={value}" for key, value in NO_DASHBOARD_ENV.items()]
    return {
        "queue": p["partition"],
        "account": p["account"],
        # cores = processes makes dask-jobqueue start every worker with --nthreads 1, while
        # job_cpu books all the CPUs of the job in Slurm
        "cores": p["processes"],
        "processes": p["processes"],
        "job_cpu": p["cores"],
        "memory": p["memory"],
        "job_mem": p["job_mem"],
        "walltime": p["walltime"],
        "job_extra_directives": directives,
        "job_directives_skip": list(p["job_directives_skip"]),
        "job_script_prologue": prologue,
        "local_directory": p["local_directory"],
        "log_directory": p["log_directory"],
        "python": p["python"] or sys.executable,
        "death_timeout": p["death_timeout"],
        "worker_extra_args": args,
        "job_name": f"l2lflow-{name}",
        "gpus_per_job": p["gpus_per_job"],
        "config_name": config_name(p),
    }


def pinned_command(command: str, name: str, gpus: int) -> str:
    """Turn dask-jobqueue's one ``dask worker --nworkers N`` line into N pinned workers.

    Worker names follow ``dask worker --nworkers``' scheme (``<name>-<i>`` when N > 1) because
    the cluster maps workers to jobs by name. Each process gets the i-th GPU Slurm granted
    (``CUDA_VISIBLE_DEVICES=0,1,2,3`` on a whole JUWELS node; on sites without device cgroups
    Slurm lists the real indices, so ``i`` itself could be another job's GPU).
    """
    tokens = command.split(" ")
    if "--nworkers" in tokens:
        i = tokens.index("--nworkers")
        del tokens[i : i + 2]
    i_name = tokens.index("--name") + 1
    default = ",".join(str(i) for i in range(gpus))
    lines = [
        "# one single-process Dask worker per GPU, each pinned to one GPU of this job",
        f'IFS=, read -r -a L2L_GPUS <<< "${{CUDA_VISIBLE_DEVICES:-{default}}}"',
        f"if [ ${{#L2L_GPUS[@]}} -lt {gpus} ]; then",
        f"  echo \"l2lflow: Slurm granted GPUs '$CUDA_VISIBLE_DEVICES', need {gpus};"
        f' using {default}" >&2',
        f"  IFS=, read -r -a L2L_GPUS <<< {default}",
        "fi",
        "trap 'kill -TERM $(jobs -p) 2>/dev/null' TERM INT",
    ]
    for g in range(gpus):
        tokens[i_name] = name if gpus == 1 else f"{name}-{g}"
        lines.append(f"CUDA_VISIBLE_DEVICES=${{L2L_GPUS[{g}]}} {' '.join(tokens)} &")
    lines += ["wait", "wait  # again, if a signal interrupted the first one"]
    return "\n".join(lines)
