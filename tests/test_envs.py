"""The conda environment files agree with ``pyproject.toml``.

``envs/l2lflow.yaml`` (the rules' and workers' environment, used by ``snakemake --sdm conda``)
must list every ``[project].dependencies`` entry with the same version bounds, and nothing else
but Python, pip and the project itself. ``envs/nest.yaml``, if present, is all of that plus the
``nest`` extra (nest-simulator).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parents[1]
ENVS = ROOT / "envs"

#: PyPI name -> conda-forge name, where they differ (normalised names)
CONDA_NAMES: dict[str, str] = {"torch": "pytorch"}
#: what an env may hold beyond the project's dependencies
INFRASTRUCTURE = {"python", "pip"}


def normalise(name: str) -> str:
    """PEP 503 name normalisation (``Dask_JobQueue`` -> ``dask-jobqueue``)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def conda_name(pypi_name: str) -> str:
    name = normalise(pypi_name)
    return CONDA_NAMES.get(name, name)


class Dep:
    """One dependency line: its normalised name, its version bounds and where it came from."""

    def __init__(self, line: str, source: str) -> None:
        self.line = line
        self.source = source
        if source == "conda":
            # conda match specs: "name>=1,<2", "name >=1", "name=1.2" (= is a prefix match)
            match = re.fullmatch(r"\s*([A-Za-z0-9_.\-]+)\s*(.*?)\s*", line)
            assert match, f"cannot parse conda dependency {line!r}"
            name, spec = match.groups()
            spec = spec.replace(" ", "")
            if re.fullmatch(r"=[^=].*", spec):
                spec = f"={spec}.*" if not spec.endswith("*") else f"={spec}"
            self.name = normalise(name)
            self.spec = SpecifierSet(spec)
        else:
            req = Requirement(line)
            self.name = conda_name(req.name)
            self.spec = req.specifier

    def __repr__(self) -> str:
        return f"{self.line!r} ({self.source})"


def load_env(path: Path) -> tuple[dict[str, Any], dict[str, Dep], list[str]]:
    """(the YAML, name -> dependency, the pip lines that are paths or options)."""
    env = yaml.safe_load(path.read_text())
    assert isinstance(env, dict), f"{path}: not a mapping"
    deps: dict[str, Dep] = {}
    local: list[str] = []

    def add(dep: Dep) -> None:
        assert dep.name not in deps, (
            f"{path.name}: {dep.name} listed twice ({deps[dep.name]}, {dep})"
        )
        deps[dep.name] = dep

    for entry in env.get("dependencies") or []:
        if isinstance(entry, dict):
            assert set(entry) == {"pip"}, f"{path.name}: unexpected section {entry}"
            for line in entry["pip"]:
                if line.startswith(("-", ".", "/", "git+", "file:")):
                    local.append(line)
                else:
                    add(Dep(line, "pip"))
        else:
            add(Dep(str(entry), "conda"))
    return env, deps, local


def pyproject() -> dict[str, Any]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def project_deps(extra: str | None = None) -> dict[str, Requirement]:
    project = pyproject()["project"]
    lines = project["optional-dependencies"][extra] if extra else project["dependencies"]
    return {conda_name(Requirement(line).name): Requirement(line) for line in lines}


ENV_FILES = sorted(ENVS.glob("*.yaml"))


def test_l2lflow_env_exists() -> None:
    assert (ENVS / "l2lflow.yaml").is_file()


def test_l2lflow_env_has_every_dependency_with_same_bounds() -> None:
    _, deps, _ = load_env(ENVS / "l2lflow.yaml")
    wanted = project_deps()
    assert wanted, "pyproject.toml lists no dependencies?"
    missing = sorted(set(wanted) - set(deps))
    assert not missing, f"envs/l2lflow.yaml lacks {missing} (pyproject.toml lists them)"
    differ = {
        name: (str(req.specifier), str(deps[name].spec))
        for name, req in wanted.items()
        if deps[name].spec != req.specifier
    }
    assert not differ, f"version bounds differ (pyproject, env): {differ}"


def test_l2lflow_env_has_nothing_else() -> None:
    _, deps, _ = load_env(ENVS / "l2lflow.yaml")
    extra = sorted(set(deps) - set(project_deps()) - INFRASTRUCTURE)
    assert not extra, f"envs/l2lflow.yaml lists {extra}, which pyproject.toml does not"


@pytest.mark.parametrize("path", ENV_FILES, ids=[p.name for p in ENV_FILES])
def test_env_python_matches_requires_python(path: Path) -> None:
    _, deps, _ = load_env(path)
    assert "python" in deps, f"{path.name}: no python pin"
    assert deps["python"].spec == SpecifierSet(pyproject()["project"]["requires-python"])


@pytest.mark.parametrize("path", ENV_FILES, ids=[p.name for p in ENV_FILES])
def test_env_installs_the_project(path: Path) -> None:
    """The pip section installs this checkout (paths are relative to the env file's folder)."""
    env, deps, local = load_env(path)
    assert env.get("name"), f"{path.name}: no name"
    assert "conda-forge" in (env.get("channels") or []), f"{path.name}: no conda-forge channel"
    assert "pip" in deps, f"{path.name}: a pip section needs pip itself"
    targets = [line.split(maxsplit=1)[-1] for line in local if line.startswith("-e")]
    assert targets, f"{path.name}: does not pip-install the project (e.g. '-e ../')"
    for target in targets:
        assert (path.parent / target / "pyproject.toml").is_file(), (
            f"{path.name}: {target} is not the project folder"
        )


def test_nest_env_extends_l2lflow_env() -> None:
    path = ENVS / "nest.yaml"
    if not path.exists():
        pytest.skip("no envs/nest.yaml")
    base_env, base, base_local = load_env(ENVS / "l2lflow.yaml")
    env, deps, local = load_env(path)
    for name, dep in base.items():
        assert name in deps, f"envs/nest.yaml lacks {name} (envs/l2lflow.yaml lists {dep})"
        assert deps[name].spec == dep.spec, f"{name}: {deps[name]} != {dep}"
    assert set(base_local) <= set(local)
    assert set(base_env.get("channels") or []) <= set(env.get("channels") or [])
    nest = project_deps("nest")
    assert "nest-simulator" in nest, "pyproject.toml's nest extra lacks nest-simulator"
    for name, req in nest.items():
        assert name in deps, f"envs/nest.yaml lacks {req} (pyproject.toml's nest extra)"
        assert deps[name].spec == req.specifier, f"{name}: {deps[name]} != {req}"
    extra = sorted(set(deps) - set(base) - set(nest))
    assert not extra, f"envs/nest.yaml lists {extra}, beyond l2lflow.yaml and the nest extra"


def test_parsing_helpers() -> None:
    assert normalise("Dask_JobQueue") == "dask-jobqueue"
    assert Dep("zarr >=3.0, <4", "conda").spec == SpecifierSet("<4,>=3.0")
    assert Dep("numpy=1.26", "conda").spec == SpecifierSet("==1.26.*")
    assert Dep("PyYAML>=6", "pip").name == "pyyaml"
