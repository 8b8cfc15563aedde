"""Tests of polyprune_dqn_jax.py, the classic-control twin of polyprune_dqn_atari_jax.py and the baseline of
eaudedqn_jax.py: Eq. 2 against hand-computed values, the defaults shared with eaudedqn_jax.py, network sizes, the
epsilon schedule and the G cadence, magnitude pruning, the train step (shared target, masks re-applied after Adam),
the replay buffer against gymnasium's reference dynamics, the training loop recorded in-process (acting, target
updates every T, Eq. 2 masks every pruning period with the Adam state kept), command-line errors and end-to-end runs
(outputs, saved model, video, resume, the dense baseline). Crash safety (Ctrl-C, torn logs, damaged checkpoints,
divergence) is tested for both classic-control scripts in test_reliability.py.
tools/mutants/polyprune_dqn_jax.toml lists the breaks of the algorithm these tests catch."""

import dataclasses
import functools
import importlib
import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import envpool
import flax
import gymnasium as gym
import imageio.v2 as imageio
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SCRIPT = ROOT / "polyprune_dqn_jax.py"

poly = importlib.import_module("polyprune_dqn_jax")
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


def logged(metrics: list[dict], name: str) -> dict[int, float]:
    return {m["global_step"]: m["value"] for m in metrics if m["name"] == name}


def eq2(step: int, final_sparsity: float, start: int, end: int, power: float = 3.0) -> float:
    """Eq. 2 written out independently of the script."""
    progress = min(max((step - start) / (end - start), 0.0), 1.0)
    return final_sparsity * (1.0 - (1.0 - progress) ** power)


def call_main(argv: list[str]) -> None:
    """main() in-process; it installs its Ctrl-C handler (Run.watch_signals): pytest gets its own back."""
    handlers = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        poly.main(argv)
    finally:
        for signum, handler in handlers.items():
            signal.signal(signum, handler)


# ---------------------------------------------------------------------------------------------------------------------
# Eq. 2 and the defaults (like for like with eaudedqn_jax.py)
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "step, expected",
    # t_start = 200, t_end = 800, s_F = 0.95, n = 3: half-way (500) is 0.95 (1 - 0.5^3) = 0.83125, three quarters
    # (650) 0.95 (1 - 0.25^3) = 0.93515625; before t_start 0 and after t_end s_F (the progress is clipped to [0, 1])
    [(0, 0.0), (200, 0.0), (500, 0.83125), (650, 0.93515625), (800, 0.95), (1000, 0.95)],
)
def test_polynomial_schedule_eq2(step: int, expected: float) -> None:
    assert poly.polynomial_sparsity(step, 0.95, 200, 800, 3.0) == pytest.approx(expected)


def test_polynomial_schedule_dense_baseline_stays_dense() -> None:
    assert all(poly.polynomial_sparsity(t, 0.0, 200, 800, 3.0) == 0.0 for t in range(0, 1000, 50))


def test_defaults_are_eaudedqn_jax_ones_and_the_pruning_flags_mirror_the_atari_script() -> None:
    """Every flag the two classic-control scripts share has the same default (a like-for-like comparison); the
    PolyPrune flags are the Atari script's, with its pruning period of T / 2 (4 000 = 8 000 / 2) kept as a ratio."""
    ours = dataclasses.asdict(poly.Args())
    eaude = dataclasses.asdict(importlib.import_module("eaudedqn_jax").Args())
    atari = dataclasses.asdict(importlib.import_module("polyprune_dqn_atari_jax").Args())
    shared = (set(ours) & set(eaude)) - {"exp_name"}
    assert shared >= {"total_timesteps", "learning_rate", "target_network_frequency", "train_frequency", "env_id"}
    assert {name: ours[name] for name in shared} == {name: eaude[name] for name in shared}
    pruning = ("final_sparsity", "pruning_start", "pruning_end", "pruning_power")
    assert [ours[name] for name in pruning] == [atari[name] for name in pruning] == [0.95, 0.2, 0.8, 3.0]
    assert atari["pruning_period"] * 2 == atari["target_network_frequency"]
    assert ours["pruning_period"] * 2 == ours["target_network_frequency"] == 500
    assert set(ours) - set(eaude) == {"final_sparsity", "pruning_start", "pruning_end", "pruning_power",
                                      "pruning_period"}  # fmt: skip


# ---------------------------------------------------------------------------------------------------------------------
# Network sizes (the MLP of eaudedqn_jax.py)
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "size, expected",
    # CartPole: 4 inputs, 2 actions; (4 + 1) w + (w + 1) w + (w + 1) 2 parameters for hidden width w
    [("small", 4_610), ("medium", 67_586), ("large", 1_056_770)],
)
def test_parameter_counts_on_cartpole(size: str, expected: int) -> None:
    network = poly.QNetwork(action_dim=2, hidden_width=poly.HIDDEN_WIDTHS[size])
    shapes = jax.eval_shape(network.init, jax.random.PRNGKey(0), jnp.zeros((1, 4), jnp.float32))
    assert poly.count_params(shapes) == expected
    width = poly.HIDDEN_WIDTHS[size]
    assert poly.prunable_shapes(shapes) == [(4, width), (width, width), (width, 2)]


# ---------------------------------------------------------------------------------------------------------------------
# Acting and learning cadence: epsilon schedule, epsilon-greedy, one gradient step every G
# ---------------------------------------------------------------------------------------------------------------------


def test_epsilon_schedule_holds_start_e_through_warm_up_then_decays_linearly() -> None:
    args = poly.Args(start_e=1.0, end_e=0.1, learning_starts=100, exploration_steps=1000)
    schedule = [poly.epsilon_schedule(step, args) for step in (0, 99, 100, 600, 1100, 5000)]
    # midpoint: 1.0 + (600 - 100) / 1000 * (0.1 - 1.0) = 0.55
    np.testing.assert_allclose(schedule, [1.0, 1.0, 1.0, 0.55, 0.1, 0.1])
    args.exploration_steps = 0  # no decay: a step from start-e to end-e when learning starts
    assert [poly.epsilon_schedule(step, args) for step in (99, 100)] == [1.0, 0.1]


def test_epsilon_greedy_acts_greedily_with_probability_one_minus_epsilon() -> None:
    """The greedy action of the online network is 7 here; random ones are 0-3."""
    rng = np.random.default_rng(0)
    actions = np.concatenate([poly.epsilon_greedy(0.25, 4, 100, lambda: np.full(100, 7), rng) for _ in range(40)])
    assert set(np.unique(actions)) <= {0, 1, 2, 3, 7}
    assert (actions == 7).mean() == pytest.approx(0.75, abs=0.03)  # 4000 draws: standard error 0.007
    assert (poly.epsilon_greedy(0.0, 4, 50, lambda: np.full(50, 7), rng) == 7).all()
    assert (poly.epsilon_greedy(1.0, 4, 50, lambda: np.full(50, 7), rng) != 7).all()


def test_one_gradient_step_every_g_env_steps_after_the_warm_up() -> None:
    """G = 4 after a 100-step warm-up."""
    args = poly.Args(learning_starts=100, train_frequency=4)
    due = [poly.gradient_steps_due(t, args) for t in (0, 99, 100, 103, 104, 107, 108, 500)]
    assert due == [0, 0, 0, 0, 1, 1, 2, 100]


# ---------------------------------------------------------------------------------------------------------------------
# Magnitude pruning: exact zero counts, the largest weights kept
# ---------------------------------------------------------------------------------------------------------------------


@functools.cache  # JAX arrays are immutable: the tests may share them
def mlp_params(hidden_width: int = 16, num_actions: int = 2, seed: int = 0) -> tuple[poly.QNetwork, dict]:
    """A network with independent N(0, 0.3^2) weights and biases (numpy draws: no compilation of Flax's init)."""
    network = poly.QNetwork(action_dim=num_actions, hidden_width=hidden_width)
    shapes = jax.eval_shape(network.init, jax.random.PRNGKey(0), jnp.zeros((1, 4), jnp.float32))
    rng = np.random.default_rng(seed)
    params = jax.tree.map(lambda x: jnp.asarray(0.3 * rng.standard_normal(x.shape), jnp.float32), shapes)
    return network, params


def kernel_zero_counts(params: dict) -> list[int]:
    return [int((np.asarray(w) == 0).sum()) for w in jax.tree.leaves(params) if w.ndim > 1]


def test_erk_densities_hand_computed() -> None:
    # raw densities sum/prod: 20/100 = 0.2 and 110/1000 = 0.11; 550 non-zeros to spread: scale 550 / 130
    densities = poly.layer_densities([(10, 10), (100, 10)], 0.5, "erk")
    np.testing.assert_allclose(densities, [0.2 * 550 / 130, 0.11 * 550 / 130])
    assert poly.layer_zero_counts([(10, 10), (100, 10)], 0.5, "erk") == [15, 535]
    assert poly.layer_zero_counts([(10, 10), (100, 10)], 0.3, "uniform") == [30, 300]


@pytest.mark.parametrize("distribution", ["erk", "uniform", "global"])
def test_magnitude_masks_keep_the_largest_weights_with_exact_counts(distribution: str) -> None:
    _, params = mlp_params()
    masks = poly.magnitude_masks(params, 0.7, distribution)
    leaves = zip(jax.tree.leaves(params), jax.tree.leaves(masks), strict=True)
    kernels = [(np.asarray(w), np.asarray(m)) for w, m in leaves if w.ndim > 1]
    if distribution == "global":  # one threshold over all layers
        kept = np.concatenate([np.abs(w[m]) for w, m in kernels])
        dropped = np.concatenate([np.abs(w[~m]) for w, m in kernels])
        assert len(dropped) == round(0.7 * sum(w.size for w, _ in kernels)) and kept.min() >= dropped.max()
    else:
        expected = poly.layer_zero_counts(poly.prunable_shapes(params), 0.7, distribution)
        assert [int((~m).sum()) for _, m in kernels] == expected
        for w, m in kernels:  # magnitudes, not signed values: large negative weights are kept
            assert np.abs(w[m]).min() >= np.abs(w[~m]).max()
    assert all(np.asarray(m).all() for m in jax.tree.leaves(masks) if m.ndim == 1)  # biases are never pruned


# ---------------------------------------------------------------------------------------------------------------------
# Train step: y = r + gamma (1 - terminated) max_a' Qbar(s', a') from the target network, masks after Adam
# ---------------------------------------------------------------------------------------------------------------------


def constant_q(biases: list[float], hidden_width: int = 4) -> tuple[poly.QNetwork, dict]:
    """A network whose weights are all zero: it outputs Q(s, .) = biases for every s."""
    network = poly.QNetwork(action_dim=len(biases), hidden_width=hidden_width)
    params = network.init(jax.random.PRNGKey(0), jnp.zeros((1, 4), jnp.float32))
    params = jax.tree.map(jnp.zeros_like, params)
    params["params"]["Dense_2"]["bias"] = jnp.array(biases)
    return network, params


def all_true(tree: dict) -> dict:
    return jax.tree.map(lambda x: jnp.ones_like(x, bool), tree)


def random_batches(count: int, size: int = 16, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    return [
        {
            "observations": rng.standard_normal((size, 4)).astype(np.float32),
            "actions": rng.integers(2, size=size).astype(np.int32),
            "rewards": rng.standard_normal(size).astype(np.float32),
            "terminations": (rng.random(size) < 0.3).astype(np.float32),
            "next_observations": rng.standard_normal((size, 4)).astype(np.float32),
        }
        for _ in range(count)
    ]


def test_target_and_loss_hand_computed() -> None:
    """The online network outputs Q = 1 everywhere, the target network Qbar(s', .) = (5, 7): max 7 (the mean would be
    6, the online network's 1); terminated transitions do not bootstrap; loss = mean((y - Q(s, a))^2)."""
    network, online = constant_q([1.0, 1.0])
    _, target = constant_q([5.0, 7.0])
    batch = random_batches(1, size=4)[0]
    batch["rewards"] = np.array([1.0, -1.0, 0.0, 1.0], np.float32)
    batch["terminations"] = np.array([0.0, 1.0, 0.0, 1.0], np.float32)
    optimizer = optax.adam(1e-3)
    step = poly.make_train_step(network, optimizer, 0.5)
    _, _, loss = step(online, optimizer.init(online), all_true(online), target, batch)
    y = np.array([1 + 0.5 * 7, -1.0, 0.5 * 7, 1.0])
    assert float(loss) == pytest.approx(np.mean((y - 1.0) ** 2), rel=1e-6)  # 5.375


def test_train_step_is_an_adam_step_on_the_td_loss_and_keeps_pruned_weights_zero() -> None:
    """Two steps against a reference written out here (TD loss against the target network, an Adam step carried to
    the next step, the mask applied after it); the pruned weights stay exactly zero (Adam's momentum would move them
    without the mask)."""
    network, params = mlp_params()
    masks = poly.magnitude_masks(params, 0.6, "erk")
    params = poly.apply_masks(params, masks)
    _, target = mlp_params(seed=1)
    optimizer = optax.adam(1e-2)
    step = poly.make_train_step(network, optimizer, 0.99)
    batches = random_batches(2)

    @jax.jit
    def reference_step(params: dict, state: Any, batch: dict) -> tuple[dict, Any, jax.Array]:
        next_q = network.apply(target, batch["next_observations"]).max(axis=1)
        y = batch["rewards"] + 0.99 * (1.0 - batch["terminations"]) * next_q

        def loss_fn(p: dict) -> jax.Array:
            return jnp.mean((y - network.apply(p, batch["observations"])[jnp.arange(16), batch["actions"]]) ** 2)

        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, state = optimizer.update(grads, state, params)
        return poly.apply_masks(optax.apply_updates(params, updates), masks), state, loss

    ours, ours_state = params, optimizer.init(params)
    reference, reference_state = params, optimizer.init(params)
    for batch in batches:
        ours, ours_state, loss = step(ours, ours_state, masks, target, batch)
        reference, reference_state, reference_loss = reference_step(reference, reference_state, batch)
        assert float(loss) == pytest.approx(float(reference_loss), rel=1e-5)
    for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(reference), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-6)
    assert int(ours_state[0].count) == 2
    for w, m in zip(jax.tree.leaves(ours), jax.tree.leaves(masks), strict=True):
        assert np.all(np.asarray(w)[~np.asarray(m)] == 0)
    assert kernel_zero_counts(ours) == kernel_zero_counts(params)
    assert not np.allclose(np.asarray(ours["params"]["Dense_1"]["kernel"]), params["params"]["Dense_1"]["kernel"])


# ---------------------------------------------------------------------------------------------------------------------
# Replay buffer (eaudedqn_jax.py's)
# ---------------------------------------------------------------------------------------------------------------------


def test_replay_skips_autoreset_steps_and_keeps_true_last_observation() -> None:
    rb = poly.ReplayBuffer(capacity=8, num_envs=2, obs_shape=(1,))
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
    assert rb.size == 3
    np.testing.assert_array_equal(rb.observations[:3, 0], [0.0, 10.0, 15.0])
    np.testing.assert_array_equal(rb.next_observations[:3, 0], [1.0, 11.0, 16.0])  # never a reset obs
    np.testing.assert_array_equal(rb.actions[:3], [1, 0, 1])
    np.testing.assert_array_equal(rb.rewards[:3], [1.0, 2.0, 4.0])
    np.testing.assert_array_equal(rb.terminated[:3], [False, True, False])  # truncation bootstraps


def test_replay_is_fifo_and_sampling_is_seeded_and_uniform() -> None:
    rb = poly.ReplayBuffer(capacity=5, num_envs=1, obs_shape=(2,))
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
        poly.ReplayBuffer(4, 1, (2,)).sample(2, np.random.default_rng(0))


def assert_transitions_follow_reference_dynamics(rb: poly.ReplayBuffer, env_id: str, at_time_limit: np.ndarray) -> None:
    """Every stored (o, a) stepped through gymnasium's own dynamics gives the stored o', reward and terminated.

    One exception is envpool's, not the script's: a termination on the time-limit step is reported as a truncation
    only (terminated False), so there a stored terminated False may be gymnasium's True."""
    reference = gym.make(env_id).unwrapped
    reference.reset(seed=0)
    for i in range(rb.size):
        reference.state = np.array(rb.observations[i], dtype=np.float64)
        reference.steps_beyond_terminated = None  # CartPole: each transition starts from a live state
        next_state, reward, terminated, _, _ = reference.step(int(rb.actions[i]))
        np.testing.assert_allclose(rb.next_observations[i], next_state, atol=1e-4)
        assert rb.rewards[i] == pytest.approx(reward)
        assert rb.terminated[i] == terminated or (at_time_limit[i] and terminated and not rb.terminated[i])


# ---------------------------------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv, expected",  # expected: the flag the error line names, or the start of its message
    [
        (["--env-id", "NotAnEnv-v0"], "--env-id: unknown environment"),
        (["--env-id", "Pong-v5"], "--env-id: 'Pong-v5' is not a discrete-action classic-control env"),
        (["--env-id", "Pendulum-v1"], "--env-id"),
        (["--final-sparsity", "1"], "--final-sparsity: s_F must be in [0, 1)"),
        (["--final-sparsity", "-0.1"], "--final-sparsity"),
        (["--final-sparsity", "abc"], "--final-sparsity"),
        (["--pruning-start", "0.9", "--pruning-end", "0.5"], "--pruning-start/--pruning-end"),
        (["--pruning-end", "1.5"], "--pruning-start/--pruning-end"),
        (["--pruning-power", "0"], "--pruning-power"),
        (["--pruning-period", "0"], "--pruning-period"),
        (["--num-networks", "5"], "--num-networks"),  # an EauDeDQN flag
        (["--total-timesteps", "-5"], "--total-timesteps"),
        (["--network-size", "huge"], "--network-size"),
        (["--resume", "/nonexistent/run"], "--resume"),
        (["--seed", "-1"], "--seed: must be non-negative"),
        (["--learning-rate", "inf"], "--learning-rate: must be a positive finite number"),
        (["--learning-rate", "nan"], "--learning-rate: must be a positive finite number"),
        (["--adam-eps", "inf"], "--adam-eps: must be a positive finite number"),
        (["--buffer-size", "100"], "--buffer-size: must hold at least one --batch-size"),  # the default batch is 128
        (["--buffer-size", "500"], "--buffer-size: must hold the --learning-starts warm-up"),  # default warm-up 1000
    ],
)
def test_cli_errors(argv: list[str], expected: str, capsys) -> None:
    with pytest.raises(SystemExit) as exit_:
        poly.parse_args(argv)
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and expected in err[0], err


@pytest.mark.parametrize("env_id", ["CartPole-v1", "Acrobot-v1", "LunarLander-v3", "MountainCar-v0"])
def test_classic_ids_are_accepted(env_id: str) -> None:
    """Every other flag at its default: the defaults pass every check, the buffer ones included."""
    assert poly.parse_args(["--env-id", env_id]).env_id == env_id


def test_output_dir_that_is_a_file_is_one_error_line_and_no_run_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "taken").write_text("a file")
    for output_dir in ("taken", "taken/runs"):
        with pytest.raises(SystemExit) as exit_:
            poly.main(["--output-dir", output_dir])
        assert exit_.value.code == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith(
            f"error: --output-dir: cannot create a run folder in '{output_dir}' ("
        )
    assert [path.name for path in tmp_path.iterdir()] == ["taken"]


def test_cli_error_as_a_subprocess_has_no_traceback_and_creates_nothing(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--final-sparsity", "1"], cwd=tmp_path, capture_output=True, text=True
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == ["error: --final-sparsity: s_F must be in [0, 1)"]
    assert not (tmp_path / "runs").exists()


# ---------------------------------------------------------------------------------------------------------------------
# The training loop of main(), recorded in-process: 600 steps, a few seconds
# ---------------------------------------------------------------------------------------------------------------------

TIME_LIMIT = 15  # CartPole is truncated after 15 steps here, so that a short run has truncations and terminations
LOOP = [
    "--total-timesteps", "600", "--learning-starts", "200", "--exploration-steps", "400", "--start-e", "1.0",
    "--end-e", "0.0", "--target-network-frequency", "100", "--pruning-period", "50", "--final-sparsity", "0.9",
    "--train-frequency", "4", "--batch-size", "16", "--network-size", "small", "--checkpoint-interval", "0",
    "--seed", "2",
]  # fmt: skip
# Eq. 2 of this run: t_start = 0.2 * 600 = 120, t_end = 0.8 * 600 = 480, s_F = 0.9, n = 3; masks at multiples of 50


def loop_sparsity(step: int) -> float:
    return eq2(step, 0.9, 120, 480)


def last_pruning_before(step: int) -> int:
    """The last mask update of the loop run before an env step's gradient step (a multiple of the period, 50)."""
    return (step - 1) // 50 * 50


@pytest.fixture(scope="module")
def recorded_run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """main() with recorders around the replay buffer, the acting function and the train step (the script's own
    functions do the work); envs built with a 15-step time limit."""
    record: dict[str, Any] = {"train": [], "act": [], "replay": None}
    make_train_step, make_act = poly.make_train_step, poly.make_act

    class RecordedReplay(poly.ReplayBuffer):
        def __init__(self, *args: Any) -> None:
            super().__init__(*args)
            record["replay"] = self

    def recorded_make_train_step(*args: Any) -> Any:
        train_step = make_train_step(*args)

        def recorded(params: dict, opt_state: Any, masks: dict, target_params: dict, batch: dict) -> Any:
            out = train_step(params, opt_state, masks, target_params, batch)
            record["train"].append(
                {"step": record["replay"].size, "params": params, "opt_state": opt_state, "masks": masks,
                 "target": target_params, "batch": batch, "out_params": out[0], "out_opt_state": out[1]}
            )  # fmt: skip
            return out

        return recorded

    def recorded_make_act(network: poly.QNetwork) -> Any:
        act = make_act(network)

        def recorded(params: dict, observations: np.ndarray) -> Any:
            record["act"].append((record["replay"].size, params))
            return act(params, observations)

        return recorded

    def short_episodes(env_id: str, num_envs: int, seed: int, render: bool = False) -> Any:
        return envpool.make(env_id, env_type="gymnasium", num_envs=num_envs, seed=seed, max_episode_steps=TIME_LIMIT)

    output_dir = tmp_path_factory.mktemp("recorded")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(poly, "ReplayBuffer", RecordedReplay)
        patch.setattr(poly, "make_train_step", recorded_make_train_step)
        patch.setattr(poly, "make_act", recorded_make_act)
        patch.setattr(poly, "make_env", short_episodes)
        call_main(["--output-dir", str(output_dir), *LOOP])
    (record["run_dir"],) = output_dir.iterdir()
    return record


def assert_trees_equal(a: Any, b: Any) -> None:
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def trees_equal(a: Any, b: Any) -> bool:
    return all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True))


def test_loop_acts_epsilon_greedy_with_the_online_network(recorded_run: dict) -> None:
    """epsilon is 1 through the 200-step warm-up (no greedy action at all), then decays to 0 over 400 steps: about
    200 of the last 400 steps are greedy, each with the current online network (not the target network)."""
    acts, train = recorded_run["act"], recorded_run["train"]
    steps = np.array([step for step, _ in acts])
    assert steps.min() > 200
    assert 150 <= len(steps) <= 290  # 200 expected, plus the autoreset steps of the decay (about 15)
    checked = 0
    for step, params in acts:
        following = next((call for call in train if call["step"] > step), None)
        if following is None or last_pruning_before(following["step"]) > step:
            continue  # no gradient step follows, or the mask changed in between
        assert_trees_equal(params, following["params"])
        checked += 1
    assert checked > 100


def test_loop_takes_one_gradient_step_per_g_env_steps_on_a_minibatch_of_the_replay(recorded_run: dict) -> None:
    """(600 - 200) / G = 100 gradient steps, at env steps 204, 208, ..., 600, each on one mini-batch of --batch-size
    stored transitions."""
    replay, train = recorded_run["replay"], recorded_run["train"]
    assert [call["step"] for call in train] == list(range(204, 601, 4))
    stored = {
        tuple(o) + tuple(n)
        for o, n in zip(replay.observations[: replay.size], replay.next_observations[: replay.size], strict=True)
    }
    for call in train[::10]:
        batch = call["batch"]
        assert batch["observations"].shape == (16, 4) and batch["actions"].shape == (16,)
        pairs = {tuple(o) + tuple(n) for o, n in zip(batch["observations"], batch["next_observations"], strict=True)}
        assert pairs <= stored


def test_loop_updates_the_target_every_t_steps_before_pruning(recorded_run: dict) -> None:
    """The target is the dense initial network until the first multiple of T after learning starts (300), then, every
    T = 100 steps, a copy of the online network as the gradient step of that env step left it, before the mask is
    recomputed at that step: sparsity/target at t is Eq. 2 at the previous mask update t - 50."""
    train = recorded_run["train"]
    initial = train[0]["target"]
    assert poly.measured_sparsity(initial) == 0.0
    out_at = {call["step"]: call["out_params"] for call in train}
    for call in train:
        updates = [t for t in (300, 400, 500) if t < call["step"]]
        assert_trees_equal(call["target"], out_at[updates[-1]] if updates else initial)
    sparsity = logged(read_metrics(recorded_run["run_dir"]), "sparsity/target")
    assert list(sparsity) == [0, 300, 400, 500, 600]
    for step in (300, 400, 500, 600):
        assert sparsity[step] == pytest.approx(loop_sparsity(step - 50), abs=1e-3)
    assert sparsity[300] < sparsity[400] < sparsity[500]


def test_loop_recomputes_the_mask_every_pruning_period_at_eq2_and_keeps_the_adam_state(recorded_run: dict) -> None:
    """Every 50 env steps the mask zeroes the smallest weights of the online network so that they reach the Eq. 2
    sparsity of that step (exact ERK counts); the weights are masked at once and the Adam state carries on."""
    train = recorded_run["train"]
    shapes = poly.prunable_shapes(train[0]["params"])
    changes = 0
    for i, call in enumerate(train):
        expected = poly.layer_zero_counts(shapes, loop_sparsity(last_pruning_before(call["step"])), "erk")
        masks = call["masks"]
        assert [int((~np.asarray(m)).sum()) for m in jax.tree.leaves(masks) if m.ndim > 1] == expected, call["step"]
        for w, m in zip(jax.tree.leaves(call["params"]), jax.tree.leaves(masks), strict=True):
            assert np.all(np.asarray(w)[~np.asarray(m)] == 0), call["step"]  # the new mask is applied at once
        if i == 0:
            continue
        previous = train[i - 1]
        assert_trees_equal(call["opt_state"], previous["out_opt_state"])  # Adam state kept (Ceron et al. 2024)
        if trees_equal(masks, previous["masks"]):
            assert_trees_equal(call["params"], previous["out_params"])
            continue
        changes += 1  # the mask was recomputed from the trained weights: pruning only zeroes the smallest of them
        assert_trees_equal(call["params"], poly.apply_masks(previous["out_params"], masks))
        for w, m in zip(jax.tree.leaves(previous["out_params"]), jax.tree.leaves(masks), strict=True):
            w, m = np.abs(np.asarray(w)), np.asarray(m)
            if w.ndim > 1 and not m.all():  # ERK may leave a small layer dense
                assert w[m].min() >= w[~m].max()
    assert changes == 6  # at 250, 300, ..., 500 (from 500 on Eq. 2 stays at s_F)


def test_loop_stores_every_real_transition_with_its_true_next_observation(recorded_run: dict) -> None:
    """600 env steps give 600 transitions (autoreset steps are not stored), each o' is the true successor of o under
    gymnasium's dynamics (also at a truncation), and terminated is gymnasium's termination (a truncation is not one)."""
    replay = recorded_run["replay"]
    assert replay.size == 600
    lengths = values(read_metrics(recorded_run["run_dir"]), "charts/episodic_length")
    assert TIME_LIMIT in lengths and min(lengths) < TIME_LIMIT  # both truncations and terminations happened
    assert replay.terminated[: replay.size].sum() >= sum(length < TIME_LIMIT for length in lengths)
    # one env and no wrap-around: a transition continues the previous one's episode when its o is the previous o'
    episode_step = np.ones(replay.size, int)
    for i in range(1, replay.size):
        if np.array_equal(replay.observations[i], replay.next_observations[i - 1]):
            episode_step[i] = episode_step[i - 1] + 1
    assert_transitions_follow_reference_dynamics(replay, "CartPole-v1", episode_step == TIME_LIMIT)


def test_loop_writes_polyprune_outputs_and_no_population_log(recorded_run: dict) -> None:
    run_dir = recorded_run["run_dir"]
    assert run_dir.name.startswith("CartPole-v1__polyprune_dqn_jax__2__")
    assert not (run_dir / "population.jsonl").exists()
    names = {m["name"] for m in read_metrics(run_dir)}
    assert names == {"charts/episodic_return", "charts/episodic_length", "sparsity/target"}  # 600 < 1000 steps


# ---------------------------------------------------------------------------------------------------------------------
# End to end: outputs, saved model, video, resume; the dense baseline
# ---------------------------------------------------------------------------------------------------------------------

SMOKE = [
    "--total-timesteps", "3000", "--learning-starts", "500", "--target-network-frequency", "250",
    "--pruning-period", "125", "--network-size", "small", "--batch-size", "32",
]  # fmt: skip


@pytest.mark.slow
def test_smoke_run_outputs_eq2_model_video_and_resume(tmp_path: Path) -> None:
    proc = run_script(
        tmp_path, *SMOKE, "--seed", "3", "--checkpoint-interval", "1500", "--save-model", "--capture-video",
        "--eval-episodes", "1",
    )  # fmt: skip
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert run_dir.name.startswith("CartPole-v1__polyprune_dqn_jax__3__")
    config = json.loads((run_dir / "config.json").read_text())
    assert config["args"]["final_sparsity"] == 0.95 and config["args"]["total_timesteps"] == 3000
    assert not (run_dir / "population.jsonl").exists()

    metrics = read_metrics(run_dir)
    assert {m["name"] for m in metrics} == {
        "charts/episodic_return", "charts/episodic_length", "charts/SPS", "charts/epsilon", "losses/td_loss",
        "sparsity/target", "sparsity/online", "eval/episodic_return",
    }  # fmt: skip
    assert all(set(m) == {"global_step", "name", "value", "time"} for m in metrics)
    assert values(metrics, "charts/episodic_return") == values(metrics, "charts/episodic_length")  # CartPole
    assert list(run_dir.glob("events.out.tfevents.*"))
    # Eq. 2 with t_start = 600, t_end = 2400: the target copies the online network masked at the previous mask update
    sparsity = logged(metrics, "sparsity/target")
    assert list(sparsity) == [0, *range(750, 3001, 250)]
    for step in range(750, 3001, 250):
        assert sparsity[step] == pytest.approx(eq2(step - 125, 0.95, 600, 2400), abs=1e-3)
    online = logged(metrics, "sparsity/online")  # the nominal sparsity of the current mask, every 1000 steps
    assert list(online) == [1000, 2000, 3000]
    for step, value in online.items():
        assert value == pytest.approx(eq2(step, 0.95, 600, 2400))
    # the saved model is the final target network; its zeros are the last logged target sparsity
    network = poly.QNetwork(action_dim=2, hidden_width=poly.HIDDEN_WIDTHS["small"])
    template = network.init(jax.random.PRNGKey(0), np.zeros((1, 4), np.float32))
    params = flax.serialization.from_bytes(template, (run_dir / "polyprune_dqn_jax.cleanrl_model").read_bytes())
    assert poly.measured_sparsity(params) == pytest.approx(sparsity[3000])
    (episode_return,) = values(metrics, "eval/episodic_return")
    videos = sorted((tmp_path / "videos" / run_dir.name).glob("*.mp4"))
    assert [v.name for v in videos] == ["eval-episode-0.mp4"]
    with imageio.get_reader(videos[0]) as reader:  # one frame per state: the episode's length + 1 (CartPole)
        assert reader.count_frames() == episode_return + 1
    assert "target sparsity 0.95" in proc.stdout

    # resume: extend the finished run (its final checkpoint is at 3000) to 4000 steps, with the same Eq. 2 window
    config["args"].update(total_timesteps=4000, pruning_start=0.15, pruning_end=0.6, save_model=False)
    (run_dir / "config.json").write_text(json.dumps(config))
    proc = run_script(tmp_path, "--resume", str(run_dir))
    assert "resumed" in proc.stdout and "3,000" in proc.stdout
    resumed = read_metrics(run_dir)
    steps = [m["global_step"] for m in resumed if m["name"] == "charts/episodic_return"]
    assert steps == sorted(steps) and 3000 < steps[-1] <= 4000
    after = logged(resumed, "sparsity/target")
    assert list(after) == [0, *range(750, 4001, 250)]
    assert all(after[step] == sparsity[3000] for step in range(3250, 4001, 250))  # the restored mask, unchanged


def test_dense_baseline_stays_dense_and_a_finished_run_resumes_to_nothing(tmp_path: Path) -> None:
    """--final-sparsity 0 is dense DQN: no weight is ever pruned; --resume of a finished run adds nothing."""
    argv = [*LOOP, "--final-sparsity", "0", "--total-timesteps", "1000", "--checkpoint-interval", "500"]
    call_main(["--output-dir", str(tmp_path / "runs"), *argv])
    (run_dir,) = (tmp_path / "runs").iterdir()
    metrics = read_metrics(run_dir)
    assert list(logged(metrics, "sparsity/target")) == [0, *range(300, 1001, 100)]
    assert set(values(metrics, "sparsity/target")) == set(values(metrics, "sparsity/online")) == {0.0}
    state = flax.serialization.msgpack_restore((run_dir / "checkpoint" / "state.msgpack").read_bytes())
    assert all(np.asarray(m).all() for m in jax.tree.leaves(state["masks"]))
    assert poly.measured_sparsity(state["params"]) == 0.0
    before = (run_dir / "metrics.jsonl").read_text()
    call_main(["--resume", str(run_dir)])
    assert json.loads((run_dir / "checkpoint" / "meta.json").read_text())["global_step"] == 1000
    assert (run_dir / "metrics.jsonl").read_text() == before


def stable_sort_mask(magnitudes: np.ndarray, num_zeros: int) -> np.ndarray:
    """The definition keep_largest must meet: all but the `num_zeros` smallest magnitudes, ties pruned in order of
    position (what a stable sort gives)."""
    keep = np.ones(magnitudes.size, dtype=bool)
    keep[np.argsort(magnitudes, kind="stable")[:num_zeros]] = False
    return keep


def selection_cases() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    distinct = np.abs(rng.normal(size=301)).astype(np.float32)
    ties = np.round(np.abs(rng.normal(size=301)), 1) * (rng.random(301) > 0.6)  # pruned weights are exact zeros
    wide = np.array([0.0, np.inf, 1e-45, 3e38, 0.0, 1e-45, 1.0, 2.0**-126, 3e38, 0.0], np.float32)
    return [distinct, ties.astype(np.float32), np.full(64, 0.5, np.float32), wide]


@pytest.mark.parametrize("module", [poly], ids=["polyprune_dqn_jax"])
def test_keep_largest_is_the_stable_sort_mask(module) -> None:
    """The linear-time selection behind every mask gives the mask of a stable sort, at counts 0, 1, n - 1 and n,
    on magnitudes with many exact ties, on a single repeated value and over the whole float32 range."""
    select = jax.jit(module.keep_largest)
    for magnitudes in selection_cases():
        n = magnitudes.size
        for num_zeros in sorted({0, 1, n // 3, n // 2, n - 1, n}):
            mask = np.asarray(select(jnp.asarray(magnitudes), jnp.asarray(num_zeros)))
            np.testing.assert_array_equal(mask, stable_sort_mask(magnitudes, num_zeros), f"{n} {num_zeros}")
