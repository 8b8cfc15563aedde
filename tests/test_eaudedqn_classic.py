"""Tests of eaudedqn_jax.py, the classic-control twin of eaudedqn_atari_jax.py: network sizes, the replay buffer
against envpool and gymnasium's reference dynamics, command-line errors, an end-to-end smoke run (outputs, saved model,
video, resume) and a learning test on CartPole-v1 with a near-dense comparison run."""

import importlib
import json
import subprocess
import sys
from pathlib import Path

import envpool
import flax
import gymnasium as gym
import imageio.v2 as imageio
import jax
import jax.numpy as jnp
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SCRIPT = ROOT / "eaudedqn_jax.py"

classic = importlib.import_module("eaudedqn_jax")
pytestmark = [
    # the end-to-end tests start the script with subprocess after JAX is imported here; JAX warns about any fork
    pytest.mark.filterwarnings("ignore:os.fork:RuntimeWarning"),
    # gymnasium's harmless warning about envpool's float64 Box bounds (the script silences it too)
    pytest.mark.filterwarnings("ignore:.*precision lowered by casting to float32:UserWarning"),
]


def run_script(tmp_path: Path, *argv: str, timeout: int = 600) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--output-dir", str(tmp_path / "runs"), *argv],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def read_metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def values(metrics: list[dict], name: str) -> list[float]:
    return [m["value"] for m in metrics if m["name"] == name]


# ---------------------------------------------------------------------------------------------------------------------
# Network sizes
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "size, expected",
    # CartPole: 4 inputs, 2 actions; (4 + 1) w + (w + 1) w + (w + 1) 2 parameters for hidden width w
    [("small", 4_610), ("medium", 67_586), ("large", 1_056_770)],
)
def test_parameter_counts_on_cartpole(size: str, expected: int) -> None:
    network = classic.QNetwork(action_dim=2, hidden_width=classic.HIDDEN_WIDTHS[size])
    shapes = jax.eval_shape(network.init, jax.random.PRNGKey(0), jnp.zeros((1, 4), jnp.float32))
    assert classic.count_params(shapes) == expected
    width = classic.HIDDEN_WIDTHS[size]
    assert classic.prunable_shapes(shapes) == [(4, width), (width, width), (width, 2)]


# ---------------------------------------------------------------------------------------------------------------------
# Replay buffer
# ---------------------------------------------------------------------------------------------------------------------


def test_replay_skips_autoreset_steps_and_keeps_true_last_observation() -> None:
    rb = classic.ReplayBuffer(capacity=8, num_envs=2, obs_shape=(1,))
    obs = np.array([[0.0], [10.0]], np.float32)
    # env 0 truncates at this step (true last obs 1.0), env 1 terminates (true last obs 11.0)
    rb.add(obs, np.array([1, 0]), np.array([1.0, 2.0]), np.array([False, True]), np.array([[1.0], [11.0]]),
           reset=np.array([False, False]))  # fmt: skip
    # next step: both envs are on envpool's autoreset step: nothing is stored
    rb.add(np.array([[1.0], [11.0]]), np.array([0, 1]), np.zeros(2), np.zeros(2, bool), np.array([[5.0], [15.0]]),
           reset=np.array([True, True]))  # fmt: skip
    # then only env 1 is live
    rb.add(np.array([[5.0], [15.0]]), np.array([1, 1]), np.array([3.0, 4.0]), np.zeros(2, bool),
           np.array([[6.0], [16.0]]), reset=np.array([True, False]))  # fmt: skip
    assert rb.size == 3 and rb.num_transitions() == 3
    np.testing.assert_array_equal(rb.observations[:3, 0], [0.0, 10.0, 15.0])
    np.testing.assert_array_equal(rb.next_observations[:3, 0], [1.0, 11.0, 16.0])  # never a reset obs
    np.testing.assert_array_equal(rb.actions[:3], [1, 0, 1])
    np.testing.assert_array_equal(rb.rewards[:3], [1.0, 2.0, 4.0])
    np.testing.assert_array_equal(rb.terminated[:3], [False, True, False])  # truncation bootstraps


def test_replay_is_fifo_and_sampling_is_seeded_and_uniform() -> None:
    rb = classic.ReplayBuffer(capacity=5, num_envs=1, obs_shape=(2,))
    for i in range(12):
        rb.add(np.full((1, 2), i, np.float32), np.array([i]), np.array([float(i)]), np.array([i % 3 == 0]),
               np.full((1, 2), i + 0.5, np.float32), reset=np.array([False]))  # fmt: skip
    assert rb.size == 5 and rb.cursor == 12 % 5
    assert sorted(rb.actions.tolist()) == [7, 8, 9, 10, 11]  # the 5 newest transitions
    a = rb.sample(4000, np.random.default_rng(3))
    b = rb.sample(4000, np.random.default_rng(3))
    for name in a:
        np.testing.assert_array_equal(a[name], b[name])
    np.testing.assert_array_equal(a["next_observations"], a["observations"] + 0.5)  # rows stay aligned
    np.testing.assert_array_equal(a["terminations"], (a["actions"] % 3 == 0).astype(np.float32))
    counts = np.bincount(a["actions"], minlength=12)[7:]
    assert counts.min() > 700 and counts.max() < 900  # 800 each in expectation
    with pytest.raises(RuntimeError, match="learning-starts"):
        classic.ReplayBuffer(4, 1, (2,)).sample(2, np.random.default_rng(0))


@pytest.mark.parametrize("env_id", ["CartPole-v1", "MountainCar-v0"])
def test_replay_transitions_match_reference_dynamics_with_truncations(env_id: str) -> None:
    """Collect with the training loop's protocol from envpool (short time limit, so truncations happen) and replay
    every stored transition through gymnasium's own dynamics: each o' must be the true successor of o (also at a
    truncation), terminated must be gymnasium's termination, and no autoreset step may be stored."""
    num_envs = 3
    envs = envpool.make(env_id, env_type="gymnasium", num_envs=num_envs, seed=5, max_episode_steps=15)
    rb = classic.ReplayBuffer(capacity=1000, num_envs=num_envs, obs_shape=envs.observation_space.shape)
    rng = np.random.default_rng(0)
    obs, _ = envs.reset()
    resetting = np.zeros(num_envs, bool)
    live_steps, truncations = 0, 0
    for _ in range(120):
        actions = rng.integers(envs.action_space.n, size=num_envs)
        next_obs, rewards, terminated, truncated, _ = envs.step(actions)
        rb.add(obs, actions, rewards, terminated, next_obs, reset=resetting)
        live_steps += int((~resetting).sum())
        truncations += int((~resetting & truncated).sum())
        resetting = ~resetting & (terminated | truncated)
        obs = next_obs
    envs.close()
    assert rb.size == live_steps and truncations > 0
    reference = gym.make(env_id).unwrapped
    reference.reset(seed=0)
    for i in range(rb.size):
        reference.state = np.array(rb.observations[i], dtype=np.float64)
        reference.steps_beyond_terminated = None  # CartPole: each transition starts from a live state
        next_state, reward, terminated, _, _ = reference.step(int(rb.actions[i]))
        np.testing.assert_allclose(rb.next_observations[i], next_state, atol=1e-4)
        assert rb.rewards[i] == pytest.approx(reward)
        assert rb.terminated[i] == terminated


# ---------------------------------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv, flag",
    [
        (["--env-id", "NotAnEnv-v0"], "--env-id"),
        (["--env-id", "Pong-v5"], "--env-id"),
        (["--env-id", "Pendulum-v1"], "--env-id"),
        (["--env-id", "HalfCheetah-v5"], "--env-id"),
        (["--num-networks", "0"], "--num-networks"),
        (["--num-networks", "2", "--tournament-size", "3"], "--tournament-size"),
        (["--u-max", "0"], "--u-max"),
        (["--s-max", "1.5"], "--s-max"),
        (["--total-timesteps", "-5"], "--total-timesteps"),
        (["--learning-starts", "-1"], "--learning-starts"),
        (["--num-networks", "abc"], "--num-networks"),
        (["--network-size", "huge"], "--network-size"),
        (["--resume", "/nonexistent/run"], "--resume"),
    ],
)
def test_cli_errors(argv: list[str], flag: str, capsys) -> None:
    with pytest.raises(SystemExit) as exit_:
        classic.parse_args(argv)
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and flag in err[0]


@pytest.mark.parametrize("env_id", ["CartPole-v1", "Acrobot-v1", "LunarLander-v3", "MountainCar-v0"])
def test_classic_ids_are_accepted(env_id: str) -> None:
    assert classic.parse_args(["--env-id", env_id]).env_id == env_id


def test_cli_error_as_a_subprocess_has_no_traceback(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--env-id", "Pendulum-v1"], cwd=tmp_path, capture_output=True, text=True
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()] and proc.stderr.startswith("error: --env-id")
    assert not (tmp_path / "runs").exists()


# ---------------------------------------------------------------------------------------------------------------------
# End to end: outputs, saved model, video, resume (small and fast)
# ---------------------------------------------------------------------------------------------------------------------

SMOKE = [
    "--total-timesteps", "3000", "--learning-starts", "500", "--target-network-frequency", "250",
    "--network-size", "small", "--batch-size", "32", "--u-max", "30", "--s-max", "0.2",
]  # fmt: skip


@pytest.mark.slow
def test_smoke_run_outputs_model_video_and_resume(tmp_path: Path) -> None:
    proc = run_script(
        tmp_path, *SMOKE, "--seed", "3", "--checkpoint-interval", "1500", "--save-model", "--capture-video",
        "--eval-episodes", "1",
    )  # fmt: skip
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert run_dir.name.startswith("CartPole-v1__eaudedqn_jax__3__")
    config = json.loads((run_dir / "config.json").read_text())
    assert config["args"]["env_id"] == "CartPole-v1" and config["args"]["total_timesteps"] == 3000

    metrics = read_metrics(run_dir)
    assert set(m["name"] for m in metrics) >= {
        "charts/episodic_return", "charts/episodic_length", "charts/SPS", "losses/td_loss", "sparsity/target",
        "eval/episodic_return",
    }  # fmt: skip
    assert all(set(m) == {"global_step", "name", "value", "time"} for m in metrics)
    # CartPole pays 1 per step: the return equals the length, and the lengths add up to the env steps
    assert values(metrics, "charts/episodic_return") == values(metrics, "charts/episodic_length")
    assert sum(values(metrics, "charts/episodic_length")) <= 3000
    assert len(values(metrics, "eval/episodic_return")) == 1
    assert list((run_dir).glob("events.out.tfevents.*"))

    events = [json.loads(line) for line in (run_dir / "population.jsonl").read_text().splitlines()]
    assert [e["global_step"] for e in events] == list(range(750, 3001, 250))  # every T after learning starts
    for event in events:
        assert len(event["losses"]) == len(event["parents"]) == len(event["sparsities_after"]) == 5
        assert event["parents"][0] == event["target_index"] == int(np.argmin(event["losses"]))
    # the saved model is the final target network; its zeros are the last logged target sparsity
    network = classic.QNetwork(action_dim=2, hidden_width=classic.HIDDEN_WIDTHS["small"])
    template = network.init(jax.random.PRNGKey(0), np.zeros((1, 4), np.float32))
    params = flax.serialization.from_bytes(template, (run_dir / "eaudedqn_jax.cleanrl_model").read_bytes())
    final_sparsity = values(metrics, "sparsity/target")[-1]
    assert classic.measured_sparsity(params) == pytest.approx(final_sparsity)
    # exploration pruned copies (U_max = 30, S_max = 0.2 prune fast); the target keeps a sparsity the population held
    assert max(max(e["sparsities_after"]) for e in events) > 0.1
    assert final_sparsity == pytest.approx(events[-1]["sparsities_before"][events[-1]["target_index"]], abs=1e-3)
    videos = sorted((tmp_path / "videos" / run_dir.name).glob("*.mp4"))
    assert [v.name for v in videos] == ["eval-episode-0.mp4"]
    with imageio.get_reader(videos[0]) as reader:  # one frame per state: the episode's length + 1 (CartPole)
        assert reader.count_frames() == values(metrics, "eval/episodic_return")[0] + 1
        assert reader.get_data(0).shape == (400, 600, 3)
    assert "target sparsity" in proc.stdout

    # resume: extend the finished run (its final checkpoint is at 3000) to 4000 steps
    config["args"]["total_timesteps"] = 4000
    config["args"]["save_model"] = False
    (run_dir / "config.json").write_text(json.dumps(config))
    proc = run_script(tmp_path, "--resume", str(run_dir))
    assert "resumed" in proc.stdout and "3,000" in proc.stdout
    resumed = read_metrics(run_dir)
    steps = [m["global_step"] for m in resumed if m["name"] == "charts/episodic_return"]
    assert steps == sorted(steps) and 3000 < steps[-1] <= 4000
    events = [json.loads(line) for line in (run_dir / "population.jsonl").read_text().splitlines()]
    assert [e["global_step"] for e in events] == list(range(750, 4001, 250))
    # the population (and its sparsities) continues from the checkpoint
    by_step = {e["global_step"]: e for e in events}
    assert by_step[3250]["sparsities_before"] == by_step[3000]["sparsities_after"]


# ---------------------------------------------------------------------------------------------------------------------
# Learning: EauDeDQN learns CartPole-v1 and discovers a sparsity; a near-dense run shows what the sparsity cost
# ---------------------------------------------------------------------------------------------------------------------

LEARN = [
    "--total-timesteps", "50000", "--learning-starts", "1000", "--exploration-steps", "25000",
    "--train-frequency", "4", "--network-size", "small", "--num-envs", "4", "--checkpoint-interval", "0",
]  # fmt: skip
LAST_EPISODES = 20
# Seeds 1-5 of this configuration (mean return of the last 20 episodes / final target sparsity): EauDeDQN 309.0/0.362,
# 321.2/0.301, 251.4/0.307, 222.9/0.283, 260.8/0.304; near-dense 294.6, 268.1, 250.3, 291.1, 231.5 (all dense).
MIN_RETURN = 150.0  # a random policy scores about 22
MIN_SPARSITY = 0.2


def summarize(run_dir: Path) -> tuple[float, float]:
    metrics = read_metrics(run_dir)
    return float(np.mean(values(metrics, "charts/episodic_return")[-LAST_EPISODES:])), values(
        metrics, "sparsity/target"
    )[-1]


@pytest.mark.slow
def test_eaudedqn_learns_cartpole_and_prunes(tmp_path: Path) -> None:
    """Both runs go in parallel (two processes; the loop is mostly single-threaded Python)."""
    runs = {"EauDeDQN (U_max 3)": [], "near-dense (U_max 1e-6)": ["--u-max", "1e-6"]}
    procs = {
        name: subprocess.Popen(
            [sys.executable, str(SCRIPT), "--output-dir", str(tmp_path / str(i)), "--seed", "1", *LEARN, *extra],
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i, (name, extra) in enumerate(runs.items())
    }
    results = {}
    try:
        for i, (name, proc) in enumerate(procs.items()):
            out, err = proc.communicate(timeout=600)
            assert proc.returncode == 0, out[-3000:] + err[-3000:]
            (run_dir,) = (tmp_path / str(i)).iterdir()
            results[name] = summarize(run_dir)
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    report = "; ".join(
        f"{name}: mean return of the last {LAST_EPISODES} episodes {ret:.1f}, target sparsity {sparsity:.3f}"
        for name, (ret, sparsity) in results.items()
    )
    cost = results["near-dense (U_max 1e-6)"][0] - results["EauDeDQN (U_max 3)"][0]
    report += f"; near-dense minus EauDeDQN return (what the sparsity cost): {cost:+.1f}"
    print("\nCartPole-v1, 50k steps, small MLP, 4 envs, seed 1: " + report)
    eaude_return, eaude_sparsity = results["EauDeDQN (U_max 3)"]
    assert eaude_return >= MIN_RETURN, report
    assert eaude_sparsity >= MIN_SPARSITY, report
    assert results["near-dense (U_max 1e-6)"][1] < 0.01, report  # the comparison run is indeed (nearly) dense
