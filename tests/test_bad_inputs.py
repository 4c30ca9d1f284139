"""Bad results stores and bad command lines: one clear line, exit code != 0, store untouched.

The config half of the bad-input matrix is ``test_config_errors.py`` (every bad config through
``l2lflow validate``). Here: damaged or foreign results stores under every command that opens
one (``status``, ``export``, ``plot``, ``check``, resuming with ``run``) and malformed command
lines. For each case the command exits != 0, stderr is exactly one line that names the path or
argument at fault and what was expected, and the store's files are byte-identical before and
after (a SHA-256 over every file's name and bytes).

``l2lflow check`` itself (item 8 of the resilience issue): healthy stores pass; each kind of
damage is reported with the variable and file and exit code 1.

Commands run in-process (``l2lflow.cli.main``) for speed; a few through the real ``l2lflow``
executable to prove that nothing differs there.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import yaml
from helpers import run_snakemake, write_config

from l2lflow.cli import main

pytestmark = pytest.mark.resilience

PREFIX = "l2lflow: error: "
#: generations 0 and 1 aggregated, 2 sampled and pending (config asks for 3)
GENERATIONS = 3


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> tuple[Path, Path]:
    """(config, results) of a small sphere run stopped after sampling its last generation."""
    from l2lflow.config import load_config
    from l2lflow.experiment import Experiment

    tmp = tmp_path_factory.mktemp("base")
    cfg = write_config(
        tmp,
        name="s",
        generations=GENERATIONS,
        population_size=4,
        execution={"workers": 1, "idle_timeout_s": 5},
    )
    exp = Experiment(load_config(cfg))
    try:
        for g in range(GENERATIONS - 1):
            exp.sample(g)
            exp.evaluate(g)
            exp.aggregate(g)
        exp.sample(GENERATIONS - 1)
    finally:
        exp.close()
    return cfg, tmp / "results" / "s"


def tree_hash(path: Path) -> str:
    """SHA-256 over the relative name and bytes of every file below ``path`` (or of the file)."""
    h = hashlib.sha256()
    if path.is_file():
        h.update(path.read_bytes())
        return h.hexdigest()
    for root, dirs, files in os.walk(path):
        dirs.sort()
        for name in sorted(files):
            f = Path(root) / name
            h.update(str(f.relative_to(path)).encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()


def run_cli(argv: list[str], capsys) -> tuple[int, str, str]:
    capsys.readouterr()
    try:
        code = main([str(a) for a in argv])
    except SystemExit as exc:  # argparse's usage errors exit; the message is on stderr
        code = exc.code if isinstance(exc.code, int) else 2
        if isinstance(exc.code, str):
            print(exc.code, file=sys.stderr)
    out = capsys.readouterr()
    return code, out.out, out.err


# ---------------------------------------------------------------------------- damaging a store
def chunk(results: Path, name: str, generation: int) -> Path:
    tail = ("c", str(generation)) if name == "optimizer/state" else ("c", str(generation), "0")
    return results / "results.zarr" / name / Path(*tail)


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: max(1, path.stat().st_size // 2)])


def set_attr(results: Path, key: str, value) -> None:
    meta = results / "results.zarr" / "zarr.json"
    doc = json.loads(meta.read_text())
    doc["attributes"]["l2lflow"][key] = value
    meta.write_text(json.dumps(doc))


def moved(results: Path) -> None:
    """A copied store's config names its new folder, as after ``mv`` of an experiment folder
    and the matching edit of ``results`` in the config (else a resume records the change)."""
    meta = results / "results.zarr" / "zarr.json"
    doc = json.loads(meta.read_text())
    doc["attributes"]["l2lflow"]["config"]["results"] = str(results)
    meta.write_text(json.dumps(doc))


def store_is_file(r: Path) -> None:
    shutil.rmtree(r / "results.zarr")
    (r / "results.zarr").write_text("not a store\n")


def root_not_json(r: Path) -> None:
    (r / "results.zarr" / "zarr.json").write_text('{"zarr_format": 3, "node_type": ')


def foreign_zarr(r: Path) -> None:
    meta = r / "results.zarr" / "zarr.json"
    doc = json.loads(meta.read_text())
    doc["attributes"] = {"made_by": "someone else"}
    doc.pop("consolidated_metadata", None)
    meta.write_text(json.dumps(doc))


def write_state_text(results: Path, generation: int, text: str) -> None:
    import zarr

    root = zarr.open_group(str(results / "results.zarr"), mode="r+", use_consolidated=False)
    root["optimizer/state"][generation] = text


@dataclass
class StoreCase:
    id: str
    damage: Callable[[Path], None] | None
    #: argv with ``{r}`` for the results folder and ``{cfg}`` for the config
    argv: tuple[str, ...]
    #: substrings the one line must contain (``{r}``: the results folder)
    needles: tuple[str, ...]
    #: edits of the config used by ``run`` (None: the store's own config)
    config: dict | None = None


READERS = {
    "status": ("status", "{r}"),
    "status-json": ("status", "--json", "{r}"),
    "export": ("export", "{r}", "--out", "{r}/../table.csv"),
    "plot": ("plot", "{r}", "--out", "{r}/../figures"),
    "check": ("check", "{r}"),
    "resume": ("run", "{cfg}"),
    "validate": ("validate", "{cfg}"),
}


def across(id, damage, commands, needles, **kw) -> list[StoreCase]:
    return [StoreCase(f"{id}-{c}", damage, READERS[c], needles, **kw) for c in commands]


STORE_CASES: list[StoreCase] = [
    *across(
        "store-is-a-file",
        store_is_file,
        ("status", "status-json", "export", "plot", "check", "resume"),
        ("{r}/results.zarr", "is a file", "expected a Zarr store folder"),
    ),
    *across(
        "no-store",
        lambda r: shutil.rmtree(r / "results.zarr"),
        ("status", "status-json", "export", "plot", "check"),
        ("{r}/results.zarr", "no", "results store here"),
    ),
    *across(
        "newer-format",
        lambda r: set_attr(r, "format_version", 99),
        ("status", "status-json", "export", "plot", "check", "resume", "validate"),
        ("{r}/results.zarr", "format version 99", "newer", "(1)", "upgrade l2lflow"),
    ),
    *across(
        "root-metadata-not-json",
        root_not_json,
        ("status", "status-json", "export", "plot", "resume"),
        ("{r}/results.zarr/zarr.json", "expected JSON"),
    ),
    *across(
        "zarr-store-of-something-else",
        foreign_zarr,
        ("status", "export", "plot", "check", "resume"),
        ("{r}/results.zarr", "not an l2lflow results store"),
    ),
    *across(
        "another-experiment-seed",
        None,
        ("resume", "validate"),
        ("{r}/results.zarr", "another configuration", "seed: 7 -> 8"),
        config={"seed": 8},
    ),
    StoreCase(
        "another-experiment-space",
        None,
        READERS["resume"],
        ("{r}/results.zarr", "another configuration", "space"),
        config={"space": {"a": {"low": -1.0, "high": 1.0}}},
    ),
    StoreCase(
        "another-experiment-threads",
        None,
        READERS["resume"],
        ("{r}/results.zarr", "another configuration", "evaluation.threads: 1 -> 2"),
        config={"evaluation": {"retries": 1, "timeout_s": 30, "threads": 2}},
    ),
    StoreCase(
        "another-experiment-population",
        None,
        READERS["resume"],
        ("{r}/results.zarr", "another configuration", "population_size"),
        config={"population_size": 6},
    ),
    *across(
        "truncated-fitness-chunk",
        lambda r: truncate(chunk(r, "fitness", 1)),
        ("status", "status-json", "export", "plot"),
        ("{r}", "does not decode", "l2lflow check"),
    ),
    *across(
        "truncated-parameter-chunk-of-pending-generation",
        lambda r: truncate(chunk(r, "a", 2)),
        ("export", "resume"),
        ("{r}", "does not decode", "l2lflow check {r}"),
    ),
    *across(
        "truncated-optimizer-checkpoint",
        lambda r: truncate(chunk(r, "optimizer/state", 1)),
        ("status", "resume"),
        ("{r}", "does not decode", "l2lflow check {r}"),
    ),
    StoreCase(
        "deleted-parameter-chunk-of-pending-generation-resume",
        lambda r: chunk(r, "a", 2).unlink(),
        READERS["resume"],
        ("{r}/results.zarr", "parameter 'a' of generation 2", "missing", "l2lflow check"),
    ),
    *across(
        "truncated-variable-metadata",
        lambda r: truncate(r / "results.zarr" / "fitness" / "zarr.json"),
        ("status", "resume"),
        ("{r}/results.zarr", "variable 'fitness'", "cannot be read", "l2lflow check {r}"),
    ),
    StoreCase(
        "checkpoint-not-json-resume",
        lambda r: write_state_text(r, 1, "this is no checkpoint"),
        READERS["resume"],
        ("{r}/results.zarr", "optimizer checkpoint 1 is damaged"),
    ),
]


def _fill(text: str, results: Path, cfg: Path) -> str:
    return text.replace("{r}", str(results)).replace("{cfg}", str(cfg))


def assert_one_clear_line(code: int, err: str, needles: list[str]) -> str:
    assert code not in (0, None), f"exit code {code}; stderr: {err!r}"
    lines = err.strip().splitlines()
    assert len(lines) == 1, f"expected one line, got:\n{err}"
    line = lines[0]
    assert line.startswith(PREFIX), line
    assert "Traceback" not in line and "internal error" not in line, line
    for needle in needles:
        assert needle in line, f"{needle!r} not in {line!r}"
    return line


@pytest.mark.parametrize("case", STORE_CASES, ids=lambda c: c.id)
def test_bad_store_one_line_and_untouched(case: StoreCase, base, tmp_path: Path, capsys) -> None:
    cfg_base, results_base = base
    results = tmp_path / "results" / "s"
    shutil.copytree(results_base, results)
    moved(results)
    config = yaml.safe_load(cfg_base.read_text())
    config["results"] = str(results)
    if case.config:
        config.update(case.config)
    cfg = tmp_path / "s.yaml"
    cfg.write_text(yaml.safe_dump(config))
    if case.damage is not None:
        case.damage(results)
    store = results / "results.zarr"
    before = tree_hash(store) if store.exists() else None
    argv = [_fill(a, results, cfg) for a in case.argv]
    code, out, err = run_cli(argv, capsys)
    if case.argv[0] == "check" and code == 1:
        # a store check reports damage as its result (stdout), with exit code 1
        assert "DAMAGED" in out and str(store) in out, out
    else:
        assert_one_clear_line(code, err, [_fill(n, results, cfg) for n in case.needles])
    after = tree_hash(store) if store.exists() else None
    assert before == after, "the store's files changed"
    assert not (tmp_path / "table.csv").exists() and not (tmp_path / "figures").exists()


# ---------------------------------------------------------------------------- command lines
CLI_CASES: list[tuple[str, tuple[str, ...], tuple[str, ...]]] = [
    ("no-command", (), ("COMMAND", "required", "--help")),
    ("unknown-command", ("frobnicate",), ("invalid choice", "'frobnicate'", "validate")),
    ("run-without-config", ("run",), ("config", "required")),
    ("run-generations-not-int", ("run", "{cfg}", "--generations", "abc"), ("--generations", "int")),
    ("run-workers-not-int", ("run", "{cfg}", "--workers", "two"), ("--workers", "int")),
    ("run-unknown-option", ("run", "{cfg}", "--generation", "3x"), ("--generation", "3x")),
    ("run-missing-config", ("run", "{tmp}/nope.yaml"), ("{tmp}/nope.yaml",)),
    ("validate-missing-file", ("validate", "{tmp}/nope.yaml"), ("{tmp}/nope.yaml",)),
    ("validate-a-folder", ("validate", "{tmp}"), ("{tmp}",)),
    ("status-interval-not-number", ("status", "{r}", "--interval", "soon"), ("--interval",)),
    ("status-last-not-int", ("status", "{r}", "--last", "many"), ("--last", "int")),
    ("export-unknown-format", ("export", "{r}", "--format", "xml"), ("--format", "csv", "parquet")),
    ("plot-unknown-figure", ("plot", "{r}", "--figures", "pie"), ("--figures", "pie", "fitness")),
    ("step-unknown-op", ("step", "jump", "--results", "{r}"), ("jump", "sample", "evaluate")),
    ("step-without-results", ("step", "sample"), ("--results", "required")),
    ("step-without-generation", ("step", "sample", "--results", "{r}"), ("--generation",)),
    ("check-without-results", ("check",), ("results", "required")),
    ("profiles-without-action", ("profiles",), ("action", "required")),
]


@pytest.mark.parametrize("case", CLI_CASES, ids=lambda c: c[0])
def test_bad_command_line_one_line(case, base, tmp_path: Path, capsys) -> None:
    _, argv, needles = case
    cfg, results = base
    before = tree_hash(results / "results.zarr")

    def fill(s: str) -> str:
        return (
            s.replace("{r}", str(results))
            .replace("{cfg}", str(cfg))
            .replace("{tmp}", str(tmp_path))
        )

    code, _, err = run_cli([fill(a) for a in argv], capsys)
    line = err.strip().splitlines()
    assert code not in (0, None) and len(line) == 1, f"exit {code}: {err!r}"
    assert "Traceback" not in err
    for needle in needles:
        assert fill(needle) in line[0], f"{fill(needle)!r} not in {line[0]!r}"
    assert tree_hash(results / "results.zarr") == before


def test_real_executable_gives_the_same_one_line(base, tmp_path: Path) -> None:
    """The installed ``l2lflow`` command prints the same single line (no traceback)."""
    _, results = base
    copy = tmp_path / "r"
    shutil.copytree(results, copy)
    truncate(chunk(copy, "fitness", 1))
    set_attr(copy, "note", "x")  # any metadata edit, keeps the store valid
    exe = shutil.which("l2lflow") or sys.executable
    prefix = [exe] if exe != sys.executable else [sys.executable, "-m", "l2lflow"]
    for argv, needle in (
        (["status", str(copy)], "does not decode"),
        (["export", str(copy), "--format", "xml"], "--format"),
        (["status", str(tmp_path / "nothing")], "no results store here"),
    ):
        proc = subprocess.run([*prefix, *argv], capture_output=True, text=True, timeout=120)
        assert proc.returncode != 0
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(PREFIX) and needle in lines[0], proc.stderr


def test_matrix_size() -> None:
    """The issue asks for >= 40 bad inputs besides the configs of test_config_errors.py."""
    assert len(STORE_CASES) + len(CLI_CASES) >= 60


# ---------------------------------------------------------------------------- l2lflow check
def zarr_write(results: Path, name: str, index, value) -> None:
    import zarr

    root = zarr.open_group(str(results / "results.zarr"), mode="r+", use_consolidated=False)
    root[name][index] = value


DAMAGE: dict[str, tuple[Callable[[Path], None], tuple[str, ...]]] = {
    "deleted-fitness-chunk": (
        lambda r: chunk(r, "fitness", 1).unlink(),
        ("fitness: chunk of generation 1 missing", "fitness/c/1/0"),
    ),
    "deleted-seed-chunk": (
        lambda r: chunk(r, "seed", 2).unlink(),
        ("seed: chunk of generation 2 missing",),
    ),
    "truncated-status-chunk": (
        lambda r: truncate(chunk(r, "status", 0)),
        ("status: generation 0 does not decode", "status/c/0/0"),
    ),
    "done-with-nan-fitness": (
        lambda r: zarr_write(r, "fitness", (1, 2), np.nan),
        ("fitness: generation 1 individual 2 is done but its fitness is nan",),
    ),
    "failed-with-a-fitness": (
        lambda r: zarr_write(r, "status", (0, 3), 2),
        ("fitness: generation 0 individual 3 failed but its fitness is",),
    ),
    "status-out-of-range": (
        lambda r: zarr_write(r, "status", (1, 0), 7),
        ("status: generation 1 individual 0 is 7",),
    ),
    "pending-in-aggregated-generation": (
        lambda r: zarr_write(r, "status", (0, 1), 0),
        ("status: generation 0 is aggregated but 1 individual(s) are pending",),
    ),
    "parameter-outside-space": (
        lambda r: zarr_write(r, "a", (1, 1), 5.0),
        ("a: generation 1 individual 1 is 5.0, outside",),
    ),
    "checkpoint-not-json": (
        lambda r: write_state_text(r, 0, "{broken"),
        ("optimizer/state: checkpoint of generation 0 is not JSON",),
    ),
    "variable-missing": (
        lambda r: shutil.rmtree(r / "results.zarr" / "seed"),
        ("seed: variable missing",),
    ),
}


def test_check_healthy_store(base, capsys) -> None:
    _, results = base
    before = tree_hash(results / "results.zarr")
    code, out, err = run_cli(["check", results], capsys)
    assert code == 0, out + err
    assert out.strip().endswith("healthy")
    assert "3 generation(s) sampled, 2 aggregated, population 4" in out
    assert tree_hash(results / "results.zarr") == before


@pytest.mark.parametrize("kind", sorted(DAMAGE))
def test_check_reports_damage(kind: str, base, tmp_path: Path, capsys) -> None:
    _, results_base = base
    results = tmp_path / "s"
    shutil.copytree(results_base, results)
    damage, needles = DAMAGE[kind]
    damage(results)
    before = tree_hash(results / "results.zarr")
    code, out, _ = run_cli(["check", results], capsys)
    assert code == 1, out
    damaged = [line for line in out.splitlines() if "DAMAGED:" in line]
    assert damaged, out
    for needle in needles:
        assert any(needle in line for line in damaged), f"{needle!r} not in:\n{out}"
    assert out.strip().splitlines()[-1].startswith("damaged: ")
    assert tree_hash(results / "results.zarr") == before, "check wrote to the store"


# ---------------------------------------------------------------------------- safe loading
class _Payload:
    """Unpickling this runs a shell command that creates the marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def payloads(marker: Path) -> tuple[bytes, str]:
    """(binary pickle, ASCII protocol-0 pickle) that create ``marker`` when unpickled; proven
    live here, so a test that finds no marker proves nothing unpickled them."""
    import pickle

    binary = pickle.dumps(_Payload(marker), protocol=pickle.HIGHEST_PROTOCOL)
    text = pickle.dumps(_Payload(marker), protocol=0).decode("ascii")
    for p in (binary, text.encode("ascii")):
        pickle.loads(p)  # noqa: S301 - the point: these payloads are live
        assert marker.exists()
        marker.unlink()
    return binary, text


def plant_inert(results: Path, binary: bytes, text: str) -> None:
    """Pickles where a careless loader might look; none of them is the store's data."""
    store = results / "results.zarr"
    meta = store / "zarr.json"
    doc = json.loads(meta.read_text())
    doc["attributes"]["l2lflow"]["optimizer_state"] = text
    doc["attributes"]["l2lflow"]["pickle"] = binary.hex()
    meta.write_text(json.dumps(doc))
    fit = store / "fitness" / "zarr.json"
    doc = json.loads(fit.read_text())
    doc.setdefault("attributes", {})["state"] = text
    fit.write_text(json.dumps(doc))
    (store / "optimizer" / "state.pkl").write_bytes(binary)
    (results / "optimizer.pickle").write_bytes(binary)
    (results / "checkpoint.npy").write_bytes(binary)


def plant_pickle_array(results: Path, binary: bytes) -> None:
    """An array whose codec would unpickle its chunk (zarr 3 knows no such codec)."""
    store = results / "results.zarr"
    # an array whose codec would unpickle its chunks (zarr 3 has no such codec: must not load)
    evil = store / "evil"
    (evil / "c" / "0").mkdir(parents=True)
    (evil / "zarr.json").write_text(
        json.dumps(
            {
                "zarr_format": 3,
                "node_type": "array",
                "shape": [2],
                "data_type": "float64",
                "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": [2]}},
                "chunk_key_encoding": {"name": "default", "configuration": {"separator": "/"}},
                "fill_value": 0.0,
                "codecs": [{"name": "numcodecs.pickle", "configuration": {"protocol": 5}}],
                "dimension_names": ["evil"],
                "attributes": {},
            }
        )
    )
    (evil / "c" / "0" / "0").write_bytes(binary)


def test_planted_pickles_are_never_loaded(base, tmp_path: Path, capsys) -> None:
    """Open, inspect, check and resume a store full of live pickles: none runs; the run ends."""
    cfg_base, results_base = base
    marker = tmp_path / "PWNED"
    binary, text = payloads(marker)
    results = tmp_path / "results" / "s"
    shutil.copytree(results_base, results)
    moved(results)
    plant_inert(results, binary, text)
    config = yaml.safe_load(cfg_base.read_text())
    config["results"] = str(results)
    cfg = tmp_path / "s.yaml"
    cfg.write_text(yaml.safe_dump(config))
    outcomes = {}
    for argv in (
        ["status", results],
        ["status", "--json", results],
        ["export", results, "--out", tmp_path / "t.csv"],
        ["check", results],
        ["run", cfg],  # resumes: evaluates and aggregates generation 2
    ):
        code, out, err = run_cli(argv, capsys)
        outcomes[argv[0] + ("-json" if "--json" in argv else "")] = code
        assert not marker.exists(), f"{argv}: a planted pickle was executed"
        if code not in (0, 1):
            assert_one_clear_line(code, err, [])
    assert outcomes == {"status": 0, "status-json": 0, "export": 0, "check": 0, "run": 0}
    from l2lflow.store import ResultStore

    store = ResultStore(results)
    assert store.n_aggregated() == GENERATIONS
    assert store.checkpoint(GENERATIONS - 1)["summary"]["n_done"] == 4
    assert not marker.exists()


def test_array_with_a_pickle_codec_is_refused_unread(base, tmp_path: Path, capsys) -> None:
    """A variable whose codec would unpickle: the store's readers refuse the store, xarray's
    view (consolidated metadata, which does not list it) ignores it; none unpickles (zarr 3
    registers no pickle codec, and l2lflow adds none)."""
    cfg_base, results_base = base
    marker = tmp_path / "PWNED"
    binary, _ = payloads(marker)
    results = tmp_path / "results" / "s"
    shutil.copytree(results_base, results)
    moved(results)
    plant_pickle_array(results, binary)
    config = yaml.safe_load(cfg_base.read_text())
    config["results"] = str(results)
    cfg = tmp_path / "s.yaml"
    cfg.write_text(yaml.safe_dump(config))
    before = tree_hash(results / "results.zarr")
    for argv in (["status", results], ["run", cfg]):
        code, _, err = run_cli(argv, capsys)
        assert_one_clear_line(code, err, ["'evil'", "numcodecs.pickle", "l2lflow check"])
        assert not marker.exists(), f"{argv}: the planted pickle was executed"
    code, out, _ = run_cli(["export", results, "--out", tmp_path / "t.csv"], capsys)
    assert code == 0 and "evil" not in (tmp_path / "t.csv").read_text().splitlines()[0]
    code, out, _ = run_cli(["check", results], capsys)
    assert code == 1 and "evil: cannot open" in out, out
    import l2lflow

    assert "evil" not in l2lflow.open_results(results).load().variables
    assert not marker.exists()
    assert tree_hash(results / "results.zarr") == before


@pytest.mark.parametrize("where", ["checkpoint-text", "checkpoint-chunk"])
def test_pickle_as_optimizer_checkpoint_is_refused(where, base, tmp_path: Path, capsys) -> None:
    """A pickle in place of the optimizer checkpoint a resume needs: refused, never loaded."""
    cfg_base, results_base = base
    marker = tmp_path / "PWNED"
    binary, text = payloads(marker)
    results = tmp_path / "results" / "s"
    shutil.copytree(results_base, results)
    moved(results)
    if where == "checkpoint-text":
        write_state_text(results, 1, text)
        needles = ["optimizer checkpoint 1 is damaged"]
    else:
        chunk(results, "optimizer/state", 1).write_bytes(binary)
        needles = ["does not decode", "l2lflow check"]
    config = yaml.safe_load(cfg_base.read_text())
    config["results"] = str(results)
    cfg = tmp_path / "s.yaml"
    cfg.write_text(yaml.safe_dump(config))
    before = tree_hash(results / "results.zarr")
    code, _, err = run_cli(["run", cfg], capsys)
    assert_one_clear_line(code, err, needles)
    code, out, _ = run_cli(["check", results], capsys)
    assert code == 1 and "optimizer/state" in out, out
    assert not marker.exists(), "the planted pickle was executed"
    assert tree_hash(results / "results.zarr") == before


def test_no_code_loads_objects_from_files() -> None:
    """The package never calls an unpickler or evaluator on data (a regression guard)."""
    import re

    src = Path(__file__).resolve().parents[1] / "src" / "l2lflow"
    banned = re.compile(
        r"pickle\.loads?\(|cloudpickle\.loads?\(|marshal\.loads?\(|\beval\(|\bexec\(|"
        r"yaml\.load\(|yaml\.unsafe_load|allow_pickle\s*=\s*True|shelve\.open|dill\."
    )
    hits = [
        f"{path.relative_to(src)}:{n}: {line.strip()}"
        for path in sorted(src.rglob("*.py"))
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if banned.search(line) and not line.lstrip().startswith("#")
    ]
    assert hits == [], "\n".join(hits)


# ---------------------------------------------------------------------------- where results go
def _mount_tmpfs(path: Path, options: str) -> None:
    """A small tmpfs at ``path`` (root only), or skip saying why."""
    if os.geteuid() != 0:
        pytest.skip("needs root to mount a small tmpfs (a full or read-only disk)")
    path.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], text=True, capture_output=True
    )
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip()}")


@pytest.fixture
def mounts():
    """Paths to undo after the test: tmpfs mounts (unmounted) and immutable folders (freed)."""
    mounted: list[Path] = []
    yield mounted
    for path in mounted:
        if path.name == "locked":
            subprocess.run(["chattr", "-i", str(path)], check=False)
        else:
            subprocess.run(["umount", "-l", str(path)], check=False)


def _results_case(kind: str, tmp_path: Path, mounts: list[Path]) -> tuple[Path, str]:
    """(results path, the words its refusal must contain) for one kind of bad results path."""
    if kind == "results-is-a-file":
        (tmp_path / "res").write_text("my notes\n")
        return tmp_path / "res", "is a file, not a folder"
    if kind == "parent-is-a-file":
        (tmp_path / "res").write_text("my notes\n")
        return tmp_path / "res" / "s", "is a file, so"
    if kind == "read-only-file-system":
        _mount_tmpfs(tmp_path / "ro", "ro,size=1m")
        mounts.append(tmp_path / "ro")
        return tmp_path / "ro" / "s", "read-only file system"
    assert kind == "folder-not-writable"
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    if os.geteuid() == 0:  # root writes into any folder, but not into an immutable one
        proc = subprocess.run(["chattr", "+i", str(locked)], text=True, capture_output=True)
        if proc.returncode != 0:
            pytest.skip(f"root writes into any folder, and chattr +i fails: {proc.stderr}")
        mounts.append(locked)
    return locked / "s", "not writable for this user"


RESULTS_KINDS = [
    "results-is-a-file",
    "parent-is-a-file",
    "read-only-file-system",
    "folder-not-writable",
]


@pytest.mark.parametrize("command", ["validate", "run"])
@pytest.mark.parametrize("kind", RESULTS_KINDS)
def test_bad_results_path_one_line(kind, command, tmp_path: Path, mounts, capsys) -> None:
    """Used to be a FileExistsError / OSError traceback from makedirs (or, for `run` on a
    read-only disk, a traceback from the store)."""
    results, words = _results_case(kind, tmp_path, mounts)
    cfg = write_config(tmp_path / "cfg", name="s", results=str(results))
    before = tree_hash(tmp_path)
    code, out, err = run_cli([command, cfg], capsys)
    line = assert_one_clear_line(code, err, ["results: ", words, "set 'results'"])
    assert str(results) in line or str(results.parent) in line, line
    assert tree_hash(tmp_path) == before, "something was written"


def test_results_is_a_file_under_snakemake(tmp_path: Path) -> None:
    (tmp_path / "res").write_text("my notes\n")
    cfg = write_config(tmp_path, name="s", results=str(tmp_path / "res"))
    proc = run_snakemake(tmp_path, cfg, "-n", check=False)
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert f"l2lflow: results: {tmp_path / 'res'} is a file, not a folder" in output, output
    assert "FileExistsError" not in output
    assert (tmp_path / "res").read_text() == "my notes\n"


def test_full_disk_mid_run_one_line_then_resume(tmp_path: Path, mounts) -> None:
    """A disk that fills up during a run: one line that says so (it read "the results store
    does not decode"), the store stays healthy, and after room is made the run resumes. The
    same full disk at the start of a run is refused before anything is written."""
    disk = tmp_path / "disk"
    _mount_tmpfs(disk, "size=64m")
    mounts.append(disk)
    results = disk / "s"
    cfg = write_config(
        tmp_path,
        name="s",
        generations=1000,
        population_size=50,
        results=str(results),
        execution={"workers": 1, "idle_timeout_s": 10},
    )
    cmd = [sys.executable, "-m", "l2lflow", "run", str(cfg)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 240
        while not (results / "results.zarr" / "zarr.json").exists():
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.2)
        time.sleep(1.0)
        filler = disk / "filler"
        with filler.open("wb") as f, contextlib.suppress(OSError):
            while True:
                f.write(bytes(1 << 20))
        _, err = proc.communicate(timeout=240)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode != 0
    line = [x for x in err.splitlines() if x.startswith(PREFIX)]
    assert len(line) == 1 and "Traceback" not in err, err
    assert f"{results}: no space left on the device while writing the results" in line[0]
    # the full disk at the start of the next run: refused before a write
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=240)
    assert again.returncode == 2 and "free in" in again.stderr, again.stderr
    filler.unlink()
    check = subprocess.run(
        [sys.executable, "-m", "l2lflow", "check", str(results)],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert check.returncode == 0, check.stdout + check.stderr
    resumed = subprocess.run(
        [*cmd, "--generations", "2"], capture_output=True, text=True, timeout=240
    )
    assert resumed.returncode == 0, resumed.stderr


def test_validate_says_a_compatible_store_resumes(base, capsys) -> None:
    cfg, results = base
    before = tree_hash(results / "results.zarr")
    code, out, err = run_cli(["validate", cfg], capsys)
    assert code == 0 and err == "", err
    assert out.strip().endswith(f"results in {results}, resumes the store there)"), out
    assert tree_hash(results / "results.zarr") == before
