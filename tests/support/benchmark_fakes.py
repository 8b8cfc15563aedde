"""Stand-in algorithm scripts for testing benchmark.sh without the real (slow) scripts.

`make_fake_script_dir(path)` creates a folder that looks like the repository to benchmark.sh: every algorithm script
of the smoke preset and tools/write_dqn_replay_dataset.py, all stand-ins that keep the output contract (run folder
name, config.json, metrics.jsonl, checkpoint/, --resume, --save-model) and log how they were called.
"""

from __future__ import annotations

import shutil
from pathlib import Path

ALGO_SCRIPTS = [
    "eaudedqn_atari_jax.py",
    "polyprune_dqn_atari_jax.py",
    "eaudedqn_jax.py",
    "polyprune_dqn_jax.py",
    "eaudecql_atari_jax.py",
    "polyprune_cql_atari_jax.py",
    "eaudesac_mujoco_jax.py",
    "polyprune_sac_mujoco_jax.py",
]

# Environment knobs: FAKE_CALL_LOG (append one JSON line per call), FAKE_CRASH_EXP (exp_name that "crashes" halfway on
# its first, non-resumed attempt, leaving checkpoint/), FAKE_SLEEP (seconds per call).
FAKE_SCRIPT = r"""
import argparse, json, os, sys, time
from pathlib import Path

p = argparse.ArgumentParser()
p.add_argument("--env-id", required=True)
p.add_argument("--seed", type=int, default=1)
p.add_argument("--exp-name", default=Path(__file__).stem)
p.add_argument("--output-dir", default="runs")
p.add_argument("--resume", default=None)
p.add_argument("--total-timesteps", type=int, default=10_000_000)
p.add_argument("--num-epochs", type=int, default=None)
p.add_argument("--steps-per-epoch", type=int, default=None)
p.add_argument("--network-size", default="medium")
p.add_argument("--u-max", type=float, default=3.0)
p.add_argument("--final-sparsity", type=float, default=0.95)
p.add_argument("--dataset-dir", default=None)
p.add_argument("--save-model", action="store_true")
args, unknown = p.parse_known_args()
if args.dataset_dir is not None and not (Path(args.dataset_dir) / "replay_logs").is_dir():
    print(f"error: --dataset-dir {args.dataset_dir} has no replay_logs", file=sys.stderr)
    sys.exit(2)
if os.environ.get("FAKE_CALL_LOG"):
    with open(os.environ["FAKE_CALL_LOG"], "a") as f:
        f.write(json.dumps({"script": Path(__file__).name, "argv": sys.argv[1:], "cwd": os.getcwd(),
                            "cuda": os.environ.get("CUDA_VISIBLE_DEVICES"),
                            "mem_fraction": os.environ.get("XLA_PYTHON_CLIENT_MEM_FRACTION")}) + "\n")
time.sleep(float(os.environ.get("FAKE_SLEEP", "0")))
offline = args.num_epochs is not None
total = args.num_epochs * args.steps_per_epoch if offline else args.total_timesteps
if args.resume:
    run_dir = Path(args.resume)
    start = int((run_dir / "checkpoint" / "step").read_text())
else:
    run_dir = Path(args.output_dir) / f"{args.env_id}__{args.exp_name}__{args.seed}__{int(time.time())}"
    run_dir.mkdir(parents=True)
    start = 0
(run_dir / "config.json").write_text(json.dumps({**vars(args), "num_epochs": args.num_epochs}, indent=2))
crash = os.environ.get("FAKE_CRASH_EXP") == args.exp_name and not args.resume
with open(run_dir / "metrics.jsonl", "a") as f:
    for step in range(start, total + 1, max(total // 20, 1)):
        if crash and step >= total // 2:
            (run_dir / "checkpoint").mkdir(exist_ok=True)
            (run_dir / "checkpoint" / "step").write_text(str(step))
            sys.exit(1)
        for name, value in (("charts/episodic_return", step / total), ("sparsity/target", 0.5 * step / total)):
            f.write(json.dumps({"global_step": step, "name": name, "value": value, "time": 0.0}) + "\n")
if args.save_model:
    (run_dir / f"{args.exp_name}.cleanrl_model").write_bytes(b"params")
"""

FAKE_DATASET_TOOL = r"""
import argparse
from pathlib import Path

p = argparse.ArgumentParser()
p.add_argument("--env-id", required=True)
p.add_argument("--output-dir", required=True)
args, _ = p.parse_known_args()
(Path(args.output_dir) / "replay_logs").mkdir(parents=True, exist_ok=True)
(Path(args.output_dir) / "replay_logs" / "made_by_fake").write_text(args.env_id)
"""

REPO_ROOT = Path(__file__).resolve().parents[2]


def make_fake_script_dir(path: Path) -> Path:
    """Create a stand-in repository at `path` (benchmark.sh, slurm template, fake scripts) and return it."""
    path.mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO_ROOT / "benchmark.sh", path / "benchmark.sh")
    (path / "tools").mkdir(exist_ok=True)
    shutil.copy(REPO_ROOT / "tools" / "slurm_template.sbatch", path / "tools" / "slurm_template.sbatch")
    for name in ALGO_SCRIPTS:
        (path / name).write_text(FAKE_SCRIPT)
    (path / "tools" / "write_dqn_replay_dataset.py").write_text(FAKE_DATASET_TOOL)
    return path
