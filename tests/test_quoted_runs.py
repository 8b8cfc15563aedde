"""The runs the README and docs/ quote: each comes from a record committed under docs/ (config.json, gzipped metrics,
the fingerprint of its script at the time), and a number on the page is the record's number. Speed and cost tables
(tools/throughput.py, tools/costs.py) are recorded too, as the tool's complete output under docs/quoted-runs/tables/.

docs/quoted-runs/quotes.json lists every quote: the page, the text as it stands there with fields filled from the
named records (`{seed1.final_return:.1f}`) or table (`{t.cell[row][column]}`), the command it quotes (`commands` when
records differ) and the script whose fingerprint the records carry. So a change that moves a script's seeded numbers,
or its defaults under a quoted command, cannot pass without re-measuring what the pages say, and a hand-edited number
on a page fails too.
"""

from __future__ import annotations

import gzip
import json
import platform
import shlex
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from types import SimpleNamespace

import analyze
import numpy as np
import pytest
from toolbox import has_avx512

ROOT = Path(__file__).resolve().parents[1]
QUOTES = json.loads((ROOT / "docs" / "quoted-runs" / "quotes.json").read_text())
# Arguments that name or place a run, or only add an evaluation at its end: they change no logged training number.
NOT_NUMBERS = {"exp_name", "output_dir", "save_model", "capture_video", "track", "resume", "checkpoint_interval"}


def record_numbers(run_dir: Path) -> SimpleNamespace:
    """What a page may quote of a run: its final return and sparsity as tools/analyze.py defines them, the mean
    training return of its last 20 episodes, the mean of its evaluation episodes (the best evaluation and the step that
    first scored it, for runs evaluated as they go), its wall-clock minutes, and the mean
    training return per tenth of the budget (`tenths[i]`: the episodes that ended in the (i+1)-th tenth) and the target
    sparsity logged last by the end of each tenth (`sparsity_tenths[i]`)."""
    run = analyze.load_run(run_dir)
    assert run is not None and run.problem is None, f"{run_dir}: {run and run.problem}"
    steps, returns = run.metrics["charts/episodic_return"]
    budget = analyze._budget(run.config)
    tenths = [returns[(steps > i * budget / 10) & (steps <= (i + 1) * budget / 10)].mean() for i in range(10)]
    sparsity_steps, sparsities = run.metrics[analyze.SPARSITY]
    sparsity_tenths = [float(sparsities[sparsity_steps <= (i + 1) * budget / 10][-1]) for i in range(10)]
    rows = [json.loads(line) for line in gzip.decompress((run_dir / "metrics.jsonl.gz").read_bytes()).splitlines()]
    eval_steps, evals = run.metrics.get("eval/episodic_return", (np.array([0]), np.array([float("nan")])))
    by_step = {int(step): float(evals[eval_steps == step].mean()) for step in np.unique(eval_steps)}
    best = max(by_step.values())
    return SimpleNamespace(
        final_return=analyze.final_return(run),
        final_sparsity=analyze.final_sparsity(run),
        last20=float(returns[-20:].mean()),
        eval=float(sum(evals) / len(evals)),
        eval_min=float(min(evals)),
        minutes=max(r["time"] for r in rows) / 60,
        best_eval=best,  # the best evaluation (mean of its episodes) and the first step that scored it, in thousands
        best_eval_k=next((step / 1000 for step, value in sorted(by_step.items()) if value == best), float("nan")),
        tenths=[float(t) for t in tenths],
        sparsity_tenths=sparsity_tenths,
    )


def table_record(path: Path) -> SimpleNamespace:
    """A tool's recorded output: `command:`, `machine:`, `code:` and `took:` lines, an empty line, then the tool's
    stdout. `cell[row][column]` is a cell of any Markdown table in it, by the row's first cell and the column's header;
    `tables[i]` is its i-th table as printed, `lines[i]` its i-th non-empty line outside the tables, `took` the
    seconds the command took."""
    header, _, body = path.read_text().partition("\n\n")
    fields = dict(line.split(": ", 1) for line in header.splitlines())
    assert set(fields) == {"command", "machine", "code", "took"}, f"{path}: header {sorted(fields)}"
    assert fields["took"].endswith("(exit 0)"), f"{path}: the tool failed ({fields['took']})"
    cell: dict[str, dict[str, str]] = {}
    tables: list[list[str]] = []
    lines: list[str] = []
    columns: list[str] = []
    previous = ""
    for line in body.splitlines():
        if not line.startswith("|"):
            lines += [line] if line.strip() else []
        elif not previous.startswith("|"):
            tables.append([line])
            columns = [c.strip() for c in line.strip("|").split("|")]
        else:
            tables[-1].append(line)
            cells = [c.strip() for c in line.strip("|").split("|")]
            if not set(cells[0]) <= {"-"}:
                assert cells[0] not in cell, f"{path}: row {cells[0]!r} twice"
                cell[cells[0]] = dict(zip(columns, cells, strict=True))
        previous = line
    fields["took"] = fields["took"].split()[0]
    return SimpleNamespace(cell=cell, tables=["\n".join(t) for t in tables], lines=lines, **fields)


def quote_ids(kind: str | None = None) -> list[str]:
    """Every quote's id, or those of the quotes with a `records` or `table` field."""
    return [q["id"] for q in QUOTES["quotes"] if kind is None or kind in q]


def quote(qid: str) -> dict:
    return next(q for q in QUOTES["quotes"] if q["id"] == qid)


@pytest.mark.parametrize("qid", quote_ids())
def test_the_page_says_what_its_records_say(qid: str) -> None:
    q = quote(qid)
    if "table" in q:
        records = {"t": table_record(ROOT / q["table"])}
    else:
        records = {name: record_numbers(ROOT / path) for name, path in q["records"].items()}
    text = q["text"].format(**records)
    page = " ".join((ROOT / q["page"]).read_text().split())  # line breaks on the page do not matter
    assert " ".join(text.split()) in page, f"{q['page']} no longer says: {text}"


@pytest.mark.parametrize("qid", quote_ids("records"))
def test_the_quoted_command_gives_the_records_settings(qid: str) -> None:
    """A quoted command (e.g. the README's `uv run python eaudedqn_jax.py`) run with each record's seed resolves to
    the record's arguments: a change of the script's defaults under a quoted run fails here."""
    q = quote(qid)
    module = __import__(q["script"])
    for name, path in q["records"].items():
        argv = shlex.split(q.get("commands", {}).get(name, q.get("command", "")))  # a record's own, or the quote's
        assert argv[:3] == ["uv", "run", "python"] and Path(argv[3]).stem == q["script"]
        config = json.loads((ROOT / path / "config.json").read_text())
        assert config["script"] == argv[3]
        args = vars(module.parse_args([*argv[4:], "--seed", str(config["args"]["seed"]), "--output-dir", "runs"]))
        recorded = {k: v for k, v in config["args"].items() if k not in NOT_NUMBERS}
        assert {k: args[k] for k in recorded} == recorded, f"{path}: the quoted command no longer gives its settings"
        assert config["versions"]["jax"] == QUOTES["fingerprints"]["versions"]["jax"]


def test_every_quoted_script_has_its_fingerprint_recorded() -> None:
    scripts = {q["script"] for q in QUOTES["quotes"] if "records" in q}
    assert scripts <= set(QUOTES["fingerprints"]["lines"])


def test_every_recorded_table_is_quoted() -> None:
    """A table record nobody quotes is dead weight, and a quote must name a record that exists."""
    recorded = {p.relative_to(ROOT).as_posix() for p in (ROOT / "docs" / "quoted-runs" / "tables").glob("*.md")}
    assert recorded == {q["table"] for q in QUOTES["quotes"] if "table" in q}


@pytest.mark.parametrize("script", sorted({q["script"] for q in QUOTES["quotes"] if "records" in q}))
def test_the_quoted_scripts_numbers_have_not_moved(script: str) -> None:
    """tools/fingerprint.py's line for the script equals the one recorded with the quoted runs. Its seeded numbers
    depend on the locked stack: the check runs on the stack the records came from and skips on the other."""
    recorded = QUOTES["fingerprints"]
    versions = recorded["versions"]
    here = {"python": platform.python_version(), "jax": metadata.version("jax"), "envpool": metadata.version("envpool")}
    if here != versions:
        pytest.skip(f"the records came from {versions}, this is {here}")
    # the records' lines, or those taken on a processor without AVX-512, for which XLA compiles other code
    lines = recorded["lines"] if has_avx512() else recorded["lines_without_avx512"]
    result = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "fingerprint.py"), "--scripts", script],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.stdout.split() == lines[script].split(), result.stderr[-2000:]
