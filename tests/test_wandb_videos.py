"""--track: every finite scalar of metrics.jsonl and, with --capture-video, the evaluation videos of the saved model
reach the Weights & Biases run, with the environment steps (`global_step`) as the x-axis; no tensorboard package is
needed. One real offline run of a classic-control script; the seven other scripts, whose runs are too slow for a test,
carry the same Run methods (open_logs, scalar, log_videos, close) and the same calls in main()."""

import ast
import importlib
import inspect
import json
import math
import os
import struct
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = [
    "eaudedqn_atari_jax", "polyprune_dqn_atari_jax", "eaudedqn_jax", "polyprune_dqn_jax",
    "eaudecql_atari_jax", "polyprune_cql_atari_jax", "eaudesac_mujoco_jax", "polyprune_sac_mujoco_jax",
]  # fmt: skip
# the statement main() runs right after save_and_evaluate(...), on the folder save_and_evaluate films into
VIDEO_CALL = (
    "if args.track and args.capture_video:\n"
    "    run.log_videos(Path('videos') / run.dir.name, args.eval_episodes, global_step)"
)


class FakeWandb(types.SimpleNamespace):
    """The names the scripts use: `Video(path)` records the path, `log(row)` the row, `init(**kwargs)` its arguments
    and `define_metric(name, **kwargs)` each declaration."""

    def __init__(self) -> None:
        super().__init__(rows=[], inits=[], metrics=[], finished=False)

    @staticmethod
    def Video(path: str) -> tuple[str, str]:  # wandb's name
        assert isinstance(path, str)
        return ("video", path)

    def log(self, row: dict) -> None:
        self.rows.append(row)

    def init(self, **kwargs: object) -> None:
        self.inits.append(kwargs)

    def define_metric(self, name: str, **kwargs: object) -> None:
        self.metrics.append((name, kwargs))

    def finish(self) -> None:
        self.finished = True


def run_in(module, folder: Path, **args: object):
    """The script's Run on an existing folder, as --resume opens it (no config.json is written)."""
    folder.mkdir(exist_ok=True)
    return module.Run(module.Args(resume=str(folder), **args))


@pytest.mark.parametrize("script", SCRIPTS)
def test_log_videos_logs_each_filmed_episode_at_the_last_step(script: str, tmp_path: Path) -> None:
    module = importlib.import_module(script)
    for episode in (0, 2):  # episode 1 was not filmed: it is left out, not an error
        (tmp_path / f"eval-episode-{episode}.mp4").write_bytes(b"mp4")
    (tmp_path / "eval-episode-3.mp4").write_bytes(b"mp4")  # an older evaluation's extra episode
    run = run_in(module, tmp_path)
    run.wandb = fake = FakeWandb()
    run.log_videos(tmp_path, 3, 12_345)
    assert fake.rows == [
        {
            "eval/video-0": ("video", str(tmp_path / "eval-episode-0.mp4")),
            "eval/video-2": ("video", str(tmp_path / "eval-episode-2.mp4")),
            "global_step": 12_345,  # the x-axis of the scalars Run.scalar sends
        }
    ]

    run.wandb = fake = FakeWandb()
    run.log_videos(tmp_path / "missing", 2, 1)
    assert fake.rows == []  # nothing filmed: no empty row


@pytest.mark.parametrize("script", SCRIPTS)
def test_main_logs_the_videos_after_the_evaluation_and_imports_wandb_only_for_track(script: str) -> None:
    module = importlib.import_module(script)
    assert inspect.getsource(module.Run.log_videos) == inspect.getsource(
        importlib.import_module(SCRIPTS[0]).Run.log_videos
    )
    tree = ast.parse((ROOT / f"{script}.py").read_text())
    main = next(node for node in tree.body if isinstance(node, ast.FunctionDef) and node.name == "main")
    (save_block,) = [
        node
        for node in main.body
        if isinstance(node, ast.If)
        and any("save_and_evaluate(" in ast.unparse(statement) for statement in node.body[:1])
    ]
    assert [ast.unparse(statement) for statement in save_block.body[1:]] == [VIDEO_CALL]
    # save_and_evaluate writes the videos into the folder log_videos reads
    assert "Path('videos') / run.dir.name" in ast.unparse(
        next(node for node in tree.body if getattr(node, "name", None) == "save_and_evaluate")
    )
    imports = [
        function.name
        for function in ast.walk(tree)
        if isinstance(function, ast.FunctionDef)
        for node in ast.walk(function)
        if isinstance(node, ast.Import) and any(alias.name == "wandb" for alias in node.names)
    ]
    module_level = [node for node in tree.body if isinstance(node, ast.Import | ast.ImportFrom)]
    assert imports == ["open_logs"] and "wandb" not in ast.unparse(ast.Module(module_level, []))


@pytest.mark.parametrize("script", SCRIPTS)
def test_run_logger_sends_each_finite_scalar_to_wandb_at_its_env_step(script: str, tmp_path: Path) -> None:
    module = importlib.import_module(script)
    run = run_in(module, tmp_path)
    run.open_logs({"global_step": 0, "elapsed": 0.0})
    run.wandb = fake = FakeWandb()
    run.scalar("losses/td_loss", np.float32(0.25), np.int64(1_000))  # numpy scalars, as the training loop has
    run.scalar("losses/td_loss", float("nan"), 1_010)  # a diverged loss: metrics.jsonl only (null)
    run.scalar("charts/SPS", float("inf"), 1_020)
    run.scalar("charts/episodic_return", 12, 1_030)
    run.close()
    assert fake.finished
    assert fake.rows == [
        {"losses/td_loss": 0.25, "global_step": 1_000},
        {"charts/episodic_return": 12.0, "global_step": 1_030},
    ]
    assert all(type(value) in (float, int) for row in fake.rows for value in row.values())  # plain JSON numbers
    lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [line["value"] for line in lines] == [0.25, None, None, 12.0]

    run = run_in(module, tmp_path)  # no --track: no W&B, the same files
    run.open_logs({"global_step": 0, "elapsed": 0.0})
    run.scalar("charts/episodic_return", 3, 5)
    run.close()
    assert len((tmp_path / "metrics.jsonl").read_text().splitlines()) == 5


@pytest.mark.parametrize("script", SCRIPTS)
def test_track_draws_every_chart_against_env_steps_without_sync_tensorboard(
    script: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    module = importlib.import_module(script)
    fake = FakeWandb()
    monkeypatch.setitem(sys.modules, "wandb", fake)
    run = run_in(module, tmp_path / "CartPole-v1__x__1__2", track=True)
    run.open_logs({"global_step": 0, "elapsed": 0.0})
    run.close()
    assert run.wandb is fake and fake.finished
    (kwargs,) = fake.inits
    assert "sync_tensorboard" not in kwargs  # wandb refuses it unless the tensorboard package is installed
    assert kwargs["id"] == kwargs["name"] == "CartPole-v1__x__1__2" and kwargs["resume"] == "allow"  # --resume
    assert fake.metrics == [("global_step", {}), ("*", {"step_metric": "global_step"})]
    # main() opens the logs (and so the W&B run) with the loop counters, after a resume has restored them
    main = next(
        node for node in ast.parse((ROOT / f"{script}.py").read_text()).body if getattr(node, "name", None) == "main"
    )
    calls = [ast.unparse(node) for node in ast.walk(main) if isinstance(node, ast.Call)]
    assert "run.open_logs(meta)" in calls


def wandb_records(path: Path) -> list:
    """The protobuf records of an offline run's .wandb file: a 7-byte header, then LevelDB-log chunks (crc32, length,
    type: 1 whole, 2 first, 3 middle, 4 last) in 32 KiB blocks whose tails under 7 bytes are padding."""
    from wandb.proto import wandb_internal_pb2

    data, block = path.read_bytes(), 32 * 1024
    assert data[:4] == b":W&B", data[:7]
    records, pos, chunks = [], 7, b""
    while pos + 7 <= len(data):
        if block - pos % block < 7:
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if kind == 0:  # zero fill at the end of the file
            break
        chunks, pos = chunks + data[pos + 7 : pos + 7 + length], pos + 7 + length
        if kind in (1, 4):
            records.append(wandb_internal_pb2.Record.FromString(chunks))
            chunks = b""
    return records


@pytest.mark.slow
def test_track_sends_the_scalars_and_the_evaluation_videos_to_the_offline_wandb_run(tmp_path: Path) -> None:
    env = os.environ | {
        "WANDB_MODE": "offline", "WANDB_SILENT": "true", "WANDB_DIR": str(tmp_path),
        "WANDB_CONFIG_DIR": str(tmp_path / "wandb-config"), "WANDB_CACHE_DIR": str(tmp_path / "wandb-cache"),
        "WANDB_DATA_DIR": str(tmp_path / "wandb-data"),
    }  # fmt: skip
    proc = subprocess.run(
        [
            sys.executable, str(ROOT / "eaudedqn_jax.py"), "--output-dir", str(tmp_path / "runs"),
            "--total-timesteps", "600", "--learning-starts", "200", "--target-network-frequency", "100",
            "--network-size", "small", "--checkpoint-interval", "0", "--eval-episodes", "2",
            "--save-model", "--capture-video", "--track",
        ],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (run_dir,) = (tmp_path / "runs").iterdir()
    videos = sorted((tmp_path / "videos" / run_dir.name).glob("*.mp4"))
    assert [video.name for video in videos] == ["eval-episode-0.mp4", "eval-episode-1.mp4"]
    (wandb_run,) = (tmp_path / "wandb").glob(f"offline-run-*-{run_dir.name}")
    records = wandb_records(wandb_run / f"run-{run_dir.name}.wandb")
    rows = [
        {item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in record.history.item}
        for record in records
        if record.WhichOneof("record_type") == "history"
    ]
    # every finite scalar, in order, at its env step (metrics.jsonl writes a non-finite one as null)
    scalars = [
        (row["global_step"], name, value)
        for row in rows
        for name, value in row.items()
        if not name.startswith(("_", "global_step", "eval/video-"))
    ]
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    expected = [(line["global_step"], line["name"], line["value"]) for line in lines if line["value"] is not None]
    assert scalars == expected
    names = {name for _, name, _ in scalars}
    assert {"charts/episodic_return", "sparsity/target", "eval/episodic_return"} <= names
    assert all(math.isfinite(value) for _, _, value in scalars)
    metrics = {
        record.metric.name or record.metric.glob_name: record.metric for record in records if record.HasField("metric")
    }
    assert metrics["*"].step_metric == "global_step" and "global_step" in metrics
    # wandb copies each logged file to media/videos/<key>_<step>_<hash>.mp4
    logged = sorted((wandb_run / "files" / "media" / "videos" / "eval").glob("*.mp4"))
    assert [path.name.split("_")[0] for path in logged] == ["video-0", "video-1"]
    assert [path.read_bytes() for path in logged] == [video.read_bytes() for video in videos]
