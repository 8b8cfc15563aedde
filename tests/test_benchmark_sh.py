"""benchmark.sh: preset expansion (--dry-run), selection flags, skipping finished runs, resuming from checkpoints and
local workers, checked with stand-in scripts (tests/benchmark_fakes.py)."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
from collections import Counter
from pathlib import Path

import pytest
from benchmark_fakes import ALGO_SCRIPTS, REPO_ROOT, make_fake_script_dir

BENCH = REPO_ROOT / "benchmark.sh"


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
        ("smoke", 10, set(ALGO_SCRIPTS)),
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
        if "_umax" in exp:
            assert exp.startswith("eaude") and exp.endswith(f"_umax{flag(c, '--u-max')}")
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
    assert len(calls(log)) == 10
    assert all(c["cwd"] == str(repo) for c in calls(log))
    # The smoke preset wrote its tiny offline dataset with the dataset tool before the CQL runs.
    assert (out / "_smoke_dataset" / "Pong" / "1" / "replay_logs" / "made_by_fake").exists()
    crashed = next(out.glob("Pong-v5__polyprune_cql_small__1__*"))
    assert (crashed / "checkpoint").is_dir()
    assert len(list(out.glob("*/*.cleanrl_model"))) == 9
    # Only the crashed run is pending, and it resumes from its folder.
    pending = dry(*args)
    assert len(pending) == 1 and flag(pending[0], "--resume") == str(crashed)
    log.unlink()
    second = bench(*args, "--workers", "2", env=env)
    assert "10 runs, 9 finished, 1 to run" in second.stderr
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
