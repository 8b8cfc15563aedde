"""Tests of eaudedqn_jax.py, the classic-control twin of eaudedqn_atari_jax.py: every line of Algorithm 1 against
hand-computed values (epsilon schedule, Eq. 3, tournaments, the 1 / L behaviour draw, magnitude pruning, the train
step, the population step, the training loop recorded in-process), network sizes, the replay buffer against envpool
and gymnasium's reference dynamics, command-line errors, an end-to-end smoke run (outputs, saved model, video,
resume) and a learning test on CartPole-v1 with a near-dense comparison run. Crash safety (Ctrl-C, torn logs, damaged
checkpoints, divergence) is tested for both classic-control scripts in test_reliability.py.
tools/mutants/eaudedqn_jax.toml lists the breaks of the algorithm these tests catch."""

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
# Acting and learning cadence (Alg. 1 l. 1, 3, 5): initial learner, epsilon schedule and epsilon-greedy, every G
# ---------------------------------------------------------------------------------------------------------------------


def test_epsilon_schedule_holds_start_e_through_warm_up_then_decays_linearly() -> None:
    args = classic.Args(start_e=1.0, end_e=0.1, learning_starts=100, exploration_steps=1000)
    schedule = [classic.epsilon_schedule(step, args) for step in (0, 99, 100, 600, 1100, 5000)]
    # midpoint: 1.0 + (600 - 100) / 1000 * (0.1 - 1.0) = 0.55
    np.testing.assert_allclose(schedule, [1.0, 1.0, 1.0, 0.55, 0.1, 0.1])
    args.exploration_steps = 0  # no decay: a step from start-e to end-e when learning starts
    assert [classic.epsilon_schedule(step, args) for step in (99, 100)] == [1.0, 0.1]


def test_epsilon_greedy_acts_greedily_with_probability_one_minus_epsilon() -> None:
    """Alg. 1 l. 3: epsilon-greedy on top of the behaviour network (whose greedy action is 7 here; random ones 0-3)."""
    rng = np.random.default_rng(0)
    actions = np.concatenate([classic.epsilon_greedy(0.25, 4, 100, lambda: np.full(100, 7), rng) for _ in range(40)])
    assert set(np.unique(actions)) <= {0, 1, 2, 3, 7}
    assert (actions == 7).mean() == pytest.approx(0.75, abs=0.03)  # 4000 draws: standard error 0.007
    assert (classic.epsilon_greedy(0.0, 4, 50, lambda: np.full(50, 7), rng) == 7).all()
    assert (classic.epsilon_greedy(1.0, 4, 50, lambda: np.full(50, 7), rng) != 7).all()


def test_one_gradient_step_every_g_env_steps_after_the_warm_up() -> None:
    """Alg. 1 l. 5: G = 4 after a 100-step warm-up."""
    args = classic.Args(learning_starts=100, train_frequency=4)
    due = [classic.gradient_steps_due(t, args) for t in (0, 99, 100, 103, 104, 107, 108, 500)]
    assert due == [0, 0, 0, 0, 1, 1, 2, 100]


def test_init_learner_is_alg1_line_1() -> None:
    """K independent networks, dense (all-True masks), fresh Adam states, psi = 0 (the target is a copy of online
    network 0) and L_k = 0."""
    network = classic.QNetwork(action_dim=2, hidden_width=classic.HIDDEN_WIDTHS["small"])  # as in the recorded run
    learner = classic.init_learner(network, optax.adam(1e-3), jax.random.PRNGKey(0), 3, np.zeros((1, 4), np.float32))
    kernels = [np.asarray(classic.take(learner["params"], k)["params"]["Dense_0"]["kernel"]) for k in range(3)]
    assert not np.allclose(kernels[0], kernels[1]) and not np.allclose(kernels[1], kernels[2])
    for a, b in zip(jax.tree.leaves(learner["target_params"]), jax.tree.leaves(learner["params"]), strict=True):
        np.testing.assert_array_equal(a, b[0])
    assert all(np.asarray(m).all() for m in jax.tree.leaves(learner["masks"]))
    np.testing.assert_array_equal(learner["cumulated_losses"], np.zeros(3))
    np.testing.assert_array_equal(np.asarray(learner["opt_states"][0].count), np.zeros(3))


# ---------------------------------------------------------------------------------------------------------------------
# Eq. 3: exploration step of a copy
# ---------------------------------------------------------------------------------------------------------------------


def test_exploration_eq3_linear_branch() -> None:
    # s = 0.2 at t = 1000 of 11000, T = 1000: the line to (t_final, 1) gives 0.8 * 1000 / 10000 = 0.08, times U = 1.5
    assert classic.exploration_sparsity(0.2, 1000, 11_000, 1000, 1.5, s_max=0.5) == pytest.approx(0.2 + 0.12)


def test_exploration_eq3_speed_cap() -> None:
    # the same step with S_max = 0.01 is capped at (1 - 0.2) * 0.01 = 0.008
    assert classic.exploration_sparsity(0.2, 1000, 11_000, 1000, 1.5, s_max=0.01) == pytest.approx(0.208)


def test_exploration_draws_u_uniformly_up_to_u_max_for_copies_only() -> None:
    """Without the cap (S_max = 1) a copy's step is U * 0.08 with U ~ U(0, U_max): its mean is U_max / 2 * 0.08."""
    rng = np.random.default_rng(0)
    sparsities = np.array([0.2, 0.9, 0.9])
    steps = []
    for _ in range(400):
        parents, after, is_copy = classic.plan_next_population(
            np.array([1.0, 2.0, 3.0]), sparsities, 1000, 11_000, 1000, 3, u_max=2.0, s_max=1.0, rng=rng
        )
        np.testing.assert_array_equal(parents, [0, 0, 0])  # M = K: network 0 wins every tournament
        np.testing.assert_array_equal(is_copy, [False, True, True])
        assert after[0] == 0.2  # the original keeps its sparsity
        steps.extend(after[1:] - 0.2)
    steps = np.array(steps) / 0.08  # the drawn U
    assert 0.0 <= steps.min() < 0.05 and 1.95 < steps.max() <= 2.0
    assert np.mean(steps) == pytest.approx(1.0, abs=0.06)  # 800 draws: standard error 0.02


# ---------------------------------------------------------------------------------------------------------------------
# Exploitation: elitist tournaments (Alg. 1 l. 14)
# ---------------------------------------------------------------------------------------------------------------------


def test_tournament_slot_zero_is_the_best_network() -> None:
    rng = np.random.default_rng(0)
    for _ in range(50):
        losses = rng.random(5)
        assert classic.tournament_selection(losses, 3, rng)[0] == np.argmin(losses)


def test_tournament_with_m_equal_k_always_picks_the_best() -> None:
    parents = classic.tournament_selection(np.array([3.0, 1.0, 2.0, 5.0, 4.0]), 5, np.random.default_rng(1))
    np.testing.assert_array_equal(parents, [1, 1, 1, 1, 1])


def test_tournament_winner_distribution_matches_hand_computation() -> None:
    # K = 5, M = 3, losses ranked 1 < 2 < 0 < 4 < 3: a tournament is won by the best of 3 drawn without replacement.
    # P(1 wins) = P(1 drawn) = 3/5; P(2 wins) = C(3,2)/C(5,3) = 3/10; P(0 wins) = 1/10; 3 and 4 can never win.
    # (Drawn with replacement, P(1 wins) would be 1 - (4/5)^3 = 0.488.)
    losses = np.array([3.0, 1.0, 2.0, 5.0, 4.0])
    rng = np.random.default_rng(2)
    winners = np.concatenate([classic.tournament_selection(losses, 3, rng)[1:] for _ in range(5000)])
    frequencies = np.bincount(winners, minlength=5) / len(winners)
    np.testing.assert_allclose(frequencies, [0.1, 0.6, 0.3, 0.0, 0.0], atol=0.01)


def test_tournament_treats_nan_loss_as_worst() -> None:
    parents = classic.tournament_selection(np.array([np.nan, 2.0, 1.0]), 3, np.random.default_rng(0))
    np.testing.assert_array_equal(parents, [2, 2, 2])


def test_plan_keeps_one_original_per_chosen_network_and_explores_copies() -> None:
    rng = np.random.default_rng(3)
    sparsities = np.array([0.1, 0.3, 0.5, 0.2, 0.0])
    for _ in range(100):
        losses = rng.random(5)
        parents, after, is_copy = classic.plan_next_population(
            losses, sparsities, 4000, 10_000, 1000, 3, u_max=3.0, s_max=0.01, rng=rng
        )
        assert parents[0] == np.argmin(losses) and not is_copy[0] and after[0] == sparsities[parents[0]]
        for slot, parent in enumerate(parents):
            first = list(parents).index(parent) == slot
            assert is_copy[slot] != first
            before = sparsities[parent]
            if first:
                assert after[slot] == before
            else:
                assert before < after[slot] <= before + (1 - before) * 0.01 + 1e-12


# ---------------------------------------------------------------------------------------------------------------------
# Behaviour policy (Alg. 1 l. 3): a network drawn with probability proportional to 1 / L
# ---------------------------------------------------------------------------------------------------------------------


def test_behaviour_probabilities_hand_computed() -> None:
    p = np.asarray(classic.behaviour_probabilities(jnp.array([1.0, 2.0, 4.0])))
    np.testing.assert_allclose(p, np.array([1.0, 0.5, 0.25]) / 1.75, rtol=1e-5)


def test_behaviour_probabilities_uniform_after_reset_and_nan_safe() -> None:
    np.testing.assert_allclose(np.asarray(classic.behaviour_probabilities(jnp.zeros(4))), 0.25)
    p = np.asarray(classic.behaviour_probabilities(jnp.array([jnp.nan, 1.0, jnp.inf])))
    np.testing.assert_allclose(p, [0.0, 1.0, 0.0])


def constant_q_population(biases: list[list[float]], hidden_width: int = 4) -> tuple[classic.QNetwork, dict]:
    """Networks whose weights are all zero: network k outputs Q_k(s, .) = biases[k] for every s."""
    network = classic.QNetwork(action_dim=len(biases[0]), hidden_width=hidden_width)
    params = network.init(jax.random.PRNGKey(0), jnp.zeros((1, 4), jnp.float32))
    population = jax.tree.map(lambda x: jnp.zeros((len(biases), *x.shape)), params)
    population["params"]["Dense_2"]["bias"] = jnp.array(biases)
    return network, population


def test_act_draws_the_behaviour_network_proportionally_to_inverse_loss() -> None:
    """Network k always chooses action k, so the action frequencies are the behaviour distribution."""
    network, population = constant_q_population(np.eye(3).tolist())
    act = jax.vmap(classic.make_act(network), in_axes=(None, None, None, 0))
    keys = jax.random.split(jax.random.PRNGKey(1), 4000)
    actions = np.asarray(act(population, jnp.array([1.0, 2.0, 4.0]), np.zeros((1, 4), np.float32), keys))[:, 0]
    frequencies = np.bincount(actions, minlength=3) / len(actions)
    # 4000 draws: the standard error is below 0.008 for each frequency
    np.testing.assert_allclose(frequencies, np.array([4.0, 2.0, 1.0]) / 7.0, atol=0.03)


# ---------------------------------------------------------------------------------------------------------------------
# Magnitude pruning: exact zero counts, the largest weights kept
# ---------------------------------------------------------------------------------------------------------------------


@functools.cache  # JAX arrays are immutable: the tests may share them
def mlp_population(num_networks: int, hidden_width: int = 16, num_actions: int = 2) -> tuple[classic.QNetwork, dict]:
    """K networks with independent N(0, 0.3^2) weights and biases (numpy draws: no compilation of Flax's init)."""
    network = classic.QNetwork(action_dim=num_actions, hidden_width=hidden_width)
    shapes = jax.eval_shape(network.init, jax.random.PRNGKey(0), jnp.zeros((1, 4), jnp.float32))
    rng = np.random.default_rng(num_networks)
    population = jax.tree.map(
        lambda x: jnp.asarray(0.3 * rng.standard_normal((num_networks, *x.shape)), jnp.float32), shapes
    )
    return network, population


def kernel_zero_counts(params: dict) -> list[int]:
    return [int((np.asarray(w) == 0).sum()) for w in jax.tree.leaves(params) if w.ndim > 1]


def test_erk_densities_hand_computed() -> None:
    # raw densities sum/prod: 20/100 = 0.2 and 110/1000 = 0.11; 550 non-zeros to spread: scale 550 / 130
    densities = classic.layer_densities([(10, 10), (100, 10)], 0.5, "erk")
    np.testing.assert_allclose(densities, [0.2 * 550 / 130, 0.11 * 550 / 130])
    assert classic.layer_zero_counts([(10, 10), (100, 10)], 0.5, "erk") == [15, 535]
    # (2, 2) has raw density 1 and would get 24.5: it becomes dense and (100, 100) takes the whole budget
    assert classic.layer_zero_counts([(2, 2), (100, 100)], 0.5, "erk") == [0, 5002]
    assert classic.layer_zero_counts([(10, 10), (100, 10)], 0.3, "uniform") == [30, 300]


@pytest.mark.parametrize("distribution", ["erk", "uniform", "global"])
def test_magnitude_masks_keep_the_largest_weights_with_exact_counts(distribution: str) -> None:
    _, population = mlp_population(1)
    params = classic.take(population, 0)
    masks = classic.magnitude_masks(params, 0.7, distribution)
    kernels = [
        (np.asarray(w), np.asarray(m)) for w, m in zip(jax.tree.leaves(params), jax.tree.leaves(masks), strict=True)
    ]
    kernels = [(w, m) for w, m in kernels if w.ndim > 1]
    shapes = classic.prunable_shapes(params)
    if distribution == "global":  # one threshold over all layers
        kept = np.concatenate([np.abs(w[m]) for w, m in kernels])
        dropped = np.concatenate([np.abs(w[~m]) for w, m in kernels])
        assert len(dropped) == round(0.7 * sum(w.size for w, _ in kernels)) and kept.min() >= dropped.max()
    else:
        assert [int((~m).sum()) for _, m in kernels] == classic.layer_zero_counts(shapes, 0.7, distribution)
        for w, m in kernels:  # magnitudes, not signed values: large negative weights are kept
            assert np.abs(w[m]).min() >= np.abs(w[~m]).max()
    biases = [np.asarray(m) for m in jax.tree.leaves(masks) if m.ndim == 1]
    assert all(b.all() for b in biases)


# ---------------------------------------------------------------------------------------------------------------------
# Train step (Alg. 1 l. 6-10): shared target, every network's own loss, L_k += loss_k, masks after Adam
# ---------------------------------------------------------------------------------------------------------------------


def make_learner(population: dict, masks: dict, optimizer: optax.GradientTransformation, target: dict) -> dict:
    num_networks = jax.tree.leaves(population)[0].shape[0]
    return {
        "params": population,
        "masks": masks,
        "opt_states": jax.vmap(optimizer.init)(population),
        "target_params": target,
        "cumulated_losses": jnp.zeros(num_networks),
        "key": jax.random.PRNGKey(0),
    }


def all_true(tree: dict) -> dict:
    return jax.tree.map(lambda x: jnp.ones_like(x, bool), tree)


@pytest.mark.parametrize("layout", ["vmap", "loop"])
def test_shared_target_and_every_networks_own_loss_hand_computed(layout: str) -> None:
    """y = r + gamma (1 - terminated) max_a' Qbar(s', a') from the target network; loss_k = mean((y - Q_k)^2)."""
    network, population = constant_q_population([[0.0, 0.0], [1.0, 1.0]])  # Q_0 = 0, Q_1 = 1
    _, target_population = constant_q_population([[5.0, 7.0]])  # max_a' Qbar(s', a') = 7 (the mean would be 6)
    target = classic.take(target_population, 0)
    rng = np.random.default_rng(0)
    batch = {
        "observations": rng.standard_normal((4, 4)).astype(np.float32),
        "actions": np.array([0, 1, 0, 1], np.int32),
        "rewards": np.array([1.0, -1.0, 0.0, 1.0], np.float32),
        "terminations": np.array([0.0, 1.0, 0.0, 1.0], np.float32),
        "next_observations": rng.standard_normal((4, 4)).astype(np.float32),
    }
    optimizer = optax.adam(1e-3)
    learner = make_learner(population, all_true(population), optimizer, target)
    learner["cumulated_losses"] = jnp.array([10.0, 20.0])
    step = classic.make_train_step(network, optimizer, 0.5, layout)
    learner, losses = step(learner, batch)
    y = np.array([1 + 0.5 * 7, -1.0, 0.5 * 7, 1.0])  # terminated transitions do not bootstrap
    expected = np.array([np.mean(y**2), np.mean((y - 1.0) ** 2)])  # [7.875, 5.375]
    np.testing.assert_allclose(np.asarray(losses), expected, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(learner["cumulated_losses"]), np.array([10.0, 20.0]) + expected, rtol=1e-6)


def test_train_step_is_k_independent_adam_steps_and_keeps_pruned_weights_zero() -> None:
    """Each network takes its own Adam step on its own loss against the shared target; pruned weights stay zero.
    (The vmap layout, the default; the loop layout's own line is checked by the hand-computed test above.)"""
    network, population = mlp_population(3)
    masks = [classic.magnitude_masks(classic.take(population, k), 0.4 * k, "erk") for k in range(3)]
    masks = jax.tree.map(lambda *m: jnp.stack(m), *masks)
    population = classic.apply_masks(population, masks)
    _, target_population = mlp_population(1)
    target = classic.take(target_population, 0)
    optimizer = optax.adam(1e-2)
    learner = make_learner(population, masks, optimizer, target)
    step = classic.make_train_step(network, optimizer, 0.99, "vmap")
    rng = np.random.default_rng(0)
    batches = [
        {
            "observations": rng.standard_normal((16, 4)).astype(np.float32),
            "actions": rng.integers(2, size=16).astype(np.int32),
            "rewards": rng.standard_normal(16).astype(np.float32),
            "terminations": (rng.random(16) < 0.3).astype(np.float32),
            "next_observations": rng.standard_normal((16, 4)).astype(np.float32),
        }
        for _ in range(2)
    ]
    for batch in batches:
        learner, _ = step(learner, batch)

    @jax.jit
    def reference_step(params: dict, state: Any, mask: dict, batch: dict) -> tuple[dict, Any, jax.Array]:
        """One network alone: its own loss against the target network, an Adam step, its mask re-applied."""
        next_q = network.apply(target, batch["next_observations"]).max(axis=1)
        y = batch["rewards"] + 0.99 * (1.0 - batch["terminations"]) * next_q

        def loss_fn(p: dict) -> jax.Array:
            return jnp.mean((y - network.apply(p, batch["observations"])[jnp.arange(16), batch["actions"]]) ** 2)

        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, state = optimizer.update(grads, state, params)
        return classic.apply_masks(optax.apply_updates(params, updates), mask), state, loss

    for k in range(3):
        params, mask = classic.take(population, k), classic.take(masks, k)
        state, total = optimizer.init(params), 0.0
        for batch in batches:
            params, state, loss = reference_step(params, state, mask, batch)
            total += float(loss)
        assert float(learner["cumulated_losses"][k]) == pytest.approx(total, rel=1e-5)
        for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(classic.take(learner["params"], k)), strict=True):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-6)
        assert int(classic.take(learner["opt_states"], k)[0].count) == 2
    for w, m in zip(jax.tree.leaves(learner["params"]), jax.tree.leaves(masks), strict=True):
        assert np.all(np.asarray(w)[~np.asarray(m)] == 0)  # Adam's momentum would move them without the mask
    assert kernel_zero_counts(classic.take(learner["params"], 2)) == kernel_zero_counts(classic.take(population, 2))


# ---------------------------------------------------------------------------------------------------------------------
# Population step (Alg. 1 l. 12-16): target = argmin L, tournaments, pruned copies with fresh Adam, L reset
# ---------------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained() -> tuple[dict, optax.GradientTransformation, np.ndarray]:
    """K = 5 networks pruned to sparsities 0, 0.1, ..., 0.4 after two Adam steps (non-zero moments and counts)."""
    sparsities = np.array([0.0, 0.1, 0.2, 0.3, 0.4])
    network, population = mlp_population(len(sparsities))
    masks = [classic.magnitude_masks(classic.take(population, k), s, "erk") for k, s in enumerate(sparsities)]
    masks = jax.tree.map(lambda *m: jnp.stack(m), *masks)
    population = classic.apply_masks(population, masks)
    optimizer = optax.adam(1e-2)
    learner = make_learner(population, masks, optimizer, classic.take(population, 0))
    step = classic.make_train_step(network, optimizer, 0.99, "vmap")
    rng = np.random.default_rng(1)
    for _ in range(2):
        batch = {
            "observations": rng.standard_normal((8, 4)).astype(np.float32),
            "actions": rng.integers(2, size=8).astype(np.int32),
            "rewards": rng.standard_normal(8).astype(np.float32),
            "terminations": np.zeros(8, np.float32),
            "next_observations": rng.standard_normal((8, 4)).astype(np.float32),
        }
        learner, _ = step(learner, batch)
    return learner, optimizer, sparsities


def assert_trees_equal(a: Any, b: Any) -> None:
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_population_step_hand_checked(trained: tuple) -> None:
    """L = [3, NaN, 1, 2, 4] and M = K: network 2 becomes the target (NaN is the worst loss, not the best) and wins
    every tournament, so slot 0 is network 2 itself and slots 1-4 are pruned copies of it."""
    learner, optimizer, sparsities = trained
    learner = {**learner, "cumulated_losses": jnp.array([3.0, np.nan, 1.0, 2.0, 4.0])}
    args = classic.Args(tournament_size=5, target_network_frequency=100, u_max=30.0, s_max=0.5)
    new, new_sparsities, event = classic.population_step(
        learner, sparsities, 1000, 2000, args, optimizer, np.random.default_rng(0)
    )
    old = {name: classic.take(learner[name], 2) for name in ("params", "masks", "opt_states")}
    assert_trees_equal(new["target_params"], old["params"])  # Alg. 1 l. 12: psi = argmin L
    np.testing.assert_array_equal(np.asarray(new["cumulated_losses"]), np.zeros(5))  # l. 16
    for name in ("params", "masks", "opt_states"):  # slot 0: the best network with its own mask and Adam state
        assert_trees_equal(classic.take(new[name], 0), old[name])
    assert int(old["opt_states"][0].count) == 2
    assert new_sparsities[0] == 0.2
    shapes = classic.prunable_shapes(old["params"])
    for slot in (1, 2, 3, 4):  # l. 15: copies pruned to their Eq. 3 sparsity, with a fresh Adam state
        # Eq. 3: linear step 0.8 * 100 / 1000 = 0.08 per unit of U, capped at 0.8 * 0.5 = 0.4
        assert 0.2 < new_sparsities[slot] <= 0.2 + 0.4 + 1e-12
        expected_zeros = classic.layer_zero_counts(shapes, float(new_sparsities[slot]), "erk")
        copy, copy_masks = classic.take(new["params"], slot), classic.take(new["masks"], slot)
        assert kernel_zero_counts(copy) == expected_zeros
        assert [int((~np.asarray(m)).sum()) for m in jax.tree.leaves(copy_masks) if m.ndim > 1] == expected_zeros
        leaves = zip(jax.tree.leaves(copy), jax.tree.leaves(copy_masks), jax.tree.leaves(old["params"]), strict=True)
        for w, m, parent in leaves:
            w, m, parent = np.asarray(w), np.asarray(m), np.asarray(parent)
            np.testing.assert_array_equal(w, np.where(m, parent, 0.0))  # pruning only zeroes weights
            if w.ndim > 1 and not m.all():  # magnitude pruning: the kept weights are the parent's largest
                assert np.abs(parent[m]).min() >= np.abs(parent[~m]).max()
        adam = classic.take(new["opt_states"], slot)[0]
        assert int(adam.count) == 0
        assert all(not np.asarray(m).any() for m in jax.tree.leaves((adam.mu, adam.nu)))
    assert event["target_index"] == 2 and event["parents"] == [2, 2, 2, 2, 2]
    assert event["sparsities_before"] == sparsities.tolist() and event["sparsities_after"] == new_sparsities.tolist()
    assert event["global_step"] == 1000 and event["losses"][2] == 1.0 and np.isnan(event["losses"][1])


def test_population_step_slot_zero_is_the_target_and_copies_of_others_are_pruned(trained: tuple) -> None:
    """M < K: the tournaments pick several networks; each network chosen keeps one untouched original."""
    learner, optimizer, sparsities = trained
    learner = {**learner, "cumulated_losses": jnp.array([5.0, 1.0, 2.0, 4.0, 3.0])}
    args = classic.Args(tournament_size=2, target_network_frequency=100, u_max=3.0, s_max=0.5)
    new, new_sparsities, event = classic.population_step(
        learner, sparsities, 1000, 2000, args, optimizer, np.random.default_rng(4)
    )
    parents = event["parents"]
    assert parents[0] == 1 and len(set(parents)) > 1 and len(set(parents)) < 5
    assert_trees_equal(new["target_params"], classic.take(learner["params"], 1))
    for slot, parent in enumerate(parents):
        before = {name: classic.take(learner[name], parent) for name in ("params", "masks", "opt_states")}
        after = {name: classic.take(new[name], slot) for name in ("params", "masks", "opt_states")}
        if parents.index(parent) == slot:
            for name in before:
                assert_trees_equal(after[name], before[name])
            assert new_sparsities[slot] == sparsities[parent]
        else:
            assert new_sparsities[slot] > sparsities[parent] and int(after["opt_states"][0].count) == 0
            expected = classic.layer_zero_counts(classic.prunable_shapes(after["params"]), new_sparsities[slot], "erk")
            assert kernel_zero_counts(after["params"]) == expected


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
    assert rb.size == 3
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
    live_steps, truncations, at_time_limit = 0, 0, []
    for _ in range(120):
        actions = rng.integers(envs.action_space.n, size=num_envs)
        next_obs, rewards, terminated, truncated, info = envs.step(actions)
        rb.add(obs, actions, rewards, terminated, next_obs, reset=resetting)
        at_time_limit.extend(info["elapsed_step"][~resetting] == 15)  # in the order add() stores the live envs
        live_steps += int((~resetting).sum())
        truncations += int((~resetting & truncated).sum())
        resetting = ~resetting & (terminated | truncated)
        obs = next_obs
    envs.close()
    assert rb.size == live_steps and truncations > 0
    assert_transitions_follow_reference_dynamics(rb, env_id, np.array(at_time_limit))


def assert_transitions_follow_reference_dynamics(
    rb: classic.ReplayBuffer, env_id: str, at_time_limit: np.ndarray
) -> None:
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
        (["--seed", "-1"], "--seed"),
        (["--learning-rate", "inf"], "--learning-rate: must be a positive finite number"),
        (["--learning-rate", "nan"], "--learning-rate: must be a positive finite number"),
        (["--adam-eps", "inf"], "--adam-eps: must be a positive finite number"),
        (["--buffer-size", "100"], "--buffer-size: must hold at least one --batch-size"),  # the default batch is 128
        (["--buffer-size", "500"], "--buffer-size: must hold the --learning-starts warm-up"),  # default warm-up 1000
    ],
)
def test_cli_errors(argv: list[str], expected: str, capsys) -> None:
    with pytest.raises(SystemExit) as exit_:
        classic.parse_args(argv)
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and expected in err[0]


@pytest.mark.parametrize("env_id", ["CartPole-v1", "Acrobot-v1", "LunarLander-v3", "MountainCar-v0"])
def test_classic_ids_are_accepted(env_id: str) -> None:
    """Every other flag at its default: the defaults pass every check, the buffer ones included."""
    assert classic.parse_args(["--env-id", env_id]).env_id == env_id


def test_output_dir_that_is_a_file_is_one_error_line_and_no_run_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "taken").write_text("a file")
    for output_dir in ("taken", "taken/runs"):
        with pytest.raises(SystemExit) as exit_:
            classic.main(["--output-dir", output_dir])
        assert exit_.value.code == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith(
            f"error: --output-dir: cannot create a run folder in '{output_dir}' ("
        )
    assert [path.name for path in tmp_path.iterdir()] == ["taken"]


def test_cli_error_as_a_subprocess_has_no_traceback(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--env-id", "Pendulum-v1"], cwd=tmp_path, capture_output=True, text=True
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()] and proc.stderr.startswith("error: --env-id")
    assert not (tmp_path / "runs").exists()


# ---------------------------------------------------------------------------------------------------------------------
# The training loop of main() (Alg. 1 l. 3-11), recorded in-process: 600 steps, a few seconds
# ---------------------------------------------------------------------------------------------------------------------

TIME_LIMIT = 15  # CartPole is truncated after 15 steps here, so that a short run has truncations and terminations
LOOP = [
    "--total-timesteps", "600", "--learning-starts", "200", "--exploration-steps", "400", "--start-e", "1.0",
    "--end-e", "0.0", "--target-network-frequency", "100", "--train-frequency", "4", "--batch-size", "16",
    "--network-size", "small", "--num-networks", "3", "--tournament-size", "2", "--u-max", "30", "--s-max", "0.2",
    "--checkpoint-interval", "0", "--seed", "2",
]  # fmt: skip


@pytest.fixture(scope="module")
def recorded_run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """main() with recorders around the replay buffer, the acting function, the train step and the population step
    (the script's own functions do the work); envs built with a 15-step time limit."""
    record: dict[str, Any] = {"train": [], "act": [], "population": [], "replay": None}
    make_train_step, make_act, population_step = classic.make_train_step, classic.make_act, classic.population_step

    class RecordedReplay(classic.ReplayBuffer):
        def __init__(self, *args: Any) -> None:
            super().__init__(*args)
            record["replay"] = self

    def recorded_make_train_step(*args: Any) -> Any:
        train_step = make_train_step(*args)

        def recorded(learner: dict, batch: dict) -> Any:
            record["train"].append((learner, batch))
            return train_step(learner, batch)

        return recorded

    def recorded_make_act(network: classic.QNetwork) -> Any:
        act = make_act(network)

        def recorded(params: dict, cumulated_losses: jax.Array, observations: np.ndarray, key: jax.Array) -> Any:
            record["act"].append((record["replay"].size, np.asarray(cumulated_losses)))
            return act(params, cumulated_losses, observations, key)

        return recorded

    def recorded_population_step(learner: dict, sparsities: np.ndarray, step: int, *args: Any) -> Any:
        result = population_step(learner, sparsities, step, *args)
        record["population"].append({"step": step, "train_steps": len(record["train"]), "output": result[0]})
        return result

    def short_episodes(env_id: str, num_envs: int, seed: int, render: bool = False) -> Any:
        return envpool.make(env_id, env_type="gymnasium", num_envs=num_envs, seed=seed, max_episode_steps=TIME_LIMIT)

    output_dir = tmp_path_factory.mktemp("recorded")
    handlers = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(classic, "ReplayBuffer", RecordedReplay)
        patch.setattr(classic, "make_train_step", recorded_make_train_step)
        patch.setattr(classic, "make_act", recorded_make_act)
        patch.setattr(classic, "population_step", recorded_population_step)
        patch.setattr(classic, "make_env", short_episodes)
        try:
            classic.main(["--output-dir", str(output_dir), *LOOP])
        finally:  # main() installed its Ctrl-C handler (Run.watch_signals): pytest gets its own back
            for signum, handler in handlers.items():
                signal.signal(signum, handler)
    (record["run_dir"],) = output_dir.iterdir()
    return record


def test_loop_acts_epsilon_greedy_on_top_of_the_behaviour_network(recorded_run: dict) -> None:
    """Alg. 1 l. 3: epsilon is 1 through the 200-step warm-up (no greedy action at all), then decays to 0 over 400
    steps: about 200 of the last 400 steps are greedy. The behaviour draw sees the current cumulated losses."""
    steps = np.array([size for size, _ in recorded_run["act"]])
    assert steps.min() > 200
    assert 150 <= len(steps) <= 290  # 200 expected, plus the autoreset steps of the decay (about 15)
    assert any(losses.sum() > 0 for _, losses in recorded_run["act"])
    assert all(losses.shape == (3,) for _, losses in recorded_run["act"])


def test_loop_takes_one_gradient_step_per_g_env_steps_on_a_minibatch_of_the_replay(recorded_run: dict) -> None:
    """Alg. 1 l. 5-6: (600 - 200) / G = 100 gradient steps, each on one mini-batch of --batch-size stored transitions."""
    replay = recorded_run["replay"]
    assert len(recorded_run["train"]) == 100
    stored = {
        tuple(o) + tuple(n)
        for o, n in zip(replay.observations[: replay.size], replay.next_observations[: replay.size], strict=True)
    }
    for _, batch in recorded_run["train"][::10]:
        assert batch["observations"].shape == (16, 4) and batch["actions"].shape == (16,)
        pairs = {tuple(o) + tuple(n) for o, n in zip(batch["observations"], batch["next_observations"], strict=True)}
        assert pairs <= stored


def test_loop_renews_the_population_every_t_steps_and_trains_the_new_one(recorded_run: dict) -> None:
    """Alg. 1 l. 11: a population step at every multiple of T after learning starts; the gradient step after it
    trains the new population against the new target, with L reset (the learner is handed on whole)."""
    population = recorded_run["population"]
    assert [p["step"] for p in population] == [300, 400, 500, 600]
    for event in population[:-1]:
        learner, _ = recorded_run["train"][event["train_steps"]]
        assert_trees_equal(learner, event["output"])
    events = [json.loads(line) for line in (recorded_run["run_dir"] / "population.jsonl").read_text().splitlines()]
    assert [e["global_step"] for e in events] == [300, 400, 500, 600]


def test_loop_stores_every_real_transition_with_its_true_next_observation(recorded_run: dict) -> None:
    """Alg. 1 l. 4 and the replay rules in the loop: 600 env steps give 600 transitions (autoreset steps are not
    stored), each o' is the true successor of o under gymnasium's dynamics (also at a truncation), and terminated is
    gymnasium's termination (a truncation is not one)."""
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
# Seeds 1-5 of this configuration: docs/classic-control.md (recorded in docs/quoted-runs; seed 1 is the weakest,
# 223.2 over the last 20 episodes at sparsity 0.372).
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


@pytest.mark.parametrize("module", [classic], ids=["eaudedqn_jax"])
def test_keep_largest_is_the_stable_sort_mask(module) -> None:
    """The linear-time selection behind every mask gives the mask of a stable sort, at counts 0, 1, n - 1 and n,
    on magnitudes with many exact ties, on a single repeated value and over the whole float32 range."""
    select = jax.jit(module.keep_largest)
    for magnitudes in selection_cases():
        n = magnitudes.size
        for num_zeros in sorted({0, 1, n // 3, n // 2, n - 1, n}):
            mask = np.asarray(select(jnp.asarray(magnitudes), jnp.asarray(num_zeros)))
            np.testing.assert_array_equal(mask, stable_sort_mask(magnitudes, num_zeros), f"{n} {num_zeros}")
