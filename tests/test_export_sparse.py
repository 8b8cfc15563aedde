"""tools/export_sparse.py: the sparse `.npz` equals the scripts' JAX networks, its file shrinks with sparsity, the
forward pass runs without JAX (and without SciPy), the CLI reports user mistakes in one line, and --benchmark prints
its tables."""

from __future__ import annotations

import importlib
import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import export_sparse
import flax
import jax
import numpy as np
import pytest
import scipy.sparse

ROOT = Path(__file__).resolve().parents[1]
TOOL = ROOT / "tools" / "export_sparse.py"

atari = importlib.import_module("eaudedqn_atari_jax")
classic = importlib.import_module("polyprune_dqn_jax")
sac = importlib.import_module("eaudesac_mujoco_jax")

BACKENDS = ["scipy", "numpy", "dense"]


def pruned(module, params, sparsity: float, distribution: str = "erk"):
    """The scripts' own magnitude pruning: pruned weights are exact zeros, as in a saved model."""
    if sparsity == 0:
        return params
    return module.apply_masks(params, module.magnitude_masks(params, sparsity, distribution))


def make_run(tmp_path: Path, script: str, model, size: str, name: str = "run", exp_name: str | None = None) -> Path:
    """A run folder as the scripts write it with --save-model: config.json and `<exp_name>.cleanrl_model`."""
    run_dir = tmp_path / name
    run_dir.mkdir()
    exp_name = exp_name or script[: -len(".py")]
    args = {"exp_name": exp_name, "seed": 1, "env_id": "Test-v0", "network_size": size, "save_model": True}
    (run_dir / "config.json").write_text(json.dumps({"args": args, "script": script, "versions": {}}))
    (run_dir / f"{exp_name}.cleanrl_model").write_bytes(flax.serialization.to_bytes(model))
    return run_dir


def atari_params(size: str = "small", sparsity: float = 0.9, seed: int = 0, num_actions: int = 6):
    network = atari.QNetwork(action_dim=num_actions, head_width=atari.HEAD_WIDTHS[size])
    params = network.init(jax.random.PRNGKey(seed), np.zeros((1, 4, 84, 84), np.uint8))
    # biases are zero at init: random ones make the test see a bias applied at the wrong place
    params = jax.tree.map(
        lambda x: x + 0.05 * jax.random.normal(jax.random.PRNGKey(7), x.shape) if x.ndim == 1 else x, params
    )
    return network, pruned(atari, params, sparsity)


def classic_params(size: str = "small", sparsity: float = 0.8, obs_dim: int = 4, num_actions: int = 2, seed: int = 0):
    network = classic.QNetwork(action_dim=num_actions, hidden_width=classic.HIDDEN_WIDTHS[size])
    params = network.init(jax.random.PRNGKey(seed), np.zeros((1, obs_dim), np.float32))
    params = jax.tree.map(lambda x: x + 0.1 if x.ndim == 1 else x, params)
    return network, pruned(classic, params, sparsity)


# ---------------------------------------------------------------------------------------------------------------------
# Format: the documented arrays, the CSR arrays rebuild the kernels, small index dtypes
# ---------------------------------------------------------------------------------------------------------------------


def test_atari_file_layout_rebuilds_every_kernel(tmp_path: Path) -> None:
    _, params = atari_params("small", 0.9)
    path, meta = export_sparse.export_run(str(make_run(tmp_path, "eaudedqn_atari_jax.py", params, "small")))
    assert path == tmp_path / "run" / "eaudedqn_atari_jax.sparse.npz"
    with np.load(path, allow_pickle=False) as file:  # NumPy alone reads it (no pickled objects)
        arrays = {name: file[name] for name in file.files}
    names = ["Conv_0", "Conv_1", "Conv_2", "Dense_0", "Dense_1"]
    per_layer = {"kernel_data", "kernel_indices", "kernel_indptr", "kernel_shape", "bias"}
    assert set(arrays) == {"meta"} | {f"layer{i}/{key}" for i in range(5) for key in per_layer}
    for i, name in enumerate(names):
        kernel = np.asarray(params["params"][name]["kernel"])
        shape = tuple(arrays[f"layer{i}/kernel_shape"])
        # the documented layout: a (KH, KW, C_in, C_out) kernel reshaped in C order to (KH * KW * C_in, C_out)
        assert shape == (int(np.prod(kernel.shape[:-1])), kernel.shape[-1])
        csr = scipy.sparse.csr_array(
            (arrays[f"layer{i}/kernel_data"], arrays[f"layer{i}/kernel_indices"], arrays[f"layer{i}/kernel_indptr"]),
            shape=shape,
        )
        np.testing.assert_array_equal(csr.toarray(), kernel.reshape(shape))
        assert csr.nnz == np.count_nonzero(kernel)  # pruned zeros are not stored
        np.testing.assert_array_equal(arrays[f"layer{i}/bias"], params["params"][name]["bias"])
        assert arrays[f"layer{i}/kernel_data"].dtype == np.float32
    # column indices: 32 / 64 output channels and the 32-wide head fit in 1 byte, 6 actions too
    assert all(arrays[f"layer{i}/kernel_indices"].dtype == np.uint8 for i in range(5))
    # indptr holds counts up to nnz: 1 byte is enough only for tiny layers
    assert arrays["layer3/kernel_indptr"].dtype == np.uint16  # 7744 x 32 at ERK density: ~20k non-zeros
    assert meta["script"] == "eaudedqn_atari_jax.py" and meta["network_size"] == "small"
    assert meta["sparsity"]["q"] == pytest.approx(atari.measured_sparsity(params), abs=1e-9)
    stored = json.loads(str(arrays["meta"]))
    assert [layer["type"] for layer in stored["networks"][0]["layers"]] == ["conv"] * 3 + ["dense"] * 2
    assert [layer["activation"] for layer in stored["networks"][0]["layers"]] == ["relu"] * 4 + ["linear"]
    assert [layer["strides"] for layer in stored["networks"][0]["layers"][:3]] == [[4, 4], [2, 2], [1, 1]]
    assert stored["networks"][0]["inputs"][0]["shape"] == [None, 4, 84, 84]


def test_smallest_index_dtypes() -> None:
    assert export_sparse.smallest_uint(255) == np.uint8
    assert export_sparse.smallest_uint(256) == np.uint16
    assert export_sparse.smallest_uint(65_535) == np.uint16
    assert export_sparse.smallest_uint(65_536) == np.uint32
    arrays = export_sparse.csr_arrays(np.zeros((3, 300), np.float32))
    assert arrays["kernel_indices"].dtype == np.uint16 and arrays["kernel_data"].size == 0
    np.testing.assert_array_equal(arrays["kernel_indptr"], [0, 0, 0, 0])


# ---------------------------------------------------------------------------------------------------------------------
# Forward pass equals the JAX networks (TOLERANCE: rtol 1e-4, atol 1e-5) on random inputs, every backend
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("sparsity", [0.0, 0.95])
def test_atari_q_values_and_actions_match_jax(tmp_path: Path, sparsity: float) -> None:
    network, params = atari_params("small", sparsity, seed=3)
    path, _ = export_sparse.export_run(str(make_run(tmp_path, "polyprune_cql_atari_jax.py", params, "small")))
    rng = np.random.default_rng(1)
    frames = rng.integers(0, 256, (5, 4, 84, 84), dtype=np.uint8)
    frames[0, :2] = 0  # zero-filled frames before an episode start, as the scripts feed them
    want = np.asarray(network.apply(params, frames))
    for backend in BACKENDS:
        policy = export_sparse.SparsePolicy(path, backend=backend)
        got = policy.q_values(frames)
        assert got.dtype == np.float32 and got.shape == (5, 6)
        np.testing.assert_allclose(got, want, **export_sparse.TOLERANCE, err_msg=backend)
        np.testing.assert_array_equal(policy.act(frames), np.argmax(want, axis=1))
        np.testing.assert_allclose(policy.q_values(frames[2:3]), want[2:3], **export_sparse.TOLERANCE)  # batch 1


def test_conv_patches_match_xla_same_padding() -> None:
    """The im2col of the NumPy forward pass against lax.conv with SAME padding, for odd and even sizes."""
    rng = np.random.default_rng(0)
    for size, k, stride in [(84, 8, 4), (21, 4, 2), (11, 3, 1), (10, 3, 2)]:
        x = rng.normal(size=(2, size, size, 3)).astype(np.float32)
        w = rng.normal(size=(k, k, 3, 5)).astype(np.float32)
        want = jax.lax.conv_general_dilated(x, w, (stride, stride), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
        patches = export_sparse.conv_patches(x.transpose(3, 0, 1, 2), (k, k), (stride, stride))  # feature-major
        rows, batch, oh, ow = patches.shape
        got = (w.reshape(-1, 5).T @ patches.reshape(rows, -1)).reshape(5, batch, oh, ow).transpose(1, 2, 3, 0)
        np.testing.assert_allclose(got, np.asarray(want), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("script", ["eaudedqn_jax.py", "polyprune_dqn_jax.py"])
def test_classic_q_values_match_jax(tmp_path: Path, script: str) -> None:
    network, params = classic_params("medium", 0.9, obs_dim=6, num_actions=3)
    path, meta = export_sparse.export_run(str(make_run(tmp_path, script, params, "medium")))
    assert meta["sparsity"]["q"] == pytest.approx(0.9, abs=0.01)
    obs = np.random.default_rng(2).normal(size=(7, 6)).astype(np.float32) * 3
    want = np.asarray(network.apply(params, obs))
    for backend in BACKENDS:
        policy = export_sparse.SparsePolicy(path, backend=backend)
        np.testing.assert_allclose(policy.q_values(obs), want, **export_sparse.TOLERANCE, err_msg=backend)
        np.testing.assert_array_equal(policy.act(obs), np.argmax(want, axis=1))


def sac_model(obs_dim: int = 5, action_dim: int = 3, size: str = "small"):
    actor = sac.Actor(action_dim=action_dim)
    critic = sac.Critic(width=sac.CRITIC_WIDTHS[size])
    actor_params = actor.init(jax.random.PRNGKey(0), np.zeros((1, obs_dim), np.float32))
    # a large log_std bias on action 0 checks the clip to LOG_STD_MAX; a large mean keeps tanh near saturation
    actor_params["params"]["Dense_3"]["bias"] = actor_params["params"]["Dense_3"]["bias"].at[0].set(5.0)
    actor_params["params"]["Dense_2"]["bias"] = actor_params["params"]["Dense_2"]["bias"] + 0.3
    critics = []
    for k, sparsity in enumerate((0.9, 0.5)):
        params = critic.init(jax.random.PRNGKey(1 + k), np.zeros((1, obs_dim), np.float32), np.zeros((1, action_dim)))
        critics.append(pruned(sac, params, sparsity))
    return actor, critic, {"actor": pruned(sac, actor_params, 0.7), "critics": critics}


@pytest.mark.parametrize("script", ["eaudesac_mujoco_jax.py", "polyprune_sac_mujoco_jax.py"])
def test_sac_actor_and_critics_match_jax(tmp_path: Path, script: str) -> None:
    actor, critic, model = sac_model()
    path, meta = export_sparse.export_run(str(make_run(tmp_path, script, model, "small")))
    assert meta["sparsity"]["actor"] == pytest.approx(0.7, abs=0.01)
    assert meta["sparsity"]["critic0"] == pytest.approx(0.9, abs=0.01)
    assert meta["sparsity"]["critic1"] == pytest.approx(0.5, abs=0.01)
    with np.load(path) as file:
        assert {"actor/layer3/kernel_data", "critic0/layer2/bias", "critic1/layer0/kernel_indptr"} <= set(file.files)
    rng = np.random.default_rng(3)
    obs = rng.normal(size=(6, 5)).astype(np.float32)
    actions = rng.uniform(-1, 1, (6, 3)).astype(np.float32)
    mean, log_std = (np.asarray(x) for x in actor.apply(model["actor"], obs))
    assert (log_std[:, 0] == sac.LOG_STD_MAX).all()  # the clip is exercised
    for backend in BACKENDS:
        policy = export_sparse.SparsePolicy(path, backend=backend)
        got_mean, got_log_std = policy.actor(obs)
        np.testing.assert_allclose(got_mean, mean, **export_sparse.TOLERANCE)
        np.testing.assert_allclose(got_log_std, log_std, **export_sparse.TOLERANCE)
        np.testing.assert_allclose(policy.act(obs), np.tanh(mean), **export_sparse.TOLERANCE)
        for k in range(2):
            want = np.asarray(critic.apply(model["critics"][k], obs, actions))
            np.testing.assert_allclose(policy.critic(obs, actions, k), want, **export_sparse.TOLERANCE)
        with pytest.raises(ValueError, match="not 'q'"):
            policy.q_values(obs)
        with pytest.raises(ValueError, match=r"observations: expected shape \(batch, 5\)"):
            policy.act(obs[:, :4])


def test_forward_pass_needs_neither_jax_nor_scipy(tmp_path: Path) -> None:
    """A deployment machine with NumPy only: JAX, Flax and SciPy cannot be imported, the auto backend is NumPy's."""
    network, params = classic_params("small", 0.8)
    path, _ = export_sparse.export_run(str(make_run(tmp_path, "eaudedqn_jax.py", params, "small")))
    obs = np.random.default_rng(4).normal(size=(3, 4)).astype(np.float32)
    np.save(tmp_path / "obs.npy", obs)
    code = f"""
import sys
for name in ("jax", "jaxlib", "flax", "scipy", "scipy.sparse"):
    sys.modules[name] = None  # any import of them fails
sys.path.insert(0, {str(TOOL.parent)!r})
import numpy as np
from export_sparse import SparsePolicy
policy = SparsePolicy({str(path)!r})
print(policy.backend, np.load({str(tmp_path / "obs.npy")!r}).tolist() and policy.q_values(np.load({str(tmp_path / "obs.npy")!r})).tolist())
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    backend, values = proc.stdout.split(" ", 1)
    assert backend == "numpy"
    np.testing.assert_allclose(np.array(json.loads(values)), network.apply(params, obs), **export_sparse.TOLERANCE)


def test_numpy_kernel_handles_empty_rows_columns_and_chunks() -> None:
    rng = np.random.default_rng(5)
    w = rng.normal(size=(40, 30)).astype(np.float32) * (rng.random((40, 30)) < 0.1)
    w[:, 3] = 0  # an output without weights
    w[7] = 0  # an input without weights
    arrays = export_sparse.csr_arrays(w)
    args = (arrays["kernel_data"], arrays["kernel_indices"], arrays["kernel_indptr"], w.shape)
    h = rng.normal(size=(50_000, 40)).astype(np.float32)  # more rows than one chunk of the NumPy product
    for backend in BACKENDS:
        got = export_sparse.Kernel(*args, backend)(np.ascontiguousarray(h.T))  # feature-major: (fan_in, N)
        np.testing.assert_allclose(got, (h @ w).T, rtol=1e-5, atol=1e-5)
    empty = export_sparse.csr_arrays(np.zeros((4, 3), np.float32))
    kernel = export_sparse.Kernel(
        empty["kernel_data"], empty["kernel_indices"], empty["kernel_indptr"], (4, 3), "numpy"
    )
    np.testing.assert_array_equal(kernel(h[:2, :4].T), np.zeros((3, 2)))


# ---------------------------------------------------------------------------------------------------------------------
# File size: about (4 + index bytes) per non-zero, so it shrinks in proportion to the density
# ---------------------------------------------------------------------------------------------------------------------


def test_file_size_shrinks_with_sparsity(tmp_path: Path) -> None:
    sizes, dense_bytes = {}, None
    for sparsity in (0.0, 0.5, 0.9, 0.99):
        _, params = classic_params("large", sparsity, seed=1)  # 4 -> 1024 -> 1024 -> 2: 1.06 M weights
        run = make_run(tmp_path, "polyprune_dqn_jax.py", params, "large", name=f"s{sparsity}")
        path, _ = export_sparse.export_run(str(run), verify=False)
        dense_bytes = (run / "polyprune_dqn_jax.cleanrl_model").stat().st_size
        nonzeros = sum(np.count_nonzero(w) for w in jax.tree.leaves(params) if w.ndim > 1)
        # float32 value + uint16 column index per non-zero; indptr (uint32 once nnz > 65535), biases, headers
        payload = 6 * nonzeros + 4 * (4 + 1024 + 1024 + 3) + 4 * (1024 + 1024 + 2)
        sizes[sparsity] = path.stat().st_size
        assert payload <= sizes[sparsity] <= payload + 5_000, sparsity
    assert sizes[0.0] > dense_bytes  # dense: CSR costs 6 bytes per weight, the dense file 4
    assert sizes[0.5] < 0.80 * dense_bytes  # 0.5 x 6 / 4 = 0.75
    assert sizes[0.9] < 0.16 * dense_bytes  # 0.1 x 6 / 4 = 0.15
    assert sizes[0.99] < 0.02 * dense_bytes
    assert sizes[0.0] > sizes[0.5] > sizes[0.9] > sizes[0.99]


# ---------------------------------------------------------------------------------------------------------------------
# Command line: one `error:` line and exit code 2 for user mistakes; export; --benchmark tables
# ---------------------------------------------------------------------------------------------------------------------


def run_tool(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(TOOL), *argv], capture_output=True, text=True, timeout=120)


def test_cli_errors(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    no_model = make_run(tmp_path, "eaudedqn_jax.py", classic_params()[1], "small", name="no_model")
    (no_model / "eaudedqn_jax.cleanrl_model").unlink()
    unknown = make_run(tmp_path, "dqn_atari_jax.py", classic_params()[1], "small", name="unknown", exp_name="x")
    broken = make_run(tmp_path, "eaudedqn_jax.py", classic_params()[1], "small", name="broken")
    (broken / "config.json").write_text("{not json")
    cases = [
        ([str(empty)], "no config.json"),
        ([str(tmp_path / "missing")], "not a folder"),
        ([str(no_model)], "no eaudedqn_jax.cleanrl_model (run the script with --save-model)"),
        ([str(unknown)], "'dqn_atari_jax.py', which has no export"),
        ([str(broken)], "unreadable config.json"),
        ([], "give at least one RUN_DIR"),
        (["--benchmark"], "give at least one RUN_DIR or --synthetic"),
        (["--synthetic", str(empty)], "--synthetic: only with --benchmark"),
        (["--benchmark", "--synthetic", "--sparsities", "0.5,1.2"], "each sparsity must be in [0, 1)"),
        (["--benchmark", "--synthetic", "--sizes", "huge"], "sizes are small, medium, large"),
        (["--benchmark", "--sizes", "small", str(empty)], "--sizes: only with --synthetic"),
        (["--benchmark", "--synthetic", "--batch-sizes", "0"], "batch sizes must be positive"),
    ]
    for argv, message in cases:
        with pytest.raises(SystemExit) as exit_:
            export_sparse.main(argv)
        out, err = capsys.readouterr()
        lines = err.strip().splitlines()
        assert exit_.value.code == 2 and out == "", (argv, err)
        assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], (argv, err)
    for argv, message in cases[:1] + cases[-1:]:  # the real entry point: no traceback, exit code 2
        proc = run_tool(*argv)
        assert proc.returncode == 2 and proc.stdout == ""
        assert proc.stderr.startswith("error: ") and message in proc.stderr and len(proc.stderr.splitlines()) == 1


def test_mismatched_model_is_a_user_error(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    _, params = classic_params("small", 0.5)
    run = make_run(tmp_path, "eaudedqn_jax.py", params, "medium")  # config says medium, the params are small
    with pytest.raises(SystemExit) as exit_:
        export_sparse.main([str(run)])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: RUN_DIR") and "does not hold the eaudedqn_jax.py network of size 'medium'" in err
    assert "(64,)" in err and "(256,)" in err
    (run / "eaudedqn_jax.cleanrl_model").write_bytes(b"\x93not msgpack")  # a truncated or foreign file
    with pytest.raises(SystemExit) as exit_:
        export_sparse.main([str(run)])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "does not hold the eaudedqn_jax.py network" in err


def test_cli_exports_and_benchmarks_run_folders(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    runs = [
        make_run(tmp_path, "eaudedqn_jax.py", classic_params("small", 0.5)[1], "small", name="classic"),
        make_run(tmp_path, "eaudesac_mujoco_jax.py", sac_model()[2], "small", name="sac"),
    ]
    export_sparse.main([str(r) for r in runs])
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 2 and out[0].startswith(f"wrote {runs[0] / 'eaudedqn_jax.sparse.npz'}")
    assert "sparsity actor 0.7" in out[1] and "critic0 0.9" in out[1] and "max |NumPy - JAX|" in out[1]

    (runs[0] / "eaudedqn_jax.sparse.npz").unlink()
    export_sparse.main(["--benchmark", "--min-time", "0", "--batch-sizes", "1,4", *map(str, runs)])
    table = capsys.readouterr().out
    assert not (runs[0] / "eaudedqn_jax.sparse.npz").exists()  # benchmarking leaves the run folders as they were
    assert f"NumPy {np.__version__}" in table and f"SciPy {scipy.__version__}" in table
    rows = [line for line in table.splitlines() if line.startswith("| eaude")]
    sizes = [r for r in rows if r.count("|") == 6]
    latency = [r for r in rows if r.count("|") == 10]
    assert len(sizes) == 2 and len(latency) == 3  # classic q; SAC actor and critic0
    # a 4.5k-weight MLP: per-array headers and ERK's dense first and last layers make the sparse file larger
    assert re.search(r"\| eaudedqn_jax small Test-v0 seed 1 \| 0\.500 \| [\d.]+ kB \| [\d.]+ kB \| 1\.\d+ \|", sizes[0])
    assert "| eaudesac_mujoco_jax small Test-v0 seed 1 | actor | 0.700 |" in latency[1]
    assert all(re.search(r"\| [\d.]+x \|$", r) for r in latency)


def test_cli_benchmark_synthetic_per_layer(capsys: pytest.CaptureFixture) -> None:
    export_sparse.main(
        ["--benchmark", "--synthetic", "--sizes", "small", "--sparsities", "0.5,0.99", "--min-time", "0",
         "--batch-sizes", "1", "--per-layer", "--backend", "numpy"]
    )  # fmt: skip
    table = capsys.readouterr().out
    assert "NumPy CSR products" in table
    size_rows = re.findall(
        r"^\| Atari small \(head 32\), erk mask (0\.5|0\.99) \| (0\.\d+) \| .* \| (0\.\d+) \|$", table, re.M
    )
    assert [row[0] for row in size_rows] == ["0.5", "0.99"]
    assert float(size_rows[0][1]) == pytest.approx(0.5, abs=0.002) and float(size_rows[1][1]) == pytest.approx(
        0.99, abs=0.002
    )
    # 5 bytes per non-zero (uint8 columns) -> 0.625 at 0.5 and 0.0125 at 0.99; at 0.99 the row pointer of the
    # 7744-row layer (2 bytes a row) and the array headers add about 2.5% of the dense file
    assert float(size_rows[1][2]) < 0.05 and 0.6 < float(size_rows[0][2]) < 0.7
    layer_rows = [line for line in table.splitlines() if re.match(r"\| Atari small .* \| q \| \d \|", line)]
    assert len(layer_rows) == 10  # 5 layers x 2 sparsities
    assert "| conv 256 x 32 |" in layer_rows[0] and "| dense 7744 x 32 |" in layer_rows[3]


# ---------------------------------------------------------------------------------------------------------------------
# A real run: the saved model of a short PolyPruneDQN CartPole run (pruned to 0.9) exports and matches
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_real_saved_model_exports(tmp_path: Path) -> None:
    argv = [
        sys.executable, str(ROOT / "polyprune_dqn_jax.py"), "--total-timesteps", "2000", "--learning-starts", "500",
        "--target-network-frequency", "250", "--pruning-period", "125", "--pruning-start", "0.3", "--pruning-end",
        "0.6", "--final-sparsity", "0.9", "--network-size", "small", "--save-model", "--eval-episodes", "1",
        "--checkpoint-interval", "0", "--output-dir", str(tmp_path / "runs"),
    ]  # fmt: skip
    proc = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (run,) = (tmp_path / "runs").iterdir()
    result = run_tool(str(run))
    assert result.returncode == 0, result.stderr
    assert re.search(r"sparsity q 0\.9\d*; max \|NumPy - JAX\| ", result.stdout)
    params = flax.serialization.msgpack_restore((run / "polyprune_dqn_jax.cleanrl_model").read_bytes())
    obs = np.random.default_rng(0).normal(size=(16, 4)).astype(np.float32)
    network = classic.QNetwork(action_dim=2, hidden_width=classic.HIDDEN_WIDTHS["small"])
    policy = export_sparse.SparsePolicy(run / "polyprune_dqn_jax.sparse.npz")
    np.testing.assert_allclose(policy.q_values(obs), network.apply(params, obs), **export_sparse.TOLERANCE)
