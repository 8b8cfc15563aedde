"""Publish finished benchmark runs into docs/results/: the small files that re-draw every figure, a runs.csv, the summary.

    uv run python tools/publish_results.py --runs-dir runs/cpu --output-dir docs/results

For every finished run of `--runs-dir` (tools/analyze.py's choice when a run was restarted; unfinished runs are left
for later), it writes `<output-dir>/runs/<run folder>/` with `config.json` and the gzipped `metrics.jsonl.gz` and
`population.jsonl.gz` (no checkpoints, models or event files), then `<output-dir>/runs.csv`, one row per published run:

    script, env_id, network_size, seed, u_max, s_f, total_timesteps, final_return, final_sparsity, wall_seconds,
    command, metrics, cpu

`final_return` and `final_sparsity` as tools/analyze.py defines them (the last point of the return curve, the last
logged sparsity/target), `wall_seconds` the last `time` of metrics.jsonl (seconds since the run started), `command`
the exact command line, run from the repository root, that produced the row (append `--output-dir X` to reproduce it
into X), `metrics` the path of the gzipped metrics.jsonl relative to the repository root, `cpu` the CPU model that ran
it (config.json's `machine.cpu`): a seeded CPU run re-runs to the same numbers only on that model, and the rows of one
runs.csv may come from several machines. Last, it runs
tools/analyze.py on the published runs, which writes `summary.md` (with `<output-dir>/notes.md`, the hand-written reading
of the verdicts, when it exists), `summary.json` and the figures next to runs.csv.
Runs published earlier stay; re-publishing a run rewrites the same bytes (gzip without a timestamp).
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import csv
import gzip
import json
import platform
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import analyze
from toolbox import cpu_model, read_jsonl

ROOT = Path(__file__).resolve().parents[1]
COLUMNS = [
    "script",
    "env_id",
    "network_size",
    "seed",
    "u_max",
    "s_f",
    "total_timesteps",
    "final_return",
    "final_sparsity",
    "wall_seconds",
    "command",
    "metrics",
    "cpu",
]


def script_defaults(script: Path) -> dict[str, object]:
    """The literal defaults of a script's `Args` dataclass as the file stands now, read without importing it."""
    tree = ast.parse(script.read_text())
    args = next(node for node in tree.body if isinstance(node, ast.ClassDef) and node.name == "Args")
    defaults = {}
    for node in args.body:
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value is not None:
            with contextlib.suppress(ValueError):
                defaults[node.target.id] = ast.literal_eval(node.value)
    return defaults


def reproducing_command(config: dict) -> str:
    """The run's command line as `uv run python <script> ...`, without its --output-dir (the caller chooses it).
    A value the run took from a default that the script has changed since is written out, so the row still re-runs
    the run (the classic scripts' defaults became CleanRL's protocol after the 30k-step runs were made)."""
    argv = list(config.get("command") or [])
    kept, skip = [], False
    for i, token in enumerate(argv):
        if skip:
            skip = False
            continue
        if token == "--output-dir":
            skip = True
            continue
        if token.startswith("--output-dir="):
            continue
        kept.append(Path(token).name if i == 0 else token)  # the script, named from the repository root
    script = ROOT / kept[0] if kept else None
    if script is not None and script.is_file():
        given = {token.split("=", 1)[0].removeprefix("--no-").removeprefix("--") for token in kept[1:]}
        defaults = script_defaults(script)
        for name, value in (config.get("args") or {}).items():
            flag = name.replace("_", "-")
            if name in ("output_dir", "resume") or flag in given or name not in defaults or defaults[name] == value:
                continue
            if isinstance(value, bool):
                kept.append(f"--{flag}" if value else f"--no-{flag}")
            elif value is not None:
                kept += [f"--{flag}", str(value)]
    return "uv run python " + shlex.join(kept)


def this_machine(config: dict) -> dict[str, str]:
    """The scripts' `machine` entry of config.json, for runs made on this machine before they recorded it."""
    cpu = cpu_model(platform.processor())
    device = "cpu" if config.get("jax_backend") == "cpu" else "unknown"
    return {"cpu": cpu, "device": device, "python": platform.python_version(), "system": platform.platform()}


def gzip_bytes(data: bytes) -> bytes:
    return gzip.compress(data, compresslevel=9, mtime=0)


def publish_run(run: analyze.Run, runs_out: Path) -> Path:
    target = runs_out / run.path.name
    target.mkdir(parents=True, exist_ok=True)
    config = json.loads((run.path / "config.json").read_text())
    if "machine" not in config:  # runs from before the scripts recorded it: this machine ran them, say so
        config["machine"] = {**this_machine(config), "recorded_by": "tools/publish_results.py"}
    (target / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    for name in ("metrics.jsonl", "population.jsonl"):
        if (run.path / name).exists():
            (target / f"{name}.gz").write_bytes(gzip_bytes((run.path / name).read_bytes()))
    return target


def wall_seconds(run_dir: Path) -> float:
    times = [row["time"] for row in read_jsonl(run_dir / "metrics.jsonl") if isinstance(row.get("time"), int | float)]
    return round(max(times), 1) if times else float("nan")


def csv_row(run: analyze.Run, published: Path) -> dict[str, object]:
    args = run.config.get("args", run.config)
    eaude = run.is_eaude
    return {
        "script": run.config.get("script", ""),
        "env_id": run.env_id,
        "network_size": run.size,
        "seed": run.seed,
        "u_max": args.get("u_max", "") if eaude else "",
        "s_f": "" if eaude else args.get("final_sparsity", ""),
        "total_timesteps": analyze._budget(run.config) or "",
        "final_return": repr(analyze.final_return(run)),
        "final_sparsity": repr(analyze.final_sparsity(run)),
        "wall_seconds": wall_seconds(published),
        "command": reproducing_command(run.config),
        "metrics": (published / "metrics.jsonl.gz").resolve().relative_to(ROOT).as_posix(),
        "cpu": (run.config.get("machine") or {}).get("cpu", ""),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--runs-dir", type=Path, required=True, help="folder of run folders (benchmark.sh --output-dir)"
    )
    parser.add_argument("--output-dir", type=Path, default=ROOT / "docs" / "results", help="where to publish")
    parser.add_argument("--reps", type=int, default=2000, help="bootstrap resamples per confidence interval")
    parser.add_argument(
        "--records-only",
        action="store_true",
        help="copy the runs' small files to OUTPUT_DIR/runs and stop: no runs.csv, no analysis (docs/quoted-runs)",
    )
    args = parser.parse_args(argv)
    if not args.runs_dir.is_dir():
        print(f"error: --runs-dir {args.runs_dir} is not a folder", file=sys.stderr)
        return 2
    if not args.output_dir.resolve().is_relative_to(ROOT):
        print(
            f"error: --output-dir {args.output_dir} is outside the repository (runs.csv names paths in it)",
            file=sys.stderr,
        )
        return 2
    runs = [r for r in analyze.load_runs(args.runs_dir) if not (r.problem or "").startswith("unfinished")]
    runs_out = args.output_dir / "runs"
    for run in runs:
        publish_run(run, runs_out)
    if args.records_only:
        print(f"copied {len(runs)} runs from {args.runs_dir} to {runs_out}")
        return 0 if runs else 2
    # runs.csv lists everything published so far, this call's runs and earlier ones alike.
    published = [r for r in analyze.load_runs(runs_out) if not (r.problem or "").startswith("unfinished")]
    if not published:
        print(f"error: --runs-dir {args.runs_dir} holds no finished run", file=sys.stderr)
        return 2
    with open(args.output_dir / "runs.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS, lineterminator="\n")
        writer.writeheader()
        for run in published:
            writer.writerow(csv_row(run, run.path))
    print(f"published {len(runs)} runs from {args.runs_dir}; {args.output_dir / 'runs.csv'} lists {len(published)}")
    for stale in args.output_dir.glob("*.png"):  # the figures are redrawn below; none of an older layout may stay
        stale.unlink()
    notes = args.output_dir / "notes.md"  # the hand-written reading of the verdicts, kept beside the numbers
    extra = ["--notes", str(notes)] if notes.is_file() else []
    # Run from the repository root with root-relative paths: summary.md names where its runs are, on any machine.
    with contextlib.chdir(ROOT):
        out = args.output_dir.resolve().relative_to(ROOT)
        extra = ["--notes", str(out / "notes.md")] if extra else []
        return analyze.main(
            ["--runs-dir", str(out / "runs"), "--output-dir", str(out), "--reps", str(args.reps), *extra]
        )


if __name__ == "__main__":
    sys.exit(main())
