"""tools/throughput.py: the layout timing drives the script's own learner state and train step (it broke silently once
when their signature changed), and the CLI prints a table row per algorithm from a real child run. Speed itself is not
asserted: it depends on the machine."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import throughput

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow  # compiles the K = 2 convolutional step in both layouts
def test_layouts_time_one_population_step_in_both_layouts() -> None:
    (row,) = throughput.population_layouts(["small"], num_networks=2, repeats=1)
    assert row["size"] == "small" and row["K"] == 2
    assert row["loop"] > 0 and row["vmap"] > 0


@pytest.mark.slow  # a child run of eaudedqn_jax.py
def test_the_table_has_a_row_per_algorithm() -> None:
    argv = ["--algos", "eaudedqn_classic", "--env-id", "CartPole-v1", "--total-timesteps", "3000"]
    result = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "throughput.py"), *argv, "--learning-starts", "500"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.splitlines()
    assert lines.count("| algorithm | learning-phase SPS | time vs PolyPrune | peak RSS (MB) | peak device (MB) |") == 1
    (row,) = [line for line in lines if line.startswith("| eaudedqn_classic |")]
    sps, ratio = (cell.strip() for cell in row.split("|")[2:4])
    assert float(sps) > 0 and ratio == "-"  # no PolyPrune row to compare with
