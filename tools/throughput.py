"""Throughput and memory of the algorithms side by side, printed as a Markdown table.

    uv run python tools/throughput.py                       # EauDeDQN, PolyPruneDQN, DQN on Pong-v5 (small net)
    uv run python tools/throughput.py --layouts             # K = 5 population step: unrolled loop vs jax.vmap
    uv run python tools/throughput.py --algos eaudesac polyprune_sac sac --env-id HalfCheetah-v5
    uv run python tools/throughput.py --population-steps    # EauDe's population step, PolyPrune's mask update

Each algorithm runs in a fresh child process (one at a time, so peak memory is its own) for a short budget; the
learning-phase SPS is the env steps per second logged after learning starts, leaving out the first logging window
(compilation). Peak host memory is the child's maximum resident set size; peak accelerator memory is reported by JAX
when it runs on a GPU. Not a test: speed depends on the machine, so docs/benchmark.md quotes these tables with the machine.
"""

import argparse
import json
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from toolbox import run_child

ROOT = Path(__file__).resolve().parents[1]

# algorithm -> (script, extra arguments); dense baselines are the PolyPrune scripts with s_F = 0
ALGORITHMS = {
    "eaudedqn": ("eaudedqn_atari_jax.py", []),
    "polyprune_dqn": ("polyprune_dqn_atari_jax.py", []),
    "dqn": ("polyprune_dqn_atari_jax.py", ["--final-sparsity", "0"]),
    "eaudesac": ("eaudesac_mujoco_jax.py", []),
    "polyprune_sac": ("polyprune_sac_mujoco_jax.py", []),
    "sac": ("polyprune_sac_mujoco_jax.py", ["--final-sparsity", "0"]),
    "eaudedqn_classic": ("eaudedqn_jax.py", []),
}


def child(script: str, argv: list[str]) -> None:
    """Run one script in this process, then report its peak memory on the last line of stdout."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_target", ROOT / script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.main(argv)
    import jax

    stats = jax.devices()[0].memory_stats() or {}
    report = {
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "peak_device_mb": stats.get("peak_bytes_in_use", 0) / 2**20,
        "backend": jax.default_backend(),
        "device": str(jax.devices()[0].device_kind),
    }
    print("THROUGHPUT " + json.dumps(report), flush=True)


def measure(algo: str, common: list[str], learning_starts: int) -> dict:
    script, extra = ALGORITHMS[algo]
    with tempfile.TemporaryDirectory() as tmp:
        argv = [*common, *extra, "--output-dir", tmp, "--checkpoint-interval", "0", "--exp-name", algo]
        run = run_child(__file__, script, argv, "THROUGHPUT", cwd=Path(tmp))
        if run.report is None:
            raise SystemExit(f"error: {algo} failed:\n{run.stderr[-2000:]}")
        (run_dir,) = Path(tmp).iterdir()
        sps = [
            m["value"]
            for m in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines())
            if m["name"] == "charts/SPS" and m["global_step"] > learning_starts
        ]
    learning_sps = sum(sps[1:]) / len(sps[1:]) if len(sps) > 1 else float("nan")
    return {"algo": algo, "learning_sps": learning_sps, "wall_s": run.seconds, **run.report}


def population_layouts(sizes: list[str], num_networks: int, repeats: int) -> list[dict]:
    """Seconds per K-network gradient step with the loop and vmap layouts of eaudedqn_atari_jax.py."""
    import importlib

    import jax
    import numpy as np
    import optax

    sys.path.insert(0, str(ROOT))
    eaude = importlib.import_module("eaudedqn_atari_jax")
    rows = []
    rng = np.random.default_rng(0)
    batch = {
        "observations": rng.integers(0, 255, (32, 4, 84, 84), dtype=np.uint8),
        "actions": rng.integers(6, size=32).astype(np.int32),
        "rewards": rng.standard_normal(32).astype(np.float32),
        "terminations": np.zeros(32, np.float32),
        "next_observations": rng.integers(0, 255, (32, 4, 84, 84), dtype=np.uint8),
    }
    for size in sizes:
        network = eaude.QNetwork(action_dim=6, head_width=eaude.HEAD_WIDTHS[size])
        optimizer = optax.adam(6.25e-5, eps=1.5e-4)
        dummy = np.zeros((1, 4, 84, 84), np.uint8)
        learner = eaude.init_learner(network, optimizer, jax.random.PRNGKey(0), num_networks, dummy)
        row = {"size": size, "K": num_networks}
        for layout in ("loop", "vmap"):
            step = eaude.make_train_step(network, optimizer, 0.99, layout)
            state, _ = step(learner, batch)  # compiles
            jax.block_until_ready(state)
            start = time.perf_counter()
            for _ in range(repeats):
                state, _ = step(state, batch)
            jax.block_until_ready(state)
            row[layout] = (time.perf_counter() - start) / repeats
        rows.append(row)
    return rows


# --population-steps: script -> (what is timed, network kind); the kernels are those of CartPole-v1 (4 inputs, 2 actions),
# Atari (4 x 84 x 84 frames, 6 actions) and HalfCheetah-v5 (17 observations, 6 actions)
PRUNING_SCRIPTS = {
    "eaudedqn_jax": ("population step", "classic"),
    "eaudedqn_atari_jax": ("population step", "atari"),
    "eaudecql_atari_jax": ("population step", "atari"),
    "eaudesac_mujoco_jax": ("population step", "mujoco"),
    "polyprune_dqn_jax": ("mask update", "classic"),
    "polyprune_dqn_atari_jax": ("mask update", "atari"),
    "polyprune_sac_mujoco_jax": ("mask update", "mujoco"),
}


def pruning_step(script_dir: Path, script: str, size: str, repeats: int, num_networks: int = 5) -> dict:
    """Seconds per EauDe population step (Alg. 1 l. 12-16 / Alg. 2 l. 13-16, K networks, losses 1..K so that the
    tournaments make copies, half-way through a 500k-step run) or per PolyPrune mask update (to sparsity 0.5), called
    as the script's loop calls it, on freshly initialised networks of the script in `script_dir`. The first call
    (compilation included) is reported apart; the time is the median of `repeats` further calls."""
    import importlib.util

    import jax
    import numpy as np
    import optax

    spec = importlib.util.spec_from_file_location(f"{script}_{abs(hash(script_dir))}", script_dir / f"{script}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    kind = PRUNING_SCRIPTS[script][1]
    key, optimizer, args = jax.random.PRNGKey(0), optax.adam(1e-4), module.Args()
    if kind == "mujoco":
        actor, critic = module.Actor(action_dim=6), module.Critic(width=module.CRITIC_WIDTHS[size])
        init = (actor, critic, optimizer, 17, 6) + ((num_networks,) if script.startswith("eaude") else ())
        state = module.init_state(*init, key)
        params = module.take(state["critics"], (0, 0) if script.startswith("eaude") else 0)
    else:
        if kind == "classic":
            network, dummy = module.QNetwork(action_dim=2, hidden_width=module.HIDDEN_WIDTHS[size]), np.zeros((1, 4))
        else:
            network = module.QNetwork(action_dim=6, head_width=module.HEAD_WIDTHS[size])
            dummy = np.zeros((1, 4, 84, 84), np.uint8)
        if script.startswith("eaude"):
            state = module.init_learner(network, optimizer, key, num_networks, dummy)
            params = module.take(state["params"], 0)
        else:
            state = module.init_learner(network, optimizer, key, dummy)
            params = state["params"]
    rng = np.random.default_rng(0)
    if script == "eaudesac_mujoco_jax":
        args.total_timesteps = 500_000
        state["cumulated_losses"] = jax.numpy.tile(jax.numpy.arange(1.0, num_networks + 1), (2, 1))
        sparsities = np.zeros((2, num_networks))
        call = lambda: module.population_step(state, sparsities, 250_000, args, optimizer, rng)[0]  # noqa: E731
    elif script.startswith("eaude"):
        state["cumulated_losses"] = jax.numpy.arange(1.0, num_networks + 1)
        sparsities = np.zeros(num_networks)
        call = lambda: module.population_step(state, sparsities, 250_000, 500_000, args, optimizer, rng)[0]  # noqa: E731
    elif kind == "mujoco":
        call = lambda: module.prune_pair(state, 0.5, args.sparsity_distribution)  # noqa: E731
    else:

        def call() -> Any:
            masks = module.magnitude_masks(state["params"], 0.5, args.sparsity_distribution)
            return module.apply_masks(state["params"], masks), masks

    start = time.perf_counter()
    jax.block_until_ready(call())
    first = time.perf_counter() - start
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(call())
        times.append(time.perf_counter() - start)
    kernels = sum(int(np.prod(s)) for s in module.prunable_shapes(params))
    return {"script": script, "what": PRUNING_SCRIPTS[script][0], "size": size, "kernel_weights": kernels,
            "seconds": float(np.median(times)), "first_seconds": first}  # fmt: skip


def machine() -> str:
    import os

    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        child(sys.argv[2], sys.argv[4:])
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--algos", nargs="+", default=["eaudedqn", "polyprune_dqn", "dqn"], choices=ALGORITHMS)
    parser.add_argument("--env-id", default="Pong-v5")
    parser.add_argument("--network-size", default="small", choices=["small", "medium", "large"])
    parser.add_argument("--total-timesteps", type=int, default=6000)
    parser.add_argument("--learning-starts", type=int, default=2000)
    parser.add_argument("--layouts", action="store_true", help="time the population step layouts instead")
    parser.add_argument("--sizes", nargs="+", default=["small", "medium"], choices=["small", "medium", "large"])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument(
        "--population-steps",
        action="store_true",
        help="time EauDe's population step and PolyPrune's mask update per script and --sizes",
    )
    parser.add_argument("--scripts", nargs="+", default=list(PRUNING_SCRIPTS), choices=PRUNING_SCRIPTS)
    parser.add_argument(
        "--script-dir",
        type=Path,
        default=ROOT,
        help="the checkout whose scripts --population-steps times (default: this one)",
    )
    args = parser.parse_args()

    if args.population_steps:
        import jax

        print(f"\nPopulation step (K = 5) and mask update: seconds per call, the median of {args.repeats} calls after "
              f"the first; {jax.default_backend()} ({machine()})\n")  # fmt: skip
        sizes = " | ".join(f"{size} (s)" for size in args.sizes)
        print(f"| script | what | {sizes} | first call, {args.sizes[-1]} (s) | kernel weights, {args.sizes[-1]} |")
        print("|---|---|" + "---|" * (len(args.sizes) + 2))
        for script in args.scripts:
            rows = []
            for size in args.sizes:
                print(f"timing {script} {size} ...", file=sys.stderr, flush=True)
                rows.append(pruning_step(args.script_dir, script, size, args.repeats))
            seconds = " | ".join(f"{r['seconds']:.3f}" for r in rows)
            print(f"| {script} | {rows[0]['what']} | {seconds} | {rows[-1]['first_seconds']:.1f} "
                  f"| {rows[-1]['kernel_weights']:,} |", flush=True)  # fmt: skip
        return

    if args.layouts:
        import jax

        rows = population_layouts(args.sizes, 5, args.repeats)
        print(f"\nK = 5 population gradient step, batch 32, {jax.default_backend()} ({machine()})\n")
        print("| network | loop (ms) | vmap (ms) | faster |")
        print("|---|---|---|---|")
        for row in rows:
            faster = "loop" if row["loop"] < row["vmap"] else "vmap"
            print(f"| {row['size']} | {1000 * row['loop']:.0f} | {1000 * row['vmap']:.0f} | {faster} |")
        return

    common = [
        "--env-id", args.env_id, "--total-timesteps", str(args.total_timesteps),
        "--learning-starts", str(args.learning_starts),
    ]  # fmt: skip
    if "classic" not in " ".join(args.algos):
        common += ["--network-size", args.network_size]
    rows = []
    for algo in args.algos:
        print(f"measuring {algo} ...", file=sys.stderr, flush=True)
        rows.append(measure(algo, common, args.learning_starts))
    base = next((r["learning_sps"] for r in rows if not r["algo"].startswith("eaude")), None)
    device = (
        rows[0]["backend"] if rows[0]["device"] == rows[0]["backend"] else f"{rows[0]['backend']} {rows[0]['device']}"
    )
    print(f"\n{args.env_id}, {args.network_size} network, {args.total_timesteps} steps "
          f"(learning from {args.learning_starts}); {device} ({machine()})\n")  # fmt: skip
    print("| algorithm | learning-phase SPS | time vs PolyPrune | peak RSS (MB) | peak device (MB) |")
    print("|---|---|---|---|---|")
    for row in rows:
        ratio = f"x{base / row['learning_sps']:.2f}" if base else "-"
        device = f"{row['peak_device_mb']:.0f}" if row["peak_device_mb"] else "-"
        print(f"| {row['algo']} | {row['learning_sps']:.1f} | {ratio} | {row['peak_rss_mb']:.0f} | {device} |")


if __name__ == "__main__":
    main()
