"""Helpers of the Snakefile: which experiment config, and which site execution settings.

Kept here (not in the .smk files) so that they are tested like the rest of the library.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from l2lflow.config import ConfigError, load_yaml, merge


def profile_dirs(argv: Sequence[str], env: dict[str, str] | None = None) -> list[Path]:
    """The Snakemake profile folders of this invocation (``--profile``, ``--workflow-profile``,
    ``$SNAKEMAKE_PROFILE``), resolved the way Snakemake looks them up.

    Snakemake resolves a relative profile path against the folder it was started in, before
    ``--directory`` changes into the working directory where the Snakefile is parsed; ``$PWD``
    (which a chdir does not update) still names that folder. A ``--profile`` that cannot be
    found here is an error: silently ignoring it would run a JUWELS experiment on the login node.
    """
    env = dict(os.environ if env is None else env)
    names: list[tuple[str, bool]] = []  # (name, must be found)
    args = list(argv)
    for k, arg in enumerate(args):
        for flag in ("--profile", "--workflow-profile"):
            if arg == flag and k + 1 < len(args):
                names.append((args[k + 1], flag == "--profile"))
            elif arg.startswith(flag + "="):
                names.append((arg.split("=", 1)[1], flag == "--profile"))
    if not any(a == "--profile" or a.startswith("--profile=") for a in args):
        if env.get("SNAKEMAKE_PROFILE"):
            names.insert(0, (env["SNAKEMAKE_PROFILE"], True))
    config_home = Path(env.get("XDG_CONFIG_HOME", Path.home() / ".config"))
    started_in = _started_in(args, env)
    found = []
    for name, required in names:
        if name.lower() == "none":  # --workflow-profile none
            continue
        candidates = [
            *(base / name for base in started_in),
            Path(name),
            config_home / "snakemake" / name,
            Path("/etc/xdg/snakemake") / name,
        ]
        hit = next((c for c in candidates if c.is_dir()), None)
        if hit is not None:
            found.append(hit.resolve())
        elif required:
            raise ConfigError(
                f"--profile {name}: no such profile folder for l2lflow (looked in "
                f"{', '.join(str(c.parent) for c in candidates)}); give its absolute path"
            )
    return found


def _started_in(args: list[str], env: dict[str, str]) -> list[Path]:
    """The folder Snakemake started in, where it differs from the current one (``--directory``).

    Without ``--directory`` the current folder is where Snakemake started (``$PWD`` may be stale
    when a program, not a shell, started it).
    """
    moved = any(a in ("--directory", "-d") or a.startswith("--directory=") for a in args)
    return [Path(env["PWD"])] if moved and env.get("PWD") else []


def config_files(argv: Sequence[str], env: dict[str, str] | None = None) -> list[Path]:
    """The files of ``--configfile``/``--configfiles`` (one flag may take several), found as
    Snakemake finds them; a file that is not found is left out (Snakemake has said so)."""
    env = dict(os.environ if env is None else env)
    args = list(argv)
    names: list[str] = []
    for k, arg in enumerate(args):
        if arg in ("--configfile", "--configfiles"):
            for value in args[k + 1 :]:
                if value.startswith("-"):
                    break
                names.append(value)
        elif arg.startswith(("--configfile=", "--configfiles=")):
            names.append(arg.split("=", 1)[1])
    found = []
    for name in names:
        candidates = [*(base / name for base in _started_in(args, env)), Path(name)]
        hit = next((c for c in candidates if c.is_file()), None)
        if hit is not None:
            found.append(hit)
    return found


def check_config_files(argv: Sequence[str], env: dict[str, str] | None = None) -> None:
    """Read every ``--configfile`` as ``l2lflow validate`` does, before trusting Snakemake's copy.

    Snakemake's own loader keeps the last of two equal keys and expands YAML aliases without a
    limit; :func:`l2lflow.config.load_yaml` refuses both, naming the file, key and lines, so a
    run under Snakemake refuses exactly what ``l2lflow validate FILE`` refuses.
    """
    for path in config_files(argv, env):
        load_yaml(path)


def site_execution(argv: Sequence[str], env: dict[str, str] | None = None) -> dict[str, Any]:
    """The ``execution`` section of the profiles' ``execution.yaml`` files (later ones win)."""
    execution: dict[str, Any] = {}
    for folder in profile_dirs(argv, env):
        path = folder / "execution.yaml"
        if path.is_file():
            execution = merge(execution, load_yaml(path).get("execution", {}))
    return execution


def experiment_config(
    config: dict[str, Any], default_config: Path, argv: Sequence[str]
) -> dict[str, Any]:
    """The raw experiment config of a Snakemake run.

    ``config`` is what Snakemake loaded (``--configfile`` files and ``--config`` values). If it
    names no experiment, the default experiment (``config/config.yaml``) is the base. A site
    profile's ``execution.yaml`` then decides where evaluations run: its keys replace the
    experiment's, so that ``snakemake --profile juwels --configfile mine.yaml`` submits to
    JUWELS even though ``--configfile`` replaced the profile's own ``configfile`` entry.
    """
    check_config_files(argv)
    raw = dict(config)
    if "name" not in raw:
        raw = merge(load_yaml(default_config), raw)
    site = site_execution(argv)
    if site:
        raw = merge(raw, {"execution": site})
    check_execution_here(raw.get("execution"))
    return raw


def check_execution_here(execution: Any) -> None:
    """Refuse, before anything is written or submitted, a Slurm execution that cannot start on
    this machine: no ``sbatch`` (a Slurm profile on a laptop), an unset ``$VAR`` in a pool
    (``${L2LFLOW_ACCOUNT}``), a network ``interface`` the machine lacks. Called where a run
    starts (the Snakemake process, ``l2lflow run``); config validation leaves these alone, as a
    config may be checked away from the login node."""
    if not isinstance(execution, dict) or execution.get("backend") != "slurm":
        return
    pools = execution.get("pools")
    if not isinstance(pools, dict):
        return
    import re

    from l2lflow.execution.slurm_pool import check_environment

    for name, pool in pools.items():
        if isinstance(pool, dict):
            try:
                check_environment(pool)
            except ValueError as exc:
                text = str(exc)
                key = re.match(r"(\w+): ", text)  # the message names a key of the pool
                where = (
                    f"execution.pools.{name}.{text}" if key else f"execution.pools.{name}: {text}"
                )
                raise ConfigError(where) from None
    if shutil.which("sbatch") is None:
        raise ConfigError(
            "execution.backend: 'slurm' (from the config or a Slurm profile's execution.yaml), "
            "but this machine has no 'sbatch' on PATH to submit worker jobs: run on a Slurm "
            "login node, or run without the Slurm profile (backend: local)"
        )
