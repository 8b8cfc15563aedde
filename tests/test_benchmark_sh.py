"""benchmark.sh: preset expansion (--dry-run), selection flags, skipping finished runs, resuming from checkpoints and
local workers, checked with stand-in scripts (tests/support/benchmark_fakes.py)."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
from collections import Counter
from pathlib import Path

import pytest
from support.benchmark_fakes import ALGO_SCRIPTS, REPO_ROOT, make_fake_script_dir

BENCH = REPO_ROOT / "benchmark.sh"
ATARI_SCRIPTS = {"eaudedqn_atari_jax.py", "polyprune_dqn_atari_jax.py"}
MUJOCO_SCRIPTS = {"eaudesac_mujoco_jax.py", "polyprune_sac_mujoco_jax.py"}
CLASSIC_SCRIPTS = {"eaudedqn_jax.py", "polyprune_dqn_jax.py"}
# (script, algorithm key) of each domain's EauDe, PolyPrune and dense runs.
ATARI_ALGOS = [
    ("eaudedqn_atari_jax.py", "eaudedqn"),
    ("polyprune_dqn_atari_jax.py", "polyprune_dqn"),
    ("polyprune_dqn_atari_jax.py", "dqn"),
]
MUJOCO_ALGOS = [
    ("eaudesac_mujoco_jax.py", "eaudesac"),
    ("polyprune_sac_mujoco_jax.py", "polyprune_sac"),
    ("polyprune_sac_mujoco_jax.py", "sac"),
]
CLASSIC_ALGOS = [
    ("eaudedqn_jax.py", "eaudedqn_classic"),
    ("polyprune_dqn_jax.py", "polyprune_dqn_classic"),
    ("polyprune_dqn_jax.py", "dqn_classic"),
]


def bench(*args: str, env: dict | None = None, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        ["bash", str(BENCH), *args], capture_output=True, text=True, env={**os.environ, **(env or {})}, timeout=300
    )
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


def dry(*args: str) -> list[list[str]]:
    proc = bench("--dry-run", *args)
    assert proc.stderr == ""  # --dry-run prints the commands and nothing else
    return [shlex.split(line) for line in proc.stdout.splitlines()]


def flag(cmd: list[str], name: str) -> str | None:
    return cmd[cmd.index(name) + 1] if name in cmd else None


@pytest.mark.parametrize(
    ("preset", "n_runs", "scripts"),
    [
        ("paper-atari", 10 * 5 * 3 * 3, {"eaudedqn_atari_jax.py", "polyprune_dqn_atari_jax.py"}),
        ("paper-atari-15", 15 * 5 * 3 * 3, {"eaudedqn_atari_jax.py", "polyprune_dqn_atari_jax.py"}),
        ("paper-offline", 10 * 5 * 2 * 3, {"eaudecql_atari_jax.py", "polyprune_cql_atari_jax.py"}),
        ("paper-mujoco", 6 * 10 * 3 * 3, {"eaudesac_mujoco_jax.py", "polyprune_sac_mujoco_jax.py"}),
        ("ablation-umax", (10 * 5 + 6 * 10) * 2 * 3, {"eaudedqn_atari_jax.py", "eaudesac_mujoco_jax.py"}),
        ("pareto-mujoco", 6 * 10 * 6, {"polyprune_sac_mujoco_jax.py"}),
        ("paper-training-length", 3 * (10 * 5 + 6 * 10) * 2, ATARI_SCRIPTS | MUJOCO_SCRIPTS),
        ("paper-ablation-k", 3 * 3 * 6 * 10, {"eaudesac_mujoco_jax.py"}),
        ("cpu-classic", 3 * (3 + 1) * 3, CLASSIC_SCRIPTS),
        ("cpu-umax", 2 * 3 * 3, {"eaudedqn_jax.py"}),
        ("cpu-mujoco", 3 * 3, MUJOCO_SCRIPTS),
        ("cpu-clock", 5 * ((3 + 1) * 3 + 2 * 2 + 3), CLASSIC_SCRIPTS | MUJOCO_SCRIPTS),
        ("cpu-minatar", 2 * 2 * 3 * 3, CLASSIC_SCRIPTS),
        ("smoke", 11, set(ALGO_SCRIPTS)),
    ],
)
def test_preset_expansion(preset: str, n_runs: int, scripts: set[str], tmp_path: Path) -> None:
    cmds = dry("--preset", preset, "--output-dir", str(tmp_path / "runs"))
    assert len(cmds) == n_runs
    assert {c[3] for c in cmds} == scripts
    assert all(c[:3] == ["uv", "run", "python"] for c in cmds)
    keys = [(flag(c, "--env-id"), flag(c, "--exp-name"), flag(c, "--seed")) for c in cmds]
    assert len(set(keys)) == n_runs  # every run distinct
    for c in cmds:
        exp, size = flag(c, "--exp-name"), flag(c, "--network-size")
        assert flag(c, "--output-dir") == str(tmp_path / "runs")
        if size is not None:
            assert f"_{size}" in exp  # network size recorded in the exp name
        if exp.startswith(("dqn", "cql", "sac")):
            assert flag(c, "--final-sparsity") == "0"  # dense baselines
        if preset != "smoke":  # a shortened or lengthened run says so in its name: _t30k, _t2M
            steps = flag(c, "--total-timesteps")
            assert (steps is None) == ("_t" not in exp)
            if steps is not None:
                assert exp.endswith(f"_t{int(steps) // 1000}k") or exp.endswith(f"_t{int(steps) // 1_000_000}M")
        if "_umax" in exp:
            assert exp.startswith("eaude") and f"_umax{flag(c, '--u-max')}" in exp
        if "cql" in exp:
            assert flag(c, "--dataset-dir") is not None


def test_paper_atari_games_and_seeds(tmp_path: Path) -> None:
    cmds = dry("--preset", "paper-atari", "--output-dir", str(tmp_path))
    games = {flag(c, "--env-id") for c in cmds}
    assert len(games) == 10 and {"Pong-v5", "SpaceInvaders-v5", "CrazyClimber-v5"} <= games
    assert {flag(c, "--seed") for c in cmds} == {"1", "2", "3", "4", "5"}
    assert Counter(flag(c, "--exp-name") for c in cmds) == {
        f"{a}_{s}": 50 for a in ("eaudedqn", "polyprune_dqn", "dqn") for s in ("small", "medium", "large")
    }
    assert all(flag(c, "--checkpoint-interval") == "1000000" for c in cmds)


def test_ablation_umax_regimes(tmp_path: Path) -> None:
    cmds = dry("--preset", "ablation-umax", "--output-dir", str(tmp_path))
    umax = Counter((flag(c, "--u-max") or "3", flag(c, "--network-size")) for c in cmds)
    assert set(umax) == {(u, s) for u in ("3", "10", "30") for s in ("small", "large")}
    # U_max = 3 is the default: same exp name (and run folder) as the paper presets, no --u-max passed.
    assert {flag(c, "--exp-name") for c in cmds if flag(c, "--u-max") is None} == {
        "eaudedqn_small",
        "eaudedqn_large",
        "eaudesac_small",
        "eaudesac_large",
    }


def test_paper_training_length(tmp_path: Path) -> None:
    cmds = dry("--preset", "paper-training-length", "--output-dir", str(tmp_path))
    runs = Counter((c[3], flag(c, "--exp-name"), flag(c, "--total-timesteps")) for c in cmds)
    # 100M frames (25M agent steps) on the 10 games x 5 seeds, 2M steps on the 6 MuJoCo envs x 10 seeds.
    assert runs == {
        **{(s, f"{a}_{n}_t25M", "25000000"): 50 for s, a in ATARI_ALGOS for n in ("small", "large")},
        **{(s, f"{a}_{n}_t2M", "2000000"): 60 for s, a in MUJOCO_ALGOS for n in ("small", "large")},
    }
    assert {flag(c, "--seed") for c in cmds if c[3] in ATARI_SCRIPTS} == {str(i) for i in range(1, 6)}
    assert {flag(c, "--seed") for c in cmds if c[3] in MUJOCO_SCRIPTS} == {str(i) for i in range(1, 11)}
    assert all(flag(c, "--checkpoint-interval") is not None for c in cmds)  # long runs can be resumed


def test_paper_ablation_k_grid(tmp_path: Path) -> None:
    cmds = dry("--preset", "paper-ablation-k", "--output-dir", str(tmp_path))
    cells = Counter(
        (int(flag(c, "--num-networks") or 5), int(flag(c, "--tournament-size") or 3), flag(c, "--s-max") or "0.01")
        for c in cmds
    )
    # Every (K, S_max) cell on 6 envs x 10 seeds, with M = ceil(K / 2) (Fig. 13 right).
    assert cells == {(k, -(-k // 2), s): 60 for k in (3, 5, 10) for s in ("0.001", "0.01", "0.1")}
    assert {flag(c, "--network-size") for c in cmds} == {"small"} and {flag(c, "--u-max") for c in cmds} == {None}
    # The default cell is paper-mujoco's eaudesac_small (same run folders); the others are named after their cell.
    assert {
        flag(c, "--exp-name") for c in cmds if flag(c, "--num-networks") is None and flag(c, "--s-max") is None
    } == {"eaudesac_small"}
    assert {flag(c, "--exp-name") for c in cmds if flag(c, "--num-networks") == "10"} == {
        "eaudesac_small_k10_smax0.001",
        "eaudesac_small_k10",
        "eaudesac_small_k10_smax0.1",
    }


def test_cpu_presets(tmp_path: Path) -> None:
    classic = dry("--preset", "cpu-classic", "--output-dir", str(tmp_path))
    assert Counter((c[3], flag(c, "--exp-name"), flag(c, "--env-id")) for c in classic) == {
        **{(s, f"{a}_{n}_t30k", "CartPole-v1"): 3 for s, a in CLASSIC_ALGOS for n in ("small", "medium", "large")},
        **{(s, f"{a}_small_t30k", "Acrobot-v1"): 3 for s, a in CLASSIC_ALGOS},
    }
    umax = dry("--preset", "cpu-umax", "--output-dir", str(tmp_path))
    assert Counter((flag(c, "--u-max") or "3", flag(c, "--network-size")) for c in umax) == {
        (u, n): 3 for u in ("3", "10", "30") for n in ("small", "large")
    }
    # U_max = 3 runs are cpu-classic's: same folders, run once.
    assert {flag(c, "--exp-name") for c in umax if flag(c, "--u-max") is None} == {
        "eaudedqn_classic_small_t30k",
        "eaudedqn_classic_large_t30k",
    }
    mujoco = dry("--preset", "cpu-mujoco", "--output-dir", str(tmp_path))
    assert Counter((c[3], flag(c, "--exp-name"), flag(c, "--env-id")) for c in mujoco) == {
        (s, f"{a}_small_t50k", "HalfCheetah-v5"): 3 for s, a in MUJOCO_ALGOS
    }
    for cmds in (classic, umax, mujoco):
        assert {flag(c, "--seed") for c in cmds} == {"1", "2", "3"}
        # One setting for every method of a preset: the same arguments apart from the run's own.
        assert len({tuple(c[c.index("--output-dir") + 2 :]) for c in cmds}) == 1
    assert {flag(c, "--exploration-steps") for c in classic + umax} == {"15000"}  # half the budget, as 50k of 100k
    # the defaults the published runs were made with, before the scripts took CleanRL's protocol
    assert {(flag(c, "--learning-starts"), flag(c, "--train-frequency")) for c in classic + umax} == {("1000", "4")}
    assert {flag(c, "--total-timesteps") for c in mujoco} == {"50000"}


def test_cpu_presets_fit_two_hours(tmp_path: Path) -> None:
    """The 2-hour estimate of benchmark.sh's CPU budget block, recomputed from the commands: minutes of one core per
    100k steps for eaudedqn_jax.py (K = 5) by size, PolyPrune/DQN classic 3x faster, EauDeSAC 74 and SAC/PolyPruneSAC
    170 steps per second, 0.5 min of start-up and evaluation per run, runs shared between presets counted once."""
    eaude_classic = {"small": 2.5, "medium": 6.0, "large": 35.0}
    runs = {}
    for preset in ("cpu-classic", "cpu-umax", "cpu-mujoco"):
        for c in dry("--preset", preset, "--output-dir", str(tmp_path)):
            runs[(flag(c, "--env-id"), flag(c, "--exp-name"), flag(c, "--seed"))] = c
    assert len(runs) == 36 + 12 + 9
    minutes = 0.0
    for c in runs.values():
        steps, exp = int(flag(c, "--total-timesteps")), flag(c, "--exp-name")
        if c[3] == "eaudedqn_jax.py":
            minutes += eaude_classic[flag(c, "--network-size")] * steps / 100_000
        elif c[3] == "polyprune_dqn_jax.py":
            minutes += eaude_classic[flag(c, "--network-size")] / 3 * steps / 100_000
        else:
            assert steps >= 50_000  # MuJoCo: at least 50k steps
            minutes += steps / (74 if exp.startswith("eaudesac") else 170) / 60
        minutes += 0.5
    assert 90 <= minutes / 2 <= 120  # two workers, one core each: about 2 hours


# CleanRL's dqn_jax.py protocol (its documented defaults), the one cpu-clock runs on classic control; CleanRL decays
# epsilon over the first 250k steps, the scripts after the 10k-step warm-up, hence 240k.
CLEANRL_DQN_PROTOCOL = {
    "--total-timesteps": "500000",
    "--target-network-frequency": "500",
    "--train-frequency": "10",
    "--batch-size": "128",
    "--buffer-size": "10000",
    "--learning-starts": "10000",
    "--learning-rate": "2.5e-4",
    "--start-e": "1.0",
    "--end-e": "0.05",
    "--exploration-steps": "240000",
}


def test_cpu_clock_keeps_the_papers_clock(tmp_path: Path) -> None:
    """Issue 21's cells, each with t_final / T >= 1 000 (SAC: t_final / P), 5 seeds, the protocol written out."""
    cmds = dry("--preset", "cpu-clock", "--output-dir", str(tmp_path))
    cells = Counter((c[3], flag(c, "--exp-name"), flag(c, "--env-id")) for c in cmds)
    sizes = ("small", "medium", "large")
    # Acrobot-v1 medium: the cut that fits the clock
    acrobot = {(s, f"{a}_small_t500k", "Acrobot-v1"): 5 for s, a in CLASSIC_ALGOS}
    umax = {
        ("eaudedqn_jax.py", f"eaudedqn_classic_{n}_umax{u}_t500k", "CartPole-v1"): 5
        for n in sizes[:2]
        for u in (10, 30)
    }
    assert cells == {
        **{(s, f"{a}_{n}_t500k", "CartPole-v1"): 5 for s, a in CLASSIC_ALGOS for n in sizes},
        **acrobot,
        **umax,
        **{(s, f"{a}_small_p100_t100k", "HalfCheetah-v5"): 5 for s, a in MUJOCO_ALGOS},
    }
    assert {flag(c, "--seed") for c in cmds} == {"1", "2", "3", "4", "5"}
    for c in cmds:
        assert "--save-model" in c  # an evaluation score beside the training return
        steps = int(flag(c, "--total-timesteps"))
        if c[3] in CLASSIC_SCRIPTS:
            assert {k: flag(c, k) for k in CLEANRL_DQN_PROTOCOL} == CLEANRL_DQN_PROTOCOL
            assert steps // int(flag(c, "--target-network-frequency")) >= 1_000
            if c[3] == "polyprune_dqn_jax.py":  # Eq. 2 written out too, masks updated every T / 2 as on Atari
                assert [flag(c, f) for f in ("--pruning-start", "--pruning-end", "--pruning-power")] == [
                    "0.2",
                    "0.8",
                    "3.0",
                ]
                assert flag(c, "--pruning-period") == "250"
        else:
            assert steps == 100_000 and steps // int(flag(c, "--pruning-period")) >= 1_000
        default = 50_000 if c[3] in CLASSIC_SCRIPTS else 100_000  # the scripts' own --checkpoint-interval
        assert 0 < int(flag(c, "--checkpoint-interval") or default) < steps  # an interruption resumes mid-run


def test_cpu_clock_takes_about_fifteen_hours(tmp_path: Path) -> None:
    """benchmark.sh's sizing of cpu-clock, recomputed from the commands: minutes of one core per run, by exp name (the
    finished runs' median wall time, two at a time); with --workers 2, the whole set in about 15 hours once
    Acrobot-v1's medium size is cut."""
    minutes = {"eaudedqn_classic": {"small": 8, "medium": 23, "large": 147}}
    minutes |= {"polyprune_dqn_classic": {"small": 2, "medium": 4, "large": 22}}
    minutes |= {"dqn_classic": {"small": 2, "medium": 4, "large": 20}}
    minutes |= {"eaudedqn_classic_umax": {"small": 5, "medium": 10}}
    minutes |= {"eaudesac": {"small": 51}, "polyprune_sac": {"small": 22}, "sac": {"small": 20}}
    total = 0
    for c in dry("--preset", "cpu-clock", "--output-dir", str(tmp_path)):
        name = flag(c, "--exp-name")
        algo, size = re.match(r"(.+?)_(small|medium|large)", name).groups()
        total += minutes[algo + "_umax" if "_umax" in name else algo][size]
    assert 14.5 * 60 <= total / 2 <= 15.5 * 60


# MinAtar's DQN protocol where the budget allows it; G = 4 and T = 500 are the budget's (benchmark.sh's MINATAR block)
MINATAR_PROTOCOL = {
    "--total-timesteps": "500000", "--target-network-frequency": "500", "--train-frequency": "4",
    "--batch-size": "32", "--buffer-size": "100000", "--learning-starts": "5000", "--learning-rate": "2.5e-4",
    "--start-e": "1.0", "--end-e": "0.1", "--exploration-steps": "95000",
}  # fmt: skip


def test_cpu_minatar_keeps_the_papers_clock_on_two_games(tmp_path: Path) -> None:
    """Issue 34's cells: EauDeDQN (U_max 3), PolyPruneDQN (s_F 0.95) and DQN on Breakout and Space Invaders, small and
    medium (the large size does not fit), 3 seeds, t_final / T = 1 000, epsilon at 0.1 by step 100k."""
    cmds = dry("--preset", "cpu-minatar", "--output-dir", str(tmp_path))
    cells = Counter((c[3], flag(c, "--exp-name"), flag(c, "--env-id")) for c in cmds)
    games = ("MinAtar/Breakout-v1", "MinAtar/SpaceInvaders-v1")
    assert cells == {
        (s, f"{a}_{n}_g4_t500k", g): 3 for s, a in CLASSIC_ALGOS for n in ("small", "medium") for g in games
    }
    assert {flag(c, "--seed") for c in cmds} == {"1", "2", "3"}
    for c in cmds:
        assert "--save-model" in c and {k: flag(c, k) for k in MINATAR_PROTOCOL} == MINATAR_PROTOCOL
        assert int(flag(c, "--total-timesteps")) // int(flag(c, "--target-network-frequency")) >= 1_000
        assert flag(c, "--u-max") is None  # U_max 3, the script's default
        sparsity = flag(c, "--final-sparsity")
        if c[3] == "polyprune_dqn_jax.py":
            assert sparsity == ("0" if flag(c, "--exp-name").startswith("dqn_classic_") else None)
            assert [flag(c, f) for f in ("--pruning-start", "--pruning-end", "--pruning-power", "--pruning-period")] == [
                "0.2", "0.8", "3.0", "250",
            ]  # fmt: skip
    finished = tmp_path / "MinAtar-Breakout-v1__dqn_classic_small_g4_t500k__1__1700000000"
    finished.mkdir()  # a finished run: its folder names the game with '-' for the id's '/'
    (finished / "config.json").write_text(json.dumps({"total_timesteps": 500_000}))
    (finished / "dqn_classic_small_g4_t500k.cleanrl_model").write_bytes(b"model")
    assert len(dry("--preset", "cpu-minatar", "--output-dir", str(tmp_path))) == len(cmds) - 1


def test_cpu_minatar_takes_about_fifteen_hours(tmp_path: Path) -> None:
    """benchmark.sh's sizing of cpu-minatar, recomputed from the commands: minutes of one core per 500k-step run (12k-step
    runs of each cell timed two at a time), plus a minute of start-up and evaluation; --workers 2."""
    minutes = {"eaudedqn_classic": {"small": 40, "medium": 135}}
    minutes |= {"polyprune_dqn_classic": {"small": 10, "medium": 42}, "dqn_classic": {"small": 10, "medium": 42}}
    total = 0
    for c in dry("--preset", "cpu-minatar", "--output-dir", str(tmp_path)):
        algo, size = re.match(r"(.+?)_(small|medium|large)", flag(c, "--exp-name")).groups()
        total += minutes[algo][size] + 1
    assert 14 * 60 <= total / 2 <= 15.5 * 60


def test_cpu_clock_oracle_copies_eaudedqn_final_sparsity(tmp_path: Path) -> None:
    out = tmp_path / "runs"
    proc = bench("--dry-run", "--preset", "cpu-clock-oracle", "--output-dir", str(out), check=False)
    assert (
        proc.returncode == 2
        and proc.stderr.startswith("error:")
        and "Acrobot-v1__eaudedqn_classic_small_t500k__5" in proc.stderr
    )
    for seed in range(1, 6):
        for env, sparsity in (("CartPole-v1", 0.7), ("Acrobot-v1", 0.4)):
            write_eaude_run(
                out, f"{env}__eaudedqn_classic_small_t500k__{seed}__", 500_000, 500_000, sparsity + seed / 100
            )
    cmds = dry("--preset", "cpu-clock-oracle", "--output-dir", str(out))
    assert {(flag(c, "--env-id"), flag(c, "--seed"), flag(c, "--final-sparsity")) for c in cmds} == {
        (env, str(seed), f"{sparsity + seed / 100:.6f}")
        for env, sparsity in (("CartPole-v1", 0.7), ("Acrobot-v1", 0.4))
        for seed in range(1, 6)
    }
    assert {flag(c, "--exp-name") for c in cmds} == {"polyprune_dqn_classic_small_oracle_t500k"}
    assert all({k: flag(c, k) for k in CLEANRL_DQN_PROTOCOL} == CLEANRL_DQN_PROTOCOL for c in cmds)


def write_eaude_run(root: Path, prefix: str, total: int, last_step: int, final_sparsity: float) -> Path:
    """A run folder whose metrics.jsonl logs sparsity/target rising linearly to `final_sparsity` at `last_step`."""
    run = root / f"{prefix}1700000000"
    run.mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({"total_timesteps": total}, indent=2))
    steps = range(0, last_step + 1, last_step // 10)
    lines = [
        {"global_step": s, "name": name, "value": value, "time": 0.0}
        for s in steps
        for name, value in (("sparsity/target", final_sparsity * s / last_step), ("charts/SPS", 100.0))
    ]
    (run / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    return run


def test_paper_sac_oracle_reads_eaudesac_final_sparsity(tmp_path: Path) -> None:
    out = tmp_path / "runs"
    sel = ["--preset", "paper-sac-oracle", "--env-ids", "Hopper-v5", "--seeds", "2", "--output-dir", str(out)]
    # Without the EauDeSAC runs it refuses, naming each missing one.
    proc = bench("--dry-run", *sel, check=False)
    assert proc.returncode == 2 and proc.stdout == "" and len(proc.stderr.splitlines()) == 1
    missing = [f"Hopper-v5__eaudesac_{n}_t2M__{s}" for n in ("small", "large") for s in (1, 2)]
    assert proc.stderr.startswith("error:") and all(m in proc.stderr for m in missing)
    write_eaude_run(out, "Hopper-v5__eaudesac_small_t2M__1__", 2_000_000, 2_000_000, 0.61)
    write_eaude_run(out, "Hopper-v5__eaudesac_small_t2M__2__", 2_000_000, 2_000_000, 0.83)
    write_eaude_run(out, "Hopper-v5__eaudesac_large_t2M__1__", 2_000_000, 2_000_000, 0.97)
    write_eaude_run(out, "Hopper-v5__eaudesac_large_t2M__2__", 2_000_000, 1_000_000, 0.4)  # unfinished
    proc = bench("--dry-run", *sel, check=False)
    assert proc.returncode == 2 and "Hopper-v5__eaudesac_large_t2M__2" in proc.stderr
    assert "__1" not in proc.stderr and "small" not in proc.stderr
    # Each oracle run takes the final sparsity of the EauDeSAC run of the same env, size, length and seed.
    cmds = dry(*sel, "--sizes", "small")
    assert {(flag(c, "--seed"), flag(c, "--final-sparsity")) for c in cmds} == {("1", "0.610000"), ("2", "0.830000")}
    assert {c[3] for c in cmds} == {"polyprune_sac_mujoco_jax.py"}
    assert {flag(c, "--exp-name") for c in cmds} == {"polyprune_sac_small_oracle_t2M"}
    assert {flag(c, "--total-timesteps") for c in cmds} == {"2000000"}
    # The same mechanism by hand, at the default length: polyprune_dqn_classic copies eaudedqn_classic.
    write_eaude_run(out, "CartPole-v1__eaudedqn_classic_small__1__", 100_000, 100_000, 0.5)
    cmds = dry(
        *["--algos", "polyprune_dqn_classic", "--env-ids", "CartPole-v1", "--sizes", "small"],
        *["--final-sparsity", "oracle", "--output-dir", str(out)],
    )
    assert [(c[3], flag(c, "--exp-name"), flag(c, "--final-sparsity")) for c in cmds] == [
        ("polyprune_dqn_jax.py", "polyprune_dqn_classic_small_oracle", "0.500000")
    ]


def test_classic_algorithm_keys(tmp_path: Path) -> None:
    sel = ["--algos", "eaudedqn_classic,polyprune_dqn_classic,dqn_classic", "--env-ids", "CartPole-v1"]
    cmds = dry(*sel, "--sizes", "small,large", "--umax", "10", "--output-dir", str(tmp_path))
    got = {
        (c[3], flag(c, "--exp-name"), flag(c, "--network-size"), flag(c, "--final-sparsity"), flag(c, "--u-max"))
        for c in cmds
    }
    assert got == {
        *{("eaudedqn_jax.py", f"eaudedqn_classic_{n}_umax10", n, None, "10") for n in ("small", "large")},
        *{("polyprune_dqn_jax.py", f"polyprune_dqn_classic_{n}", n, None, None) for n in ("small", "large")},
        *{("polyprune_dqn_jax.py", f"dqn_classic_{n}", n, "0", None) for n in ("small", "large")},
    }
    # Without --sizes no --network-size is passed: the scripts' default.
    assert all("--network-size" not in c for c in dry(*sel, "--output-dir", str(tmp_path)))


def test_hand_selection_and_extra_args(tmp_path: Path) -> None:
    cmds = dry(
        "--algos",
        "eaudedqn,dqn",
        "--env-ids",
        "Pong-v5",
        "--seeds",
        "3",
        "--sizes",
        "large",
        "--umax",
        "10",
        "--output-dir",
        str(tmp_path),
        "--",
        "--total-timesteps",
        "500",
    )
    assert len(cmds) == 6
    assert all(c[-2:] == ["--total-timesteps", "500"] for c in cmds)
    assert {flag(c, "--exp-name") for c in cmds} == {"eaudedqn_large_umax10", "dqn_large"}
    # A preset's selection can be narrowed by hand.
    cmds = dry("--preset", "paper-mujoco", "--env-ids", "Ant-v5", "--seeds", "1,7", "--output-dir", str(tmp_path))
    assert len(cmds) == 3 * 3 * 2 and {flag(c, "--seed") for c in cmds} == {"1", "7"}
    # --algos keeps a preset's groups apart: each algorithm stays on its own env ids.
    cmds = dry("--preset", "smoke", "--algos", "eaudecql,sac", "--output-dir", str(tmp_path))
    assert {(flag(c, "--exp-name"), flag(c, "--env-id")) for c in cmds} == {
        ("eaudecql_small", "Pong-v5"),
        ("sac_small", "Hopper-v5"),
    }


@pytest.mark.parametrize(
    "args",
    [
        ["--preset", "nope"],
        ["--algos", "dqn"],
        ["--algos", "nope", "--env-ids", "Pong-v5"],
        ["--workers", "0"],
        ["--preset", "paper-atari", "--algos", "sac"],
        ["--preset", "cpu-classic", "--algos", "eaudesac"],
    ],
)
def test_invalid_arguments(args: list[str]) -> None:
    proc = bench(*args, "--dry-run", check=False)
    assert proc.returncode == 2
    assert proc.stderr.startswith("error:") and proc.stdout == ""


def write_run(root: Path, prefix: str, total: int, last_step: int, checkpoint: bool = False) -> Path:
    run = root / f"{prefix}1700000000"
    run.mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({"total_timesteps": total, "exp_name": "x"}, indent=2))
    lines = [{"global_step": s, "name": "charts/SPS", "value": 1.0, "time": 0.0} for s in range(0, last_step + 1, 10)]
    (run / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    if checkpoint:
        (run / "checkpoint").mkdir()
    return run


def test_finished_detection_and_resume_in_dry_run(tmp_path: Path) -> None:
    out = tmp_path / "runs"
    sel = ["--algos", "dqn", "--env-ids", "Pong-v5,Qbert-v5,Boxing-v5,Enduro-v5", "--output-dir", str(out)]
    write_run(out, "Pong-v5__dqn__1__", 2000, 1990)  # within the default slack of 1% -> finished
    write_run(out, "Qbert-v5__dqn__1__", 2000, 1900)  # unfinished, no checkpoint -> started afresh
    resumable = write_run(out, "Boxing-v5__dqn__1__", 2000, 1000, checkpoint=True)
    cmds = dry(*sel)
    by_env = {flag(c, "--env-id"): c for c in cmds}
    assert set(by_env) == {"Qbert-v5", "Boxing-v5", "Enduro-v5"}
    assert flag(by_env["Boxing-v5"], "--resume") == str(resumable)
    assert "--resume" not in by_env["Qbert-v5"] and "--resume" not in by_env["Enduro-v5"]
    # A larger slack counts the Qbert run (1900 of 2000) as finished; zero slack makes Pong unfinished.
    assert {flag(c, "--env-id") for c in dry(*sel, "--finish-slack", "100")} == {"Boxing-v5", "Enduro-v5"}
    assert "Pong-v5" in {flag(c, "--env-id") for c in dry(*sel, "--finish-slack", "0")}


def calls(log: Path) -> list[dict]:
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def test_local_run_skip_and_resume(tmp_path: Path) -> None:
    repo = make_fake_script_dir(tmp_path / "repo")
    out = tmp_path / "runs"
    log = tmp_path / "calls.jsonl"
    args = ["--preset", "smoke", "--script-dir", str(repo), "--python", "python3", "--output-dir", str(out)]
    env = {"FAKE_CALL_LOG": str(log), "FAKE_CRASH_EXP": "polyprune_cql_small"}
    first = bench(*args, "--workers", "2", env=env, check=False)
    assert first.returncode == 1  # the crashed run is reported
    assert "FAILED" in first.stderr and "polyprune_cql_small" in first.stderr
    assert len(calls(log)) == 11
    assert all(c["cwd"] == str(repo) for c in calls(log))
    # The smoke preset wrote its tiny offline dataset with the dataset tool before the CQL runs.
    assert (out / "_smoke_dataset" / "Pong" / "1" / "replay_logs" / "made_by_fake").exists()
    crashed = next(out.glob("Pong-v5__polyprune_cql_small__1__*"))
    assert (crashed / "checkpoint").is_dir()
    assert len(list(out.glob("*/*.cleanrl_model"))) == 10
    # Only the crashed run is pending, and it resumes from its folder.
    pending = dry(*args)
    assert len(pending) == 1 and flag(pending[0], "--resume") == str(crashed)
    log.unlink()
    second = bench(*args, "--workers", "2", env=env)
    assert "11 runs, 10 finished, 1 to run" in second.stderr
    (call,) = calls(log)
    assert flag(call["argv"], "--resume") == str(crashed)
    assert (crashed / "polyprune_cql_small.cleanrl_model").exists()
    steps = [json.loads(x)["global_step"] for x in (crashed / "metrics.jsonl").read_text().splitlines()]
    assert max(steps) == 200 and len(steps) == len(set(steps)) * 2  # continued, not restarted: no duplicates
    assert dry(*args) == []
    assert len(list(out.glob("Pong-v5__*"))) == 6  # no duplicate run folders


def test_local_workers_gpu_round_robin(tmp_path: Path) -> None:
    repo = make_fake_script_dir(tmp_path / "repo")
    log = tmp_path / "calls.jsonl"
    bench(
        *["--algos", "eaudedqn", "--env-ids", "Pong-v5", "--seeds", "8", "--output-dir", str(tmp_path / "runs")],
        *["--script-dir", str(repo), "--python", "python3", "--workers", "4", "--gpus", "0,1"],
        *["--", "--total-timesteps", "100"],
        env={"FAKE_CALL_LOG": str(log), "FAKE_SLEEP": "0.5"},
    )
    got = calls(log)
    assert len(got) == 8
    assert {c["cuda"] for c in got} == {"0", "1"}
    assert {c["mem_fraction"] for c in got} == {"0.45"}  # two workers share each GPU


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck not installed")
def test_shellcheck_clean() -> None:
    proc = subprocess.run(
        ["shellcheck", str(BENCH), str(REPO_ROOT / "tools" / "slurm_template.sbatch")], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout
