"""Faults a run survives, in all 8 scripts (docs/reliability.md, issue 22): a second writer on a run folder, a write
error (a full disk) in a checkpoint, a log or TensorBoard's thread, damaged run files on --resume, and a kill at a
random write. The fast tests drive each script's `Run` in this process with a disk that fails on its N-th write; the
slow ones run the real scripts (tests/support/write_faults.py injects the faults into them). The two classic-control
scripts, fast enough to run whole, also meet a damaged newest checkpoint with their real replay buffer, a divergence
and Ctrl-C, a torn log line and damaged checkpoints the way a user meets them."""

import builtins
import errno
import fcntl
import importlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import jax.numpy as jnp
import numpy as np
import pytest
from fingerprint import RUNS
from support.benchmark_fakes import make_fake_script_dir

import eaudedqn_jax
import polyprune_dqn_jax

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = list(RUNS)
OFFLINE = {"eaudecql_atari_jax", "polyprune_cql_atari_jax"}  # checkpoints without a replay buffer
FAULTS = ROOT / "tests" / "support" / "write_faults.py"
pytestmark = [
    # the end-to-end tests start a script with subprocess after JAX is imported here; JAX warns about any fork
    pytest.mark.filterwarnings("ignore:os.fork:RuntimeWarning"),
    # gymnasium's harmless warning about envpool's float64 Box bounds (the classic scripts silence it too)
    pytest.mark.filterwarnings("ignore:.*precision lowered by casting to float32:UserWarning"),
]


class Exited(Exception):
    """os._exit, made catchable: `Run.writing` ends the process with it."""


@pytest.fixture
def exits(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    codes: list[int] = []

    def fake_exit(code: int) -> None:
        codes.append(code)
        raise Exited(code)

    monkeypatch.setattr(os, "_exit", fake_exit)
    monkeypatch.setattr(threading, "excepthook", threading.excepthook)  # open_logs replaces it: restored after
    return codes


class StubReplay:
    """What a checkpoint takes from a replay buffer: state_dict() and load_state_dict()."""

    def __init__(self) -> None:
        self.state = {"obs": np.arange(12.0).reshape(4, 3), "cursor": 2}

    def state_dict(self) -> dict[str, Any]:
        return dict(self.state)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.state = state


class FullDisk:
    def write(self, data: Any) -> int:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def new_run(module: Any, tmp_path: Path) -> Any:
    return module.Run(module.Args(output_dir=str(tmp_path / "runs"), exp_name="x"))


def resumed(module: Any, run_dir: Path) -> Any:
    return module.Run(module.Args(resume=str(run_dir), exp_name="x"))


def save(module: Any, run: Any, step: int) -> None:
    counters = {"global_step": step, "elapsed": 0.0, "rng_state": np.random.default_rng(step).bit_generator.state}
    state = {"w": jnp.full(3, float(step))}
    if module.__name__ in OFFLINE:
        run.save_checkpoint(state, counters)
    else:
        run.save_checkpoint(state, StubReplay(), counters)


def restore(module: Any, run: Any) -> tuple[dict, dict]:
    template, rng = {"w": jnp.zeros(3)}, np.random.default_rng(0)
    if module.__name__ in OFFLINE:
        return run.resume(template, rng)
    return run.resume(template, StubReplay(), rng)


def release(run: Any) -> None:
    """What the end of the process does to the lock."""
    run.lock.close()


def failing_disk(monkeypatch: pytest.MonkeyPatch, folder: Path, at: int) -> None:
    """From now on the at-th write() into `folder` raises ENOSPC, as a full disk would."""
    real_open, count = builtins.open, [0]

    class Faulty:
        def __init__(self, file: Any) -> None:
            self.file = file

        def write(self, data: Any) -> int:
            count[0] += 1
            if count[0] == at:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return self.file.write(data)

        def __getattr__(self, name: str) -> Any:
            return getattr(self.file, name)

        def __enter__(self) -> "Faulty":
            return self

        def __exit__(self, *exc: object) -> None:
            self.file.close()

    def faulty_open(file: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        opened = real_open(file, mode, *args, **kwargs)
        inside = isinstance(file, (str, os.PathLike)) and Path(file).is_relative_to(folder)
        return Faulty(opened) if inside and any(c in mode for c in "wax+") else opened

    monkeypatch.setattr(builtins, "open", faulty_open)


def one_error_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    return lines[0]


# ---- one writer per run folder ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("script", SCRIPTS)
def test_a_second_writer_is_refused_before_touching_anything(script: str, tmp_path: Path, capsys) -> None:
    module = importlib.import_module(script)
    first = new_run(module, tmp_path)
    save(module, first, 10)
    before = {path: path.stat().st_mtime_ns for path in first.dir.rglob("*")}
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_:
        resumed(module, first.dir)
    assert exit_.value.code == 2
    line = one_error_line(capsys.readouterr().err)
    assert str(first.dir) in line and f"process {os.getpid()} on " in line
    assert {path: path.stat().st_mtime_ns for path in first.dir.rglob("*")} == before
    release(first)  # the first writer ends (a kill -9 too: the OS drops its lock)
    second = resumed(module, first.dir)
    assert (first.dir / "run.lock").read_text() == f"{os.getpid()} on {os.uname().nodename}\n"
    release(second)


@pytest.mark.parametrize("script", SCRIPTS)
def test_a_filesystem_without_flock_is_one_warning_and_the_run_goes_on(
    script: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    """Lustre mounted with -o noflock: flock() fails with ENOSYS (docs/reliability.md)."""
    module = importlib.import_module(script)

    def no_flock(*_: object) -> None:
        raise OSError(errno.ENOSYS, os.strerror(errno.ENOSYS))

    monkeypatch.setattr(fcntl, "flock", no_flock)
    run = new_run(module, tmp_path)
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"warning: cannot lock {run.dir / 'run.lock'} (") and "nothing stops a second writer" in line
    assert (run.dir / "config.json").is_file()
    release(run)


# ---- write errors -----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("script", SCRIPTS)
def test_a_write_error_at_any_write_of_a_checkpoint_keeps_the_last_one(
    script: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, exits: list[int], capsys
) -> None:
    module = importlib.import_module(script)
    run = new_run(module, tmp_path)
    save(module, run, 10)
    for at in range(1, 100):  # the at-th write of the next checkpoint fails, for every write it makes
        with monkeypatch.context() as patch:
            failing_disk(patch, run.dir, at)
            capsys.readouterr()
            try:
                save(module, run, 20)
                break  # at is past its last write
            except Exited:
                pass
        line = one_error_line(capsys.readouterr().err)
        assert line.startswith(f"error: cannot write a checkpoint in {run.dir} (") and "--resume" in line, line
        assert not (run.dir / "checkpoint.tmp").exists()
        assert json.loads((run.dir / "checkpoint" / "meta.json").read_text())["global_step"] == 10
    assert at >= 3 and exits == [4] * (at - 1)
    release(run)
    state, counters = restore(module, resumed(module, run.dir))
    assert counters["global_step"] == 20 and float(state["w"][0]) == 20.0


@pytest.mark.parametrize("script", SCRIPTS)
def test_a_log_write_error_is_one_line_and_resume_repeats_no_step(
    script: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, exits: list[int], capsys
) -> None:
    module = importlib.import_module(script)
    run = new_run(module, tmp_path)
    run.open_logs({"global_step": 0, "elapsed": 0.0})
    for step in (1, 2):
        run.scalar("charts/SPS", 1.0, step)
    save(module, run, 2)
    run.scalar("charts/SPS", 1.0, 3)
    metrics, run.metrics = run.metrics, FullDisk()  # the next line cannot be written
    capsys.readouterr()
    with pytest.raises(Exited):
        run.scalar("charts/SPS", 1.0, 4)
    assert one_error_line(capsys.readouterr().err).startswith(f"error: cannot write metrics.jsonl in {run.dir} (")
    # tensorboardX writes its event files from a thread: an OSError there is the same one line and exit code 4
    monkeypatch.setattr(os, "_exit", exits.append)  # no exception out of a thread's excepthook
    thread = threading.Thread(target=FullDisk().write, args=(b"event",))
    thread.start()
    thread.join()
    assert "cannot write the TensorBoard events" in one_error_line(capsys.readouterr().err)
    assert exits == [4, 4]
    metrics.close()
    run.writer.close()
    release(run)
    _, counters = restore(module, resumed(module, run.dir))
    steps = [json.loads(line)["global_step"] for line in (run.dir / "metrics.jsonl").read_text().splitlines()]
    assert counters["global_step"] == 2 and steps == [1, 2]


# ---- damaged run files on --resume ------------------------------------------------------------------------------------
@pytest.mark.parametrize("script", SCRIPTS)
def test_damaged_run_files_on_resume_are_one_error_line(script: str, tmp_path: Path, capsys) -> None:
    module = importlib.import_module(script)
    run = new_run(module, tmp_path)
    save(module, run, 10)
    release(run)
    config = run.dir / "config.json"
    good = config.read_text()
    for damaged in (good[: len(good) // 2], "[1, 2]", '{"args": {"no_such_flag": 1}}', b"\xff\xfe"):
        config.write_bytes(damaged) if isinstance(damaged, bytes) else config.write_text(damaged)
        capsys.readouterr()
        with pytest.raises(SystemExit) as exit_:
            module.parse_args(["--resume", str(run.dir)])
        assert exit_.value.code == 2
        assert one_error_line(capsys.readouterr().err).startswith(f"error: --resume: {config} is damaged")
    meta = run.dir / "checkpoint" / "meta.json"
    files = [(meta, "{"), (meta, "[1, 2]"), (meta, '{"global_step": 10}')]
    if script not in OFFLINE:
        files.append((run.dir / "checkpoint" / "replay_obs.npy", np.zeros((4, 2))))
    for path, content in files:
        save(module, run := resumed(module, run.dir), 10)
        shutil.rmtree(run.dir / "checkpoint.old")  # no earlier checkpoint to fall back to
        np.save(path, content) if isinstance(content, np.ndarray) else path.write_text(content)
        capsys.readouterr()
        with pytest.raises(SystemExit) as exit_:
            restore(module, run)
        assert exit_.value.code == 2
        line = one_error_line(capsys.readouterr().err)
        assert line.startswith(f"error: --resume: {path} is damaged"), line
        release(run)


# ---- benchmark.sh -----------------------------------------------------------------------------------------------------
def test_benchmark_reports_a_locked_run_as_running_elsewhere_locally_and_on_slurm(tmp_path: Path) -> None:
    repo, out, log = make_fake_script_dir(tmp_path / "repo"), tmp_path / "runs", tmp_path / "calls.jsonl"
    running = out / "Pong-v5__dqn__1__1700000000"
    (running / "checkpoint").mkdir(parents=True)
    (running / "config.json").write_text(json.dumps({"total_timesteps": 2000, "exp_name": "dqn"}))
    (running / "metrics.jsonl").write_text(json.dumps({"global_step": 500, "name": "charts/SPS", "value": 1.0}) + "\n")
    lock = open(running / "run.lock", "a+")  # this process plays the run going on elsewhere
    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    args = ["--algos", "dqn", "--env-ids", "Pong-v5,Qbert-v5", "--script-dir", str(repo), "--python", "python3"]
    args += ["--output-dir", str(out)]
    bench = ["bash", str(repo / "benchmark.sh"), *args]
    env = {**os.environ, "FAKE_CALL_LOG": str(log)}
    dry = subprocess.run([*bench, "--dry-run"], capture_output=True, text=True, env=env, timeout=120)
    assert "Qbert-v5" in dry.stdout and "Pong-v5" not in dry.stdout
    local = subprocess.run(bench, capture_output=True, text=True, env=env, timeout=120)
    assert local.returncode == 0, local.stderr
    assert "running elsewhere, skipping: Pong-v5__dqn__1__" in local.stderr
    called = [json.loads(line)["argv"] for line in log.read_text().splitlines()]
    assert [argv[argv.index("--env-id") + 1] for argv in called] == ["Qbert-v5"]
    # a Slurm array task (benchmark.sh --exec-task, see tools/slurm_template.sbatch) of the same run
    tasks = tmp_path / "tasks.tsv"
    tasks.write_text(f"# finish-slack=0.01\n# root={repo}\n{out}\tPong-v5__dqn__1__\tdqn\tfalse\n")
    task = subprocess.run(["bash", str(repo / "benchmark.sh"), "--exec-task", str(tasks), "0"],
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert task.returncode == 0 and "running elsewhere, skipping: Pong-v5__dqn__1__" in task.stdout, task
    lock.close()  # the other run ends: its folder is resumed again
    dry = subprocess.run([*bench, "--dry-run"], capture_output=True, text=True, env=env, timeout=120)
    assert f"--resume {running}" in dry.stdout


# ---- the classic-control scripts whole: their replay buffer, divergence, Ctrl-C --------------------------------------
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
    error = one_error_line(capsys.readouterr().err)
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
    line = one_error_line(capsys.readouterr().err)
    diverged = re.fullmatch(
        rf"error: {re.escape(classic.loss)} is non-finite at step ([\d,]+): the run diverged \(try a lower"
        r" --learning-rate\); its last checkpoint is kept",
        line,
    )
    assert diverged, line
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
    assert one_error_line(result.stderr).startswith("error: --resume:")
    assert f"{run_dir / 'checkpoint' / 'state.msgpack'} is damaged" in result.stderr


# ---- real runs (slow) -------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def run_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A JAX compilation cache shared by the runs of a script (test speed only) and the offline scripts' dataset."""
    cache, dataset = tmp_path_factory.mktemp("jax_cache"), tmp_path_factory.mktemp("dataset") / "Pong" / "1"
    return {
        **os.environ, "JAX_PLATFORMS": "cpu", "JAX_COMPILATION_CACHE_DIR": str(cache),
        "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0", "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "-1",
        "DATASET": str(dataset),
    }  # fmt: skip


def tiny_argv(script: str, env: dict[str, str], checkpoint_interval: int) -> list[str]:
    argv = [*RUNS[script], "--checkpoint-interval", str(checkpoint_interval)]
    if script in OFFLINE:
        dataset = Path(env["DATASET"])
        if not dataset.exists():
            writer = [sys.executable, str(ROOT / "tools" / "write_dqn_replay_dataset.py"), "--env-id", "Pong-v5"]
            sizes = ["--num-checkpoints", "2", "--transitions-per-checkpoint", "1000", "--output-dir", str(dataset)]
            subprocess.run([*writer, *sizes], check=True, capture_output=True, env=env, timeout=300)
        argv += ["--dataset-dir", str(dataset)]
    return argv


CHECKPOINT_INTERVAL = {"eaudecql_atari_jax": 40, "polyprune_cql_atari_jax": 40}  # gradient steps; others: env steps


def assert_each_step_once(run_dir: Path) -> None:
    """No logged step repeated, none lost: each metric (episodes and evaluations aside, several of which may end at one
    step) and the population events come at a fixed cadence, so a lost stretch would leave a wider gap."""
    metrics = read_metrics(run_dir)
    for name in {m["name"] for m in metrics}:
        if "episodic" not in name:
            steps = [m["global_step"] for m in metrics if m["name"] == name]
            assert steps == sorted(set(steps)), f"{name} repeats a step: {steps}"
            assert len(set(np.diff(steps[1:-1]))) <= 1, f"{name} misses a step: {steps}"  # first, last: off-cadence
    if (run_dir / "population.jsonl").exists():
        events = [json.loads(line) for line in (run_dir / "population.jsonl").read_text().splitlines()]
        keys = [(event["global_step"], event.get("critic")) for event in events]  # SAC: one line per critic
        assert keys == sorted(set(keys)), keys
        assert len(set(np.diff(sorted({step for step, _ in keys})))) <= 1, keys


@pytest.mark.slow  # eaudedqn_atari_jax: tests/test_atari_runs.py kills it at random moments already
@pytest.mark.parametrize("script", SCRIPTS[1:])
def test_killed_at_a_random_write_every_script_resumes_with_each_step_once(
    script: str, tmp_path: Path, run_env: dict[str, str]
) -> None:
    """SIGKILL at a random write once a checkpoint exists (a log line, or any file of the next checkpoint: a kill
    tears it in half), then --resume to the end."""
    # a tiny offline run writes little after its first checkpoint (gradient-step logs, 2 files per checkpoint)
    at = int(np.random.default_rng(SCRIPTS.index(script)).integers(1, 6 if script in OFFLINE else 25))
    argv = [*tiny_argv(script, run_env, CHECKPOINT_INTERVAL.get(script, 500)), "--output-dir", "runs"]
    killed = subprocess.run([sys.executable, str(FAULTS), "kill", str(at), str(ROOT / f"{script}.py"), *argv],
                            cwd=tmp_path, env=run_env, capture_output=True, text=True, timeout=900)  # fmt: skip
    assert killed.returncode == -signal.SIGKILL, (at, killed.stderr[-2000:])
    (run_dir,) = (tmp_path / "runs").iterdir()
    done = subprocess.run([sys.executable, str(ROOT / f"{script}.py"), "--resume", str(run_dir)],
                          cwd=tmp_path, env=run_env, capture_output=True, text=True, timeout=900)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert_each_step_once(run_dir)


@pytest.mark.slow
def test_a_second_process_is_refused_and_kill_9_leaves_no_stale_lock(tmp_path: Path, run_env: dict[str, str]) -> None:
    script = str(ROOT / "eaudedqn_jax.py")
    argv = [*tiny_argv("eaudedqn_jax", run_env, 500), "--output-dir", "runs"]
    first = subprocess.Popen([sys.executable, str(FAULTS), "hang", "3", script, *argv], cwd=tmp_path, env=run_env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        deadline = time.time() + 600
        while not list(tmp_path.glob("runs/*/hanging")):
            assert first.poll() is None and time.time() < deadline
            time.sleep(0.2)
        (run_dir,) = (tmp_path / "runs").iterdir()
        second = subprocess.run([sys.executable, script, "--resume", str(run_dir)], cwd=tmp_path, env=run_env,
                                capture_output=True, text=True, timeout=600)  # fmt: skip
        assert second.returncode == 2
        line = one_error_line(second.stderr)
        assert line.startswith(f"error: {run_dir} is being written by process {first.pid} on "), line
    finally:
        first.kill()  # SIGKILL: no stale lock is left
        first.wait()
    done = subprocess.run([sys.executable, script, "--resume", str(run_dir)], cwd=tmp_path, env=run_env,
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert_each_step_once(run_dir)


@pytest.mark.slow
def test_a_full_disk_is_one_line_and_resume_once_freed_loses_no_step(tmp_path: Path, run_env: dict[str, str]) -> None:
    """The issue's case: a full disk during a checkpoint (here the second: the first, 336 KB, must stay whole), then
    --resume once space is freed. On a real 600 KB tmpfs, private to a user and mount namespace that ends with the
    shell; where unshare cannot mount, on a disk failing on its 20th write once a checkpoint exists."""
    script = str(ROOT / "eaudedqn_jax.py")
    argv = [*tiny_argv("eaudedqn_jax", run_env, 1000), "--network-size", "small", "--buffer-size", "3000"]
    disk = tmp_path / "disk"
    disk.mkdir()
    mount = ["unshare", "-r", "-m", "mount", "-t", "tmpfs", "none", str(disk)]
    if shutil.which("unshare") is None or subprocess.run(mount, capture_output=True).returncode:
        command = [sys.executable, str(FAULTS), "oserror", "20", script, *argv, "--output-dir", str(disk / "runs")]
        full = subprocess.run(command, env=run_env, capture_output=True, text=True, timeout=900)
    else:
        save = f"cp -a {disk}/runs {tmp_path}/copy"
        command = f"mount -t tmpfs -o size=600k none {disk} && {sys.executable} {script} {' '.join(argv)} "
        command += f"--output-dir {disk}/runs; code=$?; {save}; exit $code"
        full = subprocess.run(["unshare", "-r", "-m", "sh", "-c", command], env=run_env, capture_output=True,
                              text=True, timeout=900)  # fmt: skip
        shutil.copytree(tmp_path / "copy", disk / "runs")
    assert full.returncode == 4, full.stderr[-2000:]
    (run_dir,) = (disk / "runs").iterdir()
    line = one_error_line(full.stderr)
    assert line.startswith("error: cannot write ") and "No space left on device" in line and "--resume" in line
    assert not (run_dir / "checkpoint.tmp").exists()
    assert json.loads((run_dir / "checkpoint" / "meta.json").read_text())["global_step"] == 1000
    done = subprocess.run([sys.executable, script, "--resume", str(run_dir)], env=run_env, capture_output=True,
                          text=True, timeout=900)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert_each_step_once(run_dir)
