"""tools/population_report.py reads an EauDe run's population.jsonl back into the numbers docs/results/notes.md quotes:
the target's sparsity, the population's loss, how much sparser than the densest the target is and the share of Eq. 3
steps the S_max cap stops, per quarter of the run. Small hand-made logs with known answers."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path

import population_report

ROOT = Path(__file__).resolve().parents[1]
S_MAX = 0.01


def event(step: int, before: list[float], target: int, parents: list[int], after: list[float], **extra) -> dict:
    losses = [10.0 * step + k for k in range(len(before))]  # mean 10 step + 1 for K = 3
    return dict(global_step=step, losses=losses, sparsities_before=before, target_index=target, parents=parents,
                sparsities_after=after, **extra)  # fmt: skip


def quarter(step: int, s: float) -> dict:
    """Target: network 1, 0.02 sparser than the densest (network 0), chosen three times: its first slot keeps s + 0.02,
    one copy is pruned by exactly the cap (1 - s') S_max, the other by half of it."""
    top = s + 0.02
    return event(step, [s, top, s + 0.01], 1, [1, 1, 1], [top, top + (1 - top) * S_MAX, top + (1 - top) * S_MAX / 2])


def write_run(root: Path, events: list[dict], gz: bool = False, torn: bool = False) -> Path:
    run = root / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"args": {"s_max": S_MAX}}))
    text = "".join(json.dumps(e) + "\n" for e in events) + ('{"global_step": 9' if torn else "")
    if gz:
        with gzip.open(run / "population.jsonl.gz", "wt") as f:
            f.write(text)
    else:
        (run / "population.jsonl").write_text(text)
    return run


def test_each_quarter_reads_target_loss_lead_over_the_densest_and_the_cap(tmp_path: Path) -> None:
    run = write_run(tmp_path, [quarter(step, 0.1 * step) for step in (1, 2, 3, 4)], torn=True)
    (row,) = population_report.report([run]).splitlines()[2:]
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[:2] == ["run", "4"]  # the torn last line is left out
    assert cells[2] == "0.120 / 0.220 / 0.320 / 0.420"  # the target's sparsity, not the densest's
    assert cells[3] == "11 / 21 / 31 / 41"  # the population's mean loss
    assert cells[4] == "0.0200 / 0.0200 / 0.0200 / 0.0200"
    assert cells[5] == "0.50 / 0.50 / 0.50 / 0.50"  # one copy of two at the cap; the first slots are not copies


def test_medians_within_a_quarter_and_one_row_per_critic(tmp_path: Path) -> None:
    events = [quarter(step, 0.01 * step) | {"critic": critic} for step in range(1, 13) for critic in (1, 2)]
    events[0]["losses"] = [1000.0] * 3  # critic 1, first step: an outlier the median ignores
    events[0]["sparsities_after"][2] = events[0]["sparsities_after"][1]  # and both copies at the cap
    run = write_run(tmp_path, events, gz=True)
    rows = population_report.report([run]).splitlines()[2:]
    assert [r.split("|")[1].strip() for r in rows] == ["run (critic 1)", "run (critic 2)"]
    first = [c.strip() for c in rows[0].strip("|").split("|")]
    assert first[1] == "12" and first[3] == "31 / 51 / 81 / 111"  # median of steps (1, 2, 3), (4, 5, 6), ...
    assert first[2] == "0.050 / 0.080 / 0.110 / 0.140"  # at each quarter's last step
    assert first[5] == "0.67 / 0.50 / 0.50 / 0.50"  # 4 of the first quarter's 6 copies at the cap


def test_a_folder_without_population_log_is_one_error_line(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"args": {"s_max": S_MAX}}))
    proc = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "population_report.py"), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2 and proc.stdout == ""
    assert (
        proc.stderr.startswith("error: ")
        and "no population.jsonl" in proc.stderr
        and len(proc.stderr.splitlines()) == 1
    )
