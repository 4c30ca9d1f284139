"""The ``l2lflow`` command.

Only the standard library is imported at the top: ``l2lflow step`` runs once per rule and
generation and must start in milliseconds; every other command imports what it needs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _cmd_validate(args: argparse.Namespace) -> int:
    """Check a config as a run would: the file, and an existing store it would resume (the same
    check the run makes, so that ``validate`` never says "valid" for a config the run refuses)."""
    from l2lflow.config import check_resources, load_config
    from l2lflow.store import check_compatible, read_store_attrs

    config = load_config(args.config)
    check_resources(config)
    check_compatible(config["results"], config)
    resumes = read_store_attrs(config["results"]) is not None
    print(
        f"{args.config}: valid ({config['generations']} generations × "
        f"{config['population_size']} individuals, optimizer {config['optimizer']['name']}, "
        f"optimizee {config['optimizee']['name']}, results in {config['results']}"
        f"{', resumes the store there' if resumes else ''})"
    )
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    """Run an experiment in this process (no Snakemake): handy for notebooks and benchmarks."""
    from l2lflow.client import StoreLock
    from l2lflow.config import check_resources, load_config, merge, validate_config
    from l2lflow.experiment import Experiment

    config = load_config(args.config)
    overrides: dict = {}
    if args.generations is not None:
        overrides["generations"] = args.generations
    if args.workers is not None:
        overrides.setdefault("execution", {})["workers"] = args.workers
    if args.results is not None:
        overrides["results"] = args.results
    if overrides:
        config = validate_config(merge(config, overrides))
    check_resources(config)
    from l2lflow.workflow import check_execution_here

    check_execution_here(config["execution"])
    from l2lflow.display import RunDisplay

    lock = StoreLock(config["results"])
    lock.acquire()
    display = RunDisplay(sys.stdout)  # the same view as under Snakemake; errors go to stderr
    summary = True
    try:
        display.attach(config["results"], config)
        exp = Experiment(config)
        exp.run(on_progress=lambda p: display.progress(p.as_dict()), on_step=display.step)
    except KeyboardInterrupt:
        raise
    except BaseException:
        summary = False  # the error line says what went wrong
        raise
    finally:
        lock.release()
        display.close(summary=summary)
    return 0


def _cmd_step(args: argparse.Namespace) -> int:
    from l2lflow.client import request, run_step
    from l2lflow.progress_channel import redirect_stderr

    redirect_stderr()  # under the l2lflow display, which shows it with the failed job
    if args.op == "claim":
        from l2lflow.client import claim

        claim(args.results, args.config)
        return 0
    if args.op == "shutdown":
        try:
            request(args.results, "shutdown", start=False)
        except Exception as exc:  # noqa: BLE001 - nothing to stop is fine
            print(f"l2lflow: no engine to stop ({exc})", file=sys.stderr)
        return 0
    if args.config is None or args.generation is None:
        raise SystemExit(f"l2lflow step {args.op}: --config and --generation are required")
    run_step(args.op, args.results, args.config, args.generation, args.sentinel)
    return 0


def _cmd_status(args: argparse.Namespace) -> int:
    from l2lflow.status import render_json, render_status, watch

    if args.json:
        print(render_json(args.results))
        return 0
    if args.watch:
        return watch(args.results, args.interval)
    print(render_status(args.results, max_rows=args.last))
    return 0


def _cmd_check(args: argparse.Namespace) -> int:
    from l2lflow.check import check_store

    report = check_store(args.results)
    print(report.render())
    return 0 if report.healthy else 1


def _cmd_plot(args: argparse.Namespace) -> int:
    from l2lflow.plots import FIGURES, write_figures

    out = args.out if args.out is not None else _results_folder(args.results) / "figures"
    names = [n.strip() for n in args.figures.split(",") if n.strip()] if args.figures else None
    known = FIGURES
    unknown = [n for n in names or () if n not in known]
    if unknown:
        print(
            f"l2lflow: error: --figures: unknown {', '.join(unknown)} (known: {', '.join(known)})",
            file=sys.stderr,
        )
        return 2
    written = write_figures(args.results, out, names)
    for name, path in written.items():
        print(f"{name}: {path}")
    if args.landing is not None:
        from l2lflow.plots import plot_fitness, write_landing

        fitness = written.get("fitness") or plot_fitness(args.results, out / "fitness.png")
        print(f"landing: {write_landing(args.results, args.landing, fitness)}")
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from l2lflow.export import ExportError, export

    try:
        path = export(
            args.results,
            args.format,
            args.out,
            provenance=not args.no_provenance,
            include_pending=not args.done_only,
        )
    except ExportError as exc:
        print(f"l2lflow: error: {exc}", file=sys.stderr)
        return 2
    if path is not None:
        print(f"wrote {path}", file=sys.stderr)
    return 0


def _results_folder(path: Path) -> Path:
    return path.parent if path.name == "results.zarr" else path


def _cmd_profiles(args: argparse.Namespace) -> int:
    from l2lflow.profiles import install_profiles

    for path in install_profiles(
        Path(args.dest) if args.dest else None, args.names or None, force=args.force
    ):
        print(f"installed {path}")
    return 0


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line like every other l2lflow error."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"l2lflow: error: {self.prog}: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="l2lflow", description="Learning-to-learn experiments with Snakemake, Dask and Zarr."
    )
    sub = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", parser_class=_Parser
    )

    p = sub.add_parser("validate", help="check an experiment config and say what is wrong")
    p.add_argument("config", type=Path)
    p.set_defaults(func=_cmd_validate)

    p = sub.add_parser("run", help="run an experiment in this process (without Snakemake)")
    p.add_argument("config", type=Path)
    p.add_argument("--generations", type=int, help="override the number of generations")
    p.add_argument("--workers", type=int, help="override the number of local workers")
    p.add_argument("--results", help="override the results folder")
    p.set_defaults(func=_cmd_run)

    p = sub.add_parser("step", help="one workflow step (called by the Snakemake rules)")
    p.add_argument(
        "op", choices=["sample", "evaluate", "aggregate", "meta_test", "shutdown", "claim"]
    )
    p.add_argument("--results", required=True, type=Path, help="the experiment's results folder")
    p.add_argument(
        "--config", type=Path, help="the resolved config (JSON) written by the Snakefile"
    )
    p.add_argument("--generation", type=int)
    p.add_argument("--sentinel", type=Path, help="file to write when the step is committed")
    p.set_defaults(func=_cmd_step)

    p = sub.add_parser("status", help="per-generation progress and best individual of a run")
    p.add_argument("results", type=Path, help="results folder (results/<name>) or its store")
    p.add_argument(
        "--watch", action="store_true", help="refresh until the run is finished or Ctrl-C"
    )
    p.add_argument("--interval", type=float, default=2.0, help="seconds between refreshes")
    p.add_argument("--last", type=int, metavar="N", help="show only the last N generations")
    p.add_argument("--json", action="store_true", help="print the status as JSON")
    p.set_defaults(func=_cmd_status)

    p = sub.add_parser("check", help="check a results store's integrity (exit 1 if damaged)")
    p.add_argument("results", type=Path, help="results folder (results/<name>) or its store")
    p.set_defaults(func=_cmd_check)

    p = sub.add_parser("plot", help="figures of a run (fitness, parameters, metrics, ...) as PNG")
    p.add_argument("results", type=Path, help="results folder (results/<name>) or its store")
    p.add_argument("--out", type=Path, help="output folder (default: RESULTS/figures)")
    p.add_argument(
        "--figures",
        help="comma-separated subset of: fitness,parameters,tasks,runtime,metrics,pareto,"
        "learning_curves",
    )
    p.add_argument(
        "--landing",
        type=Path,
        help="also write the Snakemake report's landing text (reStructuredText) to this file",
    )
    p.set_defaults(func=_cmd_plot)

    p = sub.add_parser("export", help="the evaluations as one table (CSV or Parquet)")
    p.add_argument("results", type=Path, help="results folder (results/<name>) or its store")
    p.add_argument("--format", choices=["csv", "parquet"], default="csv")
    p.add_argument(
        "--out", help="output file (default: RESULTS/results.<format>; '-': stdout, CSV only)"
    )
    p.add_argument(
        "--no-provenance", action="store_true", help="leave out runtime, worker, error, ..."
    )
    p.add_argument("--done-only", action="store_true", help="leave out pending evaluations")
    p.set_defaults(func=_cmd_export)

    p = sub.add_parser("profiles", help="Snakemake site profiles")
    psub = p.add_subparsers(dest="action", required=True)
    pi = psub.add_parser("install", help="copy profiles to ~/.config/snakemake/")
    pi.add_argument("names", nargs="*", help="profiles to install (default: all)")
    pi.add_argument("--dest", help="target folder (default ~/.config/snakemake)")
    pi.add_argument("--force", action="store_true", help="overwrite a changed profile")
    pi.set_defaults(func=_cmd_profiles)
    return parser


def _results_of(args: argparse.Namespace) -> str | Path | None:
    """The results folder a failed command was about, for its error line (None if unknown)."""
    where = getattr(args, "results", None)
    if where is None and getattr(args, "config", None) is not None:
        try:  # `run CONFIG`: the store is the config's results folder
            from l2lflow.config import load_config

            where = load_config(args.config)["results"]
        except Exception:  # noqa: BLE001 - the message works without it
            pass
    return where


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("l2lflow: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - one clear line, not a traceback
        from l2lflow.errors import disk_problem, is_store_damage, is_user_error

        disk = disk_problem(exc, _results_of(args))
        if disk is not None:
            print(f"l2lflow: error: {disk}", file=sys.stderr)
            return 2
        if is_store_damage(exc):
            where = _results_of(args) or "RESULTS"
            text = (str(exc) or type(exc).__name__).strip().splitlines()[0]
            print(
                f"l2lflow: error: {where}: the results store does not decode "
                f"({type(exc).__name__}: {text}); `l2lflow check {where}` names the damaged "
                "files",
                file=sys.stderr,
            )
            return 2
        if not is_user_error(exc):
            raise
        print(f"l2lflow: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
