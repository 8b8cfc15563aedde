"""Evaluate the saved model of a run folder with the evaluation protocol of the script that trained it.

    uv run python tools/evaluate.py RUN_DIR [--episodes N] [--epsilon E] [--capture-video] [--seed S]

RUN_DIR is a folder written by one of the scripts with `--save-model`: it holds `config.json` and
`<exp_name>.cleanrl_model`. The tool imports the script named in config.json, rebuilds its network from the saved
arguments (env, network size), checks that the model file holds exactly that network, and plays the episodes with the
script's own evaluation function, so the protocol is the script's:

* online Atari (eaudedqn_atari_jax, polyprune_dqn_atari_jax): episodes one after the other on one envpool env,
  epsilon-greedy (default: the run's `--eval-epsilon`, 0.001);
* offline Atari (eaudecql_atari_jax, polyprune_cql_atari_jax): one episode per env, played in parallel, truncated at the
  run's `--eval-max-episode-steps`;
* classic control and MinAtar (eaudedqn_jax, polyprune_dqn_jax): as online Atari, greedy by default;
* MuJoCo SAC (eaudesac_mujoco_jax, polyprune_sac_mujoco_jax): the deterministic policy tanh(mean), one episode per env.

By default it plays the run's `--eval-episodes` with the run's seed: the returns are then those the run logged as
`eval/episodic_return`. It prints each return and their mean. `--capture-video` writes one mp4 per episode to
`videos/<run_name>/` (relative to the working directory, as the scripts do). Atari videos are the colour screen at the
game's own 210 x 160 resolution rendered by ale-py through gymnasium's ALE env, stepped in lockstep with the envpool
env the agent plays (docs/evaluate.md explains why the two agree frame for frame); classic control is rendered by
envpool, MinAtar by the minatar package (its colours, a cell 16 x 16 pixels), MuJoCo by gymnasium's v5 twin of the
task (MuJoCo's renderer), as the scripts do.

A user mistake (no such folder, no config.json, no model, a model of another network size, an env this install does
not have, an out-of-range option) is one `error: ...` line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import math
import sys
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

# script -> how its saved model is evaluated (see the module docstring)
SCRIPTS = {
    "eaudedqn_atari_jax.py": "atari",
    "polyprune_dqn_atari_jax.py": "atari",
    "eaudecql_atari_jax.py": "atari-offline",
    "polyprune_cql_atari_jax.py": "atari-offline",
    "eaudedqn_jax.py": "classic",
    "polyprune_dqn_jax.py": "classic",
    "eaudesac_mujoco_jax.py": "mujoco",
    "polyprune_sac_mujoco_jax.py": "mujoco",
}
NETWORK_SIZES = ("small", "medium", "large")


class UsageError(Exception):
    """A user mistake: reported as one `error:` line and exit code 2."""


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(message)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = Parser(prog="tools/evaluate.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", metavar="RUN_DIR", type=Path, help="a run folder with config.json and a model")
    parser.add_argument("--episodes", type=int, help="episodes to play (default: the run's --eval-episodes)")
    parser.add_argument("--epsilon", type=float, help="epsilon of the epsilon-greedy policy (default: the run's)")
    parser.add_argument("--capture-video", action="store_true", help="write videos/<run_name>/eval-episode-<i>.mp4")
    parser.add_argument("--seed", type=int, help="evaluation seed (default: the run's seed)")
    args = parser.parse_args(argv)
    if args.episodes is not None and args.episodes < 1:
        raise UsageError(f"--episodes: must be at least 1, got {args.episodes}")
    if args.epsilon is not None and not 0.0 <= args.epsilon <= 1.0:
        raise UsageError(f"--epsilon: must be in [0, 1], got {args.epsilon}")
    if args.seed is not None and not 0 <= args.seed < 2**32:
        raise UsageError(f"--seed: must be in [0, 2**32), got {args.seed}")  # numpy's SeedSequence range
    return args


# =====================================================================================================================
# The run folder: config.json, the script, the model file
# =====================================================================================================================


def read_config(run_dir: Path) -> dict[str, Any]:
    if not run_dir.is_dir():
        raise UsageError(f"RUN_DIR: {str(run_dir)!r} is not a folder")
    path = run_dir / "config.json"
    try:
        config = json.loads(path.read_text())
    except FileNotFoundError:
        raise UsageError(f"RUN_DIR: {str(run_dir)!r} has no config.json (not a run folder)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise UsageError(f"RUN_DIR: cannot read {path} ({error})") from None
    if not isinstance(config, dict) or not isinstance(config.get("args"), dict):
        raise UsageError(f'RUN_DIR: {path} has no "args" (not written by one of the scripts)')
    script = config.get("script")
    if not isinstance(script, str) or script not in SCRIPTS:
        raise UsageError(f"RUN_DIR: {path} names the script {script!r}; this tool evaluates {', '.join(SCRIPTS)}")
    missing = [key for key in ("exp_name", "env_id", "seed", "network_size") if key not in config["args"]]
    if missing:
        raise UsageError(f"RUN_DIR: {path} lacks the argument(s) {', '.join(missing)}")
    return config


def model_path(run_dir: Path, config: dict[str, Any]) -> Path:
    path = run_dir / f"{config['args']['exp_name']}.cleanrl_model"
    if not path.is_file():
        raise UsageError(
            f"RUN_DIR: no model in {str(run_dir)!r}: {path.name} is missing (a run saves it only with --save-model,"
            " when it finishes)"
        )
    return path


def check_env(env_id: str, kind: str) -> Any:
    """The envpool spec of the run's env (MinAtar's: the gymnasium env, whose spaces the spec's are), or a clean error
    when this install does not have it."""
    import envpool

    if env_id.startswith("MinAtar/"):
        try:
            import gymnasium
            from minatar.gym import register_envs
        except ImportError:
            raise UsageError(f"config.json: env {env_id!r} needs the minatar package (uv sync installs it)") from None
        if env_id not in gymnasium.registry:
            register_envs()
        try:
            return gymnasium.make(env_id, disable_env_checker=True)
        except gymnasium.error.Error:
            raise UsageError(f"config.json: env {env_id!r} is not a MinAtar game") from None

    try:
        return envpool.make_spec(env_id, **({"full_action_space": False} if kind.startswith("atari") else {}))
    except KeyError:
        raise UsageError(
            f"config.json: env {env_id!r} is not available (envpool {envpool.__version__} has no such env)"
        ) from None
    except (ValueError, RuntimeError) as error:
        raise UsageError(f"config.json: env {env_id!r} is not available on this install ({error})") from None


def import_script(script: str) -> Any:
    """The script named in config.json, imported from the repository root (its functions are the protocol)."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    return importlib.import_module(script.removesuffix(".py"))


# =====================================================================================================================
# The network of config.json, and the check that the model file holds exactly that network
# =====================================================================================================================


def model_template(module: Any, kind: str, spec: Any, network_size: str, env_id: str) -> Any:
    """The shapes of the params pytree the script saves with --save-model, for this env and network size (built as
    the script builds its network; jax.eval_shape computes no weights)."""
    import jax

    key = jax.random.PRNGKey(0)
    if kind.startswith("atari"):
        network = module.QNetwork(action_dim=spec.action_space.n, head_width=module.HEAD_WIDTHS[network_size])
        return jax.eval_shape(network.init, key, np.zeros((1, 4, 84, 84), np.uint8))
    if kind == "classic":
        network = module.QNetwork(
            action_dim=spec.action_space.n, hidden_width=module.network_width(env_id, network_size)
        )
        return jax.eval_shape(network.init, key, np.zeros((1, *spec.observation_space.shape), np.float32))
    obs = np.zeros((1, spec.observation_space.shape[0]), np.float32)
    action = np.zeros((1, spec.action_space.shape[0]), np.float32)
    critic = jax.eval_shape(module.Critic(width=module.CRITIC_WIDTHS[network_size]).init, key, obs, action)
    actor = jax.eval_shape(module.Actor(action_dim=action.shape[1]).init, key, obs)
    return {"actor": actor, "critics": [critic, critic]}


def flat_shapes(tree: Any, prefix: str = "") -> dict[str, tuple[int, ...]]:
    """'params/Dense_0/kernel' -> shape, for a flax state dict."""
    if isinstance(tree, dict):
        shapes: dict[str, tuple[int, ...]] = {}
        for name, value in tree.items():
            shapes.update(flat_shapes(value, f"{prefix}{name}/"))
        return shapes
    return {prefix.rstrip("/"): tuple(np.shape(tree))}


def first_difference(saved: dict[str, tuple[int, ...]], expected: dict[str, tuple[int, ...]]) -> str | None:
    for name in sorted(expected, key=lambda name: (not name.endswith("kernel"), name)):  # kernels show the widths
        if name not in saved:
            return f"it has no {name}"
        if saved[name] != expected[name]:
            return f"{name} has shape {saved[name]}, expected {expected[name]}"
    extra = sorted(set(saved) - set(expected))
    return f"it has an extra {extra[0]}" if extra else None


def load_model(module: Any, kind: str, spec: Any, config: dict[str, Any], path: Path) -> Any:
    """The saved params, after checking that they are the network config.json describes."""
    import flax

    try:
        saved = flax.serialization.msgpack_restore(path.read_bytes())
    except Exception as error:  # msgpack raises several unrelated types for a damaged file
        raise UsageError(f"model: {path} is not a saved model ({type(error).__name__}: {error})") from None
    size = config["args"]["network_size"]
    if size not in NETWORK_SIZES:
        raise UsageError(f"RUN_DIR: config.json has network_size {size!r}; the scripts have {', '.join(NETWORK_SIZES)}")
    template = model_template(module, kind, spec, size, config["args"]["env_id"])
    saved_shapes = flat_shapes(saved)
    difference = first_difference(saved_shapes, flat_shapes(flax.serialization.to_state_dict(template)))
    if difference is None:
        return flax.serialization.from_state_dict(template, saved)
    others = [
        other
        for other in NETWORK_SIZES
        if other != size
        and first_difference(
            saved_shapes,
            flat_shapes(
                flax.serialization.to_state_dict(model_template(module, kind, spec, other, config["args"]["env_id"]))
            ),
        )
        is None
    ]
    what = f"the {others[0]!r} network" if others else "another network"
    raise UsageError(
        f"model: {path.name} holds {what}, not the {size!r} network of {config['args']['env_id']} that config.json"
        f" describes ({difference})"
    )


# =====================================================================================================================
# Atari videos: ale-py's colour screen, stepped in lockstep with the envpool env the agent plays
# =====================================================================================================================


class AleTwin:
    """An envpool Atari env whose `render()` shows the screen of a gymnasium ALE env (ale-py) that replays every
    action the agent sends to envpool, frame for frame.

    The agent keeps playing envpool (its 84 x 84 observations are the script's protocol); ale-py only draws. The twin
    of env i gets the ALE `random_seed` envpool gives env i (base seed + i), the same sticky-action probability, the
    same frame skip (stopping at game over), and the single NOOP frame that envpool's `noop_max=1` plays after every
    reset. Under these settings the two emulators agree on every frame, sticky actions included
    (tests/test_atari_protocol.py, docs/evaluate.md); each step's raw reward and game over are still compared, and a
    disagreement is reported once per episode."""

    def __init__(self, envs: Any, env_id: str) -> None:
        import ale_py
        import gymnasium as gym

        config = envs.config
        unsupported = {
            "noop_max": config["noop_max"] != 1,  # envpool draws other NOOP counts from its own generator
            "use_fire_reset": config["use_fire_reset"],
            "episodic_life": config["episodic_life"],
        }
        if any(unsupported.values()):
            names = ", ".join(name for name, bad in unsupported.items() if bad)
            raise UsageError(f"--capture-video: ale-py cannot follow an envpool env with these settings: {names}")
        gym.register_envs(ale_py)
        ale_py.ALEInterface.setLoggerMode(ale_py.LoggerMode.Error)  # no version banner per env
        self.envs = envs
        self.frame_skip = config["frame_skip"]
        self.twins = []
        for i in range(config["num_envs"]):
            twin = gym.make(
                ale_id(env_id),
                frameskip=1,  # the frame skip is done here, to stop at game over as envpool does
                repeat_action_probability=config["repeat_action_probability"],
                full_action_space=False,  # the minimal action set, in the order envpool numbers it
                obs_type="ram",  # observations are not used: the cheapest kind
                render_mode="rgb_array",
                max_num_frames_per_episode=None,  # envpool's own time limit ends episodes
                disable_env_checker=True,
            )
            twin.unwrapped.ale.setInt("random_seed", int(config["seed"]) + i)  # envpool seeds env i with seed + i
            twin.unwrapped.load_game()  # the seed takes effect when the ROM is loaded
            self.twins.append(twin)
        self.autoreset = np.zeros(len(self.twins), dtype=bool)
        self.steps = np.zeros(len(self.twins), dtype=np.int64)
        self.diverged = np.zeros(len(self.twins), dtype=bool)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.envs, name)

    def reset_twin(self, i: int) -> None:
        self.twins[i].reset()  # no seed: the ALE random stream goes on across episodes, as in envpool
        self.twins[i].step(0)  # envpool's noop_max=1 plays one NOOP frame after every reset
        self.autoreset[i], self.steps[i], self.diverged[i] = False, 0, False

    def reset(self, **kwargs: Any) -> Any:
        result = self.envs.reset(**kwargs)
        for i in range(len(self.twins)):
            self.reset_twin(i)
        return result

    def step(self, actions: np.ndarray) -> Any:
        obs, reward, terminated, truncated, info = self.envs.step(actions)
        for row, i in enumerate(np.asarray(info["env_id"])):
            if self.autoreset[i]:  # envpool's autoreset step ignores the action and resets
                self.reset_twin(i)
                continue
            raw, game_over = 0.0, False
            for _ in range(self.frame_skip):
                _, frame_reward, game_over, _, _ = self.twins[i].step(int(actions[i]))
                raw += frame_reward
                if game_over:
                    break
            self.steps[i] += 1
            if (raw != info["reward"][row] or game_over != terminated[row]) and not self.diverged[i]:
                self.diverged[i] = True
                print(
                    f"warning: the ale-py video of env {i} left the played episode at step {self.steps[i]} (reward"
                    f" {raw} vs {info['reward'][row]}, game over {game_over} vs {terminated[row]}); its video may"
                    " not show what the agent played",
                    file=sys.stderr,
                    flush=True,
                )
            self.autoreset[i] = terminated[row] or truncated[row]
        return obs, reward, terminated, truncated, info

    def render(self, env_ids: Sequence[int] | None = None) -> np.ndarray:
        """(len(env_ids), 210, 160, 3) uint8 colour screens, env 0 when None (as envpool's render)."""
        return np.stack([self.twins[i].render() for i in ([0] if env_ids is None else env_ids)])

    def close(self) -> None:
        self.envs.close()
        for twin in self.twins:
            twin.close()


def ale_id(env_id: str) -> str:
    """envpool's 'Pong-v5' is ale-py's 'ALE/Pong-v5' (same game, same ROM)."""
    return f"ALE/{env_id}"


@contextlib.contextmanager
def rendered_by_ale_py(module: Any) -> Iterator[None]:
    """Within this block the script's `make_env` hands its evaluation an `AleTwin` whenever it asks for rendering:
    the script's own evaluation function (the protocol) then writes ale-py's colour frames to its videos."""
    make_env = module.make_env

    def make_env_with_twin(env_id: str, num_envs: int, seed: int, render: bool = False, **kwargs: Any) -> Any:
        envs = make_env(env_id, num_envs, seed, render=False, **kwargs)
        return AleTwin(envs, env_id) if render else envs

    module.make_env = make_env_with_twin
    try:
        yield
    finally:
        module.make_env = make_env


# =====================================================================================================================
# Video pre-flight checks: fail before the episodes are played, not after
# =====================================================================================================================


def check_video(kind: str, env_id: str) -> None:
    import imageio_ffmpeg

    try:
        with warnings.catch_warnings():  # it runs `ffmpeg -version` through fork; JAX warns about any fork
            warnings.filterwarnings("ignore", message="os.fork", category=RuntimeWarning)
            imageio_ffmpeg.get_ffmpeg_exe()
    except RuntimeError as error:
        raise UsageError(f"--capture-video: no ffmpeg to write mp4 files ({error})") from None
    if kind.startswith("atari"):
        import ale_py
        import gymnasium as gym

        gym.register_envs(ale_py)
        if ale_id(env_id) not in gym.registry:
            raise UsageError(f"--capture-video: ale-py {ale_py.__version__} has no game {ale_id(env_id)!r} to render")
    elif kind == "mujoco":
        import gymnasium as gym
        import mujoco  # after the script's import, which chooses the headless renderer (MUJOCO_GL)

        try:
            env = gym.make(env_id, render_mode="rgb_array")
            env.reset(seed=0)
            env.render()
            env.close()
        except Exception as error:  # no gymnasium twin of the id, or no OpenGL context
            raise UsageError(
                f"--capture-video: gymnasium with MuJoCo {mujoco.__version__} cannot render {env_id!r} here"
                f" ({type(error).__name__}: {error})"
            ) from None


# =====================================================================================================================
# Evaluation
# =====================================================================================================================


def evaluate_run(
    run_dir: Path,
    episodes: int | None = None,
    epsilon: float | None = None,
    capture_video: bool = False,
    seed: int | None = None,
) -> list[float]:
    """The returns of the run's saved model, played with the protocol of the script that trained it."""
    config = read_config(run_dir)
    saved = config["args"]
    kind = SCRIPTS[config["script"]]
    path = model_path(run_dir, config)
    if kind == "mujoco" and epsilon is not None:
        raise UsageError("--epsilon: the SAC scripts evaluate the deterministic policy tanh(mean); it has no epsilon")
    episodes = episodes or saved.get("eval_episodes") or 10  # a run saved with --eval-episodes 0 has a model too
    epsilon = saved.get("eval_epsilon", 0.0) if epsilon is None else epsilon
    seed = int(saved["seed"]) if seed is None else seed
    spec = check_env(saved["env_id"], kind)
    module = import_script(config["script"])
    if capture_video:
        check_video(kind, saved["env_id"])
    params = load_model(module, kind, spec, config, path)
    video_dir = Path("videos") / run_dir.resolve().name if capture_video else None
    policy = "deterministic policy" if kind == "mujoco" else f"epsilon {epsilon}"
    print(f"{run_dir.resolve().name}: {config['script']}, {episodes} episodes, {policy}, seed {seed}", flush=True)

    if kind == "mujoco":
        act = module.make_deterministic_act(module.Actor(action_dim=spec.action_space.shape[0]))
        returns = module.evaluate_policy(act, params["actor"], saved["env_id"], episodes, seed)
        if video_dir is not None:
            module.record_videos(act, params["actor"], saved["env_id"], episodes, seed, video_dir)
    else:
        extra = {"max_episode_steps": saved.get("eval_max_episode_steps", 27_000)} if kind == "atari-offline" else {}
        renderer = rendered_by_ale_py(module) if kind.startswith("atari") else contextlib.nullcontext()
        with renderer:
            returns = module.evaluate(
                path, saved["env_id"], episodes, seed, epsilon, saved["network_size"], video_dir, **extra
            )
    returns = [float(value) for value in returns]
    print("returns: " + " ".join(f"{value:.1f}" for value in returns), flush=True)
    mean = sum(returns) / len(returns) if returns else math.nan
    print(f"mean return: {mean:.2f} over {len(returns)} episodes", flush=True)
    if video_dir is not None:
        print(f"videos: {video_dir}/", flush=True)
    return returns


def main(argv: Sequence[str] | None = None) -> list[float]:
    try:
        args = parse_args(argv)
        return evaluate_run(args.run_dir, args.episodes, args.epsilon, args.capture_video, args.seed)
    except UsageError as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        raise SystemExit(130) from None
