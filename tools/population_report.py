"""What decided an EauDe run's sparsity: its population steps read back from `population.jsonl` (docs/contract.md).

One table row per run folder (SAC: per critic population), each column split into the four quarters of the run's
population steps:

* target sparsity: the target's sparsity at the quarter's last step (Alg. 1 l. 14: the network of lowest cumulated
  loss becomes the target);
* mean loss: the population's mean cumulated loss L_k, median over the quarter's steps (how well the networks fit);
* target - densest: how much sparser the new target is than the population's densest network, median over the quarter
  (0: the tournament kept the densest; above 0: a pruned network won);
* at the S_max cap: the share of the quarter's exploration steps (the copies Eq. 3 prunes) that the cap
  (1 - s) S_max stopped, read from config.json's `s_max`; the rest followed the line term U (1 - s)(t' - t)/(t_final - t).

    uv run python tools/population_report.py docs/results/runs/CartPole-v1__eaudedqn_classic_small_t500k__*
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from toolbox import jsonl_path, read_jsonl

QUARTERS = 4


def read_population(run_dir: Path) -> dict[str, list[dict]]:
    """The run's population steps by critic ("" for the DQN/CQL scripts); a line torn by a kill is left out."""
    path = jsonl_path(run_dir / "population.jsonl")  # or population.jsonl.gz, as published in docs/results/runs
    if path is None:
        raise FileNotFoundError(f"{run_dir}: no population.jsonl (only EauDe runs write one)")
    by_critic: dict[str, list[dict]] = {}
    for event in read_jsonl(path):
        by_critic.setdefault(str(event.get("critic", "")), []).append(event)
    if not by_critic:
        raise ValueError(f"{path}: no population step logged yet")
    return by_critic


def quarter_summary(events: list[dict], s_max: float) -> dict[str, list[float]]:
    """The four columns of the table for one population's steps, one value per quarter (see the module docstring)."""
    target, loss, above_densest, capped = [], [], [], []
    for event in events:
        before = np.asarray(event["sparsities_before"])
        after = np.asarray(event["sparsities_after"])
        target.append(before[event["target_index"]])
        loss.append(float(np.mean(event["losses"])))
        above_densest.append(before[event["target_index"]] - before.min())
        seen: set[int] = set()
        steps = []
        for slot, parent in enumerate(event["parents"]):
            if parent in seen:  # a copy, pruned by Eq. 3 (the first slot of each parent keeps its sparsity)
                remaining = 1.0 - before[parent]
                steps.append((after[slot] - before[parent]) >= remaining * s_max * (1 - 1e-6))
            seen.add(parent)
        capped.append(steps)
    parts = np.array_split(np.arange(len(events)), QUARTERS)
    return {
        "target sparsity": [target[p[-1]] if len(p) else np.nan for p in parts],
        "mean loss": [np.median([loss[i] for i in p]) if len(p) else np.nan for p in parts],
        "target - densest": [np.median([above_densest[i] for i in p]) if len(p) else np.nan for p in parts],
        "at the S_max cap": [np.mean([c for i in p for c in capped[i]] or [np.nan]) for p in parts],
    }


def report(run_dirs: list[Path]) -> str:
    """A markdown table, one row per run (and critic), each cell the four quarters' values."""
    formats = {"target sparsity": "{:.3f}", "mean loss": "{:.3g}", "target - densest": "{:.4f}"}
    formats["at the S_max cap"] = "{:.2f}"
    lines = [
        "| run | population steps | " + " | ".join(f"{c} (by quarter)" for c in formats) + " |",
        "|---" * (2 + len(formats)) + "|",
    ]
    for run_dir in run_dirs:
        config_path = run_dir / "config.json"
        if not config_path.is_file():
            raise FileNotFoundError(f"{run_dir}: no config.json (not a run folder)")
        s_max = json.loads(config_path.read_text()).get("args", {}).get("s_max")
        if s_max is None:
            raise ValueError(f"{config_path}: no args.s_max (only EauDe runs have one)")
        for critic, events in read_population(run_dir).items():
            name = run_dir.name + (f" (critic {critic})" if critic else "")
            columns = quarter_summary(events, s_max)
            cells = [" / ".join(formats[c].format(v) for v in values) for c, values in columns.items()]
            lines.append(f"| {name} | {len(events)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dirs", nargs="+", type=Path, help="EauDe run folders (benchmark.sh or docs/results/runs)")
    args = parser.parse_args()
    try:
        print(report(args.run_dirs))
    except (OSError, ValueError, KeyError) as e:  # KeyError: a population line without a contract key
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
