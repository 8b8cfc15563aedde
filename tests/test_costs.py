"""tools/costs.py: FLOP counts of small networks against hand counts, XLA's count of a matrix product, the sparse count
against the scripts' own masks, the per-update conventions, a finished run's schedule, the Markdown table beside the
paper's values, the child runs' command lines, and one-line CLI errors."""

from __future__ import annotations

import gzip
import importlib
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import costs
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
TOOL = ROOT / "tools" / "costs.py"

atari = importlib.import_module("eaudedqn_atari_jax")


class MLP(nn.Module):
    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = nn.relu(nn.Dense(4)(x))
        return nn.Dense(2)(x)


class ConvNet(nn.Module):
    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = nn.relu(nn.Conv(3, kernel_size=(3, 3), padding="VALID")(x))  # 6x6x2 -> 4x4x3
        x = nn.Conv(5, kernel_size=(2, 2), strides=(2, 2))(x)  # SAME, stride 2: 4x4x3 -> 2x2x5
        return nn.Dense(7, use_bias=False)(x.reshape((x.shape[0], -1)))  # 20 -> 7


# ---------------------------------------------------------------------------------------------------------------------
# Hand counts
# ---------------------------------------------------------------------------------------------------------------------


def test_mlp_layers_and_forward_flops_hand_count() -> None:
    layers = costs.network_layers(MLP(), np.zeros((1, 3), np.float32))
    assert [(layer.name, layer.kernel_shape, layer.bias, layer.positions) for layer in layers] == [
        ("Dense_0", (3, 4), 4, 1),
        ("Dense_1", (4, 2), 2, 1),
    ]
    # 3 -> 4: 12 multiply-adds + 4 bias additions; 4 -> 2: 8 multiply-adds + 2 bias additions
    assert costs.forward_flops(layers) == (2 * 12 + 4) + (2 * 8 + 2) == 46
    # only the nonzero weights count: 5 of 12 and 3 of 8 kept
    assert costs.forward_flops(layers, [5, 3]) == (2 * 5 + 4) + (2 * 3 + 2)


def test_conv_layers_and_forward_flops_hand_count() -> None:
    layers = costs.network_layers(ConvNet(), np.zeros((1, 6, 6, 2), np.float32))
    assert [(layer.kernel_shape, layer.bias, layer.positions) for layer in layers] == [
        ((3, 3, 2, 3), 3, 16),  # VALID 3x3 on 6x6: 4x4 output positions
        ((2, 2, 3, 5), 5, 4),  # stride 2 on 4x4: 2x2 output positions
        ((20, 7), 0, 1),  # no bias
    ]
    conv0 = 16 * (2 * 3 * 3 * 2 * 3 + 3)  # each output position: 54 multiply-adds, 3 bias additions
    conv1 = 4 * (2 * 2 * 2 * 3 * 5 + 5)
    dense = 2 * 20 * 7
    assert costs.forward_flops(layers) == conv0 + conv1 + dense == 1776 + 500 + 280
    assert costs.forward_flops(layers, [10, 0, 7]) == 16 * (2 * 10 + 3) + 4 * 5 + 2 * 7


def test_atari_q_network_hand_count() -> None:
    """The Nature CNN with SAME padding and the small head (32 units), 6 actions, for one (4, 84, 84) observation."""
    network = atari.QNetwork(action_dim=6, head_width=32)
    layers = costs.network_layers(network, np.zeros((1, 4, 84, 84), np.uint8))
    assert [layer.positions for layer in layers] == [21 * 21, 11 * 11, 11 * 11, 1, 1]
    hand = (
        21 * 21 * (2 * 8 * 8 * 4 * 32 + 32)
        + 11 * 11 * (2 * 4 * 4 * 32 * 64 + 64)
        + 11 * 11 * (2 * 3 * 3 * 64 * 64 + 64)
        + (2 * 7744 * 32 + 32)
        + (2 * 32 * 6 + 6)
    )
    assert costs.forward_flops(layers) == hand == 24_601_926


# ---------------------------------------------------------------------------------------------------------------------
# Sparse counts
# ---------------------------------------------------------------------------------------------------------------------


def test_sparse_count_at_sparsity_uniform_hand_count() -> None:
    layers = costs.network_layers(MLP(), np.zeros((1, 3), np.float32))
    nnz = costs.nnz_at_sparsity(layers, 0.5, "uniform", atari.layer_zero_counts)
    assert nnz == [6, 4]
    assert costs.forward_flops(layers, nnz) == (2 * 6 + 4) + (2 * 4 + 2)
    # `global` depends on the weights: counted as uniform
    assert costs.nnz_at_sparsity(layers, 0.5, "global", atari.layer_zero_counts) == nnz


@pytest.mark.parametrize("sparsity", [0.3, 0.8, 0.95])
def test_sparse_count_equals_the_nonzeros_of_the_scripts_masks(sparsity: float) -> None:
    """The ERK split by shape gives exactly the nonzeros that the script's magnitude pruning leaves."""
    network = atari.QNetwork(action_dim=6, head_width=32)
    dummy = np.zeros((1, 4, 84, 84), np.uint8)
    params = network.init(jax.random.PRNGKey(0), dummy)
    pruned = atari.apply_masks(params, atari.magnitude_masks(params, sparsity, "erk"))
    layers = costs.network_layers(network, dummy)
    nnz = costs.nnz_at_sparsity(layers, sparsity, "erk", atari.layer_zero_counts)
    assert nnz == costs.nnz_of_params(pruned)
    assert sum(nnz) == pytest.approx((1 - sparsity) * sum(layer.size for layer in layers), abs=len(layers))
    assert costs.forward_flops(layers, nnz) < costs.forward_flops(layers)


def fake_forward(network: str, sparsity: float) -> float:
    return {"q": 100.0, "critic": 10.0, "actor": 1000.0}[network] * (1 - sparsity) + 1


def test_update_and_action_conventions_hand_count() -> None:
    """Forward F, training pass 3 F, pass that backpropagates to the input only 2 F; B examples per update."""
    dqn = costs.CostModel("dqn", batch_size=2, forward=fake_forward)
    m = costs.Moment(target=(0.0,), online=(0.0, 0.5))
    assert dqn.update(m) == 2 * (101 + 3 * (101 + 51))
    assert dqn.action(m) == (101 + 51) / 2  # the behaviour network: mean over the online networks
    assert costs.CostModel("cql", 2, fake_forward).action(m) is None  # offline
    sac = costs.CostModel("sac", batch_size=2, forward=fake_forward)
    m = costs.Moment(target=(0.5, 0.5), online=(0.0, 0.0, 0.5, 0.5), actor=0.0)
    actor, targets, trained, actor_loss_critics = 1001, 2 * 6, 3 * (11 + 11 + 6 + 6), 2 * 2 * (11 + 11 + 6 + 6) / 4
    assert sac.update(m) == 2 * (actor + targets + trained + 3 * actor + actor_loss_critics)
    assert sac.action(m) == 1001


def test_fixed_levels_put_every_network_at_the_level() -> None:
    eaude, poly = costs.ALGORITHMS["eaudedqn"], costs.ALGORITHMS["polyprune_sac"]
    assert costs.fixed_moment(eaude, 0.9, 5) == costs.Moment(target=(0.9,), online=(0.9,) * 5)
    assert costs.fixed_moment(poly, 0.9, 5) == costs.Moment(target=(0.9, 0.9), online=(0.9, 0.9), actor=0.0)
    assert costs.fixed_moment(costs.ALGORITHMS["eaudesac"], 0.5, 3).online == (0.5,) * 6


# ---------------------------------------------------------------------------------------------------------------------
# Dense counts: XLA's cost analysis
# ---------------------------------------------------------------------------------------------------------------------


def test_xla_counts_a_matrix_product_as_2mnk() -> None:
    m, n, k = 3, 7, 5
    flops = costs.xla_flops(lambda a, b: a @ b, jnp.zeros((m, k)), jnp.zeros((k, n)))
    assert flops == 2 * m * n * k
    shapes = jax.ShapeDtypeStruct((m, k), jnp.float32), jax.ShapeDtypeStruct((k, n), jnp.float32)
    assert costs.xla_flops(jax.jit(lambda a, b: a @ b), *shapes) == 2 * m * n * k  # shapes only, already jitted


def test_xla_count_of_an_unpadded_convolution_matches_the_hand_count() -> None:
    """Without padding XLA counts 2 per multiply-add of every output position, as the sparse count does (with SAME
    padding it leaves out the taps that fall on the padding)."""
    x, w = jnp.zeros((1, 6, 6, 2)), jnp.zeros((3, 3, 2, 3))

    def conv(x, w):
        return jax.lax.conv_general_dilated(x, w, (1, 1), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC"))

    assert costs.xla_flops(conv, x, w) == 16 * 2 * 54


def test_dense_flops_of_the_scripts_small_networks() -> None:
    """XLA's count of the scripts' own update: EauDeDQN trains K = 5 networks where PolyPruneDQN trains one, and both
    act with one network."""
    eaude_update, eaude_act = costs.dense_flops(costs.ALGORITHMS["eaudedqn"], "small", "Pong-v5")
    poly_update, poly_act = costs.dense_flops(costs.ALGORITHMS["polyprune_dqn"], "small", "Pong-v5")
    assert 3.5 < eaude_update / poly_update < 4.0  # (1 + 3 K) / (1 + 3) = 4 for the layers, less the shared rest
    assert eaude_act == pytest.approx(poly_act, rel=0.02)
    forward = 24_601_926  # test_atari_q_network_hand_count
    assert 0.7 * forward < poly_act < 1.05 * forward  # XLA leaves out the SAME padding taps
    # one update = 1 target forward + 3 passes per trained network, on a batch of 32: near 4 forward passes per example
    assert 0.7 * 4 * 32 * forward < poly_update < 1.1 * 4 * 32 * forward


@pytest.mark.parametrize("pair", ["cql", "sac"])
def test_dense_and_sparse_counts_agree_on_dense_networks(pair: str) -> None:
    """Two independent counts of the same update (XLA's of the lowered program, the hand convention of the layers)
    give nearly the same EauDe / PolyPrune ratio at sparsity 0, and the same order of magnitude in absolute terms."""
    env_id = "Pong-v5" if pair == "cql" else "HalfCheetah-v5"
    dense, sparse = {}, {}
    for name in costs.PAIRS[pair]:
        algorithm = costs.ALGORITHMS[name]
        dense[name], act = costs.dense_flops(algorithm, "small", env_id)
        assert (act is None) == (pair == "cql")  # offline CQL has no act function
        networks = costs.build_networks(algorithm, "small", env_id)
        sparse[name] = networks.model().update(costs.fixed_moment(algorithm, 0.0, networks.num_networks))
        assert 0.7 < dense[name] / sparse[name] < 1.1
    eaude, poly = costs.PAIRS[pair]
    assert dense[eaude] / dense[poly] == pytest.approx(sparse[eaude] / sparse[poly], rel=0.03)


def test_population_layout_is_the_scripts_auto_choice() -> None:
    eaudedqn, eaudesac = costs.ALGORITHMS["eaudedqn"], costs.ALGORITHMS["eaudesac"]
    assert costs.population_layout(eaudedqn, "cpu") == "loop"  # the scripts unroll K CNNs on a CPU
    assert costs.population_layout(eaudedqn, "gpu") == "vmap"
    assert costs.population_layout(eaudesac, "cpu") == "vmap"  # MLP critics: vmap everywhere


# ---------------------------------------------------------------------------------------------------------------------
# A finished run's schedule
# ---------------------------------------------------------------------------------------------------------------------


def write_run(folder: Path, script: str, args: dict, metrics: list[tuple], events: list[dict] | None = None) -> Path:
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"script": script, "args": args}))
    lines = [json.dumps({"global_step": s, "name": n, "value": v, "time": 0.0}) for s, n, v in metrics]
    (folder / "metrics.jsonl").write_text("\n".join([*lines, '{"torn']) + "\n")
    if events is not None:
        (folder / "population.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))
    return folder


DQN_ARGS = {"env_id": "Pong-v5", "network_size": "small", "learning_starts": 100, "total_timesteps": 1100,
            "num_networks": 2, "batch_size": 4, "sparsity_distribution": "erk"}  # fmt: skip


def test_eaude_schedule_follows_population_events(tmp_path: Path) -> None:
    metrics = [(0, "sparsity/target", 0.0), (500, "sparsity/target", 0.2), (900, "sparsity/target", 0.4),
               (1100, "charts/SPS", 50.0)]  # fmt: skip
    events = [
        {"global_step": 500, "sparsities_after": [0.2, 0.3]},
        {"global_step": 900, "sparsities_after": [0.4, 0.45]},
    ]
    run = costs.read_run(write_run(tmp_path / "e", "eaudedqn_atari_jax.py", DQN_ARGS, metrics, events))
    assert run.algorithm.name == "eaudedqn" and (run.start, run.total) == (100, 1100)
    assert costs.schedule_moments(run) == [
        (400, costs.Moment(target=(0.0,), online=(0.0, 0.0))),  # dense until the first target update
        (400, costs.Moment(target=(0.2,), online=(0.2, 0.3))),
        (200, costs.Moment(target=(0.4,), online=(0.4, 0.45))),
    ]
    update, action, phase = costs.schedule_flops(run)
    model = costs.build_networks(run.algorithm, "small", "Pong-v5", {"num_networks": 2, "batch_size": 4}).model()
    moments = costs.schedule_moments(run)
    assert update == pytest.approx(sum(n * model.update(m) for n, m in moments) / 1000)
    assert action == pytest.approx(sum(n * model.action(m) for n, m in moments) / 1000)
    assert phase == (100, 1100)


def test_polyprune_sac_schedule_and_an_unfinished_run(tmp_path: Path) -> None:
    args = {"env_id": "HalfCheetah-v5", "network_size": "small", "learning_starts": 100, "total_timesteps": 5000}
    metrics = [(0, "sparsity/target", 0.0), (300, "sparsity/target", 0.5), (600, "sparsity/actor", 0.1),
               (700, "charts/SPS", 1.0)]  # fmt: skip
    run = costs.read_run(write_run(tmp_path / "p", "polyprune_sac_mujoco_jax.py", args, metrics))
    assert costs.schedule_moments(run) == [  # averaged up to the last logged step
        (200, costs.Moment(target=(0.0, 0.0), online=(0.0, 0.0))),
        (300, costs.Moment(target=(0.5, 0.5), online=(0.5, 0.5))),
        (100, costs.Moment(target=(0.5, 0.5), online=(0.5, 0.5), actor=0.1)),
    ]


def test_polyprune_dqn_online_sparsity_comes_from_sparsity_online(tmp_path: Path) -> None:
    metrics = [(0, "sparsity/target", 0.0), (400, "sparsity/online", 0.3), (800, "sparsity/target", 0.3),
               (1100, "charts/SPS", 50.0)]  # fmt: skip
    run = costs.read_run(write_run(tmp_path / "p", "polyprune_dqn_atari_jax.py", DQN_ARGS, metrics))
    assert costs.schedule_moments(run) == [
        (300, costs.Moment(target=(0.0,), online=(0.0,))),
        (400, costs.Moment(target=(0.0,), online=(0.3,))),
        (300, costs.Moment(target=(0.3,), online=(0.3,))),
    ]


def test_schedule_errors(tmp_path: Path) -> None:
    with pytest.raises(costs.UsageError, match=r"no config\.json"):
        costs.read_run(tmp_path)
    with pytest.raises(costs.UsageError, match=r"population\.jsonl"):
        costs.read_run(write_run(tmp_path / "e", "eaudedqn_atari_jax.py", DQN_ARGS, [(0, "sparsity/target", 0.0)]))
    with pytest.raises(costs.UsageError, match="lacks total_timesteps"):
        args = {k: v for k, v in DQN_ARGS.items() if k != "total_timesteps"}
        costs.read_run(write_run(tmp_path / "t", "polyprune_dqn_atari_jax.py", args, [(0, "sparsity/target", 0.0)]))
    with pytest.raises(costs.UsageError, match="supported"):
        costs.read_run(write_run(tmp_path / "c", "dqn_classic.py", DQN_ARGS, [(0, "sparsity/target", 0.0)]))
    metrics = [(0, "sparsity/target", 0.0), (1100, "charts/SPS", 1.0)]
    one = write_run(tmp_path / "p1", "polyprune_dqn_atari_jax.py", DQN_ARGS, metrics)
    two = write_run(tmp_path / "p2", "polyprune_dqn_atari_jax.py", DQN_ARGS, metrics)
    assert [run.path for run in costs.read_runs([str(one)], ["dqn"])] == [one]
    with pytest.raises(costs.UsageError, match="both PolyPruneDQN runs"):  # one run per algorithm, none overwritten
        costs.read_runs([str(one), str(two)], ["dqn"])
    with pytest.raises(costs.UsageError, match="--pairs leaves out dqn"):  # not silently ignored
        costs.read_runs([str(one)], ["sac"])


# ---------------------------------------------------------------------------------------------------------------------
# Timing runs: budgets, command lines, the timed span
# ---------------------------------------------------------------------------------------------------------------------


def test_budgets_end_the_timed_span_on_a_population_step() -> None:
    # (learning starts, total): learning starts, one untimed 1000-step window, then the timed steps
    assert costs.budget("dqn", 1.0) == (5000, 8000)  # env steps 6000-8000, T = 8000 at the end
    assert costs.budget("dqn", 4.0) == (7000, 16_000)  # 8000 timed steps: exactly one population step
    assert costs.budget("dqn", 0.01) == (6000, 8000)  # at least one timed window, still ending at T
    assert costs.budget("cql", 1.0) == (0, 2000)  # offline: gradient steps 1000-2000, T = 2000
    assert costs.budget("cql", 0.01) == (0, 2000)
    assert costs.budget("cql", 4.0) == (0, 5000)  # 4000 timed steps: two population steps, at 2000 and 4000
    assert costs.budget("sac", 1.0) == (1000, 4000)  # a population step every 1000 env steps
    for family, (earliest, period, timed) in costs.BUDGETS.items():
        for scale in (0.01, 0.5, 1.0, 1.7, 4.0):
            start, total = costs.budget(family, scale)
            span = range(start + costs.LOG_WINDOW + 1, total + 1)
            assert start >= earliest and (total - start) % costs.LOG_WINDOW == 0  # between two charts/SPS records
            assert len(span) >= max(costs.LOG_WINDOW, round(timed * scale, -3))
            assert any(step % period == 0 for step in span)  # at least one population step is timed
            if scale == 4.0:  # whole periods: each population step weighs its share
                assert len(span) % period == 0 and sum(step % period == 0 for step in span) == len(span) // period


@pytest.mark.parametrize("name", list(costs.ALGORITHMS))
@pytest.mark.parametrize("warmup", [False, True], ids=["timed", "warmup"])
def test_child_command_lines_are_accepted_by_the_scripts(name: str, warmup: bool, tmp_path: Path) -> None:
    algorithm = costs.ALGORITHMS[name]
    dataset = tmp_path / "replay_logs"
    dataset.mkdir()
    rng = np.random.default_rng(0)
    arrays = {
        "observation": rng.integers(0, 256, (64, 84, 84), dtype=np.uint8),
        "action": rng.integers(4, size=64).astype(np.int32),
        "reward": np.zeros(64, np.float32),
        "terminal": np.zeros(64, np.uint8),
    }
    for key, array in arrays.items():
        with gzip.open(dataset / f"$store$_{key}_ckpt.0.gz", "wb", compresslevel=1) as f:
            np.save(f, array)
    common = {"network_size": "small", "seed": 3, "atari_env_id": "Breakout-v5", "mujoco_env_id": "Hopper-v5",
              "dataset_dir": str(dataset), "dataset_size": 64}  # fmt: skip
    start, total = costs.budget(algorithm.family, 1.0)
    argv = costs.run_argv(algorithm, common, start, total, warmup)
    args = costs.script(algorithm.script).parse_args([*argv, "--output-dir", str(tmp_path / "runs")])
    assert (args.network_size, args.seed, args.checkpoint_interval) == ("small", 3, 0)
    if algorithm.family == "cql":
        assert args.num_epochs * args.steps_per_epoch == (100 if warmup else total) and args.eval_episodes == 0
        assert args.target_network_frequency == (50 if warmup else 2000)  # the warm-up reaches a population step
    else:
        assert args.total_timesteps == ((300 if algorithm.family == "dqn" else 500) if warmup else total)
        assert args.learning_starts == (start if not warmup else 100 if algorithm.family == "dqn" else 300)
        assert args.buffer_size == args.total_timesteps
    if algorithm.family == "dqn":
        assert args.exploration_steps == 0  # acts greedily (epsilon 0.01) as in most of a real run
        assert args.target_network_frequency == (200 if warmup else 8000)
    if algorithm.family == "sac":
        assert args.eval_frequency == 0
    if warmup and not algorithm.population:  # the warm-up prunes once
        steps = args.num_epochs * args.steps_per_epoch if algorithm.family == "cql" else args.total_timesteps
        assert args.pruning_period < steps


FAKE_TRAINER = """
import json
from pathlib import Path

import jax  # noqa: F401 (as the scripts: the peak below comes on top of JAX's own memory)


def main(argv):
    value = lambda flag: argv[argv.index(flag) + 1]
    name, start, total = value("--exp-name"), int(value("--learning-starts")), int(value("--total-timesteps"))
    run = Path(value("--output-dir")) / f"fake__{name}"
    run.mkdir()
    seconds = 3.0 if name.startswith("eaude") else 2.0  # per 1000 steps
    records = [{"global_step": s, "name": "charts/SPS", "value": 1.0, "time": 50.0 + seconds * s / 1000}
               for s in range(1000, total + 1, 1000)]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\\n" for r in records))
    ballast = b"x" * (100_000_000 if name.startswith("eaude") else 1)  # touched pages: resident
    return len(ballast) + start
"""


def test_measure_runs_each_script_twice_in_fresh_processes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The plumbing of the timing runs with a stand-in script: warm-up and timed child, the timed span from the
    metrics' clock, the child's own peak RSS."""
    (tmp_path / "fake_trainer.py").write_text(FAKE_TRAINER)
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    for name, population in (("eaudesac", True), ("polyprune_sac", False)):
        monkeypatch.setitem(costs.ALGORITHMS, name, costs.Algorithm(name, "fake_trainer.py", "sac", population, name))
    common = {"network_size": "small", "seed": 1, "atari_env_id": "Pong-v5", "mujoco_env_id": "Hopper-v5"}
    logged: list[str] = []
    results = costs.measure(["sac"], common, 1.0, logged.append)
    eaude, poly = results["eaudesac"], results["polyprune_sac"]
    assert (eaude["steps"], poly["steps"]) == (2000, 2000)  # steps 2000 to 4000: the window 1000-2000 is left out
    assert (eaude["seconds"], poly["seconds"]) == (pytest.approx(6.0), pytest.approx(4.0))
    assert eaude["peak_rss_bytes"] - poly["peak_rss_bytes"] > 70e6  # each child reports its own peak
    assert eaude["backend"] != "cpu" or eaude["peak_device_bytes"] is None  # n/a on a CPU
    assert sum("warm-up run" in line for line in logged) == 2


def test_learning_time_leaves_out_the_first_window(tmp_path: Path) -> None:
    records = [(1000, 1.0), (2000, 30.0), (3000, 40.0), (4000, 52.0)]
    lines = [json.dumps({"global_step": s, "name": "charts/SPS", "value": 1.0, "time": t}) for s, t in records]
    lines.append(json.dumps({"global_step": 4000, "name": "losses/td_loss", "value": 1.0, "time": 99.0}))
    (tmp_path / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    assert costs.learning_time(tmp_path, 1000) == (22.0, 2000)  # from the record at 3000: 2000 is the first window


# ---------------------------------------------------------------------------------------------------------------------
# Output and command line
# ---------------------------------------------------------------------------------------------------------------------


def test_markdown_table_prints_ratios_beside_the_papers_values() -> None:
    results = {
        "eaudedqn": {"seconds": 30.0, "steps": 8000, "peak_rss_bytes": 2.5e9, "peak_device_bytes": None,
                     "update_xla": 8e9, "action_xla": 2e6, "update_sparse": {0.5: 3e9}, "action_sparse": {0.5: 1e6}},
        "polyprune_dqn": {"seconds": 20.0, "steps": 8000, "peak_rss_bytes": 2.0e9, "peak_device_bytes": None,
                          "update_xla": 2e9, "action_xla": 2e6, "update_sparse": {0.5: 1e9},
                          "action_sparse": {0.5: 1e6}},
        "eaudecql": {"seconds": 11.0, "peak_device_bytes": 3e9, "update_xla": 5e9},
        "polyprune_cql": {"seconds": 10.0, "peak_device_bytes": 1e9, "update_xla": 1e9},
        "eaudesac": {}, "polyprune_sac": {},
    }  # fmt: skip
    text = costs.markdown_tables(["dqn", "cql", "sac"], results, [0.5])
    lines = text.splitlines()
    assert lines[0].startswith("| EauDe / PolyPrune | EauDeDQN vs PolyPruneDQN | paper | EauDeCQL vs PolyPruneCQL")
    cells = [[cell.strip() for cell in line.strip("|").split("|")] for line in lines if line.startswith("| ")]
    row = {cell[0]: cell[1:] for cell in cells}
    assert row["Training time"] == ["x1.50", "x1.39", "x1.10", "x1.17", "-", "x1.08"]
    assert row["Peak host memory (RSS)"][0] == "+0.50 GB"
    assert row["Peak device memory"] == ["n/a", "+0.73 GB", "+2.00 GB", "+0.65 GB", "n/a", "+0.01 GB"]
    assert row["FLOPs per gradient update, dense (XLA)"] == ["x4.00", "x1.55", "x5.00", "x1.55", "-", "x4.03"]
    assert row["FLOPs per gradient update, sparse at s = 0.5"][:2] == ["x3.00", "x1.55"]
    assert row["FLOPs per action, dense (XLA)"] == ["x1.00", "x1.01", "(offline)", "(offline)", "-", "x1.00"]
    assert "| EauDeDQN | 30 | 8,000 | 2.5 | n/a | 8 | 3 | 2 | 1 |" in lines


def run_tool(*argv: str, timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(TOOL), *argv], capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize(
    ("argv", "flag"),
    [
        (["--sparsities", "0,1.5"], "--sparsities"),
        (["--sparsities", "a,b"], "--sparsities"),
        (["--budget-scale", "0"], "--budget-scale"),
        (["--network-size", "huge"], "--network-size"),
        (["--pairs", "ppo"], "--pairs"),
        (["--seed", "-1"], "--seed"),
        (["--schedule", "/nonexistent/run"], "--schedule"),
        (["--flops-only", "--atari-env-id", "Pong-v9"], "--atari-env-id"),
        (["--flops-only", "--pairs", "sac", "--mujoco-env-id", "Pong-v5"], "--mujoco-env-id"),
    ],
)
def test_cli_errors_are_one_line_with_exit_code_2(argv: list[str], flag: str) -> None:
    result = run_tool(*argv)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and flag in lines[0], result.stderr
    assert result.stdout == ""


def test_flops_only_prints_the_table(capsys: pytest.CaptureFixture[str]) -> None:
    costs.main(["--flops-only", "--network-size", "small", "--pairs", "sac", "--sparsities", "0,0.9"])
    out = capsys.readouterr().out
    assert "| EauDe / PolyPrune | EauDeSAC vs PolyPruneSAC | paper |" in out
    assert "| FLOPs per gradient update, dense (XLA) | x" in out and "| x4.03 |" in out
    assert "| FLOPs per action, sparse at s = 0.9 | x1.00 | x1.00 |" in out  # the same unpruned actor
    assert "small network, seed 1" in out and f"JAX {jax.__version__} on {jax.default_backend()}" in out
    assert "command: python tools/costs.py --flops-only --network-size small --pairs sac" in out


@pytest.mark.slow
def test_timing_runs_end_to_end_on_the_sac_pair() -> None:
    """Four child processes (warm-up and timed run of each algorithm) on the smallest budget."""
    result = run_tool(
        "--pairs", "sac", "--network-size", "small", "--budget-scale", "0.01", "--sparsities", "0", timeout=3600
    )
    assert result.returncode == 0, result.stderr[-2000:]
    row = next(line for line in result.stdout.splitlines() if line.startswith("| Training time |"))
    assert row.split(" | ")[1].startswith("x") and "| x1.08 |" in row
    assert "| Peak host memory (RSS) | +" in result.stdout or "| Peak host memory (RSS) | -" in result.stdout
    eaude = next(line for line in result.stdout.splitlines() if line.startswith("| EauDeSAC |"))
    assert eaude.split(" | ")[2] == "1,000"  # timed steps
