"""Fingerprint the numbers every script produces, to prove that a refactor changes none of them.

Runs each algorithm script once with a tiny seeded budget on the CPU and prints one line per run: the script, the
SHA-256 of its `metrics.jsonl` without the wall-clock `time` column and `charts/SPS` and of its `population.jsonl`, and the final
return and target sparsity. Runs on the CPU are deterministic given the seed, the locked package versions and the
CPU type, so two fingerprints taken on the same machine must be equal line for line:

    uv run python tools/fingerprint.py > before.txt
    # ... change the code ...
    uv run python tools/fingerprint.py > after.txt && diff before.txt after.txt && echo same numbers

`--keep DIR` keeps the run folders (for a look at what differs); `--scripts` picks a subset.
"""

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ONLINE_ATARI = ["--env-id", "Breakout-v5", "--network-size", "small", "--total-timesteps", "1600"]
ONLINE_ATARI += [
    "--learning-starts",
    "400",
    "--buffer-size",
    "4000",
    "--batch-size",
    "8",
    "--exploration-steps",
    "1000",
]
ONLINE_ATARI += ["--target-network-frequency", "200", "--checkpoint-interval", "0"]
CLASSIC = ["--env-id", "CartPole-v1", "--total-timesteps", "3000", "--learning-starts", "500"]
CLASSIC += ["--target-network-frequency", "250", "--checkpoint-interval", "0"]
# The classic scripts' defaults were G = 4 and a 50k-step epsilon decay when these lines were first recorded; written
# out, a change of defaults leaves the fingerprint to what it is for: the algorithm's numbers.
CLASSIC += ["--train-frequency", "4", "--exploration-steps", "50000"]
OFFLINE = ["--network-size", "small", "--num-epochs", "2", "--steps-per-epoch", "60", "--batch-size", "8"]
OFFLINE += ["--target-network-frequency", "20", "--transitions-per-checkpoint", "1000", "--eval-episodes", "1"]
OFFLINE += ["--eval-max-episode-steps", "300", "--checkpoint-interval", "0"]
MUJOCO = ["--env-id", "Hopper-v5", "--network-size", "small", "--total-timesteps", "1500", "--learning-starts", "500"]
MUJOCO += ["--batch-size", "32", "--eval-frequency", "1000", "--eval-episodes", "1", "--checkpoint-interval", "0"]
EAUDE_FAST = ["--num-networks", "3", "--tournament-size", "2", "--u-max", "30", "--s-max", "0.2"]

RUNS = {
    "eaudedqn_atari_jax": ONLINE_ATARI + EAUDE_FAST,
    "polyprune_dqn_atari_jax": [*ONLINE_ATARI, "--pruning-period", "200"],
    "eaudedqn_jax": CLASSIC + EAUDE_FAST,
    "polyprune_dqn_jax": [*CLASSIC, "--pruning-period", "125"],
    "eaudecql_atari_jax": OFFLINE + EAUDE_FAST,
    "polyprune_cql_atari_jax": [*OFFLINE, "--pruning-period", "20"],
    "eaudesac_mujoco_jax": [*MUJOCO, *EAUDE_FAST, "--pruning-period", "250"],
    "polyprune_sac_mujoco_jax": [*MUJOCO, "--pruning-period", "250"],
}


def digest(path: Path, drop: str | None = None) -> str:
    if not path.exists():
        return "-" * 12
    lines = []
    for line in path.read_text().splitlines():
        record = json.loads(line)
        if record.get("name") == "charts/SPS":  # wall-clock speed, not a number of the algorithm
            continue
        if drop is not None:
            record.pop(drop, None)
        lines.append(json.dumps(record, sort_keys=True))
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()[:12]


def last_value(path: Path, name: str) -> str:
    values = [json.loads(line) for line in path.read_text().splitlines()]
    values = [m["value"] for m in values if m["name"] == name]
    return f"{values[-1]:.6g}" if values else "-"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scripts", nargs="+", choices=list(RUNS), default=list(RUNS))
    parser.add_argument("--keep", type=Path, default=None, help="keep the run folders under this folder")
    options = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="fingerprint-")) if options.keep is None else options.keep
    work.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    dataset = work / "dataset"
    if any("cql" in s for s in options.scripts) and not dataset.exists():
        writer = [sys.executable, str(ROOT / "tools/write_dqn_replay_dataset.py"), "--env-id", "Pong-v5"]
        sizes = ["--num-checkpoints", "2", "--transitions-per-checkpoint", "1000"]
        subprocess.run(
            [*writer, "--seed", "1", "--output-dir", str(dataset), *sizes], check=True, capture_output=True, env=env
        )
    for script in options.scripts:
        out = work / script
        argv = [*RUNS[script], "--seed", "1", "--output-dir", str(out)]
        if "cql" in script:
            argv += ["--dataset-dir", str(dataset)]
        result = subprocess.run(
            [sys.executable, str(ROOT / f"{script}.py"), *argv], capture_output=True, text=True, env=env
        )
        if result.returncode != 0:
            print(f"{script}: exit {result.returncode}\n{result.stderr[-2000:]}", file=sys.stderr)
            continue
        (run_dir,) = out.iterdir()
        metrics = run_dir / "metrics.jsonl"
        returns = "eval/episodic_return" if "cql" in script or "sac" in script else "charts/episodic_return"
        print(
            f"{script:26s} metrics {digest(metrics, drop='time')} population {digest(run_dir / 'population.jsonl')}"
            f" return {last_value(metrics, returns)} sparsity {last_value(metrics, 'sparsity/target')}",
            flush=True,
        )


if __name__ == "__main__":
    main()
