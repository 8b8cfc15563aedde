"""tools/evaluate.py: the saved model of a run folder, played with the protocol of the script that trained it."""

import importlib
import importlib.util
import json
import subprocess
import sys
import warnings
from pathlib import Path

import evaluate
import flax
import imageio.v2 as imageio
import jax
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]

DEFAULT_ENV = {"atari": "Breakout-v5", "atari-offline": "Pong-v5", "classic": "CartPole-v1", "mujoco": "Hopper-v5"}


def saved_params(module, kind: str, env_id: str, size: str):
    """What a run saves with --save-model (its values are random here: only the protocol is under test)."""
    import envpool

    key = jax.random.PRNGKey(1)
    if kind.startswith("atari"):
        spec = envpool.make_spec(env_id, full_action_space=False)
        network = module.QNetwork(action_dim=spec.action_space.n, head_width=module.HEAD_WIDTHS[size])
        return network.init(key, np.zeros((1, 4, 84, 84), np.uint8))
    spec = envpool.make_spec(env_id)
    if kind == "classic":
        network = module.QNetwork(action_dim=spec.action_space.n, hidden_width=module.HIDDEN_WIDTHS[size])
        return network.init(key, np.zeros((1, *spec.observation_space.shape), np.float32))
    obs = np.zeros((1, spec.observation_space.shape[0]), np.float32)
    action = np.zeros((1, spec.action_space.shape[0]), np.float32)
    critics = [module.Critic(width=module.CRITIC_WIDTHS[size]).init(k, obs, action) for k in jax.random.split(key)]
    return {"actor": module.Actor(action_dim=action.shape[1]).init(key, obs), "critics": critics}


def make_run(tmp_path: Path, script: str, model_size: str | None = None, model_env: str | None = None, **args) -> Path:
    """A run folder as the script writes it with --save-model: config.json from its own run_config, and the model."""
    module = importlib.import_module(script)
    kind = evaluate.SCRIPTS[f"{script}.py"]
    config_args = module.Args(**{"env_id": DEFAULT_ENV[kind], "network_size": "small", **args})
    run_dir = tmp_path / "runs" / f"{config_args.env_id}__{config_args.exp_name}__{config_args.seed}__1700000000"
    run_dir.mkdir(parents=True)
    (run_dir / "config.json").write_text(json.dumps(module.run_config(config_args), indent=2))
    params = saved_params(module, kind, model_env or config_args.env_id, model_size or config_args.network_size)
    (run_dir / f"{config_args.exp_name}.cleanrl_model").write_bytes(flax.serialization.to_bytes(params))
    return run_dir


def fails(capsys, *argv: str) -> str:
    """The one stderr line of a user mistake (exit code 2)."""
    with pytest.raises(SystemExit) as stop:
        evaluate.main([str(arg) for arg in argv])
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


def read_video(path: Path) -> list[np.ndarray]:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="os.fork", category=RuntimeWarning)  # ffmpeg runs through fork
        reader = imageio.get_reader(path, format="FFMPEG")
        frames = [frame for frame in reader]  # list(reader) would trust its length, which ffmpeg reports as inf
        reader.close()
    return frames


# =====================================================================================================================
# User mistakes: one error line, exit code 2
# =====================================================================================================================


def test_a_folder_that_is_no_run(tmp_path: Path, capsys) -> None:
    assert "is not a folder" in fails(capsys, tmp_path / "nowhere")
    assert "has no config.json" in fails(capsys, tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    assert "cannot read" in fails(capsys, tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"args": {}, "script": "dqn.py"}))
    assert "names the script 'dqn.py'" in fails(capsys, tmp_path)


def test_a_folder_without_a_model(tmp_path: Path, capsys) -> None:
    run_dir = make_run(tmp_path, "eaudedqn_jax")
    (run_dir / "eaudedqn_jax.cleanrl_model").unlink()
    message = fails(capsys, run_dir)
    assert "no model" in message and "eaudedqn_jax.cleanrl_model is missing" in message and "--save-model" in message


def test_a_model_of_another_size_is_named(tmp_path: Path, capsys) -> None:
    run_dir = make_run(tmp_path, "eaudedqn_jax", network_size="medium", model_size="large")
    message = fails(capsys, run_dir)
    assert "holds the 'large' network, not the 'medium' network of CartPole-v1" in message
    assert "params/Dense_0/kernel has shape (4, 1024), expected (4, 256)" in message


def test_a_sac_model_of_another_critic_size_is_named(tmp_path: Path, capsys) -> None:
    run_dir = make_run(tmp_path, "polyprune_sac_mujoco_jax", network_size="medium", model_size="small")
    message = fails(capsys, run_dir)
    assert "holds the 'small' network, not the 'medium'" in message and "critics/0/params/Dense_0/kernel" in message


def test_a_model_of_another_env_and_a_damaged_model(tmp_path: Path, capsys) -> None:
    run_dir = make_run(tmp_path, "polyprune_dqn_jax", env_id="Acrobot-v1", model_env="CartPole-v1")
    assert "holds another network, not the 'small' network of Acrobot-v1" in fails(capsys, run_dir)
    model = run_dir / "polyprune_dqn_jax.cleanrl_model"
    model.write_bytes(model.read_bytes()[:200])
    assert "is not a saved model" in fails(capsys, run_dir)


def test_a_missing_env(tmp_path: Path, capsys) -> None:
    run_dir = make_run(tmp_path, "eaudedqn_atari_jax")
    config = json.loads((run_dir / "config.json").read_text())
    config["args"]["env_id"] = "Zork-v5"
    (run_dir / "config.json").write_text(json.dumps(config))
    assert "env 'Zork-v5' is not available" in fails(capsys, run_dir)


def test_option_mistakes(tmp_path: Path, capsys) -> None:
    run_dir = make_run(tmp_path, "eaudedqn_jax")
    assert "--episodes" in fails(capsys, run_dir, "--episodes", "0")
    assert "--episodes" in fails(capsys, run_dir, "--episodes", "two")
    assert "--epsilon" in fails(capsys, run_dir, "--epsilon", "1.5")
    assert "--seed" in fails(capsys, run_dir, "--seed", "-1")
    assert "--speed" in fails(capsys, run_dir, "--speed", "2")
    assert "RUN_DIR" in fails(capsys)
    sac_dir = make_run(tmp_path / "sac", "eaudesac_mujoco_jax")
    assert "--epsilon: the SAC scripts evaluate the deterministic policy" in fails(capsys, sac_dir, "--epsilon", "0")


def test_the_command_line_prints_one_line_and_creates_nothing(tmp_path: Path) -> None:
    run_dir = make_run(tmp_path, "eaudedqn_jax", network_size="large", model_size="small")
    result = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "evaluate.py"), str(run_dir), "--capture-video"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [result.stderr.strip()] and result.stderr.startswith("error: model:")
    assert not (tmp_path / "videos").exists()


# =====================================================================================================================
# Atari: the agent plays envpool, ale-py draws the colour video of exactly that episode
# =====================================================================================================================


@pytest.mark.parametrize(
    ("script", "run_args", "flags"),
    [
        ("eaudedqn_atari_jax", {}, ["--episodes", "2", "--epsilon", "1"]),  # random play ends Breakout in ~200 steps
        ("polyprune_cql_atari_jax", {"eval_max_episode_steps": 40, "eval_episodes": 2, "seed": 3}, []),  # truncated
    ],
)
def test_atari_videos_are_ale_py_colour_frames_of_the_played_episodes(
    tmp_path: Path, monkeypatch, capsys, script: str, run_args: dict, flags: list[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    run_dir = make_run(tmp_path, script, **run_args)
    module = importlib.import_module(script)
    args = json.loads((run_dir / "config.json").read_text())["args"]
    episodes = 2
    epsilon = float(flags[flags.index("--epsilon") + 1]) if "--epsilon" in flags else args["eval_epsilon"]
    extra = {"max_episode_steps": args["eval_max_episode_steps"]} if "eval_max_episode_steps" in args else {}
    # the script's own evaluation, with envpool's renderer: the episodes and frames the video must show
    expected = module.evaluate(
        run_dir / f"{args['exp_name']}.cleanrl_model", args["env_id"], episodes, args["seed"], epsilon,
        args["network_size"], tmp_path / "envpool-videos", **extra,
    )  # fmt: skip
    capsys.readouterr()

    returns = evaluate.main([str(run_dir), *flags, "--capture-video"])
    out, err = capsys.readouterr()
    assert returns == expected
    assert f"returns: {' '.join(f'{value:.1f}' for value in expected)}" in out
    assert f"mean return: {np.mean(expected):.2f} over 2 episodes" in out
    assert "warning" not in err
    videos = sorted((tmp_path / "videos" / run_dir.name).glob("*.mp4"))
    assert [video.name for video in videos] == ["eval-episode-0.mp4", "eval-episode-1.mp4"]
    for video in videos:
        frames = read_video(video)
        assert frames[0].shape == (210, 160, 3)  # the game's own resolution
        assert np.abs(frames[-1].astype(int) - frames[-1][..., ::-1]).max() > 50  # colour, not greyscale
        if extra:
            assert len(frames) == 40  # one frame per agent step until the truncation
        # ale-py's frames are envpool's screens exactly: the same input gives ffmpeg's identical output
        assert video.read_bytes() == (tmp_path / "envpool-videos" / video.name).read_bytes()


def test_the_ale_py_twin_reports_a_divergence(capsys) -> None:
    module = importlib.import_module("eaudedqn_atari_jax")
    actions = np.random.default_rng(0).integers(4, size=300)

    def play(sabotage: bool) -> str:
        twin = evaluate.AleTwin(module.make_env("Breakout-v5", 1, 99), "Breakout-v5")
        if sabotage:  # another ALE seed: the sticky repeats differ
            twin.twins[0].unwrapped.ale.setInt("random_seed", 100)
            twin.twins[0].unwrapped.load_game()
        twin.reset()
        for action in actions:
            twin.step(np.array([action]))
        assert twin.render().shape == (1, 210, 160, 3)
        twin.close()
        return capsys.readouterr().err

    assert play(sabotage=False) == ""
    assert "warning: the ale-py video of env 0 left the played episode at step" in play(sabotage=True)


# =====================================================================================================================
# Real runs: evaluate.py reproduces the evaluation the run logged
# =====================================================================================================================


@pytest.mark.slow
@pytest.mark.parametrize(
    ("script", "argv"),
    [
        (
            "eaudedqn_jax.py",
            ["--total-timesteps", "1200", "--learning-starts", "500", "--target-network-frequency", "250",
             "--network-size", "small", "--eval-epsilon", "0.3"],
        ),
        (
            "eaudesac_mujoco_jax.py",
            ["--env-id", "Hopper-v5", "--total-timesteps", "60", "--learning-starts", "20", "--batch-size", "32",
             "--buffer-size", "1000", "--eval-frequency", "0"],
        ),
    ],
)  # fmt: skip
def test_evaluate_reproduces_the_runs_own_evaluation(tmp_path: Path, monkeypatch, capsys, script: str, argv) -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / script), *argv, "--save-model", "--eval-episodes", "3", "--checkpoint-interval",
         "0", "--output-dir", str(tmp_path / "runs")],
        cwd=tmp_path, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    (run_dir,) = (tmp_path / "runs").iterdir()
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    logged = [m["value"] for m in metrics if m["name"] == "eval/episodic_return"]
    assert len(logged) == 3

    monkeypatch.chdir(tmp_path)
    assert evaluate.main([str(run_dir)]) == logged  # the run's episodes, epsilon and seed by default
    # fewer episodes are the first ones (SAC plays one env per episode: another batch size rounds differently)
    assert evaluate.main([str(run_dir), "--episodes", "2"]) == pytest.approx(logged[:2], rel=1e-6)
    assert evaluate.main([str(run_dir), "--seed", "2"]) != pytest.approx(logged, rel=1e-3)
    assert evaluate.main([str(run_dir), "--episodes", "1", "--capture-video"]) == pytest.approx(logged[:1], rel=1e-6)
    (video,) = (tmp_path / "videos" / run_dir.name).glob("*.mp4")
    assert read_video(video)[0].shape == ((400, 600, 3) if script == "eaudedqn_jax.py" else (480, 480, 3))
    assert "Traceback" not in capsys.readouterr().err
