"""The schema of a Slurm pool spec (``execution.pools.<name>``): its keys and defaults
(:func:`pool_defaults`), how a spec is resolved and checked (:func:`resolve_pool`), what must hold
on the login node (:func:`check_environment`), and the scheduler's options.

Nothing here imports dask-jobqueue, so a config can be checked without it (and from any thread).
"""

from __future__ import annotations

import copy
import os
import re
from typing import Any

import dask
from dask.utils import parse_bytes, parse_timedelta

from l2lflow.execution.core import dashboard_address


def pool_defaults() -> dict[str, Any]:
    """Defaults of every pool key; a pool spec only needs the keys it changes.

    ``processes: None`` means one worker per core for CPU pools and one per GPU for GPU pools.
    ``shared_temp_directory`` must be readable on the compute nodes (the home directory is shared on
    HPC systems); the TLS credential files of the workers go there.
    """
    return {
        "partition": None,  # Slurm partition (-p); None = the site's default partition
        "account": None,  # Slurm account/budget (-A); "${L2LFLOW_ACCOUNT}" is expanded here
        "cores": 1,  # CPUs per job (--cpus-per-task)
        "processes": None,  # worker processes per job (None: cores, or gpus_per_job)
        "memory": "2GB",  # memory per job; each worker gets memory / processes as its limit
        "job_mem": None,  # Slurm --mem if it must differ from memory (None: from memory)
        "walltime": "01:00:00",  # Slurm -t, [D-]HH:MM:SS
        "gpus_per_job": 0,  # GPUs per job; > 0 makes this a GPU pool (one worker per GPU)
        "job_extra_directives": [],  # more #SBATCH lines, e.g. ["--gres=gpu:4"]
        "job_directives_skip": [],  # drop generated #SBATCH lines containing these, e.g. ["--mem"]
        "prologue": [],  # shell lines run before the workers (module load, venv activation)
        "interface": None,  # network interface of scheduler and workers (ib0 on JUWELS)
        "min_jobs": 0,  # adaptive lower bound (jobs, not workers)
        "max_jobs": 1,  # adaptive upper bound
        "adapt_wait": 300,  # s an idle worker is kept before adaptive scaling releases it
        "lifetime": None,  # worker --lifetime, e.g. "55m" for a 1 h walltime
        "lifetime_stagger": "2m",  # worker --lifetime-stagger (lifetime +/- this)
        "idle_timeout": 3600,  # s without task activity before the scheduler closes itself
        "death_timeout": 60,  # s a worker waits for an unreachable scheduler before exiting
        "local_directory": None,  # worker spill directory; "$TMPDIR" is expanded on the node
        "log_directory": None,  # Slurm -o/-e directory for the worker jobs
        "shared_temp_directory": "~/.cache/l2lflow/dask-tls",  # TLS files for the workers
        "python": None,  # interpreter on the nodes (None: the engine's sys.executable)
        "dashboard_address": None,  # off; execution.dashboard sets it (127.0.0.1 only)
        "resources": {},  # extra worker resources; GPU pools always advertise GPU=1
        "worker_extra_args": [],  # more `dask worker` arguments
        "scheduler_options": {},  # more distributed.Scheduler keyword arguments
        "use_dask_config": False,  # start from dask.config "jobqueue.slurm" instead of defaults
    }


# dask-jobqueue config key -> pool key (for use_dask_config); job-cpu wins over cores below
_FROM_DASK_CONFIG = {
    "queue": "partition",
    "account": "account",
    "cores": "cores",
    "job-cpu": "cores",
    "memory": "memory",
    "job-mem": "job_mem",
    "processes": "processes",
    "walltime": "walltime",
    "job-extra": "job_extra_directives",
    "job-extra-directives": "job_extra_directives",
    "job-directives-skip": "job_directives_skip",
    "env-extra": "prologue",
    "job-script-prologue": "prologue",
    "interface": "interface",
    "local-directory": "local_directory",
    "log-directory": "log_directory",
    "shared-temp-directory": "shared_temp_directory",
    "python": "python",
    "death-timeout": "death_timeout",
    "worker-extra-args": "worker_extra_args",
    "scheduler-options": "scheduler_options",
}


def _dask_config_pool() -> dict[str, Any]:
    """The user's ``jobqueue.slurm`` dask config as pool keys (unset/empty entries skipped)."""
    cfg = dask.config.get("jobqueue.slurm", default={}) or {}
    pool: dict[str, Any] = {}
    for key, target in _FROM_DASK_CONFIG.items():  # later keys (non-deprecated) win
        value = cfg.get(key)
        if value is None or value == [] or value == {}:
            continue
        pool[target] = copy.deepcopy(value)
    return pool


_WALLTIME = re.compile(r"^(?:(\d+)-)?(\d+):(\d\d):(\d\d)$")


def _walltime_seconds(walltime: str) -> int:
    m = _WALLTIME.match(str(walltime))
    if not m:
        raise ValueError(f"walltime must be [D-]HH:MM:SS, got {walltime!r}")
    d, h, mi, s = (int(g or 0) for g in m.groups())
    return ((d * 24 + h) * 60 + mi) * 60 + s


def _expand(value: str | None, key: str) -> str | None:
    """Expand ``~`` and ``$VARS`` of login-node values; an unset variable is an error, not '-A $X'."""
    if value is None:
        return None
    out = os.path.expanduser(os.path.expandvars(str(value)))
    if "$" in out:
        raise ValueError(
            f"pool key {key!r}: {value!r} names an unset environment variable "
            f"(e.g. export L2LFLOW_ACCOUNT=<your budget> before starting the engine)"
        )
    return out


#: pool keys whose ``~`` and ``$VARS`` are expanded on the login node
_EXPANDED = ("partition", "account", "log_directory", "shared_temp_directory", "python")


def resolve_pool(pool: dict[str, Any], *, expand_env: bool = True) -> dict[str, Any]:
    """Fill in defaults (or the dask config), check the values, and settle derived ones.

    Raises ``ValueError`` on unknown keys (typos would otherwise be silently ignored) and on
    combinations Slurm or Dask would only reject later, on the compute node. ``expand_env=False``
    leaves ``~`` and ``$VARS`` as they are (checking a config away from the login node, where
    ``L2LFLOW_ACCOUNT`` need not be set).
    """
    defaults = pool_defaults()
    unknown = set(pool) - set(defaults)
    if unknown:
        raise ValueError(f"unknown pool keys {sorted(unknown)}; known: {sorted(defaults)}")
    p = defaults
    if pool.get("use_dask_config"):
        dask_pool = _dask_config_pool()
        extra_sched = dask_pool.pop("scheduler_options", {})
        p.update(dask_pool)
        p["scheduler_options"] = {**extra_sched, **(pool.get("scheduler_options") or {})}
    p.update({k: copy.deepcopy(v) for k, v in pool.items() if k != "scheduler_options"})
    p["scheduler_options"] = {**p["scheduler_options"], **(pool.get("scheduler_options") or {})}
    for key in ("job_extra_directives", "job_directives_skip", "prologue", "worker_extra_args"):
        p[key] = list(p[key] or [])
    p["resources"] = dict(p["resources"] or {})

    gpus = int(p["gpus_per_job"] or 0)
    cores = int(p["cores"])
    if gpus < 0 or cores < 1:
        raise ValueError(f"need cores >= 1 and gpus_per_job >= 0, got {cores=}, {gpus=}")
    processes = p["processes"]
    if processes is None:
        processes = gpus or cores
    processes = int(processes)
    if gpus and processes != gpus:
        raise ValueError(f"a GPU pool runs one worker per GPU: processes={processes} != {gpus=}")
    if not 1 <= processes <= cores:
        raise ValueError(f"need 1 <= processes <= cores, got {processes=}, {cores=}")
    p.update(gpus_per_job=gpus, cores=cores, processes=processes)
    parse_bytes(p["memory"])  # raises on nonsense
    if int(p["min_jobs"]) > int(p["max_jobs"]) or int(p["min_jobs"]) < 0:
        raise ValueError(f"need 0 <= min_jobs <= max_jobs, got {p['min_jobs']}, {p['max_jobs']}")

    wall = _walltime_seconds(p["walltime"])
    if p["lifetime"]:
        life = parse_timedelta(p["lifetime"])
        stagger = parse_timedelta(p["lifetime_stagger"] or 0)
        if life + stagger >= wall:
            raise ValueError(
                f"lifetime {p['lifetime']} + stagger {p['lifetime_stagger']} must end before the "
                f"walltime {p['walltime']}, or Slurm kills workers before they retire"
            )
    p["dashboard_address"] = dashboard_address(p["dashboard_address"])  # 127.0.0.1 only
    if expand_env:
        for key in _EXPANDED:
            p[key] = _expand(p[key], key)
    return p


def check_environment(pool: dict[str, Any]) -> None:
    """Raise ``ValueError`` if a pool cannot start on this machine: a value names an unset
    environment variable (the account), or ``interface`` is not one of this machine's network
    interfaces (the scheduler binds it here; Dask's own error came only from the first evaluate
    step: "Cluster failed to start: 'ib0' is not a valid network interface").

    An ``interface`` message starts with ``interface: `` so that callers can name the key.
    """
    for key in _EXPANDED:
        if isinstance(pool.get(key), str):
            _expand(pool[key], key)
    interface = pool.get("interface")
    if interface:
        import psutil

        names = sorted(psutil.net_if_addrs())
        if interface not in names:
            raise ValueError(
                f"interface: {interface!r} is not a network interface of this machine (it has: "
                f"{', '.join(names)}); run where it exists (ib0: the JUWELS login nodes), or set "
                "interface to one of these (null: Dask's default)"
            )


def scheduler_options(p: dict[str, Any]) -> dict[str, Any]:
    """``distributed.Scheduler`` keyword arguments of a resolved pool (dashboard, idle timeout)."""
    opts: dict[str, Any] = {
        "dashboard_address": p["dashboard_address"],
        "dashboard": p["dashboard_address"] is not None,
    }
    if p["idle_timeout"]:
        opts["idle_timeout"] = p["idle_timeout"]
    opts.update(p["scheduler_options"])
    return opts
