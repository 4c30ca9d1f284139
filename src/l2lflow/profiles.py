"""Install l2lflow's Snakemake site profiles where ``snakemake --profile NAME`` finds them.

Snakemake looks for a profile name in the current folder, ``~/.config/snakemake/`` and
``/etc/xdg/snakemake/``, never in a repository's ``profiles/`` folder, so ``--profile juwels``
works only after the folder is copied to ``~/.config/snakemake/juwels/``.

The source of truth is ``profiles/`` at the top of the repository. A copy ships as package data
(``l2lflow/data/profiles``) for installs without the repository; ``sync_package_data()`` refreshes
it and a test checks that both agree. An existing profile that differs from ours is a user's
edit (an account, a partition): it is never overwritten silently.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

__all__ = [
    "available_profiles",
    "install_profiles",
    "profiles_source",
    "snakemake_profile_dir",
    "sync_package_data",
]

_PACKAGE = Path(__file__).resolve().parent
_PACKAGE_DATA = _PACKAGE / "data" / "profiles"


def _repo_profiles() -> Path | None:
    """``<repo>/profiles`` for a src-layout checkout (editable install), else None."""
    if _PACKAGE.parent.name != "src":
        return None
    repo = _PACKAGE.parents[1] / "profiles"
    return repo if repo.is_dir() else None


def profiles_source() -> Path:
    """Where the profiles are copied from: the checkout's ``profiles/``, else the package data."""
    return _repo_profiles() or _PACKAGE_DATA


#: the workflow profile (``profiles/default``): Snakemake applies it to every run of the
#: Snakefile next to it; it is no site profile and is never installed
WORKFLOW_PROFILE = "default"


def available_profiles(source: Path | None = None) -> list[str]:
    """Names of the site profiles in ``source`` (folders holding a ``config.yaml``)."""
    src = source or profiles_source()
    return sorted(
        d.name
        for d in src.iterdir()
        if (d / "config.yaml").is_file() and d.name != WORKFLOW_PROFILE
    )


def snakemake_profile_dir() -> Path:
    """Snakemake's per-user profile folder (``$XDG_CONFIG_HOME/snakemake``, as platformdirs)."""
    base = os.environ.get("XDG_CONFIG_HOME") or "~/.config"
    return Path(base).expanduser() / "snakemake"


def _files(folder: Path) -> list[Path]:
    return sorted(p.relative_to(folder) for p in folder.rglob("*") if p.is_file())


def _differs(src: Path, dst: Path) -> list[str]:
    """Files of ``src`` that are missing or different in ``dst`` (extra files in dst are fine)."""
    return [
        str(rel)
        for rel in _files(src)
        if not (dst / rel).is_file() or (dst / rel).read_bytes() != (src / rel).read_bytes()
    ]


def install_profiles(
    dest: Path | None = None, names: list[str] | None = None, force: bool = False
) -> list[Path]:
    """Copy ``profiles/<name>/`` to ``<dest>/<name>/`` (default ``~/.config/snakemake``).

    Returns the installed folders. An identical existing profile is left as it is; a different
    one raises ``FileExistsError`` (nothing is written) unless ``force``, which overwrites our
    files and keeps any others in that folder.
    """
    src = profiles_source()
    known = available_profiles(src)
    names = list(names) if names else known
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValueError(f"unknown profiles {unknown}; available: {known}")
    dest = Path(dest).expanduser() if dest is not None else snakemake_profile_dir()

    changed = {n: _differs(src / n, dest / n) for n in names if (dest / n).exists()}
    refused = {n: files for n, files in changed.items() if files}
    if refused and not force:
        detail = "; ".join(f"{dest / n}: {', '.join(f)}" for n, f in refused.items())
        raise FileExistsError(
            f"refusing to overwrite changed profiles ({detail}); "
            "use force=True (l2lflow profiles install --force) to replace them"
        )
    installed = []
    for name in names:
        for rel in _files(src / name):
            target = dest / name / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src / name / rel, target)
        installed.append(dest / name)
    return installed


def sync_package_data() -> list[Path]:
    """Make ``l2lflow/data/profiles`` an exact copy of the checkout's ``profiles/`` (developers)."""
    repo = _repo_profiles()
    if repo is None:
        raise RuntimeError("no profiles/ folder of a source checkout next to the package")
    if _PACKAGE_DATA.exists():
        shutil.rmtree(_PACKAGE_DATA)
    shutil.copytree(repo, _PACKAGE_DATA)
    return [_PACKAGE_DATA / n for n in available_profiles(_PACKAGE_DATA)]
