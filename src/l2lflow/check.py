"""``l2lflow check RESULTS``: is a results store intact, and if not, what exactly is damaged?

What is checked (each problem is reported with the variable, the generation and the file):

* metadata: the root ``zarr.json`` is JSON with l2lflow attributes of a known format version;
  every variable's ``zarr.json`` is JSON; the variables of the layout exist.
* shapes: the committed generations are those of the snapshot (the consolidated metadata in
  the root ``zarr.json``, the commit marker a writer writes last); every ``(generation, ...)``
  variable has at least that many rows. A row beyond them is a generation whose sampling was
  interrupted, a variable not in the snapshot one whose creation was: resuming redoes both (a
  note, not damage), and every reader ignores them meanwhile.
* chunks: every chunk file present decodes. The writer puts every chunk of the committed shape
  on disk (fill-only ones too; ``every_chunk_written`` in the store's attributes), so any
  missing chunk file of a committed variable is damage. (Stores written before that: a missing
  chunk is damage only where the values cannot all be the fill value: ``seed`` and float
  parameters for every sampled generation, ``status``, ``fitness`` and ``attempts`` for every
  aggregated one.)
* consistency: status values are 0/1/2; done => finite fitness; failed => the failure fitness;
  pending only in the last sampled generation, never in an aggregated one; every generation but
  the last is aggregated; seeds are those the config's seed gives; parameters lie in their space;
  a done meta-test has a finite fitness.
* optimizer checkpoints: present and JSON (with ``optimizer`` and ``summary``) for every
  aggregated generation, none after a missing one.

Nothing is written. Exit code 0: healthy; 1: damaged (the report names each problem).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from l2lflow.store import (
    CREATING_PREFIX,
    DONE,
    FAILED,
    FORMAT_VERSION,
    PENDING,
    StoreError,
    _snapshot,
    store_path,
)

#: the variables every store has (besides one per parameter)
CORE = ("generation", "individual", "fitness", "status", "seed", "optimizer/state")
PROVENANCE = ("runtime", "attempts", "worker", "error", "log", "finished_at")


@dataclass
class Report:
    path: Path
    damage: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    summary: list[str] = field(default_factory=list)

    @property
    def healthy(self) -> bool:
        return not self.damage

    def render(self) -> str:
        lines = [f"{self.path}:", *(f"  {s}" for s in self.summary)]
        lines += [f"  note: {n}" for n in self.notes]
        lines += [f"  DAMAGED: {d}" for d in self.damage]
        if self.healthy:
            lines.append("healthy")
        else:
            lines.append(f"damaged: {len(self.damage)} problem(s)")
        return "\n".join(lines)


def _results_dir(path: str | Path) -> Path:
    path = Path(path)
    return path.parent if path.name == store_path(".").name else path


def _read_json(path: Path) -> tuple[Any, str | None]:
    try:
        return json.loads(path.read_text()), None
    except FileNotFoundError:
        return None, "missing"
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        return None, f"not JSON ({type(exc).__name__}: {exc})"


def _chunk_file(store: Path, name: str, arr: Any, index: tuple[int, ...]) -> Path:
    return store / name / arr.metadata.encode_chunk_key(index)


def check_store(results: str | Path) -> Report:
    """Check the store of ``results`` (the experiment folder or the store itself)."""
    results_dir = _results_dir(results)
    path = store_path(results_dir)
    if not path.exists():
        raise StoreError(f"{path}: no results store here (expected a folder with zarr.json)")
    if not path.is_dir():
        raise StoreError(f"{path}: is a file, expected a Zarr store folder")
    report = Report(path)
    doc, problem = _read_json(path / "zarr.json")
    if problem is not None:
        report.damage.append(f"zarr.json: {problem}; the store's metadata cannot be read")
        return report
    attrs = (doc.get("attributes") or {}).get("l2lflow") if isinstance(doc, dict) else None
    if not isinstance(attrs, dict):
        report.damage.append("zarr.json: no 'l2lflow' attributes; not an l2lflow results store")
        return report
    version = attrs.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise StoreError(
            f"{path}: store format version {version!r} is newer than this l2lflow understands "
            f"({FORMAT_VERSION}); upgrade l2lflow to check it"
        )
    try:
        config = attrs["config"]
        parameters = list(attrs["parameters"])
        pop = int(attrs["population_size"])
    except (KeyError, TypeError, ValueError) as exc:
        report.damage.append(f"zarr.json: l2lflow attributes incomplete ({exc!r} missing)")
        return report
    checker = _Checker(report, path, config, parameters, pop)
    checker.every_chunk = bool(attrs.get("every_chunk_written"))
    checker.run()
    leftovers = leftover_files(path)
    if leftovers:
        report.notes.append(
            f"{len(leftovers)} temporary file(s) of interrupted writes (harmless), e.g. "
            f"{leftovers[0]}"
        )
    abandoned = sorted(results_dir.glob(f"{CREATING_PREFIX}*"))
    if abandoned:
        report.notes.append(
            f"{len(abandoned)} folder(s) of an interrupted store creation (harmless, removed "
            f"by the next creation), e.g. {abandoned[0]}"
        )
    return report


class _Checker:
    def __init__(self, report: Report, path: Path, config: dict, parameters: list, pop: int):
        self.report = report
        self.path = path
        self.config = config
        self.parameters = parameters
        self.pop = pop
        self.arrays: dict[str, Any] = {}
        self.rows: dict[str, np.ndarray | None] = {}
        self.chunks_read = 0
        self.every_chunk = False
        #: node path -> metadata of the committed snapshot (None: the store has none)
        self.snapshot = _snapshot(path)

    def damage(self, text: str) -> None:
        self.report.damage.append(text)

    # ------------------------------------------------------------------ metadata
    def open_arrays(self) -> None:
        import zarr

        names = []
        for meta in sorted(self.path.rglob("zarr.json")):
            rel = meta.parent.relative_to(self.path).as_posix()
            if rel == ".":
                continue
            doc, problem = _read_json(meta)
            if problem is not None:
                self.damage(f"{rel}: metadata {meta} is {problem}")
                continue
            if isinstance(doc, dict) and doc.get("node_type") == "array":
                names.append(rel)
        for name in [*CORE, *self.parameters]:
            if not (self.path / name / "zarr.json").exists():
                self.damage(f"{name}: variable missing (no {self.path / name / 'zarr.json'})")
        for name in names:
            try:
                self.arrays[name] = zarr.open_array(str(self.path / name), mode="r", zarr_format=3)
            except Exception as exc:  # noqa: BLE001 - any reason is damage, named
                self.damage(f"{name}: cannot open ({type(exc).__name__}: {exc})")

    # ------------------------------------------------------------------ reading
    def read_rows(self, name: str, n: int) -> np.ndarray | None:
        """All ``n`` generation rows of ``name``; a row that does not decode is reported."""
        arr = self.arrays[name]
        try:
            data = np.asarray(arr[:n])
            self.chunks_read += n
            return data
        except Exception:  # noqa: BLE001 - find the chunks that fail, below
            pass
        rows = []
        bad = False
        for g in range(n):
            try:
                rows.append(np.asarray(arr[g]))
                self.chunks_read += 1
            except Exception as exc:  # noqa: BLE001
                bad = True
                where = _chunk_file(self.path, name, arr, (g,) + (0,) * (arr.ndim - 1))
                self.damage(
                    f"{name}: generation {g} does not decode ({type(exc).__name__}: "
                    f"{_short(exc)}) - {where}"
                )
        return None if bad else np.stack(rows) if rows else np.asarray(arr[:0])

    def read_all(self, name: str) -> np.ndarray | None:
        arr = self.arrays[name]
        try:
            data = np.asarray(arr[...])
            self.chunks_read += max(1, math.prod(arr.cdata_shape))
            return data
        except Exception as exc:  # noqa: BLE001
            self.damage(f"{name}: does not decode ({type(exc).__name__}: {_short(exc)})")
            return None

    # ------------------------------------------------------------------ the checks
    def committed_shape(self, name: str) -> tuple[int, ...] | None:
        """The shape of ``name`` in the snapshot; None if not committed (or no snapshot)."""
        node = (self.snapshot or {}).get(name)
        if not isinstance(node, dict) or node.get("node_type") != "array":
            return None
        return tuple(int(k) for k in node.get("shape", ()))

    def run(self) -> None:
        self.open_arrays()
        if "generation" not in self.arrays:
            return
        committed = self.committed_shape("generation")
        if self.snapshot is None:
            self.report.notes.append(
                "zarr.json has no consolidated metadata (the committed snapshot); shapes are "
                "taken from the variables themselves"
            )
        n = int(self.arrays["generation"].shape[0]) if committed is None else committed[0]
        gen_arrays = {
            name: arr
            for name, arr in self.arrays.items()
            if arr.metadata.dimension_names and arr.metadata.dimension_names[0] == "generation"
        }
        torn = []
        for name, arr in sorted(gen_arrays.items()):
            rows = int(arr.shape[0])
            if rows < n:
                self.damage(f"{name}: {rows} generation rows, but {n} generations are sampled")
            elif rows > n:
                torn.append(name)
        if torn:
            self.report.notes.append(
                f"generation {n} was being sampled when the run stopped ({len(torn)} variables "
                "already grown, not committed); readers ignore it and resuming redoes it"
            )
        if self.snapshot is not None:
            self.compare_with_snapshot()
        gen_arrays.pop("generation")
        coord = self.read_head("generation", n)
        if coord is not None and not np.array_equal(coord, np.arange(n)):
            self.damage(f"generation: coordinate is not 0..{n - 1}")
        if "individual" in self.arrays:
            ind = self.read_all("individual")
            if ind is not None and not np.array_equal(ind, np.arange(self.pop)):
                self.damage(f"individual: coordinate is not 0..{self.pop - 1}")
        # every chunk of every (generation, ...) variable decodes
        for name, arr in sorted(gen_arrays.items()):
            if int(arr.shape[0]) >= n:
                self.rows[name] = self.read_rows(name, n)
        for name in sorted(self.arrays):
            if name not in gen_arrays and name not in ("generation", "individual"):
                self.read_all(name)  # meta_test variables and anything else
        aggregated = self.check_checkpoints(n)
        if self.every_chunk:
            self.check_every_chunk(n)
        else:
            self.check_chunk_files(gen_arrays, n, aggregated)
        self.check_consistency(n, aggregated)
        self.check_meta_test()
        self.report.summary.append(
            f"{n} generation(s) sampled, {aggregated} aggregated, population {self.pop}, "
            f"{len(self.arrays)} variables, {self.chunks_read} chunk(s) read"
        )

    def compare_with_snapshot(self) -> None:
        """Variables on disk but not committed (a note), committed but gone (damage)."""
        assert self.snapshot is not None
        uncommitted = sorted(name for name in self.arrays if self.committed_shape(name) is None)
        if uncommitted:
            self.report.notes.append(
                f"{len(uncommitted)} variable(s) written by an interrupted step and not "
                f"committed ({', '.join(uncommitted)}); readers ignore them and resuming "
                "redoes the step"
            )
        for name in sorted(self.snapshot):
            if self.committed_shape(name) is None or name in self.arrays:
                continue
            where = self.path / name / "zarr.json"
            if where.exists():
                continue  # reported by open_arrays (does not open)
            if name.startswith("meta_test"):
                self.report.notes.append(
                    f"{name}: being replaced by an interrupted meta-test; rerunning redoes it"
                )
            else:
                self.damage(f"{name}: committed variable missing (no {where})")

    def read_head(self, name: str, n: int) -> np.ndarray | None:
        """The first ``n`` values of the 1-d variable ``name`` (None if they do not decode)."""
        try:
            data = np.asarray(self.arrays[name][:n])
            self.chunks_read += max(1, math.ceil(n / self.arrays[name].chunks[0]))
            return data
        except Exception as exc:  # noqa: BLE001
            self.damage(f"{name}: does not decode ({type(exc).__name__}: {_short(exc)})")
            return None

    def check_checkpoints(self, n: int) -> int:
        """Aggregated generations (checkpoints written); reports missing/damaged ones."""
        states = self.rows.get("optimizer/state")
        if states is None:
            return 0
        texts = [s.item() if hasattr(s, "item") else s for s in states]
        aggregated = 0
        for g in range(len(texts) - 1, -1, -1):
            if texts[g]:
                aggregated = g + 1
                break
        arr = self.arrays["optimizer/state"]
        for g in range(aggregated):
            where = _chunk_file(self.path, "optimizer/state", arr, (g,))
            if not texts[g]:
                self.damage(
                    f"optimizer/state: checkpoint of generation {g} missing, but generation "
                    f"{aggregated - 1} is aggregated - {where}"
                )
                continue
            try:
                payload = json.loads(texts[g])
            except ValueError as exc:
                self.damage(f"optimizer/state: checkpoint of generation {g} is not JSON ({exc})")
                continue
            if not isinstance(payload, dict) or not {"optimizer", "summary"} <= set(payload):
                self.damage(
                    f"optimizer/state: checkpoint of generation {g} lacks 'optimizer'/'summary'"
                )
        if aggregated < n - 1:
            self.damage(
                f"optimizer/state: generations {aggregated}..{n - 2} are followed by a sampled "
                "generation but have no checkpoint"
            )
        return aggregated

    def check_chunk_files(self, gen_arrays: dict[str, Any], n: int, aggregated: int) -> None:
        required: dict[str, int] = {"seed": n, "status": aggregated, "fitness": aggregated}
        if "attempts" in gen_arrays:
            required["attempts"] = aggregated
        for p in self.parameters:
            arr = gen_arrays.get(p)
            if arr is not None and np.dtype(arr.dtype).kind == "f":
                required[p] = n
        for name, upto in required.items():
            arr = gen_arrays.get(name)
            if arr is None or int(arr.shape[0]) < n:
                continue
            for g in range(upto):
                where = _chunk_file(self.path, name, arr, (g,) + (0,) * (arr.ndim - 1))
                if not where.is_file():
                    self.damage(f"{name}: chunk of generation {g} missing ({where})")

    def check_every_chunk(self, n: int) -> None:
        """Every chunk of every committed variable is a file (the writer writes them all)."""
        for name, arr in sorted(self.arrays.items()):
            shape = self.committed_shape(name) if self.snapshot is not None else tuple(arr.shape)
            if shape is None:
                continue  # not committed: see compare_with_snapshot
            dims = arr.metadata.dimension_names or ()
            if dims and dims[0] == "generation":
                shape = (n, *shape[1:])
            grid = [math.ceil(s / c) for s, c in zip(shape, arr.chunks, strict=True)]
            for index in np.ndindex(*grid):
                where = _chunk_file(self.path, name, arr, tuple(int(k) for k in index))
                if where.is_file():
                    continue
                if dims and dims[0] == "generation" and name != "generation":
                    self.damage(f"{name}: chunk of generation {index[0]} missing ({where})")
                else:
                    self.damage(f"{name}: chunk {tuple(int(k) for k in index)} missing ({where})")

    def check_meta_test(self) -> None:
        """Meta-test rows: status 0/1/2 (0: being written), done => finite fitness."""
        if "meta_test_status" not in self.arrays or "meta_test_fitness" not in self.arrays:
            return
        try:
            status = np.asarray(self.arrays["meta_test_status"][...])
            fitness = np.asarray(self.arrays["meta_test_fitness"][...], dtype=np.float64)
        except Exception:  # noqa: BLE001 - reported by read_all
            return
        if status.shape != fitness.shape:
            self.damage(f"meta_test: {status.shape[0]} statuses but {fitness.shape[0]} fitnesses")
            return
        for k in np.flatnonzero(~np.isin(status, (PENDING, DONE, FAILED))):
            self.damage(f"meta_test_status: rank {k} is {status[k]} (not 0/1/2)")
        for k in np.flatnonzero((status == DONE) & ~np.isfinite(fitness)):
            self.damage(
                f"meta_test_fitness: rank {k} is done but its fitness is {fitness[k]} "
                "(expected a finite number)"
            )
        if np.any(status == PENDING):
            self.report.notes.append(
                "the meta-test was being written when the run stopped; rerunning redoes it"
            )

    def check_consistency(self, n: int, aggregated: int) -> None:
        status, fitness, seed = (self.rows.get(k) for k in ("status", "fitness", "seed"))
        if status is not None:
            bad = ~np.isin(status, (PENDING, DONE, FAILED))
            for g, i in zip(*np.nonzero(bad), strict=True):
                self.damage(f"status: generation {g} individual {i} is {status[g, i]} (not 0/1/2)")
            for g in range(n):
                pending = int(np.sum(status[g] == PENDING))
                if pending and g < aggregated:
                    self.damage(
                        f"status: generation {g} is aggregated but {pending} individual(s) "
                        "are pending"
                    )
                elif pending and g < n - 1:
                    self.damage(
                        f"status: {pending} individual(s) of generation {g} pending, but only "
                        "the last sampled generation may have pending individuals"
                    )
        if status is not None and fitness is not None:
            from l2lflow.execution.dispatch import failure_fitness

            fail = failure_fitness(self.config)
            fitness = np.asarray(fitness, dtype=np.float64)
            for g, i in zip(*np.nonzero((status == DONE) & ~np.isfinite(fitness)), strict=True):
                self.damage(
                    f"fitness: generation {g} individual {i} is done but its fitness is "
                    f"{fitness[g, i]} (expected a finite number)"
                )
            wrong = (status == FAILED) & ~_same(fitness, fail)
            for g, i in zip(*np.nonzero(wrong), strict=True):
                self.damage(
                    f"fitness: generation {g} individual {i} failed but its fitness is "
                    f"{fitness[g, i]} (expected the failure fitness {fail})"
                )
        if seed is not None:
            from l2lflow import seeds

            for g in range(n):
                expected = seeds.evaluation_seeds(int(self.config["seed"]), g, self.pop)
                if not np.array_equal(np.asarray(seed[g], dtype=np.int64), expected):
                    self.damage(
                        f"seed: generation {g} differs from the seeds of the config's seed "
                        f"{self.config['seed']}"
                    )
        self.check_parameters(n)

    def check_parameters(self, n: int) -> None:
        from l2lflow.space import ParameterSpace

        try:
            space = ParameterSpace.from_config(self.config["space"])
        except Exception as exc:  # noqa: BLE001
            self.damage(f"zarr.json: the stored config's space is unusable ({exc})")
            return
        for p in space.parameters:
            values = self.rows.get(p.name)
            if values is None or n == 0:
                continue
            if p.kind == "choice":
                allowed = np.array(p.choices, dtype=p.dtype)
                ok = np.isin(values, allowed)
            elif p.expression is not None:  # every gene one of its values
                ok = np.all((values >= 0) & (values < p.expression.alleles), axis=-1)
            else:
                v = np.asarray(values, dtype=np.float64)
                ok = (v >= p.low) & (v <= p.high)
            for g, i in zip(*np.nonzero(~ok), strict=True):
                self.damage(
                    f"{p.name}: generation {g} individual {i} is {values[g, i].item()!r}, outside "
                    f"the parameter's space"
                )
                break


def _same(values: np.ndarray, target: float) -> np.ndarray:
    if math.isnan(target):
        return np.isnan(values)
    return values == target


def _short(exc: BaseException) -> str:
    return (str(exc) or type(exc).__name__).splitlines()[0][:200]


def leftover_files(path: Path) -> list[Path]:
    """Temporary files of writes a kill interrupted (harmless; zarr never reads them)."""
    out = []
    for root, _, files in os.walk(path):
        out += [Path(root) / f for f in files if f.endswith(".partial")]
    return out
