"""Record an offline Atari dataset in the DQN Replay Dataset layout (Agarwal et al. 2020) with envpool.

    uv run python tools/write_dqn_replay_dataset.py --env-id Pong-v5 --output-dir datasets/Pong/1 \
        --num-checkpoints 2 --transitions-per-checkpoint 1000

writes `<output-dir>/replay_logs/` the way Dopamine's `OutOfGraphReplayBuffer.save` does: for every checkpoint N,
`$store$_observation_ckpt.N.gz` ((P, 84, 84) uint8 single frames), `$store$_action_ckpt.N.gz` (int32),
`$store$_reward_ckpt.N.gz` (float32, clipped to [-1, 1]), `$store$_terminal_ckpt.N.gz` (uint8, 1 = game over),
`add_count_ckpt.N.gz` (int64 scalar: entries added so far) and `invalid_range_ckpt.N.gz` (int64 indices around the
write cursor), each one gzip stream holding one `np.save` array; plus `<output-dir>/dataset_info.json` (arguments and
episode returns). Pass `<output-dir>` (or its replay_logs folder) to the CQL scripts as `--dataset-dir`.

Protocol (Machado et al. 2018, as the DQN Replay Dataset): sticky actions 0.25, minimal action set, episode ends at game
over, no fire reset, `noop_max=1` (one no-op frame after reset: envpool cannot do zero, see notes), frame skip 4 with
max-pool, grayscale 84x84, at most `--max-episode-steps` (27 000) agent steps. Entry i is (frame o_i, action a_i,
clip(r_i), terminal_i); the next frame is entry i + 1. As in Dopamine, three all-zero padding entries (action 0,
reward 0, terminal 0) precede the first step of every episode, so the rebuilt stack at an episode start is
[0, 0, 0, o_0]; the final frame of a game-over episode is not stored (the terminal transition needs none). Checkpoint
N holds entries [N * P, (N + 1) * P) of the whole stream, P = `--transitions-per-checkpoint`: a Dopamine buffer of
capacity P saved when it is exactly full (write cursor 0), so checkpoints are consecutive and do not overlap. Episodes
run across checkpoint boundaries. envpool's NEXT_STEP autoreset step (the step after an episode ends returns the
reset frame and ignores the action) is never stored.

Time-limit truncation (`--truncation`; the layout has no truncation flag):
* `bootstrap` (default): the last step is stored with terminal=0, followed by one observation-only entry holding the
  true final frame with action -1, reward 0 and terminal=1. The last real transition therefore bootstraps from the
  true last observation (CleanRL issue 460), the terminal flag on the extra entry makes Dopamine insert its padding so
  the next episode's stacks start clean for every reader of the layout, and the negative action marks the entry as
  "not a transition": the EauDeQN loader excludes it, and Dopamine's own TF agents give it zero loss (one_hot(-1) is all
  zeros and the target is the zero reward).
* `terminal`: the last step is stored with terminal=1, exactly what the 2019 Dopamine runs that produced the public
  DQN Replay Dataset did (`agent.end_episode` stores terminal=True on a time-out), at the price of treating a time-out
  as game over.

`--policy random` acts uniformly at random; `--policy model` acts epsilon-greedily (`--epsilon`) with a Q-network read
from a `.cleanrl_model` file (flax.serialization bytes of the params of the Nature CNN with SAME padding and a
32/512/2048 head, chosen by `--network-size`).
"""

import gzip
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
import tyro

STACK_SIZE = 4  # Dopamine's stack size: padding entries per episode start = STACK_SIZE - 1
FRAME_SHAPE = (84, 84)
HIDDEN_SIZES = {"small": 32, "medium": 512, "large": 2048}
GZIP_LEVEL = 1  # any level gives the same layout; 1 is several times faster than Dopamine's 9


@dataclass
class Args:
    env_id: str = "Pong-v5"
    """envpool Atari id, e.g. Pong-v5"""
    output_dir: str | None = None
    """dataset folder; the files go to <output-dir>/replay_logs/ (default: datasets/<Game>/1)"""
    num_checkpoints: int = 1
    """number of checkpoint files N = 0 .. num_checkpoints - 1"""
    transitions_per_checkpoint: int = 50_000
    """entries per checkpoint (Dopamine's buffer capacity; the public dataset has 1 000 000)"""
    seed: int = 1
    """seed of the environment (sticky actions included) and of the policy's random choices"""
    policy: Literal["random", "model"] = "random"
    """behaviour policy: uniform random, or epsilon-greedy on the Q-network in --model-path"""
    model_path: str | None = None
    """a .cleanrl_model file (flax params of QNetwork) for --policy model"""
    epsilon: float = 0.01
    """probability of a uniform-random action with --policy model"""
    network_size: Literal["small", "medium", "large"] = "small"
    """head width of the saved Q-network: small 32, medium 512, large 2048"""
    max_episode_steps: int = 27_000
    """time limit in agent steps (27 000 = 108 000 frames, Machado et al.)"""
    truncation: Literal["bootstrap", "terminal"] = "bootstrap"
    """how a time-limit truncation is stored (see the module docstring)"""


class UsageError(Exception):
    """A user error: printed as one `error: ...` line, exit code 2."""


class DqnReplayWriter:
    """Appends entries as Dopamine's OutOfGraphReplayBuffer.add does and saves every full chunk as one checkpoint."""

    def __init__(self, folder: str, capacity: int, num_checkpoints: int) -> None:
        self.folder = folder
        self.capacity = capacity
        self.num_checkpoints = num_checkpoints
        self.observations = np.zeros((capacity, *FRAME_SHAPE), dtype=np.uint8)
        self.actions = np.zeros(capacity, dtype=np.int32)
        self.rewards = np.zeros(capacity, dtype=np.float32)
        self.terminals = np.zeros(capacity, dtype=np.uint8)
        self.add_count = 0  # entries added so far, padding included (Dopamine's add_count)
        self.checkpoint = 0  # number of the checkpoint being filled
        self.last_terminal = False

    @property
    def done(self) -> bool:
        return self.checkpoint >= self.num_checkpoints

    def add(self, frame: np.ndarray, action: int, reward: float, terminal: bool) -> int | None:
        """Adds one entry (after Dopamine's padding if an episode starts); its global index, or None when full."""
        if self.add_count == 0 or self.last_terminal:
            for _ in range(STACK_SIZE - 1):
                if self._put(None, 0, 0.0, False) is None:
                    return None
        return self._put(frame, action, reward, terminal)

    def _put(self, frame: np.ndarray | None, action: int, reward: float, terminal: bool) -> int | None:
        if self.done:
            return None
        i = self.add_count % self.capacity
        self.observations[i] = 0 if frame is None else frame
        self.actions[i] = action
        self.rewards[i] = reward
        self.terminals[i] = terminal
        self.add_count += 1
        self.last_terminal = terminal
        if self.add_count % self.capacity == 0:
            self._save()
            self.checkpoint += 1
        return self.add_count - 1

    def _save(self) -> None:
        cursor = self.add_count % self.capacity
        arrays = {
            "$store$_observation": self.observations,
            "$store$_action": self.actions,
            "$store$_reward": self.rewards,
            "$store$_terminal": self.terminals,
            "add_count": np.array(self.add_count, dtype=np.int64),
            # Dopamine's invalid_range(cursor, capacity, stack_size, update_horizon=1)
            "invalid_range": np.array([(cursor - 1 + k) % self.capacity for k in range(STACK_SIZE + 1)], np.int64),
        }
        for name, array in arrays.items():
            path = os.path.join(self.folder, f"{name}_ckpt.{self.checkpoint}.gz")
            tmp = os.path.join(self.folder, f".{name}_ckpt.{self.checkpoint}.gz.tmp")
            with open(tmp, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=GZIP_LEVEL) as f:
                np.save(f, array, allow_pickle=False)
            os.replace(tmp, path)  # a crash never leaves a half-written file under the final name


def game_of(env_id: str) -> str:
    """'Pong-v5' -> 'Pong'."""
    return env_id.split("/")[-1].split("-")[0].removesuffix("NoFrameskip")


def machado_kwargs(max_episode_steps: int) -> dict[str, Any]:
    """envpool options of the Machado et al. (2018) protocol used by the DQN Replay Dataset."""
    return dict(
        repeat_action_probability=0.25,
        full_action_space=False,
        episodic_life=False,
        use_fire_reset=False,
        noop_max=1,  # exactly one no-op frame; 0 crashes envpool 1.2.5
        max_episode_steps=max_episode_steps,
        reward_clip=False,  # clip here, keep the raw score in info["reward"] for the returns
        frame_skip=4,
        gray_scale=True,
        img_height=FRAME_SHAPE[0],
        img_width=FRAME_SHAPE[1],
        stack_num=STACK_SIZE,
    )


def check_args(args: Args) -> str:
    """Raises UsageError for bad arguments before any environment work; returns the replay_logs folder."""
    import envpool

    if args.env_id not in envpool.list_all_envs() or "frame_skip" not in envpool.make_spec(args.env_id).config._fields:
        raise UsageError(f"--env-id: {args.env_id} is not an envpool Atari id (e.g. Pong-v5)")
    if args.num_checkpoints < 1:
        raise UsageError(f"--num-checkpoints must be at least 1, got {args.num_checkpoints}")
    if args.transitions_per_checkpoint < STACK_SIZE:
        raise UsageError(
            f"--transitions-per-checkpoint must be at least {STACK_SIZE}, got {args.transitions_per_checkpoint}"
        )
    if not 0.0 <= args.epsilon <= 1.0:
        raise UsageError(f"--epsilon must lie in [0, 1], got {args.epsilon}")
    if args.max_episode_steps < 1:
        raise UsageError(f"--max-episode-steps must be at least 1, got {args.max_episode_steps}")
    if args.policy == "model" and (args.model_path is None or not os.path.isfile(args.model_path)):
        raise UsageError(f"--model-path: {args.model_path} is not a file (needed by --policy model)")
    output_dir = args.output_dir or os.path.join("datasets", game_of(args.env_id), "1")
    folder = os.path.join(output_dir, "replay_logs")
    if os.path.isdir(folder) and any(name.endswith(".gz") and "_ckpt." in name for name in os.listdir(folder)):
        raise UsageError(f"--output-dir: {folder} already holds checkpoint files; choose an empty folder")
    return folder


def make_model_policy(
    model_path: str, network_size: str, num_actions: int, epsilon: float, rng: np.random.Generator
) -> Callable[[np.ndarray], int]:
    """Epsilon-greedy policy of the saved Q-network; takes envpool's (1, 4, 84, 84) uint8 observation."""
    import flax.linen as nn
    import flax.serialization
    import jax
    import jax.numpy as jnp

    class QNetwork(nn.Module):
        """Nature CNN, Flax's default SAME padding (torso 11 x 11 x 64 = 7 744), head `hidden`."""

        action_dim: int
        hidden: int

        @nn.compact
        def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
            x = x.astype(jnp.float32) / 255.0  # uint8 NHWC
            x = nn.relu(nn.Conv(32, kernel_size=(8, 8), strides=(4, 4))(x))
            x = nn.relu(nn.Conv(64, kernel_size=(4, 4), strides=(2, 2))(x))
            x = nn.relu(nn.Conv(64, kernel_size=(3, 3), strides=(1, 1))(x))
            x = x.reshape((x.shape[0], -1))
            x = nn.relu(nn.Dense(self.hidden)(x))
            return nn.Dense(self.action_dim)(x)

    network = QNetwork(num_actions, HIDDEN_SIZES[network_size])
    template = network.init(jax.random.PRNGKey(0), np.zeros((1, *FRAME_SHAPE, STACK_SIZE), np.uint8))
    hint = f"not the params of a QNetwork with {num_actions} actions and --network-size {network_size}"
    try:
        with open(model_path, "rb") as f:
            state = flax.serialization.msgpack_restore(f.read())
        # CleanRL saves the whole variables dict {"params": ...}; accept the bare params too.
        target = template if "params" in state else template["params"]
        params = flax.serialization.from_state_dict(target, state)
        if "params" not in state:
            params = {"params": params}
    except Exception as err:
        raise UsageError(f"--model-path: {model_path}: {hint} ({type(err).__name__})") from err
    shapes = jax.tree_util.tree_map(np.shape, params)
    if shapes != jax.tree_util.tree_map(np.shape, template):
        raise UsageError(f"--model-path: {model_path}: {hint} (shapes differ)")
    q_values = jax.jit(network.apply)

    def act(obs: np.ndarray) -> int:
        if rng.random() < epsilon:
            return int(rng.integers(num_actions))
        return int(np.argmax(np.asarray(q_values(params, obs.transpose(0, 2, 3, 1)))[0]))

    return act


def write_dataset(args: Args, on_transition: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Records `num_checkpoints * transitions_per_checkpoint` entries and writes them; returns a summary.

    `on_transition` (tests) is called with every real transition that was stored: its global entry index, envpool's
    observation stacks before and after (4, 84, 84), the action, the raw and clipped reward and the done flags.
    """
    import envpool

    folder = check_args(args)
    kwargs = machado_kwargs(args.max_episode_steps)
    num_actions = int(envpool.make_spec(args.env_id, **kwargs).action_space.n)
    rng = np.random.default_rng(args.seed)
    if args.policy == "model":  # load (and check) the model before any environment work
        act = make_model_policy(args.model_path, args.network_size, num_actions, args.epsilon, rng)
    else:

        def act(obs: np.ndarray) -> int:
            return int(rng.integers(num_actions))

    env = envpool.make(args.env_id, env_type="gymnasium", num_envs=1, seed=args.seed, **kwargs)
    os.makedirs(folder, exist_ok=True)
    writer = DqnReplayWriter(folder, args.transitions_per_checkpoint, args.num_checkpoints)
    start = time.time()
    returns: list[float] = []
    lengths: list[int] = []
    truncations = 0
    ep_return, ep_length, saved = 0.0, 0, 0
    obs, _ = env.reset()
    while not writer.done:
        action = act(obs)
        next_obs, _, _, truncated, info = env.step(np.array([action]))
        raw = float(info["reward"][0])
        terminated = bool(info["terminated"][0])  # true game over, even when it falls on the time limit
        truncated = bool(truncated[0]) and not terminated
        reward = float(np.clip(raw, -1.0, 1.0))
        ep_return += raw
        ep_length += 1
        stored_terminal = terminated or (truncated and args.truncation == "terminal")
        index = writer.add(obs[0, -1], action, reward, stored_terminal)
        if index is not None and on_transition is not None:
            on_transition(
                dict(
                    index=index,
                    observation=obs[0].copy(),
                    action=action,
                    raw_reward=raw,
                    reward=reward,
                    next_observation=next_obs[0].copy(),
                    terminated=terminated,
                    truncated=truncated,
                )
            )
        if truncated and args.truncation == "bootstrap":
            writer.add(next_obs[0, -1], -1, 0.0, True)  # observation-only entry: the true final frame
        if terminated or truncated:
            returns.append(ep_return)
            lengths.append(ep_length)
            truncations += truncated
            ep_return, ep_length = 0.0, 0
            # NEXT_STEP autoreset: this step only resets (action ignored); it is no transition.
            obs, _, _, _, info = env.step(np.zeros(1, dtype=np.int64))
            if int(info["elapsed_step"][0]) != 0:
                raise RuntimeError("envpool did not reset after the end of an episode")
        else:
            obs = next_obs
        if writer.checkpoint > saved:
            saved = writer.checkpoint
            mean = f"{np.mean(returns):.1f}" if returns else "n/a"
            print(
                f"checkpoint {saved - 1} written: {writer.add_count} entries, {len(returns)} episodes, "
                f"mean return {mean}, {writer.add_count / (time.time() - start):.0f} entries/s",
                flush=True,
            )
    env.close()
    summary = {
        "args": asdict(args),
        "replay_logs": folder,
        "num_actions": num_actions,
        "entries": writer.add_count,
        "episodes": len(returns),
        "truncated_episodes": truncations,
        "episode_returns": returns,
        "episode_lengths": lengths,
        "envpool_kwargs": kwargs,
        "seconds": time.time() - start,
    }
    with open(os.path.join(os.path.dirname(folder), "dataset_info.json"), "w") as f:
        json.dump(summary, f, indent=1)
    return summary


def main(argv: Sequence[str] | None = None) -> int:
    args = tyro.cli(Args, args=argv, description=__doc__.split("\n\n")[0])
    try:
        write_dataset(args)
    except UsageError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
