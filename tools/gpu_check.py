"""Measure this repository on one GPU in one command: throughput, the paper's Table 2, determinism, the machine.

    python3 tools/gpu_check.py OUT_DIR                       # on a GPU: at most 8 minutes, compiles included
    uv run python tools/gpu_check.py OUT_DIR --smoke         # the same code paths on a CPU, tiny budgets (CI)
    PYTHONPATH=KIT_TARGET python3 tools/gpu_check.py OUT_DIR # from a GPU image with the kit (tools/gpu_kit.sh)

Writes five files to OUT_DIR (see docs/gpu.md):
* machine.md: GPU name and memory, driver, JAX / jaxlib / CUDA plugin versions, CPU, Python, envpool;
* throughput.md: learning-phase steps per second (as tools/throughput.py: env steps online, gradient steps offline,
  from the runs' charts/SPS records after learning starts, the first window left out) of EauDeDQN (the population
  layout the backend picks and the other one), PolyPruneDQN and DQN on Pong-v5; EauDeSAC, PolyPruneSAC and SAC on
  HalfCheetah-v5; EauDeCQL, PolyPruneCQL and CQL on a small dataset written by tools/write_dqn_replay_dataset.py;
* table2.md: the paper's Table 2 ratios (time, peak device memory from JAX's memory statistics, FLOPs per gradient
  update and per action) beside the paper's values, exactly as tools/costs.py prints them;
* determinism.md: the cost of XLA_FLAGS=--xla_gpu_deterministic_ops=true for EauDeDQN, and whether two seeded runs
  with it log identical metrics;
* results.json: every number above, the commands, and any failure.

How: the training runs are the scripts' own command lines in fresh child processes (tools/costs.py's budgets, which
end every timed span on a population step). First every configuration runs once on a tiny budget to fill a shared JAX
compilation cache, several at a time (compilation is CPU work; on a GPU with XLA_PYTHON_CLIENT_PREALLOCATE=false so
they share the device), then the timed runs go one at a time, so that each timing and each peak memory is the
algorithm's own. The runs are ordered by importance (Table 2's pairs, the other layout, determinism, the dense
baselines) and each gets at most the time left before --time-limit: whatever does not fit is reported as skipped,
and the files are written in any case. Exit code 0 when everything was measured, 1 when something failed or was
skipped, 2 for a usage mistake (one `error:` line).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import importlib.util
import json
import os
import platform
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import costs  # noqa: E402  (tools/costs.py: budgets, FLOP counts and the Table 2 tables, shared so both agree)
import throughput  # noqa: E402  (tools/throughput.py: the population step's timing, the same as on a CPU)
import toolbox  # noqa: E402
from toolbox import Parser, cpu_model, read_jsonl  # noqa: E402

FILES = ("machine.md", "throughput.md", "table2.md", "determinism.md", "results.json")
DETERMINISTIC_FLAG = "--xla_gpu_deterministic_ops=true"
NETWORK_SIZE = "medium"  # the paper's Table 2
# --budget-scale of tools/costs.py per family on a GPU: whole periods of the population step for DQN (one T of 8 000
# env steps) and CQL (two T of 2 000 gradient steps); SAC times 4 000 env steps (4 population steps), which keeps
# its 2 x 5 wide critics (width 1280) inside the 8 minutes.
GPU_SCALES = {"dqn": 4.0, "cql": 4.0, "sac": 2.0}
MAX_CHILD_SECONDS = 180.0  # on a GPU, where a run takes well under a minute: one that hangs leaves time to the others
DATASET_SIZE = 2_000  # transitions of the CQL dataset (random policy), as tools/costs.py
# --smoke: tiny budgets on a CPU. Every configuration keeps its code path (population, layouts, pruning, Adam, the
# dataset, the determinism flag); only sizes shrink: small network, K = 2, small batches, few gradient steps, and
# periods of 1 000 steps so that the span between the two charts/SPS records still ends on a population step.
SMOKE_FLAGS = {
    "dqn": ["--batch-size", "4", "--train-frequency", "100"],
    "cql": ["--batch-size", "2"],
    "sac": ["--batch-size", "4"],
}
SMOKE_POPULATION = ["--num-networks", "2", "--tournament-size", "2"]
SMOKE_PERIODS = {
    "dqn": (["--target-network-frequency", "1000"], ["--target-network-frequency", "1000", "--pruning-period", "1000"]),
    "cql": (["--target-network-frequency", "1000"], ["--target-network-frequency", "1000", "--pruning-period", "1000"]),
    "sac": (["--pruning-period", "1000"], ["--pruning-period", "1000"]),
}
SMOKE_BUDGETS = {"dqn": (900, 2_000), "cql": (0, 2_000), "sac": (900, 2_000)}  # (learning starts, total steps)
# Rows --smoke leaves to the GPU because they run the same code as a row it keeps: the dense baselines are PolyPrune's
# with --final-sparsity 0, the other layout is EauDeDQN's with a flag, the second deterministic run repeats the first
# (whose comparison with the default run takes the same code path as the comparison of the two).
SMOKE_OMITTED = ("dqn", "sac", "cql", "eaudedqn_other", "eaudedqn_det2")


@dataclass(frozen=True)
class Config:
    """One measured configuration: a script (tools/costs.py's Algorithm) with extra flags and environment."""

    key: str
    title: str
    algorithm: costs.Algorithm
    flags: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()
    layout: str = "-"  # population layout, filled in for EauDe's DQN and CQL


def configs(backend_layout: str) -> list[Config]:
    """Every configuration, in the order of importance in which they are timed (Table 2's pairs first). `backend_layout` is the layout the
    scripts' `--population-layout auto` picks on the backend (vmap on a GPU, loop on a CPU)."""
    a = costs.ALGORITHMS
    other = "loop" if backend_layout == "vmap" else "vmap"
    dense = ("--final-sparsity", "0")
    return [
        Config("eaudedqn", "EauDeDQN", a["eaudedqn"], layout=f"{backend_layout} (auto)"),
        Config("polyprune_dqn", "PolyPruneDQN", a["polyprune_dqn"]),
        Config("eaudesac", "EauDeSAC", a["eaudesac"], layout="vmap (auto)"),
        Config("polyprune_sac", "PolyPruneSAC", a["polyprune_sac"]),
        Config("eaudecql", "EauDeCQL", a["eaudecql"], layout=f"{backend_layout} (auto)"),
        Config("polyprune_cql", "PolyPruneCQL", a["polyprune_cql"]),
        Config("eaudedqn_other", "EauDeDQN", a["eaudedqn"], ("--population-layout", other), layout=other),
        Config("eaudedqn_det1", "EauDeDQN, deterministic ops, run 1", a["eaudedqn"], env=(("XLA_FLAGS", "det"),)),
        Config("eaudedqn_det2", "EauDeDQN, deterministic ops, run 2", a["eaudedqn"], env=(("XLA_FLAGS", "det"),)),
        # last: PolyPrune's code with s_F = 0, whose cost is close to PolyPrune's own
        Config("dqn", "DQN", a["polyprune_dqn"], dense),
        Config("sac", "SAC", a["polyprune_sac"], dense),
        Config("cql", "CQL", a["polyprune_cql"], dense),
    ]


@dataclass
class Plan:
    """Budgets and common flags of one check (GPU or --smoke)."""

    smoke: bool
    seed: int
    atari_env_id: str
    mujoco_env_id: str
    budgets: dict[str, tuple[int, int]]  # family -> (learning starts, total steps) of the timed runs
    dataset_dir: str = ""
    cache_dir: str = ""
    results: dict[str, dict[str, Any]] = field(default_factory=dict)

    def common(self) -> dict[str, Any]:
        return {
            "network_size": "small" if self.smoke else NETWORK_SIZE,
            "seed": self.seed,
            "atari_env_id": self.atari_env_id,
            "mujoco_env_id": self.mujoco_env_id,
            "dataset_dir": self.dataset_dir,
            "dataset_size": DATASET_SIZE,
        }

    def argv(self, config: Config, warmup: bool) -> list[str]:
        """The child's command-line arguments: tools/costs.py's (the same budgets and warm-up), then this check's."""
        family = config.algorithm.family
        start, total = self.budgets[family]
        argv = costs.run_argv(config.algorithm, self.common(), start, total, warmup)
        if self.smoke:
            argv += SMOKE_FLAGS[family] + (SMOKE_POPULATION if config.algorithm.population else [])
            if not warmup:  # the warm-up keeps tools/costs.py's short periods
                eaude, polyprune = SMOKE_PERIODS[family]
                argv += eaude if config.algorithm.population else polyprune
        return argv + list(config.flags)

    def timeout(self, clock: Clock) -> float:
        """Seconds a child may take: what is left, and at most MAX_CHILD_SECONDS on a GPU."""
        return clock.left() if self.smoke else min(clock.left(), MAX_CHILD_SECONDS)

    def env(self, config: Config, preallocate: bool) -> dict[str, str]:
        env = {
            **os.environ,
            "JAX_COMPILATION_CACHE_DIR": self.cache_dir,
            "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
            "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "-1",
        }
        if self.smoke:
            env["JAX_PLATFORMS"] = "cpu"
        if not preallocate:
            env["XLA_PYTHON_CLIENT_PREALLOCATE"] = "false"
        if dict(config.env).get("XLA_FLAGS") == "det":
            env["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {DETERMINISTIC_FLAG}".strip()
        return env


class RunFailed(Exception):
    pass


# =====================================================================================================================
# Child processes
# =====================================================================================================================


def versions() -> dict[str, str | None]:
    from importlib import metadata

    found = {}
    for package in ("jax", "jaxlib", "jax-cuda13-plugin", "jax-cuda12-plugin", "flax", "optax", "numpy", "envpool"):
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            found[package] = None
    return found


def device_report() -> dict[str, Any]:
    """What JAX says about its first device, and this process's peak memory."""
    import jax

    device = jax.devices()[0]
    stats = device.memory_stats() or {}
    return {
        "backend": jax.default_backend(),
        "device": str(device.device_kind),
        "device_count": jax.device_count(),
        "bytes_limit": stats.get("bytes_limit"),
        "peak_device_bytes": stats.get("peak_bytes_in_use"),
        "peak_rss_bytes": costs.peak_rss_bytes(),
        "versions": versions(),
    }


def child(mode: str, argv: list[str]) -> None:
    """In a child process: run one script's main (mode = its file name), count FLOPs (mode "flops") or only probe the
    device (mode "probe"), then print one REPORT line as the last line of stdout."""
    report: dict[str, Any] = {}
    if mode == "flops":
        network_size, atari, mujoco, levels = argv[0], argv[1], argv[2], [float(s) for s in argv[3].split(",")]
        for pair in costs.PAIRS:
            env_id = mujoco if pair == "sac" else atari
            for name in costs.PAIRS[pair]:
                algorithm = costs.ALGORITHMS[name]
                update, action = costs.dense_flops(algorithm, network_size, env_id)
                networks = costs.build_networks(algorithm, network_size, env_id)
                model = networks.model()
                moments = {s: costs.fixed_moment(algorithm, s, networks.num_networks) for s in levels}
                report[name] = {
                    "update_xla": update,
                    "action_xla": action,
                    "update_sparse": {s: model.update(m) for s, m in moments.items()},
                    "action_sparse": {s: model.action(m) for s, m in moments.items()},
                }
    elif mode == "population":
        sizes, repeats = argv[0].split(","), int(argv[1])
        report["population"] = [
            throughput.pruning_step(ROOT, script, size, repeats)
            for script in throughput.PRUNING_SCRIPTS
            for size in sizes
        ]
    elif mode != "probe":
        costs.script(mode).main(argv)
    report["device"] = device_report()
    print("REPORT " + json.dumps(report), flush=True)


def run_child(mode: str, argv: list[str], env: dict[str, str], cwd: Path, timeout: float) -> dict[str, Any]:
    """Run `child(mode, argv)` in a fresh process with at most `timeout` seconds; its report, or RunFailed."""
    if timeout <= 0:
        raise RunFailed("skipped: no time left before --time-limit")
    try:
        run = toolbox.run_child(__file__, mode, argv, "REPORT", cwd=cwd, env=env, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise RunFailed(f"stopped after {timeout:.0f} s: --time-limit reached") from None
    if run.report is None:
        raise RunFailed(f"exit code {run.returncode}: {run.error}")
    return run.report


# =====================================================================================================================
# Measurements
# =====================================================================================================================


class Clock:
    def __init__(self, limit: float) -> None:
        self.start, self.limit = time.time(), limit

    def left(self) -> float:
        return self.limit - (time.time() - self.start)

    def elapsed(self) -> float:
        return time.time() - self.start


def metric_records(run_dir: Path) -> dict[str, list]:
    """What two seeded runs must agree on: every metrics.jsonl record but charts/SPS (wall clock), without its time,
    and every population.jsonl record (EauDe) without its time fields."""
    records = {"metrics.jsonl": [], "population.jsonl": []}
    for record in read_jsonl(run_dir / "metrics.jsonl"):
        if record.get("name") != "charts/SPS":
            records["metrics.jsonl"].append((record.get("global_step"), record.get("name"), record.get("value")))
    if (run_dir / "population.jsonl").is_file():
        for record in read_jsonl(run_dir / "population.jsonl"):
            records["population.jsonl"].append({k: v for k, v in record.items() if "time" not in k})
    return records


def compare_runs(a: Path, b: Path) -> dict[str, Any]:
    """Whether two runs logged identical metrics; the first difference if not."""
    ra, rb = metric_records(a), metric_records(b)
    compared = {name: min(len(ra[name]), len(rb[name])) for name in ra}
    for name in ra:
        for x, y in zip(ra[name], rb[name], strict=False):
            if x != y:
                return {"identical": False, "compared": compared, "first_difference": {"file": name, "a": x, "b": y}}
        if len(ra[name]) != len(rb[name]):
            return {"identical": False, "compared": compared, "first_difference": {"file": name, "a": "length"}}
    return {"identical": True, "compared": compared}


def measure(plan: Plan, clock: Clock, workers: int, log: Callable[[str], None], tmp: Path) -> None:
    """The dataset, the warm-up runs and the FLOP count (in parallel), then the timed runs one at a time."""
    plan.dataset_dir = str(tmp / "dataset")
    plan.cache_dir = str(tmp / "jax-cache")
    results = plan.results
    backend_layout = "loop" if plan.smoke else "vmap"
    all_configs = configs(backend_layout)
    if plan.smoke:
        for config in all_configs:
            if config.key in SMOKE_OMITTED:
                results[config.key] = {
                    "title": config.title, "family": config.algorithm.family, "layout": config.layout,
                    "flags": list(config.flags), "omitted": "a GPU row only (--smoke)",
                }  # fmt: skip
        all_configs = [c for c in all_configs if c.key not in results]

    def dataset() -> None:
        log(f"writing a {DATASET_SIZE:,}-transition {plan.atari_env_id} dataset for the CQL runs ...")
        try:
            costs.write_dataset(Path(plan.dataset_dir), plan.atari_env_id, DATASET_SIZE, plan.seed)
        except RuntimeError as error:
            results["dataset"] = {"error": str(error)}

    def flops() -> None:
        log("counting FLOPs (XLA and sparse) ...")
        levels = ",".join(str(s) for s in (0.0, 0.5, 0.9))
        argv = [plan.common()["network_size"], plan.atari_env_id, plan.mujoco_env_id, levels]
        env = plan.env(Config("flops", "", costs.ALGORITHMS["eaudedqn"]), preallocate=False)
        try:
            report = run_child("flops", argv, env, tmp, plan.timeout(clock))
            for counts in report.values():  # JSON made the sparsity levels strings; tools/costs.py's table wants floats
                for key in ("update_sparse", "action_sparse"):
                    if key in counts:
                        counts[key] = {float(level): value for level, value in counts[key].items()}
            results["flops"] = report
        except RunFailed as error:
            results["flops"] = {"error": str(error)}

    def warmup(config: Config) -> None:
        log(f"{config.key}: warm-up run (fills the compilation cache) ...")
        out = tmp / "warmup" / config.key
        out.mkdir(parents=True)
        argv = [*plan.argv(config, True), "--output-dir", str(out), "--exp-name", config.key]
        try:
            run_child(config.algorithm.script, argv, plan.env(config, preallocate=False), out, plan.timeout(clock))
        except RunFailed as error:
            results.setdefault(config.key, {})["warmup_error"] = str(error)

    # The FLOP count only traces the programs (nothing is compiled or run on the device): it runs beside the dataset
    # and the warm-ups, and with --smoke, which has no warm-ups and whose timings mean nothing, beside the timed runs.
    background = concurrent.futures.ThreadPoolExecutor(max_workers=1)
    counting = background.submit(flops)
    dataset()
    # Warm-ups: one per distinct set of compiled programs (the second deterministic run shares the first one's).
    # Not in --smoke: it would double its time, and its timings mean nothing.
    warm = [] if plan.smoke else [c for c in all_configs if c.key != "eaudedqn_det2"]
    if "dataset" in results:
        warm = [c for c in warm if c.algorithm.family != "cql"]
    with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
        for future in [pool.submit(warmup, c) for c in warm]:
            future.result()
    if not plan.smoke:
        counting.result()

    for config in all_configs:
        family = config.algorithm.family
        result = results.setdefault(config.key, {})
        result.update(title=config.title, family=family, layout=config.layout, flags=list(config.flags))
        if family == "cql" and "dataset" in results:
            result["error"] = "no dataset: " + results["dataset"]["error"]
            continue
        start, total = plan.budgets[family]
        out = tmp / "timed" / config.key
        out.mkdir(parents=True)
        argv = [*plan.argv(config, False), "--output-dir", str(out), "--exp-name", config.key]
        result["command"] = shlex.join(["python", config.algorithm.script, *argv[: argv.index("--output-dir")]])
        if dict(config.env):
            result["command"] = f"XLA_FLAGS={DETERMINISTIC_FLAG} " + result["command"]
        first = (start // costs.LOG_WINDOW + 1) * costs.LOG_WINDOW  # the first charts/SPS record after learning starts
        log(f"{config.key}: timed run, steps {first:,} to {total:,} ({clock.left():.0f} s left) ...")
        try:
            report = run_child(
                config.algorithm.script, argv, plan.env(config, preallocate=True), out, plan.timeout(clock)
            )
            (run_dir,) = (p for p in out.iterdir() if p.is_dir())
            seconds, steps = costs.learning_time(run_dir, start)
            if seconds <= 0:
                raise RuntimeError(f"{run_dir.name}: no time between the charts/SPS records")
        except (RunFailed, RuntimeError) as error:
            result["error"] = str(error)
            log(f"{config.key}: {error}")
            continue
        device = report["device"]
        result.update(
            seconds=seconds,
            steps=steps,
            sps=steps / seconds,
            peak_rss_bytes=device["peak_rss_bytes"],
            peak_device_bytes=device["peak_device_bytes"] if device["backend"] != "cpu" else None,
            run_dir=str(run_dir),
        )
    # EauDe's population step and PolyPrune's mask update alone, per script and size (as tools/throughput.py times them)
    sizes, repeats = ("small", 1) if plan.smoke else ("small,medium,large", 5)
    log(f"population steps and mask updates, {sizes} ({clock.left():.0f} s left) ...")
    population_env = plan.env(Config("population", "", costs.ALGORITHMS["eaudedqn"]), preallocate=False)
    try:
        report = run_child("population", [sizes, str(repeats)], population_env, tmp, plan.timeout(clock))
        results["population_steps"] = report["population"]
    except RunFailed as error:
        results["population_steps"] = {"error": str(error)}
    counting.result()
    background.shutdown()
    runs = {key: Path(r["run_dir"]) for key, r in results.items() if isinstance(r, dict) and "run_dir" in r}
    determinism: dict[str, Any] = {}
    if "eaudedqn_det1" in runs and "eaudedqn_det2" in runs:
        determinism["deterministic_runs"] = compare_runs(runs["eaudedqn_det1"], runs["eaudedqn_det2"])
    if "eaudedqn" in runs and "eaudedqn_det1" in runs:
        determinism["default_vs_deterministic"] = compare_runs(runs["eaudedqn"], runs["eaudedqn_det1"])
    results["determinism"] = determinism
    for r in results.values():
        if isinstance(r, dict):
            r.pop("run_dir", None)  # temporary folders


# =====================================================================================================================
# Output
# =====================================================================================================================


def gb(value: float | None) -> str:
    return "n/a" if value is None else f"{value / 1e9:.2f}"


def status(result: dict[str, Any]) -> str | None:
    """None when measured, else why not (one short phrase for a table cell)."""
    if "sps" in result:
        return None
    return result.get("omitted") or result.get("error") or result.get("warmup_error") or "not run"


def machine_table(probe: dict[str, Any], gpus: list[dict[str, str]], plan: Plan, command: str, took: float) -> str:
    device = probe.get("device", {})
    v = device.get("versions", {})
    plugin = next((f"{p} {v[p]}" for p in ("jax-cuda13-plugin", "jax-cuda12-plugin") if v.get(p)), "none")
    rows = [
        ("GPU", ", ".join(g["name"] for g in gpus) or "none (nvidia-smi not found)"),
        ("GPU memory", ", ".join(g["memory"] for g in gpus) or "-"),
        ("driver", ", ".join(sorted({g["driver"] for g in gpus})) or "-"),
        ("JAX backend and device", f"{device.get('backend')} ({device.get('device')}, {device.get('device_count')})"),
        ("device memory JAX may use", gb(device.get("bytes_limit")) + " GB" if device.get("bytes_limit") else "n/a"),
        ("jax / jaxlib", f"{v.get('jax')} / {v.get('jaxlib')}"),
        ("CUDA plugin", plugin),
        ("flax / optax / numpy", f"{v.get('flax')} / {v.get('optax')} / {v.get('numpy')}"),
        ("envpool", str(v.get("envpool"))),
        ("CPU", f"{cpu_model()}, {os.cpu_count()} cores, {platform.machine()}"),
        ("Python", f"{platform.python_version()} ({sys.executable})"),
        ("mode", "--smoke (CPU, tiny budgets: the numbers mean nothing)" if plan.smoke else "GPU"),
        ("command", f"`{command}` (took {took:.0f} s)"),
    ]
    return "# Machine\n\n| | |\n|---|---|\n" + "\n".join(f"| {k} | {value} |" for k, value in rows) + "\n"


def throughput_table(plan: Plan, header: str) -> str:
    results = plan.results
    base = {"dqn": "polyprune_dqn", "cql": "polyprune_cql", "sac": "polyprune_sac"}
    lines = [
        "# Learning-phase throughput\n",
        header,
        "Steps per second between the first and the last charts/SPS record after learning starts (env steps online,"
        " gradient steps for CQL); time vs PolyPrune = PolyPrune's steps per second / this one's.\n",
        "| algorithm | environment | population layout | steps / s | steps timed | seconds | time vs PolyPrune"
        " | peak device (GB) | peak host RSS (GB) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    families, order = ["dqn", "sac", "cql"], [c.key for c in configs("vmap") if not c.key.startswith("eaudedqn_det")]
    rows = [k for k in order if "family" in results.get(k, {})]
    for key in sorted(rows, key=lambda k: (families.index(results[k]["family"]), order.index(k))):
        result = results[key]
        family = result["family"]
        env_id = {"dqn": plan.atari_env_id, "sac": plan.mujoco_env_id}.get(family, f"{plan.atari_env_id} dataset")
        why = status(result)
        if why:
            lines.append(f"| {result['title']} | {env_id} | {result['layout']} | {why} | | | | | |")
            continue
        reference = results.get(base[family], {}).get("sps")
        ratio = f"x{reference / result['sps']:.2f}" if reference else "-"
        lines.append(
            f"| {result['title']} | {env_id} | {result['layout']} | {result['sps']:.1f} | {result['steps']:,} | "
            f"{result['seconds']:.2f} | {ratio} | {gb(result['peak_device_bytes'])} | {gb(result['peak_rss_bytes'])} |"
        )
    lines += [
        "\n## Population step and mask update\n",
        "EauDe's population step (K = 5, Alg. 1 l. 12-16 / Alg. 2 l. 13-16) and PolyPrune's mask update (to sparsity"
        " 0.5), alone, as `tools/throughput.py --population-steps` times them: the median of the calls after the"
        " first, and the first call, compilation included.\n",
    ]
    steps = plan.results.get("population_steps", {"error": "not run"})
    if isinstance(steps, dict):
        return "\n".join([*lines, f"not measured: {steps['error']}"]) + "\n"
    lines += ["| script | what | network | kernel weights | seconds | first call (s) |", "|---|---|---|---|---|---|"]
    for r in steps:
        lines.append(f"| {r['script']} | {r['what']} | {r['size']} | {r['kernel_weights']:,} | {r['seconds']:.4f} | "
                     f"{r['first_seconds']:.1f} |")  # fmt: skip
    return "\n".join(lines) + "\n"


def table2(plan: Plan, header: str) -> str:
    flops = plan.results.get("flops", {})
    merged: dict[str, dict[str, Any]] = {}
    for name in costs.ALGORITHMS:
        timed = plan.results.get(name, {})
        merged[name] = {k: timed[k] for k in ("seconds", "steps", "peak_rss_bytes", "peak_device_bytes") if k in timed}
        merged[name].update(flops.get(name, {}))
    notes = []
    if "error" in flops:
        notes.append(f"FLOPs not counted: {flops['error']}")
    notes += [f"{name}: {status(r)}" for name, r in plan.results.items() if name in costs.ALGORITHMS and status(r)]
    lines = ["# Table 2: what EauDe costs over PolyPrune\n", header]
    lines.append(
        "Ratios EauDe / PolyPrune as tools/costs.py prints them (docs/costs.md): time over the same timed steps,"
        " peak device memory from JAX's memory statistics (n/a on a CPU), FLOPs per gradient update and per action.\n"
    )
    lines.append(costs.markdown_tables(list(costs.PAIRS), merged, [0.0, 0.5, 0.9]))
    if notes:
        lines.append("\nNot measured:\n\n" + "\n".join(f"* {n}" for n in notes))
    return "\n".join(lines) + "\n"


def determinism_table(plan: Plan, header: str) -> str:
    results = plan.results
    default = results.get("eaudedqn", {}).get("sps")
    lines = [
        "# Deterministic GPU operations\n",
        header,
        f"EauDeDQN with `XLA_FLAGS={DETERMINISTIC_FLAG}` (same seed, same budget) against its default run.\n",
        "| run | XLA_FLAGS | steps / s | cost vs default |",
        "|---|---|---|---|",
    ]
    for key, flag in (("eaudedqn", "default"), ("eaudedqn_det1", DETERMINISTIC_FLAG), ("eaudedqn_det2", "same")):
        result = results.get(key, {})
        why = status(result)
        if why:
            lines.append(f"| {result.get('title', key)} | {flag} | {why} | |")
            continue
        cost = f"x{default / result['sps']:.2f} the time" if default and key != "eaudedqn" else "-"
        lines.append(f"| {result['title']} | {flag} | {result['sps']:.1f} | {cost} |")
    lines.append("")
    determinism = results.get("determinism", {})
    for key, label in (
        ("deterministic_runs", "Two seeded runs with the flag"),
        ("default_vs_deterministic", "The default run and the first run with the flag"),
    ):
        verdict = determinism.get(key)
        if verdict is None:
            lines.append(f"* {label}: not compared (a run is missing).")
            continue
        counts = ", ".join(f"{n} records of {name}" for name, n in verdict["compared"].items() if n)
        if verdict["identical"]:
            lines.append(f"* {label}: **identical** metrics ({counts}; charts/SPS and times left out).")
        else:
            lines.append(
                f"* {label}: **different** metrics ({counts}); first difference: {verdict['first_difference']}."
            )
    return "\n".join(lines) + "\n"


def nvidia_smi() -> list[dict[str, str]]:
    if shutil.which("nvidia-smi") is None:
        return []
    query = ["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"]
    try:
        output = subprocess.run(query, capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return []
    gpus = []
    for line in output.strip().splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) == 3:
            gpus.append({"name": parts[0], "memory": parts[1], "driver": parts[2]})
    return gpus


def to_json(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): to_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_json(v) for v in value]
    return value


# =====================================================================================================================
# Command line
# =====================================================================================================================


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = Parser(
        prog="tools/gpu_check.py",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("out_dir", metavar="OUT_DIR", help="folder that receives the five files (created if needed)")
    parser.add_argument(
        "--smoke", action="store_true", help="CPU, tiny budgets: every code path, numbers that mean nothing"
    )
    parser.add_argument(
        "--time-limit", type=costs.positive_float, default=None, help="seconds for everything (default 450; smoke 300)"
    )
    parser.add_argument(
        "--budget-scale", type=costs.positive_float, default=None, help="tools/costs.py's scale for every family"
    )
    parser.add_argument("--seed", type=int, default=1, help="seed of every run (default 1)")
    parser.add_argument("--atari-env-id", default="Pong-v5", help="game of the DQN and CQL runs")
    parser.add_argument("--mujoco-env-id", default="HalfCheetah-v5", help="task of the SAC runs")
    args = parser.parse_args(argv)
    if args.seed < 0:
        parser.error("--seed: must be non-negative")
    if args.smoke and args.budget_scale is not None:
        parser.error("--budget-scale: --smoke has its own tiny budgets")
    out = Path(args.out_dir)
    if out.exists() and not out.is_dir():
        parser.error(f"OUT_DIR: {out} exists and is not a folder")
    missing = [m for m in ("envpool", "gymnasium", "tyro", "tensorboardX") if importlib.util.find_spec(m) is None]
    if missing:
        parser.error(f"{', '.join(missing)} not importable: install the kit (tools/gpu_kit.sh, docs/gpu.md)")
    return args


def main(argv: Sequence[str] | None = None) -> None:
    raw = list(sys.argv[1:] if argv is None else argv)
    if len(raw) > 1 and raw[0] == "--child":
        child(raw[1], raw[3:])
        return
    args = parse_args(raw)
    # SIGTERM (a job scheduler, the device machine's time limit) as an exception: subprocess.run then kills the child
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    clock = Clock(args.time_limit or (300.0 if args.smoke else 450.0))

    def log(message: str) -> None:
        print(f"[{clock.elapsed():5.0f} s] {message}", file=sys.stderr, flush=True)

    if args.smoke:
        budgets = SMOKE_BUDGETS
    else:
        budgets = {f: costs.budget(f, args.budget_scale or GPU_SCALES[f]) for f in GPU_SCALES}
    plan = Plan(args.smoke, args.seed, args.atari_env_id, args.mujoco_env_id, budgets)
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        log("probing the device ...")
        probe_env = plan.env(Config("probe", "", costs.ALGORITHMS["eaudedqn"]), preallocate=False)
        try:
            probe = run_child("probe", [], probe_env, Path(tmp), clock.left())
        except RunFailed as error:
            print(f"error: JAX does not start in a child process: {error}", file=sys.stderr)
            raise SystemExit(1) from None
        backend = probe["device"]["backend"]
        if backend == "cpu" and not args.smoke:
            print("error: JAX sees no GPU (backend cpu): on a CPU run --smoke (or tools/costs.py)", file=sys.stderr)
            raise SystemExit(2)
        # compilation is CPU work: a few warm-ups at a time, one per 4 cores (one on a 2-core CPU)
        workers = max(1, min(4, (os.cpu_count() or 1) // 4))
        measure(plan, clock, workers, log, Path(tmp))
    took = clock.elapsed()
    gpus = nvidia_smi()
    command = shlex.join(["python", "tools/gpu_check.py", *raw])
    device = probe["device"]
    header = (
        f"{costs.machine(device['backend'], device['device'], device['versions']['jax'])}; "
        f"{plan.common()['network_size']} network, seed {plan.seed}; {'--smoke, ' if plan.smoke else ''}"
        f"budgets (learning starts, total steps): "
        + ", ".join(f"{f.upper()} {s:,}-{t:,}" for f, (s, t) in plan.budgets.items())
        + f"; `{command}`\n"
    )
    (out / "machine.md").write_text(machine_table(probe, gpus, plan, command, took))
    (out / "throughput.md").write_text(throughput_table(plan, header))
    (out / "table2.md").write_text(table2(plan, header))
    (out / "determinism.md").write_text(determinism_table(plan, header))
    summary = {
        "command": command,
        "seconds": took,
        "smoke": plan.smoke,
        "budgets": plan.budgets,
        "machine": {"gpus": gpus, **probe["device"], "cpu": cpu_model(), "cpu_count": os.cpu_count()},
        "results": plan.results,
    }
    (out / "results.json").write_text(json.dumps(to_json(summary), indent=2) + "\n")
    problems = [
        f"{key}: {status(r)}" for key, r in plan.results.items() if "family" in r and "omitted" not in r and status(r)
    ]
    problems += [
        f"{key}: {r['error']}"
        for key, r in plan.results.items()
        if key in ("flops", "dataset", "population_steps") and isinstance(r, dict) and "error" in r
    ]
    log(f"wrote {', '.join(FILES)} to {out} in {took:.0f} s")
    for problem in problems:
        print(f"not measured: {problem}", file=sys.stderr)
    raise SystemExit(1 if problems else 0)


if __name__ == "__main__":
    main()
