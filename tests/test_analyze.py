"""tools/analyze.py: reference scores, IQM, stratified bootstrap, run loading and the figures/summary on synthetic runs
with known answers."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest

_spec = importlib.util.spec_from_file_location("analyze", Path(__file__).resolve().parents[1] / "tools" / "analyze.py")
analyze = importlib.util.module_from_spec(_spec)
sys.modules["analyze"] = analyze
_spec.loader.exec_module(analyze)


def test_reference_scores() -> None:
    assert len(analyze.ATARI_SCORES) == 57
    assert all(human > random for random, human in analyze.ATARI_SCORES.values())
    for env_id in ("Pong-v5", "ALE/Pong-v5", "PongNoFrameskip-v4", "pong"):
        assert analyze.atari_game(env_id) == "Pong"
    assert analyze.atari_game("Hopper-v5") is None
    assert analyze.human_normalized(-20.7, "Pong-v5") == pytest.approx(0.0)
    assert analyze.human_normalized(14.6, "Pong-v5") == pytest.approx(1.0)
    # SpaceInvaders: (898.35 - 148) / (1668.7 - 148) = 0.4934...
    assert analyze.human_normalized(898.35, "SpaceInvaders-v5") == pytest.approx(750.35 / 1520.7)
    np.testing.assert_allclose(analyze.human_normalized([10780.5, 35829.4], "CrazyClimber-v5"), [0.0, 1.0])
    with pytest.raises(KeyError):
        analyze.human_normalized(1.0, "Hopper-v5")


def test_iqm_hand_computed() -> None:
    assert analyze.iqm(np.arange(1, 9)) == pytest.approx(4.5)  # drop 2 per end: mean(3, 4, 5, 6)
    assert analyze.iqm(np.arange(1, 11)) == pytest.approx(5.5)  # n=10 drops 2 per end: mean(3..8)
    assert analyze.iqm([1, 2, 3, 1000]) == pytest.approx(2.5)  # robust to the outlier
    assert analyze.iqm(np.array([[5, 1, 3, 2], [100, 0, 0, 1]]), axis=1) == pytest.approx([2.5, 0.5])
    assert analyze.iqm([100, 0, 0]) == pytest.approx(100 / 3)  # n < 4: nothing dropped, as trim_mean


def test_stratified_bootstrap() -> None:
    # Stratification keeps one run of each task per sample: the mean of {task A = 0, task B = 1} is always 0.5,
    # whereas resampling the pooled runs would move it.
    tasks = [np.zeros(4), np.ones(4)]
    est, lo, hi = analyze.stratified_bootstrap_ci(tasks, statistic=lambda x, axis: x.mean(axis=axis), reps=500)
    assert (est, lo, hi) == (0.5, 0.5, 0.5)
    # Identical runs inside each task: no uncertainty.
    # Identical runs inside each task: no uncertainty; IQM of {2 x 3, 7 x 5} drops 2 per end: mean(2, 7, 7, 7).
    est, lo, hi = analyze.stratified_bootstrap_ci([np.full(3, 2.0), np.full(5, 7.0)], reps=200)
    assert est == lo == hi == pytest.approx(5.75)
    # A noisy task: the interval brackets the point estimate, narrows with more runs, and is reproducible.
    rng = np.random.default_rng(1)
    small = [rng.normal(0, 1, 5) for _ in range(3)]
    big = [rng.normal(0, 1, 200) for _ in range(3)]
    e1, l1, h1 = analyze.stratified_bootstrap_ci(small, reps=1000)
    e2, l2, h2 = analyze.stratified_bootstrap_ci(big, reps=1000)
    assert l1 < e1 < h1 and l2 < e2 < h2
    assert h2 - l2 < (h1 - l1) / 2
    assert analyze.stratified_bootstrap_ci(small, reps=1000) == (e1, l1, h1)
    assert all(math.isnan(v) for v in analyze.stratified_bootstrap_ci([np.array([])]))


def test_binned_curve() -> None:
    grid = np.array([10.0, 20.0, 30.0, 40.0])
    # Bins (-1,10], (10,20], (20,30], (30,40]; bin 3 is empty and carries bin 2's value forward.
    curve = analyze.binned_curve(np.array([5, 10, 15, 25]), np.array([1.0, 3.0, 6.0, 8.0]), grid, until=40)
    np.testing.assert_allclose(curve, [2.0, 6.0, 8.0, 8.0])
    # An unfinished run (last step 18) has no value for bins that start after it.
    curve = analyze.binned_curve(np.array([12, 18]), np.array([1.0, 2.0]), grid)
    np.testing.assert_allclose(curve, [np.nan, 1.5, np.nan, np.nan])


def test_parse_exp_name() -> None:
    assert analyze.parse_exp_name("eaudedqn_small_umax10") == {
        "algo": "eaudedqn",
        "size": "small",
        "u_max": 10.0,
        "final_sparsity": None,
        "method": "eaudedqn_umax10",
    }
    p = analyze.parse_exp_name("polyprune_sac_small_sf0.5")
    assert (p["algo"], p["size"], p["final_sparsity"], p["method"]) == (
        "polyprune_sac",
        "small",
        0.5,
        "polyprune_sac_sf0.5",
    )
    assert analyze.parse_exp_name("dqn_large")["method"] == "dqn"
    assert analyze.parse_exp_name("eaudedqn_classic")["algo"] == "eaudedqn_classic"
    assert analyze.parse_exp_name("my_experiment")["method"] == "my_experiment"
    assert analyze.family_of("polyprune_cql") == "cql" and analyze.family_of("eaudedqn_classic") == "dqn_classic"


# ----------------------------------------------------------------------------------------------------------------------
# Synthetic runs
# ----------------------------------------------------------------------------------------------------------------------
TOTAL = 4000
GAMES = ("Pong-v5", "Breakout-v5", "SpaceInvaders-v5")


def make_run(
    root: Path,
    env: str,
    exp: str,
    seed: int,
    returns: float,
    sparsity: float | None,
    config: dict | None = None,
    return_metric: str = "charts/episodic_return",
    last: int = TOTAL,
    stamp: int = 1700000000,
    population: bool = False,
) -> Path:
    run = root / f"{env}__{exp}__{seed}__{stamp}"
    run.mkdir(parents=True)
    if config is not None:
        (run / "config.json").write_text(json.dumps({"exp_name": exp, "env_id": env, "seed": seed, **config}))
    rows = []
    for step in range(100, last + 1, 100):
        rows.append({"global_step": step, "name": return_metric, "value": returns, "time": 0.0})
        if return_metric != "charts/episodic_return":  # training returns that must be ignored for this setting
            rows.append({"global_step": step, "name": "charts/episodic_return", "value": -1e6, "time": 0.0})
        if sparsity is not None:
            rows.append({"global_step": step, "name": "sparsity/target", "value": sparsity * step / TOTAL, "time": 0.0})
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    if population:
        events = []
        for step in range(500, last + 1, 500):
            target = sparsity * step / TOTAL
            before = [target, target + 0.01, target + 0.02, target + 0.03, target + 0.04]
            events.append(
                {
                    "global_step": step,
                    "losses": [1.0] * 5,
                    "sparsities_before": before,
                    "target_index": 0,
                    "parents": [0, 0, 1, 2, 0],
                    "sparsities_after": [min(b + 0.05, 1.0) for b in before],
                }
            )
        (run / "population.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))
    return run


@pytest.fixture(scope="module")
def runs_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("runs")
    for g, env in enumerate(GAMES):
        random, human = analyze.ATARI_SCORES[analyze.atari_game(env)]
        for seed in (1, 2, 3):
            # EauDeDQN scores exactly the human reference (normalised score 1) ...
            make_run(
                root,
                env,
                "eaudedqn_small",
                seed,
                human,
                0.6 + 0.1 * g,
                {"network_size": "small", "u_max": 3.0},
                population=True,
            )
            # ... with the large network too (no network_size in config.json: parsed from the exp name) ...
            make_run(root, env, "eaudedqn_large", seed, human, 0.9, {}, population=True)
            # ... and at U_max = 10, from config.json;
            make_run(
                root,
                env,
                "eaudedqn_small_umax10",
                seed,
                human,
                0.95,
                {"network_size": "small", "u_max": 10.0},
                population=True,
            )
            # dense DQN scores 0.25 / 0.5 / 0.75 with seeds 1 / 2 / 3 in every game.
            make_run(
                root,
                env,
                "dqn_small",
                seed,
                random + seed / 4 * (human - random),
                0.0,
                {"network_size": "small", "final_sparsity": 0.0},
            )
    # A restarted run: an older, shorter folder of the same (env, exp, seed) with wild returns is ignored.
    make_run(root, "Pong-v5", "dqn_small", 1, 1e9, 0.0, {"network_size": "small"}, last=1000, stamp=1600000000)
    # MuJoCo: raw evaluation returns 1000 (Hopper) and 3000 (Ant).
    for env, ret in (("Hopper-v5", 1000.0), ("Ant-v5", 3000.0)):
        for seed in (1, 2):
            make_run(root, env, "eaudesac_small", seed, ret, 0.5, {"network_size": "small"}, "eval/episodic_return")
    (root / "_logs").mkdir()  # benchmark.sh's log folder is not a run
    return root


def _by(setting: dict, method: str, size: str) -> tuple[dict, dict]:
    curve = next(c for c in setting["curves"] if (c["method"], c["size"]) == (method, size))
    final = next(f for f in setting["finals"] if (f["method"], f["size"]) == (method, size))
    return curve, final


def test_load_runs(runs_dir: Path) -> None:
    runs = analyze.load_runs(runs_dir)
    assert len(runs) == 4 * 3 * 3 + 4
    pong_dqn = [r for r in runs if (r.env_id, r.method, r.seed) == ("Pong-v5", "dqn", 1)]
    assert len(pong_dqn) == 1 and pong_dqn[0].last_step == TOTAL
    large = next(r for r in runs if r.exp_name == "eaudedqn_large")
    assert (large.size, large.method, large.algo) == ("large", "eaudedqn", "eaudedqn")
    assert {r.u_max for r in runs if r.method == "eaudedqn_umax10"} == {10.0}


def test_analysis_known_answers(runs_dir: Path) -> None:
    result = analyze.analyze(analyze.load_runs(runs_dir), num_points=10, reps=500)
    assert set(result["settings"]) == {"dqn", "sac"}
    dqn = result["settings"]["dqn"]
    assert dqn["normalized"] and dqn["grid"][-1] == TOTAL and len(dqn["grid"]) == 10
    curve, final = _by(dqn, "eaudedqn", "small")
    assert (curve["n_runs"], curve["n_envs"]) == (9, 3)
    np.testing.assert_allclose(curve["score"], np.ones((3, 10)))  # IQM and CI of a constant normalised score 1
    # dqn: pooled normalised scores {0.25, 0.5, 0.75} x 3 games -> IQM 0.5 with a non-degenerate CI.
    _, final = _by(dqn, "dqn", "small")
    est, lo, hi = final["final_score"]
    assert est == pytest.approx(0.5) and 0.25 <= lo < 0.5 < hi <= 0.75
    # Final sparsity: small = 0.6 / 0.7 / 0.8 per game (IQM 0.7), large = 0.9 everywhere.
    assert _by(dqn, "eaudedqn", "small")[1]["final_sparsity"][0] == pytest.approx(0.7)
    np.testing.assert_allclose(_by(dqn, "eaudedqn", "large")[1]["final_sparsity"], [0.9, 0.9, 0.9])
    np.testing.assert_allclose(_by(dqn, "eaudedqn_umax10", "small")[1]["final_sparsity"], [0.95, 0.95, 0.95])
    sched = np.asarray(_by(dqn, "eaudedqn", "large")[0]["sparsity"][0])
    np.testing.assert_allclose(sched, 0.9 * np.asarray(dqn["grid"]) / TOTAL, atol=0.05)  # linear ramp
    per_env = {(r["env_id"], r["method"], r["size"]) for r in dqn["runs"] if r["final_sparsity"] == pytest.approx(0.8)}
    assert per_env == {("SpaceInvaders-v5", "eaudedqn", "small")}
    # MuJoCo: raw evaluation returns (training returns ignored), IQM of {1000, 1000, 3000, 3000} = 2000; each
    # stratified resample keeps two runs per env, hence the same multiset and a degenerate interval.
    sac = result["settings"]["sac"]
    assert not sac["normalized"]
    assert _by(sac, "eaudesac", "small")[1]["final_score"] == pytest.approx([2000.0, 2000.0, 2000.0])


def test_cli_writes_figures_and_summary(runs_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "figures"
    assert (
        analyze.main(["--runs-dir", str(runs_dir), "--output-dir", str(out), "--num-points", "10", "--reps", "200"])
        == 0
    )
    names = {p.name for p in out.glob("*.png")}
    assert names == {
        f"dqn_{k}.png"
        for k in ("return_iqm", "sparsity_schedule", "final_sparsity", "return_vs_sparsity", "population")
    } | {f"sac_{k}.png" for k in ("return_iqm", "sparsity_schedule", "final_sparsity", "return_vs_sparsity")}
    assert all((out / n).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for n in names)
    summary = (out / "summary.md").read_text()
    assert "| dqn | small | 3 | 9 | 0.500 [" in summary
    assert "| eaudedqn | small | 3 | 9 | 1.000 [1.000, 1.000] | 0.700 [" in summary
    assert "| SpaceInvaders-v5 | 0.800 | 0.900 | 0.950 |" in summary  # final sparsity per env: small, large, umax10
    assert "| eaudesac | small | 2 | 4 | 2000.0 [2000.0, 2000.0] |" in summary
    assert "![dqn_population](dqn_population.png)" in summary
    data = json.loads((out / "summary.json").read_text())  # strict JSON
    assert set(data["settings"]) == {"dqn", "sac"}


def test_cli_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert analyze.main(["--runs-dir", str(tmp_path / "missing")]) == 2
    assert analyze.main(["--runs-dir", str(tmp_path)]) == 2
    assert capsys.readouterr().err.startswith("error:")


def test_setting_comes_from_the_script_in_config(tmp_path: Path) -> None:
    """A classic-control run named by hand (exp name = the file name) is not mistaken for online Atari."""
    make_run(tmp_path, "CartPole-v1", "eaudedqn_jax", 1, 200.0, 0.3, config={"script": "eaudedqn_jax.py"})
    make_run(tmp_path, "Pong-v5", "eaudedqn_atari_jax", 1, 10.0, 0.5, config={"script": "eaudedqn_atari_jax.py"})
    make_run(tmp_path, "Hopper-v5", "mine", 1, 10.0, 0.5, config={"script": "polyprune_sac_mujoco_jax.py"})
    runs = {run.env_id: run for run in map(analyze.load_run, sorted(tmp_path.iterdir()))}
    assert runs["CartPole-v1"].family == "dqn_classic" and runs["CartPole-v1"].is_eaude
    assert runs["Pong-v5"].family == "dqn" and runs["Pong-v5"].is_eaude
    assert runs["Hopper-v5"].family == "sac" and not runs["Hopper-v5"].is_eaude
