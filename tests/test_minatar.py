"""MinAtar in the classic-control twins (eaudedqn_jax.py, polyprune_dqn_jax.py): the games through the `minatar` package
behind envpool's interface, MinAtar's convolutional torso with the paper's heads (Table 3 widths), every kernel pruned
(the convolution too), bool frames in the replay, the run folder of a namespaced env id, the command-line errors, the
saved model played and filmed by tools/evaluate.py, and a learning test: dense DQN and EauDeDQN well above the random
policy on Breakout. Each test runs against both scripts."""

import importlib
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))
evaluate_tool = importlib.import_module("evaluate")
MODULES = {name: importlib.import_module(name) for name in ("eaudedqn_jax", "polyprune_dqn_jax")}
pytestmark = pytest.mark.filterwarnings("ignore:os.fork:RuntimeWarning")
BREAKOUT = "MinAtar/Breakout-v1"  # 10 x 10 x 4 frames, 3 actions (the minimal action set)


@pytest.fixture(params=list(MODULES), ids=list(MODULES))
def module(request: pytest.FixtureRequest):
    return MODULES[request.param]


# ---- network: MinAtar's torso, Table 3's heads, every kernel prunable ------------------------------------------------
@pytest.mark.parametrize(
    # conv 3 x 3 x 4 x 16 + 16 = 592; head (8 x 8 x 16 = 1 024) w + w; output 3 w + 3
    "size, width, expected",
    [("small", 32, 33_491), ("medium", 512, 526_931), ("large", 2048, 2_105_939)],
)
def test_parameter_counts_on_breakout(module, size: str, width: int, expected: int) -> None:
    assert module.network_width(BREAKOUT, size) == width
    network = module.QNetwork(action_dim=3, hidden_width=width)
    shapes = jax.eval_shape(network.init, jax.random.PRNGKey(0), jnp.zeros((1, 10, 10, 4), bool))
    assert module.count_params(shapes) == expected
    assert module.prunable_shapes(shapes) == [(3, 3, 4, 16), (1024, width), (width, 3)]
    assert module.network_width("CartPole-v1", size) == {"small": 64, "medium": 256, "large": 1024}[size]


def test_the_torso_is_one_valid_3x3_convolution_then_the_head(module) -> None:
    network = module.QNetwork(action_dim=3, hidden_width=32)
    frames = np.random.default_rng(0).random((2, 10, 10, 4)) > 0.7
    params = network.init(jax.random.PRNGKey(1), frames)["params"]
    conv = jax.lax.conv_general_dilated(
        jnp.asarray(frames, jnp.float32), params["Conv_0"]["kernel"], (1, 1), "VALID",
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
    )  # fmt: skip
    features = jax.nn.relu(conv + params["Conv_0"]["bias"]).reshape(2, -1)
    hidden = jax.nn.relu(features @ params["Dense_0"]["kernel"] + params["Dense_0"]["bias"])
    expected = hidden @ params["Dense_1"]["kernel"] + params["Dense_1"]["bias"]
    q = network.apply({"params": params}, frames)  # bool frames in, as the replay stores them
    np.testing.assert_allclose(q, expected, rtol=1e-5, atol=1e-6)


def test_every_kernel_is_pruned_the_convolution_included(module) -> None:
    network = module.QNetwork(action_dim=3, hidden_width=32)
    params = network.init(jax.random.PRNGKey(0), np.zeros((1, 10, 10, 4), np.float32))
    masks = module.magnitude_masks(params, 0.9, "erk")
    pruned = module.apply_masks(params, masks)
    assert module.measured_sparsity(pruned) == pytest.approx(0.9, abs=1e-3)
    layers = pruned["params"]
    assert np.mean(np.asarray(layers["Conv_0"]["kernel"]) == 0) > 0.5  # the torso
    assert np.mean(np.asarray(layers["Dense_0"]["kernel"]) == 0) > 0.5  # the head
    assert all(np.all(np.asarray(layer["bias"])) for layer in masks["params"].values())  # biases are never pruned


# ---- environment: envpool's interface over gymnasium's vector env -----------------------------------------------------
def trajectory(module, seed: int, steps: int = 100) -> np.ndarray:
    envs, rng = module.make_env(BREAKOUT, 2, seed=seed), np.random.default_rng(0)
    frames = [envs.reset()[0]] + [envs.step(rng.integers(3, size=2))[0] for _ in range(steps)]
    return np.stack(frames)


def test_minatar_envs_behave_as_envpool(module) -> None:
    envs = module.make_env(BREAKOUT, 2, seed=7)
    assert envs.action_space.n == 3 and envs.observation_space.shape == (10, 10, 4)
    assert envs.observation_space.dtype == np.bool_
    envs.reset()
    # seeded when made, as envpool: the same frames for the same seed (sticky actions included), others for another
    np.testing.assert_array_equal(trajectory(module, 7), trajectory(module, 7))
    assert not np.array_equal(trajectory(module, 7), trajectory(module, 8))
    rng, ended = np.random.default_rng(0), None
    for _ in range(500):
        _, _, terminated, truncated, _ = envs.step(rng.integers(3, size=2))
        if (terminated | truncated).any():
            ended = np.flatnonzero(terminated | truncated)
            break
    assert ended is not None
    obs, reward, terminated, truncated, _ = envs.step(np.zeros(2, np.int64))
    # the step after an episode's end is the autoreset step: reward 0, not an end, a fresh frame (as envpool's)
    assert np.all(reward[ended] == 0) and not (terminated[ended] | truncated[ended]).any()
    assert obs.dtype == np.bool_ and obs.shape == (2, 10, 10, 4)
    envs.close()
    frames = module.make_env(BREAKOUT, 1, seed=0, render=True)
    frames.reset()
    frame = frames.render()
    assert frame.shape == (1, 160, 160, 3) and frame.dtype == np.uint8 and frame.max() > 0


def test_the_replay_keeps_minatar_frames_as_bool(module) -> None:
    rb = module.ReplayBuffer(capacity=4, num_envs=1, obs_shape=(10, 10, 4), obs_dtype=np.bool_)
    frame = np.random.default_rng(0).random((1, 10, 10, 4)) > 0.5
    rb.add(frame, np.array([2]), np.array([1.0]), np.array([False]), ~frame, reset=np.array([False]))
    assert rb.observations.dtype == np.bool_ and rb.observations.nbytes == 4 * 400  # one byte a cell
    batch = rb.sample(2, np.random.default_rng(0))
    assert batch["observations"].dtype == np.bool_
    np.testing.assert_array_equal(batch["next_observations"][0], ~frame[0])


# ---- command line ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("env_id", ["MinAtar/SpaceInvaders-v1", "MinAtar/Seaquest-v0", BREAKOUT])
def test_minatar_ids_are_accepted(module, env_id: str) -> None:
    assert module.parse_args(["--env-id", env_id]).env_id == env_id


def test_an_unknown_minatar_game_is_one_error_line(module, capsys) -> None:
    with pytest.raises(SystemExit) as exit_:
        module.parse_args(["--env-id", "MinAtar/Pong-v1"])
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_.value.code == 2 and len(err) == 1
    assert err[0].startswith("error: --env-id: unknown MinAtar game 'MinAtar/Pong-v1'") and BREAKOUT in err[0]


def test_a_missing_minatar_package_is_one_error_line(module, capsys, monkeypatch: pytest.MonkeyPatch) -> None:
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "minatar" else find_spec(name, *a)
    )
    with pytest.raises(SystemExit) as exit_:
        module.parse_args(["--env-id", BREAKOUT])
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_.value.code == 2 and err == [
        f"error: --env-id: {BREAKOUT} needs the minatar package (uv sync installs it)"
    ]


# ---- a short run: one run folder, bool frames in the checkpoint, the saved model played by tools/evaluate.py --------
SHORT = [
    "--env-id", BREAKOUT, "--total-timesteps", "400", "--learning-starts", "200", "--buffer-size", "400",
    "--batch-size", "8", "--target-network-frequency", "100", "--network-size", "small", "--checkpoint-interval",
    "400", "--save-model", "--eval-episodes", "2", "--num-networks", "3", "--tournament-size", "2",
]  # fmt: skip


def test_a_short_run_writes_one_folder_bool_replay_and_a_model_evaluate_replays(
    module, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    argv = SHORT if module.__name__ == "eaudedqn_jax" else SHORT[: SHORT.index("--num-networks")]
    module.main([*argv, "--output-dir", "runs"])
    (run_dir,) = (tmp_path / "runs").iterdir()  # MinAtar/Breakout-v1 names one folder, not a sub-folder
    assert run_dir.name.startswith(f"MinAtar-Breakout-v1__{module.__name__}__1__")
    replay = np.load(run_dir / "checkpoint" / "replay_observations.npy")
    assert replay.dtype == np.bool_ and replay.shape == (400, 10, 10, 4)
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    logged = [m["value"] for m in metrics if m["name"] == "eval/episodic_return"]
    assert len(logged) == 2
    assert evaluate_tool.evaluate_run(run_dir) == logged  # the tool plays the run's protocol: the same returns


# ---- learning: dense DQN and EauDeDQN well above the random policy on Breakout ---------------------------------------
LEARN = [
    "--env-id", BREAKOUT, "--total-timesteps", "20000", "--network-size", "small", "--learning-starts", "1000",
    "--buffer-size", "20000", "--batch-size", "32", "--train-frequency", "4", "--target-network-frequency", "500",
    "--exploration-steps", "5000", "--save-model", "--eval-episodes", "10", "--seed", "1", "--checkpoint-interval", "0",
]  # fmt: skip


def random_policy_return(episodes: int = 200) -> float:
    envs = MODULES["eaudedqn_jax"].make_env(BREAKOUT, 8, seed=123)
    envs.reset()
    rng, returns, current = np.random.default_rng(0), [], np.zeros(8)
    while len(returns) < episodes:
        _, reward, terminated, truncated, _ = envs.step(rng.integers(3, size=8))
        current += reward
        for env in np.flatnonzero(terminated | truncated):
            returns.append(current[env])
            current[env] = 0.0
    return float(np.mean(returns))


@pytest.mark.slow
def test_dqn_and_eaudedqn_learn_breakout_and_eaudedqn_prunes_torso_and_head(tmp_path: Path) -> None:
    """20k steps each, the two in parallel. U_max 30 and S_max 0.1 let EauDeDQN's 39 population steps reach a sparsity
    at which ERK prunes the convolution too (below about 0.3 it keeps the small torso dense)."""
    runs = {
        "dense DQN": ["polyprune_dqn_jax.py", "--final-sparsity", "0"],
        "EauDeDQN": ["eaudedqn_jax.py", "--u-max", "30", "--s-max", "0.1"],
    }
    procs = {
        name: subprocess.Popen(
            [sys.executable, str(ROOT / script), *LEARN, *extra, "--output-dir", str(tmp_path / str(i))],
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i, (name, (script, *extra)) in enumerate(runs.items())
    }
    random_return = random_policy_return()
    results = {}
    for i, (name, proc) in enumerate(procs.items()):
        out, err = proc.communicate(timeout=900)
        assert proc.returncode == 0, out[-3000:] + err[-3000:]
        (run_dir,) = (tmp_path / str(i)).iterdir()
        metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
        results[name] = (np.mean([m["value"] for m in metrics if m["name"] == "eval/episodic_return"]), run_dir)
    report = f"random policy {random_return:.2f}; " + "; ".join(f"{n}: {r:.2f}" for n, (r, _) in results.items())
    print(f"\n{BREAKOUT}, 20k steps, small, seed 1, mean of 10 greedy episodes: {report}")
    for mean_return, _ in results.values():
        assert mean_return >= max(1.0, 3 * random_return), report
    _, eaude_dir = results["EauDeDQN"]
    network = MODULES["eaudedqn_jax"].QNetwork(action_dim=3, hidden_width=32)
    template = network.init(jax.random.PRNGKey(0), np.zeros((1, 10, 10, 4), np.float32))
    target = flax.serialization.from_bytes(template, (eaude_dir / "eaudedqn_jax.cleanrl_model").read_bytes())
    zeros = {name: float(np.mean(np.asarray(layer["kernel"]) == 0)) for name, layer in target["params"].items()}
    assert zeros["Conv_0"] > 0.05 and zeros["Dense_0"] > 0.2, zeros  # the torso and the head are pruned
