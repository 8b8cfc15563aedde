"""PolyPruneSAC on MuJoCo: SAC whose critics are pruned by magnitude on the polynomial schedule of Eq. 2.

Every pruning period P the masks of the two critics are recomputed so that the smallest-magnitude weights reach the
sparsity s_t = s_F (1 - (1 - clip((t - t_start) / (t_end - t_start), 0, 1))^n) (Ceron et al. 2024); the same masks
are applied to the Polyak targets. The paper prunes only the critics; --prune-actor also prunes the actor on the same
schedule (the paper's future-work suggestion). Baselines of the paper, all from this one file:

    uv run python polyprune_sac_mujoco_jax.py --env-id HalfCheetah-v5                      # PolyPruneSAC (s_F 0.95)
    uv run python polyprune_sac_mujoco_jax.py --env-id HalfCheetah-v5 --final-sparsity 0   # dense SAC
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

os.environ.setdefault("MUJOCO_GL", "egl")  # headless rendering for --capture-video (read when mujoco is imported)

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
    env_id: str = "HalfCheetah-v5"  # envpool MuJoCo id: HalfCheetah-v5, Hopper-v5, Walker2d-v5, Ant-v5, Humanoid-v5
    track: bool = False  # log every scalar and the evaluation videos to Weights & Biases
    wandb_project_name: str = "eaudeqn"  # the wandb project name
    wandb_entity: str | None = None  # the wandb entity (team)
    capture_video: bool = False  # film the saved model's evaluation episodes to videos/<run_name>/ (needs --save-model)
    save_model: bool = False  # save {"actor", "critics": [q1, q2]} to <run_dir>/<exp_name>.cleanrl_model, evaluate it
    output_dir: str = "runs"  # folder that receives one sub-folder per run
    checkpoint_interval: int = 100_000  # env steps between checkpoints for --resume (0 disables)
    resume: str | None = None  # continue the run saved in this run folder (its config.json sets every other argument)

    total_timesteps: int = 1_000_000  # t_final, total env steps (Table 4)
    learning_rate: float = 1e-3  # Adam learning rate of the actor, the critics and the temperature (Table 4)
    num_envs: int = 1  # parallel envpool environments; one update per env step (UTD 1) is kept for any value
    buffer_size: int = 1_000_000  # replay capacity in transitions, FIFO (Table 4)
    gamma: float = 0.99  # discount factor (Table 4)
    tau: float = 0.005  # Polyak coefficient of the critic targets (Table 4)
    batch_size: int = 256  # mini-batch size (Table 4)
    learning_starts: int = 5_000  # env steps of uniform random actions collected before learning starts (Table 4)
    eval_frequency: int = 10_000  # env steps between evaluations of the deterministic policy (0 disables)
    eval_episodes: int = 10  # episodes of each evaluation, and of the final evaluation of the saved model

    network_size: Literal["small", "medium", "large"] = "small"  # critic width 256/1280/2048 (Table 4); actor 256
    sparsity_distribution: Literal["erk", "uniform", "global"] = "erk"  # spread over layers (JaxPruner's RL uses erk)

    final_sparsity: float = 0.95  # s_F, the critics' sparsity at the end of Eq. 2's schedule; 0 = dense SAC baseline
    pruning_start: float = 0.2  # t_start as a fraction of --total-timesteps (Eq. 2)
    pruning_end: float = 0.8  # t_end as a fraction of --total-timesteps (Eq. 2)
    pruning_power: float = 3.0  # n, steepness of the polynomial schedule (Eq. 2)
    pruning_period: int = 1_000  # P, env steps between mask updates
    prune_actor: bool = False  # also prune the actor on the same schedule (the paper prunes only the critics)


class ArgumentError(Exception):
    """A user mistake in the command line: reported as one `error:` line and exit code 2."""


def check_args(args: Args) -> None:
    """Reject invalid arguments before any environment or JAX work (docs/contract.md, Errors)."""
    window = 0 <= args.pruning_start <= args.pruning_end <= 1
    checks = [
        (args.seed >= 0, "--seed", "must be non-negative"),
        (args.total_timesteps > 0, "--total-timesteps", "must be positive"),
        (0 <= args.final_sparsity < 1, "--final-sparsity", "s_F must be in [0, 1)"),
        (window, "--pruning-start/--pruning-end", "need 0 <= start <= end <= 1"),
        (args.pruning_power > 0, "--pruning-power", "n must be positive"),
        (args.pruning_period >= 1, "--pruning-period", "P must be at least 1"),
        (0 < args.learning_rate < math.inf, "--learning-rate", "must be a positive finite number"),
        (0 <= args.gamma <= 1, "--gamma", "must be in [0, 1]"),
        (0 < args.tau <= 1, "--tau", "must be in (0, 1]"),
        (args.num_envs >= 1, "--num-envs", "must be at least 1"),
        (args.batch_size >= 1, "--batch-size", "must be at least 1"),
        (args.buffer_size >= args.batch_size, "--buffer-size", "must hold at least one --batch-size of transitions"),
        (args.buffer_size >= args.learning_starts, "--buffer-size", "must hold the --learning-starts warm-up"),
        (args.learning_starts >= 1, "--learning-starts", "must be at least 1 (a transition to sample)"),
        (args.eval_frequency >= 0, "--eval-frequency", "must be non-negative (0 disables)"),
        (args.eval_episodes >= 0, "--eval-episodes", "must be non-negative"),
        (args.checkpoint_interval >= 0, "--checkpoint-interval", "must be non-negative (0 disables)"),
    ]
    for ok, flag, message in checks:
        if not ok:
            raise ArgumentError(f"{flag}: {message}")
    if args.env_id not in envpool.list_all_envs():
        raise ArgumentError(f"--env-id: unknown environment {args.env_id!r} (envpool MuJoCo ids look like 'Hopper-v5')")
    if envpool.registration.registry.specs[args.env_id][0] != "envpool.mujoco.gym":  # without building the env
        raise ArgumentError(f"--env-id: {args.env_id!r} is not a MuJoCo task; this script needs e.g. 'HalfCheetah-v5'")


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


# ---- Environment: envpool MuJoCo (gymnasium v5 semantics, horizon 1 000); one action convention ----------------------
def make_env(env_id: str, num_envs: int, seed: int) -> Any:
    """envpool autoresets on the NEXT step: the step that ends an episode (terminated or truncated at 1 000 steps)
    returns its true last observation; the following step ignores the action and returns the reset observation with
    reward 0. Observations and actions are float64 in envpool."""
    return envpool.make(env_id, env_type="gymnasium", num_envs=num_envs, seed=seed)


def env_seed(seed: int, purpose: int, step: int = 0) -> int:
    """A seed per (run seed, purpose, step): envpool gives env i the seed base + i, so consecutive run seeds would
    share streams; training (purpose 0) and evaluation (purpose 1) streams are also kept apart."""
    return int(np.random.SeedSequence([seed, purpose, step]).generate_state(1)[0] % 2**30)


def scale_action(unit_action: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """THE action convention: the policy (and the warm-up) acts in [-1, 1]^d, the replay buffer and the critics see
    that unit action, and only the env receives it mapped onto [low, high] (Humanoid: [-0.4, 0.4]). Applying it once,
    here, avoids the double rescale a reference SAC once had."""
    return low + (np.clip(unit_action, -1.0, 1.0) + 1.0) * 0.5 * (high - low)


# ---- Networks (Table 4): tanh-Gaussian actor 256-256, critics Q(s, a) 256-256 / 1280-1280 / 2048-2048 ----------------
CRITIC_WIDTHS = {"small": 256, "medium": 1280, "large": 2048}
ACTOR_WIDTH = 256
LOG_STD_MIN, LOG_STD_MAX = -20.0, 2.0


class Critic(nn.Module):
    width: int

    @nn.compact
    def __call__(self, observations: jax.Array, actions: jax.Array) -> jax.Array:
        x = jnp.concatenate([observations, actions], axis=-1)
        x = nn.relu(nn.Dense(self.width)(x))
        x = nn.relu(nn.Dense(self.width)(x))
        return nn.Dense(1)(x)[..., 0]


class Actor(nn.Module):
    action_dim: int

    @nn.compact
    def __call__(self, observations: jax.Array) -> tuple[jax.Array, jax.Array]:
        x = nn.relu(nn.Dense(ACTOR_WIDTH)(observations))
        x = nn.relu(nn.Dense(ACTOR_WIDTH)(x))
        mean = nn.Dense(self.action_dim)(x)
        log_std = jnp.clip(nn.Dense(self.action_dim)(x), LOG_STD_MIN, LOG_STD_MAX)
        return mean, log_std


def sample_action(actor: Actor, params: Any, observations: jax.Array, key: jax.Array) -> tuple[jax.Array, jax.Array]:
    """a = tanh(u), u ~ N(mean, std); log pi(a|s) with the tanh correction log(1 - tanh(u)^2 + 1e-6)."""
    mean, log_std = actor.apply(params, observations)
    std = jnp.exp(log_std)
    u = mean + std * jax.random.normal(key, mean.shape)
    log_prob = -0.5 * ((u - mean) / std) ** 2 - log_std - 0.5 * jnp.log(2 * jnp.pi)
    action = jnp.tanh(u)
    return action, jnp.sum(log_prob - jnp.log(1.0 - action**2 + 1e-6), axis=-1)


def count_params(params: Any) -> int:
    return sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(params))


# ---- Replay buffer: (obs, action, reward, terminated, next_obs) float32 arrays, FIFO ---------------------------------
class ReplayBuffer:
    """FIFO replay of complete transitions. `next_obs` is the true next observation, also after a time-limit
    truncation (envpool returns it at the ending step), so truncated transitions bootstrap correctly (CleanRL issue
    460); `terminated` is 1 only for true terminations. The autoreset step is never stored."""

    def __init__(self, capacity: int, obs_dim: int, action_dim: int) -> None:
        self.capacity = capacity
        self.obs = np.zeros((capacity, obs_dim), np.float32)
        self.actions = np.zeros((capacity, action_dim), np.float32)
        self.rewards = np.zeros(capacity, np.float32)
        self.terminated = np.zeros(capacity, np.float32)
        self.next_obs = np.zeros((capacity, obs_dim), np.float32)
        self.cursor, self.size = 0, 0

    def add(
        self, obs: np.ndarray, actions: np.ndarray, rewards: np.ndarray, terminated: np.ndarray, next_obs: np.ndarray
    ) -> None:
        index = (self.cursor + np.arange(len(obs))) % self.capacity
        self.obs[index], self.actions[index], self.rewards[index] = obs, actions, rewards
        self.terminated[index], self.next_obs[index] = terminated, next_obs
        self.cursor = int((self.cursor + len(obs)) % self.capacity)
        self.size = min(self.size + len(obs), self.capacity)

    def sample(self, batch_size: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
        index = rng.integers(self.size, size=batch_size)
        return {"observations": self.obs[index], "actions": self.actions[index], "rewards": self.rewards[index],
                "terminations": self.terminated[index], "next_observations": self.next_obs[index]}  # fmt: skip

    def state_dict(self) -> dict[str, Any]:
        names = ("obs", "actions", "rewards", "terminated", "next_obs")
        return {**{n: getattr(self, n)[: self.size] for n in names}, "cursor": self.cursor, "size": self.size}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.cursor, self.size = int(state["cursor"]), int(state["size"])
        for name in ("obs", "actions", "rewards", "terminated", "next_obs"):
            getattr(self, name)[: self.size] = state[name]


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


def polynomial_sparsity(step: int, final_sparsity: float, start_step: int, end_step: int, power: float) -> float:
    """Eq. 2: s_t = s_F (1 - (1 - clip((t - t_start) / (t_end - t_start), 0, 1))^n)."""
    progress = 1.0 if end_step <= start_step else (step - start_step) / (end_step - start_step)
    return final_sparsity * (1.0 - (1.0 - min(max(progress, 0.0), 1.0)) ** power)


def take(tree: Any, index: Any) -> Any:
    """Critic(s) `index` of the pair stored as one pytree with a leading axis 2."""
    return jax.tree.map(lambda x: x[index], tree)


# ---- Update: one jitted step for the two critics, the actor, the temperature and the Polyak targets ------------------
def soft_target(
    critic: Critic, critic_targets: Any, rewards: jax.Array, terminations: jax.Array, next_observations: jax.Array,
    next_actions: jax.Array, next_log_probs: jax.Array, alpha: jax.Array, gamma: float,
) -> jax.Array:  # fmt: skip
    """y = r + gamma (1 - terminated) (min(Qbar_1, Qbar_2)(s', a') - alpha log pi(a'|s')), a' ~ pi(.|s')."""
    q = jax.vmap(critic.apply, in_axes=(0, None, None))(critic_targets, next_observations, next_actions)
    return rewards + gamma * (1.0 - terminations) * (jnp.min(q, axis=0) - alpha * next_log_probs)


def actor_loss(
    actor: Actor, critic: Critic, actor_params: Any, critics: Any, observations: jax.Array, alpha: jax.Array,
    key: jax.Array,
) -> tuple[jax.Array, jax.Array]:  # fmt: skip
    """SAC's actor loss: mean of alpha log pi(a|s) - min(Q_1, Q_2)(s, a), a ~ pi(.|s), with the two *online* critics
    (just updated: SBX updates the critics first). Returns the loss and log pi(a|s), which the temperature loss
    reuses."""
    actions, log_probs = sample_action(actor, actor_params, observations, key)
    q = jax.vmap(critic.apply, in_axes=(0, None, None))(critics, observations, actions)
    return jnp.mean(alpha * log_probs - jnp.min(q, axis=0)), log_probs


def temperature_loss(log_alpha: jax.Array, log_probs: jax.Array, target_entropy: float) -> jax.Array:
    """SAC's entropy tuning as in SBX: -log(alpha) mean(log pi(a|s) + target entropy) (target entropy -action_dim):
    alpha grows while the policy's entropy -log pi is below the target. The log-probs are a constant here."""
    return -log_alpha * jnp.mean(jax.lax.stop_gradient(log_probs) + target_entropy)


def make_train_step(
    actor: Actor, critic: Critic, optimizer: optax.GradientTransformation, gamma: float, tau: float,
    target_entropy: float,
) -> Any:  # fmt: skip
    def critic_loss(params: Any, observations: jax.Array, actions: jax.Array, targets: jax.Array) -> jax.Array:
        # a mean, not a sum (docs/implementation-notes.md)
        return jnp.mean((targets - critic.apply(params, observations, actions)) ** 2)

    loss_and_grad = jax.vmap(jax.value_and_grad(critic_loss), in_axes=(0, None, None, None))  # the two critics

    @jax.jit
    def train_step(state, batch, key):
        target_key, actor_key = jax.random.split(key)
        alpha = jnp.exp(state["log_alpha"])
        # ---- critics
        next_actions, next_log_probs = sample_action(actor, state["actor"], batch["next_observations"], target_key)
        targets = jax.lax.stop_gradient(soft_target(
            critic, state["critic_targets"], batch["rewards"], batch["terminations"], batch["next_observations"],
            next_actions, next_log_probs, alpha, gamma,
        ))  # fmt: skip
        losses, grads = loss_and_grad(state["critics"], batch["observations"], batch["actions"], targets)
        updates, critic_opt_states = jax.vmap(optimizer.update)(grads, state["critic_opt_states"], state["critics"])
        critics = apply_masks(optax.apply_updates(state["critics"], updates), state["critic_masks"])

        # ---- actor: min of the two online critics
        def actor_objective(actor_params):
            return actor_loss(actor, critic, actor_params, critics, batch["observations"], alpha, actor_key)

        (actor_loss_value, log_probs), actor_grads = jax.value_and_grad(actor_objective, has_aux=True)(state["actor"])
        actor_updates, actor_opt_state = optimizer.update(actor_grads, state["actor_opt_state"], state["actor"])
        actor_params = apply_masks(optax.apply_updates(state["actor"], actor_updates), state["actor_masks"])

        # ---- temperature: match the entropy to -action_dim (SAC, Haarnoja et al. 2018)
        alpha_loss, alpha_grad = jax.value_and_grad(temperature_loss)(state["log_alpha"], log_probs, target_entropy)
        alpha_update, alpha_opt_state = optimizer.update(alpha_grad, state["alpha_opt_state"], state["log_alpha"])

        # ---- Polyak: masked online weights are 0, so masked target weights stay 0
        critic_targets = optax.incremental_update(critics, state["critic_targets"], tau)
        new_state = {
            **state, "actor": actor_params, "actor_opt_state": actor_opt_state, "critics": critics,
            "critic_opt_states": critic_opt_states, "critic_targets": critic_targets,
            "log_alpha": optax.apply_updates(state["log_alpha"], alpha_update), "alpha_opt_state": alpha_opt_state,
        }  # fmt: skip
        metrics = {"qf_loss": losses, "actor_loss": actor_loss_value, "alpha_loss": alpha_loss, "alpha": alpha}
        return new_state, metrics

    return train_step


def make_act(actor: Actor) -> Any:
    @jax.jit
    def act(params, observations, key):  # stochastic unit actions tanh(u) in [-1, 1]
        return sample_action(actor, params, observations, key)[0]

    return act


def make_deterministic_act(actor: Actor) -> Any:
    @jax.jit
    def act(params, observations):  # the evaluation policy: tanh of the mean
        return jnp.tanh(actor.apply(params, observations)[0])

    return act


# ---- Training loop ---------------------------------------------------------------------------------------------------
def init_state(
    actor: Actor, critic: Critic, optimizer: optax.GradientTransformation, obs_dim: int, action_dim: int, key: jax.Array
) -> dict[str, Any]:
    """Policy, two independent critics with targets equal to them, Adam states and the temperature."""
    actor_key, critic_key = jax.random.split(key)
    obs, action = jnp.zeros((1, obs_dim)), jnp.zeros((1, action_dim))
    actor_params = actor.init(actor_key, obs)
    critics = jax.vmap(critic.init, in_axes=(0, None, None))(jax.random.split(critic_key, 2), obs, action)
    log_alpha = jnp.zeros((), jnp.float32)  # alpha = 1 initially (SBX); not weak-typed: one compilation
    return {
        "actor": actor_params, "actor_opt_state": optimizer.init(actor_params),
        "actor_masks": jax.tree.map(lambda x: jnp.ones_like(x, dtype=bool), actor_params),
        "critics": critics, "critic_targets": critics,
        "critic_masks": jax.tree.map(lambda x: jnp.ones_like(x, dtype=bool), critics),
        "critic_opt_states": jax.vmap(optimizer.init)(critics),
        "log_alpha": log_alpha, "alpha_opt_state": optimizer.init(log_alpha), "key": key,
    }  # fmt: skip


def prune_pair(state: dict[str, Any], sparsity: float, distribution: str) -> dict[str, Any]:
    """Eq. 2 step for both critics: magnitude masks of the online critic, applied to it and to its Polyak target.
    Adam states are kept (Ceron et al. 2024)."""
    state = dict(state)
    masks = [magnitude_masks(take(state["critics"], i), sparsity, distribution) for i in range(2)]
    state["critic_masks"] = jax.tree.map(lambda *m: jnp.stack(m), *masks)
    state["critics"] = apply_masks(state["critics"], state["critic_masks"])
    state["critic_targets"] = apply_masks(state["critic_targets"], state["critic_masks"])
    return state


DIVERGED = "the run diverged (try a lower --learning-rate); its last checkpoint is kept"


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    run = Run(args)

    # ---- environment, networks, optimizers
    envs = make_env(args.env_id, args.num_envs, env_seed(args.seed, purpose=0))
    obs_dim, action_dim = envs.observation_space.shape[0], envs.action_space.shape[0]
    low, high = envs.action_space.low, envs.action_space.high
    actor, critic = Actor(action_dim=action_dim), Critic(width=CRITIC_WIDTHS[args.network_size])
    optimizer = optax.adam(args.learning_rate)
    key, init_key = jax.random.split(jax.random.PRNGKey(args.seed))
    state = init_state(actor, critic, optimizer, obs_dim, action_dim, init_key)
    state["key"] = key
    start_step = int(args.pruning_start * args.total_timesteps)
    end_step = int(args.pruning_end * args.total_timesteps)
    rb, rng = ReplayBuffer(args.buffer_size, obs_dim, action_dim), np.random.default_rng(args.seed)
    train_step = make_train_step(actor, critic, optimizer, args.gamma, args.tau, target_entropy=-float(action_dim))
    act, deterministic_act = make_act(actor), make_deterministic_act(actor)
    print(f"{run.dir.name}: actor {count_params(state['actor']):,} parameters, 2 critics of"
          f" {count_params(take(state['critics'], 0)):,} parameters ({args.network_size}), final sparsity"
          f" {args.final_sparsity} on {jax.default_backend()}; outputs in {run.dir}", flush=True)  # fmt: skip
    meta = {"global_step": 0, "grad_steps": 0, "episodes": 0, "elapsed": 0.0, "sparsity": 0.0, "actor_sparsity": 0.0}
    meta |= {"next_pruning": args.pruning_period, "next_eval": args.eval_frequency if args.eval_frequency > 0 else None}
    if args.resume:
        state, meta = run.resume(state, rb, rng)
        envs = make_env(args.env_id, args.num_envs, env_seed(args.seed, purpose=0, step=meta["global_step"]))
    global_step, grad_steps, episodes = meta["global_step"], meta["grad_steps"], meta["episodes"]
    next_pruning, next_eval = meta["next_pruning"], meta["next_eval"]
    sparsity, actor_sparsity = meta["sparsity"], meta["actor_sparsity"]  # nominal sparsity of the current masks
    run.open_logs(meta)
    target_sparsity = float(np.mean([measured_sparsity(take(state["critics"], i)) for i in range(2)]))
    if global_step == 0:
        run.scalar("sparsity/target", target_sparsity, 0)
    every = args.checkpoint_interval  # --checkpoint-interval 0 disables checkpoints
    next_checkpoint = (global_step // every + 1) * every if every > 0 else None

    def checkpoint() -> None:
        counters = {"global_step": global_step, "grad_steps": grad_steps, "episodes": episodes}
        counters |= {"next_pruning": next_pruning, "next_eval": next_eval, "sparsity": sparsity}
        counters |= {"actor_sparsity": actor_sparsity, "elapsed": run.elapsed()}
        run.save_checkpoint(state, rb, counters | {"rng_state": rng.bit_generator.state})

    obs = envs.reset()[0].astype(np.float32)
    episode_returns, episode_lengths = np.zeros(args.num_envs), np.zeros(args.num_envs, np.int64)
    resetting = np.zeros(args.num_envs, dtype=bool)  # envs whose next step is envpool's autoreset step
    last_return, last_metrics = float("nan"), None
    run.watch_signals()
    while global_step < args.total_timesteps:
        # ---- act: uniform unit actions during the warm-up, then the stochastic policy
        if global_step < args.learning_starts:
            unit_actions = rng.uniform(-1.0, 1.0, size=(args.num_envs, action_dim)).astype(np.float32)
        else:
            state["key"], act_key = jax.random.split(state["key"])
            unit_actions = np.asarray(act(state["actor"], obs, act_key))
        next_obs, rewards, terminated, truncated, _ = envs.step(scale_action(unit_actions, low, high))
        next_obs = next_obs.astype(np.float32)

        # ---- store; autoreset steps are not interactions: they are neither stored nor counted
        live = ~resetting
        rb.add(obs[live], unit_actions[live], rewards[live], terminated[live], next_obs[live])
        episode_returns += np.where(live, rewards, 0.0)
        episode_lengths += live
        previous_step, global_step = global_step, global_step + int(live.sum())
        for env in np.flatnonzero(live & (terminated | truncated)):
            episodes, last_return = episodes + 1, float(episode_returns[env])
            run.scalar("charts/episodic_return", last_return, global_step)
            run.scalar("charts/episodic_length", int(episode_lengths[env]), global_step)
            episode_returns[env], episode_lengths[env] = 0.0, 0
        resetting = live & (terminated | truncated)
        obs = next_obs

        # ---- learn: UTD 1, one jitted update of critics, actor, temperature and targets (in that order)
        while global_step - args.learning_starts > grad_steps:
            batch = rb.sample(args.batch_size, rng)
            state["key"], step_key = jax.random.split(state["key"])
            state, last_metrics = train_step(state, batch, step_key)
            grad_steps += 1
            qf_loss, actor_loss_value = np.asarray(last_metrics["qf_loss"]), float(last_metrics["actor_loss"])
            if not np.isfinite(qf_loss).all() or not math.isfinite(actor_loss_value):
                run.scalar("losses/qf_loss", float(np.mean(qf_loss)), global_step)
                run.scalar("losses/actor_loss", actor_loss_value, global_step)
                failure = f"a critic or the actor has a non-finite loss at step {global_step:,}"
                run.close(3, f"error: {failure}: {DIVERGED}")

        # ---- every pruning period: recompute the critics' masks at the Eq. 2 sparsity (and the actor's)
        if global_step >= next_pruning:
            new_sparsity = polynomial_sparsity(
                global_step, args.final_sparsity, start_step, end_step, args.pruning_power
            )
            if new_sparsity != sparsity:
                state = prune_pair(state, new_sparsity, args.sparsity_distribution)
                sparsity = new_sparsity
                target_sparsity = float(np.mean([measured_sparsity(take(state["critics"], i)) for i in range(2)]))
                run.scalar("sparsity/target", target_sparsity, global_step)
            if args.prune_actor and new_sparsity != actor_sparsity:
                state["actor_masks"] = magnitude_masks(state["actor"], new_sparsity, args.sparsity_distribution)
                state["actor"] = apply_masks(state["actor"], state["actor_masks"])
                actor_sparsity = new_sparsity
                run.scalar("sparsity/actor", measured_sparsity(state["actor"]), global_step)
            next_pruning += args.pruning_period

        # ---- periodic evaluation of the deterministic policy on its own env
        final = global_step >= args.total_timesteps and args.save_model  # the saved model is evaluated instead
        if next_eval is not None and global_step >= next_eval and not final:
            returns = evaluate_policy(deterministic_act, state["actor"], args.env_id, args.eval_episodes, args.seed,
                                      global_step)  # fmt: skip
            for value in returns:
                run.scalar("eval/episodic_return", value, global_step)
            if returns:
                print(f"eval at step {global_step:,}: mean return {np.mean(returns):.1f}", flush=True)
            next_eval += args.eval_frequency

        # ---- log every 1000 steps, checkpoint, stop on a signal
        if global_step // 1000 > previous_step // 1000:
            details = f"episodes {episodes} | last return {last_return:.1f} | target sparsity {target_sparsity:.3f}"
            run.progress(global_step, args.total_timesteps, details)
            if last_metrics is not None:
                run.scalar("losses/qf_loss", float(jnp.mean(last_metrics["qf_loss"])), global_step)
                for name in ("actor_loss", "alpha", "alpha_loss"):
                    run.scalar(f"losses/{name}", float(last_metrics[name]), global_step)
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
        save_and_evaluate(args, run, state, deterministic_act, global_step, target_sparsity)
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
        self.args, self.wandb, self.stop_signal = args, None, 0
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
        self.writer.close()
        self.lock.close()  # the folder is free: main() called again in this process (a test, a notebook) may resume it
        if code:
            print(message, file=sys.stderr)
            raise SystemExit(code)
        if self.wandb is not None:
            self.wandb.finish()


# ---- Evaluation: the deterministic policy tanh(mean), periodically and on the saved model ----------------------------
def evaluate_policy(
    act: Any, actor_params: Any, env_id: str, eval_episodes: int, seed: int, step: int = 0
) -> list[float]:
    """Returns of `eval_episodes` episodes, played in parallel (one env each) on a separate env (seed purpose 1)."""
    if eval_episodes == 0:
        return []
    envs = make_env(env_id, eval_episodes, env_seed(seed, purpose=1, step=step))
    low, high = envs.action_space.low, envs.action_space.high
    obs, _ = envs.reset()
    returns, done = np.zeros(eval_episodes), np.zeros(eval_episodes, dtype=bool)
    while not done.all():
        actions = scale_action(np.asarray(act(actor_params, obs.astype(np.float32))), low, high)
        obs, rewards, terminated, truncated, _ = envs.step(actions)
        returns += np.where(done, 0.0, rewards)  # each env plays one episode; later ones are ignored
        done |= terminated | truncated
    envs.close()
    return returns.tolist()


def record_videos(act: Any, actor_params: Any, env_id: str, eval_episodes: int, seed: int, video_dir: Path) -> None:
    """envpool's MuJoCo renderer needs an OpenGL context it cannot create headless, so the videos are rendered by
    gymnasium's identical v5 task (MuJoCo's own EGL renderer). Skipped with a warning when that is unavailable."""
    try:
        import gymnasium as gym

        env = gym.make(env_id, render_mode="rgb_array")
    except Exception as error:  # no gymnasium twin (e.g. v2/v3 ids) or no renderer
        print(f"warning: --capture-video skipped, cannot render {env_id}: {error}", file=sys.stderr)
        return
    low, high = env.action_space.low, env.action_space.high
    for episode in range(eval_episodes):
        obs, _ = env.reset(seed=env_seed(seed, purpose=2, step=episode))
        frames, done = [env.render()], False
        while not done:
            action = scale_action(np.asarray(act(actor_params, obs[None].astype(np.float32)))[0], low, high)
            obs, _, terminated, truncated, _ = env.step(action)
            frames.append(env.render())
            done = terminated or truncated
        write_video(video_dir / f"eval-episode-{episode}.mp4", frames, fps=env.metadata.get("render_fps", 30))
    env.close()


def write_video(path: Path, frames: list[np.ndarray], fps: int = 15) -> None:
    import imageio.v2 as imageio

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(".tmp-" + path.name)
    with warnings.catch_warnings():  # imageio-ffmpeg starts ffmpeg with fork; JAX warns about any fork
        warnings.filterwarnings("ignore", message="os.fork", category=RuntimeWarning)
        imageio.mimwrite(tmp, frames, fps=fps, macro_block_size=1, format="FFMPEG")
    os.replace(tmp, path)


def save_and_evaluate(args: Args, run: Run, state: dict[str, Any], act: Any, step: int, critic_sparsity: float) -> None:
    """--save-model: the actor and the two critics (pruned weights are exact zeros), then the evaluation of the actor
    read back from the file, and its videos with --capture-video."""
    model_path = run.dir / f"{args.exp_name}.cleanrl_model"
    model = {"actor": state["actor"], "critics": [take(state["critics"], i) for i in range(2)]}
    with run.writing(model_path.name):
        atomic_write(model_path, flax.serialization.to_bytes(model))
    print(f"model saved to {model_path} (critic sparsity {critic_sparsity:.4f})", flush=True)
    template = {"actor": state["actor"], "critics": [take(state["critics"], 0)] * 2}
    actor_params = flax.serialization.from_bytes(template, model_path.read_bytes())["actor"]
    returns = evaluate_policy(act, actor_params, args.env_id, args.eval_episodes, args.seed)
    for value in returns:
        run.scalar("eval/episodic_return", value, step)
    print(f"saved model: mean evaluation return {np.mean(returns) if returns else float('nan'):.1f}", flush=True)
    if args.capture_video:
        record_videos(act, actor_params, args.env_id, args.eval_episodes, args.seed, Path("videos") / run.dir.name)


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:  # a second Ctrl-C, or one outside the training loop
        print("error: interrupted", file=sys.stderr)
        raise SystemExit(130) from None
