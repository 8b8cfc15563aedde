"""tools/analyze.py: reference scores, IQM, stratified bootstrap, run loading and the figures/summary on synthetic runs
with known answers."""

from __future__ import annotations

import gzip
import json
import math
import shutil
from collections.abc import Sequence
from pathlib import Path

import analyze
import numpy as np
import pytest


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
    for name, algo in [
        ("dqn_classic_small_t30k", "dqn_classic"),
        ("polyprune_dqn_classic_large", "polyprune_dqn_classic"),
    ]:
        p = analyze.parse_exp_name(name)
        assert p["algo"] == algo and analyze.family_of(p["algo"]) == "dqn_classic"
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
    last: int | None = None,
    stamp: int = 1700000000,
    population: bool = False,
    total: int = TOTAL,
    args: dict | None = None,
    population_steps: Sequence[int] | None = None,
) -> Path:
    """A run folder of `total` steps (config.json's budget; `args` adds script arguments) logging every 100 steps;
    `population` writes a population.jsonl event every 500 steps, or at `population_steps` when given."""
    run = root / f"{env}__{exp}__{seed}__{stamp}"
    run.mkdir(parents=True)
    last = total if last is None else last
    if config is not None:  # the scripts keep their arguments, the budget among them, under "args"
        args = {"total_timesteps": total, **(args or {})}
        (run / "config.json").write_text(
            json.dumps({"exp_name": exp, "env_id": env, "seed": seed, "args": args, **config})
        )
    rows = []
    for step in range(100, last + 1, 100):
        rows.append({"global_step": step, "name": return_metric, "value": returns, "time": 0.0})
        rows.append({"global_step": step, "name": "losses/td_loss", "value": 0.5, "time": 0.0})
        if return_metric != "charts/episodic_return":  # training returns that must be ignored for this setting
            rows.append({"global_step": step, "name": "charts/episodic_return", "value": -1e6, "time": 0.0})
        if sparsity is not None:
            rows.append({"global_step": step, "name": "sparsity/target", "value": sparsity * step / total, "time": 0.0})
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    if population or population_steps is not None:
        events = []
        for step in range(500, last + 1, 500) if population_steps is None else population_steps:
            target = sparsity * step / total
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
    # Every chosen folder reached its budget (the shorter restarted folder was unfinished, and is not chosen).
    assert all(r.problem is None for r in runs)


def test_analysis_known_answers(runs_dir: Path) -> None:
    result = analyze.analyze(analyze.load_runs(runs_dir), num_points=10, reps=500)
    assert set(result["settings"]) == {"dqn", "sac_Ant-v5", "sac_Hopper-v5"}  # raw returns: one setting per env
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
    # MuJoCo: raw evaluation returns (training returns ignored), 1000 on Hopper and 3000 on Ant, never pooled.
    for env, score in (("Hopper-v5", 1000.0), ("Ant-v5", 3000.0)):
        sac = result["settings"][f"sac_{env}"]
        assert sac["title"] == f"MuJoCo (SAC), {env}, 4k environment steps"  # the budget, from config.json
        assert not sac["normalized"] and sac["env_ids"] == [env]
        assert _by(sac, "eaudesac", "small")[1]["final_score"] == pytest.approx([score] * 3)


def test_cli_writes_figures_and_summary(runs_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "figures"
    assert (
        analyze.main(["--runs-dir", str(runs_dir), "--output-dir", str(out), "--num-points", "10", "--reps", "200"])
        == 0
    )
    names = {p.name for p in out.glob("*.png")}
    assert names == {
        f"dqn_{k}.png"
        for k in ("overview", "return_iqm", "sparsity_schedule", "final_sparsity", "return_vs_sparsity", "population")
    } | {
        f"sac_{env}_{k}.png"
        for env in ("Ant-v5", "Hopper-v5")
        for k in ("overview", "return_iqm", "sparsity_schedule", "final_sparsity", "return_vs_sparsity")
    }
    assert all((out / n).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for n in names)
    summary = (out / "summary.md").read_text()
    assert "| dqn | small | 3 | 9 | 0.500 [" in summary
    assert "| eaudedqn | small | 3 | 9 | 1.000 [1.000, 1.000] | 0.700 [" in summary
    assert "| SpaceInvaders-v5 | 0.800 | 0.900 | 0.950 |" in summary  # final sparsity per env: small, large, umax10
    assert "| eaudesac | small | 1 | 2 | 1000.0 [1000.0, 1000.0] |" in summary
    assert "| eaudesac | small | 1 | 2 | 3000.0 [3000.0, 3000.0] |" in summary
    assert "![dqn_population](dqn_population.png)" in summary
    assert "Excluded runs" not in summary
    data = json.loads((out / "summary.json").read_text())  # strict JSON
    assert set(data["settings"]) == {"dqn", "sac_Ant-v5", "sac_Hopper-v5"}


def test_cli_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert analyze.main(["--runs-dir", str(tmp_path / "missing")]) == 2
    assert analyze.main(["--runs-dir", str(tmp_path)]) == 2
    assert analyze.main(["--runs-dir", str(tmp_path), "--finish-slack", "-1"]) == 2
    assert capsys.readouterr().err.splitlines()[-1] == "error: --finish-slack must be a step count >= 0"


def test_setting_comes_from_the_script_in_config(tmp_path: Path) -> None:
    """A classic-control run named by hand (exp name = the file name) is not mistaken for online Atari."""
    make_run(tmp_path, "CartPole-v1", "eaudedqn_jax", 1, 200.0, 0.3, config={"script": "eaudedqn_jax.py"})
    make_run(tmp_path, "Pong-v5", "eaudedqn_atari_jax", 1, 10.0, 0.5, config={"script": "eaudedqn_atari_jax.py"})
    make_run(tmp_path, "Hopper-v5", "mine", 1, 10.0, 0.5, config={"script": "polyprune_sac_mujoco_jax.py"})
    runs = {run.env_id: run for run in map(analyze.load_run, sorted(tmp_path.iterdir()))}
    assert runs["CartPole-v1"].family == "dqn_classic" and runs["CartPole-v1"].is_eaude
    assert runs["Pong-v5"].family == "dqn" and runs["Pong-v5"].is_eaude
    assert runs["Hopper-v5"].family == "sac" and not runs["Hopper-v5"].is_eaude


# ----------------------------------------------------------------------------------------------------------------------
# Diverged and unfinished runs
# ----------------------------------------------------------------------------------------------------------------------
def _append_lines(path: Path, *lines: str) -> None:
    with path.open("a") as f:
        f.write("".join(line + "\n" for line in lines))


def test_finished_follows_the_benchmark_rule(tmp_path: Path) -> None:
    """Finished = last logged step >= budget - slack, slack 1% of the budget by default (benchmark.sh); the budget is
    total_timesteps, or num_epochs * steps_per_epoch for offline CQL. Every run here logs up to step 4000."""

    def problem(seed: int, args: dict | None, finish_slack: int | None = None, model: bool = False) -> str | None:
        config = None if args is None else {"args": args}
        run = make_run(tmp_path, "Pong-v5", "dqn_small", seed, 0.0, None, config)
        if model:
            (run / "dqn_small.cleanrl_model").write_bytes(b"")
        return analyze.load_run(run, finish_slack).problem

    assert problem(1, {"total_timesteps": 4040}) is None  # finished from 4040 - 40 = 4000
    assert (
        problem(2, {"total_timesteps": 4141})
        == "unfinished: last logged step 4000 of 4141 (counted finished from step 4100)"
    )
    assert problem(3, {"num_epochs": 4, "steps_per_epoch": 1010}) is None  # 4040 again
    assert problem(4, {"num_epochs": 2, "steps_per_epoch": 2100}) == (
        "unfinished: last logged step 4000 of 4200 (counted finished from step 4158)"
    )
    assert problem(5, {"num_epochs": 2, "steps_per_epoch": 2100}, finish_slack=200) is None
    assert problem(6, {"total_timesteps": 4040}, finish_slack=0) is not None
    assert problem(7, {"total_timesteps": 4141}, model=True) is None  # saved its final model: finished
    assert problem(8, None) is None  # no config.json: no budget to judge by


def test_diverged_and_unfinished_runs_are_excluded(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A sweep with a diverged run (null loss, as the scripts write now), an older run with a bare NaN loss, a run
    whose population lost every network, an unfinished run, a diverged restart and torn last lines gives the same
    numbers, figures and tables as the sweep without them, and names each left-out folder with its reason."""
    clean = tmp_path / "clean"
    for env in ("Pong-v5", "Breakout-v5"):
        random, human = analyze.ATARI_SCORES[analyze.atari_game(env)]
        for seed in (1, 2, 3):
            score = random + seed / 4 * (human - random)
            make_run(clean, env, "eaudedqn_small", seed, score, 0.6, {"network_size": "small"}, population=True)
            make_run(clean, env, "dqn_small", seed, score, 0.0, {"network_size": "small"})
    # One NaN network only loses the target choice: the run counts.
    one_nan = clean / "Pong-v5__eaudedqn_small__1__1700000000" / "population.jsonl"
    events = [json.loads(line) for line in one_nan.read_text().splitlines()]
    events[1]["losses"] = [None, 1.0, 1.0, 1.0, 1.0]
    one_nan.write_text("".join(json.dumps(e) + "\n" for e in events))

    dirty = tmp_path / "dirty"
    shutil.copytree(clean, dirty)
    small = {"network_size": "small"}
    # Diverged at step 2000: the script logged the loss as null and stopped (exit code 3); a kill tore a line.
    null_run = make_run(dirty, "Pong-v5", "eaudedqn_small", 4, 0.0, 0.3, small, last=2000, population=True)
    _append_lines(
        null_run / "metrics.jsonl",
        '{"global_step": 2000, "name": "losses/td_loss", "value": null, "time": 0.0}',
        '{"global_step": 20',
    )
    # An older script kept going after its loss became NaN, and wrote it bare.
    nan_run = make_run(dirty, "Breakout-v5", "dqn_small", 5, 0.0, 0.0, small)
    _append_lines(nan_run / "metrics.jsonl", '{"global_step": 1500, "name": "losses/td_loss", "value": NaN}')
    # Every network's cumulated loss is non-finite at one population event.
    population_run = make_run(dirty, "Pong-v5", "eaudedqn_small", 0, 0.0, 0.3, small, population=True)
    events = [json.loads(line) for line in (population_run / "population.jsonl").read_text().splitlines()]
    events[4]["losses"] = [None, math.nan, math.inf, None, None]  # step 2500; written as null, NaN, Infinity
    (population_run / "population.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))
    # Stopped at step 3000 of 4000 (finished from 3960).
    make_run(dirty, "Breakout-v5", "dqn_small", 4, 0.0, 0.0, small, last=3000)
    # A newer folder of a finished run that diverged: the finished folder is kept, the other one is not a run of its own.
    restart = make_run(dirty, "Pong-v5", "dqn_small", 1, 0.0, 0.0, small, stamp=1800000000)
    _append_lines(restart / "metrics.jsonl", '{"global_step": 4000, "name": "losses/td_loss", "value": null}')
    # Torn last lines in runs that count.
    _append_lines(dirty / "Pong-v5__dqn_small__2__1700000000" / "metrics.jsonl", '{"global_step": 4100, "name": "cha')
    _append_lines(dirty / "Pong-v5__eaudedqn_small__2__1700000000" / "population.jsonl", '{"global_step": 45')

    def run_analyze(runs: Path) -> tuple[Path, str, str]:
        out = tmp_path / f"{runs.name}_figures"
        assert (
            analyze.main(["--runs-dir", str(runs), "--output-dir", str(out), "--num-points", "8", "--reps", "100"]) == 0
        )
        captured = capsys.readouterr()
        return out, captured.out, captured.err

    clean_out, clean_stdout, clean_stderr = run_analyze(clean)
    dirty_out, dirty_stdout, dirty_stderr = run_analyze(dirty)
    expected = {
        "Pong-v5__eaudedqn_small__4__1700000000": "diverged: losses/td_loss is null at step 2000",
        "Breakout-v5__dqn_small__5__1700000000": "diverged: losses/td_loss is NaN at step 1500",
        "Pong-v5__eaudedqn_small__0__1700000000": (
            "diverged: every network's loss is non-finite at the population event of step 2500"
        ),
        "Breakout-v5__dqn_small__4__1700000000": (
            "unfinished: last logged step 3000 of 4000 (counted finished from step 3960)"
        ),
    }
    # One line per excluded run on stderr, the same list in the summary; the superseded restart is in neither.
    assert clean_stderr == ""
    assert sorted(dirty_stderr.splitlines()) == sorted(f"excluded {run}: {why}" for run, why in expected.items())
    assert "12 runs (0 excluded)" in clean_stdout and "12 runs (4 excluded)" in dirty_stdout
    summary = (dirty_out / "summary.md").read_text()
    section = summary[summary.index("## Excluded runs") : summary.index("## Atari")].splitlines()
    assert sorted(line for line in section if line.startswith("* ")) == sorted(
        f"* `{run}`: {why}" for run, why in expected.items()
    )
    assert "1800000000" not in summary
    clean_summary = (clean_out / "summary.md").read_text()
    assert "Excluded runs" not in clean_summary
    # The aggregates, tables and every figure are those of the sweep without the left-out runs.
    clean_json, dirty_json = (json.loads((out / "summary.json").read_text()) for out in (clean_out, dirty_out))
    assert dirty_json["settings"] == clean_json["settings"]
    assert {e["run"]: e["reason"] for e in dirty_json["excluded"]} == expected and clean_json["excluded"] == []
    assert summary[summary.index("## Atari") :] == clean_summary[clean_summary.index("## Atari") :]
    figures = sorted(p.name for p in clean_out.glob("*.png"))
    assert "dqn_population.png" in figures and sorted(p.name for p in dirty_out.glob("*.png")) == figures
    for name in figures:
        assert (dirty_out / name).read_bytes() == (clean_out / name).read_bytes(), name


# ----------------------------------------------------------------------------------------------------------------------
# The paper's claims and the published (gzipped) runs
# ----------------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def claims_runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """CartPole runs built so that C1 is not supported, C2 and C3 supported and C4 inconclusive."""
    root = tmp_path_factory.mktemp("claims")
    env, classic = "CartPole-v1", {"script": "eaudedqn_jax.py"}
    poly = {"script": "polyprune_dqn_jax.py"}
    for seed in (1, 2, 3):
        # small: EauDe (sparsity 0.6) returns as much as dense DQN; PolyPrune s_F = 0.95 far less.
        make_run(root, env, "eaudedqn_classic_small", seed, 500 - seed, 0.6, {**classic, "network_size": "small"})
        make_run(
            root,
            env,
            "dqn_classic_small",
            seed,
            500 - seed,
            0.0,
            {**poly, "network_size": "small", "final_sparsity": 0.0},
        )
        make_run(root, env, "polyprune_dqn_classic_small", seed, 200 + seed, 0.95, {**poly, "network_size": "small"})
        # large: EauDe (sparsity 0.9) falls far below dense DQN.
        make_run(root, env, "eaudedqn_classic_large", seed, 100 + seed, 0.9, {**classic, "network_size": "large"})
        make_run(
            root,
            env,
            "dqn_classic_large",
            seed,
            500 - seed,
            0.0,
            {**poly, "network_size": "large", "final_sparsity": 0.0},
        )
        # U_max: small trades return for sparsity; large gains sparsity without losing return (unclear).
        for u_max, sparsity, ret in ((10, 0.7, 490), (30, 0.8, 480)):
            config = {**classic, "network_size": "small", "u_max": float(u_max)}
            make_run(root, env, f"eaudedqn_classic_small_umax{u_max}", seed, ret - seed, sparsity, config)
        config = {**classic, "network_size": "large", "u_max": 30.0}
        make_run(root, env, "eaudedqn_classic_large_umax30", seed, 150 + seed, 0.95, config)
    return root


def test_final_return_is_the_last_point_of_the_curve(tmp_path: Path) -> None:
    run_dir = make_run(tmp_path, "CartPole-v1", "eaudedqn_classic_small", 1, 0.0, 0.5, {"network_size": "small"})
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    for row in rows:  # returns 10, 20, ..., 400 every 100 steps: the last 1/40 of 4000 steps holds only 400
        if row["name"] == "charts/episodic_return":
            row["value"] = row["global_step"] / 10
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    run = analyze.load_run(run_dir)
    assert analyze.final_return(run) == 400.0
    assert analyze.final_return(run, num_points=10) == pytest.approx(np.mean([370, 380, 390, 400]))


def test_claims_verdicts_follow_their_rules(claims_runs: Path) -> None:
    all_claims = analyze.paper_claims(analyze.load_runs(claims_runs), reps=200)
    # No T in config.json and no population.jsonl: 0 population steps, every cell is budget-capped.
    assert [(c["section"], c["verdict"]) for c in all_claims[:4]] == [
        ("paper_clock", "not tested (no runs of this kind)")
    ] * 4
    claims = {c["id"]: c for c in all_claims if c["section"] == "budget_capped"}
    assert {cid: c["verdict"] for cid, c in claims.items()} == {
        "C1": "not supported",
        "C2": "supported",
        "C3": "supported",
        "C4": "inconclusive at this scale",
    }
    assert [(row[1], row[-1]) for row in claims["C1"]["rows"]] == [("small", "supports"), ("large", "contradicts")]
    assert [(row[1], row[-1]) for row in claims["C4"]["rows"]] == [("small", "supports"), ("large", "unclear")]
    assert claims["C3"]["rows"][0][1].startswith("small: 0.600") and "large: 0.900" in claims["C3"]["rows"][0][1]


def test_claims_without_their_runs_are_not_tested(claims_runs: Path) -> None:
    runs = [r for r in analyze.load_runs(claims_runs) if r.size == "small" and r.u_max in (None, 3.0)]
    verdicts = {c["id"]: c["verdict"] for c in analyze.paper_claims(runs, reps=50) if c["section"] == "budget_capped"}
    assert verdicts["C3"] == verdicts["C4"] == "not tested (no runs of this kind)"
    assert verdicts["C1"] == verdicts["C2"] == "supported"


def test_summary_states_verdicts_and_origin_and_gzipped_runs_read_the_same(claims_runs: Path, tmp_path: Path) -> None:
    gzipped = tmp_path / "gzipped"
    for run_dir in claims_runs.iterdir():
        (gzipped / run_dir.name).mkdir(parents=True)
        for path in run_dir.iterdir():
            if path.suffix == ".jsonl":
                (gzipped / run_dir.name / (path.name + ".gz")).write_bytes(gzip.compress(path.read_bytes()))
            else:
                shutil.copy(path, gzipped / run_dir.name / path.name)
    outs = []
    for runs in (claims_runs, gzipped):
        out = tmp_path / f"{runs.name}_out"
        assert analyze.main(["--runs-dir", str(runs), "--output-dir", str(out), "--reps", "100"]) == 0
        outs.append(out)
    plain = (outs[0] / "summary.md").read_text()
    assert plain.replace(str(claims_runs), "X") == (outs[1] / "summary.md").read_text().replace(str(gzipped), "X")
    assert (
        "| C2: PolyPrune with its hand-set s_F = 0.95 hurts the small network more than EauDe does | **supported** |"
        in plain
    )
    assert "| eaudedqn_classic | large | 1 | 3 | 102.0 [" in plain
    claims = json.loads((outs[0] / "summary.json").read_text())["claims"]
    assert [(c["id"], c["section"], c["verdict"]) for c in claims][::4] == [
        ("C1", "paper_clock", "not tested (no runs of this kind)"),
        ("C1", "budget_capped", "not supported"),
    ]


def test_raw_returns_of_several_envs_are_never_pooled(tmp_path: Path) -> None:
    for env, ret in (("CartPole-v1", 500.0), ("Acrobot-v1", -80.0)):
        for seed in (1, 2):
            config = {"network_size": "small", "script": "eaudedqn_jax.py"}
            make_run(tmp_path / "runs", env, "eaudedqn_classic_small", seed, ret, 0.4, config, population=True)
    assert (
        analyze.main(["--runs-dir", str(tmp_path / "runs"), "--output-dir", str(tmp_path / "out"), "--reps", "50"]) == 0
    )
    summary = (tmp_path / "out" / "summary.md").read_text()
    acrobot = summary.index("## Classic control (DQN), Acrobot-v1")
    cartpole = summary.index("## Classic control (DQN), CartPole-v1")
    row = "| eaudedqn_classic | small | 1 | 2 | {} | 0.400 [0.400, 0.400] |"
    assert summary.index(row.format("-80.0 [-80.0, -80.0]")) in range(acrobot, cartpole)
    assert summary.index(row.format("500.0 [500.0, 500.0]")) > cartpole
    assert "![dqn_classic_CartPole-v1_population](dqn_classic_CartPole-v1_population.png)" in summary
    assert (tmp_path / "out" / "dqn_classic_Acrobot-v1_population.png").exists()


def test_notes_follow_the_claims_and_a_missing_notes_file_is_an_error(
    claims_runs: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    notes = tmp_path / "notes.md"
    notes.write_text("## Reading the verdicts\n\nC1 fails on sparsity, not on return.\n")
    out = tmp_path / "out"
    assert (
        analyze.main(["--runs-dir", str(claims_runs), "--output-dir", str(out), "--reps", "20", "--notes", str(notes)])
        == 0
    )
    summary = (out / "summary.md").read_text()
    assert summary.index("### C4 (budget-capped runs):") < summary.index("## Reading the verdicts")
    assert summary.index("## Reading the verdicts") < summary.index("## Classic control")
    assert analyze.main(["--runs-dir", str(claims_runs), "--notes", str(tmp_path / "nope.md")]) == 2
    assert capsys.readouterr().err.endswith(f"error: --notes {tmp_path / 'nope.md'} is not a file\n")


# ----------------------------------------------------------------------------------------------------------------------
# Variants, the paper's clock and CleanRL's table (issue 21)
# ----------------------------------------------------------------------------------------------------------------------
EAUDE_CLASSIC = {"script": "eaudedqn_jax.py", "network_size": "small"}
POLY_CLASSIC = {"script": "polyprune_dqn_jax.py", "network_size": "small"}
DENSE_CLASSIC = {**POLY_CLASSIC, "final_sparsity": 0.0}


def test_training_lengths_never_share_a_setting(tmp_path: Path) -> None:
    """A 4k-step and an 8k-step run of CartPole land in two settings with their own grid, title and figures; the
    PolyPrune oracle (`_oracle`) is drawn beside the EauDe runs of its length; only the 4k runs logged a population, so
    the 8k setting has no population figure (it must not borrow the 4k runs')."""
    runs = tmp_path / "runs"
    period = {"target_network_frequency": 500}
    for seed in (1, 2):
        for env in ("CartPole-v1", "Acrobot-v1"):
            make_run(
                runs, env, "eaudedqn_classic_small_t4k", seed, 100.0, 0.4, EAUDE_CLASSIC, args=period, population=True
            )
        make_run(runs, "CartPole-v1", "eaudedqn_classic_small_t8k", seed, 300.0, 0.5, EAUDE_CLASSIC, total=8000)
        make_run(runs, "CartPole-v1", "dqn_classic_small_t8k", seed, 400.0, 0.0, DENSE_CLASSIC, total=8000)
        oracle = {**POLY_CLASSIC, "final_sparsity": 0.5}
        make_run(runs, "CartPole-v1", "polyprune_dqn_classic_small_oracle_t8k", seed, 350.0, 0.5, oracle, total=8000)
        make_run(
            runs, "HalfCheetah-v5", "eaudesac_small_p100_t4k", seed, 1000.0, 0.3, {"script": "eaudesac_mujoco_jax.py"}
        )
    result = analyze.analyze(analyze.load_runs(runs), num_points=8, reps=50)
    settings = result["settings"]
    assert set(settings) == {
        "dqn_classic_t4k_Acrobot-v1",
        "dqn_classic_t4k_CartPole-v1",
        "dqn_classic_t8k",
        "sac_p100_t4k",
    }
    t4k, t8k = settings["dqn_classic_t4k_CartPole-v1"], settings["dqn_classic_t8k"]
    assert (t4k["grid"][-1], t8k["grid"][-1]) == (4000, 8000)
    assert t4k["title"] == "Classic control (DQN), CartPole-v1, 4k environment steps, T = 500"
    assert t8k["title"] == "Classic control (DQN), 8k environment steps"
    assert settings["sac_p100_t4k"]["title"] == "MuJoCo (SAC), 4k environment steps"
    assert [(c["method"], c["n_runs"]) for c in t4k["curves"]] == [("eaudedqn_classic_t4k", 2)]
    assert [(c["method"], c["n_runs"]) for c in t8k["curves"]] == [
        ("eaudedqn_classic_t8k", 2),
        ("polyprune_dqn_classic_oracle_t8k", 2),
        ("dqn_classic_t8k", 2),
    ]
    out = tmp_path / "out"
    assert analyze.main(["--runs-dir", str(runs), "--output-dir", str(out), "--num-points", "8", "--reps", "20"]) == 0
    names = {p.name for p in out.glob("*.png")}
    assert {"dqn_classic_t4k_CartPole-v1_population.png", "dqn_classic_t8k_return_iqm.png"} <= names
    assert "dqn_classic_t8k_population.png" not in names
    # PolyPrune's oracle beside EauDe where it ran (8k), nowhere else.
    assert "dqn_classic_t8k_oracle.png" in names and not any(
        n.endswith("_oracle.png") and "t8k" not in n for n in names
    )
    summary = (out / "summary.md").read_text()
    assert "## Classic control (DQN), 8k environment steps\n" in summary
    assert "![dqn_classic_t8k_sparsity_schedule](dqn_classic_t8k_sparsity_schedule.png)" in summary
    assert "![dqn_classic_t8k_oracle](dqn_classic_t8k_oracle.png)" in summary


def test_population_steps_clock_and_cap() -> None:
    """n counts distinct population steps (EauDeSAC logs one event per critic); the clock is t_final / T or P from
    config.json, the logged count without them; the cap uses config.json's S_max."""
    sac = analyze.Run(
        path=Path("x"),
        env_id="HalfCheetah-v5",
        exp_name="eaudesac_small_p100_t100k",
        seed=1,
        algo="eaudesac",
        method="eaudesac_p100_t100k",
        size="small",
        u_max=3.0,
        final_sparsity_arg=None,
        config={"script": "eaudesac_mujoco_jax.py", "total_timesteps": 100_000, "pruning_period": 100, "s_max": 0.02},
        population=[
            {"global_step": step, "critic": critic} for step in range(5_100, 100_001, 100) for critic in (1, 2)
        ],
    )
    assert analyze.population_steps(sac) == 950 and analyze.clock_steps(sac) == 1000
    assert analyze.sparsity_cap(sac) == pytest.approx(1 - 0.98**950)
    sac.config = {"script": "eaudesac_mujoco_jax.py"}  # no budget, period or S_max recorded
    assert analyze.clock_steps(sac) == 950 and analyze.sparsity_cap(sac) == pytest.approx(1 - 0.99**950)


@pytest.fixture(scope="module")
def clock_runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """CartPole, small: a `_t1k` cell at the paper's clock (T = 1: t_final / T = 1 000, of which the last 980 steps
    logged a population step, S_max = 0.001), where EauDe (sparsity 0.6) returns as much as dense DQN; a `_t30k` cell
    with 60 target updates (T = 500, S_max = 0.01) where EauDe reaches 0.3."""
    root = tmp_path_factory.mktemp("clock")
    paper = {"target_network_frequency": 1, "s_max": 0.001}
    capped = {"target_network_frequency": 500, "s_max": 0.01}
    for seed in (1, 2, 3):
        steps = range(21, 1001)
        make_run(
            root,
            "CartPole-v1",
            "eaudedqn_classic_small_t1k",
            seed,
            200.0,
            0.6,
            EAUDE_CLASSIC,
            total=1000,
            args=paper,
            population_steps=steps,
        )
        make_run(root, "CartPole-v1", "dqn_classic_small_t1k", seed, 200.0, 0.0, DENSE_CLASSIC, total=1000, args=paper)
        make_run(
            root,
            "CartPole-v1",
            "eaudedqn_classic_small_t30k",
            seed,
            200.0,
            0.3,
            EAUDE_CLASSIC,
            total=30000,
            args=capped,
            population=True,
        )
        make_run(
            root, "CartPole-v1", "dqn_classic_small_t30k", seed, 200.0, 0.0, DENSE_CLASSIC, total=30000, args=capped
        )
    return root


def test_cells_at_the_paper_clock_and_budget_capped_ones_get_their_own_verdicts(
    clock_runs: Path, tmp_path: Path
) -> None:
    claims = analyze.paper_claims(analyze.load_runs(clock_runs), reps=50)
    assert [(c["section"], c["id"]) for c in claims] == [
        (section, cid) for section in ("paper_clock", "budget_capped") for cid in ("C1", "C2", "C3", "C4")
    ]
    paper, capped = claims[0], claims[4]
    assert paper["header"][-3:] == capped["header"][-3:] == ["n", "cap", "cell"]
    # n = the 980 logged population steps, below t_final / T = 1 000 (the warm-up logs none); cap 1 - 0.999^980.
    assert [row[0] for row in paper["rows"]] == ["CartPole-v1 (dqn_classic_t1k)"]
    assert paper["rows"][0][-3:] == ["980", f"{1 - 0.999**980:.4f}", "supports"] and paper["verdict"] == "supported"
    assert [row[0] for row in capped["rows"]] == ["CartPole-v1 (dqn_classic_t30k)"]
    assert capped["rows"][0][-3:] == ["60", "0.4528", "contradicts"] and capped["verdict"] == "not supported"
    out = tmp_path / "out"
    assert analyze.main(["--runs-dir", str(clock_runs), "--output-dir", str(out), "--reps", "20"]) == 0
    summary = (out / "summary.md").read_text()
    first = summary.index("## The paper's claims, at the paper's clock")
    second = summary.index("## The paper's claims, budget-capped runs")
    assert first < summary.index("| C1: EauDe reaches returns comparable") < second
    assert summary.index("| CartPole-v1 (dqn_classic_t1k) | small |") < second
    assert summary.index("| CartPole-v1 (dqn_classic_t30k) | small |") > second
    assert "| 60 | 0.4528 | contradicts |" in summary
    assert json.loads((out / "summary.json").read_text())["claims"][4]["rows"][0][-3:] == [
        "60",
        "0.4528",
        "contradicts",
    ]


def test_a_cell_waits_for_three_seeds(clock_runs: Path, tmp_path: Path) -> None:
    """A sweep publishes its runs as they finish: a cell with two finished seeds of a method decides nothing yet."""
    runs = tmp_path / "runs"
    shutil.copytree(clock_runs, runs)
    (dense_3,) = runs.glob("CartPole-v1__dqn_classic_small_t1k__3__*")
    shutil.rmtree(dense_3)
    paper = analyze.paper_claims(analyze.load_runs(runs), reps=50)[0]
    assert paper["section"] == "paper_clock" and paper["rows"] == []
    assert paper["verdict"] == "not tested (no runs of this kind)"


def test_dense_dqn_beside_cleanrl(tmp_path: Path) -> None:
    """Only dense DQN runs of CleanRL's protocol (`dqn_classic_<size>_t500k`) stand beside CleanRL's numbers, with the
    IQM [CI] and the mean +- std (ddof = 0) of the same per-seed final returns, and of each seed's last 100 training
    episodes (openrlbenchmark's averaging)."""
    runs = tmp_path / "runs"
    for seed, (cartpole, acrobot) in zip((1, 2, 3), ((490.0, -90.0), (495.0, -88.0), (500.0, -86.0)), strict=True):
        run = make_run(runs, "CartPole-v1", "dqn_classic_small_t500k", seed, cartpole, 0.0, DENSE_CLASSIC, total=20000)
        if seed == 1:  # 200 episodes: the first 100 at 0, the first of the last 100 at 290 (last 100: mean 488)
            rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
            episodes = [r for r in rows if r["name"] == "charts/episodic_return"]
            for i, r in enumerate(episodes[:101]):
                r["value"] = 290.0 if i == 100 else 0.0
            (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        make_run(
            runs,
            "Acrobot-v1",
            "dqn_classic_medium_t500k",
            seed,
            acrobot,
            0.0,
            {**DENSE_CLASSIC, "network_size": "medium"},
        )
        make_run(runs, "CartPole-v1", "dqn_classic_small_t30k", seed, 100.0, 0.0, DENSE_CLASSIC)  # another protocol
        make_run(runs, "CartPole-v1", "eaudedqn_classic_small_t500k", seed, 100.0, 0.5, EAUDE_CLASSIC)  # not dense
    rows = analyze.cleanrl_comparison(analyze.load_runs(runs), reps=50)
    assert [(r["env_id"], r["size"], r["seeds"]) for r in rows] == [
        ("CartPole-v1", "small", 3),
        ("Acrobot-v1", "medium", 3),
    ]
    assert rows[0]["mean"] == pytest.approx(495.0) and rows[0]["std"] == pytest.approx((50 / 3) ** 0.5)
    assert rows[0]["final_return"][0] == pytest.approx(495.0)  # IQM of 3 values drops none
    last = np.array([488.0, 495.0, 500.0])
    assert rows[0]["last_episodes_mean"] == pytest.approx(last.mean())
    assert rows[0]["last_episodes_std"] == pytest.approx(last.std())
    out = tmp_path / "out"
    assert analyze.main(["--runs-dir", str(runs), "--output-dir", str(out), "--reps", "20"]) == 0
    summary = (out / "summary.md").read_text()
    table = summary[summary.index("## Dense DQN against CleanRL's dqn_jax.py") :]
    assert (
        "| CartPole-v1 | small | 3 | 495.0 [" in table
        and "| 495.00 +- 4.08 | 494.33 +- 4.92 | 498.38 +- 2.29 |" in table
    )
    assert (
        "| Acrobot-v1 | medium | 3 | -88.0 [" in table
        and "| -88.00 +- 1.63 | -88.00 +- 1.63 | -88.89 +- 1.56 |" in table
    )
    assert "ddof = 0" in table and "openrlbenchmark/rlops.py" in table
    assert json.loads((out / "summary.json").read_text())["cleanrl"][1]["cleanrl"] == [-88.89, 1.56]


def test_minatar_runs_are_not_atari_games_and_their_settings_name_files(tmp_path: Path) -> None:
    """MinAtar/Breakout-v1 is not Atari's Breakout (no human-normalised score), a setting per MinAtar game names its
    figures without the id's `/` (the run folders have it as `-`), and the preset's `_g4` (G = 4) keeps its runs apart
    from classic control's `_t500k` runs (G = 10)."""
    runs = tmp_path / "runs"
    for game in ("Breakout", "SpaceInvaders"):
        for seed in (1, 2):
            run = make_run(runs, f"MinAtar-{game}-v1", "dqn_classic_small_g4_t500k", seed, 5.0, 0.0, DENSE_CLASSIC)
            config = json.loads((run / "config.json").read_text())
            (run / "config.json").write_text(json.dumps({**config, "env_id": f"MinAtar/{game}-v1"}))
    for seed in (1, 2):
        make_run(runs, "CartPole-v1", "dqn_classic_small_t500k", seed, 400.0, 0.0, DENSE_CLASSIC)
    assert analyze.atari_game("MinAtar/Breakout-v1") is None
    result = analyze.analyze(analyze.load_runs(runs), num_points=8, reps=50)
    assert set(result["settings"]) == {
        "dqn_classic_g4_t500k_MinAtar-Breakout-v1",
        "dqn_classic_g4_t500k_MinAtar-SpaceInvaders-v1",
        "dqn_classic_t500k",
    }
    assert not any(setting["normalized"] for setting in result["settings"].values())


def test_late_windows_show_the_dip_a_final_return_hides(tmp_path: Path) -> None:
    """A 4 000-step run of 40 points has windows of 100 steps: a return of 50 logged only in 3 700-3 800 shows in the
    second of the last four windows and not in the final return; PolyPrune, U_max 10 and other training lengths are not
    listed, and the summary prints the table."""
    runs = tmp_path / "runs"
    dipped = make_run(runs, "CartPole-v1", "eaudedqn_classic_small_t500k", 1, 500.0, 0.5, EAUDE_CLASSIC)
    rows = [json.loads(line) for line in (dipped / "metrics.jsonl").read_text().splitlines()]
    for row in rows:
        if row["name"] == "charts/episodic_return" and 3700 < row["global_step"] <= 3800:
            row["value"] = 50.0
    (dipped / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    make_run(runs, "CartPole-v1", "dqn_classic_small_t500k", 1, 400.0, 0.0, DENSE_CLASSIC)
    make_run(runs, "CartPole-v1", "polyprune_dqn_classic_small_t500k", 1, 300.0, 0.95, POLY_CLASSIC)
    make_run(runs, "CartPole-v1", "eaudedqn_classic_small_umax10_t500k", 1, 200.0, 0.6, EAUDE_CLASSIC)
    make_run(runs, "CartPole-v1", "eaudedqn_classic_small_t30k", 1, 100.0, 0.3, EAUDE_CLASSIC)
    loaded = analyze.load_runs(runs)
    late = analyze.late_windows(loaded, num_points=40)
    assert [(row["method"], row["returns"]) for row in late] == [
        ("eaudedqn_classic_t500k", [500.0, 50.0, 500.0, 500.0]),
        ("dqn_classic_t500k", [400.0] * 4),
    ]
    assert late[0]["from_step"] == 3600 and late[0]["window_steps"] == 100
    eaude = next(r for r in loaded if r.exp_name == "eaudedqn_classic_small_t500k")
    assert analyze.final_return(eaude, 40) == late[0]["returns"][-1]  # the last window is the final return
    out = tmp_path / "out"
    assert analyze.main(["--runs-dir", str(runs), "--output-dir", str(out), "--reps", "20"]) == 0
    summary = (out / "summary.md").read_text()
    assert "| CartPole-v1 | eaudedqn_classic_t500k | small | 1 | 500.0 | 50.0 | 500.0 | 500.0 | 50.0 |" in summary
    assert json.loads((out / "summary.json").read_text())["late_windows"][1]["returns"] == [400.0] * 4
