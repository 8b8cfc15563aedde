"""Eau De Conservative Q-Learning (EauDeCQL) on offline Atari: Algorithm 1 of the paper on the CQL loss.

K online networks with different sparsity levels are trained on the DQN Replay Dataset (Agarwal et al. 2020) against
one shared target network, with no environment interaction. Every T gradient steps the online network with the
smallest cumulated training loss (the full CQL loss) becomes the target (Alg. 1 l. 12), a new population is selected
by elitist tournaments (l. 14), and every duplicated network is pruned to a sparsity drawn from Eq. 3 (l. 15). The
greedy policy of the target network is evaluated in the environment after every epoch (Section 5.2, Figure 6).

    uv run python eaudecql_atari_jax.py --env-id Pong-v5 --dataset-dir datasets/Pong/1
    uv run python eaudecql_atari_jax.py --help

Reads top to bottom: arguments, environment, network, DQN Replay Dataset, pruning, population (Eq. 3, tournaments),
update (CQL loss), training loop (main); below it, the run outputs and evaluation. Flags and outputs: docs/contract.md.
"""

import contextlib
import fcntl
import functools
import gzip
import io
import itertools
import json
import math
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import warnings
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Literal

import envpool
import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import tyro


# ---- Arguments -------------------------------------------------------------------------------------------------------
@dataclass
class Args:
    exp_name: str = os.path.basename(__file__)[: -len(".py")]  # this experiment's name (second part of the run name)
    seed: int = 1  # seed of the experiment: networks, mini-batches, population draws and evaluation envs derive from it
    env_id: str = "Pong-v5"  # envpool Atari id of the dataset's game (evaluation, number of actions), e.g. Pong-v5
    track: bool = False  # log every scalar and the evaluation videos to Weights & Biases
    wandb_project_name: str = "eaudeqn"  # the wandb project name
    wandb_entity: str | None = None  # the wandb entity (team)
    capture_video: bool = False  # film the saved model's evaluation episodes to videos/<run_name>/ (needs --save-model)
    save_model: bool = False  # save the target network's params to <run_dir>/<exp_name>.cleanrl_model and evaluate them
    output_dir: str = "runs"  # folder that receives one sub-folder per run
    checkpoint_interval: int = 62_500  # gradient steps between checkpoints for --resume (0 disables); once per epoch
    resume: str | None = None  # continue the run saved in this run folder (its config.json sets every other argument)

    dataset_dir: str | None = None  # (required) DQN Replay Dataset run folder (datasets/Pong/1) or its replay_logs/
    dataset_checkpoints: list[int] | None = None  # checkpoints N to load, in order; default: first 50 in numeric order
    transitions_per_checkpoint: int = 50_000  # first rows loaded per checkpoint: 50 x 50 000 = 2.5M (5%, Table 3)
    num_epochs: int = 100  # epochs; t_final = num_epochs * steps_per_epoch gradient steps (100 as Ceron et al. 2024)
    steps_per_epoch: int = 62_500  # gradient steps per epoch (Table 3); the greedy policy is evaluated after each
    learning_rate: float = 5e-5  # Adam learning rate (Table 3, offline)
    adam_eps: float = 3.125e-4  # Adam epsilon (Table 3, offline)
    gamma: float = 0.99  # discount factor
    target_network_frequency: int = 2_000  # T, gradient steps between target updates and population steps (Table 3)
    batch_size: int = 32  # mini-batch size (Table 3)
    cql_alpha: float = 0.1  # alpha, CQL regulariser weight: logsumexp_a Q(s, a) - Q(s, a_data) (Ceron et al. 2024)
    eval_episodes: int = 10  # greedy episodes played in parallel after every epoch and by the saved model; 0 disables
    eval_epsilon: float = 0.001  # epsilon of the evaluation policy
    eval_max_episode_steps: int = 27_000  # agent steps before an evaluation episode is cut (108 000 frames, Machado)

    network_size: Literal["small", "medium", "large"] = "medium"  # width of the dense head: 32 / 512 / 2048 (Table 1)
    sparsity_distribution: Literal["erk", "uniform", "global"] = "erk"  # layer spread of sparsity (JaxPruner RL: ERK)

    num_networks: int = 5  # K, number of online networks
    tournament_size: int = 3  # M, networks drawn (without replacement) in each selection tournament
    u_max: float = 3.0  # U_max, scale of the exploration step of Eq. 3 (3 normal, 10 ambitious, 30 aggressive)
    s_max: float = 0.01  # S_max, largest fraction of the remaining weights one exploration step may prune (Eq. 3)
    population_layout: Literal["auto", "loop", "vmap"] = "auto"  # K updates as a loop or vmap; auto: CPU loop, GPU vmap


class ArgumentError(Exception):
    """A user mistake in the command line: reported as one `error:` line and exit code 2."""


def check_args(args: Args) -> None:
    """Reject invalid arguments before any environment or JAX work (docs/contract.md, Errors), dataset included."""
    checks = [
        (args.seed >= 0, "--seed", "must be non-negative"),
        (args.num_epochs > 0, "--num-epochs", "must be positive"),
        (args.steps_per_epoch > 0, "--steps-per-epoch", "must be positive"),
        (args.num_networks >= 1, "--num-networks", "K must be at least 1"),
        (1 <= args.tournament_size <= args.num_networks, "--tournament-size", "M must be in [1, K]"),
        (args.u_max > 0, "--u-max", "U_max must be positive"),
        (0 < args.s_max <= 1, "--s-max", "S_max must be in (0, 1]"),
        (0 < args.learning_rate < math.inf, "--learning-rate", "must be a positive finite number"),
        (0 < args.adam_eps < math.inf, "--adam-eps", "must be a positive finite number"),
        (0 <= args.gamma <= 1, "--gamma", "must be in [0, 1]"),
        (args.batch_size >= 1, "--batch-size", "must be at least 1"),
        (args.target_network_frequency >= 1, "--target-network-frequency", "T must be at least 1"),
        (args.cql_alpha >= 0, "--cql-alpha", "must be non-negative"),
        (args.eval_episodes >= 0, "--eval-episodes", "must be non-negative"),
        (0 <= args.eval_epsilon <= 1, "--eval-epsilon", "must be in [0, 1]"),
        (args.eval_max_episode_steps >= 1, "--eval-max-episode-steps", "must be at least 1"),
        (args.checkpoint_interval >= 0, "--checkpoint-interval", "must be non-negative (0 disables)"),
    ]
    for ok, flag, message in checks:
        if not ok:
            raise ArgumentError(f"{flag}: {message}")
    if args.dataset_dir is None:
        raise ArgumentError("--dataset-dir: required: a DQN Replay Dataset run folder (docs/offline-atari.md)")
    if args.env_id not in envpool.list_all_envs():
        raise ArgumentError(f"--env-id: unknown environment {args.env_id!r} (envpool Atari ids look like 'Pong-v5')")
    if type(envpool.make_spec(args.env_id)).__name__ != "AtariEnvSpec":
        raise ArgumentError(f"--env-id: {args.env_id!r} is not an Atari game; this script needs e.g. 'Pong-v5'")
    try:  # headers only: a corrupt body or actions outside the game's action set are caught by the loader in main
        validate_dataset_dir(args.dataset_dir, args.dataset_checkpoints, args.transitions_per_checkpoint)
    except DatasetError as error:
        raise ArgumentError(str(error)) from None


def parse_args(argv: list[str] | None = None) -> Args:
    """Parse and check the command line; a user mistake exits with code 2 and one `error:` line."""
    captured = io.StringIO()
    try:
        with contextlib.redirect_stderr(captured):
            args = tyro.cli(Args, args=argv)
    except SystemExit as exit_:
        if exit_.code:  # tyro draws a box (UTF-8, or ASCII rules when told or stdout is not UTF-8): keep the
            # message between the title and the next rule, on one line
            lines = [line.strip().strip("│╭╮╰╯").strip() for line in captured.getvalue().splitlines()[1:]]
            rules = [bool(line) and set(line) <= set("─-") for line in lines]
            start = next((i for i, line in enumerate(lines) if line and not rules[i]), len(lines))
            end = next((i for i in range(start, len(lines)) if rules[i]), len(lines))
            message = " ".join(" ".join(lines[start:end]).split()) or "invalid command line"
            print(f"error: {message} (see --help)", file=sys.stderr)
            raise SystemExit(2) from None
        raise
    try:
        if args.resume is not None:
            run_dir = Path(args.resume)
            if not (run_dir / "config.json").is_file():
                raise ArgumentError(f"--resume: {args.resume!r} is not a run folder (no config.json)")
            if not checkpoint_dirs(run_dir):
                raise ArgumentError(f"--resume: {args.resume!r} has no checkpoint/ to resume from")
            try:  # a damaged config.json: JSONDecodeError and UnicodeDecodeError are ValueErrors
                args = Args(**{**json.loads((run_dir / "config.json").read_text())["args"], "resume": args.resume})
            except (ValueError, KeyError, TypeError) as error:
                raise ArgumentError(f"--resume: {run_dir / 'config.json'} is damaged ({error!r})") from None
        check_args(args)
    except ArgumentError as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    return args


# ---- Environment: envpool Atari under the Machado et al. (2018) protocol (docs/implementation-notes.md) --------------
MACHADO_PROTOCOL = dict(
    repeat_action_probability=0.25,  # sticky actions
    episodic_life=False,  # an episode ends at game over, not at a life loss
    use_fire_reset=False,
    noop_max=1,  # envpool's minimum: one fixed NOOP frame after reset (noop_max=0 crashes envpool 1.2.5)
    max_episode_steps=27_000,  # agent steps = 108 000 frames
    full_action_space=False,  # minimal action set
    reward_clip=True,  # clipped reward for learning; the raw game score is info["reward"]
)  # frame skip 4 with max-pool over the last two frames, grayscale 84x84 and a stack of 4 are envpool's defaults


def make_env(env_id: str, num_envs: int, seed: int, render: bool = False, max_episode_steps: int = 27_000) -> Any:
    """Vectorised Atari env; `max_episode_steps` is --eval-max-episode-steps. envpool autoresets on the NEXT step: the
    step that ends an episode returns its true last observation, the next one the reset observation with reward 0."""
    protocol = {**MACHADO_PROTOCOL, "max_episode_steps": max_episode_steps}
    render_mode = "rgb_array" if render else None
    return envpool.make(env_id, env_type="gymnasium", num_envs=num_envs, seed=seed, render_mode=render_mode, **protocol)


def env_seed(seed: int, purpose: int, step: int = 0) -> int:
    """A seed per (run seed, purpose, step): envpool gives env i the seed base + i, so consecutive run seeds would
    share streams; training (purpose 0) and evaluation (purpose 1) streams are also kept apart."""
    return int(np.random.SeedSequence([seed, purpose, step]).generate_state(1)[0] % 2**30)


def zero_fill_reset_frames(obs: np.ndarray, elapsed_step: np.ndarray) -> np.ndarray:
    """envpool fills the stack at reset with copies of the first frame; Dopamine and our replay buffer use zeros for
    frames before the episode start. Zeroing them here makes the acting input equal the replayed one."""
    stack = obs.shape[1]
    missing = np.clip(stack - 1 - elapsed_step, 0, stack - 1)  # frames that precede the episode start
    if not missing.any():
        return obs
    keep = np.arange(stack)[None, :] >= missing[:, None]
    return obs * keep[:, :, None, None].astype(obs.dtype)


# ---- Network (Table 3): Nature-CNN torso with Flax's default SAME padding, dense head of 32 / 512 / 2048 units -------
HEAD_WIDTHS = {"small": 32, "medium": 512, "large": 2048}


class QNetwork(nn.Module):
    action_dim: int
    head_width: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = jnp.transpose(x, (0, 2, 3, 1)).astype(jnp.float32) / 255.0  # (B, 4, 84, 84) uint8 -> NHWC in [0, 1]
        x = nn.relu(nn.Conv(32, kernel_size=(8, 8), strides=(4, 4))(x))
        x = nn.relu(nn.Conv(64, kernel_size=(4, 4), strides=(2, 2))(x))
        x = nn.relu(nn.Conv(64, kernel_size=(3, 3), strides=(1, 1))(x))
        x = x.reshape((x.shape[0], -1))  # 11 x 11 x 64 = 7744 features
        x = nn.relu(nn.Dense(self.head_width)(x))
        return nn.Dense(self.action_dim)(x)


# ---- DQN Replay Dataset (Agarwal et al. 2020): streaming loader and frame-stack rebuilding, stdlib + numpy only -----
# Dopamine's OutOfGraphReplayBuffer.save writes replay_logs/$store$_{observation,action,reward,terminal}_ckpt.N.gz
# (plus add_count and invalid_range), each a gzip stream of one `np.save` array. Entry i holds (frame o_i, action a_i,
# clipped reward r_i, terminal_i); the next frame is entry i + 1. Dopamine writes three all-zero "padding" entries
# before the first step of every episode, so the stack of an episode's first step reads [0, 0, 0, o_0] from the array.
DQN_REPLAY_STORE_KEYS = ("observation", "action", "reward", "terminal")
DQN_REPLAY_STACK_SIZE = 4
DQN_REPLAY_DEFAULT_CHECKPOINTS = 50  # a public run holds 0..50: 50 x 50 000 rows = Table 3's 2.5M set (51: 2.55M)
_DQN_REPLAY_FILE_RE = re.compile(
    r"^(\$store\$_(?:observation|action|reward|terminal)|add_count|invalid_range)_ckpt\.(\d+)\.gz$"
)


class DatasetError(ValueError):
    """A user error in the offline dataset; `str(err)` is one line that starts with the flag to blame."""

    def __init__(self, message: str, flag: str = "--dataset-dir") -> None:
        self.flag = flag
        super().__init__(" ".join(f"{flag}: {message}".split()))  # one line, whatever the wrapped error said


@dataclass(frozen=True)
class DqnReplayDataset:
    """The loaded rows in file order. Transition i is (state i, actions[i], rewards[i], state i + 1, terminals[i]),
    state i being the frame stack that ends at observations[i]; only indices with valid[i] are trained on."""

    observations: np.ndarray  # (n, 84, 84) uint8, the newest frame of each state
    actions: np.ndarray  # (n,) int32
    rewards: np.ndarray  # (n,) float32, as stored (Dopamine stores rewards clipped to [-1, 1])
    terminals: np.ndarray  # (n,) bool, true game over
    episode_starts: np.ndarray  # (n,) bool: a frame stack must not reach back past this index
    valid: np.ndarray  # (n,) bool: usable transition (real step with a next frame, or terminal)
    valid_indices: np.ndarray  # (m,) int64, np.flatnonzero(valid), for uniform sampling
    checkpoints: tuple[int, ...]  # checkpoint numbers loaded, in order
    slice_starts: np.ndarray  # (len(checkpoints),) int64, index of each checkpoint's first row


def _dqn_replay_open(path: str) -> Any:
    return gzip.open(path, "rb")  # a function of its own so that tests can count the bytes decompressed


def _dqn_replay_read(path: str, out: np.ndarray | None = None) -> tuple[tuple[int, ...], np.dtype, bool]:
    """The .npy header (shape, dtype, fortran order) of one file. With `out`, the file's first len(out) rows are also
    decompressed straight into `out`, 8 MiB per read (gzip allocates a buffer per read): peak memory stays the dataset
    plus one chunk, and a corrupt tail after the rows kept does not matter."""
    try:
        with _dqn_replay_open(path) as fp:
            try:
                version = np.lib.format.read_magic(fp)
                if version not in ((1, 0), (2, 0)):
                    raise ValueError(f"unsupported .npy format version {version}")
                read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
                shape, fortran_order, dtype = read(fp)
            except (OSError, EOFError, ValueError, zlib.error) as err:
                raise DatasetError(f"{path}: not a gzip-compressed .npy array ({err})") from err
            header = (tuple(int(s) for s in shape), np.dtype(dtype), bool(fortran_order))
            if out is None:
                return header
            buffer = out if dtype == out.dtype else np.empty(out.shape, dtype)  # another dtype or byte order: convert
            view, pos = memoryview(buffer.reshape(-1).view(np.uint8)), 0
            try:
                while pos < view.nbytes:
                    if not (got := fp.readinto(view[pos : pos + (8 << 20)])):
                        raise DatasetError(f"{path}: truncated file (data ends after {pos} of {view.nbytes} bytes)")
                    pos += got
            except (OSError, EOFError, zlib.error) as err:
                raise DatasetError(f"{path}: corrupt or truncated gzip stream ({err})") from err
            if buffer is not out:
                out[...] = buffer
    except OSError as err:  # unreadable file (permissions, ...)
        raise DatasetError(f"{path}: cannot read ({err})") from err
    return header


def _dqn_replay_plan(
    dataset_dir: str, checkpoints: Sequence[int] | None, transitions_per_checkpoint: int | None, max_checkpoints: int
) -> list[tuple[int, dict[str, str], int, int | None]]:
    """Checks files, .npy headers, dtypes, lengths and row counts (headers and add_count only) and plans the load:
    (checkpoint number, {key: path}, rows to read, Dopamine's write cursor when it falls inside those rows)."""
    if transitions_per_checkpoint is not None and transitions_per_checkpoint < 1:
        raise DatasetError(f"must be at least 1, got {transitions_per_checkpoint}", "--transitions-per-checkpoint")
    if not os.path.isdir(dataset_dir):
        raise DatasetError(f"{dataset_dir} is not a folder")
    folder, sub = dataset_dir, os.path.join(dataset_dir, "replay_logs")  # the public layout: <Game>/<run>/replay_logs/
    if os.path.isdir(sub) and not any(_DQN_REPLAY_FILE_RE.match(name) for name in os.listdir(dataset_dir)):
        folder = sub
    found: dict[int, dict[str, str]] = {}  # checkpoint number -> {"observation", ..., "add_count", ...: path}
    for name in os.listdir(folder):
        if match := _DQN_REPLAY_FILE_RE.match(name):
            key = match.group(1).removeprefix("$store$_")
            found.setdefault(int(match.group(2)), {})[key] = os.path.join(folder, name)
    if not found:
        raise DatasetError(f"{dataset_dir} holds no DQN Replay checkpoint files ($store$_observation_ckpt.N.gz, ...)")
    # numeric order: checkpoint 10 comes after 9, not after 1
    numbers = sorted(found)[:max_checkpoints] if checkpoints is None else [int(n) for n in checkpoints]
    if checkpoints is not None and not numbers:
        raise DatasetError("empty list of checkpoints", "--dataset-checkpoints")
    if len(set(numbers)) != len(numbers):
        raise DatasetError(f"checkpoint listed twice in {numbers}", "--dataset-checkpoints")
    if absent := [n for n in numbers if n not in found]:
        have = sorted(found)
        have = f"{len(have)} checkpoints, {have[0]}..{have[-1]}" if len(have) > 3 else str(have)
        raise DatasetError(f"checkpoint(s) {absent} not in {folder} (found {have})", "--dataset-checkpoints")
    plans = []
    for number in numbers:
        files = found[number]
        if missing := [k for k in DQN_REPLAY_STORE_KEYS if k not in files]:
            names = ", ".join(f"$store$_{k}_ckpt.{number}.gz" for k in missing)
            raise DatasetError(f"checkpoint {number} in {folder} lacks {names}")
        headers = {k: _dqn_replay_read(files[k]) for k in DQN_REPLAY_STORE_KEYS}
        shape, dtype, fortran_order = headers["observation"]
        if dtype != np.uint8 or len(shape) != 3 or fortran_order:
            raise DatasetError(f"{files['observation']}: expected a (n, 84, 84) uint8 array, got {dtype}{list(shape)}")
        if shape[1:] != (84, 84):
            raise DatasetError(f"{files['observation']}: frames are {shape[1:]}, expected (84, 84)")
        for key, kinds in (("action", "iu"), ("reward", "f"), ("terminal", "biu")):
            shape, dtype, _ = headers[key]
            if len(shape) != 1 or dtype.kind not in kinds:
                raise DatasetError(f"{files[key]}: expected a 1-d {key} array, got {dtype}{list(shape)}")
        lengths = {key: shape[0] for key, (shape, _, _) in headers.items()}
        if len(set(lengths.values())) != 1:
            raise DatasetError(f"checkpoint {number}: arrays of different lengths {lengths}")
        length = add_count = lengths["observation"]
        if "add_count" in files:
            shape, dtype, _ = _dqn_replay_read(files["add_count"])
            if int(np.prod(shape)) != 1 or dtype.kind not in "iu":
                raise DatasetError(f"{files['add_count']}: expected one integer")
            count = np.empty(shape, dtype)
            _dqn_replay_read(files["add_count"], count)
            add_count = int(count.reshape(-1)[0])
        available = min(add_count, length)  # a buffer never filled: the rows from add_count on were never written
        rows = available if transitions_per_checkpoint is None else transitions_per_checkpoint
        if not 1 <= rows <= available:
            message = f"checkpoint {number} holds {available} transitions, fewer than the {rows} requested"
            raise DatasetError(message, "--transitions-per-checkpoint")
        cursor = add_count % length if add_count > length else 0  # a full circular buffer: its oldest entry
        plans.append((number, files, rows, cursor if 0 < cursor < rows else None))
    return plans


def validate_dataset_dir(
    dataset_dir: str, checkpoints: Sequence[int] | None = None, transitions_per_checkpoint: int | None = 50_000,
    max_checkpoints: int = DQN_REPLAY_DEFAULT_CHECKPOINTS,
) -> list[int]:  # fmt: skip
    """check_args' cheap check (headers only: a corrupt body is left to the loader): the checkpoints to be loaded."""
    return [plan[0] for plan in _dqn_replay_plan(dataset_dir, checkpoints, transitions_per_checkpoint, max_checkpoints)]


def load_dqn_replay_dataset(
    dataset_dir: str, checkpoints: Sequence[int] | None = None, transitions_per_checkpoint: int | None = 50_000,
    num_actions: int | None = None, max_checkpoints: int = DQN_REPLAY_DEFAULT_CHECKPOINTS,
) -> DqnReplayDataset:  # fmt: skip
    """The first `transitions_per_checkpoint` rows (all if None) of `checkpoints`, in this order (default: the first
    `max_checkpoints` found, in numeric order). With `num_actions`, actions must lie in [0, num_actions).

    An episode starts at each checkpoint slice's first row, after every terminal and at Dopamine's write cursor (the
    seam between the newest and oldest entries of its circular buffer, from add_count). Not valid: Dopamine's padding,
    rows with a negative action (observation-only rows: the final frame of a time-limit-truncated episode) and a
    non-terminal row whose next row does not continue its episode inside the slice. Raises DatasetError.
    """
    plans = _dqn_replay_plan(dataset_dir, checkpoints, transitions_per_checkpoint, max_checkpoints)
    total = sum(rows for _, _, rows, _ in plans)
    observations, actions = np.empty((total, 84, 84), np.uint8), np.empty(total, np.int32)
    rewards, terminals, episode_starts = np.empty(total, np.float32), np.empty(total, bool), np.zeros(total, bool)
    slice_starts = np.zeros(len(plans), dtype=np.int64)
    start = 0
    for j, (_, files, rows, cursor) in enumerate(plans):
        for key, out in zip(DQN_REPLAY_STORE_KEYS, (observations, actions, rewards, terminals), strict=True):
            _dqn_replay_read(files[key], out[start : start + rows])
        slice_starts[j] = start
        episode_starts[start] = True
        if cursor is not None:
            episode_starts[start + cursor] = True
        start += rows
    episode_starts[1:] |= terminals[:-1]
    # Dopamine's padding: up to 3 entries right after an episode boundary that are all zero (frame, action, reward,
    # terminal); looked for only there, so data written without padding keeps every transition
    padding, starts = np.zeros(total, dtype=bool), np.flatnonzero(episode_starts)
    still = np.ones(len(starts), dtype=bool)  # the run of padding entries from this boundary is unbroken so far
    for k in range(DQN_REPLAY_STACK_SIZE - 1):
        idx = starts + k
        still &= idx < total
        idx = np.minimum(idx, total - 1)
        if k > 0:
            still &= ~episode_starts[idx]  # a padding run never crosses the next boundary
        sel = idx[still]
        zero = (actions[sel] == 0) & (rewards[sel] == 0) & ~terminals[sel]
        zero[zero] = ~observations[sel[zero]].any(axis=(1, 2))
        still[still] = zero
        padding[idx[still]] = True
    has_next = np.zeros(total, dtype=bool)
    has_next[:-1] = ~episode_starts[1:]
    valid = (terminals | has_next) & ~padding & (actions >= 0)
    if not valid.any():
        raise DatasetError(f"{dataset_dir}: the selected rows hold no usable transition")
    if num_actions is not None and int(actions[valid].max()) >= num_actions:
        raise DatasetError(
            f"actions up to {int(actions[valid].max())} but the environment has {num_actions} actions "
            "(a dataset of another game, or recorded with the full action set?)"
        )
    return DqnReplayDataset(
        observations, actions, rewards, terminals, episode_starts, valid, np.flatnonzero(valid),
        tuple(plan[0] for plan in plans), slice_starts,
    )  # fmt: skip


def rebuild_frame_stacks(observations: np.ndarray, episode_starts: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """The (B, 4, H, W) frame stacks ending at `indices`, oldest frame first (envpool's layout). A stack never reaches
    back past an episode start: frames before it are zeros, [0, 0, 0, o_0] at an episode's first step."""
    indices = np.asarray(indices, dtype=np.int64)
    out = np.zeros((len(indices), DQN_REPLAY_STACK_SIZE, *observations.shape[1:]), dtype=observations.dtype)
    out[:, -1] = observations[indices]
    ok = np.ones(len(indices), dtype=bool)
    for back in range(1, DQN_REPLAY_STACK_SIZE):
        ok &= ~episode_starts[indices - back + 1]  # the frame one step later starts an episode: stop here
        ok &= indices - back >= 0
        out[ok, DQN_REPLAY_STACK_SIZE - 1 - back] = observations[indices[ok] - back]
    return out


def dqn_replay_batch(dataset: DqnReplayDataset, indices: np.ndarray) -> dict[str, np.ndarray]:
    """The transitions `indices` (drawn from `dataset.valid_indices`); the next state of a terminal transition is
    undefined (the target masks it with 1 - terminal)."""
    indices = np.asarray(indices, dtype=np.int64)
    next_indices = np.minimum(indices + 1, len(dataset.actions) - 1)
    return {
        "observations": rebuild_frame_stacks(dataset.observations, dataset.episode_starts, indices),
        "actions": dataset.actions[indices],
        "rewards": dataset.rewards[indices],
        "next_observations": rebuild_frame_stacks(dataset.observations, dataset.episode_starts, next_indices),
        "terminals": dataset.terminals[indices],
    }


def sample_dqn_replay_batch(dataset: DqnReplayDataset, rng: np.random.Generator, batch_size: int) -> dict[str, Any]:
    """A uniform batch (with replacement) over the valid transitions."""
    indices = dataset.valid_indices[rng.integers(0, len(dataset.valid_indices), size=batch_size)]
    return dqn_replay_batch(dataset, indices)


# ---- end of the DQN Replay Dataset section ---------------------------------------------------------------------------
# ---- Pruning: magnitude masks over the kernels (ndim > 1), biases never pruned, exact number of zeros per layer ------
def is_prunable(leaf: Any) -> bool:
    return leaf.ndim > 1


def prunable_shapes(params: Any) -> list[tuple[int, ...]]:
    return [tuple(leaf.shape) for leaf in jax.tree.leaves(params) if is_prunable(leaf)]


def layer_densities(shapes: list[tuple[int, ...]], sparsity: float, distribution: str) -> list[float]:
    """Fraction of weights kept in each prunable layer for an overall `sparsity`.

    uniform: every layer at `sparsity`. erk (Erdos-Renyi-Kernel, as JaxPruner and RigL): density proportional to
    sum(shape) / prod(shape), scaled so the overall sparsity is met; a layer whose density would exceed 1 is made
    dense and the remaining budget is re-spread over the others.
    """
    if distribution == "uniform" or sparsity == 0.0:
        return [1.0 - sparsity] * len(shapes)
    if distribution != "erk":
        raise ValueError(f"per-layer densities are undefined for {distribution!r}")
    sizes = np.array([np.prod(s) for s in shapes], dtype=np.float64)
    raw = np.array([np.sum(s) / np.prod(s) for s in shapes], dtype=np.float64)
    dense = np.zeros(len(shapes), dtype=bool)
    while True:
        budget = (1.0 - sparsity) * sizes.sum() - sizes[dense].sum()  # non-zeros left for the non-dense layers
        scale = budget / np.sum(raw[~dense] * sizes[~dense])
        densities = np.where(dense, 1.0, scale * raw)
        if densities.max() <= 1.0:
            return densities.tolist()
        dense |= ~dense & (raw == raw[~dense].max())  # make the densest layer dense and re-spread


def layer_zero_counts(shapes: list[tuple[int, ...]], sparsity: float, distribution: str) -> list[int]:
    """Exact number of weights to zero in each prunable layer (`global`: one count for all of them together)."""
    if distribution == "global":
        return [int(np.rint(sparsity * sum(np.prod(s) for s in shapes)))]
    densities = layer_densities(shapes, sparsity, distribution)
    return [int(np.rint((1.0 - d) * np.prod(s))) for s, d in zip(shapes, densities, strict=True)]


def keep_largest(magnitudes: jax.Array, num_zeros: jax.Array) -> jax.Array:
    """Boolean mask keeping all but the `num_zeros` smallest of the float32 `magnitudes` (>= 0), ties broken by
    position (the earlier one is pruned), so that exactly `num_zeros` entries are False: the mask a stable sort gives,
    in linear time. Non-negative floats order like their int32 bit patterns, so a binary search over those patterns
    finds the smallest threshold with at least `num_zeros` magnitudes at or below it, one counting pass per bit."""
    bits = jax.lax.bitcast_convert_type(magnitudes, jnp.int32)

    def halve(_: int, bounds: tuple[jax.Array, jax.Array]) -> tuple[jax.Array, jax.Array]:
        low, high = bounds
        middle = low + (high - low) // 2
        enough = jnp.sum(bits <= middle) >= num_zeros
        return jnp.where(enough, low, middle + 1), jnp.where(enough, middle, high)

    threshold, _ = jax.lax.fori_loop(0, 31, halve, (jnp.int32(0), jnp.int32(np.iinfo(np.int32).max)))
    ties = bits == threshold  # the first (num_zeros - #below) of them are pruned
    return (bits > threshold) | (ties & (jnp.cumsum(ties) > num_zeros - jnp.sum(bits < threshold)))


@functools.partial(jax.jit, static_argnames="distribution")
def counted_masks(params: Any, zero_counts: jax.Array, distribution: str) -> Any:
    """Masks zeroing the `zero_counts[l]` smallest-magnitude weights of prunable layer l (`global`: the
    `zero_counts[0]` smallest of all of them, one threshold); biases keep an all-True mask."""
    leaves, treedef = jax.tree.flatten(params)
    kernels = [jnp.abs(w).ravel() for w in leaves if is_prunable(w)]
    if distribution == "global":
        keep = jnp.split(
            keep_largest(jnp.concatenate(kernels), zero_counts[0]), np.cumsum([k.size for k in kernels])[:-1]
        )
    else:
        keep = [keep_largest(kernel, count) for kernel, count in zip(kernels, zero_counts, strict=True)]
    keep = iter(keep)
    masks = [next(keep).reshape(w.shape) if is_prunable(w) else jnp.ones_like(w, bool) for w in leaves]
    return jax.tree.unflatten(treedef, masks)


def magnitude_masks(params: Any, sparsity: float, distribution: str) -> Any:
    """Masks that zero the smallest-magnitude weights so that the prunable weights reach `sparsity`."""
    return counted_masks(
        params, jnp.asarray(layer_zero_counts(prunable_shapes(params), sparsity, distribution)), distribution
    )


def apply_masks(params: Any, masks: Any) -> Any:
    return jax.tree.map(lambda w, m: jnp.where(m, w, 0.0), params, masks)


def measured_sparsity(params: Any) -> float:
    """Fraction of zero weights among the prunable weights (the sparsity reported everywhere)."""
    kernels = [np.asarray(w) for w in jax.tree.leaves(params) if is_prunable(w)]
    return float(sum((w == 0).sum() for w in kernels) / sum(w.size for w in kernels))


# ---- Population: exploitation (Fig. 3 left), exploration (Eq. 3); offline, no behaviour policy (Fig. 3 right) --------
def tournament_selection(losses: np.ndarray, tournament_size: int, rng: np.random.Generator) -> np.ndarray:
    """Exploitation (Alg. 1 l. 14): slot 0 keeps the network with the lowest cumulated loss; each of the K - 1 other
    slots is the winner of a tournament among M networks drawn uniformly without replacement."""
    losses = np.nan_to_num(np.asarray(losses, dtype=np.float64), nan=np.inf)
    parents = [int(np.argmin(losses))]
    for _ in range(len(losses) - 1):
        contenders = rng.choice(len(losses), size=tournament_size, replace=False)
        parents.append(int(contenders[np.argmin(losses[contenders])]))
    return np.array(parents)


def exploration_sparsity(sparsity: float, step: int, total_steps: int, period: int, u: float, s_max: float) -> float:
    """Eq. 3: s_t' = s_t + min(U (1 - s_t)(t' - t) / (t_final - t), (1 - s_t) S_max), with t' = t + period.

    The first term follows the line from (t, s_t) to (t_final, 1) scaled by U ~ U(0, U_max); the second caps one step
    at S_max of the remaining weights (geometric speed cap)."""
    remaining = 1.0 - sparsity
    linear = remaining * period / max(total_steps - step, 1)
    return sparsity + min(u * linear, remaining * s_max)


def plan_next_population(
    losses: np.ndarray, sparsities: np.ndarray, step: int, total_steps: int, period: int, tournament_size: int,
    u_max: float, s_max: float, rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # fmt: skip
    """Exploitation then exploration (Alg. 1 l. 14-15). A network chosen c times keeps its original (params, mask,
    optimizer state) in its first slot and gives c - 1 copies; only copies are pruned further (Eq. 3), so slot 0
    keeps the new target's sparsity. Returns (parents, new sparsities, is_copy)."""
    parents = tournament_selection(losses, tournament_size, rng)
    is_copy = np.array([parent in parents[:slot] for slot, parent in enumerate(parents)])
    new_sparsities = np.asarray(sparsities, dtype=np.float64)[parents]  # an original keeps its parent's sparsity
    for slot in np.flatnonzero(is_copy):  # a copy explores (Eq. 3), one U drawn per copy in slot order
        u = rng.uniform(0.0, u_max)
        new_sparsities[slot] = exploration_sparsity(sparsities[parents[slot]], step, total_steps, period, u, s_max)
    return parents, new_sparsities, is_copy


def population_step(
    learner: dict[str, Any], sparsities: np.ndarray, step: int, total_steps: int, args: Args,
    optimizer: optax.GradientTransformation, rng: np.random.Generator,
) -> tuple[dict[str, Any], np.ndarray, dict[str, Any]]:  # fmt: skip
    """Alg. 1 l. 12-16, every T steps: the target becomes the online network with the smallest cumulated loss
    (l. 12, NaN counts as the worst loss), the population is renewed by tournaments (l. 14), every copy is pruned to
    its Eq. 3 sparsity with a fresh Adam state (l. 15, paper appendix), and the cumulated losses are reset (l. 16).
    Slot 0 is the new target network itself, with its params, mask and Adam state. `total_steps` is t_final of
    Eq. 3. The plan is drawn on the host (the run's NumPy generator), the networks renewed by one XLA program.
    Returns the new learner state, the new nominal sparsities and the population.jsonl event."""
    losses = np.asarray(learner["cumulated_losses"], dtype=np.float64)
    best = int(np.argmin(np.nan_to_num(losses, nan=np.inf)))
    parents, new_sparsities, is_copy = plan_next_population(
        losses, sparsities, step, total_steps, args.target_network_frequency, args.tournament_size,
        args.u_max, args.s_max, rng,
    )  # fmt: skip
    shapes = prunable_shapes(jax.eval_shape(take, learner["params"], 0))  # the kernels of one network
    zero_counts = np.array([layer_zero_counts(shapes, float(s), args.sparsity_distribution) for s in new_sparsities])
    learner = renew_population(learner, parents, best, zero_counts, is_copy, optimizer, args.sparsity_distribution)
    event = {"global_step": step, "losses": losses.tolist(), "sparsities_before": np.asarray(sparsities).tolist(),
             "target_index": best, "parents": parents.tolist(), "sparsities_after": new_sparsities.tolist()}  # fmt: skip
    return learner, new_sparsities, event


@functools.partial(jax.jit, static_argnames=("optimizer", "distribution"))
def renew_population(
    learner: dict[str, Any], parents: jax.Array, best: jax.Array, zero_counts: jax.Array, is_copy: jax.Array,
    optimizer: optax.GradientTransformation, distribution: str,
) -> dict[str, Any]:  # fmt: skip
    """Alg. 1 l. 12 and 14-16 as one program, with fixed shapes so that it compiles once per run: slot k takes
    network parents[k] whole (l. 14); a copy keeps the `zero_counts[k]` largest weights of each layer and gets a fresh
    Adam state (l. 15); the target becomes network `best` of the old population (l. 12); L = 0 (l. 16)."""
    population = {name: take(learner[name], parents) for name in ("params", "masks", "opt_states")}

    def explore(network: dict[str, Any], counts: jax.Array) -> dict[str, Any]:
        masks = counted_masks(network["params"], counts, distribution)
        params = apply_masks(network["params"], masks)
        return {"params": params, "masks": masks, "opt_states": optimizer.init(params)}

    def renew_slot(slot: tuple[dict[str, Any], jax.Array, jax.Array]) -> dict[str, Any]:
        network, counts, copy = slot  # an original keeps its params, mask and Adam state
        return jax.lax.cond(copy, explore, lambda network, _: network, network, counts)

    renewed = jax.lax.map(renew_slot, (population, zero_counts, is_copy))  # slot after slot: only copies are pruned
    target, losses = take(learner["params"], best), jnp.zeros_like(learner["cumulated_losses"])  # l. 12, l. 16
    return {**learner, **renewed, "target_params": target, "cumulated_losses": losses}


def take(tree: Any, index: Any) -> Any:
    """Network(s) `index` of a population stored as one pytree with a leading axis K."""
    return jax.tree.map(lambda x: x[index], tree)


def init_learner(
    network: nn.Module, optimizer: optax.GradientTransformation, key: jax.Array, num_networks: int, dummy: np.ndarray
) -> dict[str, Any]:
    """Alg. 1 l. 1: K independently initialised online networks (dense: all-True masks), one Adam state each, psi = 0
    so the target is a copy of network 0, and L_k = 0. The learner state is everything JAX-side a checkpoint holds."""
    key, *init_keys = jax.random.split(key, num_networks + 1)
    params = jax.vmap(network.init, in_axes=(0, None))(jnp.stack(init_keys), dummy)
    return {
        "params": params,
        "masks": jax.tree.map(lambda x: jnp.ones_like(x, dtype=bool), params),
        "opt_states": jax.vmap(optimizer.init)(params),
        "target_params": take(params, 0),
        "cumulated_losses": jnp.zeros(num_networks),
        "key": key,
    }


# ---- Update: the discrete CQL loss and one jitted gradient step for all K networks against the shared target ---------
def cql_loss(q_values: jax.Array, actions: jax.Array, targets: jax.Array, alpha: float) -> tuple[jax.Array, Any]:
    """Discrete CQL (Kumar et al. 2020): mean_i (y_i - Q(s_i, a_i))^2 + alpha * mean_i (logsumexp_a Q(s_i, a) -
    Q(s_i, a_i)), the squared TD error of Eq. 1 plus a regulariser that pushes down the Q-values of actions absent
    from the data. Returns (loss, (td_loss, regulariser))."""
    q_taken = jnp.take_along_axis(q_values, actions[:, None], axis=1)[:, 0]
    td = jnp.mean((targets - q_taken) ** 2)
    regulariser = jnp.mean(jax.nn.logsumexp(q_values, axis=1) - q_taken)
    return td + alpha * regulariser, (td, regulariser)


def make_train_step(
    network: QNetwork, optimizer: optax.GradientTransformation, gamma: float, alpha: float, layout: str
) -> Any:
    """One Adam step of every online network on one mini-batch (Alg. 1 l. 5-10): (learner, batch) -> (new learner,
    (per-network CQL losses, TD losses))."""

    def loss_fn(params: Any, observations: jax.Array, actions: jax.Array, targets: jax.Array) -> Any:
        return cql_loss(network.apply(params, observations), actions, targets, alpha)

    loss_and_grad = jax.value_and_grad(loss_fn, has_aux=True)

    @jax.jit
    def train_step(learner, batch):
        params, opt_states, cumulated_losses = learner["params"], learner["opt_states"], learner["cumulated_losses"]
        # Alg. 1 l. 7: the target is computed once and shared by the K online networks
        next_q = network.apply(learner["target_params"], batch["next_observations"]).max(axis=1)
        targets = batch["rewards"] + gamma * (1.0 - batch["terminals"]) * next_q
        inputs = (batch["observations"], batch["actions"], targets)
        if layout == "vmap":
            (losses, (td_losses, _)), grads = jax.vmap(loss_and_grad, in_axes=(0, None, None, None))(params, *inputs)
        else:  # unrolled: K separate graphs in one program (faster than vmap for convolutions on CPU)
            outputs = [loss_and_grad(take(params, k), *inputs) for k in range(cumulated_losses.shape[0])]
            (losses, (td_losses, _)), grads = jax.tree.map(lambda *x: jnp.stack(x), *outputs)
        updates, opt_states = jax.vmap(optimizer.update)(grads, opt_states, params)
        params = apply_masks(optax.apply_updates(params, updates), learner["masks"])  # pruned weights stay zero
        # Alg. 1 l. 10: L_k += loss_k, with the full CQL loss (the training loss selects the target offline)
        learner = {**learner, "params": params, "opt_states": opt_states, "cumulated_losses": cumulated_losses + losses}
        return learner, (losses, td_losses)

    return train_step


def to_device_batch(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The loader's batch with the dtypes the jitted step expects (terminals as 0/1 floats)."""
    return {**batch, "terminals": batch["terminals"].astype(np.float32)}


# ---- Training loop ---------------------------------------------------------------------------------------------------
def load_dataset(args: Args) -> DqnReplayDataset:
    """The transitions to train on; a dataset problem exits like an argument error (before any JAX work)."""
    num_actions = envpool.make_spec(args.env_id, full_action_space=False).action_space.n
    started = time.time()
    try:
        dataset = load_dqn_replay_dataset(
            args.dataset_dir, args.dataset_checkpoints, args.transitions_per_checkpoint, num_actions=num_actions
        )
    except DatasetError as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    print(
        f"loaded {len(dataset.actions):,} rows ({len(dataset.valid_indices):,} transitions) from "
        f"{len(dataset.checkpoints)} checkpoint(s) of {args.dataset_dir} in {time.time() - started:.1f}s", flush=True,
    )  # fmt: skip
    return dataset


DIVERGED = "the run diverged (try a lower --learning-rate); its last checkpoint is kept"


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    dataset = load_dataset(args)  # re-loaded on --resume: the checkpoint never stores it
    run = Run(args)
    K, total_steps = args.num_networks, args.num_epochs * args.steps_per_epoch  # t_final, in gradient steps
    auto = "loop" if jax.default_backend() == "cpu" else "vmap"  # the faster layout measured on each backend
    layout = auto if args.population_layout == "auto" else args.population_layout

    # ---- networks, optimizer (Alg. 1 l. 1)
    num_actions = envpool.make_spec(args.env_id, full_action_space=False).action_space.n
    network = QNetwork(action_dim=num_actions, head_width=HEAD_WIDTHS[args.network_size])
    optimizer = optax.adam(args.learning_rate, eps=args.adam_eps)
    learner = init_learner(network, optimizer, jax.random.PRNGKey(args.seed), K, np.zeros((1, 4, 84, 84), np.uint8))
    rng = np.random.default_rng(args.seed)  # mini-batches and population selection
    train_step = make_train_step(network, optimizer, args.gamma, args.cql_alpha, layout)
    q_values = jax.jit(network.apply)
    num_params = sum(leaf.size for leaf in jax.tree.leaves(learner["target_params"]))
    setup = f"K={K} online networks of {num_params:,} parameters ({args.network_size}), {layout} layout"
    print(f"{run.dir.name}: {setup} on {jax.default_backend()}; outputs in {run.dir}", flush=True)
    # global_step counts gradient steps: t of Eq. 3 (offline, the paper's x-axis is the number of batch updates)
    meta = {"global_step": 0, "next_target_update": args.target_network_frequency, "sparsities": [0.0] * K}
    meta |= {"elapsed": 0.0, "last_eval_return": float("nan"), "last_eval_seconds": float("nan")}
    if args.resume:
        learner, meta = run.resume(learner, rng)
    global_step, next_target_update = meta["global_step"], meta["next_target_update"]
    sparsities = np.array(meta["sparsities"])  # nominal sparsity level of each online network
    last_eval_return, last_eval_seconds = meta["last_eval_return"], meta["last_eval_seconds"]
    finished_before = global_step >= total_steps  # resuming a finished run adds nothing (no second final eval)
    run.open_logs(meta)
    target_sparsity = measured_sparsity(learner["target_params"])
    if not args.resume:
        run.scalar("sparsity/target", target_sparsity, 0)
    every = args.checkpoint_interval  # --checkpoint-interval 0 disables checkpoints
    next_checkpoint = (global_step // every + 1) * every if every > 0 else None

    def checkpoint() -> None:
        counters = {"global_step": global_step, "next_target_update": next_target_update, "elapsed": run.elapsed()}
        counters |= {"sparsities": sparsities.tolist(), "rng_state": rng.bit_generator.state}
        counters |= {"last_eval_return": last_eval_return, "last_eval_seconds": last_eval_seconds}
        run.save_checkpoint(learner, counters)

    run.watch_signals()
    while global_step < total_steps:
        # ---- learn (Alg. 1 l. 5-10): one mini-batch of the dataset, one CQL step for all K networks at once
        batch = to_device_batch(sample_dqn_replay_batch(dataset, rng, args.batch_size))
        learner, (last_losses, last_td_losses) = train_step(learner, batch)
        previous_step, global_step = global_step, global_step + 1
        if not np.isfinite(np.asarray(learner["cumulated_losses"])).any():  # one NaN network only loses l. 12
            run.scalar("losses/cql_loss", float(jnp.mean(last_losses)), global_step)
            run.scalar("losses/td_loss", float(jnp.mean(last_td_losses)), global_step)
            run.close(3, f"error: every network's loss is non-finite at step {global_step:,}: {DIVERGED}")

        # ---- every T gradient steps (Alg. 1 l. 11-16): target update, exploitation, exploration, loss reset
        if global_step >= next_target_update:
            learner, sparsities, event = population_step(
                learner, sparsities, global_step, total_steps, args, optimizer, rng
            )
            run.population_event(event)
            target_sparsity = measured_sparsity(learner["target_params"])
            run.scalar("sparsity/target", target_sparsity, global_step)
            run.scalar("population/sparsity_max", float(sparsities.max()), global_step)
            next_target_update += args.target_network_frequency

        # ---- log every 1000 steps (the training losses are the mean over the K online networks)
        if global_step // 1000 > previous_step // 1000 or global_step == total_steps:
            details = f"epoch {global_step // args.steps_per_epoch}/{args.num_epochs} | last eval return"
            details += f" {last_eval_return:.1f} ({last_eval_seconds:.0f}s) | target sparsity {target_sparsity:.3f}"
            eval_time = (total_steps - global_step) / args.steps_per_epoch * np.nan_to_num(last_eval_seconds)
            run.progress(global_step, total_steps, details, eval_time)
            run.scalar("losses/cql_loss", float(jnp.mean(last_losses)), global_step)
            run.scalar("losses/td_loss", float(jnp.mean(last_td_losses)), global_step)

        # ---- after every epoch: the target network's greedy policy in the environment (Figure 6). The last epoch
        # is evaluated from the saved model file instead when --save-model is on (same network, played once).
        final_by_saved_model = global_step == total_steps and args.save_model
        if global_step % args.steps_per_epoch == 0 and args.eval_episodes > 0 and not final_by_saved_model:
            started = time.time()
            returns = evaluate_policy(
                q_values, learner["target_params"], args.env_id, args.eval_episodes,
                env_seed(args.seed, 1, global_step), args.eval_epsilon, args.eval_max_episode_steps,
            )  # fmt: skip
            for value in returns:
                run.scalar("eval/episodic_return", value, global_step)
            last_eval_return, last_eval_seconds = float(np.mean(returns)), time.time() - started
            summary = f"eval return {last_eval_return:.1f} over {len(returns)} episodes in {last_eval_seconds:.1f}s"
            print(f"epoch {global_step // args.steps_per_epoch}: {summary}", flush=True)
            run.window_time = time.time()  # evaluation time is not part of the gradient steps per second

        if next_checkpoint is not None and global_step >= next_checkpoint:
            checkpoint()
            next_checkpoint += args.checkpoint_interval
        # Ctrl-C / SIGTERM: stop after this step. At t_final the run finishes instead: a resumed finished run adds
        # nothing, so stopping there would lose the final model and its evaluation.
        if run.stop_signal and global_step < total_steps:
            checkpoint()
            resume = f"continue with: python {Path(__file__).name} --resume {run.dir}"
            run.close(128 + run.stop_signal, f"interrupted at step {global_step:,}; checkpoint saved, {resume}")

    if next_checkpoint is not None and not finished_before:
        checkpoint()  # a finished run can still be extended or inspected
    if args.save_model and not finished_before:
        save_and_evaluate(args, run, learner["target_params"], global_step)
        if args.track and args.capture_video:  # after the evaluation: no number of the run changes
            run.log_videos(Path("videos") / run.dir.name, args.eval_episodes, global_step)
    run.close()


# ---- Run outputs (docs/contract.md): the run folder, logs, checkpoints, evaluation, video; no algorithm below --------
def atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def run_config(args: Args) -> dict[str, Any]:
    """config.json: the arguments and what a seeded run's numbers depend on besides them (versions, the processor)."""
    versions = dict.fromkeys(("jax", "jaxlib", "flax", "optax", "numpy", "envpool", "gymnasium", "tyro"))
    for package in versions:
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[package] = metadata.version(package)
    commit, cpu = "", platform.processor()
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        git = ["git", "-C", str(Path(__file__).parent), "rev-parse", "HEAD"]
        commit = subprocess.run(git, capture_output=True, text=True, timeout=5).stdout.strip()
    with contextlib.suppress(OSError):  # Linux names the processor model here; elsewhere platform's answer stays
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        cpu = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), cpu)
    machine = {"cpu": cpu, "device": jax.devices()[0].device_kind, "python": platform.python_version()}
    return {
        "args": asdict(args), "script": Path(__file__).name, "versions": versions, "jax_backend": jax.default_backend(),
        "machine": machine | {"system": platform.platform()}, "git_commit": commit or None, "command": sys.argv,
    }  # fmt: skip


def json_line(record: dict[str, Any]) -> str:
    """One strict-JSON line: a non-finite float (a diverged loss) is written as null, never as a bare NaN."""

    def finite(value: Any) -> Any:
        if isinstance(value, list):
            return [finite(v) for v in value]
        return None if isinstance(value, float) and not math.isfinite(value) else value

    return json.dumps({key: finite(value) for key, value in record.items()}, allow_nan=False) + "\n"


def truncate_jsonl(path: Path, last_step: int) -> int:
    """Drop the lines logged after the checkpoint being resumed (no step is repeated) and a line that a kill tore in
    half; returns how many lines were dropped."""
    if not path.exists():
        return 0
    lines, kept = path.read_text().splitlines(), []
    for line in lines:
        try:
            if json.loads(line)["global_step"] <= last_step:
                kept.append(line)
        except (json.JSONDecodeError, KeyError, TypeError):
            continue
    atomic_write(path, "".join(line + "\n" for line in kept).encode())
    return len(lines) - len(kept)


def checkpoint_dirs(run_dir: Path) -> list[Path]:
    """The complete checkpoints kept, newest first: `checkpoint/` and the previous one, `checkpoint.old/`."""
    return [run_dir / name for name in ("checkpoint", "checkpoint.old") if (run_dir / name / "meta.json").is_file()]


class Run:
    """The run folder `dir`: a new one with its config.json, or the one --resume names. It receives metrics.jsonl,
    mirrored to TensorBoard and, with --track, to W&B; population.jsonl, created at the first population event (only
    EauDe runs have one); and crash-safe checkpoints. It also prints the progress line."""

    def __init__(self, args: Args) -> None:
        self.args, self.population, self.wandb, self.stop_signal = args, None, None, 0
        if args.resume:
            self.dir = Path(args.resume)
            self.hold_lock()
            return
        env = args.env_id.replace("/", "-")  # MinAtar/Breakout-v1 names one folder, not two
        output_dir, name = Path(args.output_dir), f"{env}__{args.exp_name}__{args.seed}__{int(time.time())}"
        try:
            output_dir.mkdir(parents=True, exist_ok=True)
            for attempt in itertools.count(1):  # runs of the same name started in the same second get -2, -3, ...
                self.dir = output_dir / (name if attempt == 1 else f"{name}-{attempt}")
                with contextlib.suppress(FileExistsError):
                    self.dir.mkdir()  # atomic: two runs never take the same folder
                    break
        except OSError as error:
            print(f"error: --output-dir: cannot create a run folder in {args.output_dir!r} ({error})", file=sys.stderr)
            raise SystemExit(2) from None
        self.hold_lock()
        with self.writing("config.json"):
            atomic_write(self.dir / "config.json", json.dumps(run_config(args), indent=2).encode())

    def hold_lock(self) -> None:
        """One writer per run folder: this process holds an exclusive lock on run.lock for its whole life, which the OS
        releases when it dies (kill -9 too, so no stale lock). A second writer stops before touching anything."""
        self.lock = open(self.dir / "run.lock", "a+")  # held open: the lock lasts as long as the process
        try:
            fcntl.flock(self.lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = Path(self.lock.name).read_text().strip() or "another process"
            print(f"error: {self.dir} is being written by process {holder}: wait for it to end", file=sys.stderr)
            raise SystemExit(2) from None
        except OSError as error:  # e.g. Lustre mounted without -o flock (docs/reliability.md)
            print(f"warning: cannot lock {self.lock.name} ({error}): nothing stops a second writer", file=sys.stderr)
        self.lock.truncate(0)
        print(f"{os.getpid()} on {platform.node()}", file=self.lock, flush=True)  # named by a refused second writer

    @contextlib.contextmanager
    def writing(self, what: str) -> Iterator[None]:
        """A full disk or another OSError while writing `what`: one `error:` line, exit code 4, the last checkpoint whole
        and no checkpoint.tmp/. os._exit: tensorboardX's exit hook and thread would fail on the same disk, loudly."""
        try:
            yield
        except OSError as error:
            shutil.rmtree(self.dir / "checkpoint.tmp", ignore_errors=True)
            then = f"continue with --resume {self.dir}" if checkpoint_dirs(self.dir) else "start the run again"
            print(f"error: cannot write {what} in {self.dir} ({error}); {then} once this is fixed", file=sys.stderr)
            sys.stdout.flush()
            os._exit(4)

    def open_logs(self, counters: dict[str, Any]) -> None:
        """Log from the loop counters on (a resumed run continues its clock, and TensorBoard purges the events written
        after the checkpoint); with --track, every scalar also goes to W&B against global_step, as in TensorBoard
        (sync_tensorboard would need the tensorboard package)."""
        from tensorboardX import SummaryWriter

        step, args = counters["global_step"], self.args
        self.start = time.time() - counters["elapsed"]
        self.window_time, self.window_step, self.last_print = time.time(), step, 0.0
        self.metrics = open(self.dir / "metrics.jsonl", "a", buffering=1)
        self.writer = SummaryWriter(str(self.dir), purge_step=step if args.resume else None)

        def events_failed(hook: threading.ExceptHookArgs) -> None:  # tensorboardX writes its events from a thread
            with self.writing("the TensorBoard events"):
                raise hook.exc_value

        threading.excepthook = events_failed
        if args.track:
            import wandb

            wandb.init(project=args.wandb_project_name, entity=args.wandb_entity, config=asdict(args),
                       name=self.dir.name, id=self.dir.name, resume="allow", save_code=True)  # fmt: skip
            wandb.define_metric("global_step")
            wandb.define_metric("*", step_metric="global_step")
            self.wandb = wandb

    def elapsed(self) -> float:
        return time.time() - self.start

    def scalar(self, name: str, value: float, step: int) -> None:
        record = {"global_step": int(step), "name": name, "value": float(value), "time": round(self.elapsed(), 3)}
        with self.writing("metrics.jsonl"):
            self.metrics.write(json_line(record))
        if math.isfinite(value):  # tensorboardX would print a warning for each non-finite value
            self.writer.add_scalar(name, float(value), int(step))
            if self.wandb is not None:
                self.wandb.log({name: float(value), "global_step": int(step)})

    def progress(self, step: int, total: int, details: str, extra_seconds: float = 0.0) -> None:
        """Log charts/SPS over the steps since the previous call; print a progress line every 10 s and at the end
        (`extra_seconds`: time still to spend outside the counted steps, for the ETA)."""
        sps = (step - self.window_step) / max(time.time() - self.window_time, 1e-9)
        self.scalar("charts/SPS", sps, step)
        if time.time() - self.last_print > 10 or step >= total:
            eta = int(max((total - step) / max(sps, 1e-9) + extra_seconds, 0))
            eta_text = f"{eta // 3600}h{eta // 60 % 60:02d}m{eta % 60:02d}s"
            print(f"step {step:,}/{total:,} ({100 * step / total:.1f}%) | {sps:,.0f} SPS | ETA {eta_text} | {details}",
                  flush=True)  # fmt: skip
            self.last_print = time.time()
        self.window_time, self.window_step = time.time(), step

    def population_event(self, event: dict[str, Any]) -> None:
        with self.writing("population.jsonl"):
            if self.population is None:
                self.population = open(self.dir / "population.jsonl", "a", buffering=1)
            self.population.write(json_line(event))

    def save_checkpoint(self, state: dict[str, Any], counters: dict[str, Any]) -> None:
        """Written into checkpoint.tmp/, then swapped in by renames keeping the previous one as checkpoint.old/: a crash
        at any point leaves a whole checkpoint, and a checkpoint damaged later has one to fall back to."""
        with self.writing("a checkpoint"):
            tmp, final, old = self.dir / "checkpoint.tmp", self.dir / "checkpoint", self.dir / "checkpoint.old"
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir()
            atomic_write(tmp / "state.msgpack", flax.serialization.to_bytes(state))
            atomic_write(tmp / "meta.json", json.dumps(counters).encode())  # last: it marks the checkpoint whole
            if final.exists():
                shutil.rmtree(old, ignore_errors=True)
                final.rename(old)
            tmp.rename(final)

    def resume(self, template: dict[str, Any], rng: np.random.Generator) -> tuple[dict, dict]:
        """Restore the state and the numpy generator from the newest checkpoint that reads back whole (a damaged one
        falls back to the previous one; --resume reloads the dataset) and drop the log lines written after it or torn by
        a kill, so that no step is logged twice. Returns the state and the loop counters."""
        damaged = []
        for path in checkpoint_dirs(self.dir):
            file = path / "state.msgpack"  # the file being read, named by the error
            try:
                state = flax.serialization.from_bytes(template, file.read_bytes())
                counters = json.loads((file := path / "meta.json").read_text())
                rng.bit_generator.state = counters["rng_state"]  # here, so that a damaged meta.json is caught
                break
            except Exception as error:  # msgpack and json each raise their own errors on a truncated file
                damaged.append(f"{file} is damaged ({type(error).__name__}: {error})")
        else:
            print(f"error: --resume: {'; '.join(damaged)} and no earlier checkpoint is left", file=sys.stderr)
            raise SystemExit(2)
        if damaged:
            print(f"warning: {damaged[0]}; resuming from the previous checkpoint {path}", file=sys.stderr, flush=True)
        logs = (self.dir / "metrics.jsonl", self.dir / "population.jsonl")
        with self.writing("the logs"):
            dropped = sum(truncate_jsonl(log, counters["global_step"]) for log in logs)
        if dropped:
            print(f"resume: dropped {dropped} log lines written after the checkpoint or torn by a kill", flush=True)
        print(f"resumed {self.dir.name} at step {counters['global_step']:,}", flush=True)
        return jax.tree.map(jnp.asarray, state), counters  # msgpack gives numpy arrays; .at[] needs jax ones

    def watch_signals(self) -> None:
        """Ctrl-C (SIGINT) or SIGTERM (e.g. Slurm pre-emption) sets `stop_signal`: the training loop saves a checkpoint
        after the current step and exits with 128 + the signal number; a second Ctrl-C stops at once."""

        def handler(signum: int, _frame: Any) -> None:
            if self.stop_signal:
                raise KeyboardInterrupt
            self.stop_signal = signum

        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, handler)

    def log_videos(self, video_dir: Path, eval_episodes: int, step: int) -> None:
        """--track --capture-video: the evaluation videos go to W&B as media, one key per episode, in a row whose
        `global_step` (the scalars' x-axis) is the run's last step."""
        paths = [video_dir / f"eval-episode-{episode}.mp4" for episode in range(eval_episodes)]
        videos = {f"eval/video-{i}": self.wandb.Video(str(path)) for i, path in enumerate(paths) if path.exists()}
        if videos:  # no empty row when no episode was filmed
            self.wandb.log(videos | {"global_step": step})

    def close(self, code: int = 0, message: str = "") -> None:
        """Close the logs; a run stopped early (diverged, interrupted) then exits with `code` and one stderr line."""
        self.metrics.close()
        if self.population is not None:
            self.population.close()
        self.writer.close()
        self.lock.close()  # the folder is free: main() called again in this process (a test, a notebook) may resume it
        if code:
            print(message, file=sys.stderr)
            raise SystemExit(code)
        if self.wandb is not None:
            self.wandb.finish()


# ---- Evaluation: the greedy policy in the environment (Machado protocol), after every epoch and for the saved model
def evaluate_policy(
    q_values: Any, params: Any, env_id: str, eval_episodes: int, seed: int, epsilon: float,
    max_episode_steps: int = 27_000, video_dir: Path | None = None,
) -> list[float]:  # fmt: skip
    """Raw game scores of `eval_episodes` epsilon-greedy episodes played in parallel, one per env (env i's first
    episode only, so short episodes are not over-represented). `q_values(params, obs)` is a jitted network."""
    envs = make_env(env_id, eval_episodes, seed, render=video_dir is not None, max_episode_steps=max_episode_steps)
    rng, (obs, info) = np.random.default_rng(seed), envs.reset()
    returns, done = np.zeros(eval_episodes), np.zeros(eval_episodes, dtype=bool)
    frames: list[list[np.ndarray]] = [[] for _ in range(eval_episodes)]
    while not done.all():
        # the dataset's stacks start with zeros ([0, 0, 0, o_0]); envpool repeats o_0: show the agent the data's state
        obs = zero_fill_reset_frames(obs, info["elapsed_step"])
        if video_dir is not None:
            running = np.flatnonzero(~done)
            for env, frame in zip(running, envs.render(env_ids=running.tolist()), strict=True):
                frames[env].append(frame)
        actions = np.asarray(jnp.argmax(q_values(params, obs), axis=1))
        explore = rng.random(eval_episodes) < epsilon
        actions = np.where(explore, rng.integers(envs.action_space.n, size=eval_episodes), actions)
        obs, _, terminated, truncated, info = envs.step(actions)
        returns += np.where(done, 0.0, info["reward"])  # raw game score; finished envs are only autoresetting
        finished = ~done & (terminated | truncated)
        for env in np.flatnonzero(finished) if video_dir is not None else []:
            write_video(video_dir / f"eval-episode-{env}.mp4", frames[env])
            frames[env] = []  # the memory of a long episode's frames
        done |= finished
    envs.close()
    return returns.tolist()


def evaluate(
    model_path: Path, env_id: str, eval_episodes: int, seed: int, epsilon: float, network_size: str,
    video_dir: Path | None = None, max_episode_steps: int = 27_000,
) -> list[float]:  # fmt: skip
    """Play `eval_episodes` episodes with the epsilon-greedy policy of a saved `.cleanrl_model`; raw game scores."""
    num_actions = envpool.make_spec(env_id, full_action_space=False).action_space.n
    network = QNetwork(action_dim=num_actions, head_width=HEAD_WIDTHS[network_size])
    template = network.init(jax.random.PRNGKey(0), np.zeros((1, 4, 84, 84), np.uint8))
    params = flax.serialization.from_bytes(template, model_path.read_bytes())
    policy = (jax.jit(network.apply), params, env_id, eval_episodes, env_seed(seed, purpose=1), epsilon)
    returns = evaluate_policy(*policy, max_episode_steps, video_dir)
    for episode, value in enumerate(returns):
        print(f"eval episode {episode + 1}/{eval_episodes}: return {value:.1f}", flush=True)
    return returns


def write_video(path: Path, frames: list[np.ndarray], fps: int = 15) -> None:
    import imageio.v2 as imageio

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(".tmp-" + path.name)
    with warnings.catch_warnings():  # imageio-ffmpeg starts ffmpeg with fork; JAX warns about any fork
        warnings.filterwarnings("ignore", message="os.fork", category=RuntimeWarning)
        imageio.mimwrite(tmp, frames, fps=fps, macro_block_size=1, format="FFMPEG")
    os.replace(tmp, path)


def save_and_evaluate(args: Args, run: Run, target_params: Any, step: int) -> None:
    """--save-model: the target network's params (pruned weights are exact zeros), then its evaluation episodes."""
    model_path = run.dir / f"{args.exp_name}.cleanrl_model"
    with run.writing(model_path.name):
        atomic_write(model_path, flax.serialization.to_bytes(target_params))
    print(f"model saved to {model_path} (target sparsity {measured_sparsity(target_params):.4f})", flush=True)
    if args.eval_episodes > 0:
        video_dir = Path("videos") / run.dir.name if args.capture_video else None
        evaluation = (args.seed, args.eval_epsilon, args.network_size, video_dir, args.eval_max_episode_steps)
        for value in evaluate(model_path, args.env_id, args.eval_episodes, *evaluation):
            run.scalar("eval/episodic_return", value, step)


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:  # a second Ctrl-C, or one outside the training loop
        print("error: interrupted", file=sys.stderr)
        raise SystemExit(130) from None
