"""DQN Replay Dataset layout: the offline loader (streaming, episode boundaries, frame stacks, errors) and the writer.

The loader lives in both CQL scripts (single-file scripts duplicate code); LOADER_PATHS says which files the tests
import: every loader test runs on each copy, so a rule broken in either script is caught by the rule's own test.
"""

import gzip
import importlib.util
import inspect
import io
import json
import os
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
# The one place that says where the loader is defined.
LOADER_PATHS = [ROOT / "eaudecql_atari_jax.py", ROOT / "polyprune_cql_atari_jax.py"]
WRITER_PATH = ROOT / "tools" / "write_dqn_replay_dataset.py"
FRAME = 84 * 84


def _import(path: Path, name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the class is created
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module", params=LOADER_PATHS, ids=lambda path: path.stem)
def ds(request: pytest.FixtureRequest) -> ModuleType:
    return _import(request.param, f"dqn_replay_loader_under_test_{request.param.stem}")


@pytest.fixture(scope="module")
def loader() -> ModuleType:
    """One copy of the loader, for the writer's tests (they test the writer, not the copies)."""
    return _import(LOADER_PATHS[0], "dqn_replay_loader_for_the_writer")


@pytest.fixture(scope="module")
def writer() -> ModuleType:
    return _import(WRITER_PATH, "write_dqn_replay_dataset_under_test")


# ------------------------------------------------------------------------------------------------ dataset helpers


def save_gz(path: Path, array: np.ndarray, level: int = 1) -> None:
    with gzip.open(path, "wb", compresslevel=level) as f:
        np.save(f, array, allow_pickle=False)


def frames(values) -> np.ndarray:
    """Frames whose every pixel is the given value, so stacks are easy to read back."""
    values = np.asarray(values, dtype=np.uint8)
    return np.broadcast_to(values[:, None, None], (len(values), 84, 84)).copy()


def write_checkpoint(
    folder: Path,
    number: int,
    obs: np.ndarray,
    actions=None,
    rewards=None,
    terminals=None,
    add_count: int | None = None,
) -> None:
    n = len(obs)
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {
        "$store$_observation": obs,
        "$store$_action": np.ones(n, np.int32) if actions is None else np.asarray(actions, np.int32),
        "$store$_reward": np.zeros(n, np.float32) if rewards is None else np.asarray(rewards, np.float32),
        "$store$_terminal": np.zeros(n, np.uint8) if terminals is None else np.asarray(terminals, np.uint8),
    }
    if add_count is not None:
        arrays["add_count"] = np.array(add_count, np.int64)
    for name, array in arrays.items():
        save_gz(folder / f"{name}_ckpt.{number}.gz", array)


def terminal_at(n: int, *where: int) -> np.ndarray:
    t = np.zeros(n, np.uint8)
    t[list(where)] = 1
    return t


def stack_values(stacks: np.ndarray) -> list[list[int]]:
    """(B, 4, 84, 84) constant frames -> their values."""
    assert (stacks == stacks[:, :, :1, :1]).all()
    return stacks[:, :, 0, 0].astype(int).tolist()


# ------------------------------------------------------------------------------------------------ loader


def test_episode_boundaries_valid_and_stacks(ds, tmp_path):
    # 12 entries, values 1..12, game over at entry 4: episode A = 0..4, episode B = 5..11 (no Dopamine padding).
    write_checkpoint(tmp_path, 0, frames(range(1, 13)), terminals=terminal_at(12, 4))
    data = ds.load_dqn_replay_dataset(str(tmp_path), transitions_per_checkpoint=12)
    assert data.observations.shape == (12, 84, 84) and data.observations.dtype == np.uint8
    assert data.actions.dtype == np.int32 and data.rewards.dtype == np.float32 and data.terminals.dtype == bool
    assert np.flatnonzero(data.episode_starts).tolist() == [0, 5]
    assert np.flatnonzero(~data.valid).tolist() == [11]  # the last entry has no next frame
    assert data.valid_indices.tolist() == [i for i in range(12) if i != 11]
    stacks = ds.rebuild_frame_stacks(data.observations, data.episode_starts, np.array([0, 1, 3, 4, 5, 7, 9]))
    assert stack_values(stacks) == [
        [0, 0, 0, 1],
        [0, 0, 1, 2],
        [1, 2, 3, 4],
        [2, 3, 4, 5],
        [0, 0, 0, 6],  # never reaches back across the game over
        [0, 6, 7, 8],
        [7, 8, 9, 10],
    ]
    batch = ds.dqn_replay_batch(data, np.array([3, 5, 10]))
    assert stack_values(batch["next_observations"])[0] == [2, 3, 4, 5]
    assert stack_values(batch["next_observations"])[1] == [0, 0, 6, 7]
    assert stack_values(batch["next_observations"])[2] == [9, 10, 11, 12]
    assert batch["terminals"].tolist() == [False, False, False]
    assert ds.dqn_replay_batch(data, np.array([4]))["terminals"].tolist() == [True]
    sampled = ds.sample_dqn_replay_batch(data, np.random.default_rng(0), 64)
    assert sampled["observations"].shape == (64, 4, 84, 84) and sampled["actions"].shape == (64,)
    # uniform over the valid transitions: never the last entry (value 12), which has no next frame
    newest = sampled["observations"][:, -1, 0, 0]
    assert set(newest.tolist()) == set(range(1, 12))
    assert (sampled["next_observations"][:, -1, 0, 0] == newest + 1).all()


def test_dopamine_padding_and_observation_only_entries(ds, tmp_path):
    # Dopamine layout: 3 zero pads, episode 1..4 (game over at 4), 3 pads, episode 5..9 truncated after 8 with the
    # true final frame 9 stored as an observation-only entry (action -1, terminal 1), 3 pads, episode 10..11.
    pad = [0, 0, 0]
    values = [*pad, 1, 2, 3, 4, *pad, 5, 6, 7, 8, 9, *pad, 10, 11]
    n = len(values)
    actions = np.array([0 if v == 0 else 2 for v in values], np.int32)
    actions[values.index(9)] = -1
    terminals = np.array([v in (4, 9) for v in values], np.uint8)
    write_checkpoint(tmp_path, 0, frames(values), actions=actions, terminals=terminals)
    data = ds.load_dqn_replay_dataset(str(tmp_path), transitions_per_checkpoint=n)
    real = [i for i, v in enumerate(values) if v not in (0, 9, 11)]  # 11: last entry, no next frame
    assert data.valid_indices.tolist() == real
    first_steps = [values.index(v) for v in (1, 5, 10)]
    assert stack_values(ds.rebuild_frame_stacks(data.observations, data.episode_starts, np.array(first_steps))) == [
        [0, 0, 0, 1],
        [0, 0, 0, 5],
        [0, 0, 0, 10],
    ]
    # The truncated step bootstraps from the true final frame.
    batch = ds.dqn_replay_batch(data, np.array([values.index(8)]))
    assert stack_values(batch["next_observations"]) == [[6, 7, 8, 9]] and not batch["terminals"][0]


def test_all_zero_frames_without_padding_position_stay_valid(ds, tmp_path):
    # Zero frames in the middle of an episode are data, not padding.
    write_checkpoint(tmp_path, 0, frames([5, 0, 0, 0, 6, 7]), actions=np.zeros(6, np.int32))
    data = ds.load_dqn_replay_dataset(str(tmp_path), transitions_per_checkpoint=6)
    assert data.valid_indices.tolist() == [0, 1, 2, 3, 4]


def test_checkpoint_slices_selection_and_numeric_order(ds, tmp_path):
    # Checkpoints 0, 2, 10 with 20 entries each; frame values 0.., 30.., 160.. say where each row came from.
    for slot, number in enumerate((0, 2, 10)):
        write_checkpoint(tmp_path, number, frames(np.arange(20) + (0, 30, 160)[slot]), terminals=terminal_at(20, 3))
    assert ds.validate_dataset_dir(str(tmp_path), transitions_per_checkpoint=8) == [0, 2, 10]
    data = ds.load_dqn_replay_dataset(str(tmp_path), transitions_per_checkpoint=8)
    assert data.checkpoints == (0, 2, 10)
    assert data.slice_starts.tolist() == [0, 8, 16]
    assert data.observations[:, 0, 0].tolist() == [*range(8), *range(30, 38), *range(160, 168)]
    assert np.flatnonzero(data.episode_starts).tolist() == [0, 4, 8, 12, 16, 20]
    assert np.flatnonzero(~data.valid).tolist() == [7, 15, 23]  # slice ends: the next frame was not loaded
    # Zero fill at a slice start even though the episode began before it.
    stacks = ds.rebuild_frame_stacks(data.observations, data.episode_starts, np.array([8, 10]))
    assert stack_values(stacks) == [[0, 0, 0, 30], [0, 30, 31, 32]]
    picked = ds.load_dqn_replay_dataset(str(tmp_path), checkpoints=[10, 0], transitions_per_checkpoint=5)
    assert picked.checkpoints == (10, 0)
    assert picked.observations[:, 0, 0].tolist() == [160, 161, 162, 163, 164, 0, 1, 2, 3, 4]


def test_default_is_the_first_50_checkpoints_in_numeric_order(ds, tmp_path):
    """A public run holds checkpoints 0..50: all of them would give 2.55M transitions, not Table 3's 2.5M."""
    for number in (10, 2, 0):  # numeric order is 0, 2, 10; as strings "10" would come before "2"
        write_checkpoint(tmp_path, number, frames(np.arange(6) + 10 * number))
    for function in (ds.load_dqn_replay_dataset, ds.validate_dataset_dir):
        assert inspect.signature(function).parameters["max_checkpoints"].default == 50
    assert ds.validate_dataset_dir(str(tmp_path), transitions_per_checkpoint=6, max_checkpoints=2) == [0, 2]
    data = ds.load_dqn_replay_dataset(str(tmp_path), transitions_per_checkpoint=6, max_checkpoints=2)
    assert data.checkpoints == (0, 2)
    assert data.observations[:, 0, 0].tolist() == [*range(6), *range(20, 26)]
    assert ds.load_dqn_replay_dataset(str(tmp_path), transitions_per_checkpoint=6).checkpoints == (0, 2, 10)
    # naming checkpoints overrides the limit
    picked = ds.load_dqn_replay_dataset(
        str(tmp_path), checkpoints=[10, 2, 0], transitions_per_checkpoint=6, max_checkpoints=2
    )
    assert picked.checkpoints == (10, 2, 0)


def test_replay_logs_subfolder_and_all_rows(ds, tmp_path):
    write_checkpoint(tmp_path / "replay_logs", 0, frames(range(1, 8)))
    data = ds.load_dqn_replay_dataset(str(tmp_path), transitions_per_checkpoint=None)
    assert len(data.actions) == 7


def test_add_count_cursor_seam_and_unwritten_rows(ds, tmp_path):
    # A full circular buffer whose write cursor is 5: entry 4 is the newest, entry 5 the oldest.
    write_checkpoint(tmp_path / "a", 0, frames(range(1, 13)), add_count=3 * 12 + 5)
    data = ds.load_dqn_replay_dataset(str(tmp_path / "a"), transitions_per_checkpoint=12)
    assert np.flatnonzero(data.episode_starts).tolist() == [0, 5]
    assert np.flatnonzero(~data.valid).tolist() == [4, 11]
    # A buffer filled up to entry 6 only: rows 7.. were never written.
    write_checkpoint(tmp_path / "b", 0, frames(range(1, 13)), add_count=7)
    assert len(ds.load_dqn_replay_dataset(str(tmp_path / "b"), transitions_per_checkpoint=None).actions) == 7
    with pytest.raises(ds.DatasetError, match=r"^--transitions-per-checkpoint: .*holds 7 transitions"):
        ds.validate_dataset_dir(str(tmp_path / "b"), transitions_per_checkpoint=8)


def test_num_actions_check(ds, tmp_path):
    write_checkpoint(tmp_path, 0, frames(range(1, 5)), actions=[0, 5, 1, 17])
    ds.load_dqn_replay_dataset(str(tmp_path), transitions_per_checkpoint=4, num_actions=18)
    with pytest.raises(ds.DatasetError, match=r"^--dataset-dir: actions up to 5 .* 4 actions"):
        ds.load_dqn_replay_dataset(str(tmp_path), transitions_per_checkpoint=3, num_actions=4)


def _corrupt_gzip(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2 :] = os.urandom(len(data) - len(data) // 2)
    path.write_bytes(bytes(data))


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])


OBS = "$store$_observation_ckpt.0.gz"


def _broken(kind: str, folder: Path) -> tuple[dict, str, str]:
    """Makes a broken dataset of one kind; returns (loader kwargs, flag, message regex)."""
    kwargs = {"transitions_per_checkpoint": 50}
    rng = np.random.default_rng(0)
    noisy = rng.integers(0, 256, size=(50, 84, 84), dtype=np.uint8)  # incompressible: the gzip body spans many blocks
    if kind == "missing_folder":
        return kwargs | {"dataset_dir": str(folder / "nope")}, "--dataset-dir", "is not a folder"
    folder.mkdir(parents=True, exist_ok=True)
    if kind == "no_checkpoints":
        (folder / "readme.txt").write_text("hi")
        return kwargs, "--dataset-dir", "no DQN Replay checkpoint files"
    write_checkpoint(folder, 0, noisy)
    if kind == "missing_file":
        (folder / "$store$_reward_ckpt.0.gz").unlink()
        return kwargs, "--dataset-dir", r"checkpoint 0 .* lacks \$store\$_reward_ckpt\.0\.gz"
    if kind == "unknown_checkpoint":
        return kwargs | {"checkpoints": [0, 3]}, "--dataset-checkpoints", r"checkpoint\(s\) \[3\] not in"
    if kind == "mismatched_lengths":
        save_gz(folder / "$store$_action_ckpt.0.gz", np.zeros(49, np.int32))
        return kwargs, "--dataset-dir", "arrays of different lengths"
    if kind == "too_few":
        return kwargs | {"transitions_per_checkpoint": 51}, "--transitions-per-checkpoint", "holds 50 transitions"
    if kind == "bad_count":
        return kwargs | {"transitions_per_checkpoint": 0}, "--transitions-per-checkpoint", "at least 1"
    if kind == "not_gzip":
        (folder / OBS).write_bytes(b"this is not gzip at all" * 10)
        return kwargs, "--dataset-dir", "not a gzip-compressed .npy array"
    if kind == "bad_npy_header":
        with gzip.open(folder / OBS, "wb") as f:
            f.write(b"\x93NUMPX garbage" * 100)
        return kwargs, "--dataset-dir", "not a gzip-compressed .npy array"
    if kind == "wrong_dtype":
        save_gz(folder / OBS, noisy.astype(np.float32))
        return kwargs, "--dataset-dir", r"expected a \(n, 84, 84\) uint8 array, got float32"
    if kind == "wrong_shape":
        save_gz(folder / OBS, noisy.reshape(50, -1))
        return kwargs, "--dataset-dir", r"expected a \(n, 84, 84\) uint8 array"
    if kind == "wrong_frame":
        save_gz(folder / OBS, noisy[:, :64, :64].copy())
        return kwargs, "--dataset-dir", r"frames are \(64, 64\), expected \(84, 84\)"
    if kind == "wrong_action_dtype":
        save_gz(folder / "$store$_action_ckpt.0.gz", np.zeros(50, np.float32))
        return kwargs, "--dataset-dir", "expected a 1-d action array, got float32"
    if kind == "corrupt_body":
        _corrupt_gzip(folder / OBS)
        return kwargs, "--dataset-dir", "corrupt or truncated gzip stream"
    if kind == "truncated":
        _truncate(folder / OBS)
        return kwargs, "--dataset-dir", "(truncated|corrupt)"
    raise AssertionError(kind)


HEADER_ERRORS = [
    "missing_folder",
    "no_checkpoints",
    "missing_file",
    "unknown_checkpoint",
    "mismatched_lengths",
    "too_few",
    "bad_count",
    "not_gzip",
    "bad_npy_header",
    "wrong_dtype",
    "wrong_shape",
    "wrong_frame",
    "wrong_action_dtype",
]


@pytest.mark.parametrize("kind", [*HEADER_ERRORS, "corrupt_body", "truncated"])
def test_errors_are_one_line_and_name_the_flag(ds, tmp_path, kind):
    kwargs, flag, pattern = _broken(kind, tmp_path / "replay_logs")
    kwargs.setdefault("dataset_dir", str(tmp_path / "replay_logs"))
    with pytest.raises(ds.DatasetError) as err:
        ds.load_dqn_replay_dataset(**kwargs)
    message = str(err.value)
    assert "\n" not in message and message.startswith(f"{flag}: ") and err.value.flag == flag
    assert err.match(pattern)
    assert isinstance(err.value, ValueError)
    if kind in HEADER_ERRORS:  # found without reading the data
        with pytest.raises(ds.DatasetError, match=f"^{flag}: "):
            ds.validate_dataset_dir(**kwargs)
    else:  # headers intact: the cheap check passes, the load fails
        assert ds.validate_dataset_dir(**kwargs) == [0]


class CountingReader:
    """Wraps a gzip stream and counts the decompressed bytes handed out."""

    def __init__(self, fp, counter: dict, key: str) -> None:
        self.fp, self.counter, self.key = fp, counter, key

    def read(self, n=-1):
        data = self.fp.read(n)
        self.counter[self.key] = self.counter.get(self.key, 0) + len(data)
        return data

    def readinto(self, buffer):
        got = self.fp.readinto(buffer)
        self.counter[self.key] = self.counter.get(self.key, 0) + got
        return got

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.fp.close()


def test_streaming_reads_only_the_needed_rows(ds, tmp_path, monkeypatch):
    n = 10_000
    obs = np.zeros((n, 84, 84), np.uint8)
    obs[:, 0, :] = (np.arange(n) % 251)[:, None]  # cheap to compress, every row distinct at its first line
    write_checkpoint(tmp_path, 0, obs, actions=np.arange(n) % 6)
    counter: dict[str, int] = {}
    real_open = ds._dqn_replay_open
    monkeypatch.setattr(ds, "_dqn_replay_open", lambda path: CountingReader(real_open(path), counter, Path(path).name))
    data = ds.load_dqn_replay_dataset(str(tmp_path), transitions_per_checkpoint=100)
    assert data.observations.shape == (100, 84, 84)
    assert (data.observations[:, 0, 0] == np.arange(100)).all()
    # Everything read is the .npy header (at most 256 bytes here) plus exactly 100 rows.
    assert 100 * FRAME < counter[OBS] <= 2 * 256 + 100 * FRAME
    assert counter["$store$_action_ckpt.0.gz"] <= 2 * 256 + 100 * 4


def test_checkpoint_with_corrupt_tail_still_loads_its_head(ds, tmp_path):
    n = 2_000  # 14 MB of frames: the corrupt second half is megabytes away from the 100 rows read
    rng = np.random.default_rng(1)
    obs = rng.integers(0, 256, size=(n, 84, 84), dtype=np.uint8)  # incompressible: the tail is far from the head
    write_checkpoint(tmp_path, 0, obs)
    _corrupt_gzip(tmp_path / OBS)
    data = ds.load_dqn_replay_dataset(str(tmp_path), transitions_per_checkpoint=100)
    assert np.array_equal(data.observations, obs[:100])
    with pytest.raises(ds.DatasetError, match=r"^--dataset-dir: .*corrupt or truncated gzip stream"):
        ds.load_dqn_replay_dataset(str(tmp_path), transitions_per_checkpoint=n)


# ------------------------------------------------------------------------------------------------ writer


def _expected_stack(frames_by_step: list[np.ndarray], step: int, first_loaded_step: int) -> np.ndarray:
    """Stack ending at `step` of one episode: frames of the episode that were loaded, zeros elsewhere."""
    out = np.zeros((4, 84, 84), np.uint8)
    for k in range(4):
        s = step - 3 + k
        if s >= max(0, first_loaded_step):
            out[k] = frames_by_step[s]
    return out


@pytest.mark.parametrize("truncation", ["bootstrap", "terminal"])
def test_writer_round_trip(loader, writer, tmp_path, truncation):
    # Breakout, seed 2, 200-step limit: one game over and two time-limit truncations in 2 x 300 entries.
    capacity = 300
    args = writer.Args(
        env_id="Breakout-v5",
        output_dir=str(tmp_path),
        num_checkpoints=2,
        transitions_per_checkpoint=capacity,
        seed=2,
        max_episode_steps=200,
        truncation=truncation,
    )
    records: list[dict] = []
    summary = writer.write_dataset(args, on_transition=records.append)
    assert summary["episodes"] >= 2 and 1 <= summary["truncated_episodes"] < summary["episodes"]
    folder = tmp_path / "replay_logs"
    names = sorted(os.listdir(folder))
    stems = [
        "$store$_action",
        "$store$_observation",
        "$store$_reward",
        "$store$_terminal",
        "add_count",
        "invalid_range",
    ]
    assert names == sorted(f"{s}_ckpt.{k}.gz" for s in stems for k in (0, 1))
    for k in (0, 1):
        with gzip.open(folder / f"add_count_ckpt.{k}.gz") as f:
            assert int(np.load(io.BytesIO(f.read()))) == (k + 1) * capacity
        with gzip.open(folder / f"invalid_range_ckpt.{k}.gz") as f:
            assert np.load(io.BytesIO(f.read())).tolist() == [capacity - 1, 0, 1, 2, 3]
    assert json.loads((tmp_path / "dataset_info.json").read_text())["entries"] == 2 * capacity

    data = loader.load_dqn_replay_dataset(str(tmp_path), transitions_per_checkpoint=capacity, num_actions=4)
    assert len(data.actions) == 2 * capacity
    # Split the recorded transitions into episodes (the frame of each step, and which entry stored it).
    episodes: list[list[dict]] = [[]]
    for rec in records:
        episodes[-1].append(rec)
        if rec["terminated"] or rec["truncated"]:
            episodes.append([])
    expected_valid = set()
    for episode in episodes:
        frames_by_step = [r["observation"][-1] for r in episode]
        for step, rec in enumerate(episode):
            i = rec["index"]
            slice_start = (i // capacity) * capacity
            # An episode's steps sit in consecutive entries: the steps before the slice start were not loaded.
            first_loaded = max(0, step - (i - slice_start))
            assert (
                data.actions[i] == rec["action"]
                and data.rewards[i] == np.clip(rec["raw_reward"], -1, 1) == rec["reward"]
            )
            assert data.observations[i].tobytes() == rec["observation"][-1].tobytes()
            stored_terminal = rec["terminated"] or (rec["truncated"] and truncation == "terminal")
            assert data.terminals[i] == stored_terminal
            state = loader.rebuild_frame_stacks(data.observations, data.episode_starts, np.array([i]))[0]
            assert np.array_equal(state, _expected_stack(frames_by_step, step, first_loaded))
            # envpool's own stack agrees wherever the rebuilt one is not zero-filled (envpool repeats the reset frame).
            for k in range(4):
                if step - 3 + k >= max(0, first_loaded):
                    assert np.array_equal(state[k], rec["observation"][k])
            has_next = stored_terminal or (i + 1) % capacity != 0
            if has_next:
                expected_valid.add(i)
            if has_next and not stored_terminal:
                nxt = loader.dqn_replay_batch(data, np.array([i]))["next_observations"][0]
                frames_next = [*frames_by_step, rec["next_observation"][-1]]
                assert np.array_equal(nxt, _expected_stack(frames_next, step + 1, first_loaded))
                if rec["truncated"]:  # bootstraps from the true final frame, not a reset frame
                    assert np.array_equal(nxt[-1], rec["next_observation"][-1])
    # Exactly the recorded transitions are valid: no padding, observation-only entry or autoreset step slipped in.
    assert set(data.valid_indices.tolist()) == expected_valid
    pads = (data.actions == 0) & ~data.observations.reshape(len(data.actions), -1).any(axis=1)
    assert 3 <= int(pads.sum()) <= 3 * (summary["episodes"] + 1)  # Dopamine's padding, never a valid transition
    if truncation == "bootstrap":
        assert int((data.actions == -1).sum()) == summary["truncated_episodes"]
    else:
        assert int((data.actions < 0).sum()) == 0


def test_writer_model_policy(writer, tmp_path):
    import flax.linen as nn
    import flax.serialization
    import jax
    import jax.numpy as jnp

    class QNetwork(nn.Module):  # the layout the scripts save
        action_dim: int
        hidden: int

        @nn.compact
        def __call__(self, x):
            x = x.astype(jnp.float32) / 255.0
            x = nn.relu(nn.Conv(32, (8, 8), (4, 4))(x))
            x = nn.relu(nn.Conv(64, (4, 4), (2, 2))(x))
            x = nn.relu(nn.Conv(64, (3, 3), (1, 1))(x))
            x = nn.relu(nn.Dense(self.hidden)(x.reshape((x.shape[0], -1))))
            return nn.Dense(self.action_dim)(x)

    net = QNetwork(6, 32)
    params = net.init(jax.random.PRNGKey(0), np.zeros((1, 84, 84, 4), np.uint8))
    model = tmp_path / "dqn.cleanrl_model"
    model.write_bytes(flax.serialization.to_bytes(params))
    records: list[dict] = []
    args = writer.Args(
        env_id="Pong-v5",
        output_dir=str(tmp_path / "ds"),
        transitions_per_checkpoint=40,
        policy="model",
        model_path=str(model),
        epsilon=0.0,
        network_size="small",
    )
    writer.write_dataset(args, on_transition=records.append)
    greedy = [int(np.argmax(net.apply(params, r["observation"][None].transpose(0, 2, 3, 1))[0])) for r in records]
    assert [r["action"] for r in records] == greedy
    bad = writer.Args(**{**vars(args), "network_size": "medium", "output_dir": str(tmp_path / "ds2")})
    with pytest.raises(writer.UsageError, match=r"^--model-path: .*--network-size medium"):
        writer.write_dataset(bad)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--env-id", "NoSuchGame-v5"], "error: --env-id: NoSuchGame-v5 is not an envpool Atari id"),
        (["--env-id", "CartPole-v1"], "error: --env-id: CartPole-v1 is not an envpool Atari id"),
        (["--num-checkpoints", "0"], "error: --num-checkpoints must be at least 1"),
        (["--transitions-per-checkpoint", "3"], "error: --transitions-per-checkpoint must be at least 4"),
        (["--epsilon", "1.5"], "error: --epsilon must lie in [0, 1]"),
        (["--policy", "model"], "error: --model-path: None is not a file"),
    ],
)
def test_writer_cli_errors(writer, tmp_path, capsys, argv, message):
    assert writer.main([*argv, "--output-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(message) and err.count("\n") == 1
    assert not (tmp_path / "replay_logs").exists()


def test_writer_refuses_to_overwrite(writer, tmp_path, capsys):
    write_checkpoint(tmp_path / "replay_logs", 0, frames([1, 2]))
    assert writer.main(["--output-dir", str(tmp_path)]) == 2
    assert "already holds checkpoint files" in capsys.readouterr().err
