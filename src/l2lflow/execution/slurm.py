"""Dask worker pools as Slurm jobs: a dask-jobqueue ``SLURMCluster`` built from one *pool spec*.

A pool spec is the experiment config's ``execution.pools.<name>`` dict (keys in
:func:`pool_defaults`). The engine on the login node owns one cluster (= one Dask scheduler, in the
engine's own process) per pool; the evaluations run in workers that dask-jobqueue submits as
Slurm jobs. Choices made here, and why:

- ``--nthreads 1`` for every worker: one NEST kernel per process (two threads in one worker give
  wrong rates). A job books ``cores`` CPUs and runs ``processes`` workers; each worker may use
  ``cores // processes`` OpenMP threads inside (exported as ``OMP_NUM_THREADS`` and
  ``L2LFLOW_THREADS_PER_WORKER``).
- GPU pools run one single-process worker per GPU, each with its own ``CUDA_VISIBLE_DEVICES`` and
  ``--resources GPU=1``. ``dask worker --nworkers N`` cannot give each process its own environment,
  so :class:`PinnedSLURMJob` rewrites the command into N background workers and a ``wait``.
- TLS always (:func:`slurm_cluster` refuses ``security=None``): a scheduler on a shared login node
  is reachable by every user there. dask-jobqueue 0.9.0 writes the in-memory throw-away
  credentials of ``Security.temporary()`` to ``.dask-jobqueue.worker.*`` files (mode 0600) in its
  ``shared_temp_directory`` and passes ``--tls-ca-file/--tls-cert/--tls-key <file>`` in the job
  script; the nodes must see that folder. Here it is a fresh owner-only folder per cluster under
  the pool's ``shared_temp_directory`` (home by default), removed on ``close()``; one left by a
  SIGKILLed engine is removed when the next cluster starts on that host.
- Walltime: ``lifetime`` (+ ``lifetime_stagger``) retires workers before Slurm kills them, and the
  adaptive scaler replaces them (for jobs of several workers only with the fix in
  :class:`L2LSLURMCluster`); ``adapt_wait`` keeps idle workers for a while so a generation loop
  does not requeue its jobs between generations (dask-jobqueue issue #701).
- An engine that dies: the scheduler lives in the engine process, so a SIGKILL takes it down and
  the workers exit on their own (lost scheduler; ``death_timeout`` if it never answered). An engine
  that hangs: ``idle_timeout`` closes the scheduler after that long without any task activity
  (Dask's ``distributed.scheduler.idle-timeout``; it counts tasks, not connected clients).
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import math
import os
import re
import shlex
import shutil
import signal
import socket
import sys
import tempfile
import types
from pathlib import Path
from typing import Any

import dask
import yaml
from dask.utils import parse_bytes, parse_timedelta
from distributed.security import Security


def _import_dask_jobqueue() -> None:
    """Import dask_jobqueue without its import-time ``signal.signal(SIGINT, ...)``.

    dask_jobqueue 0.9.0's ``runner`` module sets a SIGINT handler when imported (also by
    ``import dask_jobqueue``): outside the main thread that raises ``ValueError: signal only
    works in main thread`` (the engine starts pools from a request thread), and in the main
    thread it replaces the process's own Ctrl-C handling with ``sys.exit()``.
    """
    if "dask_jobqueue.runner" in sys.modules:
        return
    original = signal.signal
    signal.signal = lambda signum, handler: signal.getsignal(signum)  # type: ignore[assignment]
    try:
        import dask_jobqueue.runner  # noqa: F401
    finally:
        signal.signal = original


_import_dask_jobqueue()

from dask_jobqueue import SLURMCluster  # noqa: E402
from dask_jobqueue.core import JobQueueCluster  # noqa: E402
from dask_jobqueue.slurm import SLURMJob  # noqa: E402

__all__ = [
    "L2LSLURMCluster",
    "PinnedSLURMJob",
    "adapt",
    "check_environment",
    "job_script",
    "pool_defaults",
    "resolve_pool",
    "scheduler_options",
    "slurm_cluster",
]

#: Where the job script looks for a scheduler when none runs yet (job_script() only).
_PLACEHOLDER_HOST = "SCHEDULER-HOST:8786"  # no <>: the script stays runnable


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


#: dask-jobqueue config section of pools without ``use_dask_config``: the package's own defaults,
#: so that a user's ``jobqueue.slurm`` (e.g. a ``queue`` or ``account`` in ~/.config/dask) cannot
#: leak into a pool whose ``partition``/``account`` is null (dask-jobqueue reads the config for
#: every argument given as None).
_PRISTINE_SECTION = "l2lflow-slurm"


def _config_name(p: dict[str, Any]) -> str:
    if p["use_dask_config"]:
        return "slurm"
    if dask.config.get(f"jobqueue.{_PRISTINE_SECTION}", default=None) is None:
        import dask_jobqueue

        shipped = Path(dask_jobqueue.__file__).with_name("jobqueue.yaml")
        defaults = yaml.safe_load(shipped.read_text())["jobqueue"]["slurm"]
        dask.config.update_defaults({"jobqueue": {_PRISTINE_SECTION: defaults}})
    return _PRISTINE_SECTION


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
    from l2lflow.execution.core import dashboard_address

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


def _has_gpu_request(directives: list[str]) -> bool:
    return any(re.search(r"--(gres=\S*gpu|gpus|gpus-per-\w+)\b", d) for d in directives)


def _job_kwargs(p: dict[str, Any], name: str) -> dict[str, Any]:
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
    if p["gpus_per_job"] and not _has_gpu_request(directives):
        directives.append(f"--gres=gpu:{p['gpus_per_job']}")
    prologue = list(p["prologue"]) + [
        f"export OMP_NUM_THREADS={threads}",
        f"export L2LFLOW_THREADS_PER_WORKER={threads}",
        f"export L2LFLOW_POOL={shlex.quote(name)}",
    ]
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
        "config_name": _config_name(p),
    }


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


def _pinned_command(command: str, name: str, gpus: int) -> str:
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


class PinnedSLURMJob(SLURMJob):
    """``SLURMJob`` whose GPU jobs start one pinned single-process worker per GPU."""

    def __init__(self, *args: Any, gpus_per_job: int = 0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.gpus_per_job = gpus_per_job
        if gpus_per_job:
            self._command_template = _pinned_command(
                self._command_template, str(self.name), gpus_per_job
            )


class L2LSLURMCluster(SLURMCluster):
    """``SLURMCluster`` with :class:`PinnedSLURMJob` jobs, replacement of multi-worker jobs, and
    TLS files that live only as long as the cluster.

    ``credential_dir`` (a fresh private folder) receives dask-jobqueue's TLS files; it is removed
    on ``close()`` and when construction fails.
    """

    job_cls = PinnedSLURMJob

    def __init__(self, *args: Any, credential_dir: str | None = None, **kwargs: Any) -> None:
        self._credential_dir = credential_dir
        try:
            super().__init__(*args, shared_temp_directory=credential_dir, **kwargs)
        except BaseException:
            self._remove_credentials()
            raise

    def _remove_credentials(self) -> None:
        for key in ("ca_file", "cert", "key"):
            f = getattr(self, f"_job_{key}", None)
            if f is not None:
                with contextlib.suppress(OSError):
                    f.close()  # a NamedTemporaryFile: closing deletes it
        if self._credential_dir:
            shutil.rmtree(self._credential_dir, ignore_errors=True)

    async def _close(self) -> None:
        try:
            await super()._close()
        finally:
            self._remove_credentials()

    def _job_of(self, worker_name: str) -> str | None:
        """The job (``worker_spec`` key) a grouped worker ``<job>-<i>`` belongs to, if any."""
        for job, spec in self.worker_spec.items():
            if worker_name in {f"{job}{suffix}" for suffix in spec.get("group", ())}:
                return job
        return None

    def _update_worker_status(self, op: str, msg: Any) -> None:
        """Forget a multi-worker job once all its workers are gone, so adaptive replaces it.

        distributed's ``SpecCluster`` does this only for one-worker jobs: it looks the worker's
        name (``<job>-<i>``) up among the jobs, never finds it, and adaptive keeps counting the
        dead job (dask/distributed#9102, still open in 2026.8). Measured here: a ``processes=2``
        job whose workers reached ``--lifetime`` was never replaced.
        """
        if op == "remove":
            job = self._job_of(self.scheduler_info["workers"][msg]["name"])
            process = self.workers.get(job) if job is not None else None
            if process is not None:

                def forget() -> None:
                    # `is process`: by now adaptive may have started a new job of the same name
                    alive = self.scheduler_info["workers"].values()
                    if self.workers.get(job) is process and not any(
                        self._job_of(w["name"]) == job for w in alive
                    ):
                        self._futures.add(asyncio.ensure_future(process.close()))
                        del self.workers[job]

                delay = parse_timedelta(dask.config.get("distributed.deploy.lost-worker-timeout"))
                asyncio.get_running_loop().call_later(delay, forget)
        super()._update_worker_status(op, msg)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _credential_dir(base: str, name: str) -> str:
    """A fresh owner-only folder ``<base>/<host>-<pid>-<name>-<random>`` for one cluster's TLS files.

    Folders left by processes of this host that no longer run (an engine killed with SIGKILL
    cannot clean up) are removed first.
    """
    root = Path(base).expanduser().absolute()
    root.mkdir(parents=True, exist_ok=True, mode=0o700)
    root.chmod(0o700)
    host = socket.gethostname()
    for d in root.iterdir():
        m = re.fullmatch(rf"{re.escape(host)}-(\d+)-.*", d.name)
        if m and d.is_dir() and not _pid_alive(int(m.group(1))):
            shutil.rmtree(d, ignore_errors=True)
    safe = re.sub(r"[^A-Za-z0-9_.]", "_", name)
    return tempfile.mkdtemp(prefix=f"{host}-{os.getpid()}-{safe}-", dir=root)  # mode 0700


def slurm_cluster(
    pool: dict[str, Any],
    *,
    name: str,
    security: Security | bool,
    adaptive: bool = True,
) -> L2LSLURMCluster:
    """Start the scheduler of one pool (in this process) and, if ``adaptive``, its scaler.

    ``security`` is a ``distributed.security.Security`` (``Security.temporary()``) or ``True``
    for a fresh temporary one; ``None``/``False`` is refused. With ``adaptive=False`` nothing is
    submitted until ``cluster.scale(...)``. ``Client(cluster)`` carries the credentials;
    ``cluster.close()`` cancels the jobs and deletes the credential files.
    """
    if security is None or security is False:
        raise ValueError("refusing a scheduler without TLS; pass Security.temporary()")
    if security is True:
        security = Security.temporary()
    try:
        p = resolve_pool(pool)
    except (ValueError, TypeError) as exc:  # one line naming the pool, not an internal error
        from l2lflow.config import ConfigError

        raise ConfigError(f"execution.pools.{name}: {exc}") from None
    from l2lflow.execution.core import http_routes

    with http_routes(p["dashboard_address"]):  # no /info pages without the dashboard
        cluster = L2LSLURMCluster(
            name=name,
            security=security,
            interface=p["interface"],
            credential_dir=_credential_dir(p["shared_temp_directory"], name),
            scheduler_options=scheduler_options(p),
            **_job_kwargs(p, name),
        )
    if adaptive and p["max_jobs"] > 0:
        adapt(cluster, p)
    return cluster


def adapt(cluster: JobQueueCluster, pool: dict[str, Any]) -> Any:
    """Adaptive scaling between ``min_jobs`` and ``max_jobs``; idle workers stay ``adapt_wait`` s."""
    p = resolve_pool(pool)  # idempotent on a resolved pool
    interval = 1.0
    return cluster.adapt(
        minimum_jobs=int(p["min_jobs"]),
        maximum_jobs=int(p["max_jobs"]),
        interval=f"{interval}s",
        wait_count=max(1, math.ceil(float(p["adapt_wait"]) / interval)),
    )


def job_script(pool: dict[str, Any], name: str, security: Security | None = None) -> str:
    """The job script the pool's workers would be submitted with, without starting anything.

    The scheduler address is a placeholder. With ``security``, the credentials are written the way
    dask-jobqueue does it (its own code) into a temporary folder that is gone when this returns,
    so the paths in the script are only illustrative.
    """
    p = resolve_pool(pool)
    with tempfile.TemporaryDirectory() as tmp:
        holder = types.SimpleNamespace(shared_temp_directory=tmp)
        if security is not None:
            security = JobQueueCluster._get_worker_security(holder, security)
        protocol = "tls://" if security is not None else None
        job = PinnedSLURMJob(
            f"{protocol or 'tcp://'}{_PLACEHOLDER_HOST}",
            name=f"{name}-0",
            interface=p["interface"],
            protocol=protocol,
            security=security,
            **_job_kwargs(p, name),
        )
        for f in vars(holder).values():
            if hasattr(f, "close"):
                f.close()
    return job.job_script()
