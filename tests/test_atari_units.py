"""Unit tests of the maths and data structures of the online Atari scripts, against hand-computed values."""

import importlib

import envpool
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

eaude = importlib.import_module("eaudedqn_atari_jax")
poly = importlib.import_module("polyprune_dqn_atari_jax")


# ---------------------------------------------------------------------------------------------------------------------
# Networks (Table 1)
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("size, expected", [("small", 326_022), ("medium", 4_046_502), ("large", 15_952_038)])
def test_parameter_counts_on_space_invaders(size: str, expected: int) -> None:
    num_actions = envpool.make_spec("SpaceInvaders-v5", full_action_space=False).action_space.n
    network = eaude.QNetwork(action_dim=num_actions, head_width=eaude.HEAD_WIDTHS[size])
    shapes = jax.eval_shape(network.init, jax.random.PRNGKey(0), jnp.zeros((1, 4, 84, 84), jnp.uint8))
    assert num_actions == 6
    assert sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(shapes)) == expected


# ---------------------------------------------------------------------------------------------------------------------
# Eq. 2 and Eq. 3
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "step, expected",
    [(0, 0.0), (200, 0.0), (500, 0.95 * (1 - 0.5**3)), (650, 0.95 * (1 - 0.25**3)), (800, 0.95), (1000, 0.95)],
)
def test_polynomial_schedule_eq2(step: int, expected: float) -> None:
    assert poly.polynomial_sparsity(step, 0.95, 200, 800, 3.0) == pytest.approx(expected)


def test_prune_applies_the_new_mask_at_once() -> None:
    params = small_params()
    pruned, masks = poly.prune(params, 0.8, "erk")
    shapes = poly.prunable_shapes(params)
    assert kernel_zero_counts(pruned) == poly.layer_zero_counts(shapes, 0.8, "erk")
    for w, m in zip(jax.tree.leaves(pruned), jax.tree.leaves(masks), strict=True):
        assert not np.asarray(w)[~np.asarray(m)].any()


def test_polynomial_schedule_dense_baseline_stays_dense() -> None:
    assert all(poly.polynomial_sparsity(t, 0.0, 200, 800, 3.0) == 0.0 for t in range(0, 1000, 50))


def test_exploration_eq3_linear_branch() -> None:
    # s = 0.2 at t = 1000 of 11000, T = 1000: the line to (t_final, 1) gives 0.8 * 1000 / 10000 = 0.08, times U = 1.5
    assert eaude.exploration_sparsity(0.2, 1000, 11_000, 1000, 1.5, s_max=0.5) == pytest.approx(0.2 + 0.12)


def test_exploration_eq3_speed_cap() -> None:
    # the same step with S_max = 0.01 is capped at (1 - 0.2) * 0.01 = 0.008
    assert eaude.exploration_sparsity(0.2, 1000, 11_000, 1000, 1.5, s_max=0.01) == pytest.approx(0.208)


def test_exploration_eq3_near_the_end_never_reaches_one() -> None:
    s = 0.0
    for step in range(0, 10_000, 1000):
        s = eaude.exploration_sparsity(s, step, 10_000, 1000, 3.0, s_max=0.5)
    assert 0.99 < s < 1.0


# ---------------------------------------------------------------------------------------------------------------------
# Exploitation: elitist tournaments
# ---------------------------------------------------------------------------------------------------------------------


def test_tournament_slot_zero_is_the_best_network() -> None:
    rng = np.random.default_rng(0)
    for _ in range(50):
        losses = rng.random(5)
        assert eaude.tournament_selection(losses, 3, rng)[0] == np.argmin(losses)


def test_tournament_with_m_equal_k_always_picks_the_best() -> None:
    parents = eaude.tournament_selection(np.array([3.0, 1.0, 2.0, 5.0, 4.0]), 5, np.random.default_rng(1))
    np.testing.assert_array_equal(parents, [1, 1, 1, 1, 1])


def test_tournament_winner_distribution_matches_hand_computation() -> None:
    # K = 5, M = 3, losses ranked 1 < 2 < 0 < 4 < 3: a tournament is won by the best of 3 drawn without replacement.
    # P(1 wins) = P(1 drawn) = 3/5; P(2 wins) = C(3,2)/C(5,3) = 3/10; P(0 wins) = 1/10; 3 and 4 can never win.
    losses = np.array([3.0, 1.0, 2.0, 5.0, 4.0])
    rng = np.random.default_rng(2)
    winners = np.concatenate([eaude.tournament_selection(losses, 3, rng)[1:] for _ in range(5000)])
    frequencies = np.bincount(winners, minlength=5) / len(winners)
    np.testing.assert_allclose(frequencies, [0.1, 0.6, 0.3, 0.0, 0.0], atol=0.01)


def test_tournament_treats_nan_loss_as_worst() -> None:
    parents = eaude.tournament_selection(np.array([np.nan, 2.0, 1.0]), 3, np.random.default_rng(0))
    np.testing.assert_array_equal(parents, [2, 2, 2])


def test_plan_keeps_one_original_per_chosen_network_and_explores_copies() -> None:
    rng = np.random.default_rng(3)
    sparsities = np.array([0.1, 0.3, 0.5, 0.2, 0.0])
    for _ in range(100):
        losses = rng.random(5)
        parents, after, is_copy = eaude.plan_next_population(
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
                assert before <= after[slot] <= before + (1 - before) * 0.01 + 1e-12


def test_exploration_draws_u_uniformly_up_to_u_max() -> None:
    """Eq. 3 with U ~ U(0, U_max): without the S_max cap, a copy's step is U times the line's step, so the steps of
    many copies spread uniformly over [0, U_max x line]."""
    rng = np.random.default_rng(4)
    line = (1 - 0.2) * 1000 / (10_000 - 4000)
    steps = []
    for _ in range(400):
        _, after, is_copy = eaude.plan_next_population(
            np.array([1.0, 2.0, 3.0]), np.full(3, 0.2), 4000, 10_000, 1000, 3, u_max=3.0, s_max=1.0, rng=rng
        )
        steps += list((after[is_copy] - 0.2) / line)
    assert len(steps) == 800  # M = K: every slot is a copy of the best network but slot 0
    assert min(steps) >= 0 and max(steps) <= 3.0
    np.testing.assert_allclose(np.histogram(steps, bins=3, range=(0, 3))[0] / 800, 1 / 3, atol=0.06)


# ---------------------------------------------------------------------------------------------------------------------
# Population step (Alg. 1 l. 1 and l. 12-16)
# ---------------------------------------------------------------------------------------------------------------------


def population_args(**overrides) -> "eaude.Args":
    fields = dict(num_networks=4, tournament_size=3, u_max=3.0, s_max=0.5, target_network_frequency=1000)
    return eaude.Args(**{**fields, "total_timesteps": 10_000, **overrides})


def trained_population(num_networks: int = 4) -> tuple[dict, optax.GradientTransformation]:
    """A learner whose K networks took one Adam step each (step count 1), network k pruned to sparsity 0.1 k."""
    network = eaude.QNetwork(action_dim=6, head_width=32)
    optimizer = optax.adam(1e-3)
    learner = eaude.init_learner(network, optimizer, jax.random.PRNGKey(0), num_networks, np.zeros((1, 4, 84, 84)))
    masks = [eaude.magnitude_masks(eaude.take(learner["params"], k), 0.1 * k, "erk") for k in range(num_networks)]
    learner["masks"] = jax.tree.map(lambda *m: jnp.stack(m), *masks)
    learner["params"] = eaude.apply_masks(learner["params"], learner["masks"])
    learner, _ = eaude.make_train_step(network, optimizer, 0.99, "loop")(
        learner, random_batch(np.random.default_rng(0))
    )
    return learner, optimizer


def adam_counts(opt_states) -> np.ndarray:
    return np.asarray(opt_states[0].count)


def test_init_learner_is_alg1_line_1() -> None:
    network = eaude.QNetwork(action_dim=6, head_width=32)
    learner = eaude.init_learner(network, optax.adam(1e-3), jax.random.PRNGKey(0), 3, np.zeros((1, 4, 84, 84)))
    kernels = [np.asarray(eaude.take(learner["params"], k)["params"]["Dense_0"]["kernel"]) for k in range(3)]
    assert not np.allclose(kernels[0], kernels[1]) and not np.allclose(kernels[1], kernels[2])  # K independent inits
    for a, b in zip(jax.tree.leaves(learner["target_params"]), jax.tree.leaves(learner["params"]), strict=True):
        np.testing.assert_array_equal(a, b[0])  # psi = 0: the target is online network 0
    assert all(np.asarray(m).all() for m in jax.tree.leaves(learner["masks"]))  # dense start
    np.testing.assert_array_equal(learner["cumulated_losses"], np.zeros(3))
    np.testing.assert_array_equal(adam_counts(learner["opt_states"]), np.zeros(3))


def test_population_step_renews_target_slots_and_losses() -> None:
    learner, optimizer = trained_population()
    learner["cumulated_losses"] = jnp.array([3.0, jnp.nan, 1.0, 2.0])  # best: 2; NaN counts as the worst loss
    sparsities = np.array([0.0, 0.1, 0.2, 0.3])
    args = population_args()
    old = learner
    new, new_sparsities, event = eaude.population_step(
        learner, sparsities, 4000, args.total_timesteps, args, optimizer, np.random.default_rng(7)
    )
    assert event["target_index"] == 2 and event["parents"][0] == 2
    assert event["losses"][0] == 3.0 and event["sparsities_before"] == sparsities.tolist()
    assert event["sparsities_after"] == new_sparsities.tolist()
    for a, b in zip(jax.tree.leaves(new["target_params"]), jax.tree.leaves(old["params"]), strict=True):
        np.testing.assert_array_equal(a, b[2])  # Alg. 1 l. 12: target <- theta^psi, psi = argmin L
    np.testing.assert_array_equal(new["cumulated_losses"], np.zeros(4))  # Alg. 1 l. 16
    parents = event["parents"]
    copies = [slot for slot, parent in enumerate(parents) if parent in parents[:slot]]
    assert copies, "the seed must give at least one copy"
    counts = adam_counts(new["opt_states"])
    for slot, parent in enumerate(parents):
        if slot in copies:  # Alg. 1 l. 15: pruned to its Eq. 3 sparsity, fresh Adam state
            assert new_sparsities[slot] > sparsities[parent]
            shapes = eaude.prunable_shapes(eaude.take(new["params"], slot))
            assert kernel_zero_counts(eaude.take(new["params"], slot)) == eaude.layer_zero_counts(
                shapes, new_sparsities[slot], "erk"
            )
            assert counts[slot] == 0
            mu = jax.tree.leaves(eaude.take(new["opt_states"], slot)[0].mu)
            assert all(not np.asarray(x).any() for x in mu)
            copy, original = eaude.take(new["params"], slot), eaude.take(old["params"], parent)
            for w, o in zip(jax.tree.leaves(copy), jax.tree.leaves(original), strict=True):
                w, o = np.asarray(w), np.asarray(o)
                np.testing.assert_array_equal(w[w != 0], o[w != 0])  # kept weights are the parent's
        else:  # Alg. 1 l. 14: the original keeps params, mask, Adam state and sparsity
            assert new_sparsities[slot] == sparsities[parent] and counts[slot] == 1
            for name in ("params", "masks", "opt_states"):
                for a, b in zip(jax.tree.leaves(new[name]), jax.tree.leaves(old[name]), strict=True):
                    np.testing.assert_array_equal(a[slot], b[parent])


# ---------------------------------------------------------------------------------------------------------------------
# Behaviour policy: network drawn with probability proportional to 1 / L
# ---------------------------------------------------------------------------------------------------------------------


def test_behaviour_probabilities_hand_computed() -> None:
    p = np.asarray(eaude.behaviour_probabilities(jnp.array([1.0, 2.0, 4.0])))
    np.testing.assert_allclose(p, np.array([1.0, 0.5, 0.25]) / 1.75, rtol=1e-5)


def test_behaviour_probabilities_uniform_after_reset_and_nan_safe() -> None:
    np.testing.assert_allclose(np.asarray(eaude.behaviour_probabilities(jnp.zeros(4))), 0.25)
    p = np.asarray(eaude.behaviour_probabilities(jnp.array([jnp.nan, 1.0, jnp.inf])))
    np.testing.assert_allclose(p, [0.0, 1.0, 0.0])
    p = np.asarray(eaude.behaviour_probabilities(jnp.array([jnp.nan, jnp.nan])))
    np.testing.assert_allclose(p, [0.5, 0.5])


def test_act_draws_the_behaviour_network_proportionally_to_inverse_loss() -> None:
    """Network k is built to always choose action k; the action frequencies are the behaviour distribution."""
    network = eaude.QNetwork(action_dim=3, head_width=32)
    params = network.init(jax.random.PRNGKey(0), jnp.zeros((1, 4, 84, 84), jnp.uint8))
    population = jax.tree.map(lambda x: jnp.stack([jnp.zeros_like(x)] * 3), params)
    population["params"]["Dense_1"]["bias"] = jnp.eye(3)  # Q_k(s, .) = one-hot(k) for any s
    act = eaude.make_act(network)
    losses = jnp.array([1.0, 2.0, 4.0])
    obs = np.zeros((1, 4, 84, 84), np.uint8)
    keys = jax.random.split(jax.random.PRNGKey(1), 4000)
    actions = np.array([int(act(population, losses, obs, key)[0]) for key in keys])
    frequencies = np.bincount(actions, minlength=3) / len(actions)
    expected = np.array([4.0, 2.0, 1.0]) / 7.0
    # 4000 draws: the standard error is below 0.008 for each frequency
    np.testing.assert_allclose(frequencies, expected, atol=0.03)


@pytest.mark.parametrize("module", [eaude, poly], ids=["eaudedqn", "polyprune_dqn"])
def test_epsilon_holds_during_warm_up_then_decays_linearly(module) -> None:
    """Dopamine's linearly decaying epsilon with warm-up (Table 3: 1 -> 0.01 over 250k steps after 20k)."""
    args = module.Args(start_e=1.0, end_e=0.1, learning_starts=100, exploration_steps=200)
    assert [module.epsilon_schedule(t, args) for t in (0, 99, 100)] == [1.0, 1.0, 1.0]
    assert module.epsilon_schedule(200, args) == pytest.approx(0.55)
    assert module.epsilon_schedule(300, args) == pytest.approx(0.1)
    assert module.epsilon_schedule(10**6, args) == pytest.approx(0.1)
    no_decay = module.Args(start_e=1.0, end_e=0.1, learning_starts=100, exploration_steps=0)
    assert (module.epsilon_schedule(99, no_decay), module.epsilon_schedule(100, no_decay)) == (1.0, 0.1)


@pytest.mark.parametrize("module", [eaude, poly], ids=["eaudedqn", "polyprune_dqn"])
def test_epsilon_greedy_acts_greedily_with_probability_one_minus_epsilon(module) -> None:
    rng = np.random.default_rng(0)
    actions = np.concatenate(
        [module.epsilon_greedy(0.25, 4, 100, lambda: np.full(100, 7), rng) for _ in range(40)]
    )  # action 7 is the network's; random actions are 0..3 (and hit any greedy value with prob. 1/4 otherwise)
    assert set(np.unique(actions)) <= {0, 1, 2, 3, 7}
    assert (actions == 7).mean() == pytest.approx(0.75, abs=0.03)
    assert (module.epsilon_greedy(0.0, 4, 50, lambda: np.full(50, 7), rng) == 7).all()
    assert (module.epsilon_greedy(1.0, 4, 50, lambda: np.full(50, 7), rng) != 7).all()


@pytest.mark.parametrize("module", [eaude, poly], ids=["eaudedqn", "polyprune_dqn"])
def test_one_gradient_step_every_g_env_steps_after_the_warm_up(module) -> None:
    args = module.Args(learning_starts=100, train_frequency=4)
    due = [module.gradient_steps_due(t, args) for t in (0, 99, 100, 103, 104, 107, 108, 500)]
    assert due == [0, 0, 0, 0, 1, 1, 2, 100]


# ---------------------------------------------------------------------------------------------------------------------
# Pruning: distributions, exact counts, masks through optimizer steps
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("module", [eaude, poly], ids=["eaudedqn", "polyprune_dqn"])
def test_erk_densities_hand_computed(module) -> None:
    # raw densities sum/prod: 20/100 = 0.2 and 110/1000 = 0.11; 550 non-zeros to spread: scale 550 / 130
    densities = module.layer_densities([(10, 10), (100, 10)], 0.5, "erk")
    np.testing.assert_allclose(densities, [0.2 * 550 / 130, 0.11 * 550 / 130])
    assert module.layer_zero_counts([(10, 10), (100, 10)], 0.5, "erk") == [15, 535]


def test_erk_makes_overfull_layers_dense_and_respreads() -> None:
    # (2, 2) has raw density 1 and would get 24.5: it becomes dense and (100, 100) takes the whole budget
    densities = eaude.layer_densities([(2, 2), (100, 100)], 0.5, "erk")
    np.testing.assert_allclose(densities, [1.0, (0.5 * 10_004 - 4) / 10_000])
    assert eaude.layer_zero_counts([(2, 2), (100, 100)], 0.5, "erk") == [0, 5002]


def test_uniform_densities_and_zero_sparsity() -> None:
    assert eaude.layer_zero_counts([(10, 10), (100, 10)], 0.3, "uniform") == [30, 300]
    assert eaude.layer_zero_counts([(10, 10), (100, 10)], 0.0, "erk") == [0, 0]


def small_params() -> dict:
    network = eaude.QNetwork(action_dim=6, head_width=32)
    return network.init(jax.random.PRNGKey(0), jnp.zeros((1, 4, 84, 84), jnp.uint8))


def kernel_zero_counts(params: dict) -> list[int]:
    return [int((np.asarray(w) == 0).sum()) for w in jax.tree.leaves(params) if w.ndim > 1]


@pytest.mark.parametrize("distribution", ["erk", "uniform", "global"])
@pytest.mark.parametrize("sparsity", [0.5, 0.9, 0.99])
def test_masks_reach_the_overall_sparsity(distribution: str, sparsity: float) -> None:
    params = small_params()
    pruned = eaude.apply_masks(params, eaude.magnitude_masks(params, sparsity, distribution))
    total = sum(w.size for w in jax.tree.leaves(params) if w.ndim > 1)
    # per-layer rounding moves the overall count by at most half a weight per layer
    assert abs(eaude.measured_sparsity(pruned) - sparsity) <= 5 * 0.5 / total + 1e-12
    biases = [np.asarray(b) for b in jax.tree.leaves(pruned) if b.ndim == 1]
    assert all(
        (b == np.asarray(o)).all()
        for b, o in zip(biases, [x for x in jax.tree.leaves(params) if x.ndim == 1], strict=True)
    )


@pytest.mark.parametrize("distribution", ["erk", "uniform"])
def test_layerwise_masks_have_the_exact_number_of_zeros_even_with_ties(distribution: str) -> None:
    params = jax.tree.map(jnp.ones_like, small_params())  # every magnitude ties
    shapes = eaude.prunable_shapes(params)
    pruned = eaude.apply_masks(params, eaude.magnitude_masks(params, 0.8, distribution))
    assert kernel_zero_counts(pruned) == eaude.layer_zero_counts(shapes, 0.8, distribution)


@pytest.mark.parametrize("module", [eaude, poly], ids=["eaudedqn", "polyprune_dqn"])
def test_global_masks_use_one_threshold(module) -> None:
    params = small_params()
    masks = module.magnitude_masks(params, 0.7, "global")
    kernels = [
        (np.abs(np.asarray(w)), np.asarray(m))
        for w, m in zip(jax.tree.leaves(params), jax.tree.leaves(masks), strict=True)
    ]
    kept = np.concatenate([w[m] for w, m in kernels if w.ndim > 1])
    dropped = np.concatenate([w[~m] for w, m in kernels if w.ndim > 1])
    total = sum(w.size for w, _ in kernels if w.ndim > 1)
    assert len(dropped) == round(0.7 * total)
    assert kept.min() >= dropped.max()


@pytest.mark.parametrize("module", [eaude, poly], ids=["eaudedqn", "polyprune_dqn"])
def test_erk_keeps_the_largest_weights_of_each_layer(module) -> None:
    params = small_params()
    masks = module.magnitude_masks(params, 0.9, "erk")
    for w, m in zip(jax.tree.leaves(params), jax.tree.leaves(masks), strict=True):
        w, m = np.abs(np.asarray(w)), np.asarray(m)
        if w.ndim > 1:
            assert w[m].min() >= w[~m].max()


@pytest.mark.parametrize("module", [eaude, poly], ids=["eaudedqn", "polyprune_dqn"])
def test_pruning_a_pruned_network_further_prunes_its_zeros_first(module) -> None:
    """Weights already at zero have the smallest magnitude: a higher sparsity's mask drops them before any other."""
    params = small_params()
    once = module.apply_masks(params, module.magnitude_masks(params, 0.5, "erk"))
    masks = module.magnitude_masks(once, 0.6, "erk")
    for w, m in zip(jax.tree.leaves(once), jax.tree.leaves(masks), strict=True):
        if w.ndim > 1:
            assert not np.asarray(m)[np.asarray(w) == 0].any()


# per-layer sparsities that JaxPruner's own `sparsity_distributions.erk` assigns to the Nature CNN (SAME padding,
# 6 actions), the library the paper pruned with; kernels (8,8,4,32), (4,4,32,64), (3,3,64,64), (7744,head), (head,6)
JAXPRUNER_ERK = {
    (32, 0.5): [0.871945, 0.935973, 0.926669, 0.366971, 0.0],
    (32, 0.8): [0.948867, 0.974433, 0.970719, 0.747228, 0.0],
    (32, 0.9): [0.974477, 0.987239, 0.985384, 0.873829, 0.204206],
    (32, 0.95): [0.987237, 0.993619, 0.992691, 0.936909, 0.602066],
    (32, 0.99): [0.997447, 0.998723, 0.998538, 0.987377, 0.920384],
    (512, 0.5): [0.0, 0.248337, 0.139121, 0.506856, 0.0],
    (512, 0.8): [0.401262, 0.700631, 0.657133, 0.803593, 0.0],
    (512, 0.9): [0.701771, 0.850885, 0.829219, 0.90217, 0.0],
    (512, 0.95): [0.852025, 0.926013, 0.915262, 0.951459, 0.0],
    (512, 0.99): [0.971665, 0.985833, 0.983774, 0.990705, 0.247313],
    (2048, 0.5): [0.0, 0.0, 0.0, 0.502841, 0.0],
    (2048, 0.8): [0.0, 0.0, 0.0, 0.804545, 0.0],
    (2048, 0.9): [0.003529, 0.501765, 0.429372, 0.903077, 0.0],
    (2048, 0.95): [0.505632, 0.752816, 0.7169, 0.951915, 0.0],
    (2048, 0.99): [0.907315, 0.953657, 0.946924, 0.990985, 0.0],
}


@pytest.mark.parametrize("module", [eaude, poly], ids=["eaudedqn", "polyprune_dqn"])
@pytest.mark.parametrize("head, sparsity", list(JAXPRUNER_ERK))
def test_erk_matches_jaxpruner(module, head: int, sparsity: float) -> None:
    network = module.QNetwork(action_dim=6, head_width=head)
    params = jax.eval_shape(network.init, jax.random.PRNGKey(0), jnp.zeros((1, 4, 84, 84), jnp.uint8))
    shapes = module.prunable_shapes(params)
    assert shapes == [(8, 8, 4, 32), (4, 4, 32, 64), (3, 3, 64, 64), (7744, head), (head, 6)]
    sparsities = [1.0 - d for d in module.layer_densities(shapes, sparsity, "erk")]
    np.testing.assert_allclose(sparsities, JAXPRUNER_ERK[head, sparsity], atol=1e-4)


def learner_state(params: dict, masks: dict, opt_states: dict, target: dict) -> dict:
    num_networks = jax.tree.leaves(params)[0].shape[0]
    return {
        "params": params,
        "masks": masks,
        "opt_states": opt_states,
        "target_params": target,
        "cumulated_losses": jnp.zeros(num_networks),
        "key": jax.random.PRNGKey(0),
    }


def random_batch(rng: np.random.Generator, batch_size: int = 8, num_actions: int = 6) -> dict:
    return {
        "observations": rng.integers(0, 255, (batch_size, 4, 84, 84), dtype=np.uint8),
        "actions": rng.integers(num_actions, size=batch_size).astype(np.int32),
        "rewards": rng.standard_normal(batch_size).astype(np.float32),
        "terminations": (rng.random(batch_size) < 0.2).astype(np.float32),
        "next_observations": rng.integers(0, 255, (batch_size, 4, 84, 84), dtype=np.uint8),
    }


@pytest.mark.parametrize("layout", ["loop", "vmap"])
def test_population_step_keeps_pruned_weights_zero_and_matches_single_network_steps(layout: str) -> None:
    network = eaude.QNetwork(action_dim=6, head_width=32)
    keys = jax.random.split(jax.random.PRNGKey(0), 2)
    params = jax.vmap(network.init, in_axes=(0, None))(keys, jnp.zeros((1, 4, 84, 84), jnp.uint8))
    per_network = [eaude.magnitude_masks(eaude.take(params, k), 0.5 * k, "erk") for k in range(2)]
    masks = jax.tree.map(lambda *m: jnp.stack(m), *per_network)
    params = eaude.apply_masks(params, masks)
    network_1 = eaude.take(params, 1)
    optimizer = optax.adam(1e-3)
    opt_states = jax.vmap(optimizer.init)(params)
    target = eaude.take(params, 0)
    step = eaude.make_train_step(network, optimizer, 0.99, layout)
    rng = np.random.default_rng(0)
    learner = learner_state(params, masks, opt_states, target)
    batches = [random_batch(rng) for _ in range(3)]
    for batch in batches:
        learner, _ = step(learner, batch)
    params, cumulated = learner["params"], learner["cumulated_losses"]
    for w, m in zip(jax.tree.leaves(params), jax.tree.leaves(masks), strict=True):
        assert np.all(np.asarray(w)[~np.asarray(m)] == 0)
    assert eaude.measured_sparsity(eaude.take(params, 1)) == pytest.approx(0.5, abs=1e-5)
    # network 1 trained alone by PolyPrune's single-network step on the same batches: same params, same L_1
    single = poly.make_train_step(network, optimizer, 0.99)
    state, total = optimizer.init(network_1), 0.0
    for batch in batches:
        network_1, state, loss = single(network_1, state, per_network[1], target, batch)
        total += float(loss)
    assert float(cumulated[1]) == pytest.approx(total, rel=1e-4)
    for a, b in zip(jax.tree.leaves(network_1), jax.tree.leaves(eaude.take(params, 1)), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-3, atol=1e-5)


def test_shared_target_uses_terminated_flag() -> None:
    """y = r + gamma (1 - terminated) max Qbar(s'): a batch with a zero network gives y = r, loss = mean(r^2)."""
    network = eaude.QNetwork(action_dim=2, head_width=32)
    params = network.init(jax.random.PRNGKey(0), jnp.zeros((1, 4, 84, 84), jnp.uint8))
    zero = jax.tree.map(jnp.zeros_like, params)
    target = jax.tree.map(jnp.zeros_like, params)
    target["params"]["Dense_1"]["bias"] = jnp.array([5.0, 7.0])  # max_a' Qbar(s', a') = 7 everywhere
    batch = random_batch(np.random.default_rng(0), batch_size=4, num_actions=2)
    batch["rewards"] = np.array([1.0, -1.0, 0.0, 1.0], np.float32)
    batch["terminations"] = np.array([0.0, 1.0, 0.0, 1.0], np.float32)
    population = jax.tree.map(lambda x: x[None], zero)
    optimizer = optax.sgd(0.0)
    step = eaude.make_train_step(network, optimizer, 0.5, "loop")
    masks = jax.tree.map(lambda x: jnp.ones_like(x, bool), population)
    _, losses = step(learner_state(population, masks, jax.vmap(optimizer.init)(population), target), batch)
    targets = np.array([1 + 0.5 * 7, -1.0, 0.5 * 7, 1.0])
    assert float(losses[0]) == pytest.approx(np.mean(targets**2))


# ---------------------------------------------------------------------------------------------------------------------
# Replay buffer: terminal and truncation handling, episode starts, ring wrap-around
# ---------------------------------------------------------------------------------------------------------------------


def frame(value: int) -> np.ndarray:
    return np.full((1, 84, 84), value, np.uint8)


def play(buffer, episodes: list[tuple[int, str]], start: int = 1) -> int:
    """Feed episodes of (length, 'terminated'|'truncated') whose frames are numbered from `start`."""
    value = start
    buffer.add_first(frame(value))
    resetting = False
    for i, (length, end) in enumerate(episodes):
        for t in range(length):
            value += 1
            done = t == length - 1
            buffer.add(
                np.array([t % 3]),
                np.array([0.5]),
                np.array([done and end == "terminated"]),
                np.array([done and end == "truncated"]),
                frame(value),
                reset=np.array([resetting]),
            )
            resetting = False
        if i < len(episodes) - 1:  # envpool's autoreset step: action ignored, reset frame returned
            value += 1
            buffer.add(
                np.array([0]),
                np.array([0.0]),
                np.array([False]),
                np.array([False]),
                frame(value),
                reset=np.array([True]),
            )
    return value


def all_transitions(buffer) -> list[tuple]:
    env = np.zeros(buffer.size, np.int64)
    age = np.arange(buffer.size)
    valid = buffer.valid(env, age)
    oldest = buffer.cursor if buffer.size == buffer.capacity else 0
    index = (oldest + age[valid]) % buffer.capacity
    obs = buffer.stacks(env[valid], index)[:, :, 0, 0]
    nxt = buffer.stacks(env[valid], (index + 1) % buffer.capacity)[:, :, 0, 0]
    return [
        (tuple(o), int(buffer.actions[0, i]), bool(buffer.terminated[0, i]), tuple(n))
        for o, i, n in zip(obs, index, nxt, strict=True)
    ]


@pytest.mark.parametrize("module", [eaude, poly], ids=["eaudedqn", "polyprune_dqn"])
def test_replay_first_steps_last_transition_and_autoreset(module) -> None:
    buffer = module.ReplayBuffer(100, 1)
    play(buffer, [(5, "terminated"), (3, "truncated")])
    transitions = all_transitions(buffer)
    # episode 1: frames 1..6 (1 = reset frame); episode 2: frame 7 is envpool's reset frame, then 8..10
    assert transitions[0] == ((0, 0, 0, 1), 0, False, (0, 0, 1, 2))  # first step: zero-filled stack
    assert transitions[1] == ((0, 0, 1, 2), 1, False, (0, 1, 2, 3))
    assert transitions[4] == ((2, 3, 4, 5), 1, True, (3, 4, 5, 6))  # last transition: terminated, true last frame
    assert transitions[5] == ((0, 0, 0, 7), 0, False, (0, 0, 7, 8))  # no transition from 6 (final) to 7 (reset)
    assert transitions[-1] == ((0, 7, 8, 9), 2, False, (7, 8, 9, 10))  # truncated: bootstraps from true last frame
    assert len(transitions) == 5 + 3


@pytest.mark.parametrize("module", [eaude, poly], ids=["eaudedqn", "polyprune_dqn"])
def test_replay_ring_wraparound_never_mixes_overwritten_frames(module) -> None:
    buffer = module.ReplayBuffer(10, 1)
    play(buffer, [(30, "terminated")])  # frames 1..31 through a ring of 10
    transitions = all_transitions(buffer)
    # stored frames 22..31; the 3 oldest entries (22, 23, 24) miss earlier frames and the newest has no successor
    assert [t[0] for t in transitions] == [tuple(range(v - 3, v + 1)) for v in range(25, 31)]
    assert all(t[3] == tuple(range(t[0][0] + 1, t[0][0] + 5)) for t in transitions)
    assert transitions[-1][2] is True


@pytest.mark.parametrize("module", [eaude, poly], ids=["eaudedqn", "polyprune_dqn"])
def test_replay_sampling_is_seeded_and_uniform_over_valid_transitions(module) -> None:
    buffer = module.ReplayBuffer(1000, 1)
    play(buffer, [(50, "terminated"), (50, "truncated")])
    a = buffer.sample(64, np.random.default_rng(5))
    b = buffer.sample(64, np.random.default_rng(5))
    assert all(np.array_equal(a[k], b[k]) for k in a)
    counts = np.zeros(256)
    rng = np.random.default_rng(6)
    for _ in range(200):
        batch = buffer.sample(50, rng)
        np.add.at(counts, batch["observations"][:, -1, 0, 0], 1)
    seen = counts[counts > 0]
    assert len(seen) == 100  # every transition start is reachable; no final or reset-step entry is
    assert seen.min() > 50 and seen.max() < 170  # 100 per transition expected


@pytest.mark.parametrize("module", [eaude, poly], ids=["eaudedqn", "polyprune_dqn"])
def test_replay_end_partial_episodes_marks_the_newest_entry(module) -> None:
    buffer = module.ReplayBuffer(100, 1)
    play(buffer, [(10, "terminated"), (4, "terminated")])
    before = len(all_transitions(buffer))
    buffer.end_partial_episodes()
    assert buffer.last[0, buffer.cursor - 1]
    assert len(all_transitions(buffer)) == before


@pytest.mark.parametrize("module", [eaude, poly], ids=["eaudedqn", "polyprune_dqn"])
def test_replay_bytes_per_transition(module) -> None:
    buffer = module.ReplayBuffer(10_000, 1)
    size = sum(np.asarray(v).nbytes for v in buffer.state_dict().values())
    assert size / 10_000 <= 7_500


@pytest.mark.parametrize("module", [eaude, poly], ids=["eaudedqn", "polyprune_dqn"])
def test_replay_stacks_equal_envpool_observations(module) -> None:
    """The stacks rebuilt from single frames equal what the agent saw (after zero-filling the reset stack), across
    terminations, truncations and envpool's autoreset steps, with 2 envs."""
    kwargs = {**module.MACHADO_PROTOCOL, "max_episode_steps": 40}
    envs = envpool.make("Breakout-v5", env_type="gymnasium", num_envs=2, seed=3, **kwargs)
    buffer = module.ReplayBuffer(2 * 500, 2)
    rng = np.random.default_rng(0)
    obs, info = envs.reset()
    obs = module.zero_fill_reset_frames(obs, info["elapsed_step"])
    buffer.add_first(obs[:, -1])
    seen = [obs]
    resetting = np.zeros(2, bool)
    for _ in range(150):
        actions = rng.integers(envs.action_space.n, size=2)
        obs, reward, terminated, truncated, info = envs.step(actions)
        obs = module.zero_fill_reset_frames(obs, info["elapsed_step"])
        buffer.add(actions, reward, terminated, truncated, obs[:, -1], reset=resetting)
        resetting = (terminated | truncated) & ~resetting
        seen.append(obs)
    assert buffer.last.sum() >= 4  # several episodes ended
    for env in range(2):
        rebuilt = buffer.stacks(np.full(151, env), np.arange(151))
        np.testing.assert_array_equal(rebuilt, np.stack([o[env] for o in seen]))


@pytest.mark.parametrize("module", [eaude, poly], ids=["eaudedqn", "polyprune_dqn"])
def test_zero_fill_reset_frames(module) -> None:
    obs = np.ones((3, 4, 2, 2), np.uint8)
    out = module.zero_fill_reset_frames(obs, np.array([0, 2, 7]))
    np.testing.assert_array_equal(out[:, :, 0, 0], [[0, 0, 0, 1], [0, 1, 1, 1], [1, 1, 1, 1]])


# ---------------------------------------------------------------------------------------------------------------------
# Command line errors: one `error:` line naming the flag, exit code 2
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "module, argv, flag",
    [
        (eaude, ["--env-id", "NotAGame-v5"], "--env-id"),
        (eaude, ["--env-id", "CartPole-v1"], "--env-id"),
        (eaude, ["--num-networks", "0"], "--num-networks"),
        (eaude, ["--num-networks", "2", "--tournament-size", "3"], "--tournament-size"),
        (eaude, ["--u-max", "0"], "--u-max"),
        (eaude, ["--total-timesteps", "-5"], "--total-timesteps"),
        (eaude, ["--learning-starts", "-1"], "--learning-starts"),
        (eaude, ["--num-networks", "abc"], "--num-networks"),
        (eaude, ["--network-size", "huge"], "--network-size"),
        (eaude, ["--resume", "/nonexistent/run"], "--resume"),
        (poly, ["--final-sparsity", "1"], "--final-sparsity"),
        (poly, ["--final-sparsity", "-0.1"], "--final-sparsity"),
        (poly, ["--pruning-start", "0.9", "--pruning-end", "0.5"], "--pruning-start"),
        (poly, ["--total-timesteps", "-1"], "--total-timesteps"),
        *[(m, ["--seed", "-1"], "--seed") for m in (eaude, poly)],
        *[(m, ["--learning-rate", "inf"], "--learning-rate") for m in (eaude, poly)],
        *[(m, ["--buffer-size", "16", "--batch-size", "128"], "--buffer-size") for m in (eaude, poly)],
        *[(m, ["--buffer-size", "1000", "--learning-starts", "2000"], "--buffer-size") for m in (eaude, poly)],
    ],
)
def test_cli_errors(module, argv: list[str], flag: str, capsys) -> None:
    with pytest.raises(SystemExit) as exit_:
        module.parse_args(argv)
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and flag in err[0]


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


@pytest.mark.parametrize("module", [eaude, poly], ids=["eaudedqn_atari", "polyprune_dqn_atari"])
def test_keep_largest_is_the_stable_sort_mask(module) -> None:
    """The linear-time selection behind every mask gives the mask of a stable sort, at counts 0, 1, n - 1 and n,
    on magnitudes with many exact ties, on a single repeated value and over the whole float32 range."""
    select = jax.jit(module.keep_largest)
    for magnitudes in selection_cases():
        n = magnitudes.size
        for num_zeros in sorted({0, 1, n // 3, n // 2, n - 1, n}):
            mask = np.asarray(select(jnp.asarray(magnitudes), jnp.asarray(num_zeros)))
            np.testing.assert_array_equal(mask, stable_sort_mask(magnitudes, num_zeros), f"{n} {num_zeros}")
