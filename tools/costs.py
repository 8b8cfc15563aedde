"""Table 2 of the paper on this machine: what EauDeQN costs over PolyPruneQN, for the three pairs of scripts.

    uv run python tools/costs.py                                  # medium network, DQN, CQL and SAC pairs
    uv run python tools/costs.py --network-size small             # under 15 minutes on a 2-core CPU
    uv run python tools/costs.py --flops-only --sparsities 0,0.5,0.9   # FLOPs only, seconds
    uv run python tools/costs.py --network-size small --budget-scale 0.05   # smoke test of the timing runs
    uv run python tools/costs.py --flops-only --schedule runs/<eaudedqn run> runs/<polyprune_dqn run>

Prints a Markdown table of the ratios EauDe / PolyPrune beside the paper's values (Table 2: training time x1.39 /
x1.17 / x1.08, GPU memory +0.73 / +0.65 / +0.01 GB, FLOPs per gradient update x1.55 / x1.55 / x4.03, FLOPs per action
x1.01 / offline / x1.00), then the absolute numbers of every algorithm and the machine they come from.

Training time and memory. Each algorithm runs its own script's command line in a fresh child process, one after the
other, for the same short budget (see BUDGETS; `--budget-scale` scales the timed steps). The timed span is the
learning phase after its first 1000-step logging window: wall-clock seconds between the first and the last
`charts/SPS` record of the run's metrics.jsonl that lie after learning starts. It therefore contains everything the
script does per step (environment, replay sampling, the jitted update, acting, population step or pruning, logging)
and leaves out start-up and the first window, which traces and loads the jitted programs. At --budget-scale 1 the
timed span is, with the scripts' default periods, Atari DQN: env steps 6000 to 8000 (learning starts at 5000, one
gradient step per 4 env steps, epsilon at its final 0.01 so that the agent acts greedily as for most of a real run;
the steps before learning act at random and cost little), CQL: gradient steps 1000 to 2000 on a small dataset
recorded by tools/write_dqn_replay_dataset.py (random policy, evaluation off), SAC: env steps 2000 to 4000 (learning
starts at 1000, one gradient step per env step). Every span ends on a population step of EauDe (step T = 8000 online,
T = 2000 offline, every 1000 for SAC), where PolyPrune prunes as well, so that both periodic costs are in it. These
budgets keep the small network under 15 minutes on a 2-core CPU, so the DQN and CQL spans are T / 4 and T / 2 long:
EauDe's population step weighs 4 (DQN) and 2 (CQL) times its share of a real run there, PolyPruneDQN's pruning 2
times (small next to the gradient steps of K networks on a CPU, not on a GPU); --budget-scale 4 makes every span
whole periods.
Before the timed run, each algorithm runs once more on a tiny budget that reaches every jitted function, with a
JAX compilation cache shared by both runs, so that the timed run loads compiled programs instead of compiling them (a
first population step or pruning step would otherwise compile inside the timed span; in a real run of millions of
steps compilation is negligible). Training time ratio = EauDe seconds / PolyPrune seconds over the same steps. Peak
host memory is the timed child's maximum resident set size (VmHWM); peak device memory is JAX's `peak_bytes_in_use`
of the device when it reports one (GPUs), "n/a" on CPU. Memory differences are EauDe - PolyPrune in GB (10^9 bytes).

FLOPs. Two counts, both for the scripts' own jitted functions (`make_train_step`, `make_act`):
* dense (XLA): the `flops` of XLA's cost analysis of the lowered update and act programs (batch of the script's
  --batch-size, one observation per action, the layout the script picks on this backend, the learner state from the
  script's init_learner / init_state under jax.eval_shape). It counts every operation of the program as written:
  matrix products and convolutions (2 per multiply-add, pruned weights included since they are stored as zeros),
  bias additions, activations, losses, Adam and the Polyak updates.
* sparse: only the layers' multiply-adds with nonzero weights, counted by hand. A dense or convolutional layer costs
  positions x (2 nnz + bias) per example, where nnz is its number of nonzero kernel weights, bias its number of output
  features and positions the number of output positions (1 for a dense layer, H x W of the output map for a
  convolution, taps on SAME padding included; XLA leaves those out). Activations, losses and optimiser updates are left
  out (they do not shrink with sparsity). Conventions, identical for both algorithms of a pair: a forward pass costs
  F; a training pass (forward, backward for the activations, backward for the weights) costs 3 F; a pass that only
  backpropagates to its input (the critics in SAC's actor loss) costs 2 F. Per gradient update, for a batch of B:
    DQN / CQL   B (F(target) + 3 sum_k F(online_k))            k over K = 5 online networks (EauDe) or 1 (PolyPrune)
    SAC         B (F_actor + sum_i C(target_i) + 3 sum_ik C(online_ik) + 3 F_actor + 2 x 2 mean_k C(online_ik))
                    (next action, shared target of 2 critics, 2 x K or 2 critics trained, actor trained through one
                    online critic of each population)
  and per action F of the acting network: DQN, PolyPrune acts with its online network and EauDe with one of the K
  online networks (drawn by 1 / L; counted as the mean over the K networks, whose sparsities differ little), SAC with
  the actor (not pruned unless the run says --prune-actor). nnz comes from the overall sparsity s of each network and
  the run's --sparsity-distribution exactly as the scripts split it over the layers (ERK by default; `global` is
  counted as uniform because its split depends on the weights). With `--sparsities` every network of both algorithms
  sits at each given level (the SAC actor stays dense). With `--schedule RUN_DIR ...` the count follows finished runs:
  the target's sparsity from metrics.jsonl `sparsity/target`, PolyPrune's online network from `sparsity/online` (or
  the target's when not logged), EauDe's K online networks from population.jsonl `sparsities_after` at every target
  update or population step, and the counts are averaged over every step of the learning phase (from --learning-starts
  for online runs, from 0 offline, to the last step) — the average over training that Table 2 reports. A pair's ratio
  needs one run of each algorithm; each run is counted with its own configuration (network size, K, environment).

Not a test: time and memory depend on the machine and on what else runs on it; quote them with the machine line.
"""

from __future__ import annotations

import argparse
import bisect
import functools
import importlib
import itertools
import json
import math
import os
import platform
import resource
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import toolbox
from toolbox import Parser, cpu_model, read_jsonl

ROOT = Path(__file__).resolve().parents[1]

# Paper, Table 2 (medium network, GPU): EauDe vs PolyPrune. None = offline (no acting).
PAPER = {
    "dqn": {"time": "x1.39", "memory": "+0.73 GB", "update": "x1.55", "action": "x1.01"},
    "cql": {"time": "x1.17", "memory": "+0.65 GB", "update": "x1.55", "action": None},
    "sac": {"time": "x1.08", "memory": "+0.01 GB", "update": "x4.03", "action": "x1.00"},
}
PAIRS = {
    "dqn": ("eaudedqn", "polyprune_dqn"),
    "cql": ("eaudecql", "polyprune_cql"),
    "sac": ("eaudesac", "polyprune_sac"),
}
PAIR_TITLES = {"dqn": "EauDeDQN vs PolyPruneDQN", "cql": "EauDeCQL vs PolyPruneCQL", "sac": "EauDeSAC vs PolyPruneSAC"}


@dataclass(frozen=True)
class Algorithm:
    name: str
    script: str
    family: str  # "dqn", "cql" or "sac"
    population: bool  # EauDe: K online networks (2 x K critics for SAC)
    title: str


ALGORITHMS = {
    a.name: a
    for a in (
        Algorithm("eaudedqn", "eaudedqn_atari_jax.py", "dqn", True, "EauDeDQN"),
        Algorithm("polyprune_dqn", "polyprune_dqn_atari_jax.py", "dqn", False, "PolyPruneDQN"),
        Algorithm("eaudecql", "eaudecql_atari_jax.py", "cql", True, "EauDeCQL"),
        Algorithm("polyprune_cql", "polyprune_cql_atari_jax.py", "cql", False, "PolyPruneCQL"),
        Algorithm("eaudesac", "eaudesac_mujoco_jax.py", "sac", True, "EauDeSAC"),
        Algorithm("polyprune_sac", "polyprune_sac_mujoco_jax.py", "sac", False, "PolyPruneSAC"),
    )
}
SCRIPT_ALGORITHMS = {a.script: a for a in ALGORITHMS.values()}

# Timed budgets (see the docstring): (earliest learning start, period of EauDe's population step with the scripts'
# defaults, timed steps at --budget-scale 1), in env steps online and gradient steps offline. The learning start is
# placed so that the timed span ends on a population step; a real run's learning start (20 000 or 5 000 steps of
# random actions) changes nothing in the steps that are timed.
BUDGETS = {"dqn": (1_000, 8_000, 2_000), "cql": (0, 2_000, 1_000), "sac": (1_000, 1_000, 2_000)}
LOG_WINDOW = 1_000  # the scripts log charts/SPS every 1000 steps


def script(name: str) -> Any:
    """A training script imported as a module (tools may import the scripts; they live at the repository root)."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    return importlib.import_module(name.removesuffix(".py"))


# =====================================================================================================================
# Sparse FLOPs: layers of a Flax network and their multiply-adds with nonzero weights
# =====================================================================================================================


@dataclass(frozen=True)
class Layer:
    """One dense or convolutional layer: kernel shape, output features (bias size) and output positions."""

    name: str
    kernel_shape: tuple[int, ...]
    bias: int
    positions: int

    @property
    def size(self) -> int:
        return math.prod(self.kernel_shape)


def network_layers(module: Any, *inputs: Any) -> list[Layer]:
    """The layers of `module` (a Flax module whose kernels are the leaves with ndim > 1, as the scripts prune them), in
    the order of the params tree's leaves, with their output positions for one example of `inputs` (shapes only)."""
    import jax

    params = jax.eval_shape(module.init, jax.random.PRNGKey(0), *inputs)
    _, state = jax.eval_shape(
        lambda p, *x: module.apply(p, *x, capture_intermediates=True, mutable=["intermediates"]), params, *inputs
    )
    flat = {
        tuple(str(getattr(k, "key", k)) for k in path): leaf
        for path, leaf in jax.tree_util.tree_leaves_with_path(params)
    }
    layers = []
    for path, leaf in flat.items():
        if len(leaf.shape) <= 1:
            continue
        module_path = path[1:-1]  # ("params", *module path, "kernel")
        output = state["intermediates"]
        for key in module_path:
            output = output[key]
        (output,) = jax.tree.leaves(output["__call__"])
        bias = flat.get((*path[:-1], "bias"))
        layers.append(
            Layer(
                name="/".join(module_path),
                kernel_shape=tuple(leaf.shape),
                bias=math.prod(bias.shape) if bias is not None else 0,
                positions=math.prod(output.shape[1:-1]),
            )
        )
    return layers


def forward_flops(layers: Sequence[Layer], nnz: Sequence[int] | None = None) -> int:
    """FLOPs of one forward pass for one example: positions x (2 nnz + bias) per layer (dense when `nnz` is None)."""
    nnz = [layer.size for layer in layers] if nnz is None else nnz
    return sum(layer.positions * (2 * int(n) + layer.bias) for layer, n in zip(layers, nnz, strict=True))


def nnz_at_sparsity(layers: Sequence[Layer], sparsity: float, distribution: str, zero_counts: Callable) -> list[int]:
    """Nonzero kernel weights per layer at overall `sparsity`, split as the scripts split it (`zero_counts` is a
    script's `layer_zero_counts`); `global` depends on the weights' magnitudes and is counted as `uniform`."""
    shapes = [layer.kernel_shape for layer in layers]
    counts = zero_counts(shapes, float(sparsity), "uniform" if distribution == "global" else distribution)
    return [layer.size - int(zeros) for layer, zeros in zip(layers, counts, strict=True)]


def nnz_of_params(params: Any) -> list[int]:
    """Nonzero kernel weights per layer of actual params (same layer order as `network_layers`)."""
    import jax
    import numpy as np

    return [int(np.count_nonzero(np.asarray(w))) for w in jax.tree.leaves(params) if np.ndim(w) > 1]


# =====================================================================================================================
# Per gradient update and per action, at one moment of training
# =====================================================================================================================


@dataclass(frozen=True)
class Moment:
    """Sparsities of every network at one moment: the target(s) (1 for DQN/CQL, 2 critics for SAC), the online
    networks (K or 1 for DQN/CQL; 2 x K or 2 critics for SAC, flattened) and the SAC actor."""

    target: tuple[float, ...]
    online: tuple[float, ...]
    actor: float = 0.0


@dataclass
class CostModel:
    """Sparse FLOPs of one algorithm: `forward(network, sparsity)` is F of one example ("q" for DQN/CQL, "critic" and
    "actor" for SAC); see the module docstring for the conventions."""

    family: str
    batch_size: int
    forward: Callable[[str, float], float]

    def update(self, m: Moment) -> float:
        f = self.forward
        if self.family in ("dqn", "cql"):
            return self.batch_size * (f("q", m.target[0]) + 3 * sum(f("q", s) for s in m.online))
        actor = f("actor", m.actor)
        critic_mean = sum(f("critic", s) for s in m.online) / len(m.online)
        trained = 3 * sum(f("critic", s) for s in m.online)
        return self.batch_size * (actor + sum(f("critic", s) for s in m.target) + trained + 3 * actor + 4 * critic_mean)

    def action(self, m: Moment) -> float | None:
        if self.family == "cql":
            return None  # offline: no acting during training
        if self.family == "dqn":
            return sum(self.forward("q", s) for s in m.online) / len(m.online)
        return self.forward("actor", m.actor)


def fixed_moment(algorithm: Algorithm, sparsity: float, num_networks: int) -> Moment:
    """Every network of `algorithm` at `sparsity` (the SAC actor stays dense, as the paper prunes critics only)."""
    members = num_networks if algorithm.population else 1
    if algorithm.family == "sac":
        return Moment(target=(sparsity,) * 2, online=(sparsity,) * (2 * members))
    return Moment(target=(sparsity,), online=(sparsity,) * members)


@dataclass
class Networks:
    """What the sparse count needs about one algorithm's networks."""

    family: str
    layers: dict[str, list[Layer]]
    distribution: str
    zero_counts: Callable
    batch_size: int
    num_networks: int

    def model(self) -> CostModel:
        @functools.cache
        def forward(network: str, sparsity: float) -> float:
            layers = self.layers[network]
            if sparsity == 0.0:
                return forward_flops(layers)
            return forward_flops(layers, nnz_at_sparsity(layers, sparsity, self.distribution, self.zero_counts))

        return CostModel(self.family, self.batch_size, forward)


def env_dims(family: str, env_id: str) -> tuple[int, ...]:
    """(number of actions,) of an Atari game or (observation size, action size) of a MuJoCo task, from envpool's spec
    (no environment is built)."""
    import envpool

    if family in ("dqn", "cql"):
        return (int(envpool.make_spec(env_id, full_action_space=False).action_space.n),)
    spec = envpool.make_spec(env_id)
    return int(spec.observation_space.shape[0]), int(spec.action_space.shape[0])


def build_networks(algorithm: Algorithm, network_size: str, env_id: str, overrides: dict | None = None) -> Networks:
    """The script's networks at `network_size` for `env_id`; K, batch size and distribution are the script's
    defaults unless `overrides` (a run's config args) say otherwise."""
    import numpy as np

    module = script(algorithm.script)
    defaults = module.Args()
    config = {
        "num_networks": getattr(defaults, "num_networks", 1),
        "batch_size": defaults.batch_size,
        "sparsity_distribution": defaults.sparsity_distribution,
        **(overrides or {}),
    }
    dims = env_dims(algorithm.family, env_id)
    if algorithm.family in ("dqn", "cql"):
        network = module.QNetwork(action_dim=dims[0], head_width=module.HEAD_WIDTHS[network_size])
        layers = {"q": network_layers(network, np.zeros((1, 4, 84, 84), np.uint8))}
    else:
        obs, act = np.zeros((1, dims[0]), np.float32), np.zeros((1, dims[1]), np.float32)
        layers = {
            "critic": network_layers(module.Critic(width=module.CRITIC_WIDTHS[network_size]), obs, act),
            "actor": network_layers(module.Actor(action_dim=dims[1]), obs),
        }
    return Networks(
        family=algorithm.family,
        layers=layers,
        distribution=config["sparsity_distribution"],
        zero_counts=module.layer_zero_counts,
        batch_size=int(config["batch_size"]),
        num_networks=int(config["num_networks"]) if algorithm.population else 1,
    )


# =====================================================================================================================
# A finished run's sparsity schedule
# =====================================================================================================================


class UsageError(Exception):
    """A user mistake: reported as one `error:` line with exit code 2."""


@dataclass
class Run:
    path: Path
    algorithm: Algorithm
    args: dict[str, Any]
    series: dict[str, list[tuple[int, float]]] = field(default_factory=dict)  # metric name -> [(step, value)]
    events: list[dict[str, Any]] = field(default_factory=list)  # population.jsonl records
    last_step: int = 0  # the last step any metric was logged at

    @property
    def start(self) -> int:
        """First step of the learning phase (gradient steps start there)."""
        return 0 if self.algorithm.family == "cql" else int(self.args.get("learning_starts", 0))

    @property
    def total(self) -> int:
        if self.algorithm.family == "cql":
            return int(self.args["num_epochs"]) * int(self.args["steps_per_epoch"])
        return int(self.args["total_timesteps"])


def read_run(run_dir: str | Path) -> Run:
    """config.json (which script and arguments), metrics.jsonl and, for EauDe, population.jsonl of a run folder."""
    path = Path(run_dir)
    if not (path / "config.json").is_file():
        raise UsageError(f"--schedule: {run_dir} is not a run folder (no config.json)")
    if not (path / "metrics.jsonl").is_file():
        raise UsageError(f"--schedule: {run_dir} has no metrics.jsonl")
    try:
        config = json.loads((path / "config.json").read_text())
        algorithm = SCRIPT_ALGORITHMS.get(config.get("script"))
        args = config["args"]
    except (json.JSONDecodeError, KeyError, TypeError, AttributeError):
        raise UsageError(f"--schedule: {path / 'config.json'} is not a run configuration") from None
    if algorithm is None:
        supported = ", ".join(SCRIPT_ALGORITHMS)
        raise UsageError(f"--schedule: {run_dir} comes from {config.get('script')!r}; supported: {supported}")
    needed = (
        "env_id",
        "network_size",
        *(("num_epochs", "steps_per_epoch") if algorithm.family == "cql" else ("total_timesteps",)),
    )
    missing = [key for key in needed if not isinstance(args, dict) or key not in args]
    if missing:
        raise UsageError(f"--schedule: {path / 'config.json'} lacks {', '.join(missing)}")
    run = Run(path, algorithm, args)
    for record in read_jsonl(path / "metrics.jsonl"):
        run.last_step = max(run.last_step, int(record.get("global_step", 0)))
        if str(record.get("name", "")).startswith("sparsity/") and record.get("value") is not None:
            run.series.setdefault(record["name"], []).append((int(record["global_step"]), float(record["value"])))
    for series in run.series.values():
        series.sort(key=lambda point: point[0])
    if (path / "population.jsonl").is_file():
        run.events = sorted(read_jsonl(path / "population.jsonl"), key=lambda e: e["global_step"])
    if algorithm.population and not run.events:
        raise UsageError(f"--schedule: {run_dir} has no population.jsonl (an EauDe run writes one)")
    if "sparsity/target" not in run.series:
        raise UsageError(f"--schedule: {run_dir}/metrics.jsonl has no sparsity/target record")
    return run


def read_runs(paths: Sequence[str], pairs: Sequence[str]) -> list[Run]:
    """The --schedule runs: at most one per algorithm (a pair's ratio compares one run with one run), each of a pair
    that is measured."""
    runs, seen = [], {}
    for path in paths:
        run = read_run(path)
        name = run.algorithm.name
        if name in seen:
            raise UsageError(f"--schedule: {seen[name]} and {path} are both {run.algorithm.title} runs; give one each")
        if run.algorithm.family not in pairs:
            raise UsageError(
                f"--schedule: {path} is a {run.algorithm.title} run, but --pairs leaves out {run.algorithm.family}"
            )
        seen[name] = path
        runs.append(run)
    return runs


def value_at(series: list[tuple[int, Any]], step: int, default: Any) -> Any:
    """The last value logged at or before `step` (piecewise constant), `default` before the first record."""
    index = bisect.bisect_right([s for s, _ in series], step) - 1
    return series[index][1] if index >= 0 else default


def schedule_moments(run: Run) -> list[tuple[int, Moment]]:
    """The run's learning phase as (number of steps, Moment) segments, one per change of any logged sparsity."""
    num_networks = int(run.args.get("num_networks", 1)) if run.algorithm.population else 1
    target = run.series["sparsity/target"]
    online_series = run.series.get("sparsity/online", target)
    actor = run.series.get("sparsity/actor", [])
    last_logged = max(run.last_step, run.events[-1]["global_step"] if run.events else 0)
    end = min(run.total, last_logged)  # an unfinished run is averaged over the steps it logged
    if end <= run.start:
        raise UsageError(f"--schedule: {run.path} logged nothing after learning starts (step {run.start})")
    if run.algorithm.population:  # population.jsonl: sparsities_after of each (critic) population at each event
        populations = sorted({int(e.get("critic", 1)) for e in run.events})
        online_by_population = {
            p: [(e["global_step"], tuple(e["sparsities_after"])) for e in run.events if int(e.get("critic", 1)) == p]
            for p in populations
        }
    steps = {run.start, end}
    for series in (target, online_series, actor):
        steps.update(s for s, _ in series if run.start < s < end)
    steps.update(e["global_step"] for e in run.events if run.start < e["global_step"] < end)
    bounds = sorted(steps)
    segments = []
    for a, b in itertools.pairwise(bounds):
        s_target = value_at(target, a, 0.0)
        if run.algorithm.population:
            online = tuple(s for p in populations for s in value_at(online_by_population[p], a, (0.0,) * num_networks))
        else:
            online = (value_at(online_series, a, 0.0),) * (2 if run.algorithm.family == "sac" else 1)
        targets = (s_target,) * (2 if run.algorithm.family == "sac" else 1)
        segments.append((b - a, Moment(target=targets, online=online, actor=value_at(actor, a, 0.0))))
    return segments


def schedule_flops(run: Run) -> tuple[float, float | None, tuple[int, int]]:
    """Sparse FLOPs per gradient update and per action averaged over the run's learning phase, and that phase."""
    env_id = run.args.get("env_id")
    overrides = {k: run.args[k] for k in ("num_networks", "batch_size", "sparsity_distribution") if k in run.args}
    networks = build_networks(run.algorithm, run.args.get("network_size", "medium"), env_id, overrides)
    model = networks.model()
    segments = schedule_moments(run)
    steps = sum(n for n, _ in segments)
    update = sum(n * model.update(m) for n, m in segments) / steps
    actions = [model.action(m) for _, m in segments]
    action = None if actions[0] is None else sum(n * a for (n, _), a in zip(segments, actions, strict=True)) / steps
    return update, action, (run.start, run.start + steps)


# =====================================================================================================================
# Dense FLOPs: XLA's cost analysis of the scripts' jitted update and act functions
# =====================================================================================================================


def xla_flops(function: Callable, *args: Any) -> float:
    """`flops` of XLA's cost analysis of `function` lowered for `args` (arrays or jax.ShapeDtypeStruct). The lowered,
    not yet optimised program is analysed: no compilation, and the same count on every backend."""
    import jax

    jitted = function if hasattr(function, "lower") else jax.jit(function)
    analysis = jitted.lower(*args).cost_analysis()
    if isinstance(analysis, list | tuple):  # older JAX: one dict per device program
        analysis = analysis[0]
    return float(analysis["flops"])


def population_layout(algorithm: Algorithm, backend: str) -> str:
    """The layout the script's `--population-layout auto` picks: the K convolutional networks unrolled on a CPU (faster
    there), vmap elsewhere and for the SAC critics. XLA counts both layouts within 0.1 % of each other."""
    return "loop" if algorithm.family in ("dqn", "cql") and backend == "cpu" else "vmap"


def dense_flops(algorithm: Algorithm, network_size: str, env_id: str) -> tuple[float, float | None]:
    """XLA FLOPs of one call of the script's jitted update (script defaults: K, batch size, optimiser; the layout it
    picks on this backend) and of its act function for one observation. Shapes only: the learner state comes from the
    script's `init_learner` / `init_state` under `jax.eval_shape`, so nothing is initialised or compiled."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax

    module = script(algorithm.script)
    args = module.Args()
    dims = env_dims(algorithm.family, env_id)
    key = jax.random.PRNGKey(0)
    layout = population_layout(algorithm, jax.default_backend())
    B = args.batch_size
    shape = jax.ShapeDtypeStruct
    if algorithm.family in ("dqn", "cql"):
        network = module.QNetwork(action_dim=dims[0], head_width=module.HEAD_WIDTHS[network_size])
        optimizer = optax.adam(args.learning_rate, eps=args.adam_eps)
        frames = shape((B, 4, 84, 84), jnp.uint8)
        done = "terminations" if algorithm.family == "dqn" else "terminals"
        batch = {
            "observations": frames,
            "actions": shape((B,), jnp.int32),
            "rewards": shape((B,), jnp.float32),
            done: shape((B,), jnp.float32),
            "next_observations": frames,
        }
        extra = (args.cql_alpha,) if algorithm.family == "cql" else ()
        dummy = np.zeros((1, 4, 84, 84), np.uint8)
        one = shape((1, 4, 84, 84), jnp.uint8)
        if algorithm.population:
            learner = jax.eval_shape(
                lambda k: module.init_learner(network, optimizer, k, args.num_networks, dummy), key
            )
            update = xla_flops(module.make_train_step(network, optimizer, args.gamma, *extra, layout), learner, batch)
            act = None
            if algorithm.family == "dqn":
                act = xla_flops(module.make_act(network), learner["params"], learner["cumulated_losses"], one, key)
            return update, act
        learner = jax.eval_shape(lambda k: module.init_learner(network, optimizer, k, dummy), key)
        # PolyPrune's step takes the learner's parts and returns the new params and Adam state (as its main loop)
        parts = (learner["params"], learner["opt_state"], learner["masks"], learner["target_params"])
        update = xla_flops(module.make_train_step(network, optimizer, args.gamma, *extra), *parts, batch)
        act = xla_flops(module.make_act(network), learner["params"], one) if algorithm.family == "dqn" else None
        return update, act

    obs_dim, action_dim = dims
    actor, critic = module.Actor(action_dim=action_dim), module.Critic(width=module.CRITIC_WIDTHS[network_size])
    optimizer = optax.adam(args.learning_rate)
    entropy = -float(action_dim)  # the scripts' target entropy
    if algorithm.population:
        state = jax.eval_shape(
            lambda k: module.init_state(actor, critic, optimizer, obs_dim, action_dim, args.num_networks, k), key
        )
        step = module.make_train_step(actor, critic, optimizer, args.gamma, args.tau, entropy, layout)
    else:
        state = jax.eval_shape(lambda k: module.init_state(actor, critic, optimizer, obs_dim, action_dim, k), key)
        step = module.make_train_step(actor, critic, optimizer, args.gamma, args.tau, entropy)
    batch = {
        "observations": shape((B, obs_dim), jnp.float32),
        "actions": shape((B, action_dim), jnp.float32),
        "rewards": shape((B,), jnp.float32),
        "terminations": shape((B,), jnp.float32),
        "next_observations": shape((B, obs_dim), jnp.float32),
    }
    update = xla_flops(step, state, batch, key)
    act = xla_flops(module.make_act(actor), state["actor"], shape((1, obs_dim), jnp.float32), key)
    return update, act


# =====================================================================================================================
# Training time and peak memory: each script in a fresh child process
# =====================================================================================================================


def peak_rss_bytes() -> int:
    """This process's peak resident set size. /proc's VmHWM belongs to the current program only, whereas Linux carries
    ru_maxrss across exec, so a child's ru_maxrss would start at its parent's size when it was forked."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def child(script_name: str, argv: list[str]) -> None:
    """In the child process: run one script's main, then report its peak memory as the last line of stdout."""
    script(script_name).main(argv)
    import jax

    device = jax.devices()[0]
    stats = device.memory_stats() or {}
    report = {
        "peak_rss_bytes": peak_rss_bytes(),
        "peak_device_bytes": stats.get("peak_bytes_in_use"),
        "backend": jax.default_backend(),
        "device": str(device.device_kind),
        "jax": jax.__version__,
    }
    print("COSTS " + json.dumps(report), flush=True)


def budget(family: str, scale: float) -> tuple[int, int]:
    """(learning starts, total steps) of a timed run: learning starts, one untimed log window, then the timed steps
    (a whole number of log windows, at least one), ending on a population step (a multiple of its period). Offline
    learning starts at gradient step 0: every span from 1000 on reaches the first population step at T = 2000."""
    earliest, period, timed = BUDGETS[family]
    timed = max(LOG_WINDOW, round(timed * scale / LOG_WINDOW) * LOG_WINDOW)
    if family == "cql":
        return 0, LOG_WINDOW + timed
    total = math.ceil((earliest + LOG_WINDOW + timed) / period) * period
    return total - LOG_WINDOW - timed, total


def run_argv(algorithm: Algorithm, common: dict[str, Any], start: int, total: int, warmup: bool) -> list[str]:
    """Command-line arguments of one child run. The warm-up run reaches every jitted function (update, act, the
    first population step or pruning step) in a few dozen gradient steps: compilation, not training, is its cost."""
    argv = ["--network-size", common["network_size"], "--seed", str(common["seed"]), "--checkpoint-interval", "0"]
    if algorithm.family == "dqn":
        if warmup:
            start, total, period = 100, 300, 200
            argv += ["--target-network-frequency", str(period)]
            argv += [] if algorithm.population else ["--pruning-period", str(period)]
        argv += ["--env-id", common["atari_env_id"], "--learning-starts", str(start), "--total-timesteps", str(total)]
        argv += ["--buffer-size", str(total), "--exploration-steps", "0"]
    elif algorithm.family == "cql":
        if warmup:
            total, period = 100, 50
            argv += ["--target-network-frequency", str(period)]
            argv += [] if algorithm.population else ["--pruning-period", str(period)]
        argv += ["--env-id", common["atari_env_id"], "--dataset-dir", common["dataset_dir"]]
        argv += ["--transitions-per-checkpoint", str(common["dataset_size"]), "--num-epochs", "1"]
        argv += ["--steps-per-epoch", str(total), "--eval-episodes", "0"]
    else:
        if warmup:
            start, total = 300, 500
            argv += ["--pruning-period", "400"]
        argv += ["--env-id", common["mujoco_env_id"], "--learning-starts", str(start), "--total-timesteps", str(total)]
        argv += ["--buffer-size", str(total), "--eval-frequency", "0"]
    return argv


def learning_time(run_dir: Path, start: int) -> tuple[float, int]:
    """Seconds and steps between the first and the last charts/SPS record after learning starts (the first log
    window after `start`, which traces and loads the jitted programs, is left out)."""
    points = [
        (r["global_step"], r["time"])
        for r in read_jsonl(run_dir / "metrics.jsonl")
        if r.get("name") == "charts/SPS" and r["global_step"] > start
    ]
    if len(points) < 2:
        raise RuntimeError(f"{run_dir}: fewer than two charts/SPS records after step {start}")
    return points[-1][1] - points[0][1], points[-1][0] - points[0][0]


def run_child(algorithm: Algorithm, argv: list[str], output_dir: Path, env: dict[str, str]) -> dict[str, Any]:
    """One script run in a fresh process; returns its report and run folder."""
    output_dir.mkdir(parents=True)
    argv = [*argv, "--output-dir", str(output_dir), "--exp-name", algorithm.name]
    run = toolbox.run_child(__file__, algorithm.script, argv, "COSTS", cwd=output_dir, env=env)
    if run.report is None:
        raise RuntimeError(f"{algorithm.name} failed (exit code {run.returncode}): {run.error}")
    (run_dir,) = (p for p in output_dir.iterdir() if p.is_dir())
    return {**run.report, "run_dir": run_dir}


def write_dataset(folder: Path, env_id: str, size: int, seed: int) -> None:
    """A small offline dataset in the DQN Replay layout (random policy) for the CQL scripts."""
    command = [
        sys.executable, str(ROOT / "tools" / "write_dqn_replay_dataset.py"), "--env-id", env_id,
        "--output-dir", str(folder), "--num-checkpoints", "1", "--transitions-per-checkpoint", str(size),
        "--seed", str(seed),
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        tail = (result.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"tools/write_dqn_replay_dataset.py failed: {tail}")


def measure(pairs: Sequence[str], common: dict[str, Any], scale: float, log: Callable[[str], None]) -> dict[str, dict]:
    """Training time and peak memory of every algorithm of `pairs`, each timed run in a fresh process."""
    results = {}
    with tempfile.TemporaryDirectory(prefix="costs-") as tmp:
        env = {
            **os.environ,
            "JAX_COMPILATION_CACHE_DIR": str(Path(tmp) / "jax-cache"),
            "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
            "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "-1",
        }
        common = dict(common)
        if "cql" in pairs:
            common["dataset_size"] = 2_000
            common["dataset_dir"] = str(Path(tmp) / "dataset")
            log(f"writing a {common['dataset_size']}-transition {common['atari_env_id']} dataset ...")
            write_dataset(Path(common["dataset_dir"]), common["atari_env_id"], common["dataset_size"], common["seed"])
        for pair in pairs:
            start, total = budget(pair, scale)
            for name in PAIRS[pair]:
                algorithm = ALGORITHMS[name]
                log(f"{name}: warm-up run (fills the compilation cache) ...")
                run_child(algorithm, run_argv(algorithm, common, start, total, True), Path(tmp) / f"{name}-warmup", env)
                log(f"{name}: timed run, steps {start + LOG_WINDOW:,} to {total:,} ...")
                report = run_child(algorithm, run_argv(algorithm, common, start, total, False), Path(tmp) / name, env)
                seconds, steps = learning_time(report.pop("run_dir"), start)
                results[name] = {**report, "seconds": seconds, "steps": steps}
    return results


# =====================================================================================================================
# Tables
# =====================================================================================================================


def ratio(a: float | None, b: float | None) -> str:
    if a is None or b is None or not b:
        return "-"
    return f"x{a / b:.2f}"


def difference_gb(a: float | None, b: float | None) -> str:
    if a is None or b is None:
        return "n/a"
    return f"{(a - b) / 1e9:+.2f} GB"


def level_label(sparsity: float) -> str:
    return f"s = {sparsity:g}"


def markdown_tables(pairs: Sequence[str], results: dict[str, dict[str, Any]], levels: Sequence[float]) -> str:
    """The ratio table beside the paper's values, then the absolute numbers of every algorithm. `results[name]` may
    hold seconds, steps, peak_rss_bytes, peak_device_bytes, update_xla, action_xla, update_sparse / action_sparse
    ({level: FLOPs}) and update_schedule / action_schedule."""

    def get(name: str, key: str, level: float | None = None) -> Any:
        value = results.get(name, {}).get(key)
        return value.get(level) if isinstance(value, dict) else value

    def offline(pair: str, cell: str) -> str:
        return "(offline)" if pair == "cql" else cell

    rows: list[tuple[str, Callable[[str], str], Callable[[str], str]]] = []
    if any("seconds" in results.get(name, {}) for pair in pairs for name in PAIRS[pair]):
        rows += [
            ("Training time", lambda p: ratio(*(get(n, "seconds") for n in PAIRS[p])), lambda p: PAPER[p]["time"]),
            (
                "Peak host memory (RSS)",
                lambda p: difference_gb(*(get(n, "peak_rss_bytes") for n in PAIRS[p])),
                lambda p: "-",
            ),
            (
                "Peak device memory",
                lambda p: difference_gb(*(get(n, "peak_device_bytes") for n in PAIRS[p])),
                lambda p: PAPER[p]["memory"],
            ),
        ]
    rows.append(
        (
            "FLOPs per gradient update, dense (XLA)",
            lambda p: ratio(*(get(n, "update_xla") for n in PAIRS[p])),
            lambda p: PAPER[p]["update"],
        )
    )
    for level in levels:
        rows.append(
            (
                f"FLOPs per gradient update, sparse at {level_label(level)}",
                lambda p, s=level: ratio(*(get(n, "update_sparse", s) for n in PAIRS[p])),
                lambda p: PAPER[p]["update"],
            )
        )
    if any(get(n, "update_schedule") is not None for pair in pairs for n in PAIRS[pair]):
        rows.append(
            (
                "FLOPs per gradient update, sparse, averaged over the runs' schedules",
                lambda p: ratio(*(get(n, "update_schedule") for n in PAIRS[p])),
                lambda p: PAPER[p]["update"],
            )
        )
    rows.append(
        (
            "FLOPs per action, dense (XLA)",
            lambda p: offline(p, ratio(*(get(n, "action_xla") for n in PAIRS[p]))),
            lambda p: PAPER[p]["action"] or "(offline)",
        )
    )
    for level in levels:
        rows.append(
            (
                f"FLOPs per action, sparse at {level_label(level)}",
                lambda p, s=level: offline(p, ratio(*(get(n, "action_sparse", s) for n in PAIRS[p]))),
                lambda p: PAPER[p]["action"] or "(offline)",
            )
        )
    if any(get(n, "action_schedule") is not None for pair in pairs for n in PAIRS[pair]):
        rows.append(
            (
                "FLOPs per action, sparse, averaged over the runs' schedules",
                lambda p: offline(p, ratio(*(get(n, "action_schedule") for n in PAIRS[p]))),
                lambda p: PAPER[p]["action"] or "(offline)",
            )
        )

    lines = ["| EauDe / PolyPrune | " + " | ".join(f"{PAIR_TITLES[p]} | paper" for p in pairs) + " |"]
    lines.append("|---" * (1 + 2 * len(pairs)) + "|")
    for label, measured, paper in rows:
        lines.append(f"| {label} | " + " | ".join(f"{measured(p)} | {paper(p)}" for p in pairs) + " |")

    def number(value: float | None, scale: float, digits: int = 3) -> str:
        return "-" if value is None else f"{value / scale:.{digits}g}"

    header = ["algorithm"]
    if any("seconds" in results.get(n, {}) for p in pairs for n in PAIRS[p]):
        header += ["time (s)", "steps timed", "peak RSS (GB)", "peak device (GB)"]
    header += ["GFLOP/update XLA", *(f"GFLOP/update {level_label(s)}" for s in levels)]
    schedule = any(get(n, "update_schedule") is not None for p in pairs for n in PAIRS[p])
    header += ["GFLOP/update schedule"] if schedule else []
    header += ["MFLOP/action XLA", *(f"MFLOP/action {level_label(s)}" for s in levels)]
    header += ["MFLOP/action schedule"] if schedule else []
    lines += ["", "| " + " | ".join(header) + " |", "|---" * len(header) + "|"]
    for pair in pairs:
        for name in PAIRS[pair]:
            cells = [ALGORITHMS[name].title]
            if "time (s)" in header:
                device = get(name, "peak_device_bytes")
                cells += [
                    number(get(name, "seconds"), 1, 4),
                    f"{get(name, 'steps'):,}" if get(name, "steps") is not None else "-",
                    number(get(name, "peak_rss_bytes"), 1e9),
                    "n/a" if device is None else number(device, 1e9),
                ]
            cells += [number(get(name, "update_xla"), 1e9)]
            cells += [number(get(name, "update_sparse", s), 1e9) for s in levels]
            cells += [number(get(name, "update_schedule"), 1e9)] if schedule else []
            cells += [number(get(name, "action_xla"), 1e6)]
            cells += [number(get(name, "action_sparse", s), 1e6) for s in levels]
            cells += [number(get(name, "action_schedule"), 1e6)] if schedule else []
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def machine(backend: str, device: str, jax_version: str) -> str:
    """The line every measurement is quoted with: architecture, cores, CPU model, JAX version, backend and device."""
    accelerator = backend if device.lower() in (backend, "cpu") else f"{backend} ({device})"
    return f"{platform.machine()}, {os.cpu_count()} cores ({cpu_model()}), JAX {jax_version} on {accelerator}"


# =====================================================================================================================
# Command line
# =====================================================================================================================


def sparsity_list(text: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of numbers") from None
    if not values or not all(0.0 <= v < 1.0 for v in values):
        raise argparse.ArgumentTypeError(f"{text!r}: every sparsity must be in [0, 1)")
    return values


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 < value < math.inf:
        raise argparse.ArgumentTypeError(f"{text!r} must be a positive number")
    return value


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = Parser(
        prog="tools/costs.py",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--network-size", default="medium", choices=["small", "medium", "large"])
    parser.add_argument("--seed", type=int, default=1, help="seed of every run (default 1)")
    parser.add_argument("--pairs", nargs="+", default=list(PAIRS), choices=list(PAIRS), help="default: all three")
    parser.add_argument(
        "--sparsities", type=sparsity_list, default=[0.0, 0.5, 0.9], help="fixed levels for the sparse FLOPs"
    )
    parser.add_argument(
        "--schedule", nargs="+", default=[], metavar="RUN_DIR", help="average the sparse FLOPs over finished runs"
    )
    parser.add_argument("--flops-only", action="store_true", help="count FLOPs only: no training runs")
    parser.add_argument(
        "--budget-scale",
        type=positive_float,
        default=1.0,
        help="scale of the timed steps (default 1: sized for a CPU; 4: whole periods of the population step)",
    )
    parser.add_argument("--atari-env-id", default="Pong-v5", help="game of the DQN and CQL pairs")
    parser.add_argument("--mujoco-env-id", default="HalfCheetah-v5", help="task of the SAC pair")
    args = parser.parse_args(argv)
    if args.seed < 0:
        parser.error("--seed: must be non-negative")
    return args


def check_env_ids(args: argparse.Namespace) -> None:
    import envpool

    known = set(envpool.list_all_envs())
    for flag, env_id, family in (
        ("--atari-env-id", args.atari_env_id, "dqn"),
        ("--mujoco-env-id", args.mujoco_env_id, "sac"),
    ):
        needed = {"dqn": {"dqn", "cql"}, "sac": {"sac"}}[family] & set(args.pairs)
        if not needed:
            continue
        if env_id not in known:
            raise UsageError(f"{flag}: unknown environment {env_id!r}")
        try:
            env_dims(family, env_id)
        except Exception:
            raise UsageError(
                f"{flag}: {env_id!r} is not an {'Atari game' if family == 'dqn' else 'MuJoCo task'}"
            ) from None
        if family == "dqn" and type(envpool.make_spec(env_id)).__name__ != "AtariEnvSpec":
            raise UsageError(f"{flag}: {env_id!r} is not an Atari game")
        if family == "sac" and type(envpool.make_spec(env_id)).__name__ == "AtariEnvSpec":
            raise UsageError(f"{flag}: {env_id!r} is not a MuJoCo task")


def main(argv: Sequence[str] | None = None) -> None:
    raw = list(sys.argv[1:] if argv is None else argv)
    if len(raw) > 1 and raw[0] == "--child":
        child(raw[1], raw[3:])
        return
    args = parse_args(raw)

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    try:
        runs = read_runs(args.schedule, args.pairs)
        check_env_ids(args)
    except UsageError as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    results: dict[str, dict[str, Any]] = {name: {} for pair in args.pairs for name in PAIRS[pair]}
    common = {
        "network_size": args.network_size,
        "seed": args.seed,
        "atari_env_id": args.atari_env_id,
        "mujoco_env_id": args.mujoco_env_id,
    }
    started = time.time()
    backend = device = jax_version = None
    if not args.flops_only:  # before this process touches JAX: on a GPU it would hold memory the children need
        try:
            measured = measure(args.pairs, common, args.budget_scale, log)
        except RuntimeError as error:
            print(f"error: {error}", file=sys.stderr)
            raise SystemExit(1) from None
        for name, report in measured.items():
            results[name].update(report)
        first = next(iter(measured.values()))
        backend, device, jax_version = first["backend"], first["device"], first["jax"]

    log("counting FLOPs ...")
    for pair in args.pairs:
        env_id = args.mujoco_env_id if pair == "sac" else args.atari_env_id
        for name in PAIRS[pair]:
            algorithm = ALGORITHMS[name]
            results[name]["update_xla"], results[name]["action_xla"] = dense_flops(algorithm, args.network_size, env_id)
            networks = build_networks(algorithm, args.network_size, env_id)
            model = networks.model()
            moments = {s: fixed_moment(algorithm, s, networks.num_networks) for s in args.sparsities}
            results[name]["update_sparse"] = {s: model.update(m) for s, m in moments.items()}
            results[name]["action_sparse"] = {s: model.action(m) for s, m in moments.items()}
    schedule_lines = []
    for run in runs:
        update, action, (first_step, last_step) = schedule_flops(run)
        results[run.algorithm.name]["update_schedule"] = update
        results[run.algorithm.name]["action_schedule"] = action
        a = run.args
        schedule_lines.append(
            f"* {run.algorithm.title}: {run.path} ({a.get('env_id')}, {a.get('network_size')} network, "
            f"steps {first_step:,} to {last_step:,})"
        )
    if backend is None:
        import jax

        backend, device, jax_version = jax.default_backend(), str(jax.devices()[0].device_kind), jax.__version__

    print(f"\nTable 2 on {machine(backend, device, jax_version)}")
    print(f"{args.network_size} network, seed {args.seed}, {args.atari_env_id} (DQN, CQL), {args.mujoco_env_id} (SAC)")
    print(f"command: {shlex.join(['python', 'tools/costs.py', *raw])} (took {time.time() - started:.0f} s)\n")
    print(markdown_tables(args.pairs, results, args.sparsities))
    if schedule_lines:
        print("\nSchedules averaged over the learning phase of:\n" + "\n".join(schedule_lines))


if __name__ == "__main__":
    main()
