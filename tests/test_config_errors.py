"""Every bad config is refused with ONE line that names the key path and says what is allowed.

Each case is a small YAML file (written from a valid base config with one thing broken) run
through ``l2lflow validate``: in-process through :func:`l2lflow.cli.main` for speed, and a
representative handful through the real CLI in a subprocess. For every case the exit code is 2,
stderr is exactly one line ``l2lflow: error: <message>``, the message starts with the offending
key path and contains what is expected there (allowed values, allowed keys, known names).
"""

from __future__ import annotations

import copy
import os
import subprocess
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from l2lflow.cli import main
from l2lflow.optimizees.base import REGISTRY as OPTIMIZEES
from l2lflow.optimizers import REGISTRY as OPTIMIZERS

ROOT = Path(__file__).resolve().parents[1]
PREFIX = "l2lflow: error: "

BASE: dict[str, Any] = {
    "name": "bad",
    "seed": 1,
    "generations": 2,
    "population_size": 4,
    "optimizer": {"name": "random"},
    "optimizee": {"name": "sphere"},
    "space": {"x": {"low": -1.0, "high": 1.0}},
}

DELETE = object()
TOP_KEYS = ("name", "seed", "generations", "population_size", "optimizer", "optimizee", "space")


def changed(changes: dict[str, Any]) -> dict[str, Any]:
    """BASE with ``{"a.b.c": value}`` set (``DELETE`` removes the key)."""
    config = copy.deepcopy(BASE)
    for dotted, value in changes.items():
        *parents, last = dotted.split(".")
        node = config
        for part in parents:
            node = node.setdefault(part, {})
        if value is DELETE:
            del node[last]
        else:
            node[last] = copy.deepcopy(value)
    return config


@dataclass
class Case:
    id: str
    #: the key path the message must start with; ``{file}`` stands for the config's path
    where: str
    #: substrings the message must contain (what is allowed / expected)
    needles: tuple[str, ...] = ()
    #: dotted-path changes to BASE, or the raw file text
    changes: dict[str, Any] = field(default_factory=dict)
    text: str | bytes | None = None
    #: source of a user module written next to the config; ``{mod}`` in the text is its name
    module: str | None = None


def C(id: str, where: str, needles: tuple[str, ...] | str = (), **changes: Any) -> Case:
    if isinstance(needles, str):
        needles = (needles,)
    return Case(id, where, needles, {k.replace("__", "."): v for k, v in changes.items()})


def T(id: str, where: str, needles: tuple[str, ...] | str, text: str | bytes, **kw: Any) -> Case:
    if isinstance(needles, str):
        needles = (needles,)
    return Case(id, where, needles, text=text, **kw)


BASE_TEXT = """\
name: bad
seed: 1
generations: 2
population_size: 4
optimizer: {name: random}
optimizee: {name: sphere}
space:
  x: {low: -1.0, high: 1.0}
"""


def base_text(**replace: str) -> str:
    """BASE_TEXT with top-level sections replaced by raw YAML snippets (one line per key)."""
    lines = BASE_TEXT.splitlines()
    out = []
    skip = False
    for line in lines:
        key = line.split(":")[0] if not line.startswith(" ") else None
        if key is not None:
            skip = key in replace
            if skip:
                out.append(replace.pop(key))
        if not skip:
            out.append(line)
    return "\n".join(out) + "\n"


_optimizers = tuple(sorted(OPTIMIZERS))
_optimizees = tuple(sorted(OPTIMIZEES))

CASES: list[Case] = [
    # --- required keys
    *[C(f"missing-{key}", key, "required", **{key: DELETE}) for key in TOP_KEYS[:4]],
    C("missing-optimizer", "optimizer", ("required", "name: ga", *_optimizers), optimizer=DELETE),
    C("missing-optimizee", "optimizee", ("required", "sphere", ":function"), optimizee=DELETE),
    C("missing-space", "space", ("required", "parameters"), space=DELETE),
    C("missing-optimizer-name", "optimizer.name", "required", optimizer={"options": {}}),
    C("missing-float-high", "space.x.high", "required", space__x__high=DELETE),
    # --- unknown keys
    C(
        "unknown-top-level-typo",
        "generation",
        ("unknown key", "generations", "population_size", "space"),
        generations=DELETE,
        generation=2,
    ),
    C(
        "unknown-nested-key",
        "evaluation.retry",
        ("unknown key", "retries", "timeout_s", "failure_fitness"),
        evaluation={"retry": 2},
    ),
    C(
        "unknown-parameter-key",
        "space.x.step",
        ("unknown key", "low", "high", "scale", "choices"),
        space__x__step=0.1,
    ),
    # --- wrong types
    C("seed-string", "seed", ("integer", "'abc'"), seed="abc"),
    C("generations-float", "generations", ("integer", "2.5"), generations=2.5),
    C("generations-integral-float", "generations", ("integer", "2.0"), generations=2.0),
    C("population-string", "population_size", ("integer", "'10'"), population_size="10"),
    C("population-bool", "population_size", ("integer", "True"), population_size=True),
    C("optimizer-not-mapping", "optimizer", ("mapping", "'ga'"), optimizer="ga"),
    C("parameter-not-mapping", "space.x", "mapping", space__x=5),
    C("bound-string", "space.x.low", ("number", "'zero'"), space__x__low="zero"),
    C("name-with-space", "name", ("letters", "digits"), name="my experiment"),
    # --- ranges
    C("population-zero", "population_size", ">= 1", population_size=0),
    C("generations-zero", "generations", ">= 1", generations=0),
    C("seed-negative", "seed", ">= 0", seed=-3),
    C("retries-negative", "evaluation.retries", ">= 0", evaluation={"retries": -1}),
    C("timeout-zero", "evaluation.timeout_s", ("> 0", "null"), evaluation={"timeout_s": 0}),
    C("threads-zero", "evaluation.threads", ">= 1", evaluation={"threads": 0}),
    C("results-empty", "results", "empty", results=""),
    # --- enums
    C("direction-min", "direction", ("'minimize'", "'maximize'", "'min'"), direction="min"),
    C(
        "backend-pbs",
        "execution.backend",
        ("'local'", "'slurm'", "'pbs'"),
        execution={"backend": "pbs"},
    ),
    C("scale-unknown", "space.x.scale", ("'linear'", "'log'", "'ln'"), space__x__scale="ln"),
    C(
        "type-unknown",
        "space.x.type",
        ("'float'", "'int'", "'choice'", "'double'"),
        space__x__type="double",
    ),
    # --- the parameter space
    C("space-empty", "space", "at least one parameter", space={}),
    C(
        "bounds-inverted",
        "space.x.low",
        ("< high", "low=5", "high=1"),
        space__x={"low": 5, "high": 1},
    ),
    C("bounds-equal", "space.x.low", ("< high", "low=2", "high=2"), space__x={"low": 2, "high": 2}),
    C("bound-infinite", "space.x.high", "finite", space__x={"low": 0, "high": float("inf")}),
    C("bound-nan", "space.x.low", "finite", space__x={"low": float("nan"), "high": 1}),
    C(
        "log-low-zero",
        "space.x.low",
        ("log", "> 0"),
        space__x={"low": 0, "high": 1, "scale": "log"},
    ),
    C(
        "log-low-negative",
        "space.x.low",
        ("log", "> 0"),
        space__x={"low": -1, "high": 1, "scale": "log"},
    ),
    C(
        "int-fractional-bound",
        "space.n.low",
        ("integer", "1.5"),
        space={"n": {"type": "int", "low": 1.5, "high": 4}},
    ),
    C(
        "choice-without-choices",
        "space.c.choices",
        "non-empty list",
        space={"c": {"type": "choice"}},
    ),
    C(
        "choice-empty-choices",
        "space.c.choices",
        "empty",
        space={"c": {"type": "choice", "choices": []}},
    ),
    C(
        "choice-with-bounds",
        "space.c.low",
        "choices",
        space={"c": {"type": "choice", "choices": ["a", "b"], "low": 0}},
    ),
    C(
        "choices-mixed",
        "space.c.choices",
        ("all numbers, all strings or all booleans", "'a'"),
        space={"c": {"type": "choice", "choices": ["a", 1]}},
    ),
    C(
        "choices-duplicate",
        "space.c.choices",
        ("duplicate", "'a'"),
        space={"c": {"type": "choice", "choices": ["a", "b", "a"]}},
    ),
    C(
        "choices-without-type",
        "space.x.choices",
        "type: choice",
        space={"x": {"choices": [1, 2]}},
    ),
    T(
        "parameter-duplicate-name",
        "{file}: space.x",
        ("duplicate", "lines 8 and 10"),
        base_text(
            space="space:\n  x: {low: 0, high: 1}\n  y: {low: 0, high: 1}\n  x: {low: 2, high: 3}"
        ),
    ),
    T(
        "top-level-duplicate-key",
        "{file}: seed",
        ("duplicate", "lines 2 and 9"),
        base_text() + "seed: 2\n",
    ),
    C(
        "parameter-reserved-name",
        "space.fitness",
        ("reserved", "fitness"),
        space={"fitness": {"low": 0, "high": 1}},
    ),
    C(
        "parameter-reserved-prefix",
        "space.metric_x",
        ("reserved", "metric_*"),
        space={"metric_x": {"low": 0, "high": 1}},
    ),
    C(
        "parameter-name-digit",
        "space.1x",
        ("letters", "digits", "not starting with a digit"),
        space={"1x": {"low": 0, "high": 1}},
    ),
    C(
        "parameter-name-dash",
        "space.tau-m",
        ("letters", "digits", "'_'"),
        space={"tau-m": {"low": 0, "high": 1}},
    ),
    C(
        "parameter-int-name",
        "space.1",
        ("must be a string", "quote"),
        space={1: {"low": 0, "high": 1}},
    ),
    C(
        "choices-duplicate-numbers",
        "space.c.choices",
        ("once", "1.0"),
        space={"c": {"type": "choice", "choices": [1, 1.0, 2]}},
    ),
    C(
        "choice-with-log-scale",
        "space.c.scale",
        "only choices",
        space={"c": {"type": "choice", "choices": [1, 2], "scale": "log"}},
    ),
    T("name-is-date", "name", ("date", "quote"), base_text(name="name: 2024-01-01")),
    C("optimizer-name-empty", "optimizer.name", "empty", optimizer={"name": ""}),
    # --- optimizer
    C(
        "optimizer-unknown",
        "optimizer.name",
        ("unknown optimizer", "'sgd'", *_optimizers),
        optimizer={"name": "sgd"},
    ),
    C(
        "optimizer-option-unknown",
        "optimizer.options.sigma_typo",
        ("unknown option", "sigma", "n_elite", "tournament_size"),
        optimizer={"name": "ga", "options": {"sigma_typo": 0.2}},
    ),
    C(
        "optimizer-options-not-mapping",
        "optimizer.options",
        "mapping",
        optimizer={"name": "ga", "options": [1]},
    ),
    C(
        "optimizer-option-bad-range",
        "optimizer.options.sigma0",
        "> 0",
        optimizer={"name": "cmaes", "options": {"sigma0": -1}},
    ),
    C(
        "optimizer-option-bad-value",
        "optimizer.options.sigma",
        ("'abc'", "'ga'"),
        optimizer={"name": "ga", "options": {"sigma": "abc"}},
    ),
    C(
        "optimizer-option-bad-shape",
        "optimizer.options.x0",
        "'cmaes'",
        optimizer={"name": "cmaes", "options": {"x0": [0.1, 0.2, 0.3]}},
    ),
    C(
        "optimizer-population-too-small",
        "population_size",
        (">= 2", "cmaes"),
        population_size=1,
        optimizer={"name": "cmaes"},
    ),
    # --- optimizee
    C(
        "optimizee-unknown",
        "optimizee.name",
        ("unknown optimizee", "'spere'", *_optimizees, "module:function"),
        optimizee={"name": "spere"},
    ),
    C(
        "optimizee-module-missing",
        "optimizee.name",
        ("cannot import", "'nosuchmodule'", "ModuleNotFoundError"),
        optimizee={"name": "nosuchmodule:fn"},
    ),
    C(
        "optimizee-attribute-missing",
        "optimizee.name",
        ("'math'", "no attribute", "'nosuchfn'"),
        optimizee={"name": "math:nosuchfn"},
    ),
    C("optimizee-not-callable", "optimizee.name", "not callable", optimizee={"name": "math:pi"}),
    C(
        "optimizee-option-unknown",
        "optimizee.options.foo",
        ("no option", "noise"),
        optimizee={"name": "sphere", "options": {"foo": 1}},
    ),
    C(
        "optimizee-no-meta-test",
        "optimizee.meta_test",
        "held-out",
        optimizee={"name": "sphere", "meta_test": {}},
    ),
    C(
        "failure-fitness-inf",
        "evaluation.failure_fitness",
        ("finite", "null"),
        evaluation={"failure_fitness": float("inf")},
    ),
    C("slurm-without-pools", "execution.pools", "cpu", execution={"backend": "slurm"}),
    # --- user code (a module written next to the config and put on the path)
    Case(
        "user-fn-no-args",
        "optimizee.name",
        ("params, seed", "()"),
        {"optimizee": {"name": "{mod}:fn"}},
        module="def fn():\n    return 0.0\n",
    ),
    Case(
        "user-fn-option-not-accepted",
        "optimizee.options.gain",
        ("no option", "'gain'", "noise"),
        {"optimizee": {"name": "{mod}:fn", "options": {"gain": 2}}},
        module="def fn(params, seed, noise=0.0):\n    return 0.0\n",
    ),
    Case(
        "user-fn-required-option-missing",
        "optimizee.options.gain",
        ("required", "not given"),
        {"optimizee": {"name": "{mod}:fn"}},
        module="def fn(params, seed, *, gain):\n    return gain\n",
    ),
    Case(
        "user-module-raises-multiline",
        "optimizee.name",
        ("cannot import", "RuntimeError", "first", "second"),
        {"optimizee": {"name": "{mod}:fn"}},
        module="raise RuntimeError('first line\\nsecond line')\n",
    ),
    Case(
        "user-module-syntax-error",
        "optimizee.name",
        ("cannot import", "SyntaxError"),
        {"optimizee": {"name": "{mod}:fn"}},
        module="def fn(params, seed)\n    return 0.0\n",
    ),
    # --- the file itself
    T("not-yaml", "{file}", ("not valid YAML", "line 1, column 1"), ": :\n"),
    T("not-yaml-unclosed", "{file}", ("not valid YAML", "line"), "name: [a\n"),
    T(
        "yaml-python-tag",
        "{file}",
        ("not valid YAML", "python/object"),
        "name: !!python/object:os.system {}\n",
    ),
    T("file-is-list", "{file}", ("mapping", "list"), "- name: a\n- seed: 1\n"),
    T("file-is-scalar", "{file}", ("mapping", "a string"), "just words\n"),
    T("file-empty", "{file}", "empty", ""),
    T("file-only-comments", "{file}", "empty", "# nothing here\n"),
    T("file-not-utf8", "{file}", "UTF-8", b"name: \xff\xfe\x00bad\n"),
    T("top-level-null-key", "null", ("must be a string",), base_text() + "? null\n: 1\nfoo: 2\n"),
    T("top-level-int-key", "1", ("must be a string", "quote"), base_text() + "1: one\n"),
    # --- names a user mistypes: "did you mean", as for top-level keys (issue 15)
    C(
        "optimizer-did-you-mean",
        "optimizer.name",
        ("unknown optimizer", "'cmaa'", "did you mean 'cmaes'?"),
        optimizer={"name": "cmaa"},
    ),
    C(
        "optimizer-upper-case",
        "optimizer.name",
        ("unknown optimizer", "did you mean 'cmaes'?"),
        optimizer={"name": "CMAES"},
    ),
    C(
        "optimizer-option-did-you-mean",
        "optimizer.options.sigam",
        ("unknown option", "did you mean 'sigma'?"),
        optimizer={"name": "ga", "options": {"sigam": 0.1}},
    ),
    C(
        "optimizee-did-you-mean",
        "optimizee.name",
        ("unknown optimizee", "'rastrign'", "did you mean 'rastrigin'?"),
        optimizee={"name": "rastrign"},
    ),
    C(
        "optimizee-option-did-you-mean",
        "optimizee.options.nosie",
        ("no option", "did you mean 'noise'?"),
        optimizee={"name": "sphere", "options": {"nosie": 0.1}},
    ),
    C(
        "optimizee-module-not-on-pythonpath",
        "optimizee.name",
        ("No module named 'my_model_l2l'", "my_model_l2l(.py) on PYTHONPATH", "PYTHONPATH="),
        optimizee={"name": "my_model_l2l:fn"},
    ),
    Case(
        "user-module-dependency-missing",
        "optimizee.name",
        ("No module named 'nosuchdep_l2l'", "imports 'nosuchdep_l2l'", "not installed"),
        {"optimizee": {"name": "{mod}:fn"}},
        module="import nosuchdep_l2l\n\ndef fn(params, seed):\n    return 0.0\n",
    ),
    # --- sizes this machine cannot hold (10**9 used to be killed for memory after minutes)
    C(
        "population-beyond-memory",
        "population_size",
        ("1,000,000,000 individuals", "memory", "estimate", "1.2 kB per individual", "machine"),
        population_size=10**9,
    ),
    C(
        "population-beyond-memory-cmaes",
        "population_size",
        ("1,000,000,000 individuals", "memory this machine has"),
        population_size=10**9,
        optimizer={"name": "cmaes"},
    ),
    C(
        "store-beyond-disk",
        "generations",
        ("100,000 generations × 1,000,000 individuals", "results store", "free in"),
        population_size=10**6,
        generations=10**5,
    ),
    # --- YAML aliases: an alias bomb ("billion laughs") hung > 240 s; a recursive alias
    T(
        "yaml-alias-bomb",
        "z",
        ("expands to 111,111 values", "at most 100,000", "alias"),
        base_text()
        + "a: &a [x, x, x, x, x, x, x, x, x, x]\n"
        + "".join(
            f"{n}: &{n} [{', '.join([f'*{p}'] * 10)}]\n"
            for p, n in zip("abcd", "bcdz", strict=True)
        ),
    ),
    T(
        "yaml-recursive-alias",
        "optimizee.options.again",
        ("contains itself", "recursive YAML alias"),
        base_text(optimizee="optimizee: &o {name: sphere, options: {again: *o}}"),
    ),
]


def _write(case: Case, tmp_path: Path) -> tuple[Path, str | None]:
    """Write the case's config (and user module) into tmp_path; return (path, module name)."""
    module = None
    if case.module is not None:
        module = f"l2l_user_{uuid.uuid4().hex[:12]}"
        (tmp_path / f"{module}.py").write_text(case.module)
    path = tmp_path / "config.yaml"
    if case.text is not None:
        data = case.text
    else:
        config = changed(case.changes)
        if module is not None:
            config["optimizee"]["name"] = config["optimizee"]["name"].format(mod=module)
        data = yaml.safe_dump(config, sort_keys=False)
    if isinstance(data, bytes):
        path.write_bytes(data)
    else:
        path.write_text(data)
    return path, module


def check_error(err: str, out: str, case: Case, path: Path) -> None:
    """The one-line error contract."""
    assert "Traceback" not in err, err
    assert err.endswith("\n") and err.count("\n") == 1, f"not exactly one line:\n{err}"
    assert out == "", f"unexpected stdout: {out!r}"
    assert err.startswith(PREFIX), err
    message = err[len(PREFIX) :].rstrip("\n")
    where = case.where.replace("{file}", str(path))
    assert message.startswith(f"{where}:") or message == where, (
        f"message does not start with {where!r}: {message!r}"
    )
    rest = message[len(where) :]
    for needle in case.needles:
        assert needle in rest, f"{needle!r} missing from {message!r}"


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_config_one_line(case: Case, tmp_path: Path, capsys, monkeypatch) -> None:
    path, module = _write(case, tmp_path)
    if module is not None:
        monkeypatch.syspath_prepend(str(tmp_path))
    try:
        rc = main(["validate", str(path)])
    finally:
        if module is not None:
            sys.modules.pop(module, None)
    captured = capsys.readouterr()
    assert rc == 2, captured
    check_error(captured.err, captured.out, case, path)


def test_case_matrix_is_large() -> None:
    ids = [c.id for c in CASES]
    assert len(ids) == len(set(ids))
    assert len(ids) >= 90


@pytest.mark.parametrize(
    ("id", "make"),
    [
        ("file-missing", lambda tmp: tmp / "nope.yaml"),
        ("path-is-folder", lambda tmp: tmp),
    ],
)
def test_bad_path(id: str, make, tmp_path: Path, capsys) -> None:
    path = make(tmp_path)
    rc = main(["validate", str(path)])
    captured = capsys.readouterr()
    assert rc == 2
    needle = "no such config file" if id == "file-missing" else "folder"
    check_error(captured.err, captured.out, Case(id, "{file}", (needle,)), path)


def test_config_error_is_one_line() -> None:
    """Whatever a message holds, the exception text itself never spans lines."""
    from l2lflow.config import ConfigError

    assert "\n" not in str(ConfigError("a.b: first\nsecond"))


# ---------------------------------------------------------------- the real CLI, in a subprocess
SUBPROCESS_CASES = [
    "missing-name",
    "unknown-top-level-typo",
    "bounds-inverted",
    "parameter-duplicate-name",
    "optimizer-unknown",
    "user-fn-no-args",
    "not-yaml",
]


def _cli(*args: str, pythonpath: Path | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    if pythonpath is not None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(pythonpath), env.get("PYTHONPATH")]))
    return subprocess.run(
        [sys.executable, "-m", "l2lflow", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=60,
    )


@pytest.mark.parametrize("case_id", SUBPROCESS_CASES)
def test_bad_config_real_cli(case_id: str, tmp_path: Path) -> None:
    case = next(c for c in CASES if c.id == case_id)
    path, module = _write(case, tmp_path)
    proc = _cli("validate", str(path), pythonpath=tmp_path if module else None)
    assert proc.returncode == 2, proc
    check_error(proc.stderr, proc.stdout, case, path)


def test_missing_file_real_cli(tmp_path: Path) -> None:
    path = tmp_path / "missing.yaml"
    proc = _cli("validate", str(path))
    assert proc.returncode == 2
    check_error(proc.stderr, proc.stdout, Case("missing", "{file}", ("no such",)), path)


def _argparse_error(proc: subprocess.CompletedProcess) -> str:
    """argparse's own errors: exit 2, no traceback, the last line is ``l2lflow...: error: ...``.

    (argparse prints its usage line first; the error itself is one line.)
    """
    assert proc.returncode == 2, proc
    assert proc.stdout == ""
    assert "Traceback" not in proc.stderr
    last = proc.stderr.rstrip("\n").splitlines()[-1]
    assert last.startswith("l2lflow") and ": error: " in last, proc.stderr
    return last


def test_unknown_subcommand() -> None:
    last = _argparse_error(_cli("valdiate", "config/config.yaml"))
    assert "'valdiate'" in last
    for command in ("validate", "run", "step", "status", "profiles"):
        assert command in last


def test_validate_without_file() -> None:
    last = _argparse_error(_cli("validate"))
    assert "config" in last and "required" in last


# ---------------------------------------------------------------- the shipped configs are valid
SHIPPED = [ROOT / "config" / "config.yaml", *sorted((ROOT / "config" / "examples").glob("*.yaml"))]


@pytest.mark.parametrize("path", SHIPPED, ids=[str(p.relative_to(ROOT)) for p in SHIPPED])
def test_shipped_config_is_valid(path: Path, capsys, monkeypatch) -> None:
    # examples of user models import their module from config/examples (README: PYTHONPATH)
    monkeypatch.syspath_prepend(str(ROOT / "config" / "examples"))
    rc = main(["validate", str(path)])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert captured.err == ""
    assert "valid" in captured.out


def test_default_config_valid_real_cli() -> None:
    proc = _cli("validate", "config/config.yaml")
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    assert proc.stdout.startswith("config/config.yaml: valid")


# ---------------------------------------------------------------- regressions of fixed bugs
def test_choice_parameter_is_valid(tmp_path: Path) -> None:
    """A choice parameter validates, also after Snakemake's validate filled scale: linear in."""
    from l2lflow.config import load_config, validate_config

    config = changed({"space.c": {"type": "choice", "choices": ["a", "b"]}})
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    loaded = load_config(path)
    assert loaded["space"]["c"] == {"type": "choice", "choices": ["a", "b"]}
    assert loaded["space"]["x"]["scale"] == "linear"
    # what workflow/rules/common.smk hands over: defaults filled into every parameter
    filled = copy.deepcopy(config)
    filled["space"]["c"]["scale"] = "linear"
    assert validate_config(filled) == loaded
    # validation is idempotent (the engine validates the resolved config again)
    assert validate_config(loaded) == loaded


def test_choice_parameter_after_snakemake_validate() -> None:
    snakemake_utils = pytest.importorskip("snakemake.utils")
    from l2lflow.config import config_hash, validate_config

    raw = changed({"space.c": {"type": "choice", "choices": [1, 2, 3]}})
    config = copy.deepcopy(raw)
    snakemake_utils.validate(config, str(ROOT / "workflow" / "schemas" / "config.schema.yaml"))
    assert config_hash(validate_config(config)) == config_hash(validate_config(raw))


def test_yaml_anchors_and_merge_keys(tmp_path: Path, capsys) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(
        BASE_TEXT.replace("  x: {low: -1.0, high: 1.0}", "  x: &b {low: -1.0, high: 1.0}")
        + "  y: *b\n  z: {<<: *b, high: 2.0}\n"
    )
    assert main(["validate", str(path)]) == 0, capsys.readouterr().err
    from l2lflow.config import load_yaml

    assert load_yaml(path)["space"]["z"] == {"low": -1.0, "high": 2.0}


def test_error_names_first_of_several_problems(tmp_path: Path, capsys) -> None:
    """Several problems: one line about one of them (the outermost), not a list."""
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(changed({"seed": "x", "space.x.low": "y", "generations": 0})))
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"{PREFIX}generations: ")


# ---------------------------------------------------------------- the same refusals under Snakemake
def test_config_files_as_snakemake_takes_them(tmp_path: Path) -> None:
    from l2lflow.workflow import config_files

    a, b, c = (tmp_path / f"{n}.yaml" for n in "abc")
    for f in (a, b, c):
        f.write_text("name: x\n")
    argv = ["snakemake", "--configfile", str(a), str(b), "--cores", "1", f"--configfiles={c}"]
    assert config_files(argv) == [a, b, c]
    # relative to where Snakemake started, also with --directory
    moved = ["snakemake", "--directory", "/", "--configfile", "a.yaml", "gone.yaml"]
    assert config_files(moved, {"PWD": str(tmp_path)}) == [tmp_path / "a.yaml"]


def test_snakemake_refuses_a_duplicate_key_as_validate_does(tmp_path: Path) -> None:
    """Snakemake's loader keeps the last of two equal keys: the run used to go ahead."""
    path = tmp_path / "dup.yaml"
    path.write_text(base_text() + "seed: 2\n" + f"results: {tmp_path / 'results'}\n")
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile")]
        + ["--directory", str(tmp_path), "--configfile", str(path), "-n"],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode != 0
    output = proc.stdout + proc.stderr  # Snakemake prints its errors on stdout
    assert f"l2lflow: {path}: seed: duplicate key (lines 2 and 9)" in output, output
    assert not (tmp_path / "results").exists()


def test_capacity_limits_and_a_resume_counts_only_what_is_missing(tmp_path: Path) -> None:
    from l2lflow.config import ConfigError, check_capacity, validate_config

    config = validate_config({**changed({"population_size": 1000}), "results": str(tmp_path)})
    # 1000 × (1024 + 128) bytes of engine memory; per generation 1000 × (48 + 8) bytes of store
    # and a 4096-byte block for each of the 1 + 12 variables' chunk files: 109,248 bytes
    check_capacity(config, available_memory=1_152_000, free_disk=2 * 109_248)
    with pytest.raises(ConfigError, match=r"^population_size: .* more than the 1.2 MB available"):
        check_capacity(config, available_memory=1_151_999, free_disk=10**9)
    with pytest.raises(ConfigError, match=r"^generations: .* more than the 218.5 kB free in"):
        check_capacity(config, available_memory=10**9, free_disk=2 * 109_248 - 1)
    (tmp_path / "half").write_bytes(bytes(109_248))  # a generation already stored
    check_capacity(config, available_memory=10**9, free_disk=109_248)


# ---------------------------------------------------------------- a Slurm run on a machine unfit
def _slurm_execution(interface: str | None = "lo") -> dict[str, Any]:
    pool = {"partition": "batch", "account": "acct", "interface": interface}
    return {"backend": "slurm", "pools": {"cpu": pool}}


def test_interface_this_machine_lacks_names_its_key_and_the_interfaces() -> None:
    import psutil

    from l2lflow.config import ConfigError
    from l2lflow.workflow import check_execution_here

    with pytest.raises(ConfigError) as err:
        check_execution_here(_slurm_execution("ib9"))
    text = str(err.value)
    assert text.startswith("execution.pools.cpu.interface: 'ib9' is not a network interface")
    assert f"(it has: {', '.join(sorted(psutil.net_if_addrs()))})" in text


def test_slurm_without_sbatch_says_so(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from l2lflow.config import ConfigError
    from l2lflow.workflow import check_execution_here

    monkeypatch.setenv("PATH", str(tmp_path))  # a machine without Slurm's commands
    with pytest.raises(ConfigError, match=r"^execution\.backend: 'slurm' .* no 'sbatch' on PATH"):
        check_execution_here(_slurm_execution())
    check_execution_here({"backend": "local"})  # a local run needs none of it


def test_slurm_profile_on_a_machine_without_slurm_under_snakemake(tmp_path: Path) -> None:
    """`snakemake --profile profiles/juwels` here: it failed only in the first evaluate step
    ("Cluster failed to start: 'ib0' is not a valid network interface"); now one line before the
    run, naming the key; and without sbatch, that Slurm is missing."""
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({**BASE, "results": str(tmp_path / "results")}))
    bin_dir = Path(sys.executable).parent
    for env_path, expected in (
        (os.environ["PATH"], "l2lflow: execution.pools.cpu.interface: 'ib0' is not a network"),
        (str(bin_dir), "no 'sbatch' on PATH"),
    ):
        profile = "juwels" if "ib0" in expected else "local-slurm"
        proc = subprocess.run(
            [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile")]
            + ["--directory", str(tmp_path), "--profile", str(ROOT / "profiles" / profile)]
            + ["--configfile", str(cfg), "--cores", "1"],
            capture_output=True,
            text=True,
            timeout=240,
            env={**os.environ, "PATH": env_path, "L2LFLOW_ACCOUNT": "acct"},
        )
        output = proc.stdout + proc.stderr
        assert proc.returncode != 0
        assert [x for x in output.splitlines() if x.startswith("l2lflow: ")][0].find(
            expected
        ) >= 0, output
        assert not (tmp_path / "results").exists()
