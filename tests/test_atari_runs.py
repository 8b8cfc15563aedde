"""End-to-end runs of the online Atari scripts with tiny budgets: outputs, Eq. 3 in population.jsonl, saved model,
and checkpoint/resume after the process is killed."""

import importlib
import itertools
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
TINY = [
    "--env-id", "Breakout-v5", "--network-size", "small", "--buffer-size", "4000", "--learning-starts", "400",
    "--batch-size", "8", "--exploration-steps", "1000",
]  # fmt: skip


def run_script(script: str, tmp_path: Path, *argv: str, timeout: float = 600) -> Path:
    out = tmp_path / "runs"
    result = subprocess.run(
        [sys.executable, str(ROOT / script), *TINY, "--output-dir", str(out), *argv],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    (run_dir,) = out.iterdir()
    return run_dir


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def metric(run_dir: Path, name: str) -> list[tuple[int, float]]:
    return [(m["global_step"], m["value"]) for m in read_jsonl(run_dir / "metrics.jsonl") if m["name"] == name]


def saved_sparsity(path: Path) -> float:
    state = flax.serialization.msgpack_restore(path.read_bytes())
    kernels = [np.asarray(w) for w in jax.tree.leaves(state) if np.ndim(w) > 1]
    return sum((w == 0).sum() for w in kernels) / sum(w.size for w in kernels)


def test_eaudedqn_smoke_run_prunes_at_its_own_pace(tmp_path: Path) -> None:
    run_dir = run_script(
        "eaudedqn_atari_jax.py", tmp_path,
        "--total-timesteps", "1600", "--target-network-frequency", "200", "--num-networks", "3",
        "--tournament-size", "2", "--u-max", "30", "--s-max", "0.2", "--save-model", "--eval-episodes", "1",
        "--checkpoint-interval", "0",
    )  # fmt: skip
    assert run_dir.name.startswith("Breakout-v5__eaudedqn_atari_jax__1__")
    config = json.loads((run_dir / "config.json").read_text())
    assert config["args"]["num_networks"] == 3 and config["jax_backend"] == "cpu" and config["versions"]["jax"]
    assert config["machine"]["device"] == "cpu" and config["machine"]["python"] == platform.python_version()
    names = {m["name"] for m in read_jsonl(run_dir / "metrics.jsonl")}
    assert {
        "charts/episodic_return",
        "charts/SPS",
        "losses/td_loss",
        "sparsity/target",
        "eval/episodic_return",
    } <= names
    assert list(run_dir.glob("events.out.tfevents.*"))

    events = read_jsonl(run_dir / "population.jsonl")
    assert [e["global_step"] for e in events] == list(range(600, 1601, 200))  # every T after learning starts
    for e in events:
        losses, before, after, parents = (
            np.array(e[k]) for k in ("losses", "sparsities_before", "sparsities_after", "parents")
        )
        assert e["target_index"] == np.argmin(losses) == parents[0]  # Alg. 1 l. 12 and the elitist slot
        for slot, parent in enumerate(parents):
            if list(parents).index(parent) == slot:
                assert after[slot] == before[parent]  # an original keeps its sparsity
            else:
                assert before[parent] < after[slot] <= before[parent] + (1 - before[parent]) * 0.2 + 1e-12  # Eq. 3 cap
        assert np.all(losses > 0)
    for previous, current in itertools.pairwise(events):
        assert previous["sparsities_after"] == current["sparsities_before"]

    sparsity = metric(run_dir, "sparsity/target")
    assert sparsity[0] == (0, 0.0) and sparsity[-1][1] > 0.05  # the target network got sparser
    model = run_dir / "eaudedqn_atari_jax.cleanrl_model"
    assert saved_sparsity(model) == pytest.approx(sparsity[-1][1], abs=1e-9)
    assert len(metric(run_dir, "eval/episodic_return")) == 1


def test_polyprune_smoke_run_follows_eq2(tmp_path: Path) -> None:
    run_dir = run_script(
        "polyprune_dqn_atari_jax.py", tmp_path,
        "--total-timesteps", "1500", "--target-network-frequency", "250", "--pruning-period", "250",
        "--final-sparsity", "0.9", "--save-model", "--eval-episodes", "0", "--checkpoint-interval", "0",
    )  # fmt: skip
    assert not (run_dir / "population.jsonl").exists()
    sparsity = dict(metric(run_dir, "sparsity/target"))
    # Eq. 2 with t_start = 300, t_end = 1200, n = 3; the target copies the online network before it is pruned again
    expected = {t: 0.9 * (1 - (1 - min(max((t - 300) / 900, 0), 1)) ** 3) for t in range(0, 1501, 250)}
    for step in (750, 1000, 1250, 1500):
        assert sparsity[step] == pytest.approx(expected[step - 250], abs=1e-4)
    model = run_dir / "polyprune_dqn_atari_jax.cleanrl_model"
    assert saved_sparsity(model) == pytest.approx(sparsity[1500], abs=1e-9)
    eaude = importlib.import_module("eaudedqn_atari_jax")
    network = eaude.QNetwork(action_dim=4, head_width=32)  # Breakout: 4 actions
    template = network.init(jax.random.PRNGKey(0), jnp.zeros((1, 4, 84, 84), jnp.uint8))
    params = flax.serialization.from_bytes(template, model.read_bytes())
    assert network.apply(params, jnp.zeros((2, 4, 84, 84), jnp.uint8)).shape == (2, 4)


def test_dense_baseline_stays_dense_and_a_finished_run_resumes_to_nothing(tmp_path: Path) -> None:
    run_dir = run_script(
        "polyprune_dqn_atari_jax.py", tmp_path,
        "--total-timesteps", "800", "--target-network-frequency", "200", "--pruning-period", "100",
        "--final-sparsity", "0", "--checkpoint-interval", "300",
    )  # fmt: skip
    assert all(value == 0.0 for _, value in metric(run_dir, "sparsity/target"))
    before = (run_dir / "metrics.jsonl").read_text()
    result = subprocess.run(
        [sys.executable, str(ROOT / "polyprune_dqn_atari_jax.py"), "--resume", str(run_dir)],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads((run_dir / "checkpoint" / "meta.json").read_text())["global_step"] == 800
    assert (run_dir / "metrics.jsonl").read_text() == before


def test_killed_run_resumes_without_losing_or_repeating_steps(tmp_path: Path) -> None:
    """Checkpoint every 500 steps, SIGKILL the process after its first checkpoint, resume, and compare."""
    out = tmp_path / "runs"
    argv = [
        sys.executable, str(ROOT / "eaudedqn_atari_jax.py"), *TINY, "--output-dir", str(out),
        "--total-timesteps", "1600", "--target-network-frequency", "200", "--num-networks", "2",
        "--tournament-size", "2", "--u-max", "30", "--s-max", "0.2", "--checkpoint-interval", "500",
    ]  # fmt: skip
    process = subprocess.Popen(argv, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while time.time() < deadline and not list(out.glob("*/checkpoint/meta.json")):
        assert process.poll() is None, process.stderr.read()
        time.sleep(0.2)
    time.sleep(1.5)  # let it log a little past the checkpoint: those lines must be dropped on resume
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    (run_dir,) = out.iterdir()
    meta = json.loads((run_dir / "checkpoint" / "meta.json").read_text())
    checkpoint_step = meta["global_step"]
    assert 500 <= checkpoint_step < 1600
    saved_cursor = int(np.load(run_dir / "checkpoint" / "replay_cursor.npy"))

    result = subprocess.run(
        [sys.executable, str(ROOT / "eaudedqn_atari_jax.py"), "--resume", str(run_dir)],
        cwd=tmp_path, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"resumed {run_dir.name} at step {checkpoint_step:,}" in result.stdout
    assert list(out.iterdir()) == [run_dir]  # same run folder

    final = json.loads((run_dir / "checkpoint" / "meta.json").read_text())
    assert final["global_step"] == 1600
    assert final["grad_steps"] == (1600 - 400) // 4
    metrics = read_jsonl(run_dir / "metrics.jsonl")
    for name in ("charts/SPS", "sparsity/target", "losses/td_loss"):
        steps = [m["global_step"] for m in metrics if m["name"] == name]
        assert steps == sorted(set(steps)), f"{name} repeats a step: {steps}"
    assert [m["global_step"] for m in metrics if m["name"] == "charts/SPS"] == [1000]
    events = read_jsonl(run_dir / "population.jsonl")
    assert [e["global_step"] for e in events] == list(range(600, 1601, 200))
    times = [m["time"] for m in metrics]
    assert times == sorted(times)  # time continues from the checkpoint instead of restarting at 0
    # the replay buffer was restored and extended: the last entry before the kill is closed as an episode end
    last = np.load(run_dir / "checkpoint" / "replay_last.npy")
    assert last[0, saved_cursor - 1]
    assert int(np.load(run_dir / "checkpoint" / "replay_size.npy")) == min(
        int(np.load(run_dir / "checkpoint" / "replay_cursor.npy")), 4000
    )
    assert int(np.load(run_dir / "checkpoint" / "replay_cursor.npy")) > saved_cursor


def test_user_error_exits_2_without_traceback_and_writes_nothing(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "eaudedqn_atari_jax.py"), "--num-networks", "0", "--output-dir", "runs"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == ["error: --num-networks: K must be at least 1"]
    assert not (tmp_path / "runs").exists()


# ---------------------------------------------------------------------------------------------------------------------
# Crash safety: Ctrl-C, torn logs, damaged checkpoints, divergence, kills at random moments
# ---------------------------------------------------------------------------------------------------------------------

EAUDE_TINY = [
    *TINY, "--target-network-frequency", "200", "--num-networks", "2", "--tournament-size", "2", "--u-max", "30",
    "--s-max", "0.2",
]  # fmt: skip


POLY_TINY = [*TINY, "--target-network-frequency", "200", "--pruning-period", "200"]


def start(tmp_path: Path, *argv: str, script: str = "eaudedqn_atari_jax.py") -> subprocess.Popen:
    tiny = EAUDE_TINY if script.startswith("eaudedqn") else POLY_TINY
    command = [sys.executable, str(ROOT / script), *tiny, "--output-dir", "runs", *argv]
    return subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for(path_glob: str, root: Path, process: subprocess.Popen, timeout: float = 300) -> Path:
    deadline = time.time() + timeout
    while time.time() < deadline:
        found = sorted(root.glob(path_glob))
        if found:
            return found[0]
        assert process.poll() is None, process.communicate()
        time.sleep(0.1)
    raise AssertionError(f"{path_glob} never appeared")


def resume(run_dir: Path, tmp_path: Path, script: str = "eaudedqn_atari_jax.py") -> subprocess.CompletedProcess:
    command = [sys.executable, str(ROOT / script), "--resume", str(run_dir)]
    return subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=600)


def assert_logs_complete(run_dir: Path, total: int) -> None:
    """Every logging step once, none missing: SPS every 1000 steps, population events every T = 200 after 400."""
    metrics = read_jsonl(run_dir / "metrics.jsonl")
    for name in {m["name"] for m in metrics}:
        steps = [m["global_step"] for m in metrics if m["name"] == name and name != "charts/episodic_return"]
        assert steps == sorted(set(steps)), f"{name} repeats a step"
    assert [m["global_step"] for m in metrics if m["name"] == "charts/SPS"] == list(range(1000, total + 1, 1000))
    if not (run_dir / "population.jsonl").exists():  # PolyPrune: the target is updated every T = 200 after 400
        assert [s for s, _ in metric(run_dir, "sparsity/target")] == [0, *range(600, total + 1, 200)]
        return
    events = [e["global_step"] for e in read_jsonl(run_dir / "population.jsonl")]
    assert events == list(range(600, total + 1, 200))
    assert [s for s, _ in metric(run_dir, "sparsity/target")] == [0, *events]


@pytest.mark.parametrize("script", ["eaudedqn_atari_jax.py", "polyprune_dqn_atari_jax.py"])
def test_ctrl_c_checkpoints_and_a_torn_log_and_a_damaged_checkpoint_still_resume(tmp_path: Path, script: str) -> None:
    process = start(tmp_path, "--total-timesteps", "2000", "--checkpoint-interval", "500", script=script)
    wait_for("runs/*/checkpoint/meta.json", tmp_path, process)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr and "--resume" in stderr.strip().splitlines()[-1]
    (run_dir,) = (tmp_path / "runs").iterdir()
    interrupted_at = json.loads((run_dir / "checkpoint" / "meta.json").read_text())["global_step"]
    assert json.loads((run_dir / "checkpoint.old" / "meta.json").read_text())["global_step"] == 500
    assert f"interrupted at step {interrupted_at:,}" in stderr

    with open(run_dir / "metrics.jsonl", "a") as f:
        f.write('{"global_step": 99999, "name": "charts/SP')  # a kill in the middle of a log write
    state = run_dir / "checkpoint" / "state.msgpack"
    state.write_bytes(state.read_bytes()[: state.stat().st_size // 2])  # a checkpoint cut in half
    result = resume(run_dir, tmp_path, script)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"{state} is damaged" in result.stderr and "previous checkpoint" in result.stderr
    assert "resumed" in result.stdout and "at step 500" in result.stdout and "dropped" in result.stdout
    assert_logs_complete(run_dir, 2000)

    for name in ("checkpoint", "checkpoint.old"):  # nothing left to fall back to: one error line naming the file
        state = run_dir / name / "state.msgpack"
        state.write_bytes(state.read_bytes()[:100])
    result = resume(run_dir, tmp_path, script)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]
    assert result.stderr.startswith("error: --resume:") and "state.msgpack is damaged" in result.stderr


def test_a_run_killed_at_random_moments_always_resumes_with_complete_logs(tmp_path: Path) -> None:
    """SIGKILL at random moments (checkpoints every 100 steps, so some kills land in a checkpoint write), plus the
    states a kill leaves in the middle of a checkpoint swap or of a log line, each followed by --resume."""
    rng = np.random.default_rng(0)
    process = start(tmp_path, "--total-timesteps", "3000", "--checkpoint-interval", "100")
    run_dir = wait_for("runs/*/checkpoint/meta.json", tmp_path, process).parents[1]
    for kill in range(4):
        time.sleep(rng.uniform(0.5, 4.0))
        if process.poll() is None:
            os.kill(process.pid, signal.SIGKILL)
        process.wait()
        if kill == 1 and (run_dir / "checkpoint").is_dir():
            # killed between the two renames of a checkpoint swap: checkpoint.old/ and checkpoint.tmp/ are left (a
            # checkpoint.tmp/ that the kill left half-written is what the swap would have replaced)
            shutil.rmtree(run_dir / "checkpoint.tmp", ignore_errors=True)
            (run_dir / "checkpoint").rename(run_dir / "checkpoint.tmp")
        if kill == 2:  # killed while writing a log line
            with open(run_dir / "population.jsonl", "a") as f:
                f.write('{"global_step": 12')
        process = subprocess.Popen(
            [sys.executable, str(ROOT / "eaudedqn_atari_jax.py"), "--resume", str(run_dir)],
            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
    _, stderr = process.communicate(timeout=600)
    assert process.returncode == 0, stderr[-3000:]
    assert json.loads((run_dir / "checkpoint" / "meta.json").read_text())["global_step"] == 3000
    assert_logs_complete(run_dir, 3000)


@pytest.mark.parametrize("script", ["eaudedqn_atari_jax.py", "polyprune_dqn_atari_jax.py"])
def test_divergence_stops_the_run_with_one_line_and_strict_json(tmp_path: Path, script: str) -> None:
    argv = ["--total-timesteps", "1600", "--learning-rate", "1e30", "--checkpoint-interval", "0"]
    process = start(tmp_path, *argv, script=script)
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 3
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "loss is non-finite at step" in lines[0]
    (run_dir,) = (tmp_path / "runs").iterdir()

    def reject(constant: str) -> None:
        raise AssertionError(f"bare {constant} in a JSON log")

    for path in (run_dir / "metrics.jsonl", run_dir / "population.jsonl"):
        for line in path.read_text().splitlines() if path.exists() else []:
            json.loads(line, parse_constant=reject)
    assert metric(run_dir, "losses/td_loss")[-1][1] is None  # the non-finite loss is written as null


def test_runs_started_in_the_same_second_get_their_own_folders(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    eaude = importlib.import_module("eaudedqn_atari_jax")
    monkeypatch.setattr(eaude.time, "time", lambda: 1_700_000_000.5)
    args = eaude.Args(output_dir=str(tmp_path / "runs"), exp_name="x")
    first, second = eaude.Run(args).dir, eaude.Run(args).dir
    assert (first.name, second.name) == ("Pong-v5__x__1__1700000000", "Pong-v5__x__1__1700000000-2")
    assert (first / "config.json").is_file() and (second / "config.json").is_file()


@pytest.mark.parametrize("script", ["eaudedqn_atari_jax.py", "polyprune_dqn_atari_jax.py"])
def test_output_dir_that_is_a_file_is_one_error_line(tmp_path: Path, script: str) -> None:
    (tmp_path / "taken").write_text("a file")
    for output_dir in ("taken", "taken/runs"):
        result = subprocess.run(
            [sys.executable, str(ROOT / script), "--output-dir", output_dir],
            cwd=tmp_path, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert result.returncode == 2
        err = result.stderr.strip().splitlines()
        assert len(err) == 1 and err[0].startswith(
            f"error: --output-dir: cannot create a run folder in '{output_dir}' ("
        )
