"""Offline Atari scripts (EauDeCQL, PolyPruneCQL): the CQL loss against hand-computed values, every line of Algorithm 1
that applies offline (initialisation, the shared target, the cumulated losses, the population step: target = argmin L,
tournaments, Eq. 3 on copies with a fresh Adam state, loss reset), Eq. 2 and the pruning period, mask re-application,
the main loops' schedules on a tiny synthetic dataset, the loader block shared verbatim by both scripts, argument and
dataset errors, crash safety (Ctrl-C, torn logs, damaged checkpoints, divergence), and end-to-end runs on a tiny DQN
Replay Dataset written by tools/write_dqn_replay_dataset.py (saved model, checkpoint and resume)."""

import gzip
import importlib
import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

eaude = importlib.import_module("eaudecql_atari_jax")
poly = importlib.import_module("polyprune_cql_atari_jax")

# 2 checkpoints x 400 entries written, 300 loaded from each; 2 epochs of 40 gradient steps on the small network
TINY = [
    "--env-id", "Breakout-v5", "--transitions-per-checkpoint", "300", "--num-epochs", "2", "--steps-per-epoch", "40",
    "--network-size", "small", "--learning-rate", "1e-3",
]  # fmt: skip


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("dataset") / "Breakout" / "1"
    subprocess.run(
        [sys.executable, str(ROOT / "tools" / "write_dqn_replay_dataset.py"), "--env-id", "Breakout-v5",
         "--output-dir", str(folder), "--num-checkpoints", "2", "--transitions-per-checkpoint", "400"],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    return folder


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Subprocess environment sharing a JAX compilation cache: the runs compile the same programs (test speed only)."""
    cache = tmp_path_factory.mktemp("jax_cache")
    return {
        **os.environ,
        "JAX_COMPILATION_CACHE_DIR": str(cache),
        "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
        "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "-1",
    }


@pytest.fixture(autouse=True)
def pytest_signal_handlers():
    """main installs its own SIGINT/SIGTERM handlers (Ctrl-C saves a checkpoint): give pytest's back after each test."""
    saved = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    yield
    for signum, handler in saved.items():
        signal.signal(signum, handler)


def command(script: str, dataset: Path, out: Path, *argv: str) -> list[str]:
    return [sys.executable, str(ROOT / script), *TINY, "--dataset-dir", str(dataset), "--output-dir", str(out), *argv]


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def metric(run_dir: Path, name: str) -> list[tuple[int, float]]:
    return [(m["global_step"], m["value"]) for m in read_jsonl(run_dir / "metrics.jsonl") if m["name"] == name]


def saved_sparsity(path: Path) -> float:
    state = flax.serialization.msgpack_restore(path.read_bytes())
    kernels = [np.asarray(w) for w in jax.tree.leaves(state) if np.ndim(w) > 1]
    return sum((w == 0).sum() for w in kernels) / sum(w.size for w in kernels)


# ---------------------------------------------------------------------------------------------------------------------
# The CQL loss and the shared loader block
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("module", [eaude, poly], ids=["eaudecql", "polyprune_cql"])
def test_cql_loss_matches_hand_computed_value(module) -> None:
    q = jnp.array([[1.0, 2.0], [0.0, 0.0]])
    actions = jnp.array([1, 0])
    targets = jnp.array([1.5, 1.0])
    # TD: ((1.5 - 2)^2 + (1 - 0)^2) / 2 = 0.625
    # regulariser: (log(e^1 + e^2) - 2 + log 2 - 0) / 2 = (0.3132617 + 0.6931472) / 2 = 0.5032044
    loss, (td, regulariser) = module.cql_loss(q, actions, targets, 0.5)
    assert float(td) == pytest.approx(0.625)
    assert float(regulariser) == pytest.approx(0.5032044, abs=1e-6)
    assert float(loss) == pytest.approx(0.625 + 0.5 * 0.5032044, abs=1e-6)
    # alpha = 0 is the TD loss alone; the regulariser is zero only when the data's action dominates all others
    assert float(module.cql_loss(q, actions, targets, 0.0)[0]) == pytest.approx(0.625)
    peaked = jnp.array([[0.0, 50.0]])
    assert float(module.cql_loss(peaked, jnp.array([1]), jnp.array([50.0]), 1.0)[0]) == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("module", [eaude, poly], ids=["eaudecql", "polyprune_cql"])
def test_cql_alpha_default_is_0_1(module) -> None:
    assert module.Args().cql_alpha == 0.1  # Ceron et al. 2024


def test_loader_block_is_identical_in_both_scripts() -> None:
    start = "# ---- DQN Replay Dataset (Agarwal et al. 2020)"
    end = "# ---- end of the DQN Replay Dataset section"
    blocks = []
    for script in ("eaudecql_atari_jax.py", "polyprune_cql_atari_jax.py"):
        text = (ROOT / script).read_text()
        assert text.count(start) == 1 and text.count(end) == 1
        blocks.append(text[text.index(start) : text.index(end)])
    assert blocks[0] == blocks[1]
    assert "def load_dqn_replay_dataset(" in blocks[0] and "def sample_dqn_replay_batch(" in blocks[0]


# ---------------------------------------------------------------------------------------------------------------------
# Alg. 1 offline (EauDeCQL): initialisation, one gradient step for the population, the population step
# ---------------------------------------------------------------------------------------------------------------------

NETWORK = eaude.QNetwork(action_dim=4, head_width=32)  # Breakout's 4 actions, the small head
GAMMA, ALPHA = 0.5, 0.5  # far from the defaults, so a dropped factor shows
OPTIMIZER = optax.adam(1e-3)
_TRAIN_STEPS: dict = {}


def train_step(layout: str):
    """One jitted step per script and layout for the whole module (compiling is the slow part on 2 shared cores)."""
    if layout not in _TRAIN_STEPS:
        if layout == "single":
            _TRAIN_STEPS[layout] = poly.make_train_step(NETWORK, OPTIMIZER, GAMMA, ALPHA)
        else:
            _TRAIN_STEPS[layout] = eaude.make_train_step(NETWORK, OPTIMIZER, GAMMA, ALPHA, layout)
    return _TRAIN_STEPS[layout]


def tree_equal(a, b) -> bool:
    return all(
        np.array_equal(np.asarray(x), np.asarray(y))
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
    )


def adam_count(opt_state) -> np.ndarray:
    return np.asarray(opt_state[0].count)  # optax.adam = (ScaleByAdamState(count, mu, nu), EmptyState())


def random_batch(rng: np.random.Generator, batch_size: int = 8) -> dict:
    """A batch as the loader returns it (bool terminals), converted the way main converts it."""
    return eaude.to_device_batch(
        {
            "observations": rng.integers(0, 255, (batch_size, 4, 84, 84), dtype=np.uint8),
            "actions": rng.integers(4, size=batch_size).astype(np.int32),
            "rewards": rng.choice([-1.0, 0.0, 1.0], size=batch_size).astype(np.float32),
            "next_observations": rng.integers(0, 255, (batch_size, 4, 84, 84), dtype=np.uint8),
            "terminals": rng.random(batch_size) < 0.3,
        }
    )


@pytest.fixture(scope="module")
def learner3() -> dict:
    return eaude.init_learner(NETWORK, OPTIMIZER, jax.random.PRNGKey(0), 3, np.zeros((1, 4, 84, 84), np.uint8))


def test_init_learner_is_alg1_line1(learner3: dict) -> None:
    """K independent dense networks, each with a fresh Adam state, target = network psi = 0, L = 0."""
    assert set(learner3) == {"params", "masks", "opt_states", "target_params", "cumulated_losses", "key"}
    kernels = np.asarray(learner3["params"]["params"]["Dense_0"]["kernel"])
    assert kernels.shape[0] == 3
    for a, b in itertools.combinations(range(3), 2):
        assert not np.allclose(kernels[a], kernels[b])  # independently initialised
    assert all(np.asarray(m).all() for m in jax.tree.leaves(learner3["masks"]))
    assert tree_equal(learner3["target_params"], eaude.take(learner3["params"], 0))
    assert np.asarray(learner3["cumulated_losses"]).tolist() == [0.0, 0.0, 0.0]
    assert adam_count(learner3["opt_states"]).tolist() == [0, 0, 0]


def shared_target_batch(module) -> dict:
    """Loader-style batch (bool terminals) converted by the script's own `to_device_batch`, as main does."""
    return module.to_device_batch(
        {
            "observations": np.zeros((4, 4, 84, 84), np.uint8),
            "actions": np.array([0, 1, 2, 3], np.int32),
            "rewards": np.array([1.0, -1.0, 0.0, 1.0], np.float32),
            "next_observations": np.zeros((4, 4, 84, 84), np.uint8),
            "terminals": np.array([False, True, False, True]),
        }
    )


def zero_network_with_output_bias(learner3: dict, bias: list[float]) -> dict:
    """A network whose Q-values are `bias` for every state (all weights zero)."""
    params = jax.tree.map(jnp.zeros_like, eaude.take(learner3["params"], 0))
    params["params"]["Dense_1"]["bias"] = jnp.array(bias)
    return params


# y = r + gamma (1 - terminal) max_a' Qbar(s', a') with Qbar = [5, 7, 1, 2] everywhere: y = [4.5, -1, 3.5, 1]. The online
# networks are zero (Q = 0): TD = mean(y^2) = 34.5 / 4 = 8.625, regulariser = logsumexp(0, 0, 0, 0) - 0 = log 4.
HAND_TD = 8.625
HAND_CQL = 8.625 + ALPHA * np.log(4.0)


@pytest.mark.parametrize("layout", ["loop", "vmap"])
def test_eaudecql_step_shares_one_target_and_accumulates_the_cql_loss(layout: str, learner3: dict) -> None:
    """Alg. 1 l. 5-10: one mini-batch, the shared target computed with the target network (not an online one) and
    (1 - terminal), every network's own CQL loss on that whole batch, L_k += loss_k."""
    zero = zero_network_with_output_bias(learner3, [0.0, 0.0, 0.0, 0.0])
    population = jax.tree.map(lambda x: jnp.stack([x, x]), zero)
    learner = {
        "params": population,
        "masks": jax.tree.map(lambda x: jnp.ones_like(x, bool), population),
        "opt_states": jax.vmap(OPTIMIZER.init)(population),
        "target_params": zero_network_with_output_bias(learner3, [5.0, 7.0, 1.0, 2.0]),
        "cumulated_losses": jnp.array([1.0, 2.0]),
    }
    after, (losses, td_losses) = train_step(layout)(learner, shared_target_batch(eaude))
    np.testing.assert_allclose(np.asarray(td_losses), [HAND_TD, HAND_TD], rtol=1e-6)
    np.testing.assert_allclose(np.asarray(losses), [HAND_CQL, HAND_CQL], rtol=1e-6)
    np.testing.assert_allclose(np.asarray(after["cumulated_losses"]), [1.0 + HAND_CQL, 2.0 + HAND_CQL], rtol=1e-6)
    assert tree_equal(after["target_params"], learner["target_params"])  # only l. 12 moves the target
    assert adam_count(after["opt_states"]).tolist() == [1, 1]


def test_polyprune_cql_step_bootstraps_from_the_target_network(learner3: dict) -> None:
    params = zero_network_with_output_bias(learner3, [0.0, 0.0, 0.0, 0.0])
    masks = jax.tree.map(lambda x: jnp.ones_like(x, bool), params)
    target = zero_network_with_output_bias(learner3, [5.0, 7.0, 1.0, 2.0])
    _, _, loss, td_loss = train_step("single")(params, OPTIMIZER.init(params), masks, target, shared_target_batch(poly))
    assert float(td_loss) == pytest.approx(HAND_TD, rel=1e-6)
    assert float(loss) == pytest.approx(HAND_CQL, rel=1e-6)


@pytest.mark.parametrize("layout", ["loop", "vmap"])
def test_eaudecql_step_reapplies_masks_and_matches_single_network_steps(layout: str, learner3: dict) -> None:
    """Network 1 (half pruned) of a population of 2 follows the same path as PolyPruneCQL's single-network step on
    the same batches: its own gradient, its own Adam state, its mask re-applied after every Adam step."""
    params = eaude.take(learner3["params"], np.array([0, 1]))
    per_network = [eaude.magnitude_masks(eaude.take(params, k), 0.5 * k, "erk") for k in range(2)]
    masks = jax.tree.map(lambda *m: jnp.stack(m), *per_network)
    params = eaude.apply_masks(params, masks)
    learner = {
        "params": params,
        "masks": masks,
        "opt_states": jax.vmap(OPTIMIZER.init)(params),
        "target_params": learner3["target_params"],
        "cumulated_losses": jnp.zeros(2),
    }
    network_1, state_1, total_1 = eaude.take(params, 1), OPTIMIZER.init(eaude.take(params, 1)), 0.0
    rng = np.random.default_rng(0)
    for _ in range(3):
        batch = random_batch(rng)
        learner, _ = train_step(layout)(learner, batch)
        network_1, state_1, loss, _ = train_step("single")(
            network_1, state_1, per_network[1], learner["target_params"], batch
        )
        total_1 += float(loss)
    for w, m in zip(jax.tree.leaves(learner["params"]), jax.tree.leaves(masks), strict=True):
        assert np.all(np.asarray(w)[~np.asarray(m)] == 0)
    for w, m in zip(jax.tree.leaves(network_1), jax.tree.leaves(per_network[1]), strict=True):
        assert np.all(np.asarray(w)[~np.asarray(m)] == 0)
    assert eaude.measured_sparsity(eaude.take(learner["params"], 1)) == pytest.approx(0.5, abs=1e-5)
    assert float(learner["cumulated_losses"][1]) == pytest.approx(total_1, rel=1e-4)
    for a, b in zip(jax.tree.leaves(network_1), jax.tree.leaves(eaude.take(learner["params"], 1)), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-3, atol=1e-5)


def population_args(**overrides) -> "eaude.Args":
    return eaude.Args(**{"num_networks": 3, "tournament_size": 3, "u_max": 3.0, "s_max": 0.1, **overrides})


def trained_population(learner3: dict, losses: list[float]) -> tuple[dict, np.ndarray]:
    """The initial population with network 1 pruned to 30 % and Adam states told apart: network k has made k + 1
    steps and moments k + 1."""
    params = learner3["params"]
    pruned = eaude.magnitude_masks(eaude.take(params, 1), 0.3, "erk")
    masks = jax.tree.map(lambda x, v: x.at[1].set(v), learner3["masks"], pruned)
    opt_states = jax.tree.map(lambda x: x + jnp.arange(1, 4).reshape(-1, *[1] * (x.ndim - 1)), learner3["opt_states"])
    learner = {"params": eaude.apply_masks(params, masks), "masks": masks, "opt_states": opt_states}
    return {**learner3, **learner, "cumulated_losses": jnp.array(losses)}, np.array([0.0, 0.3, 0.0])


def test_population_step_is_alg1_lines_12_to_16(learner3: dict) -> None:
    """M = K: every tournament is won by the best network (index 1), so slot 0 is network 1 itself and slots 1, 2 are
    its copies, pruned further by Eq. 3 with a fresh Adam state; the target is network 1 as it was; L = 0 after."""
    learner, sparsities = trained_population(learner3, [2.0, 1.0, 3.0])
    args = population_args(target_network_frequency=10, s_max=0.5)
    new, new_sparsities, event = eaude.population_step(
        learner, sparsities, 40, 100, args, OPTIMIZER, np.random.default_rng(0)
    )
    take = eaude.take
    assert tree_equal(new["target_params"], take(learner["params"], 1))  # l. 12: psi = argmin L
    assert tree_equal(take(new["params"], 0), take(learner["params"], 1))  # elitist slot: params, mask, Adam state
    assert tree_equal(take(new["masks"], 0), take(learner["masks"], 1))
    assert tree_equal(take(new["opt_states"], 0), take(learner["opt_states"], 1))
    assert adam_count(new["opt_states"]).tolist() == [2, 0, 0]
    # Eq. 3 for the copies: the same generator draws the K - 1 tournaments (M of K each), then one U per copy; with
    # t' - t = T = 10 and t_final - t = 60 the step is U (1 - 0.3) / 6 <= 0.35, under the cap (1 - 0.3) S_max = 0.35
    replay = np.random.default_rng(0)
    for _ in range(2):
        replay.choice(3, size=3, replace=False)
    expected = [0.3] + [0.3 + replay.uniform(0.0, 3.0) * 0.7 / 6 for _ in range(2)]
    np.testing.assert_allclose(new_sparsities, expected, rtol=1e-12)
    shapes = eaude.prunable_shapes(take(learner["params"], 1))
    parent = [np.asarray(w) for w in jax.tree.leaves(take(learner["params"], 1)) if w.ndim > 1]
    for slot in (1, 2):
        expected_zeros = eaude.layer_zero_counts(shapes, float(new_sparsities[slot]), "erk")
        copy, copy_masks = take(new["params"], slot), take(new["masks"], slot)
        kernels = [np.asarray(w) for w in jax.tree.leaves(copy) if w.ndim > 1]
        mask_kernels = [np.asarray(m) for m in jax.tree.leaves(copy_masks) if m.ndim > 1]
        assert [int((w == 0).sum()) for w in kernels] == expected_zeros
        assert [int((~m).sum()) for m in mask_kernels] == expected_zeros
        for w, m, p in zip(kernels, mask_kernels, parent, strict=True):
            np.testing.assert_array_equal(w, np.where(m, p, 0.0))  # the parent's weights, pruned
            assert m.all() or np.abs(p[m]).min() >= np.abs(p[~m]).max()  # by magnitude (ERK keeps some dense)
        assert all(not np.asarray(x).any() for x in jax.tree.leaves(take(new["opt_states"], slot)))  # fresh Adam
    assert np.asarray(new["cumulated_losses"]).tolist() == [0.0, 0.0, 0.0]  # l. 16
    assert new["cumulated_losses"].dtype == learner["cumulated_losses"].dtype
    assert event == {
        "global_step": 40,
        "losses": [2.0, 1.0, 3.0],
        "sparsities_before": [0.0, 0.3, 0.0],
        "target_index": 1,
        "parents": [1, 1, 1],
        "sparsities_after": new_sparsities.tolist(),
    }


def test_population_step_counts_nan_as_the_worst_loss(learner3: dict) -> None:
    learner, sparsities = trained_population(learner3, [np.nan, 2.0, 1.5])
    new, _, event = eaude.population_step(
        learner, sparsities, 40, 100, population_args(), OPTIMIZER, np.random.default_rng(0)
    )
    assert event["target_index"] == 2 and event["parents"] == [2, 2, 2]
    assert tree_equal(new["target_params"], eaude.take(learner["params"], 2))


def test_tournament_keeps_the_best_in_slot_zero_and_draws_m_without_replacement() -> None:
    rng = np.random.default_rng(0)
    for _ in range(50):  # M = 1: the other slots are uniform draws, slot 0 is still the best (elitism)
        losses = rng.random(5)
        assert eaude.tournament_selection(losses, 1, rng)[0] == np.argmin(losses)
    # K = 5, M = 3, losses ranked 1 < 2 < 0 < 4 < 3: a tournament is won by the best of 3 drawn without replacement.
    # P(1 wins) = P(1 drawn) = 3/5; P(2 wins) = C(3,2)/C(5,3) = 3/10; P(0 wins) = 1/10; 3 and 4 can never win.
    losses = np.array([3.0, 1.0, 2.0, 5.0, 4.0])
    winners = np.concatenate([eaude.tournament_selection(losses, 3, rng)[1:] for _ in range(3000)])
    np.testing.assert_allclose(np.bincount(winners, minlength=5) / len(winners), [0.1, 0.6, 0.3, 0, 0], atol=0.015)


def test_exploration_eq3_hand_computed() -> None:
    # s = 0.2, t = 4000, t_final = 10 000, T = 1000: the line to (t_final, 1) gains 0.8 * 1000 / 6000 = 2/15 per T
    assert eaude.exploration_sparsity(0.2, 4000, 10_000, 1000, 1.5, s_max=0.5) == pytest.approx(0.2 + 1.5 * 2 / 15)
    assert eaude.exploration_sparsity(0.2, 4000, 10_000, 1000, 3.0, s_max=0.1) == pytest.approx(0.2 + 0.8 * 0.1)


def test_exploration_draws_u_uniformly_in_0_u_max_for_copies_only() -> None:
    """Eq. 3's U ~ U(0, U_max): with no speed cap, a copy's step divided by (1 - s)(t' - t)/(t_final - t) is U."""
    rng = np.random.default_rng(4)
    sparsities = np.array([0.1, 0.3, 0.5, 0.2, 0.0])
    drawn = []
    for _ in range(200):
        losses = rng.random(5)
        parents, after, is_copy = eaude.plan_next_population(
            losses, sparsities, 4000, 10_000, 1000, 3, u_max=3.0, s_max=1.0, rng=rng
        )
        before = sparsities[parents]
        originals = np.array([list(parents).index(parent) == slot for slot, parent in enumerate(parents)])
        np.testing.assert_array_equal(is_copy, ~originals)  # a network chosen c times: 1 original, c - 1 copies
        np.testing.assert_array_equal(after[originals], before[originals])  # originals keep their sparsity
        drawn += ((after - before)[is_copy] / ((1 - before[is_copy]) * 1000 / 6000)).tolist()
    assert len(drawn) > 300 and min(drawn) >= 0 and max(drawn) <= 3.0
    assert min(drawn) < 0.1 and max(drawn) > 2.9 and np.mean(drawn) == pytest.approx(1.5, abs=0.15)


# ---------------------------------------------------------------------------------------------------------------------
# PolyPruneCQL: Eq. 2
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "step, expected",
    [(0, 0.0), (200, 0.0), (350, 0.9 * (1 - 0.75**3)), (500, 0.9 * (1 - 0.5**3)), (800, 0.9), (1000, 0.9)],
)
def test_polynomial_schedule_eq2(step: int, expected: float) -> None:
    # s_F = 0.9, t_start = 200, t_end = 800, n = 3
    assert poly.polynomial_sparsity(step, 0.9, 200, 800, 3.0) == pytest.approx(expected)


# ---------------------------------------------------------------------------------------------------------------------
# The main loops on a tiny synthetic dataset, in-process: what each gradient step and each period receives
# ---------------------------------------------------------------------------------------------------------------------

# 2 epochs of 6 gradient steps (t_final = 12), T = 3, batches of 4, the small network, no evaluation
LOOP = [
    "--env-id", "Breakout-v5", "--transitions-per-checkpoint", "64", "--num-epochs", "2", "--steps-per-epoch", "6",
    "--target-network-frequency", "3", "--batch-size", "4", "--network-size", "small", "--eval-episodes", "0",
    "--checkpoint-interval", "0",
]  # fmt: skip


@pytest.fixture(scope="module")
def synthetic_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One DQN Replay checkpoint of 64 random entries with two game overs (no Dopamine padding)."""
    folder = tmp_path_factory.mktemp("synthetic") / "replay_logs"
    folder.mkdir()
    rng = np.random.default_rng(0)
    arrays = {
        "observation": rng.integers(0, 256, (64, 84, 84), dtype=np.uint8),
        "action": rng.integers(4, size=64).astype(np.int32),
        "reward": rng.choice([-1.0, 0.0, 1.0], size=64).astype(np.float32),
        "terminal": np.isin(np.arange(64), [20, 45]).astype(np.uint8),
    }
    for name, array in arrays.items():
        with gzip.open(folder / f"$store$_{name}_ckpt.0.gz", "wb", compresslevel=1) as f:
            np.save(f, array)
    return folder


def record_train_steps(module, monkeypatch: pytest.MonkeyPatch) -> list[tuple]:
    """Every call of the script's jitted train step, as (inputs, outputs)."""
    calls: list[tuple] = []
    make_train_step = module.make_train_step

    def recording_make_train_step(*args, **kwargs):
        step = make_train_step(*args, **kwargs)

        def recorded(*inputs):
            outputs = step(*inputs)
            calls.append((inputs, outputs))
            return outputs

        return recorded

    monkeypatch.setattr(module, "make_train_step", recording_make_train_step)
    return calls


def test_eaudecql_main_renews_the_population_every_t_steps(
    tmp_path: Path, synthetic_dataset: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Alg. 1 l. 11: population_step runs after every T-th gradient step with t_final = num_epochs * steps_per_epoch;
    it sees L_k = the sum of the T CQL losses since the previous one, and the next step trains its result."""
    steps = record_train_steps(eaude, monkeypatch)
    periods: list[tuple] = []
    population_step = eaude.population_step

    def recorded_population_step(learner, sparsities, step, total_steps, *rest):
        result = population_step(learner, sparsities, step, total_steps, *rest)
        periods.append((learner, step, total_steps, result))
        return result

    monkeypatch.setattr(eaude, "population_step", recorded_population_step)
    argv = [*LOOP, "--num-networks", "2", "--tournament-size", "2", "--u-max", "30", "--s-max", "0.2"]
    eaude.main([*argv, "--dataset-dir", str(synthetic_dataset), "--output-dir", str(tmp_path)])
    assert len(steps) == 12
    assert [(step, total) for _, step, total, _ in periods] == [(3, 12), (6, 12), (9, 12), (12, 12)]
    for period, (learner, step, _, (renewed, _, _)) in enumerate(periods):
        cql_losses = sum(np.asarray(outputs[1][0]) for _, outputs in steps[step - 3 : step])
        np.testing.assert_allclose(np.asarray(learner["cumulated_losses"]), cql_losses, rtol=1e-5)
        if period < 3:
            assert steps[step][0][0] is renewed  # the next gradient step trains the renewed population
    (run_dir,) = tmp_path.iterdir()
    events = read_jsonl(run_dir / "population.jsonl")
    assert [e["global_step"] for e in events] == [3, 6, 9, 12]
    for previous, current in itertools.pairwise(events):
        assert previous["sparsities_after"] == current["sparsities_before"]
    assert [step for step, _ in metric(run_dir, "sparsity/target")] == [0, 3, 6, 9, 12]
    # logged at t_final: the mean over the K networks of the last step's losses; CQL > TD since alpha > 0
    last_cql, last_td = (np.asarray(loss) for loss in steps[-1][1][1])
    assert metric(run_dir, "losses/cql_loss") == [(12, pytest.approx(float(last_cql.mean()), rel=1e-6))]
    assert metric(run_dir, "losses/td_loss") == [(12, pytest.approx(float(last_td.mean()), rel=1e-6))]
    assert last_cql.mean() > last_td.mean()


@pytest.mark.parametrize("final_sparsity", [0.9, 0.0], ids=["polyprune", "dense_cql"])
def test_polyprune_cql_main_prunes_every_period_and_copies_the_target_every_t(
    final_sparsity: float, tmp_path: Path, synthetic_dataset: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Eq. 2 with t_final = 12, t_start = 3, t_end = 9, n = 3, the mask recomputed every 2 gradient steps and applied
    to the weights at once; the target copies the online network after every T = 3 steps. s_F = 0 (the dense CQL
    baseline) stays dense."""
    steps = record_train_steps(poly, monkeypatch)
    argv = [*LOOP, "--pruning-period", "2", "--pruning-start", "0.25", "--pruning-end", "0.75", "--save-model"]
    argv += ["--final-sparsity", str(final_sparsity), "--dataset-dir", str(synthetic_dataset)]
    poly.main([*argv, "--output-dir", str(tmp_path)])
    assert len(steps) == 12
    (params_0, _, _, target_0, _), _ = steps[0]
    assert tree_equal(target_0, params_0)  # the target starts as a copy of the online network
    shapes = poly.prunable_shapes(params_0)
    for t, ((params, _, masks, target, _), _) in enumerate(steps):  # t gradient steps done before this one
        pruned_at = t - t % 2  # the last pruning step (Eq. 2 is 0 before t_start)
        expected = poly.polynomial_sparsity(pruned_at, final_sparsity, 3, 9, 3.0)
        mask_zeros = [int((~np.asarray(m)).sum()) for m in jax.tree.leaves(masks) if m.ndim > 1]
        assert mask_zeros == poly.layer_zero_counts(shapes, expected, "erk"), t
        for w, m in zip(jax.tree.leaves(params), jax.tree.leaves(masks), strict=True):
            assert not np.asarray(w)[~np.asarray(m)].any(), t  # every gradient step starts from masked weights
        if t >= 3:  # the online network as it was right after gradient step t - t % 3 (before that step's pruning)
            assert tree_equal(target, steps[t - t % 3 - 1][1][0]), t
    (run_dir,) = tmp_path.iterdir()
    assert metric(run_dir, "sparsity/online") == [(12, pytest.approx(final_sparsity))]
    target_sparsity = metric(run_dir, "sparsity/target")
    assert [step for step, _ in target_sparsity] == [0, 3, 6, 9, 12]
    if final_sparsity == 0:
        assert [value for _, value in target_sparsity] == [0.0] * 5
    _, (_, _, last_cql, last_td) = steps[-1]
    assert metric(run_dir, "losses/cql_loss") == [(12, pytest.approx(float(last_cql), rel=1e-6))]
    assert metric(run_dir, "losses/td_loss") == [(12, pytest.approx(float(last_td), rel=1e-6))]
    assert last_cql > last_td  # alpha > 0
    saved = run_dir / "polyprune_cql_atari_jax.cleanrl_model"
    assert saved_sparsity(saved) == pytest.approx(target_sparsity[-1][1], abs=1e-9)


# ---------------------------------------------------------------------------------------------------------------------
# Argument and dataset errors: one `error:` line, exit code 2, before any JAX work
# ---------------------------------------------------------------------------------------------------------------------


def parse_error(module, argv: list[str], capsys: pytest.CaptureFixture) -> str:
    with pytest.raises(SystemExit) as exit_:
        module.parse_args(argv)
    assert exit_.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    return lines[0]


def test_argument_and_dataset_errors(tmp_path: Path, dataset_dir: Path, capsys: pytest.CaptureFixture) -> None:
    data = ["--env-id", "Breakout-v5", "--dataset-dir", str(dataset_dir), "--transitions-per-checkpoint", "300"]
    assert parse_error(eaude, ["--env-id", "Breakout-v5"], capsys).startswith("error: --dataset-dir: required")
    missing = parse_error(eaude, [*data, "--dataset-dir", str(tmp_path / "nowhere")], capsys)
    assert missing.startswith("error: --dataset-dir:") and "is not a folder" in missing
    partial = tmp_path / "partial" / "replay_logs"
    shutil.copytree(dataset_dir / "replay_logs", partial)
    (partial / "$store$_reward_ckpt.1.gz").unlink()
    lacks = parse_error(poly, [*data, "--dataset-dir", str(partial.parent)], capsys)  # the last flag wins
    assert lacks.startswith("error: --dataset-dir: checkpoint 1") and "$store$_reward_ckpt.1.gz" in lacks
    assert parse_error(eaude, [*data, "--dataset-checkpoints", "0", "7"], capsys).startswith(
        "error: --dataset-checkpoints:"
    )
    assert parse_error(eaude, [*data, "--transitions-per-checkpoint", "500"], capsys).startswith(
        "error: --transitions-per-checkpoint:"
    )
    assert parse_error(eaude, [*data, "--num-networks", "0"], capsys) == "error: --num-networks: K must be at least 1"
    assert (
        parse_error(eaude, [*data, "--num-networks", "2", "--tournament-size", "3"], capsys)
        == "error: --tournament-size: M must be in [1, K]"
    )
    assert (
        parse_error(poly, [*data, "--final-sparsity", "1"], capsys) == "error: --final-sparsity: s_F must be in [0, 1)"
    )
    assert parse_error(poly, [*data, "--num-epochs", "-1"], capsys) == "error: --num-epochs: must be positive"
    assert parse_error(eaude, [*data, "--cql-alpha", "-0.1"], capsys).startswith("error: --cql-alpha:")


def test_missing_dataset_exits_2_without_traceback_and_writes_nothing(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "polyprune_cql_atari_jax.py"), "--env-id", "Breakout-v5", "--dataset-dir",
         str(tmp_path / "absent"), "--output-dir", "runs"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [f"error: --dataset-dir: {tmp_path / 'absent'} is not a folder"]
    assert not (tmp_path / "runs").exists()


def test_actions_outside_the_games_action_set_exit_2(tmp_path: Path, dataset_dir: Path) -> None:
    """Breakout has 4 actions: a dataset whose actions reach 5 is of another game (checked when loading)."""
    folder = tmp_path / "other" / "replay_logs"
    shutil.copytree(dataset_dir / "replay_logs", folder)
    with gzip.open(folder / "$store$_action_ckpt.0.gz", "rb") as f:
        actions = np.load(f)
    actions[actions > 0] = 5
    with gzip.open(folder / "$store$_action_ckpt.0.gz", "wb") as f:
        np.save(f, actions)
    with pytest.raises(SystemExit) as exit_:
        eaude.load_dataset(eaude.Args(env_id="Breakout-v5", dataset_dir=str(folder), transitions_per_checkpoint=300))
    assert exit_.value.code == 2


# ---------------------------------------------------------------------------------------------------------------------
# Crash safety: Ctrl-C, torn logs, damaged checkpoints, divergence, impossible flags, each met the way a user meets it
# ---------------------------------------------------------------------------------------------------------------------

SCRIPTS = [eaude, poly]
SCRIPT_IDS = ["eaudecql", "polyprune_cql"]
EAUDE_K2 = ["--num-networks", "2", "--tournament-size", "2", "--u-max", "30", "--s-max", "0.2"]


def loop_argv(module, dataset: Path, out: Path, *argv: str) -> list[str]:
    """LOOP (t_final = 12, T = 3) with a population of 2 for EauDeCQL and a pruning period of 2 for PolyPruneCQL."""
    extra = EAUDE_K2 if module is eaude else ["--pruning-period", "2"]
    return [*LOOP, *extra, "--dataset-dir", str(dataset), "--output-dir", str(out), *argv]


def exit_code(module, argv: list[str]) -> int:
    with pytest.raises(SystemExit) as exit_:
        module.main(argv)
    return exit_.value.code


def checkpoint_step(run_dir: Path, name: str = "checkpoint") -> int:
    return json.loads((run_dir / name / "meta.json").read_text())["global_step"]


def strict_jsonl(path: Path) -> list[dict]:
    """Every line parsed by strict JSON: a bare NaN or Infinity fails."""

    def reject(constant: str) -> None:
        raise AssertionError(f"bare {constant} in {path.name}")

    return [json.loads(line, parse_constant=reject) for line in path.read_text().splitlines()]


def assert_loop_logs_complete(run_dir: Path) -> None:
    """Every logging step of a LOOP run once, none missing: the target every T = 3, the losses at t_final = 12."""
    metrics = strict_jsonl(run_dir / "metrics.jsonl")
    for name in {m["name"] for m in metrics}:
        steps = [m["global_step"] for m in metrics if m["name"] == name]
        assert steps == sorted(set(steps)), f"{name} repeats a step: {steps}"
    assert [step for step, _ in metric(run_dir, "sparsity/target")] == [0, 3, 6, 9, 12]
    assert [step for step, _ in metric(run_dir, "losses/cql_loss")] == [12]
    assert [step for step, _ in metric(run_dir, "charts/SPS")] == [12]
    if (run_dir / "population.jsonl").exists():
        assert [e["global_step"] for e in strict_jsonl(run_dir / "population.jsonl")] == [3, 6, 9, 12]


@pytest.mark.parametrize("module", SCRIPTS, ids=SCRIPT_IDS)
def test_ctrl_c_checkpoints_and_a_torn_log_and_a_damaged_checkpoint_still_resume(
    module, tmp_path: Path, synthetic_dataset: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    """A real SIGINT to this process during gradient step 10 (checkpoints every 4 steps): the step finishes, a
    checkpoint is saved, exit 130 with a --resume line. Then a kill's damage: a torn last log line and the newest
    checkpoint cut in half: --resume falls back to checkpoint.old/ (step 8) with no step logged twice or missing.
    With both checkpoints damaged, --resume is one error line naming the file, exit 2."""
    sample = module.sample_dqn_replay_batch
    calls = []

    def sample_then_ctrl_c(*args, **kwargs):
        calls.append(None)
        if len(calls) == 10:
            os.kill(os.getpid(), signal.SIGINT)  # as if Ctrl-C were pressed during gradient step 10
        return sample(*args, **kwargs)

    monkeypatch.setattr(module, "sample_dqn_replay_batch", sample_then_ctrl_c)
    assert exit_code(module, loop_argv(module, synthetic_dataset, tmp_path, "--checkpoint-interval", "4")) == 130
    stderr = capsys.readouterr().err.strip().splitlines()
    (run_dir,) = tmp_path.iterdir()
    assert stderr == [
        f"interrupted at step 10; checkpoint saved, continue with: python {module.__name__}.py --resume {run_dir}"
    ]
    assert len(calls) == 10  # no gradient step after the interrupted one
    assert (checkpoint_step(run_dir), checkpoint_step(run_dir, "checkpoint.old")) == (10, 8)
    monkeypatch.setattr(module, "sample_dqn_replay_batch", sample)

    with open(run_dir / "metrics.jsonl", "a") as f:
        f.write('{"global_step": 11, "name": "losses/cq')  # a kill in the middle of a log write
    state = run_dir / "checkpoint" / "state.msgpack"
    state.write_bytes(state.read_bytes()[: state.stat().st_size // 2])  # a checkpoint cut in half
    module.main(["--resume", str(run_dir)])
    out, err = capsys.readouterr()
    assert err.strip().splitlines() == [
        f"warning: {state} is damaged ({err.split('damaged (')[1].split(');')[0]}); resuming from the previous "
        f"checkpoint {run_dir / 'checkpoint.old'}"
    ]
    # the torn line and step 9's sparsity/target (EauDeCQL: also population/sparsity_max and the population event)
    dropped = 4 if module is eaude else 2
    assert f"resume: dropped {dropped} log lines written after the checkpoint or torn by a kill" in out
    assert f"resumed {run_dir.name} at step 8" in out
    assert_loop_logs_complete(run_dir)
    assert checkpoint_step(run_dir) == 12

    for name in ("checkpoint", "checkpoint.old"):  # nothing left to fall back to: one error line naming the file
        state = run_dir / name / "state.msgpack"
        state.write_bytes(state.read_bytes()[:100])
    assert exit_code(module, ["--resume", str(run_dir)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.splitlines() == [err] and err.startswith("error: --resume:")
    assert f"{run_dir / 'checkpoint' / 'state.msgpack'} is damaged" in err
    assert f"{run_dir / 'checkpoint.old' / 'state.msgpack'} is damaged" in err


def test_ctrl_c_during_the_last_gradient_step_finishes_the_run(
    tmp_path: Path, synthetic_dataset: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    """A resumed finished run adds nothing (no second final evaluation), so a Ctrl-C at t_final must not stop before
    the final model is saved: the run ends normally."""
    sample = poly.sample_dqn_replay_batch
    calls = []

    def sample_then_ctrl_c(*args, **kwargs):
        calls.append(None)
        if len(calls) == 12:
            os.kill(os.getpid(), signal.SIGINT)
        return sample(*args, **kwargs)

    monkeypatch.setattr(poly, "sample_dqn_replay_batch", sample_then_ctrl_c)
    poly.main(loop_argv(poly, synthetic_dataset, tmp_path, "--save-model"))
    assert capsys.readouterr().err == ""
    (run_dir,) = tmp_path.iterdir()
    assert (run_dir / "polyprune_cql_atari_jax.cleanrl_model").is_file()


@pytest.mark.parametrize("module", SCRIPTS, ids=SCRIPT_IDS)
def test_divergence_stops_the_run_with_one_line_and_strict_json(
    module, tmp_path: Path, synthetic_dataset: Path, capsys: pytest.CaptureFixture
) -> None:
    """--learning-rate 1e30: the first Adam step moves every weight by about 1e30, so the second step's loss is
    non-finite for every network: exit 3 with one error line, the loss logged as null, the step-1 checkpoint kept."""
    argv = loop_argv(module, synthetic_dataset, tmp_path, "--learning-rate", "1e30", "--checkpoint-interval", "1")
    assert exit_code(module, argv) == 3
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "loss is non-finite at step 2:" in lines[0]
    (run_dir,) = tmp_path.iterdir()
    strict_jsonl(run_dir / "metrics.jsonl")
    if (run_dir / "population.jsonl").exists():
        strict_jsonl(run_dir / "population.jsonl")
    assert metric(run_dir, "losses/cql_loss") == [(2, None)]
    assert checkpoint_step(run_dir) == 1  # no checkpoint is written after divergence


@pytest.mark.parametrize("module", SCRIPTS, ids=SCRIPT_IDS)
def test_impossible_seed_learning_rate_and_output_dir_are_one_error_line(
    module, tmp_path: Path, synthetic_dataset: Path, capsys: pytest.CaptureFixture
) -> None:
    data = ["--env-id", "Breakout-v5", "--dataset-dir", str(synthetic_dataset), "--transitions-per-checkpoint", "64"]
    assert parse_error(module, [*data, "--seed", "-1"], capsys) == "error: --seed: must be non-negative"
    for value in ("inf", "nan", "0"):
        assert (
            parse_error(module, [*data, "--learning-rate", value], capsys)
            == "error: --learning-rate: must be a positive finite number"
        )
    assert (
        parse_error(module, [*data, "--adam-eps", "inf"], capsys)
        == "error: --adam-eps: must be a positive finite number"
    )
    (tmp_path / "taken").write_text("a file")
    for output_dir in ("taken", "taken/runs"):  # the run folder is the first thing main() makes after the dataset
        with pytest.raises(SystemExit) as exit_:
            module.Run(module.parse_args([*data, "--output-dir", str(tmp_path / output_dir)]))
        assert exit_.value.code == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith(
            f"error: --output-dir: cannot create a run folder in '{tmp_path}/taken"
        )


# ---------------------------------------------------------------------------------------------------------------------
# End-to-end runs
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_eaudecql_prunes_and_resumes_to_the_same_result(tmp_path: Path, dataset_dir: Path, env: dict) -> None:
    """One reference run (checkpoint every epoch) is frozen after its first checkpoint and its folder copied; the copy
    is resumed and must end exactly like the reference: same counters, params, population and metrics, no step
    logged twice. The reference also checks Alg. 1 / Eq. 3 in population.jsonl and the saved model."""
    out = tmp_path / "runs"
    argv = command(
        "eaudecql_atari_jax.py", dataset_dir, out,
        "--target-network-frequency", "10", "--num-networks", "3", "--tournament-size", "2", "--u-max", "30",
        "--s-max", "0.1", "--checkpoint-interval", "40", "--save-model", "--eval-episodes", "1",
        "--eval-max-episode-steps", "30",
    )  # fmt: skip
    process = subprocess.Popen(argv, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.time() + 400
    while time.time() < deadline and not list(out.glob("*/checkpoint/meta.json")):
        assert process.poll() is None, process.communicate()
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGSTOP)  # freeze it while its folder is copied: the copy is "killed after epoch 1"
    (run_dir,) = out.iterdir()
    copy = tmp_path / "copy" / run_dir.name
    shutil.copytree(run_dir, copy, ignore=shutil.ignore_patterns("checkpoint.tmp", "checkpoint.old"))
    os.kill(process.pid, signal.SIGCONT)
    stdout, stderr = process.communicate(timeout=400)
    assert process.returncode == 0, stdout[-3000:] + stderr[-3000:]
    assert json.loads((copy / "checkpoint" / "meta.json").read_text())["global_step"] == 40

    # ---- the reference run: Alg. 1 and Eq. 3 in population.jsonl, target sparsity rising, saved model
    config = json.loads((run_dir / "config.json").read_text())
    assert config["args"]["num_networks"] == 3 and config["script"] == "eaudecql_atari_jax.py"
    names = {m["name"] for m in read_jsonl(run_dir / "metrics.jsonl")}
    assert {"losses/cql_loss", "losses/td_loss", "sparsity/target", "eval/episodic_return", "charts/SPS"} <= names
    assert "charts/episodic_return" not in names  # offline: no training episodes
    assert [step for step, _ in metric(run_dir, "eval/episodic_return")] == [40, 80]  # epoch 1, then the saved model
    events = read_jsonl(run_dir / "population.jsonl")
    assert [e["global_step"] for e in events] == list(range(10, 81, 10))  # every T gradient steps
    for e in events:
        losses, before, after, parents = (
            np.array(e[k]) for k in ("losses", "sparsities_before", "sparsities_after", "parents")
        )
        assert e["target_index"] == np.argmin(losses) == parents[0]  # Alg. 1 l. 12 and the elitist slot
        assert np.all(losses > 0)
        for slot, parent in enumerate(parents):
            if list(parents).index(parent) == slot:
                assert after[slot] == before[parent]  # an original keeps its sparsity
            else:  # a copy is pruned further, by at most S_max of its remaining weights (Eq. 3)
                assert before[parent] < after[slot] <= before[parent] + (1 - before[parent]) * 0.1 + 1e-12
    for previous, current in itertools.pairwise(events):
        assert previous["sparsities_after"] == current["sparsities_before"]
    sparsity = metric(run_dir, "sparsity/target")
    assert sparsity[0] == (0, 0.0) and sparsity[-1][1] > 0.05  # the target network got sparser
    assert saved_sparsity(run_dir / "eaudecql_atari_jax.cleanrl_model") == pytest.approx(sparsity[-1][1], abs=1e-9)

    # ---- resume the copy: it must end where the reference ended
    result = subprocess.run(
        [sys.executable, str(ROOT / "eaudecql_atari_jax.py"), "--resume", str(copy)],
        cwd=tmp_path, capture_output=True, text=True, timeout=600, env=env,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert f"resumed {run_dir.name} at step 40" in result.stdout
    final, reference = (json.loads((d / "checkpoint" / "meta.json").read_text()) for d in (copy, run_dir))
    for field in ("global_step", "next_target_update", "sparsities", "rng_state", "last_eval_return"):
        assert final[field] == reference[field], field
    assert final["global_step"] == 80
    assert (copy / "checkpoint" / "state.msgpack").read_bytes() == (
        run_dir / "checkpoint" / "state.msgpack"
    ).read_bytes()
    assert read_jsonl(copy / "population.jsonl") == events
    resumed, original = read_jsonl(copy / "metrics.jsonl"), read_jsonl(run_dir / "metrics.jsonl")
    assert [(m["global_step"], m["name"]) for m in resumed] == [(m["global_step"], m["name"]) for m in original]
    for a, b in zip(resumed, original, strict=True):
        if a["name"] != "charts/SPS":
            assert a["value"] == b["value"], a
    for name in ("sparsity/target", "losses/cql_loss", "charts/SPS"):
        steps = [m["global_step"] for m in resumed if m["name"] == name]
        assert steps == sorted(set(steps)), f"{name} repeats a step: {steps}"
    assert [m["time"] for m in resumed] == sorted(m["time"] for m in resumed)


@pytest.mark.slow
def test_eaudecql_ctrl_c_in_a_real_run_then_resume_from_the_previous_checkpoint(
    tmp_path: Path, synthetic_dataset: Path, env: dict
) -> None:
    """Ctrl-C to a real EauDeCQL process (checkpoints every 200 of 3 x 400 gradient steps): exit 130 with a --resume line
    and two checkpoints; a torn log line plus the newest checkpoint cut in half still resume, from checkpoint.old/,
    to complete logs; both checkpoints damaged is one error line naming the file, exit 2."""
    argv = [
        *LOOP, *EAUDE_K2, "--num-epochs", "3", "--steps-per-epoch", "400", "--target-network-frequency", "100", "--checkpoint-interval",
        "200", "--dataset-dir", str(synthetic_dataset), "--output-dir", "runs",
    ]  # fmt: skip
    script = [sys.executable, str(ROOT / "eaudecql_atari_jax.py")]
    process = subprocess.Popen(
        [*script, *argv], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
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
        f"interrupted at step {interrupted_at:,}; checkpoint saved, continue with: python eaudecql_atari_jax.py "
        f"--resume runs/{run_dir.name}"
    ]  # the run folder as the user gave it
    assert previous % 200 == 0 and 200 <= previous <= interrupted_at < 1200

    with open(run_dir / "metrics.jsonl", "a") as f:
        f.write('{"global_step": 99999, "name": "charts/SP')  # a kill in the middle of a log write
    state = run_dir / "checkpoint" / "state.msgpack"
    state.write_bytes(state.read_bytes()[: state.stat().st_size // 2])  # a checkpoint cut in half
    result = subprocess.run(
        [*script, "--resume", str(run_dir)], cwd=tmp_path, capture_output=True, text=True, timeout=600, env=env
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stderr.startswith(f"warning: {state} is damaged") and "previous checkpoint" in result.stderr
    assert f"resumed {run_dir.name} at step {previous:,}" in result.stdout and "resume: dropped" in result.stdout
    metrics = strict_jsonl(run_dir / "metrics.jsonl")
    for name in {m["name"] for m in metrics}:
        steps = [m["global_step"] for m in metrics if m["name"] == name]
        assert steps == sorted(set(steps)), f"{name} repeats a step"
    assert [step for step, _ in metric(run_dir, "charts/SPS")] == [1000, 1200]
    assert [step for step, _ in metric(run_dir, "losses/cql_loss")] == [1000, 1200]
    events = [e["global_step"] for e in strict_jsonl(run_dir / "population.jsonl")]
    assert events == list(range(100, 1201, 100))
    assert [step for step, _ in metric(run_dir, "sparsity/target")] == [0, *events]

    for name in ("checkpoint", "checkpoint.old"):  # nothing left to fall back to: one error line naming the file
        state = run_dir / name / "state.msgpack"
        state.write_bytes(state.read_bytes()[:100])
    result = subprocess.run(
        [*script, "--resume", str(run_dir)], cwd=tmp_path, capture_output=True, text=True, timeout=600, env=env
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]
    assert result.stderr.startswith("error: --resume:") and "state.msgpack is damaged" in result.stderr


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


@pytest.mark.parametrize("module", [eaude, poly], ids=["eaudecql", "polyprune_cql"])
def test_keep_largest_is_the_stable_sort_mask(module) -> None:
    """The linear-time selection behind every mask gives the mask of a stable sort, at counts 0, 1, n - 1 and n,
    on magnitudes with many exact ties, on a single repeated value and over the whole float32 range."""
    select = jax.jit(module.keep_largest)
    for magnitudes in selection_cases():
        n = magnitudes.size
        for num_zeros in sorted({0, 1, n // 3, n // 2, n - 1, n}):
            mask = np.asarray(select(jnp.asarray(magnitudes), jnp.asarray(num_zeros)))
            np.testing.assert_array_equal(mask, stable_sort_mask(magnitudes, num_zeros), f"{n} {num_zeros}")
