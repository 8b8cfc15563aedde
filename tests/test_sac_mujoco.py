"""EauDeSAC (Algorithm 2) and PolyPruneSAC on envpool MuJoCo: maths, CLI errors, smoke runs, resume, learning."""

import importlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import envpool
import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
eaude = importlib.import_module("eaudesac_mujoco_jax")
poly = importlib.import_module("polyprune_sac_mujoco_jax")
EAUDE, POLY = ROOT / "eaudesac_mujoco_jax.py", ROOT / "polyprune_sac_mujoco_jax.py"


@pytest.fixture(autouse=True)
def pytest_signal_handlers():
    """main installs its own SIGINT/SIGTERM handlers (Ctrl-C saves a checkpoint): give pytest's back after each test."""
    saved = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    yield
    for signum, handler in saved.items():
        signal.signal(signum, handler)


def small_state(module, num_networks: int | None = 3, width: int = 16, obs_dim: int = 4, action_dim: int = 2):
    """Tiny networks (one shared shape: the jitted train step compiles once per test session)."""
    actor, critic = module.Actor(action_dim=action_dim), module.Critic(width=width)
    optimizer = optax.adam(1e-3)
    extra = () if num_networks is None else (num_networks,)
    state = module.init_state(actor, critic, optimizer, obs_dim, action_dim, *extra, jax.random.PRNGKey(0))
    return actor, critic, optimizer, state


def random_batch(rng: np.random.Generator, n: int = 32, obs_dim: int = 4, action_dim: int = 2) -> dict:
    return {
        "observations": rng.normal(size=(n, obs_dim)).astype(np.float32),
        "actions": rng.uniform(-1, 1, (n, action_dim)).astype(np.float32),
        "rewards": rng.normal(size=n).astype(np.float32),
        "terminations": (rng.random(n) < 0.2).astype(np.float32),
        "next_observations": rng.normal(size=(n, obs_dim)).astype(np.float32),
    }


_TRAIN_STEPS: dict = {}


def eaude_train_step(actor, critic, optimizer, layout: str = "vmap"):
    """One jitted EauDeSAC step per layout for the whole module (compiling is the slow part on 2 shared cores)."""
    if layout not in _TRAIN_STEPS:
        _TRAIN_STEPS[layout] = eaude.make_train_step(actor, critic, optimizer, 0.99, 0.005, -2.0, layout)
    return _TRAIN_STEPS[layout]


def poly_train_step(actor, critic, optimizer):
    """The jitted PolyPruneSAC step, compiled once for the module (gamma 0.99, tau 0.005, target entropy -2)."""
    if "poly" not in _TRAIN_STEPS:
        _TRAIN_STEPS["poly"] = poly.make_train_step(actor, critic, optimizer, 0.99, 0.005, -2.0)
    return _TRAIN_STEPS["poly"]


def assert_trees_equal(a, b) -> None:
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(x, y)


def assert_trees_close(a, b, rtol: float = 1e-4, atol: float = 1e-6) -> None:
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(x, y, rtol=rtol, atol=atol)


def adam_step(optimizer, loss_fn, params, opt_state, masks=None):
    """Reference update: one optimizer step on `loss_fn`, then the masks (pruned weights stay exactly zero)."""
    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, _ = optimizer.update(grads, opt_state, params)
    new_params = optax.apply_updates(params, updates)
    return loss, new_params if masks is None else eaude.apply_masks(new_params, masks)


def random_masks(masks, rng: np.random.Generator, kernel_ndim: int):
    """About half of every kernel pruned (a different pattern per critic), biases kept."""
    return jax.tree.map(lambda m: jnp.asarray(rng.random(m.shape) < 0.5) if m.ndim == kernel_ndim else m, masks)


# ---------------------------------------------------------------------------------------------------------------------
# Algorithm 2, l. 1: initialisation
# ---------------------------------------------------------------------------------------------------------------------


def test_init_state_alg2_line_1():
    """2 x K independent critics, targets equal to them, L = 0 (so psi = (0, 0)), dense masks, fresh Adam states and
    alpha = 1 (SBX's initial temperature)."""
    _, _, _, state = small_state(eaude)
    first_kernels = np.asarray(state["critics"]["params"]["Dense_0"]["kernel"]).reshape(6, -1)
    assert len({row.tobytes() for row in first_kernels}) == 6  # six independent critics
    assert_trees_equal(state["critic_targets"], state["critics"])
    np.testing.assert_array_equal(state["cumulated_losses"], np.zeros((2, 3)))
    np.testing.assert_array_equal(eaude.selected_indices(state["cumulated_losses"]), [0, 0])
    assert all(np.all(m) for m in jax.tree.leaves(state["critic_masks"]))
    assert float(jnp.exp(state["log_alpha"])) == 1.0
    assert np.all(np.asarray(state["critic_opt_states"][0].count) == 0)

    _, _, _, pair = small_state(poly, num_networks=None)
    first_kernels = np.asarray(pair["critics"]["params"]["Dense_0"]["kernel"])
    assert not np.array_equal(first_kernels[0], first_kernels[1])
    assert_trees_equal(pair["critic_targets"], pair["critics"])
    assert float(jnp.exp(pair["log_alpha"])) == 1.0


# ---------------------------------------------------------------------------------------------------------------------
# Algorithm 2, l. 5-12: shared target, critic updates, Polyak, EMA losses, psi, behaviour draw, actor, temperature
# ---------------------------------------------------------------------------------------------------------------------


def test_ema_losses_and_psi_selection():
    L = jnp.array([[0.0, 1.0, 2.0], [4.0, 0.5, 3.0]])
    loss = jnp.array([[10.0, 1.0, 0.0], [0.0, 0.5, 3.0]])
    np.testing.assert_allclose(eaude.ema_losses(L, loss, 0.1), 0.9 * np.asarray(L) + 0.1 * np.asarray(loss), rtol=1e-6)
    np.testing.assert_array_equal(eaude.selected_indices(jnp.array([[3.0, 1.0, 2.0], [0.2, 0.5, 0.1]])), [1, 2])
    np.testing.assert_array_equal(eaude.selected_indices(jnp.zeros((2, 5))), [0, 0])  # after a reset: slot 0


def test_psi_treats_a_nan_loss_as_the_worst():
    L = jnp.array([[jnp.nan, 2.0, 1.0], [0.5, jnp.nan, 3.0]])
    np.testing.assert_array_equal(eaude.selected_indices(L), [2, 0])  # jnp.argmin alone would pick the NaN entries


def test_a_diverged_critic_never_becomes_the_shared_target():
    """Critic (1, 1) diverged (NaN weights, NaN cumulated loss): the other 2 x K - 1 critics, the actor and the
    temperature must keep finite numbers, i.e. neither psi_1 nor the actor's draw picks it."""
    actor, critic, optimizer, state = small_state(eaude)
    diverge = lambda tree: jax.tree.map(lambda x: x.at[0, 0].set(jnp.nan), tree)  # noqa: E731
    state = {**state, "critics": diverge(state["critics"]), "critic_targets": diverge(state["critic_targets"])}
    state["cumulated_losses"] = jnp.array([[jnp.nan, 2.0, 1.0], [1.0, 1.0, 1.0]])
    new_state, metrics = eaude_train_step(actor, critic, optimizer)(state, random_batch(np.random.default_rng(9)),
                                                                    jax.random.PRNGKey(2))  # fmt: skip
    losses = np.asarray(metrics["qf_loss"])
    assert np.isnan(losses[0, 0]) and np.isfinite(losses.ravel()[1:]).all()
    assert np.isfinite(metrics["actor_loss"]) and np.isfinite(metrics["alpha_loss"])
    assert all(np.isfinite(leaf).all() for leaf in jax.tree.leaves(new_state["actor"]))
    assert int(eaude.selected_indices(new_state["cumulated_losses"])[0]) == 2


def test_shared_target_by_hand():
    """Alg. 2 l. 6: y = r + gamma (1 - terminated) (min(Qbar_1^psi1, Qbar_2^psi2)(s', a') - alpha log pi(a'|s'))."""
    _, critic, _, state = small_state(eaude)
    rng = np.random.default_rng(3)
    batch = random_batch(rng)
    next_actions = rng.uniform(-1, 1, (32, 2)).astype(np.float32)
    next_log_probs = rng.normal(size=32).astype(np.float32)
    y = eaude.shared_target(critic, state["critic_targets"], jnp.array([1, 2]), batch["rewards"], batch["terminations"],
                            batch["next_observations"], next_actions, next_log_probs, 0.5, 0.9)  # fmt: skip
    q1, q2 = (
        np.asarray(critic.apply(eaude.take(state["critic_targets"], index), batch["next_observations"], next_actions))
        for index in ((0, 1), (1, 2))
    )
    assert (q1 < q2).any() and (q2 < q1).any() and 0 < batch["terminations"].sum() < 32  # every term matters
    expected = batch["rewards"] + 0.9 * (1 - batch["terminations"]) * (np.minimum(q1, q2) - 0.5 * next_log_probs)
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-6)


def test_train_step_uses_one_shared_target_from_the_psi_critics():
    actor, critic, optimizer, state = small_state(eaude)
    # distinct targets so that the psi choice matters
    state["critic_targets"] = jax.tree.map(lambda x: x * 1.5 + 0.01, state["critic_targets"])
    state["cumulated_losses"] = jnp.array([[3.0, 1.0, 2.0], [0.5, 0.7, 0.1]])  # psi = (1, 2)
    batch = random_batch(np.random.default_rng(0))
    key = jax.random.PRNGKey(7)
    train_step = eaude_train_step(actor, critic, optimizer)
    new_state, metrics = train_step(state, batch, key)

    target_key = jax.random.split(key, 3)[0]
    next_a, next_logp = eaude.sample_action(actor, state["actor"], batch["next_observations"], target_key)
    for psi in ((1, 2), (0, 0)):
        y = eaude.shared_target(
            critic, state["critic_targets"], jnp.array(psi), batch["rewards"], batch["terminations"],
            batch["next_observations"], next_a, next_logp, 1.0, 0.99,
        )  # fmt: skip
        expected = np.array(
            [
                [
                    float(jnp.mean((y - critic.apply(eaude.take(state["critics"], (i, k)), batch["observations"], batch["actions"])) ** 2))
                    for k in range(3)
                ]
                for i in range(2)
            ]
        )  # fmt: skip
        if psi == (1, 2):  # every one of the 2 x K critics regressed on the same y, built with (psi_1, psi_2)
            np.testing.assert_allclose(metrics["qf_loss"], expected, rtol=1e-4)
        else:
            assert not np.allclose(metrics["qf_loss"], expected, rtol=1e-4)
    # EMA of the losses (Alg. 2 l. 8) and Polyak targets for all 2 x K critics
    np.testing.assert_allclose(
        new_state["cumulated_losses"],
        0.995 * np.asarray(state["cumulated_losses"]) + 0.005 * metrics["qf_loss"],
        rtol=1e-5,
    )
    expected_target = jax.tree.map(lambda t, o: 0.995 * t + 0.005 * o, state["critic_targets"], new_state["critics"])
    for a, b in zip(jax.tree.leaves(new_state["critic_targets"]), jax.tree.leaves(expected_target), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


def test_each_critic_takes_one_adam_step_on_its_own_loss_and_keeps_its_mask():
    """Alg. 2 l. 8: every one of the 2 x K critics descends its own (y - Q)^2 on the shared y; the masks are applied
    again after the optimizer step, so pruned weights stay exactly zero (Adam would regrow them)."""
    actor, critic, optimizer, state = small_state(eaude)
    train_step = eaude_train_step(actor, critic, optimizer)
    rng = np.random.default_rng(4)
    masks = random_masks(state["critic_masks"], rng, kernel_ndim=4)
    pruned = eaude.apply_masks(state["critics"], masks)
    state = {**state, "critic_masks": masks, "critics": pruned, "critic_targets": pruned}
    state, _ = train_step(state, random_batch(rng), jax.random.PRNGKey(0))  # non-trivial Adam moments
    state = {**state, "cumulated_losses": jnp.zeros((2, 3))}  # psi = (0, 0)
    batch, key = random_batch(rng), jax.random.PRNGKey(1)
    new_state, metrics = train_step(state, batch, key)

    target_key = jax.random.split(key, 3)[0]
    next_actions, next_log_probs = eaude.sample_action(actor, state["actor"], batch["next_observations"], target_key)
    y = eaude.shared_target(critic, state["critic_targets"], jnp.array([0, 0]), batch["rewards"],
                            batch["terminations"], batch["next_observations"], next_actions, next_log_probs,
                            jnp.exp(state["log_alpha"]), 0.99)  # fmt: skip
    for i in range(2):
        for k in range(3):
            index = (i, k)
            loss, expected = adam_step(
                optimizer,
                lambda p: jnp.mean((y - critic.apply(p, batch["observations"], batch["actions"])) ** 2),
                eaude.take(state["critics"], index),
                eaude.take(state["critic_opt_states"], index),
                eaude.take(masks, index),
            )
            np.testing.assert_allclose(metrics["qf_loss"][index], loss, rtol=1e-5)
            assert_trees_close(eaude.take(new_state["critics"], index), expected)
    for w, m in zip(jax.tree.leaves(new_state["critics"]), jax.tree.leaves(masks), strict=True):
        assert np.all(np.asarray(w)[~np.asarray(m)] == 0)


def test_behaviour_critics_are_drawn_with_probability_proportional_to_inverse_loss():
    """Alg. 2 l. 11: psi_i^b ~ p proportional to 1 / L_i^k, independently for the two populations (NaN: never)."""
    L = jnp.array([[1.0, 2.0, 4.0], [4.0, jnp.nan, 1.0]])
    keys = jax.random.split(jax.random.PRNGKey(0), 4000)
    draws = np.asarray(jax.vmap(eaude.behaviour_indices, in_axes=(None, 0))(L, keys))
    np.testing.assert_allclose(np.bincount(draws[:, 0], minlength=3) / 4000, [4 / 7, 2 / 7, 1 / 7], atol=0.03)
    np.testing.assert_allclose(np.bincount(draws[:, 1], minlength=3) / 4000, [0.2, 0.0, 0.8], atol=0.03)
    joint = np.mean((draws[:, 0] == 0) & (draws[:, 1] == 2))
    assert joint == pytest.approx(4 / 7 * 0.8, abs=0.03)  # independent draws, one key each


def test_actor_loss_by_hand():
    """Alg. 2 l. 12: mean(alpha log pi(a|s) - min(Q_1^psi1b, Q_2^psi2b)(s, a)), a ~ pi(.|s)."""
    actor, critic, _, state = small_state(eaude)
    observations = np.random.default_rng(5).normal(size=(32, 4)).astype(np.float32)
    key = jax.random.PRNGKey(5)
    loss, log_probs = eaude.actor_loss(actor, critic, state["actor"], state["critics"], jnp.array([2, 0]),
                                       observations, 0.3, key)  # fmt: skip
    actions, expected_log_probs = eaude.sample_action(actor, state["actor"], observations, key)
    q1, q2 = (
        np.asarray(critic.apply(eaude.take(state["critics"], index), observations, actions))
        for index in ((0, 2), (1, 0))
    )
    assert (q1 < q2).any() and (q2 < q1).any()
    np.testing.assert_allclose(log_probs, expected_log_probs, rtol=1e-6)
    np.testing.assert_allclose(loss, np.mean(0.3 * np.asarray(expected_log_probs) - np.minimum(q1, q2)), rtol=1e-5)


@pytest.mark.parametrize("module", [eaude, poly], ids=["eaudesac", "polyprune_sac"])
def test_temperature_loss_by_hand(module):
    """SBX's temperature loss -log(alpha) mean(log pi + target entropy): alpha falls while the policy's entropy
    -log pi is above the target and rises while it is below."""
    log_probs, target_entropy = jnp.array([-1.0, -3.0, 0.5]), -2.0  # mean(log pi + target) = -9.5 / 3
    value, grad = jax.value_and_grad(module.temperature_loss)(jnp.log(2.0), log_probs, target_entropy)
    assert float(value) == pytest.approx(np.log(2.0) * 9.5 / 3, rel=1e-6)
    assert float(grad) == pytest.approx(9.5 / 3, rel=1e-6)  # > 0: gradient descent lowers alpha
    assert float(jax.grad(module.temperature_loss)(0.0, jnp.array([5.0]), target_entropy)) == pytest.approx(-3.0)


def test_actor_and_temperature_steps_use_the_drawn_online_critics():
    """In the train step the actor descends the loss of the two *online* critics drawn at l. 11 from the updated L
    (not the targets, not the psi critics, not the critics before their update); the temperature takes one step on
    its loss with the same log-probs."""
    actor, critic, optimizer, state = small_state(eaude)
    train_step = eaude_train_step(actor, critic, optimizer)
    rng = np.random.default_rng(6)
    state, _ = train_step(state, random_batch(rng), jax.random.PRNGKey(0))  # non-trivial Adam moments and alpha
    state["critic_targets"] = jax.tree.map(lambda x: x * 1.5 + 0.01, state["critic_targets"])
    state["cumulated_losses"] = jnp.array([[1.0, 1.2, 1.1], [1.1, 1.0, 1.2]])  # psi = (0, 1), draws near uniform
    state["actor_masks"] = random_masks(state["actor_masks"], rng, kernel_ndim=2)  # as with --prune-actor
    state["actor"] = eaude.apply_masks(state["actor"], state["actor_masks"])
    batch, key = random_batch(rng), jax.random.PRNGKey(14)
    new_state, metrics = train_step(state, batch, key)

    _, actor_key, behaviour_key = jax.random.split(key, 3)
    psi = np.asarray(eaude.selected_indices(new_state["cumulated_losses"]))
    psi_b = eaude.behaviour_indices(new_state["cumulated_losses"], behaviour_key)
    assert np.all(np.asarray(psi_b) != psi)  # this key draws other critics than psi in both populations
    alpha = jnp.exp(state["log_alpha"])

    def loss_with(critics, indices, actor_params=state["actor"]):
        return eaude.actor_loss(actor, critic, actor_params, critics, jnp.asarray(indices), batch["observations"],
                                alpha, actor_key)  # fmt: skip

    np.testing.assert_allclose(metrics["actor_loss"], loss_with(new_state["critics"], psi_b)[0], rtol=1e-5)
    for wrong in (
        loss_with(new_state["critic_targets"], psi_b),
        loss_with(new_state["critics"], psi),
        loss_with(state["critics"], psi_b),
    ):
        assert not np.isclose(metrics["actor_loss"], wrong[0], rtol=1e-5, atol=0)
    _, expected_actor = adam_step(
        optimizer,
        lambda p: loss_with(new_state["critics"], psi_b, p)[0],
        state["actor"],
        state["actor_opt_state"],
        state["actor_masks"],
    )
    assert_trees_close(new_state["actor"], expected_actor)

    log_probs = loss_with(new_state["critics"], psi_b)[1]
    alpha_loss, expected_log_alpha = adam_step(
        optimizer, lambda a: eaude.temperature_loss(a, log_probs, -2.0), state["log_alpha"], state["alpha_opt_state"]
    )
    np.testing.assert_allclose(metrics["alpha_loss"], alpha_loss, rtol=1e-5)
    np.testing.assert_allclose(new_state["log_alpha"], expected_log_alpha, rtol=1e-5)
    assert float(new_state["log_alpha"]) != float(state["log_alpha"])


def test_vmap_and_loop_layouts_agree():
    actor, critic, optimizer, state = small_state(eaude)
    batch, key = random_batch(np.random.default_rng(1)), jax.random.PRNGKey(3)
    out = [eaude_train_step(actor, critic, optimizer, lay)(state, batch, key) for lay in ("vmap", "loop")]
    np.testing.assert_allclose(out[0][1]["qf_loss"], out[1][1]["qf_loss"], rtol=1e-5)
    for a, b in zip(jax.tree.leaves(out[0][0]["critics"]), jax.tree.leaves(out[1][0]["critics"]), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_copy_prunes_online_and_target_with_one_mask_and_resets_adam():
    actor, critic, optimizer, state = small_state(eaude)
    train_step = eaude_train_step(actor, critic, optimizer)
    rng = np.random.default_rng(2)
    for _ in range(3):  # non-trivial Adam states and targets that differ from the online critics
        state, _ = train_step(state, random_batch(rng), jax.random.PRNGKey(0))
    before = jax.tree.map(np.asarray, state)
    parents, new_sparsities, is_copy = np.array([2, 2, 0]), np.array([0.0, 0.4, 0.0]), np.array([False, True, False])
    shapes = eaude.prunable_shapes(eaude.take(state["critics"], (0, 0)))
    zero_counts = [[eaude.layer_zero_counts(shapes, s, "erk") for s in row] for row in (np.zeros(3), new_sparsities)]
    names = ("critics", "critic_targets", "critic_masks", "critic_opt_states")
    plan = (np.array([[0, 1, 2], parents]), np.array(zero_counts), np.array([[False] * 3, is_copy]))  # 0 kept as is
    new = {**state, **eaude.renew_populations({name: state[name] for name in names}, *plan, optimizer, "erk")}

    # population 1 (critic 2) slot 0 and 2 are the originals of 2 and 0, untouched, with their Adam states
    for slot, parent in ((0, 2), (2, 0)):
        for name in ("critics", "critic_targets", "critic_opt_states"):
            for a, b in zip(
                jax.tree.leaves(eaude.take(new[name], (1, slot))),
                jax.tree.leaves(eaude.take(before[name], (1, parent))),
                strict=True,
            ):
                np.testing.assert_array_equal(a, b)
    # slot 1 is a copy of 2: online pruned to 40 %, the same zeros in its target, a fresh optimizer state
    online, target = eaude.take(new["critics"], (1, 1)), eaude.take(new["critic_targets"], (1, 1))
    mask = eaude.take(new["critic_masks"], (1, 1))
    assert eaude.measured_sparsity(online) == pytest.approx(0.4, abs=0.01)  # ERK rounds per (tiny) layer
    assert eaude.measured_sparsity(target) == eaude.measured_sparsity(online)
    for o, t, m, po, pt in zip(
        *(
            jax.tree.leaves(x)
            for x in (
                online,
                target,
                mask,
                eaude.take(before["critics"], (1, 2)),
                eaude.take(before["critic_targets"], (1, 2)),
            )
        ),
        strict=True,
    ):
        np.testing.assert_array_equal(np.asarray(o) == 0, ~np.asarray(m) | (po == 0))
        np.testing.assert_array_equal(np.asarray(t), np.where(np.asarray(m), pt, 0.0))  # parent's target, masked
        np.testing.assert_array_equal(np.asarray(o), np.where(np.asarray(m), po, 0.0))  # parent's online, masked
    fresh = optimizer.init(online)
    for a, b in zip(jax.tree.leaves(eaude.take(new["critic_opt_states"], (1, 1))), jax.tree.leaves(fresh), strict=True):
        np.testing.assert_array_equal(a, b)
    assert int(eaude.take(before["critic_opt_states"], (1, 2))[0].count) == 3
    # population 0 (critic 1) is untouched
    for a, b in zip(
        jax.tree.leaves(eaude.take(new["critics"], 0)), jax.tree.leaves(eaude.take(before["critics"], 0)), strict=True
    ):
        np.testing.assert_array_equal(a, b)
    # Polyak keeps the copy's pruned target weights at exactly zero
    after, _ = train_step({**new, "cumulated_losses": jnp.zeros((2, 3))}, random_batch(rng), jax.random.PRNGKey(1))
    for t, m in zip(jax.tree.leaves(eaude.take(after["critic_targets"], (1, 1))), jax.tree.leaves(mask), strict=True):
        assert np.all(np.asarray(t)[~np.asarray(m)] == 0)


def test_tournament_selection():
    """Alg. 2 l. 14 (Fig. 3 left): slot 0 is the lowest L; other slots win tournaments of M critics drawn without
    replacement; a NaN loss (diverged critic) counts as the worst."""
    rng = np.random.default_rng(0)
    losses = np.array([3.0, 1.0, 2.0, np.nan])
    for _ in range(20):  # M = K: every tournament sees the whole population
        assert eaude.tournament_selection(losses, 4, rng).tolist() == [1, 1, 1, 1]
    parents = np.stack([eaude.tournament_selection(losses, 2, rng) for _ in range(300)])
    assert np.all(parents[:, 0] == 1)
    # M = 2 of 4: critic 1 is in half of the pairs, critic 2 wins {2, 0} and {2, 3}, critic 0 only {0, 3}
    np.testing.assert_allclose(np.bincount(parents[:, 1:].ravel(), minlength=4) / 900, [1 / 6, 1 / 2, 1 / 3, 0],
                               atol=0.04)  # fmt: skip


def test_exploration_sparsity_eq3_by_hand():
    """Eq. 3 with t = 400, t' = t + P = 500, t_final = 1000, s_t = 0.2: the line to (t_final, 1) gains
    0.8 * 100 / 600 = 0.1333 per period, scaled by U, capped at S_max of the remaining 0.8."""
    assert eaude.exploration_sparsity(0.2, 400, 1000, 100, 0.3, 0.2) == pytest.approx(0.2 + 0.3 * 0.8 / 6)  # linear
    assert eaude.exploration_sparsity(0.2, 400, 1000, 100, 3.0, 0.2) == pytest.approx(0.2 + 0.2 * 0.8)  # speed cap
    assert eaude.exploration_sparsity(0.5, 990, 1000, 100, 0.001, 0.5) == pytest.approx(0.5 + 0.001 * 0.5 * 10)


class ScriptedRng:
    """Stands in for the np.random.Generator of plan_next_population: scripted tournament contenders, and U drawn at
    the middle of its range (recorded)."""

    def __init__(self, contenders: list[list[int]]) -> None:
        self.contenders, self.uniform_ranges = list(contenders), []

    def choice(self, n: int, size: int, replace: bool) -> np.ndarray:
        return np.array(self.contenders.pop(0))

    def uniform(self, low: float, high: float) -> float:
        self.uniform_ranges.append((low, high))
        return (low + high) / 2


def test_population_step_alg2_lines_13_to_16():
    """Per critic population: slot 0 = argmin L (NaN the worst) with its online and target params and Adam state,
    tournaments for the other slots, Eq. 3 for the copies only; then every L is reset, so psi = (0, 0) stands on the
    best critic of each old population; population.jsonl's target_index is that argmin."""
    actor, critic, optimizer, state = small_state(eaude)
    train_step = eaude_train_step(actor, critic, optimizer)
    rng = np.random.default_rng(5)
    for _ in range(2):  # Adam states and targets that differ from the online critics
        state, _ = train_step(state, random_batch(rng), jax.random.PRNGKey(0))
    state = {**state, "cumulated_losses": jnp.array([[3.0, 1.0, 2.0], [jnp.nan, 5.0, 4.0]])}
    before = jax.tree.map(np.asarray, state)
    sparsities = np.array([[0.1, 0.2, 0.3], [0.0, 0.5, 0.4]])
    args = eaude.Args(total_timesteps=1000, pruning_period=100, num_networks=3, tournament_size=2, u_max=0.6,
                      s_max=0.2, sparsity_distribution="uniform")  # fmt: skip
    # population 1: best 1; {0, 1} -> 1, {0, 2} -> 2. population 2: best 2; {0 (NaN), 1} -> 1, {0, 2} -> 2
    scripted = ScriptedRng([[0, 1], [0, 2], [0, 1], [0, 2]])
    new, new_sparsities, events = eaude.population_step(state, sparsities, 400, args, optimizer, scripted)

    assert [(e["critic"], e["target_index"], e["parents"]) for e in events] == [(1, 1, [1, 1, 2]), (2, 2, [2, 1, 2])]
    for e, losses, before_ in zip(events, before["cumulated_losses"], sparsities, strict=True):
        assert e["global_step"] == 400 and e["sparsities_before"] == before_.tolist()
        np.testing.assert_array_equal(e["losses"], losses)
        assert e["target_index"] == int(np.argmin(np.nan_to_num(e["losses"], nan=np.inf)))
    # Eq. 3 with U = 0.3 (middle of (0, U_max)) for the copies only: s + min(0.3 (1 - s) / 6, 0.2 (1 - s))
    assert scripted.uniform_ranges == [(0.0, 0.6)] * 2
    expected = [[0.2, 0.2 + 0.3 * 0.8 / 6, 0.3], [0.4, 0.5, 0.4 + 0.3 * 0.6 / 6]]
    np.testing.assert_allclose(new_sparsities, expected, rtol=1e-12)
    assert [e["sparsities_after"] for e in events] == new_sparsities.tolist()
    for i, slot in ((0, 1), (1, 2)):  # the copies are pruned to their new sparsity
        measured = eaude.measured_sparsity(eaude.take(new["critics"], (i, slot)))
        assert measured == pytest.approx(new_sparsities[i, slot], abs=0.01)
    # l. 16 and slot 0
    np.testing.assert_array_equal(new["cumulated_losses"], np.zeros((2, 3)))
    np.testing.assert_array_equal(eaude.selected_indices(new["cumulated_losses"]), [0, 0])
    for i, best in ((0, 1), (1, 2)):
        for name in ("critics", "critic_targets", "critic_masks", "critic_opt_states"):
            assert_trees_equal(eaude.take(new[name], (i, 0)), eaude.take(before[name], (i, best)))


def test_polyprune_prunes_both_critics_and_their_targets():
    _, _, _, state = small_state(poly, num_networks=None, width=32)
    state["critic_targets"] = jax.tree.map(lambda x: x + 0.1, state["critic_targets"])
    new = poly.prune_pair(state, 0.5, "uniform")
    for i in range(2):
        assert poly.measured_sparsity(poly.take(new["critics"], i)) == pytest.approx(0.5, abs=1e-3)
        assert poly.measured_sparsity(poly.take(new["critic_targets"], i)) == pytest.approx(0.5, abs=1e-3)
    assert (
        poly.polynomial_sparsity(20, 0.95, 20, 80, 3) == 0.0 and poly.polynomial_sparsity(80, 0.95, 20, 80, 3) == 0.95
    )
    for i in range(2):  # each critic gets the magnitude mask of its own online weights, and its target the same one
        mask = poly.take(new["critic_masks"], i)
        assert_trees_equal(mask, poly.magnitude_masks(poly.take(state["critics"], i), 0.5, "uniform"))
        assert_trees_equal(poly.take(new["critics"], i), poly.apply_masks(poly.take(state["critics"], i), mask))
        assert_trees_equal(
            poly.take(new["critic_targets"], i), poly.apply_masks(poly.take(state["critic_targets"], i), mask)
        )


def test_polynomial_schedule_eq2_by_hand():
    """Eq. 2: s_t = s_F (1 - (1 - clip((t - t_start) / (t_end - t_start), 0, 1))^n)."""
    assert poly.polynomial_sparsity(50, 0.95, 20, 80, 3) == pytest.approx(0.95 * (1 - 0.5**3))
    assert poly.polynomial_sparsity(35, 0.9, 20, 80, 2) == pytest.approx(0.9 * (1 - 0.75**2))
    assert poly.polynomial_sparsity(10, 0.95, 20, 80, 3) == 0.0  # before t_start
    assert poly.polynomial_sparsity(100, 0.95, 20, 80, 3) == pytest.approx(0.95)  # after t_end


def test_polyprune_train_step_by_hand():
    """SAC on the pruned pair: y = r + gamma (1 - terminated) (min(Qbar_1, Qbar_2)(s', a') - alpha log pi(a'|s')), one
    Adam step per critic with the masks applied again, the actor on the min of the two updated online critics, the
    temperature on its loss, Polyak targets with tau."""
    actor, critic, optimizer, state = small_state(poly, num_networks=None)
    train_step = poly_train_step(actor, critic, optimizer)
    rng = np.random.default_rng(9)
    masks = random_masks(state["critic_masks"], rng, kernel_ndim=3)
    pruned = poly.apply_masks(state["critics"], masks)
    state = {**state, "critic_masks": masks, "critics": pruned, "critic_targets": pruned}
    state, _ = train_step(state, random_batch(rng), jax.random.PRNGKey(0))  # non-trivial Adam moments and alpha
    state["critic_targets"] = jax.tree.map(lambda x: x * 1.5 + 0.01, state["critic_targets"])  # targets != online
    state["actor_masks"] = random_masks(state["actor_masks"], rng, kernel_ndim=2)  # as with --prune-actor
    state["actor"] = poly.apply_masks(state["actor"], state["actor_masks"])
    batch, key = random_batch(rng), jax.random.PRNGKey(1)
    new_state, metrics = train_step(state, batch, key)

    target_key, actor_key = jax.random.split(key)
    alpha = jnp.exp(state["log_alpha"])
    next_actions, next_log_probs = poly.sample_action(actor, state["actor"], batch["next_observations"], target_key)
    q1, q2 = (
        np.asarray(critic.apply(poly.take(state["critic_targets"], i), batch["next_observations"], next_actions))
        for i in range(2)
    )
    assert (q1 < q2).any() and (q2 < q1).any() and 0 < batch["terminations"].sum() < 32
    y = batch["rewards"] + 0.99 * (1 - batch["terminations"]) * (
        np.minimum(q1, q2) - float(alpha) * np.asarray(next_log_probs)
    )
    for i in range(2):
        loss, expected = adam_step(
            optimizer,
            lambda p: jnp.mean((y - critic.apply(p, batch["observations"], batch["actions"])) ** 2),
            poly.take(state["critics"], i),
            poly.take(state["critic_opt_states"], i),
            poly.take(masks, i),
        )
        np.testing.assert_allclose(metrics["qf_loss"][i], loss, rtol=1e-4)
        assert_trees_close(poly.take(new_state["critics"], i), expected)
    for w, m in zip(jax.tree.leaves(new_state["critics"]), jax.tree.leaves(masks), strict=True):
        assert np.all(np.asarray(w)[~np.asarray(m)] == 0)
    assert_trees_close(
        new_state["critic_targets"],
        jax.tree.map(lambda t, o: 0.995 * t + 0.005 * o, state["critic_targets"], new_state["critics"]),
        rtol=1e-5,
        atol=1e-7,
    )

    def actor_loss(actor_params, critics):  # by hand: alpha log pi(a|s) - min(Q_1, Q_2)(s, a), a ~ pi(.|s)
        actions, log_probs = poly.sample_action(actor, actor_params, batch["observations"], actor_key)
        q = [critic.apply(poly.take(critics, i), batch["observations"], actions) for i in range(2)]
        return jnp.mean(alpha * log_probs - jnp.minimum(q[0], q[1])), log_probs

    np.testing.assert_allclose(metrics["actor_loss"], actor_loss(state["actor"], new_state["critics"])[0], rtol=1e-5)
    for wrong in (new_state["critic_targets"], state["critics"]):
        assert not np.isclose(metrics["actor_loss"], actor_loss(state["actor"], wrong)[0], rtol=1e-5, atol=0)
    _, expected_actor = adam_step(
        optimizer,
        lambda p: actor_loss(p, new_state["critics"])[0],
        state["actor"],
        state["actor_opt_state"],
        state["actor_masks"],
    )
    assert_trees_close(new_state["actor"], expected_actor)
    log_probs = actor_loss(state["actor"], new_state["critics"])[1]
    alpha_loss, expected_log_alpha = adam_step(
        optimizer, lambda a: poly.temperature_loss(a, log_probs, -2.0), state["log_alpha"], state["alpha_opt_state"]
    )
    np.testing.assert_allclose(metrics["alpha_loss"], alpha_loss, rtol=1e-5)
    np.testing.assert_allclose(new_state["log_alpha"], expected_log_alpha, rtol=1e-5)


# ---------------------------------------------------------------------------------------------------------------------
# Replay buffer and the training loop (Alg. 2 l. 2-4, l. 13): acting, storing, UTD, every P steps
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("module", [eaude, poly], ids=["eaudesac", "polyprune_sac"])
def test_replay_buffer_is_fifo_and_samples_whole_transitions(module):
    rb = module.ReplayBuffer(5, obs_dim=1, action_dim=1)
    for start in (0, 3, 6):  # 9 transitions in batches of 3 into a capacity of 5: the 5 newest remain
        i = np.arange(start, start + 3, dtype=np.float32)
        rb.add(i[:, None], 10 + i[:, None], 20 + i, i % 2, 30 + i[:, None])
    assert rb.size == 5 and sorted(rb.obs[:, 0]) == [4, 5, 6, 7, 8]
    batch = rb.sample(64, np.random.default_rng(0))
    o = batch["observations"][:, 0]
    assert set(o) == {4, 5, 6, 7, 8}
    np.testing.assert_array_equal(batch["actions"][:, 0], 10 + o)
    np.testing.assert_array_equal(batch["rewards"], 20 + o)
    np.testing.assert_array_equal(batch["terminations"], o % 2)
    np.testing.assert_array_equal(batch["next_observations"][:, 0], 30 + o)


class ScriptedEnv:
    """An envpool-like MuJoCo env with short episodes: env 0 terminates after 3 steps, env 1 is truncated after 5.
    As envpool, the ending step returns the true last observation, and the next step (the autoreset step) ignores the
    action and returns the reset observation with reward 0. Observations are (env, episode, t, 1); the reward of
    step t is t. Actions received are recorded."""

    LENGTHS, TRUNCATES = (3, 5), (False, True)

    def __init__(self, num_envs: int) -> None:
        self.num_envs = num_envs
        self.observation_space = SimpleNamespace(shape=(4,))
        self.action_space = SimpleNamespace(shape=(2,), low=np.full(2, -2.0), high=np.full(2, 2.0))
        self.episode, self.t = np.zeros(num_envs), np.zeros(num_envs)
        self.ended = np.zeros(num_envs, dtype=bool)
        self.received: list[np.ndarray] = []

    def observe(self) -> np.ndarray:
        return np.stack([np.arange(self.num_envs), self.episode, self.t, np.ones(self.num_envs)], axis=1)

    def reset(self):
        return self.observe(), {}

    def step(self, actions):
        self.received.append(np.array(actions))
        rewards = np.zeros(self.num_envs)
        terminated, truncated = np.zeros(self.num_envs, bool), np.zeros(self.num_envs, bool)
        for env in range(self.num_envs):
            if self.ended[env]:  # autoreset step
                self.episode[env], self.t[env], self.ended[env] = self.episode[env] + 1, 0, False
                continue
            self.t[env] += 1
            rewards[env] = self.t[env]
            self.ended[env] = self.t[env] == self.LENGTHS[env % 2]
            truncated[env] = self.ended[env] and self.TRUNCATES[env % 2]
            terminated[env] = self.ended[env] and not self.TRUNCATES[env % 2]
        return self.observe(), rewards, terminated, truncated, {}

    def close(self) -> None:
        pass


LOOP = ["--env-id", "Hopper-v5", "--num-envs", "2", "--total-timesteps", "60", "--learning-starts", "20",
        "--batch-size", "32", "--buffer-size", "1000", "--eval-frequency", "0", "--checkpoint-interval", "0"]  # fmt: skip


def run_on_scripted_env(module, monkeypatch, tmp_path: Path, extra: list[str]) -> SimpleNamespace:
    """Run `module.main` on ScriptedEnv with 16-wide critics, reusing the test-compiled train step, and record what
    the loop does: transitions stored, actions sent, policy calls, train steps and the make_train_step arguments."""
    record = patch_scripted_env(module, monkeypatch)
    module.main([*LOOP, *extra, "--output-dir", str(tmp_path / "runs")])
    (record.run_dir,) = (tmp_path / "runs").iterdir()
    record.steps = np.cumsum([len(add[0]) for add in record.adds])  # global_step after each env step
    return record


def patch_scripted_env(module, monkeypatch) -> SimpleNamespace:
    """Make `module.main` run on ScriptedEnv with the test-compiled train step; the returned record fills as it runs
    (a SIGINT is sent to this process during train step number `record.ctrl_c_at`, as if Ctrl-C were pressed)."""
    record = SimpleNamespace(adds=[], acts=[], train_calls=[], make_train_step=None, env=None, ctrl_c_at=None)

    def make_env(env_id, num_envs, seed):
        record.env = ScriptedEnv(num_envs)
        return record.env

    class RecordingBuffer(module.ReplayBuffer):
        def add(self, obs, actions, rewards, terminated, next_obs):
            record.adds.append(tuple(np.array(x) for x in (obs, actions, rewards, terminated, next_obs)))
            super().add(obs, actions, rewards, terminated, next_obs)

    real_make_act = module.make_act

    def make_act(actor):
        act = real_make_act(actor)

        def recording_act(params, observations, key):
            actions = act(params, observations, key)
            record.acts.append((len(record.env.received), params, np.array(observations), key, np.array(actions)))
            return actions

        return recording_act

    if module is eaude:  # compiled (or taken from the cache) before make_train_step is replaced below
        train_step = eaude_train_step(*small_state(eaude)[:3])
    else:
        train_step = poly_train_step(*small_state(poly, num_networks=None)[:3])

    def make_train_step(actor, critic, optimizer, *args, **kwargs):
        record.make_train_step = (args, kwargs)

        def counting_train_step(state, batch, key):
            new_state, metrics = train_step(state, batch, key)
            record.train_calls.append((len(record.env.received), state.get("cumulated_losses")))
            if len(record.train_calls) == record.ctrl_c_at:
                os.kill(os.getpid(), signal.SIGINT)
            return new_state, metrics

        return counting_train_step

    monkeypatch.setitem(module.CRITIC_WIDTHS, "small", 16)
    for name, value in [("make_env", make_env), ("ReplayBuffer", RecordingBuffer), ("make_act", make_act),
                        ("make_train_step", make_train_step)]:  # fmt: skip
        monkeypatch.setattr(module, name, value)
    return record


def check_loop(module, record) -> None:
    """What both SAC loops must do: the replay rules, acting with the actor after the warm-up, UTD 1."""
    obs, _, rewards, terminated, next_obs = (np.concatenate(x) for x in zip(*record.adds, strict=True))
    # every env step of an episode is stored once; the autoreset step (last -> reset observation) never
    np.testing.assert_array_equal(next_obs[:, :2], obs[:, :2])
    np.testing.assert_array_equal(next_obs[:, 2], obs[:, 2] + 1)
    np.testing.assert_array_equal(rewards, next_obs[:, 2])
    # only a true termination stops the bootstrap; a truncated transition keeps terminated = 0 and its true last
    # observation as next observation (CleanRL issue 460)
    np.testing.assert_array_equal(terminated, (obs[:, 0] == 0) & (next_obs[:, 2] == 3))
    assert np.sum((obs[:, 0] == 1) & (next_obs[:, 2] == 5)) >= 2
    assert record.steps[-1] == len(obs) >= 60
    # the buffer holds the unit actions; the env gets them mapped once onto [-2, 2]
    for (o, a, *_), sent in zip(record.adds, record.env.received, strict=True):
        np.testing.assert_allclose(sent[o[:, 0].astype(int)], 2 * a, atol=1e-6)
    # Alg. 2 l. 3: uniform actions during the warm-up, then a ~ pi_phi(.|s) for every env step
    before = np.concatenate([[0], record.steps[:-1]])  # global_step when each action was chosen
    acting = np.flatnonzero(before >= 20)
    assert [call[0] for call in record.acts] == acting.tolist()
    actor = module.Actor(action_dim=2)
    for env_steps, params, observations, key, unit_actions in record.acts[:: len(record.acts) - 1]:
        np.testing.assert_allclose(record.env.received[env_steps], 2 * unit_actions, atol=1e-6)
        expected = module.sample_action(actor, params, jnp.asarray(observations, jnp.float32), key)[0]
        np.testing.assert_allclose(unit_actions, expected, rtol=1e-5, atol=1e-6)
    # Alg. 2 l. 4: one update per env step after the warm-up (UTD 1), also when several envs step at once
    assert len(record.train_calls) == record.steps[-1] - 20
    args, kwargs = record.make_train_step
    assert (args[:2], kwargs["target_entropy"]) == ((0.99, 0.005), -2.0)  # gamma, tau, -action_dim


def test_eaudesac_loop_on_a_scripted_env(monkeypatch, tmp_path):
    """The replay rules, acting, UTD 1, and the population events every P = 10 env steps after the warm-up (first at
    30), with slot 0 = argmin of the logged losses and the losses reset after every event."""
    record = run_on_scripted_env(eaude, monkeypatch, tmp_path, ["--num-networks", "3", "--tournament-size", "2",
                                 "--pruning-period", "10", "--u-max", "30", "--s-max", "0.2"])  # fmt: skip
    check_loop(eaude, record)
    events = [json.loads(line) for line in (record.run_dir / "population.jsonl").read_text().splitlines()]
    due = [int(record.steps[np.argmax(record.steps >= m)]) for m in range(30, int(record.steps[-1]) + 1, 10)]
    assert [(e["global_step"], e["critic"]) for e in events] == [(step, c) for step in due for c in (1, 2)]
    for e in events:
        assert e["target_index"] == int(np.argmin(np.nan_to_num(e["losses"], nan=np.inf))) == e["parents"][0]
        assert e["sparsities_after"][0] == e["sparsities_before"][e["target_index"]]
    for step in due[:-1]:  # the first update after an event starts from L = 0 (Alg. 2 l. 16)
        env_steps = int(np.argmax(record.steps >= step)) + 1
        (losses,) = [L for n, L in record.train_calls if n == env_steps + 1][:1]
        np.testing.assert_array_equal(losses, np.zeros((2, 3)))
    assert max(max(e["sparsities_after"]) for e in events) > 0.0


def test_polyprune_sac_loop_on_a_scripted_env(monkeypatch, tmp_path):
    """The replay rules, acting, UTD 1, and Eq. 2 masks recomputed every P = 10 env steps from t = P: t_start = 6,
    t_end = 48 (0.1 and 0.8 of 60), so the sparsity changes at 10, 20, 30, 40 and reaches s_F = 0.95 at 50."""
    extra = ["--pruning-period", "10", "--final-sparsity", "0.95", "--pruning-start", "0.1",
             "--sparsity-distribution", "uniform"]  # fmt: skip
    record = run_on_scripted_env(poly, monkeypatch, tmp_path, extra)
    check_loop(poly, record)
    logged = [(m["global_step"], m["value"]) for m in read_metrics(record.run_dir) if m["name"] == "sparsity/target"]
    due = [int(record.steps[np.argmax(record.steps >= m)]) for m in range(10, 51, 10)]
    assert [step for step, _ in logged] == [0, *due]
    for step, value in logged:
        expected = 0.95 * (1 - (1 - min(max((step - 6) / 42, 0), 1)) ** 3)
        assert value == pytest.approx(expected, abs=0.005)


# ---------------------------------------------------------------------------------------------------------------------
# Action convention, parameter counts
# ---------------------------------------------------------------------------------------------------------------------


def test_scale_action_humanoid_bound():
    space = envpool.make_spec("Humanoid-v5").action_space
    low, high = space.low, space.high
    np.testing.assert_allclose(high, 0.4)
    np.testing.assert_allclose(eaude.scale_action(np.ones(17), low, high), high)
    np.testing.assert_allclose(eaude.scale_action(-np.ones(17), low, high), low)
    np.testing.assert_allclose(eaude.scale_action(np.zeros(17), low, high), 0.0, atol=1e-12)
    np.testing.assert_allclose(eaude.scale_action(np.full(17, 0.5), low, high), 0.2)
    np.testing.assert_allclose(eaude.scale_action(np.full(1, 0.5), np.array([-3.0]), np.array([3.0])), 1.5)


class RecordingEnv:
    """Wraps an envpool env and records the actions it receives."""

    def __init__(self, env, log):
        self.env, self.log = env, log

    def __getattr__(self, name):
        return getattr(self.env, name)

    def step(self, actions):
        self.log.append(np.array(actions))
        return self.env.step(actions)


def test_warm_up_actions_cover_humanoid_bounds_once(tmp_path, monkeypatch):
    log: list[np.ndarray] = []
    real = eaude.make_env
    monkeypatch.setattr(eaude, "make_env", lambda *a, **k: RecordingEnv(real(*a, **k), log))
    eaude.main(["--env-id", "Humanoid-v5", "--total-timesteps", "300", "--learning-starts", "1000", "--eval-frequency", "0",
                "--checkpoint-interval", "0", "--output-dir", str(tmp_path / "runs"), "--buffer-size", "1000"])  # fmt: skip
    actions = np.concatenate(log)
    assert actions.shape[1] == 17 and len(actions) >= 300
    assert np.abs(actions).max() <= 0.4 + 1e-7
    assert np.abs(actions).max() > 0.38  # uniform over the whole [-0.4, 0.4], not rescaled twice (|a| <= 0.16)


def test_parameter_counts():
    counts = {}
    for size, width in eaude.CRITIC_WIDTHS.items():
        params = jax.eval_shape(
            eaude.Critic(width=width).init, jax.random.PRNGKey(0), jnp.zeros((1, 105)), jnp.zeros((1, 8))
        )
        counts[size] = eaude.count_params(params)
    assert counts == {"small": 95_233, "medium": 1_786_881, "large": 4_431_873}  # Ant-v5: 105 obs + 8 actions
    actor = jax.eval_shape(eaude.Actor(action_dim=8).init, jax.random.PRNGKey(0), jnp.zeros((1, 105)))
    assert eaude.count_params(actor) == 97_040
    # Table 1 (94 984 / 1 785 608 / 4 429 832) = an MLP 105 -> w -> w -> 8, see docs/mujoco.md
    for width, table in ((256, 94_984), (1280, 1_785_608), (2048, 4_429_832)):
        assert 105 * width + width + width * width + width + width * 8 + 8 == table


# ---------------------------------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------------------------------

BAD_ARGS = [
    (["--env-id", "Foo-v5"], "--env-id"),
    (["--env-id", "Pong-v5"], "--env-id"),
    (["--total-timesteps", "-5"], "--total-timesteps"),
    (["--tau", "0"], "--tau"),
]
EAUDE_BAD = [
    (["--num-networks", "0"], "--num-networks"),
    (["--num-networks", "2", "--tournament-size", "3"], "--tournament-size"),
    (["--u-max", "0"], "--u-max"),
]
POLY_BAD = [(["--final-sparsity", "1"], "--final-sparsity"), (["--pruning-power", "0"], "--pruning-power")]


@pytest.mark.parametrize(
    ("module", "argv", "flag"), [(m, a, f) for m in (eaude, poly) for a, f in BAD_ARGS] + [(eaude, a, f) for a, f in EAUDE_BAD] + [(poly, a, f) for a, f in POLY_BAD]
)  # fmt: skip
def test_argument_errors(module, argv, flag, capsys):
    with pytest.raises(SystemExit) as exit_:
        module.parse_args(argv)
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and flag in err[0]


@pytest.mark.parametrize("script", [EAUDE, POLY])
def test_argument_error_exit_code_in_a_subprocess(script, tmp_path):
    proc = subprocess.run(
        [sys.executable, str(script), "--env-id", "CartPole-v1"], cwd=tmp_path, capture_output=True, text=True
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("error: --env-id") and "Traceback" not in proc.stderr
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("module", [eaude, poly], ids=["eaudesac", "polyprune_sac"])
def test_impossible_seed_learning_rate_buffer_and_output_dir_are_one_error_line(module, tmp_path, capsys):
    def error(argv: list[str]) -> str:
        with pytest.raises(SystemExit) as exit_:
            module.parse_args(["--env-id", "Hopper-v5", *argv])
        assert exit_.value.code == 2
        err = capsys.readouterr().err.strip()
        assert err.splitlines() == [err]
        return err

    assert error(["--seed", "-1"]) == "error: --seed: must be non-negative"
    for value in ("inf", "nan", "0"):
        assert error(["--learning-rate", value]) == "error: --learning-rate: must be a positive finite number"
    assert (
        error(["--buffer-size", "100", "--batch-size", "256", "--learning-starts", "50"])
        == "error: --buffer-size: must hold at least one --batch-size of transitions"
    )
    assert (
        error(["--buffer-size", "1000", "--learning-starts", "5000"])
        == "error: --buffer-size: must hold the --learning-starts warm-up"
    )
    (tmp_path / "taken").write_text("a file")
    for output_dir in ("taken", "taken/runs"):  # the run folder is the first thing main() makes
        with pytest.raises(SystemExit) as exit_:
            module.Run(module.parse_args(["--env-id", "Hopper-v5", "--output-dir", str(tmp_path / output_dir)]))
        assert exit_.value.code == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith(
            f"error: --output-dir: cannot create a run folder in '{tmp_path}/taken"
        )


# ---------------------------------------------------------------------------------------------------------------------
# Crash safety: Ctrl-C, a kill's damage, divergence (in-process on ScriptedEnv)
# ---------------------------------------------------------------------------------------------------------------------

SCRIPTED_SCHEDULES = {
    eaude: ["--num-networks", "3", "--tournament-size", "2", "--pruning-period", "10"],
    poly: ["--pruning-period", "10", "--final-sparsity", "0.95", "--pruning-start", "0.1", "--sparsity-distribution",
           "uniform"],
}  # fmt: skip


def checkpoint_step(run_dir: Path, name: str = "checkpoint") -> int:
    return json.loads((run_dir / name / "meta.json").read_text())["global_step"]


def strict_jsonl(path: Path) -> list[dict]:
    """Every line parsed by strict JSON: a bare NaN or Infinity fails."""

    def reject(constant: str) -> None:
        raise AssertionError(f"bare {constant} in {path.name}")

    return [json.loads(line, parse_constant=reject) for line in path.read_text().splitlines()]


def assert_scripted_logs_complete(module, run_dir: Path) -> None:
    """Every logging step of a LOOP run (60 env steps, P = 10, warm-up 20) once, none missing."""
    metrics = strict_jsonl(run_dir / "metrics.jsonl")
    episodic = {"charts/episodic_return", "charts/episodic_length"}  # two envs may end an episode at the same step
    for name in {m["name"] for m in metrics} - episodic:
        steps = [m["global_step"] for m in metrics if m["name"] == name]
        assert steps == sorted(set(steps)), f"{name} repeats a step: {steps}"
    meta = json.loads((run_dir / "checkpoint" / "meta.json").read_text())
    assert meta["global_step"] >= 60
    assert sum(m["name"] == "charts/episodic_return" for m in metrics) == meta["episodes"]
    sparsity_steps = [m["global_step"] for m in metrics if m["name"] == "sparsity/target"]
    if module is eaude:  # one event per critic population at the first step >= 30, 40, 50, 60
        events = strict_jsonl(run_dir / "population.jsonl")
        assert [(e["global_step"] // 10, e["critic"]) for e in events] == [(m, c) for m in (3, 4, 5, 6) for c in (1, 2)]
        assert sparsity_steps == [0, *[e["global_step"] for e in events[::2]]]
    else:  # Eq. 2 changes the sparsity at the first step >= 10, 20, 30, 40, 50
        assert [step // 10 for step in sparsity_steps] == [0, 1, 2, 3, 4, 5]


@pytest.mark.parametrize("module", [eaude, poly], ids=["eaudesac", "polyprune_sac"])
def test_ctrl_c_checkpoints_and_a_torn_log_and_a_damaged_checkpoint_still_resume(module, monkeypatch, tmp_path, capsys):
    """A real SIGINT to this process during train step 15 (checkpoints every 10 env steps): the loop iteration
    finishes, a checkpoint is saved, exit 130 with a --resume line. Then a kill's damage: a torn last log line and the
    newest checkpoint cut in half: --resume falls back to checkpoint.old/ with no step logged twice or missing. With
    both checkpoints damaged, --resume is one error line naming the files, exit 2."""
    record = patch_scripted_env(module, monkeypatch)
    record.ctrl_c_at = 15
    runs = tmp_path / "runs"
    with pytest.raises(SystemExit) as exit_:
        module.main([*LOOP, *SCRIPTED_SCHEDULES[module], "--checkpoint-interval", "10", "--output-dir", str(runs)])
    assert exit_.value.code == 130
    (run_dir,) = runs.iterdir()
    interrupted_at, previous = checkpoint_step(run_dir), checkpoint_step(run_dir, "checkpoint.old")
    assert capsys.readouterr().err.strip().splitlines() == [
        f"interrupted at step {interrupted_at}; checkpoint saved, continue with: python {module.__name__}.py --resume "
        f"{run_dir}"
    ]
    meta = json.loads((run_dir / "checkpoint" / "meta.json").read_text())
    assert len(record.train_calls) == meta["grad_steps"] == interrupted_at - 20  # none after the interrupted one
    assert 30 <= previous < interrupted_at < 40

    record.ctrl_c_at = None
    logs = [run_dir / name for name in ("metrics.jsonl", "population.jsonl") if (run_dir / name).exists()]
    after = sum(json.loads(line)["global_step"] > previous for log in logs for line in log.read_text().splitlines())
    with open(run_dir / "metrics.jsonl", "a") as f:
        f.write('{"global_step": 41, "name": "charts/episodic_re')  # a kill in the middle of a log write
    state = run_dir / "checkpoint" / "state.msgpack"
    state.write_bytes(state.read_bytes()[: state.stat().st_size // 2])  # a checkpoint cut in half
    module.main(["--resume", str(run_dir)])
    out, err = capsys.readouterr()
    (warning,) = err.strip().splitlines()
    assert warning.startswith(f"warning: {state} is damaged (")
    assert warning.endswith(f"); resuming from the previous checkpoint {run_dir / 'checkpoint.old'}")
    assert f"resume: dropped {after + 1} log lines written after the checkpoint or torn by a kill" in out
    assert f"resumed {run_dir.name} at step {previous}" in out
    assert_scripted_logs_complete(module, run_dir)

    for name in ("checkpoint", "checkpoint.old"):  # nothing left to fall back to: one error line naming the files
        state = run_dir / name / "state.msgpack"
        state.write_bytes(state.read_bytes()[:100])
    with pytest.raises(SystemExit) as exit_:
        module.main(["--resume", str(run_dir)])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.splitlines() == [err] and err.startswith("error: --resume:")
    assert f"{run_dir / 'checkpoint' / 'state.msgpack'} is damaged" in err
    assert f"{run_dir / 'checkpoint.old' / 'state.msgpack'} is damaged" in err


@pytest.mark.parametrize("module", [eaude, poly], ids=["eaudesac", "polyprune_sac"])
def test_divergence_stops_the_run_with_one_line_and_strict_json(module, monkeypatch, tmp_path, capsys):
    """--learning-rate 1e30: the first Adam step moves every weight by about 1e30, so the losses of the next steps
    overflow: exit 3 with one error line, the losses logged (a non-finite one as null), no checkpoint after it."""
    monkeypatch.setattr(module, "make_env", lambda env_id, num_envs, seed: ScriptedEnv(num_envs))
    monkeypatch.setitem(module.CRITIC_WIDTHS, "small", 16)
    runs = tmp_path / "runs"
    argv = [*LOOP, *SCRIPTED_SCHEDULES[module], "--learning-rate", "1e30", "--checkpoint-interval", "1"]
    with pytest.raises(SystemExit) as exit_:
        module.main([*argv, "--output-dir", str(runs)])
    assert exit_.value.code == 3
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "the run diverged" in lines[0]
    step = int(re.search(r"at step (\d+):", lines[0]).group(1))
    (run_dir,) = runs.iterdir()
    metrics = strict_jsonl(run_dir / "metrics.jsonl")
    losses = {m["name"]: m["value"] for m in metrics if m["name"].startswith("losses/")}
    assert set(losses) == {"losses/qf_loss", "losses/actor_loss"} and None in losses.values()
    assert {m["global_step"] for m in metrics if m["name"].startswith("losses/")} == {step}
    if (run_dir / "population.jsonl").exists():
        strict_jsonl(run_dir / "population.jsonl")
    assert step - 2 <= checkpoint_step(run_dir) < step  # no checkpoint is written after divergence


# ---------------------------------------------------------------------------------------------------------------------
# End-to-end runs
# ---------------------------------------------------------------------------------------------------------------------

TINY = ["--env-id", "InvertedPendulum-v5", "--batch-size", "32", "--learning-starts", "200", "--eval-episodes", "2",
        "--eval-frequency", "300", "--pruning-period", "100"]  # fmt: skip


def run_script(script: Path, args: list[str], tmp_path: Path, timeout: float = 300) -> Path:
    proc = subprocess.run(
        [sys.executable, str(script), *args, "--output-dir", str(tmp_path / "runs")],
        cwd=tmp_path, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    (run_dir,) = (tmp_path / "runs").iterdir()
    return run_dir


def read_metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_polyprune_smoke_run_saves_and_reloads_the_model(tmp_path):
    run_dir = run_script(
        POLY,
        [*TINY, "--total-timesteps", "1000", "--save-model", "--prune-actor", "--checkpoint-interval", "0"],
        tmp_path,
    )
    metrics = read_metrics(run_dir)
    names = {m["name"] for m in metrics}
    assert {
        "charts/episodic_return",
        "losses/qf_loss",
        "losses/actor_loss",
        "losses/alpha",
        "eval/episodic_return",
        "sparsity/target",
    } <= names
    sparsity = [m["value"] for m in metrics if m["name"] == "sparsity/target"]
    assert sparsity[0] == 0.0 and sparsity[-1] == pytest.approx(0.95, abs=1e-3)  # Eq. 2 reaches s_F at 80 %
    assert not (run_dir / "population.jsonl").exists()
    template = {"actor": eaude.Actor(1).init(jax.random.PRNGKey(0), jnp.zeros((1, 4))),
                "critics": [eaude.Critic(256).init(jax.random.PRNGKey(0), jnp.zeros((1, 4)), jnp.zeros((1, 1)))] * 2}  # fmt: skip
    model = flax.serialization.from_bytes(template, (run_dir / "polyprune_sac_mujoco_jax.cleanrl_model").read_bytes())
    assert all(eaude.measured_sparsity(q) == pytest.approx(0.95, abs=1e-3) for q in model["critics"])
    assert eaude.measured_sparsity(model["actor"]) == pytest.approx(0.95, abs=1e-3)
    evals = [m for m in metrics if m["name"] == "eval/episodic_return"]
    assert len(evals) == 2 * 4 and {m["global_step"] for m in evals} == {300, 600, 900, 1000}


@pytest.mark.slow
def test_eaudesac_kill_and_resume(tmp_path):
    """Kill a run right after a checkpoint, resume it: counters, replay buffer and logs continue without duplicates."""
    total = 1200
    args = [*TINY, "--total-timesteps", str(total), "--checkpoint-interval", "400", "--num-networks", "3",
            "--tournament-size", "2", "--u-max", "30", "--save-model"]  # fmt: skip
    proc = subprocess.Popen(
        [sys.executable, str(EAUDE), *args, "--output-dir", str(tmp_path / "runs")],
        cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline, killed_at = time.time() + 240, None
    while time.time() < deadline and proc.poll() is None:
        metas = list((tmp_path / "runs").glob("*/checkpoint/meta.json"))
        if metas:
            step = json.loads(metas[0].read_text())["global_step"]
            if step >= 400:
                proc.send_signal(signal.SIGKILL)
                killed_at = step
                break
        time.sleep(0.1)
    proc.wait()
    assert killed_at is not None and killed_at < total, "the run ended before it could be killed"
    (run_dir,) = (tmp_path / "runs").iterdir()
    saved = shutil.copytree(run_dir / "checkpoint", tmp_path / "snapshot")
    resumed = subprocess.run(
        [sys.executable, str(EAUDE), "--resume", str(run_dir)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resumed {run_dir.name} at step {killed_at:,}" in resumed.stdout

    meta = json.loads((run_dir / "checkpoint" / "meta.json").read_text())
    assert meta["global_step"] == total and meta["grad_steps"] == total - 200
    size = int(np.load(run_dir / "checkpoint" / "replay_size.npy"))
    assert size == total  # one stored transition per env step, none lost or stored twice
    old_obs = np.load(saved / "replay_obs.npy")
    np.testing.assert_array_equal(np.load(run_dir / "checkpoint" / "replay_obs.npy")[: len(old_obs)], old_obs)
    metrics = read_metrics(run_dir)
    keys = [(m["name"], m["global_step"]) for m in metrics if m["name"] != "eval/episodic_return"]
    assert len(keys) == len(set(keys))  # nothing logged twice
    assert sum(m["name"] == "charts/episodic_return" for m in metrics) == meta["episodes"]
    evals = [m["global_step"] for m in metrics if m["name"] == "eval/episodic_return"]
    assert evals == sorted(evals) and len(evals) == 2 * 4  # 300, 600, 900 and the saved model at 1200
    events = [json.loads(line) for line in (run_dir / "population.jsonl").read_text().splitlines()]
    assert [(e["global_step"], e["critic"]) for e in events] == [
        (s, c) for s in range(300, total + 1, 100) for c in (1, 2)
    ]
    for e in events:
        assert len(e["losses"]) == len(e["parents"]) == len(e["sparsities_after"]) == 3
        assert e["target_index"] == int(np.argmin(np.nan_to_num(e["losses"], nan=np.inf)))  # slot 0 = argmin L
        assert e["parents"][0] == e["target_index"]
        assert e["sparsities_after"][0] == e["sparsities_before"][e["target_index"]]
    assert max(max(e["sparsities_after"]) for e in events) > 0.0
    (model,) = run_dir.glob("*.cleanrl_model")
    assert model.stat().st_size > 0


@pytest.mark.slow
def test_eaudesac_ctrl_c_in_a_real_run_then_resume_from_the_previous_checkpoint(tmp_path):
    """Ctrl-C to a real EauDeSAC process (checkpoints every 200 of 1 200 env steps): exit 130 with a --resume line and
    two checkpoints; a torn log line plus the newest checkpoint cut in half still resume, from checkpoint.old/, to
    complete logs."""
    total = 1200
    args = [*TINY, "--total-timesteps", str(total), "--checkpoint-interval", "200", "--num-networks", "3",
            "--tournament-size", "2", "--output-dir", "runs"]  # fmt: skip
    process = subprocess.Popen(
        [sys.executable, str(EAUDE), *args], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    deadline = time.time() + 300
    while time.time() < deadline and not list(tmp_path.glob("runs/*/checkpoint/meta.json")):
        assert process.poll() is None, process.communicate()
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    (run_dir,) = (tmp_path / "runs").iterdir()
    interrupted_at, previous = checkpoint_step(run_dir), checkpoint_step(run_dir, "checkpoint.old")
    assert stderr.strip().splitlines() == [
        f"interrupted at step {interrupted_at:,}; checkpoint saved, continue with: python eaudesac_mujoco_jax.py "
        f"--resume runs/{run_dir.name}"
    ]  # the run folder as the user gave it
    assert previous == 200 <= interrupted_at < total

    with open(run_dir / "metrics.jsonl", "a") as f:
        f.write('{"global_step": 99999, "name": "charts/SP')  # a kill in the middle of a log write
    state = run_dir / "checkpoint" / "state.msgpack"
    state.write_bytes(state.read_bytes()[: state.stat().st_size // 2])  # a checkpoint cut in half
    result = subprocess.run(
        [sys.executable, str(EAUDE), "--resume", str(run_dir)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stderr.startswith(f"warning: {state} is damaged") and "previous checkpoint" in result.stderr
    assert f"resumed {run_dir.name} at step {previous:,}" in result.stdout and "resume: dropped" in result.stdout
    metrics = strict_jsonl(run_dir / "metrics.jsonl")
    per_episode = {"charts/episodic_return", "charts/episodic_length", "eval/episodic_return"}
    for name in {m["name"] for m in metrics} - per_episode:
        steps = [m["global_step"] for m in metrics if m["name"] == name]
        assert steps == sorted(set(steps)), f"{name} repeats a step"
    assert [m["global_step"] for m in metrics if m["name"] == "charts/SPS"] == [1000]
    evals = [m["global_step"] for m in metrics if m["name"] == "eval/episodic_return"]
    assert evals == [step for step in (300, 600, 900, 1200) for _ in range(2)]  # --eval-episodes 2
    events = strict_jsonl(run_dir / "population.jsonl")
    assert [(e["global_step"], e["critic"]) for e in events] == [
        (s, c) for s in range(300, total + 1, 100) for c in (1, 2)
    ]
    meta = json.loads((run_dir / "checkpoint" / "meta.json").read_text())
    assert meta["global_step"] == total and meta["grad_steps"] == total - 200
    assert int(np.load(run_dir / "checkpoint" / "replay_size.npy")) == total  # no transition lost or stored twice
    assert sum(m["name"] == "charts/episodic_return" for m in metrics) == meta["episodes"]


def best_eval(run_dir: Path) -> float:
    """Best mean evaluation return over the run's periodic evaluations."""
    by_step: dict[int, list[float]] = {}
    for m in read_metrics(run_dir):
        if m["name"] == "eval/episodic_return":
            by_step.setdefault(m["global_step"], []).append(m["value"])
    return max(float(np.mean(v)) for v in by_step.values())


# An untrained policy scores about 20 on InvertedPendulum-v5 and the maximum is 1 000. With batch 64 and evaluations
# every 2 000 steps, SAC reached 1 000 at 16k (dense, seed 1) and 14k (dense, seed 2) steps, and EauDeSAC (K = 3,
# M = 2, P = 250, U_max = 30, seed 1) at 12k steps with a final critic sparsity of 0.26 (measured before committing).
LEARNED = 900.0


LEARN = ["--env-id", "InvertedPendulum-v5", "--batch-size", "64", "--learning-starts", "1000", "--total-timesteps", "20000",
         "--eval-frequency", "2000", "--eval-episodes", "3", "--checkpoint-interval", "0", "--seed", "1"]  # fmt: skip


@pytest.mark.slow
def test_dense_sac_learns_inverted_pendulum(tmp_path):
    run_dir = run_script(POLY, [*LEARN, "--final-sparsity", "0"], tmp_path, timeout=600)
    assert best_eval(run_dir) >= LEARNED


@pytest.mark.slow
def test_eaudesac_learns_inverted_pendulum_and_prunes(tmp_path):
    run_dir = run_script(
        EAUDE, [*LEARN, "--num-networks", "3", "--tournament-size", "2", "--pruning-period", "250", "--u-max", "30"],
        tmp_path, timeout=600,
    )  # fmt: skip
    assert best_eval(run_dir) >= LEARNED
    sparsity = [m["value"] for m in read_metrics(run_dir) if m["name"] == "sparsity/target"]
    assert sparsity[-1] > 0.1  # 0.26 measured


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


@pytest.mark.parametrize("module", [eaude, poly], ids=["eaudesac", "polyprune_sac"])
def test_keep_largest_is_the_stable_sort_mask(module) -> None:
    """The linear-time selection behind every mask gives the mask of a stable sort, at counts 0, 1, n - 1 and n,
    on magnitudes with many exact ties, on a single repeated value and over the whole float32 range."""
    select = jax.jit(module.keep_largest)
    for magnitudes in selection_cases():
        n = magnitudes.size
        for num_zeros in sorted({0, 1, n // 3, n // 2, n - 1, n}):
            mask = np.asarray(select(jnp.asarray(magnitudes), jnp.asarray(num_zeros)))
            np.testing.assert_array_equal(mask, stable_sort_mask(magnitudes, num_zeros), f"{n} {num_zeros}")
