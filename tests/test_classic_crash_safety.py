"""Crash safety of the two classic-control scripts, eaudedqn_jax.py and polyprune_dqn_jax.py, every test run on both:
a damaged newest checkpoint falls back to the previous one (the replay waits for a whole one), a divergence stops the
run with one error line, strict JSON and no later checkpoint, and Ctrl-C, a torn log line and damaged checkpoints met
the way a user meets them (slow). Both scripts meet these faults with the same code; what differs between them (their
flags, the wording of the divergence error, EauDe's population.jsonl, PolyPrune's Eq. 2 schedule) is in CLASSIC."""

import json
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import jax.numpy as jnp
import numpy as np
import pytest

import eaudedqn_jax
import polyprune_dqn_jax

ROOT = Path(__file__).resolve().parents[1]
pytestmark = [
    # the end-to-end tests start the script with subprocess after JAX is imported here; JAX warns about any fork
    pytest.mark.filterwarnings("ignore:os.fork:RuntimeWarning"),
    # gymnasium's harmless warning about envpool's float64 Box bounds (the script silences it too)
    pytest.mark.filterwarnings("ignore:.*precision lowered by casting to float32:UserWarning"),
]


@dataclass(frozen=True)
class Classic:
    module: ModuleType
    crash: list[str]  # tiny settings: gradient steps from 200, a target update every T = 200 from 400
    loss: str  # what the divergence error calls non-finite
    population: bool  # EauDe logs a population.jsonl event at every target update; PolyPrune writes none
    every_1000: tuple[str, ...]  # the metrics logged every 1000 steps
    eq2: bool  # PolyPrune's target sparsity follows Eq. 2 of --total-timesteps, so a longer resume stretches it

    @property
    def script(self) -> Path:
        return ROOT / f"{self.module.__name__}.py"


CLASSIC = [
    Classic(
        eaudedqn_jax,
        [
            "--learning-starts", "200", "--exploration-steps", "500", "--target-network-frequency", "200",
            "--buffer-size", "2000", "--batch-size", "16", "--network-size", "small", "--num-networks", "2",
            "--tournament-size", "2", "--u-max", "30", "--s-max", "0.2",
        ],
        loss="every network's loss",
        population=True,
        every_1000=("charts/SPS",),
        eq2=False,
    ),
    Classic(
        polyprune_dqn_jax,
        [
            "--learning-starts", "200", "--exploration-steps", "500", "--target-network-frequency", "200",
            "--pruning-period", "100", "--buffer-size", "2000", "--batch-size", "16", "--network-size", "small",
        ],
        loss="the loss",
        population=False,
        every_1000=("charts/SPS", "sparsity/online"),
        eq2=True,
    ),
]  # fmt: skip
each_script = pytest.mark.parametrize("classic", CLASSIC, ids=[c.module.__name__ for c in CLASSIC])


def read_metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def logged(metrics: list[dict], name: str) -> dict[int, float]:
    return {m["global_step"]: m["value"] for m in metrics if m["name"] == name}


def eq2(step: int, final_sparsity: float, start: int, end: int, power: float = 3.0) -> float:
    """Eq. 2 written out independently of the script."""
    progress = min(max((step - start) / (end - start), 0.0), 1.0)
    return final_sparsity * (1.0 - (1.0 - progress) ** power)


def reject_bare_constant(constant: str) -> None:
    raise AssertionError(f"bare {constant} in a JSON log")


def one_transition_replay(module: ModuleType, value: float) -> Any:
    rb = module.ReplayBuffer(capacity=4, num_envs=1, obs_shape=(2,))
    rb.add(np.full((1, 2), value, np.float32), np.array([1]), np.array([value]), np.array([False]),
           np.full((1, 2), value + 0.5, np.float32), reset=np.array([False]))  # fmt: skip
    return rb


@each_script
def test_a_damaged_checkpoint_falls_back_to_the_previous_one_and_the_replay_waits_for_a_whole_one(
    classic: Classic, tmp_path: Path, capsys
) -> None:
    module = classic.module
    run, template = module.Run(module.Args(resume=str(tmp_path))), {"w": jnp.zeros(3)}
    counters = {"rng_state": np.random.default_rng(7).bit_generator.state}
    run.save_checkpoint({"w": jnp.full(3, 1.0)}, one_transition_replay(module, 1.0), counters | {"global_step": 500})
    run.save_checkpoint({"w": jnp.full(3, 2.0)}, one_transition_replay(module, 2.0), counters | {"global_step": 1000})
    assert module.checkpoint_dirs(tmp_path) == [tmp_path / "checkpoint", tmp_path / "checkpoint.old"]
    replay, rng = module.ReplayBuffer(4, 1, (2,)), np.random.default_rng(0)
    state, meta = run.resume(template, replay, rng)
    assert meta["global_step"] == 1000 and replay.size == 1 and replay.rewards[0] == 2.0
    assert rng.bit_generator.state == counters["rng_state"]
    np.testing.assert_array_equal(state["w"], [2.0, 2.0, 2.0])
    assert capsys.readouterr().err == ""

    damaged = tmp_path / "checkpoint" / "replay_rewards.npy"  # read after state.msgpack
    damaged.write_bytes(damaged.read_bytes()[: damaged.stat().st_size // 2])
    replay = module.ReplayBuffer(4, 1, (2,))
    state, meta = run.resume(template, replay, rng)
    assert meta["global_step"] == 500 and replay.size == 1 and replay.rewards[0] == 1.0
    np.testing.assert_array_equal(replay.next_observations[0], [1.5, 1.5])
    np.testing.assert_array_equal(state["w"], [1.0, 1.0, 1.0])
    (warning,) = capsys.readouterr().err.strip().splitlines()
    assert warning.startswith(f"warning: {damaged} is damaged (")
    assert warning.endswith(f"; resuming from the previous checkpoint {tmp_path / 'checkpoint.old'}")

    for name in ("checkpoint", "checkpoint.old"):  # meta.json is read last: the replay must stay untouched
        (tmp_path / name / "meta.json").write_text('{"global_st')
    replay = module.ReplayBuffer(4, 1, (2,))
    with pytest.raises(SystemExit) as exit_:
        run.resume(template, replay, rng)
    (error,) = capsys.readouterr().err.strip().splitlines()
    assert exit_.value.code == 2 and error.startswith("error: --resume: ") and "meta.json is damaged" in error
    assert str(tmp_path / "checkpoint.old" / "meta.json") in error and error.endswith("no earlier checkpoint is left")
    assert replay.size == 0 and not replay.rewards.any()


@each_script
def test_divergence_stops_the_run_with_one_error_line_strict_json_and_no_later_checkpoint(
    classic: Classic, tmp_path: Path, capsys
) -> None:
    argv = [*classic.crash, "--total-timesteps", "1000", "--learning-rate", "1e30", "--checkpoint-interval", "100"]
    handlers = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        with pytest.raises(SystemExit) as exit_:
            classic.module.main(["--output-dir", str(tmp_path / "runs"), *argv])
    finally:  # main() installed its Ctrl-C handler (Run.watch_signals): pytest gets its own back
        for signum, handler in handlers.items():
            signal.signal(signum, handler)
    assert exit_.value.code == 3
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    diverged = re.fullmatch(
        rf"error: {re.escape(classic.loss)} is non-finite at step ([\d,]+): the run diverged \(try a lower"
        r" --learning-rate\); its last checkpoint is kept",
        lines[0],
    )
    assert diverged, lines[0]
    step = int(diverged.group(1).replace(",", ""))
    assert 200 < step < 1000  # after the first gradient steps, long before the end
    (run_dir,) = (tmp_path / "runs").iterdir()
    for path in (run_dir / "metrics.jsonl", run_dir / "population.jsonl"):
        for line in path.read_text().splitlines() if path.exists() else []:
            json.loads(line, parse_constant=reject_bare_constant)
    losses = [m for m in read_metrics(run_dir) if m["name"] == "losses/td_loss"]
    assert (losses[-1]["global_step"], losses[-1]["value"]) == (step, None)  # the non-finite loss is written as null
    assert json.loads((run_dir / "checkpoint" / "meta.json").read_text())["global_step"] < step


def assert_logs_complete(classic: Classic, run_dir: Path, total: int) -> None:
    """Every logging step once, none missing: SPS (and PolyPrune's nominal sparsity) every 1000 steps, the target
    sparsity at 0 and at every target update (every T = 200 from 400, the first multiple of T after the 200-step
    warm-up), and EauDe's population events at those same updates."""
    metrics = read_metrics(run_dir)
    for name in {m["name"] for m in metrics}:  # one env: no two episodes end at the same step
        steps = [m["global_step"] for m in metrics if m["name"] == name]
        assert steps == sorted(set(steps)), f"{name} repeats a step"
    for name in classic.every_1000:
        assert [m["global_step"] for m in metrics if m["name"] == name] == list(range(1000, total + 1, 1000)), name
    updates = list(range(400, total + 1, 200))
    assert list(logged(metrics, "sparsity/target")) == [0, *updates]
    population = run_dir / "population.jsonl"
    if classic.population:
        assert [json.loads(line)["global_step"] for line in population.read_text().splitlines()] == updates
    else:
        assert not population.exists()


@pytest.mark.slow
@each_script
def test_ctrl_c_checkpoints_and_a_torn_log_and_a_damaged_checkpoint_still_resume(
    classic: Classic, tmp_path: Path
) -> None:
    """Three runs of the script, as a user meets the faults: Ctrl-C, then --resume after a kill tore a log line and
    damaged the newest checkpoint, then --resume with both checkpoints damaged."""
    # a budget the run cannot finish before the signal arrives; the resume below is given a short one
    command = [sys.executable, str(classic.script), *classic.crash, "--total-timesteps", "100000"]
    command += ["--checkpoint-interval", "500"]
    process = subprocess.Popen(
        [*command, "--output-dir", "runs"], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        deadline = time.time() + 300
        while not list(tmp_path.glob("runs/*/checkpoint/meta.json")):
            assert process.poll() is None and time.time() < deadline, process.communicate()
            time.sleep(0.1)
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 130, stderr
    (run_dir,) = (tmp_path / "runs").iterdir()
    interrupted_at = json.loads((run_dir / "checkpoint" / "meta.json").read_text())["global_step"]
    previous = json.loads((run_dir / "checkpoint.old" / "meta.json").read_text())["global_step"]
    assert previous == interrupted_at // 500 * 500 >= 500  # the last periodic checkpoint
    assert "Traceback" not in stderr
    assert stderr.strip().splitlines()[-1] == (
        f"interrupted at step {interrupted_at:,}; checkpoint saved, continue with:"
        f" python {classic.script.name} --resume {Path('runs') / run_dir.name}"
    )

    with open(run_dir / "metrics.jsonl", "a") as f:
        f.write('{"global_step": 99999, "name": "charts/SP')  # a kill in the middle of a log write
    state = run_dir / "checkpoint" / "state.msgpack"
    state.write_bytes(state.read_bytes()[: state.stat().st_size // 2])  # a checkpoint cut in half
    total = previous + 1000
    config = json.loads((run_dir / "config.json").read_text())
    config["args"]["total_timesteps"] = total  # PolyPrune's Eq. 2 now prunes from 0.2 to 0.8 of the new total
    (run_dir / "config.json").write_text(json.dumps(config))
    resume = [sys.executable, str(classic.script), "--resume", str(run_dir)]
    result = subprocess.run(resume, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"warning: {state} is damaged (" in result.stderr
    assert f"; resuming from the previous checkpoint {run_dir / 'checkpoint.old'}" in result.stderr
    assert f"resumed {run_dir.name} at step {previous:,}" in result.stdout
    assert re.search(r"^resume: dropped [1-9]\d* log lines written after the checkpoint", result.stdout, re.M)
    assert_logs_complete(classic, run_dir, total)
    assert json.loads((run_dir / "checkpoint" / "meta.json").read_text())["global_step"] == total
    if classic.eq2:
        # the resumed run prunes on the new schedule: from its second target update on, the target has the Eq. 2
        # sparsity of the mask update T / 2 earlier
        sparsity = logged(read_metrics(run_dir), "sparsity/target")
        first_update = (previous // 200 + 1) * 200
        for step in range(first_update + 200, total + 1, 200):
            expected = eq2(step - 100, 0.95, int(0.2 * total), int(0.8 * total))
            assert sparsity[step] == pytest.approx(expected, abs=1e-3)
        assert list(sparsity.values())[-1] > 0.5

    for name in ("checkpoint", "checkpoint.old"):  # nothing left to fall back to: one error line naming the file
        state = run_dir / name / "state.msgpack"
        state.write_bytes(state.read_bytes()[:100])
    result = subprocess.run(resume, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]
    assert result.stderr.startswith("error: --resume:")
    assert f"{run_dir / 'checkpoint' / 'state.msgpack'} is damaged" in result.stderr
