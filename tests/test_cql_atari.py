"""Offline Atari scripts (EauDeCQL, PolyPruneCQL): the CQL loss against hand-computed values, the loader block shared
verbatim by both scripts, argument and dataset errors, and end-to-end runs on a tiny DQN Replay Dataset written by
tools/write_dqn_replay_dataset.py (Alg. 1 / Eq. 2 / Eq. 3 in the outputs, saved model, checkpoint and resume)."""

import importlib
import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

eaude = importlib.import_module("eaudecql_atari_jax")
poly = importlib.import_module("polyprune_cql_atari_jax")

# 2 checkpoints x 400 entries written, 300 loaded from each; 2 epochs of 40 gradient steps on the small network
TINY = [
    "--env-id", "Breakout-v5", "--transitions-per-checkpoint", "300", "--num-epochs", "2", "--steps-per-epoch", "40",
    "--network-size", "small", "--learning-rate", "1e-3",
]  # fmt: skip


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("dataset") / "Breakout" / "1"
    subprocess.run(
        [sys.executable, str(ROOT / "tools" / "write_dqn_replay_dataset.py"), "--env-id", "Breakout-v5",
         "--output-dir", str(folder), "--num-checkpoints", "2", "--transitions-per-checkpoint", "400"],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    return folder


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Subprocess environment sharing a JAX compilation cache: the runs compile the same programs (test speed only)."""
    cache = tmp_path_factory.mktemp("jax_cache")
    return {
        **os.environ,
        "JAX_COMPILATION_CACHE_DIR": str(cache),
        "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
        "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "-1",
    }


def command(script: str, dataset: Path, out: Path, *argv: str) -> list[str]:
    return [sys.executable, str(ROOT / script), *TINY, "--dataset-dir", str(dataset), "--output-dir", str(out), *argv]


def run_script(script: str, tmp_path: Path, dataset: Path, env: dict[str, str], *argv: str) -> Path:
    out = tmp_path / "runs"
    result = subprocess.run(
        command(script, dataset, out, *argv), cwd=tmp_path, capture_output=True, text=True, timeout=600, env=env
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    (run_dir,) = out.iterdir()
    return run_dir


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def metric(run_dir: Path, name: str) -> list[tuple[int, float]]:
    return [(m["global_step"], m["value"]) for m in read_jsonl(run_dir / "metrics.jsonl") if m["name"] == name]


def saved_sparsity(path: Path) -> float:
    state = flax.serialization.msgpack_restore(path.read_bytes())
    kernels = [np.asarray(w) for w in jax.tree.leaves(state) if np.ndim(w) > 1]
    return sum((w == 0).sum() for w in kernels) / sum(w.size for w in kernels)


# ---------------------------------------------------------------------------------------------------------------------
# The CQL loss and the shared loader block
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("module", [eaude, poly], ids=["eaudecql", "polyprune_cql"])
def test_cql_loss_matches_hand_computed_value(module) -> None:
    q = jnp.array([[1.0, 2.0], [0.0, 0.0]])
    actions = jnp.array([1, 0])
    targets = jnp.array([1.5, 1.0])
    # TD: ((1.5 - 2)^2 + (1 - 0)^2) / 2 = 0.625
    # regulariser: (log(e^1 + e^2) - 2 + log 2 - 0) / 2 = (0.3132617 + 0.6931472) / 2 = 0.5032044
    loss, (td, regulariser) = module.cql_loss(q, actions, targets, 0.5)
    assert float(td) == pytest.approx(0.625)
    assert float(regulariser) == pytest.approx(0.5032044, abs=1e-6)
    assert float(loss) == pytest.approx(0.625 + 0.5 * 0.5032044, abs=1e-6)
    # alpha = 0 is the TD loss alone; the regulariser is zero only when the data's action dominates all others
    assert float(module.cql_loss(q, actions, targets, 0.0)[0]) == pytest.approx(0.625)
    peaked = jnp.array([[0.0, 50.0]])
    assert float(module.cql_loss(peaked, jnp.array([1]), jnp.array([50.0]), 1.0)[0]) == pytest.approx(0.0, abs=1e-6)


def test_loader_block_is_identical_in_both_scripts() -> None:
    start = "# DQN Replay Dataset (Agarwal et al. 2020)"
    end = "# end of the DQN Replay Dataset section"
    blocks = []
    for script in ("eaudecql_atari_jax.py", "polyprune_cql_atari_jax.py"):
        text = (ROOT / script).read_text()
        assert text.count(start) == 1 and text.count(end) == 1
        blocks.append(text[text.index(start) : text.index(end)])
    assert blocks[0] == blocks[1]
    assert "def load_dqn_replay_dataset(" in blocks[0] and "def sample_dqn_replay_batch(" in blocks[0]


# ---------------------------------------------------------------------------------------------------------------------
# Argument and dataset errors: one `error:` line, exit code 2, before any JAX work
# ---------------------------------------------------------------------------------------------------------------------


def parse_error(module, argv: list[str], capsys: pytest.CaptureFixture) -> str:
    with pytest.raises(SystemExit) as exit_:
        module.parse_args(argv)
    assert exit_.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    return lines[0]


def test_argument_and_dataset_errors(tmp_path: Path, dataset_dir: Path, capsys: pytest.CaptureFixture) -> None:
    data = ["--env-id", "Breakout-v5", "--dataset-dir", str(dataset_dir), "--transitions-per-checkpoint", "300"]
    assert parse_error(eaude, ["--env-id", "Breakout-v5"], capsys).startswith("error: --dataset-dir: required")
    missing = parse_error(eaude, [*data, "--dataset-dir", str(tmp_path / "nowhere")], capsys)
    assert missing.startswith("error: --dataset-dir:") and "is not a folder" in missing
    partial = tmp_path / "partial" / "replay_logs"
    shutil.copytree(dataset_dir / "replay_logs", partial)
    (partial / "$store$_reward_ckpt.1.gz").unlink()
    lacks = parse_error(poly, [*data, "--dataset-dir", str(partial.parent)], capsys)  # the last flag wins
    assert lacks.startswith("error: --dataset-dir: checkpoint 1") and "$store$_reward_ckpt.1.gz" in lacks
    assert parse_error(eaude, [*data, "--dataset-checkpoints", "0", "7"], capsys).startswith(
        "error: --dataset-checkpoints:"
    )
    assert parse_error(eaude, [*data, "--transitions-per-checkpoint", "500"], capsys).startswith(
        "error: --transitions-per-checkpoint:"
    )
    assert parse_error(eaude, [*data, "--num-networks", "0"], capsys) == "error: --num-networks: K must be at least 1"
    assert (
        parse_error(eaude, [*data, "--num-networks", "2", "--tournament-size", "3"], capsys)
        == "error: --tournament-size: M must be in [1, K]"
    )
    assert (
        parse_error(poly, [*data, "--final-sparsity", "1"], capsys) == "error: --final-sparsity: s_F must be in [0, 1)"
    )
    assert parse_error(poly, [*data, "--num-epochs", "-1"], capsys) == "error: --num-epochs: must be positive"
    assert parse_error(eaude, [*data, "--cql-alpha", "-0.1"], capsys).startswith("error: --cql-alpha:")


def test_missing_dataset_exits_2_without_traceback_and_writes_nothing(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "polyprune_cql_atari_jax.py"), "--env-id", "Breakout-v5", "--dataset-dir",
         str(tmp_path / "absent"), "--output-dir", "runs"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [f"error: --dataset-dir: {tmp_path / 'absent'} is not a folder"]
    assert not (tmp_path / "runs").exists()


def test_actions_outside_the_games_action_set_exit_2(tmp_path: Path, dataset_dir: Path) -> None:
    """Breakout has 4 actions: a dataset whose actions reach 5 is of another game (checked when loading)."""
    import gzip

    folder = tmp_path / "other" / "replay_logs"
    shutil.copytree(dataset_dir / "replay_logs", folder)
    with gzip.open(folder / "$store$_action_ckpt.0.gz", "rb") as f:
        actions = np.load(f)
    actions[actions > 0] = 5
    with gzip.open(folder / "$store$_action_ckpt.0.gz", "wb") as f:
        np.save(f, actions)
    with pytest.raises(SystemExit) as exit_:
        eaude.load_dataset(eaude.Args(env_id="Breakout-v5", dataset_dir=str(folder), transitions_per_checkpoint=300))
    assert exit_.value.code == 2


# ---------------------------------------------------------------------------------------------------------------------
# End-to-end runs
# ---------------------------------------------------------------------------------------------------------------------


def test_eaudecql_prunes_and_resumes_to_the_same_result(tmp_path: Path, dataset_dir: Path, env: dict) -> None:
    """One reference run (checkpoint every epoch) is frozen after its first checkpoint and its folder copied; the copy
    is resumed and must end exactly like the reference: same counters, params, population and metrics, no step
    logged twice. The reference also checks Alg. 1 / Eq. 3 in population.jsonl and the saved model."""
    out = tmp_path / "runs"
    argv = command(
        "eaudecql_atari_jax.py", dataset_dir, out,
        "--target-network-frequency", "10", "--num-networks", "3", "--tournament-size", "2", "--u-max", "30",
        "--s-max", "0.1", "--checkpoint-interval", "40", "--save-model", "--eval-episodes", "1",
        "--eval-max-episode-steps", "30",
    )  # fmt: skip
    process = subprocess.Popen(argv, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.time() + 400
    while time.time() < deadline and not list(out.glob("*/checkpoint/meta.json")):
        assert process.poll() is None, process.communicate()
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGSTOP)  # freeze it while its folder is copied: the copy is "killed after epoch 1"
    (run_dir,) = out.iterdir()
    copy = tmp_path / "copy" / run_dir.name
    shutil.copytree(run_dir, copy, ignore=shutil.ignore_patterns("checkpoint.tmp", "checkpoint.old"))
    os.kill(process.pid, signal.SIGCONT)
    stdout, stderr = process.communicate(timeout=400)
    assert process.returncode == 0, stdout[-3000:] + stderr[-3000:]
    assert json.loads((copy / "checkpoint" / "meta.json").read_text())["global_step"] == 40

    # ---- the reference run: Alg. 1 and Eq. 3 in population.jsonl, target sparsity rising, saved model
    config = json.loads((run_dir / "config.json").read_text())
    assert config["args"]["num_networks"] == 3 and config["script"] == "eaudecql_atari_jax.py"
    names = {m["name"] for m in read_jsonl(run_dir / "metrics.jsonl")}
    assert {"losses/cql_loss", "losses/td_loss", "sparsity/target", "eval/episodic_return", "charts/SPS"} <= names
    assert "charts/episodic_return" not in names  # offline: no training episodes
    assert [step for step, _ in metric(run_dir, "eval/episodic_return")] == [40, 80]  # epoch 1, then the saved model
    events = read_jsonl(run_dir / "population.jsonl")
    assert [e["global_step"] for e in events] == list(range(10, 81, 10))  # every T gradient steps
    for e in events:
        losses, before, after, parents = (
            np.array(e[k]) for k in ("losses", "sparsities_before", "sparsities_after", "parents")
        )
        assert e["target_index"] == np.argmin(losses) == parents[0]  # Alg. 1 l. 12 and the elitist slot
        assert np.all(losses > 0)
        for slot, parent in enumerate(parents):
            if list(parents).index(parent) == slot:
                assert after[slot] == before[parent]  # an original keeps its sparsity
            else:  # a copy is pruned further, by at most S_max of its remaining weights (Eq. 3)
                assert before[parent] < after[slot] <= before[parent] + (1 - before[parent]) * 0.1 + 1e-12
    for previous, current in itertools.pairwise(events):
        assert previous["sparsities_after"] == current["sparsities_before"]
    sparsity = metric(run_dir, "sparsity/target")
    assert sparsity[0] == (0, 0.0) and sparsity[-1][1] > 0.05  # the target network got sparser
    assert saved_sparsity(run_dir / "eaudecql_atari_jax.cleanrl_model") == pytest.approx(sparsity[-1][1], abs=1e-9)

    # ---- resume the copy: it must end where the reference ended
    result = subprocess.run(
        [sys.executable, str(ROOT / "eaudecql_atari_jax.py"), "--resume", str(copy)],
        cwd=tmp_path, capture_output=True, text=True, timeout=600, env=env,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert f"resumed {run_dir.name} at step 40" in result.stdout
    final, reference = (json.loads((d / "checkpoint" / "meta.json").read_text()) for d in (copy, run_dir))
    for field in ("global_step", "next_target_update", "sparsities", "rng_state", "last_eval_return"):
        assert final[field] == reference[field], field
    assert final["global_step"] == 80
    assert (copy / "checkpoint" / "state.msgpack").read_bytes() == (
        run_dir / "checkpoint" / "state.msgpack"
    ).read_bytes()
    assert read_jsonl(copy / "population.jsonl") == events
    resumed, original = read_jsonl(copy / "metrics.jsonl"), read_jsonl(run_dir / "metrics.jsonl")
    assert [(m["global_step"], m["name"]) for m in resumed] == [(m["global_step"], m["name"]) for m in original]
    for a, b in zip(resumed, original, strict=True):
        if a["name"] != "charts/SPS":
            assert a["value"] == b["value"], a
    for name in ("sparsity/target", "losses/cql_loss", "charts/SPS"):
        steps = [m["global_step"] for m in resumed if m["name"] == name]
        assert steps == sorted(set(steps)), f"{name} repeats a step: {steps}"
    assert [m["time"] for m in resumed] == sorted(m["time"] for m in resumed)


def test_polyprune_cql_follows_eq2(tmp_path: Path, dataset_dir: Path, env: dict) -> None:
    run_dir = run_script(
        "polyprune_cql_atari_jax.py", tmp_path, dataset_dir, env,
        "--target-network-frequency", "20", "--pruning-period", "10", "--final-sparsity", "0.9", "--save-model",
        "--eval-episodes", "0", "--checkpoint-interval", "0",
    )  # fmt: skip
    assert not (run_dir / "population.jsonl").exists()
    sparsity = dict(metric(run_dir, "sparsity/target"))
    # Eq. 2 with t_final = 80 gradient steps: t_start = 16, t_end = 64, n = 3; the target copies the online network
    # at t before it is pruned again at t, so it holds the sparsity of the pruning at t - 10
    expected = {t: 0.9 * (1 - (1 - min(max((t - 16) / 48, 0), 1)) ** 3) for t in range(0, 81, 10)}
    assert sorted(sparsity) == [0, 20, 40, 60, 80]
    for step in (20, 40, 60, 80):
        assert sparsity[step] == pytest.approx(expected[step - 10], abs=1e-4)
    assert saved_sparsity(run_dir / "polyprune_cql_atari_jax.cleanrl_model") == pytest.approx(sparsity[80], abs=1e-9)
    assert {"losses/cql_loss", "losses/td_loss"} <= {m["name"] for m in read_jsonl(run_dir / "metrics.jsonl")}


def test_dense_cql_stays_dense(tmp_path: Path, dataset_dir: Path, env: dict) -> None:
    run_dir = run_script(
        "polyprune_cql_atari_jax.py", tmp_path, dataset_dir, env,
        "--num-epochs", "1", "--steps-per-epoch", "20", "--target-network-frequency", "10", "--pruning-period", "5",
        "--final-sparsity", "0", "--eval-episodes", "0", "--checkpoint-interval", "0",
    )  # fmt: skip
    assert [value for _, value in metric(run_dir, "sparsity/target")] == [0.0, 0.0, 0.0]
    (loss,) = metric(run_dir, "losses/cql_loss")
    assert loss[0] == 20 and np.isfinite(loss[1])
