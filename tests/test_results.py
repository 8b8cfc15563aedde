"""docs/results/: the published runs re-draw the published summary, and a row's command reproduces its numbers."""

from __future__ import annotations

import csv
import json
import platform
import re
import shlex
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import analyze
import pytest
from toolbox import has_avx512

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "docs" / "results"


def rows() -> list[dict[str, str]]:
    with open(RESULTS / "runs.csv") as f:
        return list(csv.DictReader(f))


def test_every_row_names_its_files_and_a_command_from_the_repository_root() -> None:
    table = rows()
    assert table and list(table[0])[:12] == [
        "script", "env_id", "network_size", "seed", "u_max", "s_f", "total_timesteps", "final_return",
        "final_sparsity", "wall_seconds", "command", "metrics",
    ]  # fmt: skip
    for row in table:
        metrics = ROOT / row["metrics"]
        assert metrics.name == "metrics.jsonl.gz" and metrics.is_file(), row["metrics"]
        assert (metrics.parent / "config.json").is_file()
        argv = shlex.split(row["command"])
        assert argv[:3] == ["uv", "run", "python"] and argv[3] == row["script"] and (ROOT / argv[3]).is_file()
        assert "--output-dir" not in argv and f"--seed {row['seed']}" in row["command"]
    # Nothing but the small files: no checkpoints, models or event files.
    assert {p.name for p in (RESULTS / "runs").rglob("*") if p.is_file()} <= {
        "config.json", "metrics.jsonl.gz", "population.jsonl.gz",
    }  # fmt: skip


def test_runs_csv_agrees_with_the_published_files() -> None:
    runs = {run.path.name: run for run in analyze.load_runs(RESULTS / "runs")}
    for row in rows():
        run = runs[Path(row["metrics"]).parent.name]
        assert repr(analyze.final_return(run)) == row["final_return"]
        assert repr(analyze.final_sparsity(run)) == row["final_sparsity"]
        assert (run.env_id, str(run.seed), run.config["script"]) == (row["env_id"], row["seed"], row["script"])


def test_the_published_verdicts_are_what_the_analysis_of_the_published_runs_says() -> None:
    published = json.loads((RESULTS / "summary.json").read_text())["claims"]
    claims = analyze.paper_claims(analyze.load_runs(RESULTS / "runs"), reps=2000)
    assert [(c["id"], c["verdict"], c["rows"]) for c in claims] == [
        (c["id"], c["verdict"], c["rows"]) for c in published
    ]
    summary = (RESULTS / "summary.md").read_text()
    for claim in claims:
        assert f"| {claim['id']}: {claim['claim']} | **{claim['verdict']}** |" in summary


def test_the_readme_table_at_the_papers_clock_says_what_the_summary_says() -> None:
    """The README's first results table: each claim's verdict is the published one at the paper's clock, and every
    interval it quotes (`472.6 [419.4, 500.0]`) is a cell of that claim's published rows, so no number on the front
    page outlives a re-publication."""
    readme = (ROOT / "README.md").read_text()
    table = readme[readme.index("**At the paper's clock") : readme.index("**Budget-capped")]
    claims = [c for c in json.loads((RESULTS / "summary.json").read_text())["claims"] if c["section"] == "paper_clock"]
    rows = [line for line in table.splitlines() if line.startswith("| C")]
    assert [row[2:4] for row in rows] == ["C1", "C2", "C3", "C4"]
    for row in rows:
        claim = next(c for c in claims if c["id"] == row[2:4])
        verdict, numbers = (cell.strip() for cell in row.strip("|").split("|")[1:3])
        assert verdict.startswith(claim["verdict"].split(" (")[0]), (claim["id"], verdict, claim["verdict"])
        cells = " ".join(" ".join(r) for r in claim["rows"])
        for interval in re.findall(r"-?[0-9.]+ \[-?[0-9.]+, -?[0-9.]+\]", numbers):
            assert interval in cells, f"{claim['id']}: {interval} is not in the published rows"
        published = set(re.findall(r"-?[0-9]+\.[0-9]+", cells))
        for number in re.findall(r"-?[0-9]+\.[0-9]+", numbers):  # single values too, e.g. a sparsity "at 0.627"
            assert number in published, f"{claim['id']}: {number} is not in the published rows"
    summary = (RESULTS / "summary.md").read_text()
    # dense DQN beside CleanRL, below the table
    for mean_std in re.findall(r"-?[0-9.]+ \+- [0-9.]+", " ".join(table.split())):
        assert mean_std in summary, f"{mean_std} is not in the published summary"


@pytest.mark.slow
def test_the_cheapest_row_reproduces_its_final_return_and_sparsity(tmp_path: Path) -> None:
    """Seeded CPU runs are deterministic given the locked versions and the processor: on the machine the results came
    from, re-running a row's command gives its numbers exactly."""
    row = min(rows(), key=lambda r: float(r["wall_seconds"]))
    config = json.loads((ROOT / row["metrics"]).with_name("config.json").read_text())
    machine, versions = config["machine"], config["versions"]
    here = (cpu_model(), platform.python_version(), metadata.version("jax"))
    if (machine["cpu"], machine["python"], versions["jax"]) != here:
        pytest.skip(f"results came from {machine['cpu']} / Python {machine['python']} / jax {versions['jax']}")
    if not has_avx512():  # XLA compiles other code for it: an AMD EPYC without AVX-512 gave other numbers
        pytest.skip(f"this {machine['cpu']} has no AVX-512: the rows reproduced on VMs whose numbers it does not give")
    argv = [*shlex.split(row["command"])[3:], "--output-dir", str(tmp_path)]
    subprocess.run([sys.executable, *argv], cwd=ROOT, check=True, capture_output=True, timeout=900)
    (run_dir,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    run = analyze.load_run(run_dir)
    assert repr(analyze.final_return(run)) == row["final_return"]
    assert repr(analyze.final_sparsity(run)) == row["final_sparsity"]


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []:
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()
