"""tools/gpu_check.py and tools/gpu_kit.sh: the whole check end to end in --smoke (on CPU, every file and every code
path that runs on a GPU), the child runs' command lines and environments, the comparison of two seeded runs, and the
one-line usage errors of both tools. Building the kit needs PyPI, so it is checked by hand (docs/gpu.md)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import gpu_check
import pytest

ROOT = Path(__file__).resolve().parents[1]
TOOL = ROOT / "tools" / "gpu_check.py"
KIT = ROOT / "tools" / "gpu_kit.sh"


@pytest.mark.slow
def test_smoke_writes_every_file_with_every_measurement(tmp_path: Path) -> None:
    out = tmp_path / "out"
    # the smoke run's own 300 s clock is the GPU's budget; a busy CPU may need more, and no test asserts a duration
    argv = [sys.executable, str(TOOL), str(out), "--smoke", "--time-limit", "1800"]
    result = subprocess.run(argv, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    check_smoke_output(out)


def check_smoke_output(out: Path) -> None:
    """What --smoke must have written (also run by hand on the output of a --smoke run from the GPU kit)."""
    assert sorted(p.name for p in out.iterdir()) == sorted(gpu_check.FILES)
    summary = json.loads((out / "results.json").read_text())
    results = summary["results"]
    measured = [k for k, r in results.items() if "family" in r and "omitted" not in r]
    # every configuration of the GPU run but those that repeat another one's code
    assert sorted(measured) == sorted(c.key for c in gpu_check.configs("loop") if c.key not in gpu_check.SMOKE_OMITTED)
    assert "--final-sparsity" not in str([results[key]["flags"] for key in measured])
    for key in measured:
        assert results[key]["sps"] > 0 and results[key]["steps"] == 1_000, key
    assert results["eaudedqn_other"]["layout"] == "vmap"  # the layout the CPU does not pick, left to the GPU
    # on a CPU two seeded runs are identical, with or without the GPU flag
    verdict = results["determinism"]["default_vs_deterministic"]
    assert verdict["identical"] is True and verdict["compared"]["metrics.jsonl"] > 0
    assert verdict["compared"]["population.jsonl"] > 0
    table2 = (out / "table2.md").read_text()
    # the FLOPs are tools/costs.py's: K = 5 small networks against 1 (docs/costs.md's CPU table)
    assert "| FLOPs per gradient update, dense (XLA) | x3.92 | x1.55 | x3.92 | x1.55 | x2.48 | x4.03 |" in table2
    assert "| FLOPs per gradient update, sparse at s = 0.9 | x4.00 | x1.55 | x4.00 | x1.55 | x1.47 | x4.03 |" in table2
    assert "| Training time | x" in table2 and "Not measured" not in table2
    throughput = (out / "throughput.md").read_text()
    assert throughput.count("a GPU row only (--smoke)") == 4
    # the population step and PolyPrune's mask update of every pruning script, timed alone
    steps = {(r["script"], r["size"]): r for r in results["population_steps"]}
    assert sorted(steps) == sorted((script, "small") for script in gpu_check.throughput.PRUNING_SCRIPTS)
    assert all(r["seconds"] > 0 and r["kernel_weights"] > 0 for r in steps.values())
    assert "| eaudedqn_atari_jax | population step | small | 325,824 |" in throughput
    assert "identical" in (out / "determinism.md").read_text()
    assert "--smoke" in (out / "machine.md").read_text()


def plan(smoke: bool) -> gpu_check.Plan:
    budgets = (
        gpu_check.SMOKE_BUDGETS if smoke else {f: gpu_check.costs.budget(f, s) for f, s in gpu_check.GPU_SCALES.items()}
    )
    return gpu_check.Plan(smoke, 1, "Pong-v5", "HalfCheetah-v5", budgets, dataset_dir="/d", cache_dir="/c")


def config(key: str) -> gpu_check.Config:
    return next(c for c in gpu_check.configs("vmap") if c.key == key)


def flag(argv: list[str], name: str) -> str:
    """The value the script sees: the last occurrence wins, as with argparse."""
    return argv[len(argv) - 1 - argv[::-1].index(name) + 1]


def test_gpu_runs_use_the_medium_network_and_whole_periods() -> None:
    argv = plan(False).argv(config("eaudedqn"), warmup=False)
    assert flag(argv, "--network-size") == "medium"
    assert (int(flag(argv, "--learning-starts")), int(flag(argv, "--total-timesteps"))) == (7_000, 16_000)
    cql = plan(False).argv(config("eaudecql"), warmup=False)
    assert flag(cql, "--steps-per-epoch") == "5000" and flag(cql, "--dataset-dir") == "/d"
    assert flag(plan(False).argv(config("eaudedqn_other"), warmup=False), "--population-layout") == "loop"
    assert flag(plan(False).argv(config("dqn"), warmup=False), "--final-sparsity") == "0"


def test_smoke_shrinks_sizes_but_keeps_the_warmup_periods() -> None:
    timed = plan(True).argv(config("eaudedqn"), warmup=False)
    assert flag(timed, "--network-size") == "small" and flag(timed, "--num-networks") == "2"
    assert flag(timed, "--target-network-frequency") == "1000"
    warmup = plan(True).argv(config("eaudedqn"), warmup=True)
    assert flag(warmup, "--target-network-frequency") == "200"  # tools/costs.py's warm-up
    assert "--num-networks" not in plan(True).argv(config("polyprune_dqn"), warmup=False)


def test_child_environments() -> None:
    p = plan(False)
    env = p.env(config("eaudedqn_det1"), preallocate=True)
    assert env["XLA_FLAGS"].endswith(gpu_check.DETERMINISTIC_FLAG) and "XLA_PYTHON_CLIENT_PREALLOCATE" not in env
    assert env["JAX_COMPILATION_CACHE_DIR"] == "/c" and "JAX_PLATFORMS" not in env
    warm = p.env(config("eaudedqn"), preallocate=False)  # warm-ups share the GPU
    assert warm["XLA_PYTHON_CLIENT_PREALLOCATE"] == "false" and gpu_check.DETERMINISTIC_FLAG not in warm.get(
        "XLA_FLAGS", ""
    )
    assert plan(True).env(config("eaudedqn"), preallocate=True)["JAX_PLATFORMS"] == "cpu"


def write_run(folder: Path, loss: float, sps: float, time: float) -> Path:
    folder.mkdir()
    metrics = [
        {"global_step": 1000, "name": "charts/SPS", "value": sps, "time": time},
        {"global_step": 1000, "name": "losses/td_loss", "value": loss, "time": time},
    ]
    (folder / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in metrics))
    event = {"global_step": 1000, "sparsities_after": [0.0, 0.1], "time": time}
    (folder / "population.jsonl").write_text(json.dumps(event) + "\n")
    return folder


def test_compare_runs_ignores_wall_clock_only(tmp_path: Path) -> None:
    a = write_run(tmp_path / "a", loss=0.5, sps=100.0, time=1.0)
    b = write_run(tmp_path / "b", loss=0.5, sps=120.0, time=2.0)
    c = write_run(tmp_path / "c", loss=0.5000001, sps=100.0, time=1.0)
    same = gpu_check.compare_runs(a, b)
    assert same == {"identical": True, "compared": {"metrics.jsonl": 1, "population.jsonl": 1}}
    different = gpu_check.compare_runs(a, c)
    assert different["identical"] is False
    assert different["first_difference"]["b"] == (1000, "losses/td_loss", 0.5000001)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([], "the following arguments are required: OUT_DIR"),
        (["out", "--smoke", "--budget-scale", "2"], "--budget-scale: --smoke has its own tiny budgets"),
        (["out", "--time-limit", "0"], "must be a positive number"),
        (["out", "--seed", "-1"], "--seed: must be non-negative"),
        (["out", "--bogus"], "unrecognized arguments: --bogus"),
        (["README.md"], "exists and is not a folder"),
    ],
)
def test_usage_errors_are_one_line_with_exit_code_2(argv: list[str], message: str) -> None:
    result = subprocess.run([sys.executable, str(TOOL), *argv], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 2
    assert result.stderr.startswith("error: ") and len(result.stderr.strip().splitlines()) == 1
    assert message in result.stderr


def test_a_python_without_the_kit_is_told_to_install_it(monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    real = gpu_check.importlib.util.find_spec
    monkeypatch.setattr(gpu_check.importlib.util, "find_spec", lambda name: None if name == "envpool" else real(name))
    with pytest.raises(SystemExit) as stop:
        gpu_check.parse_args(["out"])
    assert stop.value.code == 2
    assert "envpool not importable: install the kit" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("args", "message"),
    [([], "expected one argument"), (["a", "b"], "expected one argument"), (["--help"], "unknown option --help")],
)
def test_kit_usage_errors(args: list[str], message: str) -> None:
    result = subprocess.run(["bash", str(KIT), *args], capture_output=True, text=True)
    assert result.returncode == 2 and result.stderr.startswith("error: ") and message in result.stderr


def test_kit_refuses_to_overwrite_a_folder_that_is_not_a_kit(tmp_path: Path) -> None:
    (tmp_path / "precious.txt").write_text("keep me")
    result = subprocess.run(["bash", str(KIT), str(tmp_path)], capture_output=True, text=True)
    assert result.returncode == 2 and "not empty and holds no kit" in result.stderr
    assert (tmp_path / "precious.txt").read_text() == "keep me"
