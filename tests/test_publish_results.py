"""tools/publish_results.py: what docs/results/ is made of (gzipped runs, runs.csv) and the command each row names."""

from __future__ import annotations

import csv
import gzip
import json
import shutil
from pathlib import Path

import publish_results as publish
import pytest

ROOT = Path(__file__).resolve().parents[1]


def make_run(root: Path, seed: int, last: int = 1000, script: str = "eaudedqn_jax.py") -> Path:
    exp = "eaudedqn_classic_small_t1k"
    run = root / f"CartPole-v1__{exp}__{seed}__1700000000"
    run.mkdir(parents=True)
    argv = [f"/somewhere/{script}", "--seed", str(seed), "--exp-name", exp, "--output-dir", "runs/cpu"]
    argv += ["--total-timesteps", "1000"]
    args = {"exp_name": exp, "env_id": "CartPole-v1", "seed": seed, "total_timesteps": 1000, "network_size": "small"}
    config = {"args": args | {"u_max": 3.0}, "script": script, "jax_backend": "cpu", "command": argv}
    (run / "config.json").write_text(json.dumps(config))
    rows = []
    for step in range(25, last + 1, 25):  # one episode of return `step / 10` every 25 steps
        rows.append({"global_step": step, "name": "charts/episodic_return", "value": step / 10, "time": step / 100})
        rows.append({"global_step": step, "name": "sparsity/target", "value": 0.5 * step / 1000, "time": step / 100})
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    event = {"global_step": 500, "losses": [1.0, 2.0], "sparsities_before": [0.2, 0.3], "target_index": 0}
    event |= {"parents": [0, 0], "sparsities_after": [0.2, 0.25]}
    (run / "population.jsonl").write_text(json.dumps(event) + "\n")
    (run / "checkpoint").mkdir()
    (run / "checkpoint" / "state.msgpack").write_bytes(b"x" * 100)
    (run / "events.out.tfevents.1.vm").write_bytes(b"x")
    return run


def test_the_command_drops_only_the_output_dir() -> None:
    argv = [
        "/a/b/eaudesac_mujoco_jax.py",
        "--output-dir",
        "runs/cpu",
        "--seed",
        "2",
        "--output-dir=x",
        "--exp-name",
        "a b",
    ]
    assert (
        publish.reproducing_command({"command": argv})
        == "uv run python eaudesac_mujoco_jax.py --seed 2 --exp-name 'a b'"
    )


def test_the_command_writes_out_values_whose_default_has_changed_since() -> None:
    """A run made before the classic scripts took CleanRL's protocol (G = 4, a 1k warm-up) re-runs as it was: the
    command gains every value the run took from a default that is different now, and only those."""
    defaults = publish.script_defaults(publish.ROOT / "eaudedqn_jax.py")
    old = {**defaults, "train_frequency": 4, "learning_starts": 1000, "seed": 2, "total_timesteps": 30000}
    old |= {"save_model": not defaults["save_model"], "wandb_entity": None, "output_dir": "runs/x", "exp_name": "e"}
    argv = ["/a/eaudedqn_jax.py", "--seed", "2", "--total-timesteps", "30000", "--output-dir", "runs/x"]
    argv += ["--exp-name", "e"]
    command = publish.reproducing_command({"command": argv, "args": old})
    save = "--save-model" if old["save_model"] else "--no-save-model"  # Args order: --save-model comes first
    tail = f"{save} --learning-starts 1000 --train-frequency 4"
    assert command == f"uv run python eaudedqn_jax.py --seed 2 --total-timesteps 30000 --exp-name e {tail}"
    assert publish.reproducing_command({"command": argv, "args": {**defaults, "seed": 2}}).endswith("--exp-name e")


def test_records_only_copies_the_runs_and_writes_nothing_else(tmp_path: Path) -> None:
    make_run(tmp_path / "raw", 1)
    out = publish.ROOT / "docs" / "_test_records"
    try:
        assert publish.main(["--runs-dir", str(tmp_path / "raw"), "--output-dir", str(out), "--records-only"]) == 0
        assert {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()} == {
            f"runs/CartPole-v1__eaudedqn_classic_small_t1k__1__1700000000/{name}"
            for name in ("config.json", "metrics.jsonl.gz", "population.jsonl.gz")
        }
    finally:
        shutil.rmtree(out, ignore_errors=True)


def test_publish_writes_small_gzipped_runs_a_csv_and_the_summary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(publish, "ROOT", tmp_path)
    runs = tmp_path / "runs"
    for seed in (1, 2):
        make_run(runs, seed)
    make_run(runs, 3, last=500)  # unfinished: left for a later call
    out = tmp_path / "docs" / "results"
    assert publish.main(["--runs-dir", str(runs), "--output-dir", str(out), "--reps", "50"]) == 0
    published = sorted(p.name for p in (out / "runs").iterdir())
    assert published == [f"CartPole-v1__eaudedqn_classic_small_t1k__{s}__1700000000" for s in (1, 2)]
    first = out / "runs" / published[0]
    assert sorted(p.name for p in first.iterdir()) == ["config.json", "metrics.jsonl.gz", "population.jsonl.gz"]
    source = runs / published[0]
    assert gzip.decompress((first / "metrics.jsonl.gz").read_bytes()) == (source / "metrics.jsonl").read_bytes()
    assert json.loads((first / "config.json").read_text())["machine"]["recorded_by"] == "tools/publish_results.py"
    with open(out / "runs.csv") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == publish.COLUMNS
    assert rows[0] | {"command": "", "metrics": ""} == {
        "script": "eaudedqn_jax.py",
        "env_id": "CartPole-v1",
        "network_size": "small",
        "seed": "1",
        "u_max": "3.0",
        "s_f": "",
        "total_timesteps": "1000",
        "final_return": "100.0",  # the episode logged in the last 1/40 of the budget
        "final_sparsity": "0.5",
        "wall_seconds": "10.0",
        "command": "",
        "metrics": "",
        "cpu": rows[0]["cpu"],  # this machine's model: the run recorded none, publish_run filled it in
    }
    assert rows[0]["cpu"] and rows[0]["cpu"] == publish.this_machine({})["cpu"]
    assert rows[0]["command"] == (
        "uv run python eaudedqn_jax.py --seed 1 --exp-name eaudedqn_classic_small_t1k --total-timesteps 1000"
    )
    assert rows[0]["metrics"] == f"docs/results/runs/{published[0]}/metrics.jsonl.gz"
    assert (out / "summary.md").exists() and (out / "summary.json").exists()
    # Publishing again rewrites the same bytes: gzip carries no timestamp.
    before = (first / "metrics.jsonl.gz").read_bytes()
    assert publish.main(["--runs-dir", str(runs), "--output-dir", str(out), "--reps", "50"]) == 0
    assert (first / "metrics.jsonl.gz").read_bytes() == before


def test_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert publish.main(["--runs-dir", str(tmp_path / "missing")]) == 2
    assert capsys.readouterr().err == f"error: --runs-dir {tmp_path / 'missing'} is not a folder\n"
    (tmp_path / "runs").mkdir()
    assert publish.main(["--runs-dir", str(tmp_path / "runs"), "--output-dir", "/elsewhere"]) == 2
    assert capsys.readouterr().err.startswith("error: --output-dir /elsewhere is outside the repository")


def test_the_cpu_column_names_the_machine_of_each_row(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Rows may come from different CPU models: each names the one in its own config.json (`machine.cpu`)."""
    monkeypatch.setattr(publish, "ROOT", tmp_path)
    runs = tmp_path / "runs"
    for seed, cpu in ((1, "AMD EPYC 7B13"), (2, "Intel(R) Xeon(R) Platinum 8481C")):
        run = make_run(runs, seed)
        config = json.loads((run / "config.json").read_text())
        config["machine"] = {"cpu": cpu, "device": "cpu", "python": "3.11.7", "system": "Linux"}
        (run / "config.json").write_text(json.dumps(config))
    out = tmp_path / "docs" / "results"
    assert publish.main(["--runs-dir", str(runs), "--output-dir", str(out), "--reps", "20"]) == 0
    with open(out / "runs.csv") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0])[-1] == "cpu" and list(rows[0])[:12] == publish.COLUMNS[:12]
    assert [(row["seed"], row["cpu"]) for row in rows] == [
        ("1", "AMD EPYC 7B13"),
        ("2", "Intel(R) Xeon(R) Platinum 8481C"),
    ]
