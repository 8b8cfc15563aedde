"""Eau De Deep Q-Network (EauDeDQN) on Atari: adaptive dense-to-sparse DQN, Algorithm 1 of the paper.

K online networks of different sparsities learn against one shared target. Every T env steps the network with the
smallest cumulated loss becomes the target (Alg. 1 l. 12), elitist tournaments select a new population (l. 14) and
every copy is pruned to a sparsity drawn from Eq. 3 (l. 15): the schedule follows the agent's learning pace instead of
being fixed in advance. Run `uv run python eaudedqn_atari_jax.py --env-id Pong-v5`; flags: --help, docs/contract.md.
"""

import contextlib
import fcntl
import functools
import io
import itertools
import json
import math
import os
import platform
import shutil
import signal
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Iterator
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
    seed: int = 1  # seed of the experiment: networks, replay sampling, exploration and the environments derive from it
    env_id: str = "Pong-v5"  # the envpool Atari id, e.g. Pong-v5, SpaceInvaders-v5
    track: bool = False  # log every scalar and the evaluation videos to Weights & Biases
    wandb_project_name: str = "eaudeqn"  # the wandb project name
    wandb_entity: str | None = None  # the wandb entity (team)
    capture_video: bool = False  # film the saved model's evaluation episodes to videos/<run_name>/ (needs --save-model)
    save_model: bool = False  # save the target network's params to <run_dir>/<exp_name>.cleanrl_model and evaluate them
    output_dir: str = "runs"  # folder that receives one sub-folder per run
    checkpoint_interval: int = 250_000  # env steps between checkpoints for --resume (0 disables); one per 250k epoch
    resume: str | None = None  # continue the run saved in this run folder (its config.json sets every other argument)

    total_timesteps: int = 10_000_000  # t_final, env steps (agent steps of 4 frames): 40 epochs of 250k (Table 3)
    learning_rate: float = 6.25e-5  # Adam learning rate (Table 3)
    adam_eps: float = 1.5e-4  # Adam epsilon (Table 3)
    num_envs: int = 1  # parallel envpool environments; one gradient step per G env steps is kept for any value
    buffer_size: int = 1_000_000  # replay capacity in transitions, FIFO (Table 3)
    gamma: float = 0.99  # discount factor
    target_network_frequency: int = 8_000  # T, env steps between target updates, tournaments and exploration (Table 3)
    batch_size: int = 32  # mini-batch size
    start_e: float = 1.0  # initial epsilon of epsilon-greedy
    end_e: float = 0.01  # final epsilon of epsilon-greedy
    exploration_steps: int = 250_000  # env steps of linear decay from start-e to end-e after the warm-up (Table 3)
    learning_starts: int = 20_000  # env steps of experience collected before learning starts (Table 3)
    train_frequency: int = 4  # G, env steps per gradient step (Table 3)
    eval_episodes: int = 10  # greedy episodes played by the saved model at the end (with --save-model)
    eval_epsilon: float = 0.001  # epsilon of the evaluation policy

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
    """Reject invalid arguments before any environment or JAX work (docs/contract.md, Errors)."""
    checks = [
        (args.seed >= 0, "--seed", "must be non-negative"),
        (args.total_timesteps > 0, "--total-timesteps", "must be positive"),
        (args.num_networks >= 1, "--num-networks", "K must be at least 1"),
        (1 <= args.tournament_size <= args.num_networks, "--tournament-size", "M must be in [1, K]"),
        (args.u_max > 0, "--u-max", "U_max must be positive"),
        (0 < args.s_max <= 1, "--s-max", "S_max must be in (0, 1]"),
        (0 < args.learning_rate < math.inf, "--learning-rate", "must be a positive finite number"),
        (0 < args.adam_eps < math.inf, "--adam-eps", "must be a positive finite number"),
        (0 <= args.gamma <= 1, "--gamma", "must be in [0, 1]"),
        (args.num_envs >= 1, "--num-envs", "must be at least 1"),
        (args.batch_size >= 1, "--batch-size", "must be at least 1"),
        (args.buffer_size >= 8 * args.num_envs, "--buffer-size", "must hold at least 8 entries per environment"),
        (args.buffer_size >= args.batch_size, "--buffer-size", "must hold at least one --batch-size of transitions"),
        (args.buffer_size >= args.learning_starts, "--buffer-size", "must hold the --learning-starts warm-up"),
        (args.learning_starts >= 0, "--learning-starts", "must be non-negative"),
        (args.train_frequency >= 1, "--train-frequency", "G must be at least 1"),
        (args.target_network_frequency >= 1, "--target-network-frequency", "T must be at least 1"),
        (0 <= args.end_e <= 1 and 0 <= args.start_e <= 1, "--start-e/--end-e", "must be in [0, 1]"),
        (args.exploration_steps >= 0, "--exploration-steps", "must be non-negative"),
        (args.eval_episodes >= 0, "--eval-episodes", "must be non-negative"),
        (0 <= args.eval_epsilon <= 1, "--eval-epsilon", "must be in [0, 1]"),
        (args.checkpoint_interval >= 0, "--checkpoint-interval", "must be non-negative (0 disables)"),
    ]
    for ok, flag, message in checks:
        if not ok:
            raise ArgumentError(f"{flag}: {message}")
    if args.env_id not in envpool.list_all_envs():
        raise ArgumentError(f"--env-id: unknown environment {args.env_id!r} (envpool Atari ids look like 'Pong-v5')")
    if type(envpool.make_spec(args.env_id)).__name__ != "AtariEnvSpec":
        raise ArgumentError(f"--env-id: {args.env_id!r} is not an Atari game; this script needs e.g. 'Pong-v5'")


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


def make_env(env_id: str, num_envs: int, seed: int, render: bool = False) -> Any:
    """Vectorised Atari env. envpool autoresets on the NEXT step: the step that ends an episode returns its true last
    observation; the following step ignores the action and returns the reset observation with reward 0."""
    render_mode = "rgb_array" if render else None
    return envpool.make(env_id, env_type="gymnasium", num_envs=num_envs, seed=seed, render_mode=render_mode,
                        **MACHADO_PROTOCOL)  # fmt: skip


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


# ---- Replay buffer: each frame stored once (about 7.1 KB per transition) ---------------------------------------------
class ReplayBuffer:
    """FIFO replay that stores each observation's newest frame once, in one ring of entries per env, and rebuilds
    4-frame stacks when sampling. An episode's true last observation is an entry of its own (`last`): truncated
    transitions bootstrap from it, never from a reset frame (CleanRL issue 460), and no transition starts there.
    `history` counts the earlier frames of the same episode a stack may use; older slots are zero-filled, so no stack
    crosses an episode start."""

    def __init__(self, capacity: int, num_envs: int, frame_shape: tuple[int, int] = (84, 84), stack: int = 4) -> None:
        self.num_envs, self.stack = num_envs, stack
        self.capacity = capacity // num_envs  # entries per env
        shape = (num_envs, self.capacity)
        self.frames = np.zeros((*shape, *frame_shape), dtype=np.uint8)
        self.actions = np.zeros(shape, dtype=np.int32)
        self.rewards = np.zeros(shape, dtype=np.float32)
        self.terminated = np.zeros(shape, dtype=bool)  # the step from entry i ended the game
        self.last = np.zeros(shape, dtype=bool)  # entry i is an episode's final observation
        self.history = np.zeros(shape, dtype=np.uint8)
        self.cursor, self.size = 0, 0  # cursor: the next entry to write (all envs write in lockstep)

    def add_first(self, frames: np.ndarray) -> None:
        """Store the first observations after a reset (or a resume)."""
        self._write(frames, history=np.zeros(self.num_envs, np.uint8), last=np.zeros(self.num_envs, bool))

    def add(self, actions: np.ndarray, rewards: np.ndarray, terminated: np.ndarray, truncated: np.ndarray,
            next_frames: np.ndarray, reset: np.ndarray) -> None:  # fmt: skip
        """Record one env step: the action, reward and termination of the previous entry, and the new frame.
        `reset` marks envs whose step was envpool's autoreset step: their new frame starts an episode."""
        prev = (self.cursor - 1) % self.capacity
        env = np.arange(self.num_envs)
        self.actions[env, prev], self.rewards[env, prev] = actions, rewards
        self.terminated[env, prev] = terminated & ~reset
        history = np.where(reset, 0, np.minimum(self.history[env, prev] + 1, self.stack - 1)).astype(np.uint8)
        self._write(next_frames, history=history, last=(terminated | truncated) & ~reset)

    def _write(self, frames: np.ndarray, history: np.ndarray, last: np.ndarray) -> None:
        self.frames[:, self.cursor] = frames
        self.history[:, self.cursor] = history
        self.last[:, self.cursor] = last
        self.terminated[:, self.cursor] = False
        self.cursor = (self.cursor + 1) % self.capacity
        self.size = min(self.size + 1, self.capacity)

    def end_partial_episodes(self) -> None:
        """Mark the newest entries as episode ends: after a resume the env restarts, so no transition leaves them."""
        self.last[:, (self.cursor - 1) % self.capacity] = True

    def stacks(self, env: np.ndarray, index: np.ndarray) -> np.ndarray:
        """(B, stack, H, W) observations of entries `index`, zero-filled before the episode start."""
        offsets = np.arange(-self.stack + 1, 1)
        frames = self.frames[env[:, None], (index[:, None] + offsets) % self.capacity]
        keep = (-offsets)[None, :] <= self.history[env, index][:, None]
        return frames * keep[:, :, None, None].astype(np.uint8)

    def valid(self, env: np.ndarray, age: np.ndarray) -> np.ndarray:
        """Whether the entry `age` places after the oldest one starts a transition with a stored next entry."""
        oldest = self.cursor if self.size == self.capacity else 0
        index = (oldest + age) % self.capacity
        # when full, the 3 oldest entries may lack their earlier frames (overwritten): skip them like Dopamine does
        ok = (age < self.size - 1) & ~self.last[env, index]
        if self.size == self.capacity:
            ok &= age >= self.stack - 1
        return ok

    def sample(self, batch_size: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """Uniform mini-batch over valid transitions (rejection sampling; invalid entries are rare)."""
        env, age = np.empty(0, np.int64), np.empty(0, np.int64)
        for _ in range(1000):
            if len(env) >= batch_size:
                break
            e, a = rng.integers(self.num_envs, size=2 * batch_size), rng.integers(self.size, size=2 * batch_size)
            ok = self.valid(e, a)
            env, age = np.concatenate([env, e[ok]]), np.concatenate([age, a[ok]])
        else:
            raise RuntimeError("the replay buffer holds no complete transition yet: raise --learning-starts")
        env, age = env[:batch_size], age[:batch_size]
        index = ((self.cursor if self.size == self.capacity else 0) + age) % self.capacity
        return {
            "observations": self.stacks(env, index),
            "actions": self.actions[env, index],
            "rewards": self.rewards[env, index],
            "terminations": self.terminated[env, index].astype(np.float32),
            "next_observations": self.stacks(env, (index + 1) % self.capacity),
        }

    def state_dict(self) -> dict[str, Any]:
        names = ("frames", "actions", "rewards", "terminated", "last", "history")
        return {**{n: getattr(self, n) for n in names}, "cursor": self.cursor, "size": self.size}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for name, value in state.items():
            setattr(self, name, value if isinstance(value, np.ndarray) and value.ndim else int(value))


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


# ---- Population: behaviour network (Fig. 3 right), exploitation (Fig. 3 left), exploration (Eq. 3) -------------------
def behaviour_probabilities(cumulated_losses: jax.Array) -> jax.Array:
    """p_k proportional to 1 / L_k (Alg. 1 l. 3): uniform when all L are 0; NaN or inf losses get probability 0."""
    inverse = 1.0 / (cumulated_losses + 1e-6)
    inverse = jnp.where(jnp.isfinite(inverse) & (cumulated_losses >= 0), inverse, 0.0)
    total = inverse.sum()
    return jnp.where(total > 0, inverse / jnp.where(total > 0, total, 1.0), 1.0 / inverse.size)


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


# ---- Update: one jitted gradient step for all K networks against the shared target (Alg. 1 l. 6-10) ------------------
def make_train_step(network: QNetwork, optimizer: optax.GradientTransformation, gamma: float, layout: str) -> Any:
    @jax.value_and_grad
    def loss_and_grad(params: Any, observations: jax.Array, actions: jax.Array, targets: jax.Array) -> jax.Array:
        q_taken = jnp.take_along_axis(network.apply(params, observations), actions[:, None], axis=1)[:, 0]
        return jnp.mean((targets - q_taken) ** 2)  # Alg. 1 l. 9 (mean instead of sum, docs/implementation-notes.md)

    @jax.jit
    def train_step(learner, batch):
        params, opt_states, cumulated_losses = learner["params"], learner["opt_states"], learner["cumulated_losses"]
        # Alg. 1 l. 7: the target is computed once and shared by the K online networks
        next_q = network.apply(learner["target_params"], batch["next_observations"]).max(axis=1)
        targets = batch["rewards"] + gamma * (1.0 - batch["terminations"]) * next_q
        inputs = (batch["observations"], batch["actions"], targets)
        if layout == "vmap":
            losses, grads = jax.vmap(loss_and_grad, in_axes=(0, None, None, None))(params, *inputs)
        else:  # unrolled: K separate graphs in one program (faster than vmap for convolutions on CPU)
            outputs = [loss_and_grad(take(params, k), *inputs) for k in range(cumulated_losses.shape[0])]
            losses, grads = jax.tree.map(lambda *x: jnp.stack(x), *outputs)
        updates, opt_states = jax.vmap(optimizer.update)(grads, opt_states, params)
        params = apply_masks(optax.apply_updates(params, updates), learner["masks"])  # pruned weights stay zero
        learner = {**learner, "params": params, "opt_states": opt_states, "cumulated_losses": cumulated_losses + losses}
        return learner, losses  # Alg. 1 l. 10: L_k += loss_k

    return train_step


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


def make_act(network: QNetwork) -> Any:
    @jax.jit
    def act(params, cumulated_losses, observations, key):
        """Greedy actions of one online network drawn with probability proportional to 1 / L (Alg. 1 l. 3)."""
        index = jax.random.choice(key, cumulated_losses.shape[0], p=behaviour_probabilities(cumulated_losses))
        return jnp.argmax(network.apply(take(params, index), observations), axis=1)

    return act


def epsilon_greedy(
    epsilon: float, num_actions: int, num_envs: int, greedy_actions: Any, rng: np.random.Generator
) -> np.ndarray:
    """Alg. 1 l. 3: a uniformly random action with probability epsilon, else the greedy action of the behaviour
    network (`greedy_actions()`, only called when some env acts greedily)."""
    actions = rng.integers(num_actions, size=num_envs)
    greedy = rng.random(num_envs) >= epsilon
    return np.where(greedy, greedy_actions(), actions) if greedy.any() else actions


def gradient_steps_due(step: int, args: Args) -> int:
    """Alg. 1 l. 5: one gradient step per G env steps once the --learning-starts warm-up is over."""
    return max(step - args.learning_starts, 0) // args.train_frequency


def epsilon_schedule(step: int, args: Args) -> float:
    """Dopamine's linearly decaying epsilon with warm-up: start-e during the --learning-starts warm-up, then linear
    to end-e over --exploration-steps (the paper's code base, built on Dopamine, acts so)."""
    if args.exploration_steps == 0:
        return args.end_e if step >= args.learning_starts else args.start_e
    fraction = min(max((step - args.learning_starts) / args.exploration_steps, 0.0), 1.0)
    return args.start_e + fraction * (args.end_e - args.start_e)


# ---- Training loop ---------------------------------------------------------------------------------------------------
DIVERGED = "the run diverged (try a lower --learning-rate); its last checkpoint is kept"


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    run = Run(args)
    K, T = args.num_networks, args.target_network_frequency
    auto_layout = "loop" if jax.default_backend() == "cpu" else "vmap"  # the faster one measured on each backend
    layout = auto_layout if args.population_layout == "auto" else args.population_layout

    # ---- environment, networks, optimizer (Alg. 1 l. 1)
    envs = make_env(args.env_id, args.num_envs, env_seed(args.seed, purpose=0))
    num_actions = envs.action_space.n
    network = QNetwork(action_dim=num_actions, head_width=HEAD_WIDTHS[args.network_size])
    optimizer = optax.adam(args.learning_rate, eps=args.adam_eps)
    learner = init_learner(network, optimizer, jax.random.PRNGKey(args.seed), K, np.zeros((1, 4, 84, 84), np.uint8))
    rb, rng = ReplayBuffer(args.buffer_size, args.num_envs), np.random.default_rng(args.seed)
    train_step, act = make_train_step(network, optimizer, args.gamma, layout), make_act(network)
    num_params = sum(leaf.size for leaf in jax.tree.leaves(learner["target_params"]))
    setup = f"K={K} online networks of {num_params:,} parameters ({args.network_size}), {layout} layout"
    print(f"{run.dir.name}: {setup} on {jax.default_backend()}; outputs in {run.dir}", flush=True)
    meta = {"global_step": 0, "grad_steps": 0, "episodes": 0, "sparsities": [0.0] * K, "elapsed": 0.0}
    meta["next_target_update"] = (args.learning_starts // T + 1) * T
    if args.resume:
        learner, meta = run.resume(learner, rb, rng)
        rb.end_partial_episodes()  # the env restarts: no transition leaves the newest entries
        envs = make_env(args.env_id, args.num_envs, env_seed(args.seed, purpose=0, step=meta["global_step"]))
    global_step, grad_steps, episodes = meta["global_step"], meta["grad_steps"], meta["episodes"]
    next_target_update, sparsities = meta["next_target_update"], np.array(meta["sparsities"])  # nominal sparsities
    run.open_logs(meta)
    target_sparsity = measured_sparsity(learner["target_params"])
    if global_step == 0:
        run.scalar("sparsity/target", target_sparsity, 0)
    every = args.checkpoint_interval  # --checkpoint-interval 0 disables checkpoints
    next_checkpoint = (global_step // every + 1) * every if every > 0 else None

    def checkpoint() -> None:
        counters = {"global_step": global_step, "grad_steps": grad_steps, "episodes": episodes}
        counters |= {"next_target_update": next_target_update, "sparsities": sparsities.tolist()}
        run.save_checkpoint(learner, rb, counters | {"elapsed": run.elapsed(), "rng_state": rng.bit_generator.state})

    def behaviour_actions() -> np.ndarray:
        learner["key"], act_key = jax.random.split(learner["key"])
        return np.asarray(act(learner["params"], learner["cumulated_losses"], obs, act_key))

    obs, info = envs.reset()
    obs = zero_fill_reset_frames(obs, info["elapsed_step"])
    rb.add_first(obs[:, -1])
    episode_returns, episode_lengths = np.zeros(args.num_envs), np.zeros(args.num_envs, np.int64)
    resetting = np.zeros(args.num_envs, dtype=bool)  # envs whose next step is envpool's autoreset step
    last_return, last_losses = float("nan"), None
    run.watch_signals()
    while global_step < args.total_timesteps:
        # ---- act (Alg. 1 l. 3): epsilon-greedy on top of a network drawn proportionally to 1 / L
        epsilon = epsilon_schedule(global_step, args)
        actions = epsilon_greedy(epsilon, num_actions, args.num_envs, behaviour_actions, rng)
        obs, rewards, terminated, truncated, info = envs.step(actions)
        obs = zero_fill_reset_frames(obs, info["elapsed_step"])

        # ---- store (Alg. 1 l. 4); autoreset steps are not interactions: they are neither stored nor counted
        rb.add(actions, rewards, terminated, truncated, obs[:, -1], reset=resetting)  # Alg. 1 l. 4
        live = ~resetting
        episode_returns += np.where(live, info["reward"], 0.0)  # raw game score (rewards are clipped for learning)
        episode_lengths += live
        previous_step, global_step = global_step, global_step + int(live.sum())
        resetting = live & (terminated | truncated)
        for env in np.flatnonzero(resetting):
            episodes, last_return = episodes + 1, float(episode_returns[env])
            run.scalar("charts/episodic_return", last_return, global_step)
            run.scalar("charts/episodic_length", int(episode_lengths[env]), global_step)
            episode_returns[env], episode_lengths[env] = 0.0, 0

        # ---- learn (Alg. 1 l. 5-10): one gradient step per G env steps, for all K networks at once
        while grad_steps < gradient_steps_due(global_step, args):
            learner, last_losses = train_step(learner, rb.sample(args.batch_size, rng))
            grad_steps += 1
            if not np.isfinite(np.asarray(learner["cumulated_losses"])).any():  # one NaN network only loses l. 12
                run.scalar("losses/td_loss", float(jnp.mean(last_losses)), global_step)
                run.close(3, f"error: every network's loss is non-finite at step {global_step:,}: {DIVERGED}")

        # ---- every T steps (Alg. 1 l. 11-16): target update, exploitation, exploration, loss reset
        if global_step >= next_target_update:
            learner, sparsities, event = population_step(
                learner, sparsities, global_step, args.total_timesteps, args, optimizer, rng
            )
            run.population_event(event)
            target_sparsity = measured_sparsity(learner["target_params"])
            run.scalar("sparsity/target", target_sparsity, global_step)
            run.scalar("population/sparsity_max", float(sparsities.max()), global_step)
            next_target_update += args.target_network_frequency

        # ---- log every 1000 steps, checkpoint, stop on a signal
        if global_step // 1000 > previous_step // 1000:
            details = f"eps {epsilon:.3f} | episodes {episodes} | last return {last_return:.1f}"
            run.progress(global_step, args.total_timesteps, f"{details} | target sparsity {target_sparsity:.3f}")
            run.scalar("charts/epsilon", epsilon, global_step)
            if last_losses is not None:
                run.scalar("losses/td_loss", float(jnp.mean(last_losses)), global_step)
        if next_checkpoint is not None and global_step >= next_checkpoint:
            checkpoint()
            next_checkpoint += args.checkpoint_interval
        if run.stop_signal:
            checkpoint()
            resume = f"continue with: python {Path(__file__).name} --resume {run.dir}"
            run.close(128 + run.stop_signal, f"interrupted at step {global_step:,}; checkpoint saved, {resume}")

    envs.close()
    if next_checkpoint is not None:
        checkpoint()  # a finished run can still be extended or inspected
    if args.save_model:
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

    def progress(self, step: int, total: int, details: str) -> None:
        """Log charts/SPS over the steps since the previous call; print a progress line every 10 s and at the end."""
        sps = (step - self.window_step) / max(time.time() - self.window_time, 1e-9)
        self.scalar("charts/SPS", sps, step)
        if time.time() - self.last_print > 10 or step >= total:
            eta = int(max((total - step) / max(sps, 1e-9), 0))
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

    def save_checkpoint(self, state: dict[str, Any], replay: ReplayBuffer, counters: dict[str, Any]) -> None:
        """Written into checkpoint.tmp/, then swapped in by renames keeping the previous one as checkpoint.old/: a crash
        at any point leaves a whole checkpoint, and a checkpoint damaged later has one to fall back to."""
        with self.writing("a checkpoint"):
            tmp, final, old = self.dir / "checkpoint.tmp", self.dir / "checkpoint", self.dir / "checkpoint.old"
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir()
            for name, value in replay.state_dict().items():
                np.save(tmp / f"replay_{name}.npy", np.asarray(value))
            atomic_write(tmp / "state.msgpack", flax.serialization.to_bytes(state))
            atomic_write(tmp / "meta.json", json.dumps(counters).encode())  # last: it marks the checkpoint whole
            if final.exists():
                shutil.rmtree(old, ignore_errors=True)
                final.rename(old)
            tmp.rename(final)

    def resume(self, template: dict[str, Any], replay: ReplayBuffer, rng: np.random.Generator) -> tuple[dict, dict]:
        """Restore the state, the replay buffer and the numpy generator from the newest checkpoint that reads back
        whole (a damaged one falls back to the previous one) and drop the log lines written after it or torn by a kill,
        so that no step is logged twice. Returns the state and the loop counters."""
        damaged = []
        for path in checkpoint_dirs(self.dir):
            file = path / "state.msgpack"  # the file being read, named by the error
            try:
                state = flax.serialization.from_bytes(template, file.read_bytes())
                replay_state = {name: np.load(file := path / f"replay_{name}.npy") for name in replay.state_dict()}
                for name, value in replay.state_dict().items():  # rows of another shape would only fail mid-run
                    shape, expected = np.shape(replay_state[name]), np.shape(value)
                    if len(shape) != len(expected) or shape[1:] != expected[1:]:  # SAC saves the filled rows only
                        file = path / f"replay_{name}.npy"
                        raise ValueError(f"shape {shape} does not fit the buffer's {expected}")
                counters = json.loads((file := path / "meta.json").read_text())
                rng.bit_generator.state = counters["rng_state"]  # here, so that a damaged meta.json is caught
                replay.load_state_dict(replay_state)  # last: a damaged checkpoint leaves the buffer alone
                break
            except Exception as error:  # msgpack, numpy and json each raise their own errors on a truncated file
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


# ---- Evaluation of the saved model -----------------------------------------------------------------------------------
def evaluate(model_path: Path, env_id: str, eval_episodes: int, seed: int, epsilon: float, network_size: str,
             video_dir: Path | None = None) -> list[float]:  # fmt: skip
    """Play `eval_episodes` episodes with the epsilon-greedy policy of a saved `.cleanrl_model`; raw game scores."""
    envs = make_env(env_id, 1, env_seed(seed, purpose=1), render=video_dir is not None)
    network = QNetwork(action_dim=envs.action_space.n, head_width=HEAD_WIDTHS[network_size])
    template = network.init(jax.random.PRNGKey(0), np.zeros((1, 4, 84, 84), np.uint8))
    params = flax.serialization.from_bytes(template, model_path.read_bytes())
    q_values, rng = jax.jit(network.apply), np.random.default_rng(seed)
    obs, info = envs.reset()
    returns, episode_return, frames = [], 0.0, []
    while len(returns) < eval_episodes:
        obs = zero_fill_reset_frames(obs, info["elapsed_step"])
        if video_dir is not None:
            frames.append(envs.render()[0])
        action = np.asarray(jnp.argmax(q_values(params, obs), axis=1))
        if rng.random() < epsilon:
            action = rng.integers(envs.action_space.n, size=1)
        obs, _, terminated, truncated, info = envs.step(action)
        episode_return += float(info["reward"][0])
        if terminated[0] or truncated[0]:
            returns.append(episode_return)
            print(f"eval episode {len(returns)}/{eval_episodes}: return {episode_return:.1f}", flush=True)
            if video_dir is not None:
                write_video(video_dir / f"eval-episode-{len(returns) - 1}.mp4", frames)
            episode_return, frames = 0.0, []
            obs, _, _, _, info = envs.step(np.zeros(1, np.int32))  # envpool's autoreset step ignores its action
    envs.close()
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
    video_dir = Path("videos") / run.dir.name if args.capture_video else None
    evaluation = (args.env_id, args.eval_episodes, args.seed, args.eval_epsilon, args.network_size, video_dir)
    for value in evaluate(model_path, *evaluation):
        run.scalar("eval/episodic_return", value, step)


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:  # a second Ctrl-C, or one outside the training loop
        print("error: interrupted", file=sys.stderr)
        raise SystemExit(130) from None
