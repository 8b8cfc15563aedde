"""Draw the paper's figures and a Markdown summary from EauDeQN-JAX run folders.

    uv run python tools/analyze.py --runs-dir runs --output-dir figures

Reads every `<runs-dir>/<env_id>__<exp_name>__<seed>__<unix_time>/` (config.json, metrics.jsonl, population.jsonl, each jsonl possibly gzipped as
`.jsonl.gz`) and
writes, per setting present (Atari online DQN, Atari offline CQL, MuJoCo SAC, classic control, each per variant: the
training length / protocol suffix of the exp name, so `<setting>` is e.g. `dqn` (no suffix), `sac_p100_t100k` or, for
raw returns of several envs, one per env, `dqn_classic_t500k_CartPole-v1`; runs of two variants never share a grid):

* `<setting>_overview.png`: the result in one look (Fig. 1 and 5 in one): the sparsity EauDe (U_max = 3) discovers
  beside PolyPrune's fixed schedule (s_F = 0.95), above the returns of EauDe, PolyPrune and the dense network, a
  column per network size;
* `<setting>_return_iqm.png`: IQM over all runs (envs x seeds) of the human-normalised score (Atari) or raw return
  (others) against steps, with 95% stratified bootstrap confidence intervals, a column per network size and a row per
  method, the dense network's IQM dashed in each (Fig. 4, 6, 7);
* `<setting>_sparsity_schedule.png`: IQM sparsity/target against steps of EauDe (every U_max) and PolyPrune, a panel
  per network size (Fig. 5/8 left);
* `<setting>_final_sparsity.png`: final sparsity of the EauDe methods per env and network size, a bar per mean over
  seeds and a dot per seed, PolyPrune's s_F dashed (Fig. 5/8 right);
* `<setting>_return_vs_sparsity.png`: final return against final sparsity per method and network size, the IQM with
  its 95% intervals over a dot per seed (Fig. 9 / 13 left);
* `<setting>_population.png`: sparsities of the population at every target update, a panel per env and size, a colour
  per U_max regime (Fig. 14);
* `<setting>_oracle.png`: where PolyPrune's oracle ran (exp names with `_oracle`), its return and sparsity beside
  EauDe's (U_max = 3), PolyPrune's (s_F = 0.95) and, for the return, the dense network's, per size (Fig. 7 bottom);
* `summary.md` (tables and notes) and `summary.json` (the same numbers, for scripts): the paper's claims C1-C4 decided
  twice, first by the cells at the paper's clock (every EauDe run has t_final / T >= 1 000, T the target-update
  period, or P the population period for SAC), then by the budget-capped ones, each row with n (population steps
  logged) and Eq. 3's cap 1 - (1 - S_max)^n; and dense DQN of CleanRL's dqn_jax.py protocol (`dqn_classic_*_t500k`)
  beside CleanRL's published returns.

Runs are identified from config.json (exp_name, env_id, seed, network_size, u_max, final_sparsity) and, where a field is
missing, from the exp name that benchmark.sh writes: `<algo>[_<size>][_umax<U>][_sf<s_F>]`, algo one of eaudedqn,
polyprune_dqn, dqn, eaudedqn_classic, eaudecql, polyprune_cql, cql, eaudesac, polyprune_sac, sac. A method is the exp
name without its size token, so `eaudedqn_small_umax10` is method `eaudedqn_umax10` at size `small`.

Diverged and unfinished runs are left out of every aggregate and figure, listed in summary.md ("Excluded runs") and
printed one per line on stderr. Diverged: a `losses/*` metric is null (the scripts write a non-finite value as null and
stop with exit code 3) or NaN/inf (older runs), or every network's loss of a population.jsonl event is. Unfinished: the
last logged global_step is below budget - slack, the rule of benchmark.sh: budget = total_timesteps (online, MuJoCo) or
num_epochs * steps_per_epoch (offline CQL) from config.json, slack = `--finish-slack` (default 1% of the budget); a run
that saved its `<exp_name>.cleanrl_model` is finished, and a run without a budget in config.json is not judged.

Every curve figure draws each seed as a thin line under the IQM and its interval; methods are named in words
(EauDeDQN (U_max = 10), PolyPruneDQN (s_F = 0.95), DQN (dense)) with one colour each across all figures, the legend
below the panels. `--format png,pdf` (or svg) writes each figure in each format: PNG at 200 dpi, PDF and SVG as vector
files with their text kept as text.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import re
import sys
import textwrap
import warnings
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
from toolbox import jsonl_path, read_jsonl

# Random and human reference scores (random, human) of the 57 Atari games: the Atari-57 table of DQN Nature 2015
# (Extended Data Table 2) as extended to 57 games and used by Dopamine, DQN Zoo and rliable.
ATARI_SCORES: dict[str, tuple[float, float]] = {
    "Alien": (227.8, 7127.7),
    "Amidar": (5.8, 1719.5),
    "Assault": (222.4, 742.0),
    "Asterix": (210.0, 8503.3),
    "Asteroids": (719.1, 47388.7),
    "Atlantis": (12850.0, 29028.1),
    "BankHeist": (14.2, 753.1),
    "BattleZone": (2360.0, 37187.5),
    "BeamRider": (363.9, 16926.5),
    "Berzerk": (123.7, 2630.4),
    "Bowling": (23.1, 160.7),
    "Boxing": (0.1, 12.1),
    "Breakout": (1.7, 30.5),
    "Centipede": (2090.9, 12017.0),
    "ChopperCommand": (811.0, 7387.8),
    "CrazyClimber": (10780.5, 35829.4),
    "Defender": (2874.5, 18688.9),
    "DemonAttack": (152.1, 1971.0),
    "DoubleDunk": (-18.6, -16.4),
    "Enduro": (0.0, 860.5),
    "FishingDerby": (-91.7, -38.7),
    "Freeway": (0.0, 29.6),
    "Frostbite": (65.2, 4334.7),
    "Gopher": (257.6, 2412.5),
    "Gravitar": (173.0, 3351.4),
    "Hero": (1027.0, 30826.4),
    "IceHockey": (-11.2, 0.9),
    "Jamesbond": (29.0, 302.8),
    "Kangaroo": (52.0, 3035.0),
    "Krull": (1598.0, 2665.5),
    "KungFuMaster": (258.5, 22736.3),
    "MontezumaRevenge": (0.0, 4753.3),
    "MsPacman": (307.3, 6951.6),
    "NameThisGame": (2292.3, 8049.0),
    "Phoenix": (761.4, 7242.6),
    "Pitfall": (-229.4, 6463.7),
    "Pong": (-20.7, 14.6),
    "PrivateEye": (24.9, 69571.3),
    "Qbert": (163.9, 13455.0),
    "Riverraid": (1338.5, 17118.0),
    "RoadRunner": (11.5, 7845.0),
    "Robotank": (2.2, 11.9),
    "Seaquest": (68.4, 42054.7),
    "Skiing": (-17098.1, -4336.9),
    "Solaris": (1236.3, 12326.7),
    "SpaceInvaders": (148.0, 1668.7),
    "StarGunner": (664.0, 10250.0),
    "Surround": (-10.0, 6.5),
    "Tennis": (-23.8, -8.3),
    "TimePilot": (3568.0, 5229.2),
    "Tutankham": (11.4, 167.6),
    "UpNDown": (533.4, 11693.2),
    "Venture": (0.0, 1187.5),
    "VideoPinball": (0.0, 17667.9),
    "WizardOfWor": (563.5, 4756.5),
    "YarsRevenge": (3092.9, 54576.9),
    "Zaxxon": (32.5, 9173.3),
}
_GAME_KEYS = {k.lower(): k for k in ATARI_SCORES}

SIZES = ("small", "medium", "large")
ALGOS = (
    "eaudedqn_classic",
    "eaudedqn",
    "polyprune_dqn_classic",
    "dqn_classic",
    "polyprune_dqn",
    "dqn",
    "eaudecql",
    "polyprune_cql",
    "cql",
    "eaudesac",
    "polyprune_sac",
    "sac",
)
SETTING_TITLES = {
    "dqn": "Atari, online (DQN)",
    "cql": "Atari, offline (CQL)",
    "sac": "MuJoCo (SAC)",
    "dqn_classic": "Classic control (DQN)",
}
# Which logged return a setting reports: the paper reports training returns for online Atari and evaluation returns
# for offline CQL and SAC (evaluated every 10k steps).
RETURN_METRICS = {
    "dqn": ("charts/episodic_return",),
    "dqn_classic": ("charts/episodic_return",),
    "cql": ("eval/episodic_return", "charts/episodic_return"),
    "sac": ("eval/episodic_return", "charts/episodic_return"),
}
FIGURE_KINDS = (
    "overview",
    "return_iqm",
    "sparsity_schedule",
    "final_sparsity",
    "return_vs_sparsity",
    "oracle",
    "population",
)
DEFAULT_U_MAX = 3.0
DEFAULT_S_MAX = 0.01  # the EauDe scripts' default S_max (Eq. 3), for runs whose config.json does not record it
SPARSITY = "sparsity/target"
# The config.json argument that sets a family's pruning clock: DQN and CQL explore at every target update (every T env
# or gradient steps), EauDeSAC at every population step (every P env steps).
CLOCK_ARGS = {
    "dqn": "target_network_frequency",
    "dqn_classic": "target_network_frequency",
    "cql": "target_network_frequency",
    "sac": "pruning_period",
}
# The paper's runs have 1 250 target updates (Atari: 10M / T = 8 000) and 1 000 population steps (MuJoCo: 1M / P =
# 1 000); a cell is at the paper's clock when every EauDe run of it has t_final / T (or P) >= PAPER_CLOCK.
PAPER_CLOCK = 1000


# ----------------------------------------------------------------------------------------------------------------------
# Scores and statistics
# ----------------------------------------------------------------------------------------------------------------------
def atari_game(env_id: str) -> str | None:
    """Canonical Atari game name of an env id ("Pong-v5", "ALE/Pong-v5", "PongNoFrameskip-v4"), None if not Atari
    (MinAtar's "MinAtar/Breakout-v1" included: its scores are not Atari's)."""
    if env_id.startswith("MinAtar/"):
        return None
    name = env_id.split("/")[-1]
    name = re.sub(r"-v\d+$", "", name)
    name = re.sub(r"(NoFrameskip|Deterministic)$", "", name)
    return _GAME_KEYS.get(name.replace("_", "").replace("-", "").lower())


def human_normalized(score: float | np.ndarray, env_id: str) -> float | np.ndarray:
    """(score - random) / (human - random) with the Atari-57 reference scores."""
    game = atari_game(env_id)
    if game is None:
        raise KeyError(f"{env_id} is not one of the 57 Atari games")
    random, human = ATARI_SCORES[game]
    return (np.asarray(score, dtype=float) - random) / (human - random)


def iqm(scores: np.ndarray, axis: int | None = None) -> np.ndarray | float:
    """Interquartile mean: the mean of the middle 50% after dropping floor(n/4) values at each end (as
    scipy.stats.trim_mean(x, 0.25), which rliable uses). With axis=None all values are pooled."""
    x = np.asarray(scores, dtype=float)
    if axis is None:
        x = x.reshape(-1)
        axis = 0
    x = np.sort(x, axis=axis)
    n = x.shape[axis]
    cut = int(0.25 * n)
    return np.take(x, np.arange(cut, n - cut), axis=axis).mean(axis=axis)


def stratified_bootstrap_ci(
    scores_per_task: Sequence[np.ndarray],
    statistic: Callable[..., np.ndarray | float] = iqm,
    reps: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[float, float, float]:
    """Point estimate and percentile confidence interval of `statistic` over the pooled runs of all tasks, where each
    bootstrap sample resamples runs with replacement *within* every task (Agarwal et al. 2021), so every task keeps
    its number of runs. `statistic(x, axis=1)` must reduce the rows of a (reps, n_runs) array."""
    tasks = [np.asarray(t, dtype=float).reshape(-1) for t in scores_per_task if len(t)]
    if not tasks:
        return math.nan, math.nan, math.nan
    pooled = np.concatenate(tasks)
    point = float(statistic(pooled[None, :], axis=1)[0])
    rng = np.random.default_rng(seed)
    samples = np.concatenate([t[rng.integers(0, len(t), size=(reps, len(t)))] for t in tasks], axis=1)
    stats = np.asarray(statistic(samples, axis=1))
    alpha = (1.0 - confidence) / 2.0
    lo, hi = np.quantile(stats, [alpha, 1.0 - alpha])
    return point, float(lo), float(hi)


# ----------------------------------------------------------------------------------------------------------------------
# Runs
# ----------------------------------------------------------------------------------------------------------------------
_EXP_RE = re.compile(
    r"^(?P<algo>" + "|".join(ALGOS) + r")(?:_(?P<size>small|medium|large))?"
    r"(?:_umax(?P<umax>[0-9.]+))?(?:_sf(?P<sf>[0-9.]+))?(?P<rest>.*)$"
)


def parse_exp_name(exp_name: str) -> dict[str, str | float | None]:
    """Split benchmark.sh's exp names: `<algo>[_<size>][_umax<U>][_sf<s_F>]`; unknown names are their own algo."""
    m = _EXP_RE.match(exp_name)
    if m is None:
        return {"algo": exp_name, "size": None, "u_max": None, "final_sparsity": None, "method": exp_name}
    method = re.sub(rf"_{m['size']}(?=_|$)", "", exp_name, count=1) if m["size"] else exp_name
    return {
        "algo": m["algo"],
        "size": m["size"],
        "u_max": float(m["umax"]) if m["umax"] else None,
        "final_sparsity": float(m["sf"]) if m["sf"] else None,
        "method": method,
    }


# The script recorded in config.json decides the setting; exp names are the fallback (runs named by hand).
SCRIPT_FAMILIES = {
    "eaudedqn_atari_jax.py": "dqn",
    "polyprune_dqn_atari_jax.py": "dqn",
    "eaudedqn_jax.py": "dqn_classic",
    "polyprune_dqn_jax.py": "dqn_classic",
    "eaudecql_atari_jax.py": "cql",
    "polyprune_cql_atari_jax.py": "cql",
    "eaudesac_mujoco_jax.py": "sac",
    "polyprune_sac_mujoco_jax.py": "sac",
}


def family_of(algo: str) -> str:
    """Setting of an algorithm: dqn (online Atari), cql (offline Atari), sac (MuJoCo), dqn_classic."""
    for prefix in ("eaude", "polyprune_"):
        if algo.startswith(prefix):
            return algo[len(prefix) :]
    return algo


@dataclass
class Run:
    path: Path
    env_id: str
    exp_name: str
    seed: int
    algo: str
    method: str
    size: str
    u_max: float | None
    final_sparsity_arg: float | None
    config: dict
    metrics: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    population: list[dict] = field(default_factory=list)
    problem: str | None = None
    """why the run stays out of the aggregates ("diverged: ..." or "unfinished: ..."), None when it counts"""

    @property
    def family(self) -> str:
        return SCRIPT_FAMILIES.get(str(self.config.get("script")), family_of(self.algo))

    @property
    def is_eaude(self) -> bool:
        script = str(self.config.get("script", ""))
        return script.startswith("eaude") if script in SCRIPT_FAMILIES else self.algo.startswith("eaude")

    @property
    def last_step(self) -> int:
        return max((int(s[-1]) for s, _ in self.metrics.values() if len(s)), default=0)


def _is_finite(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _budget(config: dict) -> int | None:
    """Steps a run was asked for, as benchmark.sh reads them: total_timesteps (online, MuJoCo), else
    num_epochs * steps_per_epoch (offline CQL); None when config.json has neither."""
    if isinstance(config.get("total_timesteps"), int):
        return config["total_timesteps"]
    if isinstance(config.get("num_epochs"), int) and isinstance(config.get("steps_per_epoch"), int):
        return config["num_epochs"] * config["steps_per_epoch"]
    return None


def run_problem(
    path: Path, config: dict, exp_name: str, rows: list[dict], population: list[dict], finish_slack: int | None
) -> str | None:
    """Why a run must stay out of the aggregates, None when it counts. Diverged: a non-finite or null `losses/*`
    value, or a population event where no network has a finite loss (one NaN network only loses the target choice).
    Unfinished: benchmark.sh's rule, last logged step < budget - slack (default slack: 1% of the budget)."""
    faults = [
        (row["global_step"], f"{row['name']} is {json.dumps(row.get('value'))} at step {row['global_step']}")
        for row in rows
        if str(row["name"]).startswith("losses/") and not _is_finite(row.get("value"))
    ]
    faults += [
        (
            event["global_step"],
            f"every network's loss is non-finite at the population event of step {event['global_step']}",
        )
        for event in population
        if isinstance(event.get("global_step"), int)
        and isinstance(event.get("losses"), list)
        and event["losses"]
        and not any(map(_is_finite, event["losses"]))
    ]
    if faults:
        return "diverged: " + min(faults)[1]
    budget = _budget(config)
    if budget is None or (path / f"{exp_name}.cleanrl_model").exists():
        return None
    slack = budget // 100 if finish_slack is None else finish_slack
    last = max((row["global_step"] for row in rows), default=0)
    if last < budget - slack:
        return f"unfinished: last logged step {last} of {budget} (counted finished from step {budget - slack})"
    return None


def load_run(path: Path, finish_slack: int | None = None) -> Run | None:
    """One run folder, or None when it is not a run (no metrics.jsonl or an unparsable folder name); its `problem`
    says whether it diverged or stopped short of its budget (`finish_slack` steps of slack, default 1%)."""
    parts = path.name.split("__")
    if jsonl_path(path / "metrics.jsonl") is None or len(parts) < 4:
        return None
    try:
        config = json.loads((path / "config.json").read_text())
    except (OSError, json.JSONDecodeError):
        config = {}
    if isinstance(config.get("args"), dict):  # tolerate {"args": {...}, "versions": ...} layouts
        config = {**config, **config["args"]}
    exp_name = str(config.get("exp_name", parts[1]))
    parsed = parse_exp_name(exp_name)
    size = config.get("network_size") or parsed["size"] or "none"
    u_max = config.get("u_max", parsed["u_max"])
    sf = config.get("final_sparsity", parsed["final_sparsity"])
    # The method keeps non-default variants in its name even when the name was not benchmark.sh's.
    method = str(parsed["method"])
    if size != "none":
        method = re.sub(rf"_{size}(?=_|$)", "", method, count=1)
    series: dict[str, tuple[list[int], list[float]]] = defaultdict(lambda: ([], []))
    rows = [
        row for row in read_jsonl(path / "metrics.jsonl") if "name" in row and isinstance(row.get("global_step"), int)
    ]
    for row in rows:
        if row.get("value") is not None:
            series[row["name"]][0].append(int(row["global_step"]))
            series[row["name"]][1].append(float(row["value"]))
    population = read_jsonl(path / "population.jsonl")
    metrics = {}
    for name, (steps, values) in series.items():
        order = np.argsort(np.asarray(steps), kind="stable")
        metrics[name] = (np.asarray(steps)[order], np.asarray(values)[order])
    return Run(
        path=path,
        env_id=str(config.get("env_id", parts[0])),
        exp_name=exp_name,
        seed=int(config.get("seed", parts[2])),
        algo=str(parsed["algo"]),
        method=method,
        size=str(size),
        u_max=float(u_max) if u_max is not None else None,
        final_sparsity_arg=float(sf) if sf is not None else None,
        config=config,
        metrics=metrics,
        population=population,
        problem=run_problem(path, config, exp_name, rows, population, finish_slack),
    )


def load_runs(runs_dir: Path, finish_slack: int | None = None) -> list[Run]:
    """All runs under runs_dir; when a run (env, exp, seed) has several folders (restarted), keep a finished one that
    did not diverge if there is one, then the one that got furthest, then the newest."""
    best: dict[tuple[str, str, int], Run] = {}

    def rank(run: Run) -> tuple[bool, int, str]:
        return run.problem is None, run.last_step, run.path.name

    for path in sorted(p for p in Path(runs_dir).iterdir() if p.is_dir()):
        run = load_run(path, finish_slack)
        if run is None:
            continue
        key = (run.env_id, run.exp_name, run.seed)
        if key not in best or rank(run) > rank(best[key]):
            best[key] = run
    return sorted(best.values(), key=lambda r: (r.family, r.method, r.size, r.env_id, r.seed))


# ----------------------------------------------------------------------------------------------------------------------
# Curves on a common grid
# ----------------------------------------------------------------------------------------------------------------------
def binned_curve(steps: np.ndarray, values: np.ndarray, grid: np.ndarray, until: float | None = None) -> np.ndarray:
    """Mean of the values logged in each bin (grid[i-1], grid[i]] (the first bin starts at 0), carried forward over
    empty bins; NaN before the first value and for bins that start after `until` (the run's last step, default the
    last logged step), so unfinished runs drop out instead of repeating their last value."""
    out = np.full(len(grid), np.nan)
    steps, values = np.asarray(steps), np.asarray(values, dtype=float)
    if len(steps) == 0:
        return out
    edges = np.concatenate([[-1.0], grid])
    idx = np.searchsorted(edges, steps, side="left") - 1  # bin of each step
    last = np.nan
    for i in range(len(grid)):
        sel = idx == i
        if sel.any():
            last = float(values[sel].mean())
        out[i] = last
    out[edges[:-1] >= (steps[-1] if until is None else until)] = np.nan
    return out


def return_metric(run: Run) -> str | None:
    for name in RETURN_METRICS.get(run.family, ("charts/episodic_return",)):
        if name in run.metrics:
            return name
    return None


def run_scores(run: Run, grid: np.ndarray, normalize: bool) -> np.ndarray:
    """Binned returns of a run, human-normalised for Atari games when `normalize`."""
    name = return_metric(run)
    if name is None:
        return np.full(len(grid), np.nan)
    curve = binned_curve(*run.metrics[name], grid, until=run.last_step)
    if normalize and atari_game(run.env_id) is not None:
        curve = human_normalized(curve, run.env_id)
    return curve


def sparsity_curve(run: Run, grid: np.ndarray) -> np.ndarray:
    steps, values = run.metrics.get(SPARSITY, (np.array([]), np.array([])))
    return binned_curve(steps, values, grid, until=run.last_step)


def final_sparsity(run: Run) -> float:
    """Last logged sparsity/target of a run (NaN if never logged)."""
    if SPARSITY not in run.metrics or not len(run.metrics[SPARSITY][1]):
        return math.nan
    return float(run.metrics[SPARSITY][1][-1])


def final_return(run: Run, num_points: int = 40) -> float:
    """A run's final return as the summary reports it: the last point of its return curve, i.e. the mean return of the
    episodes (or evaluations) logged in the last 1/num_points of its budget (its last logged step when config.json
    has none). NaN when nothing was logged there."""
    budget = _budget(run.config) or run.last_step
    grid = np.linspace(budget / num_points, budget, num_points) if budget > 0 else np.array([0.0])
    return float(run_scores(run, grid, normalize=False)[-1])


def aggregate(
    runs: Sequence[Run], per_run: Callable[[Run], np.ndarray], reps: int, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """IQM and 95% stratified bootstrap CI (tasks = env ids, runs = seeds) of per_run(run) at each point."""
    by_env: dict[str, list[np.ndarray]] = defaultdict(list)
    for run in runs:
        by_env[run.env_id].append(np.atleast_1d(per_run(run)))
    n = max(len(v) for vs in by_env.values() for v in vs)
    point, lo, hi = (np.full(n, np.nan) for _ in range(3))
    for i in range(n):
        tasks = [np.array([v[i] for v in vs if not np.isnan(v[i])]) for vs in by_env.values()]
        point[i], lo[i], hi[i] = stratified_bootstrap_ci(tasks, reps=reps, seed=seed + i)
    return point, lo, hi


# ----------------------------------------------------------------------------------------------------------------------
# Analysis and figures
# ----------------------------------------------------------------------------------------------------------------------
def _size_order(size: str) -> tuple[int, str]:
    return (SIZES.index(size) if size in SIZES else len(SIZES), size)


def _method_order(method: str) -> tuple[int, str]:
    algo = str(parse_exp_name(method)["algo"])
    return (ALGOS.index(algo) if algo in ALGOS else len(ALGOS), method)


def analyze(runs: Sequence[Run], num_points: int = 40, reps: int = 2000) -> dict:
    """All numbers behind the figures, grouped by setting, from the runs without a `problem`; the others are listed
    under "excluded". Returns a JSON-serialisable dict."""
    result: dict = {
        "settings": {},
        "excluded": [{"run": run.path.name, "reason": run.problem} for run in runs if run.problem is not None],
    }
    # A 30k-step and a 500k-step run of one env must never share a step grid or a curve: runs are grouped by family
    # and variant (training length / protocol suffix), the setting `<family><variant>`, e.g. `dqn_classic_t500k`.
    by_family: dict[tuple[str, str], list[Run]] = defaultdict(list)
    for run in runs:
        if run.problem is None:
            by_family[(run.family, setting_variant(run))].append(run)
    # Human-normalised Atari scores pool over games; raw returns of different envs (CartPole's 500 and Acrobot's
    # -100) do not, so a non-Atari family with several envs becomes one setting per env, `<family><variant>_<env_id>`.
    by_setting: dict[str, tuple[str, str, list[Run]]] = {}
    for (family, variant), fruns in by_family.items():
        envs = sorted({r.env_id for r in fruns})
        if len(envs) == 1 or all(atari_game(env) is not None for env in envs):
            by_setting[family + variant] = (family, variant, fruns)
        else:
            for env in envs:  # a setting name is also a file name: MinAtar/Breakout-v1 -> MinAtar-Breakout-v1
                env_runs = [r for r in fruns if r.env_id == env]
                by_setting[f"{family}{variant}_{env.replace('/', '-')}"] = (family, variant, env_runs)
    for setting, (family, variant, sruns) in sorted(by_setting.items()):
        normalize = all(atari_game(r.env_id) is not None for r in sruns)
        x_label = "gradient steps" if family == "cql" else "environment steps"
        title = SETTING_TITLES.get(family, family) + ("" if setting == family + variant else f", {sruns[0].env_id}")
        title += _budget_title(sruns, family, x_label)
        budget = max(r.last_step for r in sruns)
        grid = np.linspace(budget / num_points, budget, num_points) if budget > 0 else np.array([0.0])
        groups: dict[tuple[str, str], list[Run]] = defaultdict(list)
        for run in sruns:
            groups[(run.method, run.size)].append(run)
        curves, finals = [], []
        for (method, size), gruns in sorted(
            groups.items(), key=lambda kv: (_method_order(kv[0][0]), _size_order(kv[0][1]))
        ):
            score = aggregate(gruns, partial(run_scores, grid=grid, normalize=normalize), reps)
            has_sparsity = any(SPARSITY in r.metrics for r in gruns)
            sparsity = aggregate(gruns, partial(sparsity_curve, grid=grid), reps) if has_sparsity else None
            final_sp = aggregate(gruns, lambda r: np.array([final_sparsity(r)]), reps) if has_sparsity else None
            last = int(np.flatnonzero(~np.isnan(score[0]))[-1]) if np.any(~np.isnan(score[0])) else -1
            curves.append(
                {
                    "method": method,
                    "size": size,
                    "eaude": gruns[0].is_eaude,
                    "u_max": gruns[0].u_max,
                    "final_sparsity_arg": gruns[0].final_sparsity_arg,
                    "n_runs": len(gruns),
                    "n_envs": len({r.env_id for r in gruns}),
                    "score": [a.tolist() for a in score],
                    "sparsity": [a.tolist() for a in sparsity] if sparsity else None,
                }
            )
            finals.append(
                {
                    "method": method,
                    "size": size,
                    "final_score": [float(a[last]) if last >= 0 else math.nan for a in score],
                    "final_sparsity": [float(a[0]) for a in final_sp] if final_sp else None,
                }
            )
        per_env = []
        for run in sruns:
            per_env.append(
                {
                    "env_id": run.env_id,
                    "method": run.method,
                    "size": run.size,
                    "seed": run.seed,
                    "u_max": run.u_max,
                    "final_sparsity": final_sparsity(run),
                    "final_return": final_return(run, num_points),
                    "last_step": run.last_step,
                }
            )
        result["settings"][setting] = {
            "title": title,
            "family": family,
            "variant": variant,
            "env_ids": sorted({r.env_id for r in sruns}),
            "normalized": normalize,
            "x_label": x_label,
            "grid": grid.tolist(),
            "curves": curves,
            "finals": finals,
            "runs": per_env,
        }
    return result


def _steps_text(steps: int) -> str:
    """500000 -> 500k, 10000000 -> 10M, 1234 -> 1234: the budget as benchmark.sh's `_t<steps>` suffixes write it."""
    for div, unit in ((1_000_000, "M"), (1_000, "k")):
        if steps >= div and steps % div == 0:
            return f"{steps // div}{unit}"
    return str(steps)


def _budget_title(sruns: Sequence[Run], family: str, x_label: str) -> str:
    """`, 500k environment steps, T = 500`: a setting's title says its budget and, where config.json records it, the
    pruning clock's period, so that figures of two training lengths of one env are never read as one."""
    budgets = sorted({b for r in sruns if (b := _budget(r.config))})
    text = f", {'/'.join(_steps_text(b) for b in budgets)} {x_label}" if budgets else ""
    arg = CLOCK_ARGS.get(family)
    periods = sorted({p for r in sruns if r.is_eaude and isinstance(p := r.config.get(arg), int)})
    if periods:
        text += f", {'P' if arg == 'pruning_period' else 'T'} = {'/'.join(map(str, periods))}"
    return text


# Every figure is a paper's text width wide (7.5 in). GitHub shows an image at most as wide as the README's column
# (about 830 CSS px, 8.6 in at 96 px per inch), so a figure is shown at about 1.1 times its size and no font below
# (9 pt at least) is shown smaller than 9 pt; 200 dpi makes the PNG 1 500 px across, sharp on a 2x screen.
FIGURE_FORMATS = ("png", "pdf", "svg")
FIGURE_WIDTH = 7.5
PNG_DPI = 200
FIGURE_STYLE = {
    "font.size": 10,
    "axes.titlesize": 10,
    "axes.labelsize": 10,
    "xtick.labelsize": 9,
    "ytick.labelsize": 9,
    "legend.fontsize": 9,
    "figure.titlesize": 11,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "grid.linewidth": 0.6,
    "legend.frameon": False,
    "pdf.fonttype": 42,  # TrueType: publishers reject the Type 3 fonts matplotlib embeds by default
    "svg.fonttype": "none",  # SVG text stays text, editable in a figure editor
    "svg.hashsalt": "eaudeqn",  # and its element ids do not change from one drawing to the next
}
# One colour per method in every figure (Okabe-Ito, told apart with colour blindness too): EauDe blue, PolyPrune
# vermilion, PolyPrune's oracle green, the dense network grey. EauDe's other U_max regimes are other blues and
# PolyPrune's other s_F other oranges, each with its own dashes.
METHOD_COLORS = {"eaude": "#0072B2", "polyprune": "#D55E00", "oracle": "#009E73", "dense": "#555555"}
U_MAX_STYLES = {DEFAULT_U_MAX: ("#0072B2", "-"), 10.0: ("#56B4E9", "--"), 30.0: ("#003A6B", "-.")}
DEFAULT_S_F = 0.95  # the PolyPrune scripts' default s_F (Eq. 2), for runs whose config.json does not record it
VARIANT_DASHES = ("--", "-.", ":", (0, (5, 1)), (0, (3, 1, 1, 1)))
KINDS = ("eaude", "polyprune", "oracle", "dense")
KIND_MARKERS = {"eaude": "o", "polyprune": "s", "oracle": "D", "dense": "^"}
FAMILY_NAMES = {"dqn": "DQN", "dqn_classic": "DQN", "cql": "CQL", "sac": "SAC"}
SEED_LINE = {"linewidth": 0.6, "alpha": 0.45, "zorder": 1}
CI_ALPHA = 0.18


@dataclass(frozen=True)
class MethodStyle:
    """How every figure names and draws one method."""

    kind: str  # "eaude", "polyprune", "oracle" or "dense"
    label: str
    color: str
    linestyle: str | tuple
    main: bool  # the paper's headline comparison: EauDe at U_max = 3, PolyPrune at s_F = 0.95, its oracle, dense
    value: float  # U_max (EauDe) or s_F (PolyPrune); 0 for the others
    order: tuple


def _variant_words(method: str) -> str:
    """What a method name adds beyond its algorithm, U_max, s_F, training length and oracle, in words (`_k3`: K = 3);
    a name that is not benchmark.sh's is its own only distinction, so it stays."""
    m = _EXP_RE.match(method)
    if m is None:
        return method
    words = []
    for token in m["rest"].split("_"):
        if not token or token == "oracle" or _SETTING_TOKEN.match(token):
            continue
        if k := re.fullmatch(r"k(\d+)", token):
            words.append(f"K = {k[1]}")
        elif s_max := re.fullmatch(r"smax([0-9.]+)", token):
            words.append(rf"$S_{{\max}}$ = {s_max[1]}")
        else:
            words.append(token)
    return ", ".join(words)


def method_style(method: str, eaude: bool, u_max: float | None, s_f: float | None, family: str) -> MethodStyle:
    """Name, colour and line of a method, the same in every figure: `eaudedqn_classic_umax10_t500k` is
    "EauDeDQN (U_max = 10)" in light blue with dashes wherever it is drawn."""
    from matplotlib import colormaps
    from matplotlib.colors import to_hex

    name = FAMILY_NAMES.get(family, family.upper())
    extra = _variant_words(method)
    algo = str(parse_exp_name(method)["algo"])
    if "oracle" in method.split("_"):
        kind, value, detail = "oracle", 0.0, f"$s_F$ from EauDe{name}"
        color, linestyle = METHOD_COLORS[kind], "-"
    elif eaude:
        kind, value = "eaude", DEFAULT_U_MAX if u_max is None else u_max
        detail = rf"$U_{{\max}}$ = {value:g}"
        # A U_max outside the presets' 3 / 10 / 30: a blue as dark as U_max is large (log scale up to 100).
        fallback = to_hex(colormaps["Blues"](0.45 + 0.5 * min(math.log10(max(value, 1.0)) / 2, 1.0)))
        color, linestyle = U_MAX_STYLES.get(value, (fallback, ":"))
    elif algo in DENSE_ALGOS or s_f == 0.0:
        kind, value, detail = "dense", 0.0, "dense"
        color, linestyle = METHOD_COLORS[kind], "-"
    else:
        kind, value = "polyprune", DEFAULT_S_F if s_f is None else s_f
        detail = f"$s_F$ = {value:g}"
        if value == DEFAULT_S_F:
            color, linestyle = METHOD_COLORS[kind], "-"
        else:  # pareto-mujoco's s_F from 0.5 to 0.99: an orange as dark as s_F is high
            color = to_hex(colormaps["Oranges"](0.3 + 0.6 * value))
            linestyle = VARIANT_DASHES[round(value * 100) % len(VARIANT_DASHES)]
    main = not extra and (kind in ("oracle", "dense") or value in (DEFAULT_U_MAX, DEFAULT_S_F))
    if extra and linestyle == "-":
        linestyle = VARIANT_DASHES[len(extra) % len(VARIANT_DASHES)]
    prefix = {"eaude": f"EauDe{name}", "polyprune": f"PolyPrune{name}", "oracle": f"PolyPrune{name} oracle"}
    label = f"{prefix.get(kind, name)} ({', '.join(w for w in (detail, extra) if w)})"
    return MethodStyle(kind, label, color, linestyle, main, value, (KINDS.index(kind), not main, value, extra))


def _curve_style(curve: dict, family: str) -> MethodStyle:
    return method_style(curve["method"], curve["eaude"], curve["u_max"], curve["final_sparsity_arg"], family)


def _tick_text(x: float, _pos: object = None) -> str:
    """Steps on an axis as a reader says them: 250k, 1.5M."""
    for div, unit in ((1_000_000, "M"), (1_000, "k")):
        if abs(x) >= div:
            return f"{x / div:g}{unit}"
    return f"{x:g}"


def _steps_axis(ax, label: str) -> None:
    from matplotlib.ticker import FuncFormatter, MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(nbins=4, steps=[1, 2, 2.5, 5, 10]))
    ax.xaxis.set_major_formatter(FuncFormatter(_tick_text))
    ax.set_xlim(left=0)  # a run starts at step 0 even where its first point is logged later
    ax.set_xlabel(label)


def _size_title(size: str) -> str:
    return f"{size} network" if size in SIZES else f"network size: {size}"


def _sizes(curves: Sequence[dict]) -> list[str]:
    return sorted({c["size"] for c in curves}, key=_size_order)


def _new_figure(heading: str, setting_title: str, height: float):
    """A figure of the paper's width titled with what it shows above which runs it shows, whose layout leaves room
    for the legend below the panels, outside the data."""
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=(FIGURE_WIDTH, height), layout="constrained")
    # No line break inside "T = 500" (textwrap breaks only at ASCII spaces).
    lines = (textwrap.fill(line.replace(" = ", "\u00a0=\u00a0"), 85) for line in (heading, setting_title))
    fig.suptitle("\n".join(lines))
    return fig


def _legend(fig, styles: Sequence[MethodStyle], extras: Sequence = (), handle: str = "line") -> None:
    """One legend for the whole figure, below its panels: a line, marker or bar per method (`handle`) in KINDS order,
    then what the thin lines, bands or dots mean."""
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    def method_handle(st: MethodStyle):
        if handle == "bar":
            return Patch(facecolor=st.color, alpha=0.5, edgecolor=st.color, label=st.label)
        if handle == "marker":
            return Line2D([], [], color=st.color, linestyle="none", marker=KIND_MARKERS[st.kind], ms=7, label=st.label)
        return Line2D([], [], color=st.color, linestyle=st.linestyle, linewidth=2, label=st.label)

    handles = [method_handle(st) for st in sorted(set(styles), key=lambda st: st.order)]
    handles += list(extras)
    # The widest label decides how many columns fit the figure's width (9 pt: about 0.07 in per character).
    longest = max(len(re.sub(r"[${}\\_]|max", "", h.get_label())) for h in handles) + 4
    ncols = max(1, min(len(handles), int(FIGURE_WIDTH / (0.07 * longest))))
    fig.legend(handles=handles, loc="outside lower center", ncols=ncols)


def _band_extras() -> list:
    """Legend entries that say what a curve figure draws besides each method's IQM."""
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    return [
        Line2D([], [], color="0.4", **{**SEED_LINE, "alpha": 0.8}, label="one seed"),
        Patch(color="0.4", alpha=CI_ALPHA * 1.5, linewidth=0, label="95% bootstrap CI of the IQM"),
    ]


def _draw_curve(ax, grid: np.ndarray, stats: Sequence, seeds: Sequence[np.ndarray], style: MethodStyle) -> None:
    """One method on a panel: each seed a thin line, under the IQM (thick) and its 95% interval (band)."""
    for y in seeds:
        ax.plot(grid, y, color=style.color, **SEED_LINE)
    est, lo, hi = (np.asarray(a, dtype=float) for a in stats)
    ax.fill_between(grid, lo, hi, color=style.color, alpha=CI_ALPHA, linewidth=0, zorder=2)
    ax.plot(grid, est, color=style.color, linestyle=style.linestyle, linewidth=1.8, zorder=3)


class _Setting:
    """One setting's curves, runs and method styles, as the figures draw them."""

    def __init__(self, s: dict, runs: Sequence[Run]) -> None:
        self.s, self.grid = s, np.asarray(s["grid"], dtype=float)
        self.runs = [
            r
            for r in runs
            if r.problem is None
            and r.family == s["family"]
            and setting_variant(r) == s["variant"]
            and r.env_id in s["env_ids"]
        ]
        self.styles = {c["method"]: _curve_style(c, s["family"]) for c in s["curves"]}
        self.name = FAMILY_NAMES.get(s["family"], s["family"].upper())
        self.score_label = "human-normalised score" if s["normalized"] else "return"
        self.step_word = "population step" if s["family"] == "sac" else "target update"
        # The setting's title names its env only where it splits envs; a figure says which envs it pools.
        envs = s["env_ids"]
        pooled = f"{len(envs)} games" if s["normalized"] and len(envs) > 2 else ", ".join(envs)
        self.title = s["title"] if any(env in s["title"] for env in envs) else f"{s['title']}, {pooled}"

    def curves(self, *kinds: str, main_only: bool = False, quantity: str = "score") -> list[dict]:
        return [
            c
            for c in self.s["curves"]
            if self.styles[c["method"]].kind in kinds
            and (self.styles[c["method"]].main or not main_only)
            and c[quantity] is not None
        ]

    def seeds(self, curve: dict, quantity: str) -> list[np.ndarray]:
        group = [r for r in self.runs if (r.method, r.size) == (curve["method"], curve["size"])]
        if quantity == "score":
            return [run_scores(r, self.grid, normalize=self.s["normalized"]) for r in group]
        return [sparsity_curve(r, self.grid) for r in group]

    def panel(self, ax, curves: Sequence[dict], quantity: str) -> None:
        for c in sorted(curves, key=lambda c: self.styles[c["method"]].order, reverse=True):  # EauDe on top
            _draw_curve(ax, self.grid, c[quantity], self.seeds(c, quantity), self.styles[c["method"]])
        _steps_axis(ax, self.s["x_label"])
        if quantity == "sparsity":
            ax.set_ylim(0, 1)


def _quantity_figure(st: _Setting, heading: str, rows: Sequence[tuple[str, str, list[dict]]], sizes: Sequence[str]):
    """Quantities (sparsity, return) against steps, a panel per quantity and network size: one size gives one row of
    quantities, several give a row per quantity and a column per size, each row on one scale."""
    one = len(sizes) == 1
    fig = _new_figure(heading, st.title, 3.3 if one else 2.6 * len(rows) + 0.9)
    shape = (1, len(rows)) if one else (len(rows), len(sizes))
    axes = fig.subplots(*shape, squeeze=False, sharex=True, sharey=False if one else "row")
    for q, (quantity, y_label, curves) in enumerate(rows):
        for z, size in enumerate(sizes):
            ax = axes[0, q] if one else axes[q, z]
            st.panel(ax, [c for c in curves if c["size"] == size], quantity)
            if one or q == 0:
                ax.set_title(_size_title(size))
            if one or z == 0:
                ax.set_ylabel(y_label)
            if not one and q < len(rows) - 1:
                ax.set_xlabel("")
    _legend(fig, [st.styles[c["method"]] for _, _, curves in rows for c in curves], _band_extras())
    return fig


def _overview_figure(st: _Setting):
    """The front page (the paper's Fig. 1 and 5 in one): the sparsity EauDe discovers beside PolyPrune's fixed
    schedule, above the returns of EauDe, PolyPrune and the dense network, per network size."""
    sparsity = st.curves("eaude", "polyprune", main_only=True, quantity="sparsity")
    score = st.curves("eaude", "polyprune", "dense", main_only=True)
    if not any(st.styles[c["method"]].kind == "eaude" for c in sparsity):
        return None
    rows = [("sparsity", "sparsity (IQM)", sparsity), ("score", f"{st.score_label} (IQM)", score)]
    heading = f"EauDe{st.name}'s sparsity and {st.score_label}"
    if any(st.styles[c["method"]].kind == "polyprune" for c in sparsity):
        heading = f"EauDe{st.name} discovers its sparsity, PolyPrune{st.name} follows a fixed one"
    return _quantity_figure(st, heading, rows, _sizes(sparsity + score))


def _return_figure(st: _Setting):
    """IQM return of every method but PolyPrune's oracle (its own figure) per network size (Fig. 4, 6, 7), a row per
    method: returns are noisy and several methods on one panel hide each other, so each has its panel, with the
    dense network's IQM as a dashed line to compare against."""
    from matplotlib.lines import Line2D

    curves = st.curves("eaude", "polyprune", "dense")
    if not curves:
        return None
    methods = sorted({c["method"] for c in curves}, key=lambda m: st.styles[m].order)
    sizes = _sizes(curves)
    fig = _new_figure(st.score_label.capitalize(), st.title, 1.45 * len(methods) + 1.6)
    axes = fig.subplots(len(methods), len(sizes), squeeze=False, sharex=True, sharey=True)
    dense = {c["size"]: c for c in curves if st.styles[c["method"]].kind == "dense" and st.styles[c["method"]].main}
    for (row, method), (col, size) in itertools.product(enumerate(methods), enumerate(sizes)):
        ax, style = axes[row, col], st.styles[method]
        if row == 0:
            ax.set_title(_size_title(size))
        if col == 0:  # the row's method, in its colour, where a table has its row labels
            ax.set_ylabel(style.label.replace(" (", "\n(", 1), color=style.color)
        drawn = [c for c in curves if (c["method"], c["size"]) == (method, size)]
        if not drawn:
            ax.text(0.5, 0.5, "not run at this size", transform=ax.transAxes, ha="center", va="center", color="0.5")
            ax.tick_params(left=False, bottom=row == len(methods) - 1)
            ax.spines["left"].set_visible(False)
            ax.grid(False)
        else:
            st.panel(ax, drawn, "score")
            if size in dense and dense[size]["method"] != method:
                ax.plot(st.grid, dense[size]["score"][0], color=METHOD_COLORS["dense"], linestyle="--", linewidth=1)
        _steps_axis(ax, st.s["x_label"] if row == len(methods) - 1 else "")
    fig.supylabel(f"{st.score_label} (IQM)")
    extras = _band_extras()
    if dense:
        label = f"{st.styles[next(iter(dense.values()))['method']].label}, IQM"
        extras.append(Line2D([], [], color=METHOD_COLORS["dense"], linestyle="--", linewidth=1, label=label))
    _legend(fig, [st.styles[m] for m in methods], extras)
    return fig


def _schedule_figure(st: _Setting):
    """Sparsity of the target network per network size: EauDe's at every U_max beside PolyPrune's schedule (Fig. 5 /
    8 left); the dense network's (0) and the oracle's (its own figure) stay out."""
    curves = st.curves("eaude", "polyprune", quantity="sparsity")
    if not curves:
        return None
    rows = [("sparsity", "sparsity (IQM)", curves)]
    return _quantity_figure(st, "Sparsity of the target network", rows, _sizes(curves))


def _oracle_figure(st: _Setting):
    """PolyPrune's oracle (s_F copied from EauDe's run of the same env and seed) beside EauDe (U_max = 3), PolyPrune
    (s_F = 0.95) and, for the return, the dense network, for each size it ran at (Fig. 7 bottom)."""
    sizes = _sizes(st.curves("oracle"))
    if not sizes:
        return None
    keep = [c for c in st.curves(*KINDS, main_only=True) if c["size"] in sizes]
    sparsity = [c for c in keep if st.styles[c["method"]].kind != "dense" and c["sparsity"] is not None]
    rows = [("score", f"{st.score_label} (IQM)", keep), ("sparsity", "sparsity (IQM)", sparsity)]
    heading = f"PolyPrune{st.name} told EauDe{st.name}'s final sparsity (oracle)"
    return _quantity_figure(st, heading, rows, sizes)


def _final_sparsity_figure(st: _Setting):
    """Final sparsity EauDe discovers per env, network size and U_max (Fig. 5 / 8 right): a bar per mean over seeds,
    a dot per seed, PolyPrune's fixed s_F as a dashed line."""
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    curves = st.curves("eaude", quantity="sparsity")
    if not curves:
        return None
    methods = sorted({c["method"] for c in curves}, key=lambda m: st.styles[m].order)
    sizes, envs = _sizes(curves), sorted({r["env_id"] for r in st.s["runs"]})
    ncols = min(len(envs), 5)
    nrows = math.ceil(len(envs) / ncols)
    fig = _new_figure(f"Final sparsity EauDe{st.name} discovers", st.title, 2.6 * nrows + 1.3)
    axes = fig.subplots(nrows, ncols, squeeze=False, sharey=True)
    s_fs = sorted({st.styles[c["method"]].value for c in st.curves("polyprune", quantity="sparsity")})
    width = min(0.8 / len(methods), 0.3)  # one U_max alone is a bar, not a wall
    rng = np.random.default_rng(0)  # the dots' sideways jitter, the same at every drawing
    for ax, env in zip(axes.flat, envs, strict=False):
        for j, size in enumerate(sizes):
            seeds = {
                method: values
                for method in methods
                if (
                    values := [
                        r["final_sparsity"]
                        for r in st.s["runs"]
                        if (r["env_id"], r["method"], r["size"]) == (env, method, size)
                        and _is_finite(r["final_sparsity"])
                    ]
                )
            }
            for i, (method, values) in enumerate(seeds.items()):  # the bars a size has, centred on its tick
                style, x = st.styles[method], j + (i - (len(seeds) - 1) / 2) * width
                ax.bar(x, np.mean(values), width * 0.9, color=style.color, alpha=0.35, edgecolor=style.color)
                jitter = rng.uniform(-0.25, 0.25, len(values)) * width
                ax.scatter(x + jitter, values, s=16, color=style.color, edgecolors="white", linewidths=0.5, zorder=3)
        for s_f in s_fs:
            ax.axhline(s_f, color=METHOD_COLORS["polyprune"], linestyle="--", linewidth=1.2)
        ax.set_xticks(range(len(sizes)), sizes)
        ax.set(xlim=(-0.6, len(sizes) - 0.4), ylim=(0, 1))
        ax.set_xlabel("network size")
        if len(envs) > 1:
            ax.set_title(env.removesuffix("-v5"))
    for ax in axes[:, 0]:
        ax.set_ylabel("final sparsity")
    for ax in axes.flat[len(envs) :]:
        ax.set_visible(False)
    extras = [
        Patch(facecolor="0.4", alpha=0.35, edgecolor="0.4", label="bar: mean over seeds"),
        Line2D([], [], color="0.4", marker="o", linestyle="none", markersize=5, label="one seed"),
    ]
    if s_fs:
        label = f"PolyPrune{st.name}'s fixed $s_F$ = {'/'.join(f'{v:g}' for v in s_fs)}"
        extras.append(Line2D([], [], color=METHOD_COLORS["polyprune"], linestyle="--", label=label))
    _legend(fig, [st.styles[m] for m in methods], extras, handle="bar")
    return fig


def _return_vs_sparsity_figure(st: _Setting):
    """Final return against final sparsity per network size (Fig. 9 / 13 left): a dot per seed, the IQM of each
    method with its 95% intervals in both directions."""
    from matplotlib.lines import Line2D

    finals = [f for f in st.s["finals"] if f["final_sparsity"]]
    if not finals or not st.curves("eaude", "polyprune", "oracle", quantity="sparsity"):
        return None
    sizes = _sizes(finals)
    fig = _new_figure(f"Final {st.score_label} against final sparsity", st.title, 3.6)
    axes = fig.subplots(1, len(sizes), squeeze=False, sharey=True)[0]
    for ax, size in zip(axes, sizes, strict=True):
        points = sorted((f for f in finals if f["size"] == size), key=lambda f: st.styles[f["method"]].order)
        for f in reversed(points):  # EauDe on top where two methods end at the same point
            style = st.styles[f["method"]]
            seeds = [r for r in st.s["runs"] if (r["method"], r["size"]) == (f["method"], size)]
            ys = np.array([r["final_return"] for r in seeds], dtype=float)
            if st.s["normalized"]:
                ys = np.array([human_normalized(y, r["env_id"]) for y, r in zip(ys, seeds, strict=True)])
            xs = [r["final_sparsity"] for r in seeds]
            ax.scatter(xs, ys, s=14, color=style.color, alpha=0.5, linewidths=0, zorder=2)
            (sx, sxl, sxh), (sy, syl, syh) = f["final_sparsity"], f["final_score"]
            ax.errorbar(
                sx,
                sy,
                # A percentile interval need not contain the estimate (and rounding): clip at 0.
                xerr=[[max(sx - sxl, 0.0)], [max(sxh - sx, 0.0)]],
                yerr=[[max(sy - syl, 0.0)], [max(syh - sy, 0.0)]],
                fmt=KIND_MARKERS[style.kind],
                color=style.color,
                markersize=7,
                markeredgecolor="white",
                capsize=2,
                zorder=3,
            )
        ax.set(title=_size_title(size), xlabel="final sparsity", xlim=(-0.05, 1.05))
    axes[0].set_ylabel(f"final {st.score_label}")
    extras = [
        Line2D([], [], color="0.4", marker="o", alpha=0.5, linestyle="none", markersize=4, label="one seed"),
        Line2D([], [], color="0.4", marker="o", linestyle="-", markersize=7, label="IQM, 95% CIs"),
    ]
    _legend(fig, [st.styles[f["method"]] for f in finals], extras, handle="marker")
    return fig


def _population_figure(st: _Setting):
    """EauDe's population at every population step (Fig. 14), a panel per env (rows) and network size (columns): a
    dot per network after the step (the lowest seed), the target network's sparsity per seed (thin) and its mean over
    seeds (thick), a colour per U_max."""
    from matplotlib.lines import Line2D

    pruns = [r for r in st.runs if r.population]
    if not pruns:
        return None
    envs = sorted({r.env_id for r in pruns})
    psizes = sorted({r.size for r in pruns}, key=_size_order)
    heading = f"EauDe{st.name}'s population at every {st.step_word}"
    fig = _new_figure(heading, st.title, 2.6 * len(envs) + 1.5)
    axes = fig.subplots(len(envs), len(psizes), squeeze=False, sharex=True, sharey=True)
    styles = {
        r.method: method_style(r.method, r.is_eaude, r.u_max, r.final_sparsity_arg, st.s["family"]) for r in pruns
    }
    for (row, env), (col, size) in itertools.product(enumerate(envs), enumerate(psizes)):
        ax = axes[row, col]
        for method in sorted({r.method for r in pruns}, key=lambda m: styles[m].order):
            group = [r for r in pruns if (r.method, r.size, r.env_id) == (method, size, env)]
            if not group:
                continue
            color = styles[method].color
            first = min(group, key=lambda r: r.seed)
            xs = [e["global_step"] for e in first.population for _ in e["sparsities_after"]]
            ys = [v for e in first.population for v in e["sparsities_after"]]
            ax.scatter(xs, ys, s=2, color=color, alpha=0.15, linewidths=0, rasterized=True, zorder=1)
            target = np.array(
                [
                    binned_curve(
                        np.array([e["global_step"] for e in r.population]),
                        np.array([e["sparsities_before"][e["target_index"]] for e in r.population]),
                        st.grid,
                        until=r.last_step,
                    )
                    for r in group
                ]
            )
            for y in target:
                ax.plot(st.grid, y, color=color, **{**SEED_LINE, "zorder": 2})
            ax.plot(st.grid, np.nanmean(target, axis=0), color=color, linestyle=styles[method].linestyle, lw=1.8)
        title = _size_title(size) if len(envs) == 1 else f"{env}, {_size_title(size)}"
        ax.set(title=title, ylim=(0, 1))
        _steps_axis(ax, st.s["x_label"] if row == len(envs) - 1 else "")
        if col == 0:
            ax.set_ylabel("sparsity")
    extras = [
        Line2D(
            [], [], color="0.4", marker="o", alpha=0.5, linestyle="none", markersize=3, label="a network, lowest seed"
        ),
        Line2D([], [], color="0.4", **{**SEED_LINE, "alpha": 0.8}, label="target network, one seed"),
        Line2D([], [], color="0.4", linewidth=1.8, label="target network, mean over seeds"),
    ]
    _legend(fig, list(styles.values()), extras)
    return fig


FIGURE_DRAWERS: dict[str, Callable[[_Setting], object]] = {
    "overview": _overview_figure,
    "return_iqm": _return_figure,
    "sparsity_schedule": _schedule_figure,
    "final_sparsity": _final_sparsity_figure,
    "return_vs_sparsity": _return_vs_sparsity_figure,
    "oracle": _oracle_figure,
    "population": _population_figure,
}


def _save_png(fig, path: Path) -> None:
    """The figure as a PNG of 256 colours: flat fills and antialiased lines look the same to the eye in a third of the
    bytes, which docs/results/ keeps in git at every re-publication."""
    import io

    from PIL import Image  # matplotlib's own dependency

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=PNG_DPI)
    image = Image.open(buffer).convert("RGB")
    image.quantize(256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(path, optimize=True)


def make_figures(result: dict, runs: Sequence[Run], out: Path, formats: Sequence[str] = ("png",)) -> list[Path]:
    """Write the figures of every setting (FIGURE_KINDS that have data), each in every one of `formats` (png, pdf,
    svg); return their paths, setting by setting in FIGURE_KINDS order."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written: list[Path] = []
    # Bins where no seed has data yet are NaN on purpose; numpy's warnings about them are noise.
    warnings.filterwarnings("ignore", "Mean of empty slice", RuntimeWarning)
    warnings.filterwarnings("ignore", "All-NaN slice encountered", RuntimeWarning)
    # No date in the PDF and SVG files: the same runs redraw the same bytes.
    metadata = {"pdf": {"CreationDate": None}, "svg": {"Date": None}}
    with plt.rc_context(FIGURE_STYLE):
        for setting, s in result["settings"].items():
            st = _Setting(s, runs)
            for kind in FIGURE_KINDS:
                fig = FIGURE_DRAWERS[kind](st)
                if fig is None:
                    continue
                for fmt in formats:
                    path = out / f"{setting}_{kind}.{fmt}"
                    if fmt == "png":
                        _save_png(fig, path)
                    else:
                        fig.savefig(path, dpi=PNG_DPI, metadata=metadata[fmt])
                    written.append(path)
                plt.close(fig)
    return written


# ----------------------------------------------------------------------------------------------------------------------
# The paper's claims, decided from the runs present
# ----------------------------------------------------------------------------------------------------------------------
DENSE_ALGOS = ("dqn", "dqn_classic", "cql", "sac")
SUBSTANTIAL_SPARSITY = 0.5
# A cell decides a claim once it has this many finished seeds (the paper's runs have 5); a sweep that is still going
# publishes its finished runs, whose cells wait until then instead of deciding on one or two seeds.
MIN_SEEDS = 3
CLAIMS = {
    "C1": "EauDe reaches returns comparable to its dense counterpart while reaching a substantial sparsity",
    "C2": "PolyPrune with its hand-set s_F = 0.95 hurts the small network more than EauDe does",
    "C3": "EauDe's discovered final sparsity grows with the network size",
    "C4": "U_max trades return for sparsity (3 normal, 10 ambitious, 30 aggressive)",
}
CLAIM_RULES = {
    "C1": "per env and size: a cell supports the claim when EauDe's final-return CI is not entirely below the dense "
    f"one's and EauDe's final sparsity (IQM) is at least {SUBSTANTIAL_SPARSITY}; otherwise it contradicts it.",
    "C2": "per env, small network: supports when PolyPrune's final-return CI lies entirely below EauDe's; "
    "contradicts when PolyPrune's IQM is not below EauDe's; unclear when it is below but the CIs overlap.",
    "C3": "per env: supports when EauDe's final sparsity (IQM) grows from size to size and the CIs of the smallest "
    "and the largest size are disjoint; contradicts when the largest size's IQM is not above the smallest's; "
    "unclear otherwise.",
    "C4": "per env and size: supports when EauDe's final sparsity (IQM) grows with U_max, the CIs of the lowest and "
    "the highest U_max are disjoint and the highest U_max's final return (IQM) is not above the lowest's; contradicts "
    "when the highest U_max's sparsity IQM is not above the lowest's; unclear otherwise.",
}


def _role(run: Run) -> str | None:
    """eaude, polyprune or dense (a PolyPrune script run with s_F = 0 is the dense baseline)."""
    if run.is_eaude:
        return "eaude"
    if run.algo.startswith("polyprune_"):
        return "polyprune"
    return "dense" if run.algo in DENSE_ALGOS else None


def _variant(run: Run) -> str:
    """What an exp name adds beyond algo, size, U_max and s_F (a training length such as `_t30k`): runs of
    different variants are never compared with each other."""
    m = _EXP_RE.match(run.exp_name)
    return m["rest"] if m else run.exp_name


# benchmark.sh's training-length (`_t500k`, `_t25M`), pruning-period (`_p100`) and training-period (`_g4`, MinAtar's
# protocol) tokens of an exp name.
_SETTING_TOKEN = re.compile(r"^(?:t\d+(?:\.\d+)?[kM]?|p\d+|g\d+)$")


def setting_variant(run: Run) -> str:
    """The training length and protocol suffix of a run's exp name (`_t500k`, `_p100_t100k`, "" for none): the part of
    its variant that decides the budget and the clock. Other variant tokens (`_oracle`, `_k3`) stay in the method name,
    so the PolyPrune oracle is drawn beside the EauDe runs it copied its s_F from."""
    return "".join(f"_{token}" for token in _variant(run).split("_") if _SETTING_TOKEN.match(token))


def population_steps(run: Run) -> int:
    """Population steps a run logged: the distinct `global_step`s of its population.jsonl events (EauDeDQN and
    EauDeCQL write one event per target update, EauDeSAC one per critic, two per population step). The warm-up
    (learning_starts) logs none, so a 500k-step classic run with T = 500 and 10k warm-up steps logs 980."""
    return len({e["global_step"] for e in run.population if isinstance(e.get("global_step"), int)})


def clock_steps(run: Run) -> int:
    """t_final / T (DQN, offline CQL: env or gradient steps per target update) or t_final / P (SAC): the paper's way
    of counting its clock (10M / 8 000 = 1 250 on Atari, warm-up included), from config.json; the logged
    population_steps when config.json lacks the budget or the period."""
    period, budget = run.config.get(CLOCK_ARGS.get(run.family, "")), _budget(run.config)
    if isinstance(period, int) and period > 0 and budget:
        return budget // period
    return population_steps(run)


def sparsity_cap(run: Run) -> float:
    """1 - (1 - S_max)^n, n = population_steps(run): the highest sparsity Eq. 3 lets a run reach, since one
    exploration step prunes at most S_max of the remaining weights (S_max from config.json)."""
    s_max = run.config.get("s_max")
    s_max = float(s_max) if _is_finite(s_max) else DEFAULT_S_MAX
    return 1.0 - (1.0 - s_max) ** population_steps(run)


def claim_cells(runs: Sequence[Run], num_points: int = 40, reps: int = 2000) -> dict[tuple, dict]:
    """Final return and final sparsity (IQM [95% CI] over seeds) of every (family, env, variant, role, size, U_max,
    s_F) cell of the finished runs; U_max is None except for EauDe, s_F None except for PolyPrune. Each cell also
    holds the minimum over its seeds of population_steps ("population_steps"), clock_steps ("clock") and
    sparsity_cap ("cap")."""
    groups: dict[tuple, list[Run]] = defaultdict(list)
    for run in runs:
        role = _role(run)
        if run.problem is not None or role is None:
            continue
        u_max = (run.u_max if run.u_max is not None else DEFAULT_U_MAX) if role == "eaude" else None
        s_f = (run.final_sparsity_arg if run.final_sparsity_arg is not None else 0.95) if role == "polyprune" else None
        groups[(run.family, run.env_id, _variant(run), role, run.size, u_max, s_f)].append(run)
    cells = {}
    for key, group in groups.items():
        returns = np.array([final_return(r, num_points) for r in group])
        sparsities = np.array([final_sparsity(r) for r in group])
        cells[key] = {
            "n": len(group),
            "return": stratified_bootstrap_ci([returns[~np.isnan(returns)]], reps=reps),
            "sparsity": stratified_bootstrap_ci([sparsities[~np.isnan(sparsities)]], reps=reps),
            "population_steps": min(map(population_steps, group)),
            "clock": min(map(clock_steps, group)),
            "cap": min(map(sparsity_cap, group)),
        }
    return cells


def _verdict(outcomes: list[str]) -> str:
    if not outcomes:
        return "not tested (no runs of this kind)"
    if all(o == "supports" for o in outcomes):
        return "supported"
    if 2 * outcomes.count("contradicts") >= len(outcomes):
        return "not supported"
    return "inconclusive at this scale"


# The two claim sections of summary.md, in the order they are printed: the cells at the paper's clock decide the
# paper's claims; the budget-capped ones (too few population steps for Eq. 3's cap to stop binding) come below.
CLAIM_SECTIONS = {
    "paper_clock": "at the paper's clock",
    "budget_capped": "budget-capped runs",
}


def paper_claims(runs: Sequence[Run], num_points: int = 40, reps: int = 2000) -> list[dict]:
    """A verdict for each of the paper's claims C1-C4 from the runs present, with the table that decides it, once for
    the cells at the paper's clock (every EauDe run of the row has clock_steps >= PAPER_CLOCK) and once for the
    budget-capped ones, in that order; each dict's "section" says which (CLAIM_SECTIONS). Only default settings are
    compared (EauDe at U_max = 3, PolyPrune at s_F = 0.95) except for C4, which varies U_max; each cell's outcome
    follows CLAIM_RULES and the verdict combines them: supported when every cell supports the claim, not supported when at
    least half contradict it, inconclusive at this scale otherwise. Every row ends with n (the fewest population steps
    an EauDe run of the row logged), the cap 1 - (1 - S_max)^n and the cell's outcome."""
    cells = {key: c for key, c in claim_cells(runs, num_points, reps).items() if c["n"] >= MIN_SEEDS}

    def cell(family, env, variant, role, size, u_max=None, s_f=None):
        return cells.get((family, env, variant, role, size, u_max, s_f))

    def fmt(value: tuple[float, float, float], digits: int) -> str:
        return _fmt(*value, digits)

    claims = {
        (section, cid): {"id": cid, "section": section, "claim": text, "rule": CLAIM_RULES[cid], "rows": []}
        for section in CLAIM_SECTIONS
        for cid, text in CLAIMS.items()
    }

    def add(cid: str, row: list[str], eaude_cells: Sequence[dict], outcome: str) -> None:
        # The EauDe runs decide the section and n: they are the ones whose sparsity Eq. 3 caps.
        section = "paper_clock" if min(c["clock"] for c in eaude_cells) >= PAPER_CLOCK else "budget_capped"
        n = min(c["population_steps"] for c in eaude_cells)
        cap = min(c["cap"] for c in eaude_cells)
        claims[(section, cid)]["rows"].append([*row, str(n), f"{cap:.4f}", outcome])

    places = sorted({k[:3] for k in cells})
    sizes_of = {place: sorted({k[4] for k in cells if k[:3] == place}, key=_size_order) for place in places}
    for family, env, variant in places:
        where = f"{env} ({family}{variant})"
        for size in sizes_of[(family, env, variant)]:
            eaude = cell(family, env, variant, "eaude", size, DEFAULT_U_MAX)
            dense = cell(family, env, variant, "dense", size)
            poly = cell(family, env, variant, "polyprune", size, s_f=0.95)
            if eaude and dense:
                below = eaude["return"][2] < dense["return"][1]
                ok = not below and eaude["sparsity"][0] >= SUBSTANTIAL_SPARSITY
                c1 = [fmt(eaude["return"], 1), fmt(dense["return"], 1), fmt(eaude["sparsity"], 3)]
                add("C1", [where, size, *c1], [eaude], "supports" if ok else "contradicts")
            if eaude and poly and size == "small":
                p_ret, e_ret = poly["return"], eaude["return"]
                outcome = "supports" if p_ret[2] < e_ret[1] else "contradicts" if p_ret[0] >= e_ret[0] else "unclear"
                c2 = [
                    fmt(e_ret, 1),
                    fmt(p_ret, 1),
                    fmt(dense["return"], 1) if dense else "n/a",
                    fmt(poly["sparsity"], 3),
                ]
                add("C2", [where, size, *c2], [eaude], outcome)
            u_cells = sorted(
                (k[5], c) for k, c in cells.items() if k[:5] == (family, env, variant, "eaude", size) and k[5]
            )
            if len(u_cells) >= 2:
                (_, low), (_, high) = u_cells[0], u_cells[-1]
                sp = [c["sparsity"][0] for _, c in u_cells]
                rises = all(a < b for a, b in itertools.pairwise(sp)) and low["sparsity"][2] < high["sparsity"][1]
                costs = high["return"][0] <= low["return"][0]
                outcome = (
                    "supports"
                    if rises and costs
                    else "contradicts"
                    if high["sparsity"][0] <= low["sparsity"][0]
                    else "unclear"
                )
                by_u_sparsity = "; ".join(f"{u:g}: {fmt(c['sparsity'], 3)}" for u, c in u_cells)
                by_u_return = "; ".join(f"{u:g}: {fmt(c['return'], 1)}" for u, c in u_cells)
                add("C4", [where, size, by_u_sparsity, by_u_return], [c for _, c in u_cells], outcome)
        by_size = [
            (size, c)
            for size in sizes_of[(family, env, variant)]
            if (c := cell(family, env, variant, "eaude", size, DEFAULT_U_MAX))
        ]
        if len(by_size) >= 2:
            sp = [c["sparsity"] for _, c in by_size]
            grows = all(a[0] < b[0] for a, b in itertools.pairwise(sp)) and sp[0][2] < sp[-1][1]
            outcome = "supports" if grows else "contradicts" if sp[-1][0] <= sp[0][0] else "unclear"
            by_size_text = "; ".join(f"{size}: {fmt(c['sparsity'], 3)}" for size, c in by_size)
            add("C3", [where, by_size_text], [c for _, c in by_size], outcome)
    clock = ["n", "cap"]
    headers = {
        "C1": ["env (setting)", "size", "EauDe return", "dense return", "EauDe sparsity", *clock, "cell"],
        "C2": [
            "env (setting)",
            "size",
            "EauDe return",
            "PolyPrune return",
            "dense return",
            "PolyPrune sparsity",
            *clock,
            "cell",
        ],
        "C3": ["env (setting)", "EauDe final sparsity by size", *clock, "cell"],
        "C4": ["env (setting)", "size", "final sparsity by U_max", "final return by U_max", *clock, "cell"],
    }
    for claim in claims.values():
        claim["header"] = headers[claim["id"]]
        claim["verdict"] = _verdict([row[-1] for row in claim["rows"]])
    return list(claims.values())


def leave_one_seed_out(runs: Sequence[Run], num_points: int = 40, reps: int = 2000) -> dict[str, dict[int, str]]:
    """How much each verdict at the paper's clock hangs on one seed: {claim id: {seed: verdict}}, the verdict
    recomputed by the same rules with every run of that seed left out, for each seed of the paper's-clock runs in
    turn. A cell left with fewer than MIN_SEEDS seeds drops out, as it would have before its seeds were run."""
    seeds = sorted({run.seed for run in runs if run.problem is None and clock_steps(run) >= PAPER_CLOCK})
    verdicts: dict[str, dict[int, str]] = defaultdict(dict)
    for seed in seeds:
        for claim in paper_claims([run for run in runs if run.seed != seed], num_points, reps):
            if claim["section"] == "paper_clock":
                verdicts[claim["id"]][seed] = claim["verdict"]
    return dict(verdicts)


def agreement(verdict: str, without: dict[int, str]) -> str:
    """ "4 of 5 agree (without seed 2: inconclusive at this scale)": how many leave-one-seed-out verdicts are the full
    one, and the others with the seed left out."""
    others = [f"without seed {seed}: {v}" for seed, v in sorted(without.items()) if v != verdict]
    text = f"{len(without) - len(others)} of {len(without)} agree"
    return f"{text} ({'; '.join(others)})" if others else text


def provenance(runs: Sequence[Run]) -> list[str]:
    """Where the runs came from, read from their config.json: scripts' git commits, package versions, JAX backend and,
    when recorded, the machine."""
    seen: dict[str, set[str]] = defaultdict(set)
    for run in runs:
        config = run.config
        if config.get("git_commit"):
            seen["git commit"].add(str(config["git_commit"])[:12])
        for name, version in sorted((config.get("versions") or {}).items()):
            seen[name].add(str(version))
        if config.get("jax_backend"):
            seen["JAX backend"].add(str(config["jax_backend"]))
        for name, value in sorted((config.get("machine") or {}).items()):
            seen[name].add(str(value))
    return [f"{name}: {', '.join(sorted(values))}" for name, values in seen.items()]


def _fmt(est: float, lo: float, hi: float, digits: int) -> str:
    if any(math.isnan(v) for v in (est, lo, hi)):
        return "n/a"
    return f"{est:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"


def _claims_markdown(claims: Sequence[dict], leave_one_out: dict[str, dict[int, str]] | None = None) -> list[str]:
    lines: list[str] = []
    clock = f"{PAPER_CLOCK:,}".replace(",", " ")
    intros = {
        "paper_clock": f"Cells whose every EauDe run has t_final / T >= {clock} (DQN: environment steps per target "
        "update; SAC: environment steps per population step P; offline CQL: gradient steps per target update), the "
        "clock of the paper's runs (Atari: 10M / 8 000 = 1 250 target updates; MuJoCo: 1M / 1 000 = 1 000 population "
        "steps). These decide the paper's claims.",
        "budget_capped": f"Cells with an EauDe run of t_final / T < {clock}: too few population steps for Eq. 3's "
        "cap to stop binding, so these verdicts are statements about the budget, not about the method.",
    }
    for section, label in CLAIM_SECTIONS.items():
        sclaims = [c for c in claims if c.get("section", "paper_clock") == section]
        if not sclaims:
            continue
        lines += [f"## The paper's claims, {label}", "", intros[section], ""]
        if section == "paper_clock" and leave_one_out:
            lines += ["| claim | verdict | verdicts with one seed left out |", "|---|---|---|"]
            lines += [
                f"| {c['id']}: {c['claim']} | **{c['verdict']}** | {agreement(c['verdict'], leave_one_out[c['id']])} |"
                for c in sclaims
            ]
        else:
            lines += ["| claim | verdict |", "|---|---|"]
            lines += [f"| {c['id']}: {c['claim']} | **{c['verdict']}** |" for c in sclaims]
        lines += [
            "",
            "Each verdict combines cells (env x size, runs of the same training length only): supported when every "
            "cell supports the claim, not supported when at least half contradict it, inconclusive at this scale "
            f"otherwise; a cell counts once every method in it has {MIN_SEEDS} finished seeds. EauDe runs at U_max = 3 "
            "and PolyPrune at s_F = 0.95 unless the claim varies them. n: the "
            "population steps (target updates; for SAC population steps) logged in population.jsonl, counted as "
            "distinct logged steps, the fewest over the row's EauDe runs (the warm-up logs none, so n is below "
            "t_final / T); cap: 1 - (1 - S_max)^n with S_max from the runs' config.json, the highest sparsity "
            "Eq. 3 allows after n steps."
            + (
                " Verdicts with one seed left out: the same rules with every run of one seed left out, for each seed in"
                " turn (`leave_one_seed_out`); a cell left with fewer seeds than it needs drops out."
                if section == "paper_clock" and leave_one_out
                else ""
            ),
            "",
        ]
        for c in sclaims:
            lines += [f"### {c['id']} ({label}): {c['claim']}", "", f"Verdict: **{c['verdict']}**. Rule: {c['rule']}"]
            lines.append("")
            if c["rows"]:
                lines += ["| " + " | ".join(c["header"]) + " |", "|" + "---|" * len(c["header"])]
                lines += ["| " + " | ".join(row) + " |" for row in c["rows"]]
                lines.append("")
    return lines


# CleanRL's documentation (vwxyzjn/cleanrl, docs/rl-algorithms/dqn.md, "average episodic returns for dqn_jax.py
# (3 random seeds)"): mean +- std of dqn_jax.py, 500k steps, T = 500, MLP 120-84.
CLEANRL_DQN_JAX = {"CartPole-v1": (498.38, 2.29), "Acrobot-v1": (-88.89, 1.56)}
CLEANRL_VARIANT = "_t500k"  # benchmark.sh's cpu-clock runs of CleanRL's dqn_jax.py protocol
CLEANRL_LAST_EPISODES = 100  # openrlbenchmark rlops.py's default metric_last_n_average_window
TRAINING_RETURN = "charts/episodic_return"


def cleanrl_comparison(runs: Sequence[Run], num_points: int = 40, reps: int = 2000) -> list[dict]:
    """Dense DQN of the runs under CleanRL's dqn_jax.py protocol (exp names dqn_classic_<size>_t500k) per env and size,
    beside CleanRL's published mean +- std: our per-seed final returns (final_return) as IQM [95% CI] and as mean +-
    std (numpy's std, ddof = 0, over seeds), the statistic CleanRL's number is given in; and the mean +- std over seeds
    of each seed's last 100 training episodes, the averaging of openrlbenchmark's rlops.py."""
    groups: dict[tuple[str, str], list[Run]] = defaultdict(list)
    for run in runs:
        if (
            run.problem is None
            and run.family == "dqn_classic"
            and _role(run) == "dense"
            and _variant(run) == CLEANRL_VARIANT
            and run.env_id in CLEANRL_DQN_JAX
        ):
            groups[(run.env_id, run.size)].append(run)
    rows = []
    envs = list(CLEANRL_DQN_JAX)
    for (env, size), group in sorted(groups.items(), key=lambda kv: (envs.index(kv[0][0]), _size_order(kv[0][1]))):
        finals = np.array([final_return(r, num_points) for r in group])
        finals = finals[~np.isnan(finals)]
        last = np.array(
            [
                r.metrics[TRAINING_RETURN][1][-CLEANRL_LAST_EPISODES:].mean()
                for r in group
                if TRAINING_RETURN in r.metrics
            ],
            dtype=float,
        )
        budget = max((_budget(r.config) or r.last_step) for r in group)
        rows.append(
            {
                "env_id": env,
                "size": size,
                "method": group[0].method,
                "seeds": len(finals),
                "window_steps": budget / num_points,
                "final_return": stratified_bootstrap_ci([finals], reps=reps),
                "mean": float(finals.mean()) if len(finals) else math.nan,
                "std": float(finals.std()) if len(finals) else math.nan,
                "last_episodes_mean": float(last.mean()) if len(last) else math.nan,
                "last_episodes_std": float(last.std()) if len(last) else math.nan,
                "cleanrl": CLEANRL_DQN_JAX[env],
            }
        )
    return rows


def _cleanrl_markdown(rows: Sequence[dict]) -> list[str]:
    window = f"{rows[0]['window_steps']:,.0f}".replace(",", " ")
    lines = [
        "## Dense DQN against CleanRL's dqn_jax.py",
        "",
        "Our dense DQN under CleanRL's `dqn_jax.py` protocol (exp names `dqn_classic_<size>_t500k`: 500k environment "
        "steps, T = 500, one gradient step per 10 env steps, batch 128, buffer 10k, learning starts 10k, lr 2.5e-4, "
        "epsilon 1 -> 0.05 at step 250k) beside CleanRL's published numbers for `dqn_jax.py` (vwxyzjn/cleanrl, "
        'docs/rl-algorithms/dqn.md, "average episodic returns ... (3 random seeds)"). CleanRL\'s MLP has hidden '
        "layers of 120 and 84 units, ours 64-64 / 256-256 / 1024-1024 (small / medium / large): no size is the same "
        "network. How each side is averaged. Ours: per seed, the final return as above, the mean training episodic "
        f"return logged in the last {window} environment steps (1/num-points of the budget); over seeds, the IQM "
        "with its 95% stratified bootstrap CI, and the mean +- std (numpy's std, ddof = 0) of the same per-seed "
        "numbers. CleanRL's: its page does not say how its number is computed. CleanRL makes its other tables with "
        "openrlbenchmark's `rlops.py` (openrlbenchmark/openrlbenchmark, openrlbenchmark/rlops.py; CleanRL's "
        "benchmark/ppo_plot.sh and td3_plot.sh call it), which takes per run the mean of the last "
        "`metric_last_n_average_window` (default 100) logged `charts/episodic_return` values (of a 1 500-point "
        "sample of the run's W&B history unless run with `--scan-history`), then the mean and numpy's std (ddof = 0) "
        "of these over the runs. CleanRL's `benchmark/` folder holds no `rlops` command for `dqn_jax.py`, so that "
        "its table was made this way, with the default window, is our inference, not established. The column "
        f"'ours, last {CLEANRL_LAST_EPISODES} episodes' averages our runs that way (all logged episodes, no sample).",
        "",
        "| env | size | seeds | ours: final return (IQM [95% CI]) | ours: mean +- std over seeds "
        f"| ours, last {CLEANRL_LAST_EPISODES} episodes: mean +- std | CleanRL dqn_jax.py (3 seeds): mean +- std |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        mean_std = "n/a" if math.isnan(row["mean"]) else f"{row['mean']:.2f} +- {row['std']:.2f}"
        last = row["last_episodes_mean"], row["last_episodes_std"]
        last_std = "n/a" if math.isnan(last[0]) else f"{last[0]:.2f} +- {last[1]:.2f}"
        ref_mean, ref_std = row["cleanrl"]
        lines.append(
            f"| {row['env_id']} | {row['size']} | {row['seeds']} | {_fmt(*row['final_return'], 1)} | {mean_std} "
            f"| {last_std} | {ref_mean:.2f} +- {ref_std:.2f} |"
        )
    return [*lines, ""]


LATE_WINDOWS = 4  # the windows from 450k steps on in a 500k-step run of 40 points


def late_windows(runs: Sequence[Run], num_points: int = 40) -> list[dict]:
    """What a final return hides: per run of CleanRL's protocol (`*_t500k`) by EauDe (U_max 3) and dense DQN, the
    last LATE_WINDOWS points of its return curve (each the mean training return logged in 1/num_points of the budget;
    the last one is the final return), so that a dip from which a run recovered before its end is seen."""
    rows = []
    for run in runs:
        role = _role(run)
        if run.problem is not None or run.family != "dqn_classic" or _variant(run) != CLEANRL_VARIANT:
            continue
        if role == "dense" or (role == "eaude" and run.u_max in (None, 3.0)):
            budget = _budget(run.config) or run.last_step
            grid = np.linspace(budget / num_points, budget, num_points)
            returns = run_scores(run, grid, normalize=False)[-LATE_WINDOWS:]
            rows.append(
                {
                    "env_id": run.env_id, "role": role, "method": run.method, "size": run.size, "seed": run.seed,
                    "from_step": float(grid[-LATE_WINDOWS - 1]), "window_steps": budget / num_points,
                    "returns": [float(value) for value in returns],
                }
            )  # fmt: skip
    order = {"eaude": 0, "dense": 1}
    return sorted(rows, key=lambda r: (r["env_id"], order[r["role"]], _size_order(r["size"]), r["seed"]))


def _late_windows_markdown(rows: Sequence[dict]) -> list[str]:
    width, window = rows[0]["window_steps"], f"{rows[0]['window_steps']:,.0f}".replace(",", " ")
    starts = [rows[0]["from_step"] + i * width for i in range(LATE_WINDOWS)]
    heads = [f"{start / 1000:g}k-{(start + width) / 1000:g}k" for start in starts]
    lines = [
        "## Dips the final return hides",
        "",
        f"The last {LATE_WINDOWS} points of the return curve of every EauDe (U_max 3) and dense DQN run under "
        f"CleanRL's protocol: the mean training return logged in each window of {window} environment steps (the "
        "last is the final return of the tables above). A run that dipped and recovered before its end shows a low "
        "value here only.",
        "",
        "| env | method | size | seed | " + " | ".join(heads) + " | lowest |",
        "|---|---|---|---|" + "---|" * (LATE_WINDOWS + 1),
    ]
    for row in rows:
        cells = " | ".join(f"{value:.1f}" for value in row["returns"])
        lowest = min(row["returns"])
        lines.append(f"| {row['env_id']} | {row['method']} | {row['size']} | {row['seed']} | {cells} | {lowest:.1f} |")
    return [*lines, ""]


def write_summary(
    result: dict,
    figures: Sequence[Path],
    out: Path,
    runs_dir: Path,
    reps: int,
    claims: Sequence[dict] = (),
    origin: Sequence[str] = (),
    notes: str = "",
    cleanrl: Sequence[dict] = (),
    leave_one_out: dict[str, dict[int, str]] | None = None,
    late: Sequence[dict] = (),
) -> Path:
    """summary.md: the claims' verdicts, run counts, final IQM scores and sparsities with CIs, per-env tables,
    figure list and where the runs came from."""
    lines = [
        "# EauDeQN-JAX results",
        "",
        f"Runs read from `{runs_dir}`. Scores: human-normalised for Atari (`(score - random) / (human - random)`, "
        "Atari-57 reference scores), raw returns otherwise. Aggregates: IQM over all runs (env ids x seeds) with 95% "
        f"stratified bootstrap confidence intervals ({reps} resamples of seeds within each env, percentile method). "
        "Final score (final return): the last point of the return curve, i.e. the mean return logged in the last "
        "1/num-points of the budget (returns binned on a common step grid); final sparsity: the last logged "
        "`sparsity/target`.",
        "",
    ]
    if origin:
        lines += ["Where the runs came from (their config.json):", ""] + [f"* {line}" for line in origin] + [""]
    if claims:
        lines += _claims_markdown(claims, leave_one_out)
    if cleanrl:
        lines += _cleanrl_markdown(cleanrl)
    if late:
        lines += _late_windows_markdown(late)
    if notes:  # the reader's guide to these numbers, written by hand (--notes)
        lines += [notes.strip(), ""]
    if result["excluded"]:
        lines += [
            "## Excluded runs",
            "",
            f"{len(result['excluded'])} run(s) left out of every aggregate, curve and figure below (diverged: a "
            "non-finite loss; unfinished: stopped before its budget, the rule of benchmark.sh's `--finish-slack`):",
            "",
        ]
        lines += [f"* `{e['run']}`: {e['reason']}" for e in result["excluded"]] + [""]
    for setting, s in result["settings"].items():
        digits = 3 if s["normalized"] else 1
        lines += [f"## {s['title']}", "", f"Budget: {s['grid'][-1]:.0f} {s['x_label']}.", ""]
        lines += ["| method | size | envs | runs | final score (IQM [95% CI]) | final sparsity (IQM [95% CI]) |"]
        lines += ["|---|---|---|---|---|---|"]
        for c, f in zip(s["curves"], s["finals"], strict=True):
            sp = _fmt(*f["final_sparsity"], 3) if f["final_sparsity"] else "n/a"
            lines.append(
                f"| {c['method']} | {c['size']} | {c['n_envs']} | {c['n_runs']} | {_fmt(*f['final_score'], digits)} | {sp} |"
            )
        lines.append("")
        eaude = sorted(
            {(r["method"], r["size"]) for r in s["runs"] if r["method"].startswith("eaude")},
            key=lambda ms: (_method_order(ms[0]), _size_order(ms[1])),
        )
        envs = sorted({r["env_id"] for r in s["runs"]})
        if eaude:
            lines += ["Final sparsity per env (mean over seeds):", ""]
            lines += ["| env | " + " | ".join(f"{m} ({z})" for m, z in eaude) + " |"]
            lines += ["|---|" + "---|" * len(eaude)]
            for env in envs:
                cells = []
                for m, z in eaude:
                    v = [r["final_sparsity"] for r in s["runs"] if (r["env_id"], r["method"], r["size"]) == (env, m, z)]
                    cells.append(f"{np.nanmean(v):.3f}" if v and not all(math.isnan(x) for x in v) else "")
                lines.append(f"| {env} | " + " | ".join(cells) + " |")
            lines.append("")
        for stem in (f"{setting}_{kind}" for kind in FIGURE_KINDS):
            # One entry per figure: GitHub shows a PNG (or SVG) in the page, a PDF only behind a link.
            drawn = {p.suffix: p for p in figures if p.stem == stem}
            if shown := drawn.get(".png") or drawn.get(".svg"):
                lines.append(f"![{stem}]({shown.name})")
            elif ".pdf" in drawn:
                lines.append(f"[{stem} (PDF)]({drawn['.pdf'].name})")
        lines.append("")
    path = out / "summary.md"
    path.write_text("\n".join(lines))
    return path


def _nan_to_none(x):
    """Strict JSON: NaN (no data) becomes null."""
    if isinstance(x, float) and math.isnan(x):
        return None
    if isinstance(x, dict):
        return {k: _nan_to_none(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_nan_to_none(v) for v in x]
    return x


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs-dir", type=Path, default=Path("runs"), help="folder holding the run folders")
    parser.add_argument("--output-dir", type=Path, default=Path("figures"), help="where figures and summary go")
    parser.add_argument(
        "--format",
        default="png",
        help=f"comma list of the figures' file formats, of {', '.join(FIGURE_FORMATS)} (png,pdf: vector copies for a paper)",
    )
    parser.add_argument("--num-points", type=int, default=40, help="points of the common step grid of the curves")
    parser.add_argument("--reps", type=int, default=2000, help="bootstrap resamples per confidence interval")
    parser.add_argument("--env-ids", default=None, help="comma list: only these env ids")
    parser.add_argument("--methods", default=None, help="comma list: only these methods (exp names without size)")
    parser.add_argument(
        "--finish-slack",
        type=int,
        default=None,
        help="a run counts as finished when its metrics reach budget - N steps (default: 1%% of budget, as benchmark.sh)",
    )
    parser.add_argument("--notes", type=Path, default=None, help="Markdown file placed in summary.md after the claims")
    args = parser.parse_args(argv)
    formats = [f.strip().lower().removeprefix(".") for f in args.format.split(",") if f.strip()]
    if not formats or any(f not in FIGURE_FORMATS for f in formats):
        print(f"error: --format: {args.format!r} is not a comma list of {', '.join(FIGURE_FORMATS)}", file=sys.stderr)
        return 2
    if not args.runs_dir.is_dir():
        print(f"error: --runs-dir {args.runs_dir} is not a folder", file=sys.stderr)
        return 2
    if args.notes is not None and not args.notes.is_file():
        print(f"error: --notes {args.notes} is not a file", file=sys.stderr)
        return 2
    if args.num_points < 1 or args.reps < 1:
        print("error: --num-points and --reps must be positive", file=sys.stderr)
        return 2
    if args.finish_slack is not None and args.finish_slack < 0:
        print("error: --finish-slack must be a step count >= 0", file=sys.stderr)
        return 2
    runs = load_runs(args.runs_dir, args.finish_slack)
    if args.env_ids:
        runs = [r for r in runs if r.env_id in args.env_ids.split(",")]
    if args.methods:
        runs = [r for r in runs if r.method in args.methods.split(",")]
    if not runs:
        print(f"error: --runs-dir {args.runs_dir} holds no run with a metrics.jsonl", file=sys.stderr)
        return 2
    args.output_dir.mkdir(parents=True, exist_ok=True)
    result = analyze(runs, num_points=args.num_points, reps=args.reps)
    for excluded in result["excluded"]:
        print(f"excluded {excluded['run']}: {excluded['reason']}", file=sys.stderr)
    figures = make_figures(result, runs, args.output_dir, list(dict.fromkeys(formats)))
    result["claims"] = paper_claims(runs, num_points=args.num_points, reps=args.reps)
    result["cleanrl"] = cleanrl_comparison(runs, num_points=args.num_points, reps=args.reps)
    result["leave_one_out"] = leave_one_seed_out(runs, num_points=args.num_points, reps=args.reps)
    result["late_windows"] = late_windows(runs, num_points=args.num_points)
    (args.output_dir / "summary.json").write_text(json.dumps(_nan_to_none(result), indent=1))
    counted_runs = [r for r in runs if r.problem is None]
    summary = write_summary(
        result,
        figures,
        args.output_dir,
        args.runs_dir,
        args.reps,
        result["claims"],
        provenance(counted_runs),
        args.notes.read_text() if args.notes else "",
        result["cleanrl"],
        result["leave_one_out"],
        result["late_windows"],
    )
    for claim in result["claims"]:
        if claim["section"] == "paper_clock" and claim["rows"]:
            without = result["leave_one_out"][claim["id"]]
            print(f"{claim['id']} {claim['verdict']}; one seed left out: {agreement(claim['verdict'], without)}")
    counted = len(runs) - len(result["excluded"])
    print(f"{counted} runs ({len(result['excluded'])} excluded) -> {len(figures)} figures and {summary}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
