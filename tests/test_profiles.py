"""Snakemake site profiles: installed where ``--profile NAME`` finds them, never clobbering edits."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from l2lflow import profiles
from l2lflow.profiles import available_profiles, install_profiles

REPO_PROFILES = Path(__file__).resolve().parents[1] / "profiles"
PACKAGE_PROFILES = Path(profiles.__file__).resolve().parent / "data" / "profiles"
NAMES = ["juwels", "juwels-booster", "local-slurm", "slurm"]


def tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_package_data_is_a_copy_of_the_repo_profiles() -> None:
    assert available_profiles(REPO_PROFILES) == NAMES
    assert tree(PACKAGE_PROFILES) == tree(REPO_PROFILES), (
        "src/l2lflow/data/profiles is stale: run "
        "`python -c 'from l2lflow.profiles import sync_package_data; sync_package_data()'`"
    )


@pytest.mark.parametrize("name", NAMES)
def test_profile_settings(name: str) -> None:
    """Local rule jobs, the pools as a nested config file, and every entry commented."""
    text = (REPO_PROFILES / name / "config.yaml").read_text()
    settings = yaml.safe_load(text)
    assert settings["cores"] == 1 and settings["configfile"] == "execution.yaml"
    assert settings["rerun-incomplete"] is True and settings["keep-going"] is False
    assert settings["printshellcmds"] is False and settings["latency-wait"] > 0
    assert "executor" not in settings  # rules run locally; Dask submits the Slurm jobs
    for key in settings:
        before = text.split(f"\n{key}:")[0].rstrip().splitlines()[-1]
        assert before.startswith("#"), f"{name}: '{key}' has no comment above it"
    execution = yaml.safe_load((REPO_PROFILES / name / "execution.yaml").read_text())
    assert execution["execution"]["backend"] == "slurm"
    assert {"cpu", "gpu"} <= set(execution["execution"]["pools"])


def test_install_copy_refuse_force(tmp_path: Path) -> None:
    dest = tmp_path / "snakemake"
    installed = install_profiles(dest)
    assert installed == [dest / n for n in NAMES]
    for name in NAMES:
        assert tree(dest / name) == tree(REPO_PROFILES / name)
    assert install_profiles(dest, ["juwels"]) == [dest / "juwels"]  # identical: fine

    edited = dest / "juwels" / "execution.yaml"
    edited.write_text(edited.read_text().replace("max_jobs: 4", "max_jobs: 9"))
    (dest / "juwels" / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="juwels"):
        install_profiles(dest)
    assert "max_jobs: 9" in edited.read_text()  # nothing written
    install_profiles(dest, ["juwels"], force=True)
    assert edited.read_bytes() == (REPO_PROFILES / "juwels" / "execution.yaml").read_bytes()
    assert (dest / "juwels" / "notes.txt").read_text() == "mine"
    with pytest.raises(ValueError, match="unknown profiles"):
        install_profiles(dest, ["nope"])


def test_default_destination_follows_xdg(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    assert install_profiles(names=["slurm"]) == [tmp_path / "snakemake" / "slurm"]


@pytest.mark.skipif(shutil.which("snakemake") is None, reason="snakemake not installed")
def test_snakemake_finds_the_profile_by_name_and_its_nested_config(tmp_path: Path) -> None:
    """The profile's `configfile: execution.yaml` resolves in the profile folder, typed."""
    install_profiles(tmp_path / "xdg" / "snakemake", ["local-slurm"])
    work = tmp_path / "work"
    work.mkdir()
    (work / "Snakefile").write_text(
        "import json\n"
        "print('CONFIG=' + json.dumps(config))\n"
        "rule all:\n"
        "    output: 'done'\n"
        "    shell: 'touch {output}'\n"
    )
    env = dict(os.environ, XDG_CONFIG_HOME=str(tmp_path / "xdg"))
    out = subprocess.run(
        [sys.executable, "-m", "snakemake", "--profile", "local-slurm", "-n"],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    line = next(x for x in out.stdout.splitlines() if x.startswith("CONFIG="))
    config = json.loads(line.removeprefix("CONFIG="))
    gpu = config["execution"]["pools"]["gpu"]
    assert gpu["gpus_per_job"] == 1 and gpu["job_extra_directives"] == ["--gres=gpu:1"]
    assert config["execution"]["pools"]["cpu"]["account"] == "ci"


def test_relative_profile_paths_resolve_from_where_snakemake_started(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``snakemake --directory W --profile profiles/x``: Snakemake finds the profile relative to
    where it started, but parses the Snakefile in W; l2lflow must find the same folder (found by
    running it: before, the site's execution.yaml was silently ignored and evaluations ran
    locally), and refuse a ``--profile`` it cannot find rather than ignore it."""
    from l2lflow.config import ConfigError
    from l2lflow.workflow import profile_dirs, site_execution

    site = tmp_path / "start" / "profiles" / "site"
    site.mkdir(parents=True)
    (site / "execution.yaml").write_text("execution:\n  backend: slurm\n  pools: {cpu: {}}\n")
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    env = {"PWD": str(tmp_path / "start"), "XDG_CONFIG_HOME": str(tmp_path / "xdg")}
    moved = ["--directory", str(work)]
    assert profile_dirs([*moved, "--profile", "profiles/site"], env) == [site.resolve()]
    with pytest.raises(ConfigError, match="profiles/site"):  # no --directory: cwd is the start
        profile_dirs(["--profile", "profiles/site"], env)
    assert profile_dirs([f"--profile={site}"], env) == [site.resolve()]
    assert (
        site_execution(["-d", str(work), "--profile", "profiles/site"], env)["backend"] == "slurm"
    )
    with pytest.raises(ConfigError, match=r"^--profile nowhere: no such profile folder"):
        profile_dirs(["--profile", "nowhere"], env)
    with pytest.raises(ConfigError, match="--profile gone"):
        profile_dirs([], {**env, "SNAKEMAKE_PROFILE": "gone"})
    assert profile_dirs(["--workflow-profile", "none"], env) == []
    assert profile_dirs(["--workflow-profile", "not-here"], env) == []  # Snakemake's own default
