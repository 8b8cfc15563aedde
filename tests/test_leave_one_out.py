"""tools/analyze.py's leave-one-seed-out check: every verdict at the paper's clock recomputed with each seed's runs left
out in turn, printed per claim and shown in summary.md beside the verdict."""

from __future__ import annotations

from pathlib import Path

import analyze
import pytest
from test_analyze import DENSE_CLASSIC, EAUDE_CLASSIC, make_run

PAPER = {"target_network_frequency": 1, "s_max": 0.001}  # t_final / T = 1 000: the paper's clock


@pytest.fixture(scope="module")
def four_seeds(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """CartPole small at the paper's clock, 4 seeds: EauDe returns as much as dense DQN, at final sparsity 0.6 for
    seeds 1-3 and 0.1 for seed 4. IQM over 4 seeds = mean of the middle two = 0.6 >= 0.5: C1 supported. Without seed
    1, 2 or 3 the IQM of 3 seeds is their mean, (0.6 + 0.6 + 0.1) / 3 = 0.43 < 0.5: C1 not supported; without seed 4 it
    is 0.6 again. A budget-capped run of seed 9 (60 target updates) is no seed of the paper's clock."""
    root = tmp_path_factory.mktemp("loo")
    for seed, sparsity in ((1, 0.6), (2, 0.6), (3, 0.6), (4, 0.1)):
        exp = "eaudedqn_classic_small_t1k"
        make_run(root, "CartPole-v1", exp, seed, 200.0, sparsity, EAUDE_CLASSIC, total=1000, args=PAPER,
                 population_steps=range(21, 1001))  # fmt: skip
        make_run(root, "CartPole-v1", "dqn_classic_small_t1k", seed, 200.0, 0.0, DENSE_CLASSIC, total=1000, args=PAPER)
    capped = {"target_network_frequency": 500, "s_max": 0.01}
    make_run(root, "CartPole-v1", "eaudedqn_classic_small_t30k", 9, 200.0, 0.3, EAUDE_CLASSIC, total=30000,
             args=capped, population=True)  # fmt: skip
    return root


def test_each_seed_left_out_in_turn(four_seeds: Path) -> None:
    runs = analyze.load_runs(four_seeds)
    full = {c["id"]: c["verdict"] for c in analyze.paper_claims(runs, reps=50) if c["section"] == "paper_clock"}
    assert full["C1"] == "supported"
    without = analyze.leave_one_seed_out(runs, reps=50)
    assert sorted(without) == ["C1", "C2", "C3", "C4"]
    assert without["C1"] == {1: "not supported", 2: "not supported", 3: "not supported", 4: "supported"}
    assert without["C3"] == dict.fromkeys((1, 2, 3, 4), "not tested (no runs of this kind)")  # one size only
    assert analyze.agreement(full["C1"], without["C1"]) == (
        "1 of 4 agree (without seed 1: not supported; without seed 2: not supported; without seed 3: not supported)"
    )
    assert analyze.agreement("supported", {1: "supported", 2: "supported"}) == "2 of 2 agree"


def test_printed_and_shown_beside_each_verdict(four_seeds: Path, tmp_path: Path, capsys) -> None:
    assert analyze.main(["--runs-dir", str(four_seeds), "--output-dir", str(tmp_path), "--reps", "50"]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert "C1 supported; one seed left out: 1 of 4 agree (without seed 1: not supported; without seed 2: not " \
        "supported; without seed 3: not supported)" in printed  # fmt: skip
    assert not any(line.startswith("C3 ") for line in printed)  # a claim without cells has nothing to hang on
    summary = (tmp_path / "summary.md").read_text()
    clock = summary[: summary.index("## The paper's claims, budget-capped runs")]
    assert "| claim | verdict | verdicts with one seed left out |" in clock
    assert "| **supported** | 1 of 4 agree (without seed 1: not supported;" in clock
    assert "| claim | verdict |\n" in summary[len(clock) :]  # budget-capped verdicts have no such column
