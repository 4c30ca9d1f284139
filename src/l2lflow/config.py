"""Experiment configs: load YAML, fill defaults, validate, and say exactly what is wrong.

The JSON schema (``schemas/config.schema.yaml``, also ``workflow/schemas/``) checks the form;
:func:`validate_config` adds what a schema cannot say (bounds in order, known optimizer and
optimizee, an optimizee's signature and options). Every error is one line that starts with the
key path, e.g. ``space.tau_m.low: must be < high (got low=20, high=5)``.
"""

from __future__ import annotations

import copy
import difflib
import hashlib
import json
import math
import re
import sys
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

SCHEMA_PATH = Path(__file__).with_name("schemas") / "config.schema.yaml"

#: names used by the store itself; a parameter may not take them
RESERVED_NAMES = frozenset(
    {
        "generation",
        "individual",
        "fitness",
        "status",
        "runtime",
        "seed",
        "attempts",
        "error",
        "worker",
        "log",
        "finished_at",
        "task",
        "objective",
        "meta_test",
    }
)

#: config sections whose change would change the results: a resume with other values is refused
RESULT_KEYS = ("seed", "population_size", "direction", "space", "optimizer", "optimizee")

#: ``evaluation`` settings that change results, each with the value at which it is left out of
#: the identity (so stores made before the key joined it keep their hash and still resume):
#: ``threads`` changes NEST's random streams (same seed, other thread count: other spikes);
#: ``batch_size`` may change a batched optimizee's rounding on CUDA (cuBLAS picks kernels by
#: batch size; on CPU it is bitwise neutral); ``device`` cpu vs gpu changes floating point.
#: Everything else under ``evaluation`` (retries, timeout_s, isolate) and ``execution`` decides
#: how and where an evaluation runs, not its result: see README "Resume, extend, and what may
#: change".
RESULT_EVALUATION_KEYS: dict[str, Any] = {"threads": 1, "batch_size": None, "device": "auto"}


class ConfigError(ValueError):
    """An invalid experiment config; the message starts with the offending key path.

    The message is always one line: line breaks (e.g. from an exception raised by user code
    while it is imported) are folded into spaces.
    """

    def __init__(self, message: object = "") -> None:
        super().__init__(re.sub(r"\s*\n\s*", " ", str(message)).strip())


class _UniqueKeyLoader(yaml.SafeLoader):
    """A safe YAML loader that refuses duplicate keys (PyYAML silently keeps the last one)."""


def _key_text(key: Any) -> str:
    """A mapping key as it appears in a key path (``null`` for YAML's null)."""
    return "null" if key is None else str(key)


def _dotted(path: list[Any]) -> str:
    return ".".join(_key_text(p) for p in path)


def _check_duplicate_keys(
    loader: yaml.SafeLoader, node: yaml.Node, path: list[Any], visited: set[int] | None = None
) -> None:
    """Refuse a key that appears twice in one mapping, naming its full key path and lines.

    A node that YAML aliases (``*name``) is checked once: following every alias would take
    exponential time on an alias bomb and never end on a recursive alias.
    """
    visited = set() if visited is None else visited
    if id(node) in visited:
        return
    visited.add(id(node))
    if isinstance(node, yaml.MappingNode):
        seen: dict[Any, int] = {}
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # ``<<: *anchor``
                continue
            key = (
                loader.construct_object(key_node, deep=True)
                if isinstance(key_node, yaml.ScalarNode)
                else None
            )
            line = key_node.start_mark.line + 1
            if isinstance(key_node, yaml.ScalarNode):
                if key in seen:
                    raise ConfigError(
                        f"{_dotted([*path, key])}: duplicate key (lines {seen[key]} and {line}); "
                        "each key may appear once in a mapping"
                    )
                seen[key] = line
            _check_duplicate_keys(loader, value_node, [*path, key], visited)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _check_duplicate_keys(loader, item, [*path, index], visited)


#: the most values (scalars, lists, mappings, counted as if every YAML alias were written out) a
#: config may hold: real configs hold hundreds; an alias bomb ("billion laughs") holds 10^9
MAX_CONFIG_VALUES = 100_000


def _check_size(raw: dict[str, Any]) -> None:
    """Refuse an alias bomb or a recursive alias before anything walks the config.

    Sizes are counted once per distinct object (an alias is the same object), so this takes time
    in the size of the file, not of its expansion.
    """
    sizes: dict[int, int] = {}
    busy: set[int] = set()

    def size(value: Any, path: list[Any]) -> int:
        if not isinstance(value, (dict, list)):
            return 1
        key = id(value)
        if key in sizes:
            return sizes[key]
        if key in busy:
            raise ConfigError(
                f"{_dotted(path)}: contains itself (a recursive YAML alias); "
                "write the value out instead"
            )
        busy.add(key)
        items = value.items() if isinstance(value, dict) else enumerate(value)
        sizes[key] = 1 + sum(size(item, [*path, k]) for k, item in items)
        busy.discard(key)
        return sizes[key]

    total = 0
    for key, value in raw.items():
        n = size(value, [key])
        total += n
        if n > MAX_CONFIG_VALUES or total > MAX_CONFIG_VALUES:
            raise ConfigError(
                f"{_key_text(key)}: expands to {n:,} values through YAML aliases (*name); "
                f"a config may hold at most {MAX_CONFIG_VALUES:,} (an alias bomb?)"
            )


def _yaml_error(exc: yaml.YAMLError) -> str:
    """One line for a YAML syntax error: where, then what."""
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    problem = getattr(exc, "problem", None) or str(exc)
    context = getattr(exc, "context", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    what = f"{problem} ({context})" if context else problem
    return f"not valid YAML{where}: {what}"


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML config file, refusing duplicate keys and non-mapping documents."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path}: no such config file")
    if path.is_dir():
        raise ConfigError(f"{path}: is a folder, expected a YAML config file")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{path}: not a UTF-8 text file (byte {exc.start} is {exc.object[exc.start]:#04x}); "
            "expected a YAML config file"
        ) from None
    loader = _UniqueKeyLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            data = None
        else:
            _check_duplicate_keys(loader, node, [])
            data = loader.construct_document(node)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: {_yaml_error(exc)}") from None
    finally:
        loader.dispose()
    if data is None:
        raise ConfigError(
            f"{path}: the file is empty; expected a mapping of keys "
            "(name, seed, generations, population_size, optimizer, optimizee, space)"
        )
    if not isinstance(data, dict):
        raise ConfigError(
            f"{path}: the config must be a mapping of keys (name: ..., seed: ...), "
            f"got {_type_name(data)}"
        )
    return data


@lru_cache(maxsize=1)
def schema() -> dict[str, Any]:
    return yaml.safe_load(SCHEMA_PATH.read_text())


def _path(error_path: Any) -> str:
    return _dotted(list(error_path)) if error_path else "(top level)"


_TYPE_WORDS = {
    "integer": "an integer",
    "number": "a number",
    "string": "a string",
    "object": "a mapping (key: value)",
    "array": "a list",
    "boolean": "true or false",
    "null": "null",
}


def _type_name(value: Any) -> str:
    """What a YAML value is, in YAML's words."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, (list, tuple)):
        return "a list"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a float"
    return f"a {type(value).__name__}"


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _schema_error_message(error: Any) -> str:
    """One clear line for a jsonschema error: key path, then what is allowed."""
    where = _path(error.absolute_path)
    validator = error.validator
    schema_node = error.schema if isinstance(error.schema, dict) else {}
    if "propertyNames" in error.absolute_schema_path:
        # error.instance is the offending key; name it in the path
        key = _dotted([*error.absolute_path, error.instance])
        return (
            f"{key}: not a valid parameter name (use letters, digits and '_', "
            "not starting with a digit)"
        )
    if validator == "additionalProperties":
        properties = schema_node.get("properties", {})
        extra = sorted((k for k in error.instance if k not in properties), key=_key_text)
        allowed = ", ".join(properties) or "none"
        key = _dotted([*error.absolute_path, extra[0]]) if extra else where
        hint = _did_you_mean(_key_text(extra[0]), list(properties)) if extra else ""
        return f"{key}: unknown key (allowed here: {allowed}){hint}"
    if validator == "required":
        missing = error.message.split("'")[1] if "'" in error.message else error.message
        key = _dotted([*error.absolute_path, missing])
        description = schema_node.get("properties", {}).get(missing, {}).get("description")
        if not error.absolute_path and missing in ("optimizer", "optimizee"):
            description = _known_names(missing)
        return f"{key}: required key is missing" + (f" ({description})" if description else "")
    if validator == "enum":
        allowed = ", ".join(repr(v) for v in error.validator_value)
        return f"{where}: {_short(error.instance)} is not allowed (allowed: {allowed})"
    if validator == "type":
        expected = error.validator_value
        expected = expected if isinstance(expected, list) else [expected]
        words = " or ".join(_TYPE_WORDS.get(t, t) for t in expected)
        return (
            f"{where}: expected {words}, got {_type_name(error.instance)} {_short(error.instance)}"
        )
    if validator in ("minimum", "exclusiveMinimum", "maximum", "exclusiveMaximum"):
        op = {"minimum": ">=", "exclusiveMinimum": ">", "maximum": "<=", "exclusiveMaximum": "<"}
        types = schema_node.get("type", [])
        kind = "an integer" if "integer" in types else "a number"
        nullable = " or null" if "null" in types else ""
        return (
            f"{where}: must be {kind} {op[validator]} {error.validator_value}{nullable} "
            f"(got {_short(error.instance)})"
        )
    if validator == "minProperties" and where == "space":
        return "space: needs at least one parameter, e.g. x: {low: 0, high: 1}"
    if validator in ("minProperties", "minItems", "minLength"):
        return f"{where}: must not be empty"
    if validator == "pattern" and where == "name":
        return (
            f"name: {_short(error.instance)} is not a valid experiment name (use letters, digits, "
            "'_', '.' and '-', starting with a letter or digit)"
        )
    return f"{where}: {error.message}"


def _did_you_mean(word: str, candidates: list[str]) -> str:
    """``"; did you mean 'x'?"`` for the closest candidate (case ignored), or ``""``."""
    by_lower = {c.lower(): c for c in candidates}
    close = difflib.get_close_matches(word.lower(), list(by_lower), n=1)
    return f"; did you mean {by_lower[close[0]]!r}?" if close else ""


def _listed_names(message: str) -> list[str]:
    """The names an error lists as ``(allowed: a, b)`` or ``(known: a, b; ...)``."""
    match = re.search(r"\((?:allowed|known)(?: here)?: ([^);]*)", message)
    return [n.strip() for n in match.group(1).split(",")] if match else []


def _with_hint(message: str) -> str:
    """An unknown-name error with "did you mean", and an import error with what to check.

    The wrong name is the last part of the key path (``optimizer.options.sigam``) or, for a
    ``name`` key, the quoted name the message refuses.
    """
    key = message.split(":", 1)[0]
    if "unknown" in message or "has no option" in message:
        quoted = re.search(r"unknown \w+ '([^']+)'", message)
        wrong = quoted.group(1) if key.endswith(".name") and quoted else key.rsplit(".", 1)[-1]
        return message + _did_you_mean(wrong, _listed_names(message))
    missing = re.search(r"cannot import module '([^']+)'.*No module named '([^']+)'", message)
    if missing:
        module, absent = missing.groups()
        if module == absent or module.startswith(absent + "."):
            return (
                f"{message}; is the folder that holds {absent.replace('.', '/')}(.py) on "
                "PYTHONPATH? e.g. PYTHONPATH=/path/to/that/folder snakemake ... (the engine and "
                "the local workers inherit it)"
            )
        return (
            f"{message}; {module!r} imports {absent!r}, which is not installed for "
            f"{sys.executable}: install it there (and where the workers run)"
        )
    return message


def _known_names(section: str) -> str | None:
    """A hint for a missing ``optimizer`` / ``optimizee`` section: its form and known names."""
    try:
        if section == "optimizer":
            from l2lflow.optimizers import REGISTRY

            return f"e.g. optimizer: {{name: ga}}; known: {', '.join(sorted(REGISTRY))}"
        from l2lflow.optimizees import REGISTRY as OPTIMIZEES

        return (
            f"e.g. optimizee: {{name: rastrigin}}; known: {', '.join(sorted(OPTIMIZEES))}, "
            "or 'package.module:function'"
        )
    except Exception:  # noqa: BLE001 - a hint only
        return None


def _validator_class() -> Any:
    """Draft 2020-12, except that a float is never an integer (YAML's ``2.0`` is a float).

    Plain JSON schema accepts ``generations: 2.0`` as an integer; it would then reach
    ``range()`` and the store as a float.
    """
    import jsonschema

    base = jsonschema.Draft202012Validator
    checker = base.TYPE_CHECKER.redefine(
        "integer", lambda _checker, value: isinstance(value, int) and not isinstance(value, bool)
    )
    return jsonschema.validators.extend(base, type_checker=checker)


def _check_keys(value: Any, path: list[Any]) -> None:
    """Keys must be strings; values plain YAML data (no dates, no inf/nan)."""
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise ConfigError(
                    f"{_dotted([*path, key])}: a key must be a string, got {_type_name(key)}"
                    f"{'' if key is None else f' {key!r}'} (quote it)"
                )
            _check_keys(item, [*path, key])
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _check_keys(item, [*path, index])
    elif isinstance(value, float) and not math.isfinite(value):
        where = _dotted(path) or "(top level)"
        hint = " or null (null: the worst fitness)" if where.endswith("failure_fitness") else ""
        raise ConfigError(f"{where}: must be a finite number{hint}, got {value}")
    elif value is not None and not isinstance(value, (str, int, float, bool)):
        where = _dotted(path) or "(top level)"
        raise ConfigError(
            f"{where}: expected a string, number, boolean, list or mapping, got "
            f"{_type_name(value)} {_short(value)} (quote it to make it a string)"
        )


def _fill_defaults(config: dict[str, Any], node: dict[str, Any]) -> None:
    """Fill schema defaults in place (object sections first, so nested defaults apply)."""
    for key, sub in node.get("properties", {}).items():
        if key not in config and "default" in sub:
            config[key] = copy.deepcopy(sub["default"])
        if isinstance(config.get(key), dict) and sub.get("type") == "object":
            _fill_defaults(config[key], sub)
    extra = node.get("additionalProperties")
    if isinstance(extra, dict) and extra.get("type") == "object":
        for key, value in config.items():
            if key not in node.get("properties", {}) and isinstance(value, dict):
                _fill_defaults(value, extra)


def validate_config(raw: dict[str, Any], *, check_code: bool = True) -> dict[str, Any]:
    """Return a validated copy of ``raw`` with defaults filled, or raise :class:`ConfigError`.

    ``check_code`` also resolves the optimizer and optimizee (imports user code) and checks the
    optimizee's signature and options.
    """
    if not isinstance(raw, dict):
        raise ConfigError(
            f"(top level): the config must be a mapping of keys, got {_type_name(raw)}"
        )
    _check_size(raw)
    _check_keys(raw, [])
    validator = _validator_class()(schema())
    errors = sorted(validator.iter_errors(raw), key=lambda e: (len(e.absolute_path), str(e.path)))
    if errors:
        raise ConfigError(_schema_error_message(errors[0]))
    _check_space(raw["space"])
    config = copy.deepcopy(raw)
    _fill_defaults(config, schema())
    for spec in config["space"].values():
        if spec.get("type") in ("choice", "expression"):
            spec.pop("scale", None)  # a default filled in by the schema; means nothing here
    config.setdefault("results", f"results/{config['name']}")
    _check_dashboard(config["execution"].get("dashboard", False))
    if check_code:
        # before the optimizer is built: some allocate per individual (CMA-ES with 10^9 did not
        # return); the machine's total memory, which a running engine does not change
        _check_memory(config, _meminfo("MemTotal"), "of memory this machine has")
        _check_code(config)
    return config


def _check_dashboard(value: Any) -> None:
    from l2lflow.execution.core import dashboard_address

    try:
        dashboard_address(value)
    except ValueError as exc:
        raise ConfigError(f"execution.dashboard: {exc}") from None


#: what the engine holds per individual of a generation, in bytes, plus per parameter value:
#: measured peaks of ``sample`` (CMA-ES, 400,000 × 10 parameters: 1.1 kB per individual; random
#: search, 400,000 × 2: 0.1 kB) with room for ``evaluate``'s queue, status and runtimes
ENGINE_BYTES_PER_INDIVIDUAL = 1024
ENGINE_BYTES_PER_VALUE = 128
#: what the store takes per evaluation (fitness, status, seed, runtime, attempts, finished_at and
#: short texts) and per parameter value, uncompressed; measured stores are smaller (400,000 × 10
#: random parameters: 83 bytes per evaluation)
STORE_BYTES_PER_INDIVIDUAL = 48
STORE_BYTES_PER_VALUE = 8
#: files a generation adds per variable (a chunk each) take at least a disk block
STORE_BYTES_PER_FILE = 4096
STORE_FIXED_VARIABLES = 12


def _size_text(n: float) -> str:
    for unit in ("bytes", "kB", "MB", "GB", "TB", "PB"):
        if n < 1000 or unit == "PB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1000
    raise AssertionError("unreachable")


def _meminfo(field: str) -> int | None:
    """A ``/proc/meminfo`` figure in bytes (``MemAvailable``, ``MemTotal``), or None if unknown."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _check_memory(config: dict[str, Any], limit: int | None, what: str) -> None:
    """Refuse a population whose engine memory estimate exceeds ``limit`` bytes (``what``)."""
    population = int(config["population_size"])
    values = population * len(config["space"])
    memory = population * ENGINE_BYTES_PER_INDIVIDUAL + values * ENGINE_BYTES_PER_VALUE
    if limit is not None and memory > limit:
        raise ConfigError(
            f"population_size: {population:,} individuals need about {_size_text(memory)} of "
            f"memory in the engine (estimate: {_size_text(memory / population)} per individual "
            f"with {len(config['space'])} parameter(s)), more than the {_size_text(limit)} "
            f"{what}; use a smaller population"
        )


def _existing_folder(path: Path) -> Path:
    """``path`` or its nearest existing ancestor (where a new results folder would be made)."""
    path = path.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_results_folder(results: str | Path) -> None:
    """Refuse a results path that is a file, or a folder this user cannot write (read-only disk,
    no permission), in one line that names the path and what to do; nothing is written."""
    import os

    path = Path(results)
    if path.exists() and not path.is_dir():
        raise ConfigError(
            f"results: {path} is a file, not a folder; move the file away or set 'results' "
            "to another path"
        )
    folder = _existing_folder(path)
    if not folder.is_dir():
        raise ConfigError(
            f"results: {folder} is a file, so {path} cannot be made; set 'results' to another path"
        )
    # where the run writes: the results folder (and below) if it exists, else its nearest parent
    for target in (folder, *(p for p in (path / "results.zarr",) if p.is_dir())):
        if not os.access(target, os.W_OK | os.X_OK):
            why = "is on a read-only file system" if _read_only(target) else "is not writable"
            why += "" if _read_only(target) else " for this user"
            raise ConfigError(
                f"results: {target} {why}; set 'results' to a folder you can write, "
                "or make it writable"
            )


def _read_only(path: Path) -> bool:
    import os

    try:
        return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def check_resources(config: dict[str, Any]) -> None:
    """What this machine must give a run before it starts: a results folder it can write, and
    memory and disk for the population (:func:`check_capacity`)."""
    check_results_folder(config["results"])
    check_capacity(config)


def check_capacity(
    config: dict[str, Any],
    *,
    available_memory: int | None = None,
    free_disk: int | None = None,
) -> None:
    """Refuse a population whose engine memory or store cannot fit on this machine.

    A population of 10^9 used to pass validation; the engine was then killed for memory minutes
    later with a gigabyte of half-written store left behind. The estimates are linear in the
    population and the number of parameters (see the constants above); the limits are this
    machine's available memory and the free space where the results go. Arguments override the
    measured limits (tests). Called where a run starts (the Snakefile, ``l2lflow run``) and by
    ``l2lflow validate``, not by every step: a running engine's own memory and store would count
    against it.
    """
    limit = _meminfo("MemAvailable") if available_memory is None else available_memory
    _check_memory(config, limit, "available on this machine")
    population = int(config["population_size"])
    values = population * len(config["space"])
    generations = int(config["generations"])
    per_generation = (
        population * STORE_BYTES_PER_INDIVIDUAL
        + values * STORE_BYTES_PER_VALUE
        + (len(config["space"]) + STORE_FIXED_VARIABLES) * STORE_BYTES_PER_FILE
    )
    results = Path(config.get("results") or ".")
    stored = (
        sum(f.stat().st_size for f in results.rglob("*") if f.is_file()) if results.is_dir() else 0
    )
    store = generations * per_generation - stored  # a resume needs only what is not yet there
    folder = _existing_folder(results)
    if free_disk is None:
        import shutil

        try:
            free_disk = shutil.disk_usage(folder).free
        except OSError:
            return
    if store > free_disk:
        raise ConfigError(
            f"generations: {generations:,} generations × {population:,} individuals need about "
            f"{_size_text(store)} in the results store (estimate: {_size_text(per_generation)} "
            f"per generation), more than the {_size_text(free_disk)} free in {folder}; use "
            "fewer generations or individuals, or set 'results' to a larger disk"
        )


def _check_space(space: dict[str, Any]) -> None:
    """What the schema cannot say about the parameters (``space`` as given, defaults unfilled)."""
    for name, spec in space.items():
        key = f"space.{name}"
        if name in RESERVED_NAMES or name.startswith(("metric_", "l2l_")):
            raise ConfigError(
                f"{key}: the name {name!r} is reserved by the results store; choose another "
                f"(reserved: {', '.join(sorted(RESERVED_NAMES))}, metric_*, l2l_*)"
            )
        kind = spec.get("type", "float")
        if kind == "expression":
            _check_expression(key, spec, space)
            continue
        expression_keys = sorted(set(spec) & {"inputs", "operations", "n_nodes", "constants"})
        if expression_keys:
            raise ConfigError(
                f"{key}.{expression_keys[0]}: only allowed with type: expression "
                f"(this parameter's type is {kind})"
            )
        if kind == "choice":
            choices = spec.get("choices")
            if not choices:
                raise ConfigError(
                    f"{key}.choices: a choice parameter needs a non-empty list, "
                    "e.g. choices: [a, b, c]"
                )
            # (Snakemake's validate fills scale: linear into every parameter: that is allowed)
            extra = sorted(set(spec) & {"low", "high"}) or (
                ["scale"] if spec.get("scale", "linear") != "linear" else []
            )
            if extra:
                raise ConfigError(
                    f"{key}.{extra[0]}: not used by a choice parameter (it takes only choices)"
                )
            kinds = {type(c) for c in choices}
            if not (kinds <= {int, float} or kinds == {str} or kinds == {bool}):
                raise ConfigError(
                    f"{key}.choices: all numbers, all strings or all booleans (got {choices!r})"
                )
            if len(set(choices)) != len(choices):  # (1 and 1.0 are the same choice)
                duplicates = [c for i, c in enumerate(choices) if c in choices[:i]]
                raise ConfigError(
                    f"{key}.choices: each choice may appear once; duplicates: "
                    f"{', '.join(repr(c) for c in duplicates)} (in {choices!r})"
                )
            continue
        if "choices" in spec:
            raise ConfigError(
                f"{key}.choices: only allowed with type: choice (this parameter's type is {kind})"
            )
        for bound in ("low", "high"):
            if bound not in spec:
                raise ConfigError(
                    f"{key}.{bound}: required for a {kind} parameter (give low and high)"
                )
        low, high = spec["low"], spec["high"]
        if not low < high:
            raise ConfigError(f"{key}.low: must be < high (got low={low}, high={high})")
        if kind == "int":
            for bound in ("low", "high"):
                if int(spec[bound]) != spec[bound]:
                    raise ConfigError(
                        f"{key}.{bound}: an int parameter needs integer bounds "
                        f"(got {bound}={spec[bound]})"
                    )
        if spec.get("scale", "linear") == "log" and low <= 0:
            raise ConfigError(f"{key}.low: a log-scale parameter needs low > 0 (got {low})")


def _check_expression(key: str, spec: dict[str, Any], space: dict[str, Any]) -> None:
    """An expression parameter: inputs given, unique, and no bounds or choices."""
    extra = sorted(set(spec) & {"low", "high", "choices"}) or (
        ["scale"] if spec.get("scale", "linear") != "linear" else []
    )
    if extra:
        raise ConfigError(
            f"{key}.{extra[0]}: not used by an expression parameter "
            "(it takes inputs, operations, n_nodes, constants)"
        )
    inputs = spec.get("inputs")
    if not inputs:
        raise ConfigError(f"{key}.inputs: an expression needs its inputs, e.g. [pre, post, error]")
    if len(set(inputs)) != len(inputs) or len(set(spec.get("operations", []))) != len(
        spec.get("operations", [])
    ):
        raise ConfigError(f"{key}: each input and each operation may appear once (got {spec!r})")
    formula = f"{key.split('.', 1)[1]}_formula"
    if formula in space:
        raise ConfigError(f"space.{formula}: the name is taken by the expression's formula text")


def _optimizer_message(exc: Exception) -> str:
    """An :class:`OptimizerError` as one line that starts with the key it is about."""
    msg = str(exc)
    match = re.match(r"(optimizer\.[\w.]+)(:?)\s+(.*)", msg, flags=re.S)
    if match:
        return msg if match.group(2) else f"{match.group(1)}: {match.group(3)}"
    if "population_size" in msg:
        return f"population_size: {msg}"
    return f"optimizer: {msg}"


def _check_code(config: dict[str, Any]) -> None:
    from l2lflow.optimizees.base import OptimizeeError
    from l2lflow.optimizees.describe import describe_optimizee
    from l2lflow.optimizers.base import OptimizerError, get_optimizer_class
    from l2lflow.space import ParameterSpace

    name = config["optimizer"]["name"]
    options = config["optimizer"].get("options", {})
    try:
        cls = get_optimizer_class(name)
    except OptimizerError as exc:
        raise ConfigError(_with_hint(_optimizer_message(exc))) from None
    space = ParameterSpace.from_config(config["space"])

    def build(opts: dict[str, Any]) -> None:
        cls(
            dimension=space.dimension,
            population_size=config["population_size"],
            seed=0,
            direction=config["direction"],
            grid_points=space.grid_points,
            expressions=space.expressions,
            **space.optimizer_options(opts),
        )

    try:
        build(options)
    except OptimizerError as exc:
        raise ConfigError(_with_hint(_optimizer_message(exc))) from None
    except Exception as exc:  # noqa: BLE001 - e.g. float("abc") on an option: blame the option
        what = f"{type(exc).__name__}: {exc}"
        for key, value in options.items():
            try:
                build({key: value})
            except Exception:  # noqa: BLE001
                raise ConfigError(
                    f"optimizer.options.{key}: invalid value {_short(value)} for optimizer "
                    f"{name!r} ({what})"
                ) from None
        where = "optimizer.options" if options else "optimizer.name"
        raise ConfigError(
            f"{where}: optimizer {name!r} cannot be set up with this config ({what})"
        ) from None
    try:
        # a user's module is imported in a subprocess: it may break this process (see describe)
        optimizee = describe_optimizee(
            config["optimizee"]["name"], config["optimizee"].get("options", {})
        )
    except OptimizeeError as exc:
        msg = str(exc)
        raise ConfigError(
            _with_hint(msg if msg.startswith("optimizee.") else f"optimizee.name: {msg}")
        ) from None
    if "meta_test" in config["optimizee"] and not optimizee.meta_test:
        raise ConfigError(
            f"optimizee.meta_test: {optimizee.name!r} has no held-out task family to meta-test on"
        )
    if config["execution"]["backend"] == "slurm" and not config["execution"].get("pools"):
        raise ConfigError("execution.pools: the slurm backend needs at least a 'cpu' pool")
    if config["execution"]["backend"] == "slurm":
        _check_pools(config["execution"]["pools"])


def _check_pools(pools: dict[str, Any]) -> None:
    """Resolve every Slurm pool now (unknown keys, bad values), so that a mistake is one line
    before the run starts, not a failed evaluate step later. ``$VARS`` such as the account are
    checked where the run starts (:func:`l2lflow.workflow.experiment_config`, the engine)."""
    from l2lflow.execution.slurm_pool import resolve_pool

    for name, pool in pools.items():
        try:
            resolve_pool(pool, expand_env=False)
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"execution.pools.{name}: {exc}") from None


def load_config(path: str | Path, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Load, merge ``overrides`` (e.g. Snakemake's ``--config``) and validate a config file."""
    raw = load_yaml(path)
    if overrides:
        raw = merge(raw, overrides)
    return validate_config(raw)


def merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Deep-merge ``override`` into a copy of ``base``."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def result_config(config: dict[str, Any]) -> dict[str, Any]:
    """The part of a config that determines the results (see :data:`RESULT_KEYS`).

    Key order does not matter anywhere except in ``space``, where it orders the optimizer's
    dimensions: so ``parameter_order`` records it explicitly, and the rest is compared sorted.
    """
    part = {key: config.get(key) for key in RESULT_KEYS}
    if isinstance(part.get("space"), dict):  # a parameter's unit is a label, not a result
        part["space"] = {
            name: {k: v for k, v in spec.items() if k != "unit"} if isinstance(spec, dict) else spec
            for name, spec in part["space"].items()
        }
    evaluation = config.get("evaluation", {})
    part["failure_fitness"] = evaluation.get("failure_fitness")
    part["parameter_order"] = list(config.get("space", {}))
    for key, default in RESULT_EVALUATION_KEYS.items():
        if evaluation.get(key, default) != default:
            part[f"evaluation.{key}"] = evaluation[key]
    return json.loads(json.dumps(part, sort_keys=True))


def config_hash(config: dict[str, Any]) -> str:
    """A hash of :func:`result_config`."""
    text = json.dumps(result_config(config), sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def describe_changes(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> list[str]:
    """Human-readable list of differences between two result configs, by key path.

    An identity key at its default is absent from a result config (:data:`RESULT_EVALUATION_KEYS`),
    so it reads as that default here: ``evaluation.threads: 1 -> 2``, not ``<absent> -> 2``.
    """
    if not prefix:
        defaults = {f"evaluation.{k}": v for k, v in RESULT_EVALUATION_KEYS.items()}
        old = {**{k: v for k, v in defaults.items() if k in new}, **old}
        new = {**{k: v for k, v in defaults.items() if k in old}, **new}
    changes = []
    keys = list(old) + [k for k in new if k not in old]
    for key in keys:
        path = f"{prefix}{key}"
        a, b = old.get(key, "<absent>"), new.get(key, "<absent>")
        if isinstance(a, dict) and isinstance(b, dict):
            changes.extend(describe_changes(a, b, prefix=f"{path}."))
        elif a != b:
            changes.append(f"{path}: {a!r} -> {b!r}")
    return changes
