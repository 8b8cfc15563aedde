"""Export a saved model as one sparse `.npz` that NumPy alone can run, and measure what sparsity buys at inference.

    uv run python tools/export_sparse.py runs/<run>                    # writes runs/<run>/<exp_name>.sparse.npz
    uv run python tools/export_sparse.py --benchmark runs/<run> ...    # latency and file size, dense vs sparse
    uv run python tools/export_sparse.py --benchmark --synthetic       # Atari sizes with 0.5/0.9/0.95/0.99 masks

The file format and the benchmark are described in docs/deployment.md. The forward pass (`SparsePolicy`) needs NumPy
only and uses SciPy's CSR products when SciPy is installed: copy this file next to the `.npz` and

    from export_sparse import SparsePolicy
    policy = SparsePolicy("eaudedqn_atari_jax.sparse.npz")
    actions = policy.act(observations)          # (B, 4, 84, 84) uint8 frames -> (B,) greedy actions

JAX, Flax and the training scripts are imported only to read a `.cleanrl_model` and by --benchmark.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from toolbox import Parser, cpu_model

try:  # optional: the forward pass falls back to NumPy alone
    import scipy
    import scipy.sparse
except ImportError:  # pragma: no cover - exercised by a test that hides SciPy
    scipy = None

ROOT = Path(__file__).resolve().parents[1]
FORMAT = "eaudeqn-sparse-policy"
VERSION = 1
SUFFIX = ".sparse.npz"

# script -> network family; the four Atari scripts share the Nature CNN, the two classic-control scripts the MLP
SCRIPTS = {
    "eaudedqn_atari_jax.py": "atari_q",
    "polyprune_dqn_atari_jax.py": "atari_q",
    "eaudecql_atari_jax.py": "atari_q",
    "polyprune_cql_atari_jax.py": "atari_q",
    "eaudedqn_jax.py": "mlp_q",
    "polyprune_dqn_jax.py": "mlp_q",
    "eaudesac_mujoco_jax.py": "sac",
    "polyprune_sac_mujoco_jax.py": "sac",
}
NATURE_CNN_STRIDES = (4, 2, 1)  # Flax Conv layers do not store their strides; the scripts' QNetwork uses these

# float32 accumulation in another order than XLA's: observed differences are around 1e-6 (tests/test_export_sparse.py)
TOLERANCE = {"rtol": 1e-4, "atol": 1e-5}


class UserError(Exception):
    """A mistake on the command line or a wrong folder: one `error:` line, exit code 2."""


# =====================================================================================================================
# Forward pass: NumPy only (+ SciPy's CSR product when installed)
# =====================================================================================================================


def _csr_transpose(
    data: np.ndarray, indices: np.ndarray, indptr: np.ndarray, shape: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """CSR arrays of W^T from those of W (fan_in, fan_out): the product W^T x walks each output's weights once."""
    fan_in, fan_out = shape
    rows = np.repeat(np.arange(fan_in, dtype=np.int64), np.diff(indptr.astype(np.int64)))
    order = np.argsort(indices, kind="stable")  # by column, then by row: sorted indices in each row of W^T
    indptr_t = np.zeros(fan_out + 1, dtype=np.int64)
    np.cumsum(np.bincount(indices, minlength=fan_out), out=indptr_t[1:])
    index_dtype = np.int32 if max(fan_in, data.size) < 2**31 else np.int64
    return data[order], rows[order].astype(index_dtype), indptr_t.astype(index_dtype)


class Kernel:
    """`W^T h` for one layer's kernel W (fan_in, fan_out), from its CSR arrays.

    Activations are feature-major, h of shape (fan_in, N) with one column per example (or conv output position): SciPy's
    CSR product then reads h without a transposed copy, which for the first conv layer at batch 32 would cost more than
    the sparse product itself. backend "scipy": SciPy's CSR product with W^T; "numpy": the same product with NumPy
    alone (gather, multiply, segment sums); "dense": W^T as a dense matrix (BLAS), the benchmark's reference."""

    def __init__(
        self, data: np.ndarray, indices: np.ndarray, indptr: np.ndarray, shape: tuple[int, int], backend: str
    ) -> None:
        self.shape = (int(shape[0]), int(shape[1]))
        self.nnz = int(data.size)
        self.backend = backend
        data = np.asarray(data, dtype=np.float32)
        indices, indptr = np.asarray(indices, dtype=np.int64), np.asarray(indptr, dtype=np.int64)
        if indptr.shape != (self.shape[0] + 1,) or indptr[-1] != data.size or indices.shape != data.shape:
            raise ValueError(f"inconsistent CSR arrays for a {self.shape} kernel")
        if data.size and (indices.min() < 0 or indices.max() >= self.shape[1]):
            raise ValueError(f"CSR column index out of range for a {self.shape} kernel")
        data_t, indices_t, indptr_t = _csr_transpose(data, indices, indptr, self.shape)
        if backend == "dense":
            self.dense_t = np.zeros(self.shape[::-1], dtype=np.float32)
            self.dense_t[np.repeat(np.arange(self.shape[1]), np.diff(indptr_t)), indices_t] = data_t
        elif backend == "scipy":
            if scipy is None:
                raise ImportError("backend 'scipy' needs SciPy; use backend 'numpy'")
            self.transposed = scipy.sparse.csr_array((data_t, indices_t, indptr_t), shape=self.shape[::-1])
        elif backend == "numpy":
            self.data_t, self.indices_t = data_t[:, None], indices_t
            self.rows = np.flatnonzero(np.diff(indptr_t))  # outputs with at least one weight
            self.starts = indptr_t[self.rows]
        else:
            raise ValueError(f"unknown backend {backend!r} (dense, scipy, numpy)")

    def __call__(self, h: np.ndarray) -> np.ndarray:
        if self.backend == "dense":
            return self.dense_t @ h
        if self.backend == "scipy":
            if h.shape[1] == 1:  # matrix-vector product: less overhead than the multi-vector one
                return (self.transposed @ h[:, 0])[:, None]
            return self.transposed @ h
        out = np.zeros((self.shape[1], h.shape[1]), dtype=np.float32)
        if self.rows.size == 0:
            return out
        chunk = max(1, (1 << 22) // self.nnz)  # bounds the (nnz, columns) product matrix to 16 MB
        for lo in range(0, h.shape[1], chunk):
            products = h[self.indices_t, lo : lo + chunk] * self.data_t
            out[self.rows, lo : lo + chunk] = np.add.reduceat(products, self.starts, axis=0)
        return out


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int, int]:
    """Flax/XLA 'SAME': output ceil(size / stride); the padding is split with the extra row at the end."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return out, total // 2, total - total // 2


def conv_patches(x: np.ndarray, kernel_size: tuple[int, int], strides: tuple[int, int]) -> np.ndarray:
    """im2col in feature-major layout: (C, B, H, W) -> (KH * KW * C, B, OH, OW), each patch flattened in (kh, kw, c)
    order, the row order of the flattened kernel."""
    (kh, kw), (sh, sw) = kernel_size, strides
    oh, top, bottom = same_padding(x.shape[2], kh, sh)
    ow, left, right = same_padding(x.shape[3], kw, sw)
    x = np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)))
    windows = np.lib.stride_tricks.sliding_window_view(x, (kh, kw), axis=(2, 3))  # (C, B, H', W', KH, KW)
    windows = windows[:, :, ::sh, ::sw][:, :, :oh, :ow].transpose(4, 5, 0, 1, 2, 3)
    return windows.reshape(kh * kw * x.shape[0], x.shape[1], oh, ow)


class Layer:
    """One dense or convolutional layer of a network in the file: kernel, bias, activation and where its input comes
    from (-1: the network input, else the output of that layer). Feature-major: dense activations (features, B),
    conv activations (C, B, H, W)."""

    def __init__(self, spec: dict[str, Any], kernel: Kernel, bias: np.ndarray) -> None:
        self.spec, self.kernel, self.bias = spec, kernel, np.asarray(bias, dtype=np.float32)
        self.type, self.input, self.activation = spec["type"], int(spec["input"]), spec["activation"]

    def __call__(self, h: np.ndarray) -> np.ndarray:
        if self.type == "conv":
            patches = conv_patches(h, tuple(self.spec["kernel_size"]), tuple(self.spec["strides"]))
            k, b, oh, ow = patches.shape
            y = self.kernel(patches.reshape(k, b * oh * ow)).reshape(-1, b, oh, ow)
        else:
            if h.ndim == 4:  # a conv output, flattened per example in (h, w, c) order as the Flax network does
                h = h.transpose(2, 3, 0, 1).reshape(-1, h.shape[1])
            y = self.kernel(h)
        y = y + self.bias.reshape(-1, *[1] * (y.ndim - 1))
        if self.activation == "relu":
            np.maximum(y, 0.0, out=y)
        return y


class Network:
    def __init__(self, spec: dict[str, Any], layers: list[Layer]) -> None:
        self.spec, self.layers = spec, layers
        self.name, self.outputs = spec["name"], spec["outputs"]

    def preprocess(self, *inputs: np.ndarray) -> np.ndarray:
        """The network input in feature-major layout, float32."""
        expected = self.spec["inputs"]
        if len(inputs) != len(expected):
            raise ValueError(f"network {self.name!r} takes {len(expected)} input(s): {[e['name'] for e in expected]}")
        arrays = []
        for array, want in zip(inputs, expected, strict=True):
            array = np.asarray(array)
            shape = tuple(want["shape"][1:])
            if array.ndim != len(shape) + 1 or tuple(array.shape[1:]) != shape:
                raise ValueError(
                    f"{want['name']}: expected shape (batch, {', '.join(map(str, shape))}), got {array.shape}"
                )
            arrays.append(array)
        kind = self.spec["preprocess"]
        if kind == "atari_frames":  # as the scripts' QNetwork: uint8 frames scaled to [0, 1]; (B, C, H, W) -> CBHW
            return arrays[0].transpose(1, 0, 2, 3).astype(np.float32, order="C") / np.float32(255.0)
        if kind == "concat":
            return np.concatenate([a.astype(np.float32).T for a in arrays], axis=0)
        return np.ascontiguousarray(arrays[0].astype(np.float32).T)

    def forward(self, *inputs: np.ndarray) -> list[np.ndarray]:
        """The output of every layer, in forward order (feature-major)."""
        x = self.preprocess(*inputs)
        outs: list[np.ndarray] = []
        for layer in self.layers:
            outs.append(layer(x if layer.input < 0 else outs[layer.input]))
        return outs

    def __call__(self, *inputs: np.ndarray) -> dict[str, np.ndarray]:
        """The named outputs, batch first."""
        outs = self.forward(*inputs)
        return {name: np.ascontiguousarray(outs[index].T) for name, index in self.outputs.items()}


def default_backend() -> str:
    return "scipy" if scipy is not None else "numpy"


class SparsePolicy:
    """A policy or Q-network read from a `.sparse.npz` file, run with NumPy (and SciPy when installed).

    backend: "auto" (SciPy's CSR products if SciPy is installed, else NumPy alone), "scipy", "numpy", or "dense"
    (kernels rebuilt as dense matrices). Inputs carry a leading batch axis."""

    def __init__(self, path: str | Path, backend: str = "auto") -> None:
        self.backend = default_backend() if backend == "auto" else backend
        with np.load(path, allow_pickle=False) as file:
            arrays = {name: file[name] for name in file.files}
        if "meta" not in arrays:
            raise ValueError(f"{path}: no 'meta' entry, not a {FORMAT} file")
        self.meta = json.loads(str(arrays["meta"]))
        if self.meta.get("format") != FORMAT or self.meta.get("version") != VERSION:
            raise ValueError(f"{path}: format {self.meta.get('format')!r} v{self.meta.get('version')}, not {FORMAT} v1")
        self.networks: dict[str, Network] = {}
        for spec in self.meta["networks"]:
            layers = []
            for i, layer_spec in enumerate(spec["layers"]):
                key = f"{spec['prefix']}layer{i}/"
                kernel = Kernel(
                    arrays[key + "kernel_data"],
                    arrays[key + "kernel_indices"],
                    arrays[key + "kernel_indptr"],
                    tuple(arrays[key + "kernel_shape"]),
                    self.backend,
                )
                layers.append(Layer(layer_spec, kernel, arrays[key + "bias"]))
            self.networks[spec["name"]] = Network(spec, layers)

    def q_values(self, observations: np.ndarray) -> np.ndarray:
        """(B, num_actions) Q-values of a DQN/CQL network."""
        return self._network("q")(observations)["q_values"]

    def actor(self, observations: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """SAC actor: (mean, log_std) of the Gaussian before the tanh, log_std clipped as in training."""
        out = self._network("actor")(observations)
        low, high = self.networks["actor"].spec["log_std_clip"]
        return out["mean"], np.clip(out["log_std"], low, high)

    def critic(self, observations: np.ndarray, actions: np.ndarray, index: int = 0) -> np.ndarray:
        """SAC critic `index` (0 or 1): (B,) Q(s, a) for unit actions in [-1, 1]."""
        return self._network(f"critic{index}")(observations, actions)["q_value"][:, 0]

    def act(self, observations: np.ndarray) -> np.ndarray:
        """The evaluation policy: greedy actions (B,) of a Q-network, or tanh(mean) (B, action_dim) of a SAC actor
        (unit actions: rescale them to the env's bounds as the scripts do). Epsilon-greedy is up to the caller."""
        if "q" in self.networks:
            return np.argmax(self.q_values(observations), axis=1)
        return np.tanh(self.actor(observations)[0])

    def _network(self, name: str) -> Network:
        if name not in self.networks:
            raise ValueError(f"this file holds the networks {sorted(self.networks)}, not {name!r}")
        return self.networks[name]


# =====================================================================================================================
# Export: a `.cleanrl_model` (Flax msgpack of the params, pruned weights stored as zeros) -> CSR arrays
# =====================================================================================================================


def smallest_uint(largest: int) -> type[np.unsignedinteger]:
    """The narrowest unsigned dtype holding `largest`: column indices of a 32..255-wide layer take 1 byte."""
    for dtype in (np.uint8, np.uint16, np.uint32):
        if largest <= np.iinfo(dtype).max:
            return dtype
    return np.uint64


def csr_arrays(kernel: np.ndarray) -> dict[str, np.ndarray]:
    """CSR arrays of a kernel as a (fan_in, fan_out) matrix; a conv kernel (KH, KW, C_in, C_out) is reshaped in C order
    to (KH * KW * C_in, C_out), so row (i * KW + j) * C_in + c holds the weights of input channel c at offset (i, j)."""
    matrix = np.asarray(kernel, dtype=np.float32).reshape(-1, kernel.shape[-1])
    rows, cols = np.nonzero(matrix)  # row-major: CSR order, sorted column indices in each row
    indptr = np.zeros(matrix.shape[0] + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows, minlength=matrix.shape[0]), out=indptr[1:])
    return {
        "kernel_data": matrix[rows, cols],
        "kernel_indices": cols.astype(smallest_uint(matrix.shape[1] - 1)),
        "kernel_indptr": indptr.astype(smallest_uint(rows.size)),
        "kernel_shape": np.array(matrix.shape, dtype=np.int64),
    }


ATARI_LAYOUT = (
    "(batch, 4, 84, 84) uint8: the last 4 grayscale 84 x 84 frames, oldest first, channels first (envpool's Atari "
    "observation; frames before the episode start are zeros); the network divides by 255 and moves channels last"
)
OBS_LAYOUT = "(batch, obs_dim) float32: the env's observation vector as the script saw it (no normalisation)"
ACTION_LAYOUT = "(batch, action_dim) float32: unit actions in [-1, 1], before the rescale to the env's bounds"


def _dense_spec(input_: int, activation: str) -> dict[str, Any]:
    return {"type": "dense", "input": input_, "activation": activation}


def network_specs(family: str, state: dict[str, Any]) -> list[tuple[dict[str, Any], list[dict[str, np.ndarray]]]]:
    """(meta entry, [{"kernel", "bias"} per layer]) for each network of a model state dict, layers in forward order."""
    if family == "atari_q":
        params = state["params"]
        layers, specs = [], []
        for i, stride in enumerate(NATURE_CNN_STRIDES):
            kernel = params[f"Conv_{i}"]["kernel"]
            layers.append(params[f"Conv_{i}"])
            specs.append({
                "type": "conv", "input": i - 1, "activation": "relu", "kernel_size": list(kernel.shape[:2]),
                "strides": [stride, stride], "padding": "SAME", "in_channels": int(kernel.shape[2]),
                "features": int(kernel.shape[3]),
            })  # fmt: skip
        layers += [params["Dense_0"], params["Dense_1"]]
        specs += [{**_dense_spec(2, "relu"), "flatten": "conv output (batch, h, w, c) -> (batch, h * w * c)"}]
        specs += [_dense_spec(3, "linear")]
        spec = {
            "name": "q", "prefix": "", "preprocess": "atari_frames", "outputs": {"q_values": 4},
            "inputs": [{"name": "observations", "shape": [None, 4, 84, 84], "dtype": "uint8", "layout": ATARI_LAYOUT}],
        }  # fmt: skip
        return [({**spec, "layers": specs}, layers)]
    if family == "mlp_q":
        params = state["params"]
        obs_dim = int(params["Dense_0"]["kernel"].shape[0])
        specs = [_dense_spec(-1, "relu"), _dense_spec(0, "relu"), _dense_spec(1, "linear")]
        spec = {
            "name": "q", "prefix": "", "preprocess": "float32", "outputs": {"q_values": 2},
            "inputs": [{"name": "observations", "shape": [None, obs_dim], "dtype": "float32", "layout": OBS_LAYOUT}],
            "layers": specs,
        }  # fmt: skip
        return [(spec, [params[f"Dense_{i}"] for i in range(3)])]
    if family == "sac":
        actor = state["actor"]["params"]
        obs_dim = int(actor["Dense_0"]["kernel"].shape[0])
        action_dim = int(actor["Dense_2"]["kernel"].shape[1])
        actor_spec = {
            "name": "actor", "prefix": "actor/", "preprocess": "float32", "outputs": {"mean": 2, "log_std": 3},
            "inputs": [{"name": "observations", "shape": [None, obs_dim], "dtype": "float32", "layout": OBS_LAYOUT}],
            "layers": [_dense_spec(-1, "relu"), _dense_spec(0, "relu"), _dense_spec(1, "linear"),
                       _dense_spec(1, "linear")],
            "log_std_clip": [-20.0, 2.0],
        }  # fmt: skip
        out = [(actor_spec, [actor[f"Dense_{i}"] for i in range(4)])]
        for k in range(2):
            critic = state["critics"][str(k)]["params"]
            critic_spec = {
                "name": f"critic{k}", "prefix": f"critic{k}/", "preprocess": "concat", "outputs": {"q_value": 2},
                "inputs": [{"name": "observations", "shape": [None, obs_dim], "dtype": "float32", "layout": OBS_LAYOUT},
                           {"name": "actions", "shape": [None, action_dim], "dtype": "float32",
                            "layout": ACTION_LAYOUT}],
                "layers": [_dense_spec(-1, "relu"), _dense_spec(0, "relu"), _dense_spec(1, "linear")],
            }  # fmt: skip
            out.append((critic_spec, [critic[f"Dense_{i}"] for i in range(3)]))
        return out
    raise ValueError(f"unknown network family {family!r}")


KERNEL_LAYOUT = (
    "each kernel is stored as a (fan_in, fan_out) matrix in SciPy CSR form (data, indices = column of each stored "
    "weight, indptr = start of each row in data); y = x @ W + bias. A conv kernel (KH, KW, C_in, C_out) is reshaped "
    "in C order to (KH * KW * C_in, C_out): row (i * KW + j) * C_in + c holds input channel c at kernel offset (i, j), "
    "applied to NHWC input patches with SAME padding (extra padding row/column at the bottom/right)"
)


def export_arrays(family: str, state: dict[str, Any], meta: dict[str, Any]) -> dict[str, np.ndarray]:
    """All arrays of the `.npz` file, `meta` included."""
    arrays: dict[str, np.ndarray] = {}
    networks, sparsities = [], {}
    for spec, layers in network_specs(family, state):
        zeros = total = 0
        for i, layer in enumerate(layers):
            key = f"{spec['prefix']}layer{i}/"
            kernel = np.asarray(layer["kernel"], dtype=np.float32)
            for name, array in csr_arrays(kernel).items():
                arrays[key + name] = array
            arrays[key + "bias"] = np.asarray(layer["bias"], dtype=np.float32)
            zeros, total = zeros + int((kernel == 0).sum()), total + kernel.size
        networks.append(spec)
        sparsities[spec["name"]] = zeros / total
    policy = "tanh_gaussian" if family == "sac" else "greedy_q"
    full = {
        "format": FORMAT, "version": VERSION, **meta, "family": family, "policy": policy,
        "sparsity": sparsities, "kernel_layout": KERNEL_LAYOUT, "networks": networks,
    }  # fmt: skip
    arrays["meta"] = np.array(json.dumps(full))
    return arrays


def write_npz(path: Path, arrays: dict[str, np.ndarray]) -> int:
    """Uncompressed `.npz` (random-looking float32 weights barely compress, and readers need no zlib); atomic."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as file:
        np.savez(file, **arrays)
    os.replace(tmp, path)
    return path.stat().st_size


# ---- reading a run folder


def load_script(script: str) -> Any:
    """The training script as a module (tools may import the scripts: one source for widths and networks)."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    return importlib.import_module(Path(script).stem)


def check_run_dir(run_dir: str) -> tuple[Path, dict[str, Any], Path]:
    """(folder, config.json, model path) of a run folder, before anything heavy is imported."""
    folder = Path(run_dir)
    if not folder.is_dir():
        raise UserError(f"RUN_DIR {run_dir!r}: not a folder")
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise UserError(f"RUN_DIR {run_dir!r}: no config.json (not a run folder)")
    try:
        config = json.loads(config_path.read_text())
        script, args = config["script"], config["args"]
        exp_name = args["exp_name"]
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as error:
        raise UserError(f"RUN_DIR {run_dir!r}: unreadable config.json ({type(error).__name__}: {error})") from None
    if script not in SCRIPTS:
        known = ", ".join(sorted(SCRIPTS))
        raise UserError(f"RUN_DIR {run_dir!r}: config.json names the script {script!r}, which has no export ({known})")
    model_path = folder / f"{exp_name}.cleanrl_model"
    if not model_path.is_file():
        raise UserError(f"RUN_DIR {run_dir!r}: no {model_path.name} (run the script with --save-model)")
    return folder, config, model_path


def template_state(module: Any, family: str, size: str, state: dict[str, Any]) -> dict[str, Any]:
    """Shapes of the script's own network for the dimensions found in `state` (the action count of an Atari game,
    the observation size of an env), as a state dict of ShapeDtypeStructs (nothing is initialised)."""
    import flax
    import jax

    key = jax.random.PRNGKey(0)
    if family == "atari_q":
        action_dim = state["params"]["Dense_1"]["kernel"].shape[1]
        network = module.QNetwork(action_dim=action_dim, head_width=module.HEAD_WIDTHS[size])
        return jax.eval_shape(network.init, key, np.zeros((1, 4, 84, 84), np.uint8))
    if family == "mlp_q":
        obs_dim, action_dim = (
            state["params"]["Dense_0"]["kernel"].shape[0],
            state["params"]["Dense_2"]["kernel"].shape[1],
        )
        network = module.QNetwork(action_dim=action_dim, hidden_width=module.HIDDEN_WIDTHS[size])
        return jax.eval_shape(network.init, key, np.zeros((1, obs_dim), np.float32))
    obs_dim = state["actor"]["params"]["Dense_0"]["kernel"].shape[0]
    action_dim = state["actor"]["params"]["Dense_2"]["kernel"].shape[1]
    actor = jax.eval_shape(module.Actor(action_dim=action_dim).init, key, np.zeros((1, obs_dim), np.float32))
    critic = jax.eval_shape(
        module.Critic(width=module.CRITIC_WIDTHS[size]).init,
        key,
        np.zeros((1, obs_dim), np.float32),
        np.zeros((1, action_dim), np.float32),
    )
    return flax.serialization.to_state_dict({"actor": actor, "critics": [critic, critic]})


def check_shapes(state: dict[str, Any], template: dict[str, Any]) -> None:
    import jax

    leaves, structure = jax.tree_util.tree_flatten_with_path(state)
    want_leaves, want_structure = jax.tree_util.tree_flatten_with_path(template)
    if structure != want_structure:
        raise ValueError(f"its parameter tree is not the script's network ({structure} != {want_structure})")
    for (path, leaf), (_, want) in zip(leaves, want_leaves, strict=True):
        if tuple(np.shape(leaf)) != tuple(want.shape):
            name = "/".join(str(getattr(p, "key", p)) for p in path)
            raise ValueError(f"{name} has shape {tuple(np.shape(leaf))}, the script's network {tuple(want.shape)}")


def read_run(run_dir: str) -> tuple[str, dict[str, Any], dict[str, Any], Path]:
    """(family, params state dict, meta, model path) of a run folder's `.cleanrl_model`, checked against the script's
    network of the run's --network-size."""
    import flax

    folder, config, model_path = check_run_dir(run_dir)
    script, args = config["script"], config["args"]
    family = SCRIPTS[script]
    module = load_script(script)
    size = args.get("network_size", module.Args.network_size)
    try:
        state = flax.serialization.msgpack_restore(model_path.read_bytes())
        check_shapes(state, template_state(module, family, size, state))
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise UserError(
            f"RUN_DIR {run_dir!r}: {model_path.name} does not hold the {script} network of size {size!r} ({error})"
        ) from None
    meta = {
        "script": script, "network_size": size, "env_id": args.get("env_id"), "seed": args.get("seed"),
        "exp_name": args["exp_name"], "source": f"{folder.name}/{model_path.name}",
    }  # fmt: skip
    return family, state, meta, model_path


def reference_outputs(module: Any, family: str, size: str, state: dict[str, Any], inputs: dict) -> dict[str, Any]:
    """The same outputs computed by the script's own Flax networks (JAX)."""
    if family == "atari_q":
        action_dim = state["params"]["Dense_1"]["kernel"].shape[1]
        network = module.QNetwork(action_dim=action_dim, head_width=module.HEAD_WIDTHS[size])
        return {"q_values": np.asarray(network.apply(state, inputs["observations"]))}
    if family == "mlp_q":
        action_dim = state["params"]["Dense_2"]["kernel"].shape[1]
        network = module.QNetwork(action_dim=action_dim, hidden_width=module.HIDDEN_WIDTHS[size])
        return {"q_values": np.asarray(network.apply(state, inputs["observations"]))}
    action_dim = state["actor"]["params"]["Dense_2"]["kernel"].shape[1]
    mean, log_std = module.Actor(action_dim=action_dim).apply(state["actor"], inputs["observations"])
    critic = module.Critic(width=module.CRITIC_WIDTHS[size])
    out = {"mean": np.asarray(mean), "log_std": np.asarray(log_std)}
    for k in range(2):
        out[f"q{k}"] = np.asarray(critic.apply(state["critics"][str(k)], inputs["observations"], inputs["actions"]))
    return out


def sample_inputs(meta: dict[str, Any], batch: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Random inputs for the file's networks: Atari frames in 0..255, observations N(0, 1), unit actions."""
    inputs = {}
    for spec in meta["networks"]:
        for want in spec["inputs"]:
            shape = (batch, *want["shape"][1:])
            if want["dtype"] == "uint8":
                inputs[want["name"]] = rng.integers(0, 256, shape, dtype=np.uint8)
            elif want["name"] == "actions":
                inputs[want["name"]] = rng.uniform(-1, 1, shape).astype(np.float32)
            else:
                inputs[want["name"]] = rng.normal(size=shape).astype(np.float32)
    return inputs


def policy_outputs(policy: SparsePolicy, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    if "q" in policy.networks:
        return {"q_values": policy.q_values(inputs["observations"])}
    mean, log_std = policy.actor(inputs["observations"])
    out = {"mean": mean, "log_std": log_std}
    for k in range(2):
        out[f"q{k}"] = policy.critic(inputs["observations"], inputs["actions"], k)
    return out


def verify_export(path: Path, family: str, state: dict[str, Any], meta: dict[str, Any], batch: int = 8) -> float:
    """Largest |NumPy output - JAX output| of the written file on random inputs; raises if outside TOLERANCE."""
    policy = SparsePolicy(path)
    inputs = sample_inputs(policy.meta, batch, np.random.default_rng(0))
    module = load_script(meta["script"])
    want = reference_outputs(module, family, meta["network_size"], state, inputs)
    got = policy_outputs(policy, inputs)
    for name in want:
        np.testing.assert_allclose(got[name], want[name], **TOLERANCE, err_msg=f"{path}: {name}")
    return max(float(np.max(np.abs(got[name] - want[name]))) for name in want)


def export_run(run_dir: str, directory: Path | None = None, verify: bool = True) -> tuple[Path, dict[str, Any]]:
    """Write `<exp_name>.sparse.npz` into the run folder (or `directory`); returns its path and meta."""
    family, state, meta, model_path = read_run(run_dir)
    path = (directory or model_path.parent) / (meta["exp_name"] + SUFFIX)
    arrays = export_arrays(family, state, meta)
    write_npz(path, arrays)
    full_meta = json.loads(str(arrays["meta"]))
    if verify:
        full_meta["max_abs_error"] = verify_export(path, family, state, meta)
    return path, full_meta


# =====================================================================================================================
# Benchmark: latency of one action selection and file size, dense vs sparse
# =====================================================================================================================


def median_ms(fn: Callable[[], Any], min_time: float, min_calls: int = 5) -> float:
    """Median wall time of `fn` after 2 warm-up calls, over at least `min_calls` calls and `min_time` seconds."""
    fn()
    fn()
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < min_calls or (time.perf_counter() - start < min_time and len(times) < 100_000):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1e3 * float(np.median(times))


def machine_line() -> str:
    cpu = cpu_model(platform.processor() or platform.machine())
    threads = ", ".join(f"{v}={os.environ.get(v, 'unset')}" for v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS"))
    sci = f"SciPy {scipy.__version__}" if scipy is not None else "no SciPy"
    return (
        f"{cpu}, {os.cpu_count()} logical CPUs, {platform.machine()} {platform.system()}; Python "
        f"{platform.python_version()}, NumPy {np.__version__}, {sci}; {threads}"
    )


def acting_calls(policy: SparsePolicy, inputs: dict[str, np.ndarray]) -> dict[str, Callable[[], Any]]:
    """What the benchmark times per network: action selection (greedy argmax / tanh(mean)) and, for SAC, one critic."""
    if "q" in policy.networks:
        return {"q": lambda: policy.act(inputs["observations"])}
    return {
        "actor": lambda: policy.act(inputs["observations"]),
        "critic0": lambda: policy.critic(inputs["observations"], inputs["actions"], 0),
    }


def network_inputs(network: Network, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
    return [inputs[want["name"]] for want in network.spec["inputs"]]


def benchmark_file(
    label: str, path: Path, dense_bytes: int, args: argparse.Namespace, rng: np.random.Generator
) -> dict[str, Any]:
    """File sizes, latency per network and batch size, and (with --per-layer) latency per layer."""
    sparse, dense = SparsePolicy(path, backend=args.backend), SparsePolicy(path, backend="dense")
    meta = sparse.meta
    result = {"label": label, "meta": meta, "dense_bytes": dense_bytes, "sparse_bytes": path.stat().st_size}
    nonzeros = sum(layer.kernel.nnz for net in sparse.networks.values() for layer in net.layers)
    weights = sum(int(np.prod(layer.kernel.shape)) for net in sparse.networks.values() for layer in net.layers)
    result["sparsity"] = 1.0 - nonzeros / weights
    result["latency"], result["layers"] = [], []
    for batch in args.batch_sizes:
        inputs = sample_inputs(meta, batch, rng)
        timed_sparse, timed_dense = acting_calls(sparse, inputs), acting_calls(dense, inputs)
        for name in timed_sparse:
            result["latency"].append({
                "network": name, "batch": batch, "sparsity": meta["sparsity"][name],
                "dense_ms": median_ms(timed_dense[name], args.min_time),
                "sparse_ms": median_ms(timed_sparse[name], args.min_time),
            })  # fmt: skip
            if not args.per_layer:
                continue
            outs = dense.networks[name].forward(*network_inputs(dense.networks[name], inputs))
            first = dense.networks[name].preprocess(*network_inputs(dense.networks[name], inputs))
            for i, (s_layer, d_layer) in enumerate(
                zip(sparse.networks[name].layers, dense.networks[name].layers, strict=True)
            ):
                h = first if s_layer.input < 0 else outs[s_layer.input]
                result["layers"].append({
                    "network": name, "layer": i, "type": s_layer.type, "shape": s_layer.kernel.shape,
                    "density": s_layer.kernel.nnz / np.prod(s_layer.kernel.shape), "batch": batch,
                    "dense_ms": median_ms(lambda d_layer=d_layer, h=h: d_layer(h), args.min_time),
                    "sparse_ms": median_ms(lambda s_layer=s_layer, h=h: s_layer(h), args.min_time),
                })  # fmt: skip
    return result


def synthetic_models(args: argparse.Namespace) -> list[tuple[str, dict[str, Any], dict[str, Any], int]]:
    """(label, state dict, meta, dense file bytes) of the Atari network at each --sizes and --sparsities: the
    script's own init and magnitude masks (ERK by default, as EauDe and PolyPrune prune)."""
    import flax
    import jax

    module = load_script("eaudedqn_atari_jax.py")
    models = []
    for size in args.sizes:
        network = module.QNetwork(action_dim=args.num_actions, head_width=module.HEAD_WIDTHS[size])
        params = network.init(jax.random.PRNGKey(args.seed), np.zeros((1, 4, 84, 84), np.uint8))
        dense_bytes = len(flax.serialization.to_bytes(params))
        for sparsity in args.sparsities:
            masked = module.apply_masks(params, module.magnitude_masks(params, sparsity, args.distribution))
            state = flax.serialization.to_state_dict(jax.tree.map(np.asarray, masked))
            meta = {
                "script": "eaudedqn_atari_jax.py", "network_size": size, "env_id": None, "seed": args.seed,
                "exp_name": f"synthetic_{size}_s{sparsity}", "source": f"synthetic {args.distribution} mask",
            }  # fmt: skip
            label = f"Atari {size} (head {module.HEAD_WIDTHS[size]}), {args.distribution} mask {sparsity:g}"
            models.append((label, state, meta, dense_bytes))
    return models


def human_bytes(n: int) -> str:
    for unit, scale in (("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{n} B"


def markdown_tables(results: list[dict[str, Any]], args: argparse.Namespace) -> str:
    sparse_name = {"scipy": "SciPy CSR", "numpy": "NumPy CSR"}[args.backend]
    lines = [
        "### Sparse vs dense inference",
        "",
        f"Machine: {machine_line()}.",
        "",
        f"Command: `python tools/export_sparse.py {' '.join(sys.argv[1:]) if args.argv is None else ' '.join(args.argv)}`",
        "",
        f"Dense: NumPy `x @ W` (BLAS) on the kernels rebuilt as dense matrices; sparse: {sparse_name} products "
        "(`SparsePolicy`). Latency: median wall time of one call (preprocessing, forward pass, argmax or tanh), "
        f"after 2 warm-up calls, over at least 5 calls and {args.min_time:g} s. Dense file: the `.cleanrl_model` "
        "(Flax msgpack, float32); sparse file: the exported `.npz`.",
        "",
        "| model | sparsity | dense file | sparse file | sparse / dense |",
        "|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r['label']} | {r['sparsity']:.3f} | {human_bytes(r['dense_bytes'])} | "
            f"{human_bytes(r['sparse_bytes'])} | {r['sparse_bytes'] / r['dense_bytes']:.3f} |"
        )
    header = "| model | network | sparsity |"
    rule = "|---|---|---|"
    for batch in args.batch_sizes:
        header += f" batch {batch} dense ms | batch {batch} sparse ms | batch {batch} speed-up |"
        rule += "---|---|---|"
    lines += ["", header, rule]
    for r in results:
        names = list(dict.fromkeys(row["network"] for row in r["latency"]))
        for name in names:
            rows = {row["batch"]: row for row in r["latency"] if row["network"] == name}
            line = f"| {r['label']} | {name} | {rows[args.batch_sizes[0]]['sparsity']:.3f} |"
            for batch in args.batch_sizes:
                row = rows[batch]
                line += f" {row['dense_ms']:.3f} | {row['sparse_ms']:.3f} | {row['dense_ms'] / row['sparse_ms']:.2f}x |"
            lines.append(line)
    if args.per_layer:
        header = "| model | network | layer | kernel (fan_in x fan_out) | density |"
        rule = "|---|---|---|---|---|"
        for batch in args.batch_sizes:
            header += f" batch {batch} dense ms | batch {batch} sparse ms |"
            rule += "---|---|"
        lines += ["", header, rule]
        for r in results:
            keys = list(dict.fromkeys((row["network"], row["layer"]) for row in r["layers"]))
            for network, layer in keys:
                rows = {row["batch"]: row for row in r["layers"] if (row["network"], row["layer"]) == (network, layer)}
                first = rows[args.batch_sizes[0]]
                shape = f"{first['type']} {first['shape'][0]} x {first['shape'][1]}"
                line = f"| {r['label']} | {network} | {layer} | {shape} | {first['density']:.3f} |"
                for batch in args.batch_sizes:
                    line += f" {rows[batch]['dense_ms']:.3f} | {rows[batch]['sparse_ms']:.3f} |"
                lines.append(line)
    return "\n".join(lines) + "\n"


def run_benchmark(args: argparse.Namespace) -> str:
    rng = np.random.default_rng(args.seed)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for run_dir in args.run_dirs:  # exported to a temporary folder: benchmarking leaves result folders untouched
            path, meta = export_run(run_dir, Path(tmp))
            model_path = Path(run_dir) / f"{meta['exp_name']}.cleanrl_model"
            label = f"{Path(meta['script']).stem} {meta['network_size']} {meta['env_id']} seed {meta['seed']}"
            print(f"benchmarking {label}", file=sys.stderr, flush=True)
            results.append(benchmark_file(label, path, model_path.stat().st_size, args, rng))
            path.unlink()
        if args.synthetic:
            for label, state, meta, dense_bytes in synthetic_models(args):
                path = Path(tmp) / "synthetic.sparse.npz"
                write_npz(path, export_arrays("atari_q", state, meta))
                print(f"benchmarking {label}", file=sys.stderr, flush=True)
                results.append(benchmark_file(label, path, dense_bytes, args, rng))
                path.unlink()
    return markdown_tables(results, args)


# =====================================================================================================================
# Command line
# =====================================================================================================================


def comma_list(kind: Callable[[str], Any], name: str, check: Callable[[Any], bool], rule: str) -> Callable:
    def parse(text: str) -> list[Any]:
        try:
            values = [kind(v) for v in text.split(",") if v.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name}: {text!r} is not a comma-separated list") from None
        if not values or not all(check(v) for v in values):
            raise argparse.ArgumentTypeError(f"{name}: {text!r}: {rule}")
        return values

    return parse


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = Parser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dirs", nargs="*", metavar="RUN_DIR", help="run folders holding a .cleanrl_model")
    parser.add_argument("--benchmark", action="store_true", help="measure latency and file size, print Markdown")
    parser.add_argument("--synthetic", action="store_true", help="benchmark the Atari network with synthetic masks")
    parser.add_argument(
        "--sizes",
        type=comma_list(str, "--sizes", lambda s: s in ("small", "medium", "large"), "sizes are small, medium, large"),
        default=["small", "medium", "large"],
        help="Atari network sizes for --synthetic (default: small,medium,large)",
    )
    parser.add_argument(
        "--sparsities",
        type=comma_list(float, "--sparsities", lambda s: 0.0 <= s < 1.0, "each sparsity must be in [0, 1)"),
        default=[0.5, 0.9, 0.95, 0.99],
        help="mask sparsities for --synthetic (default: 0.5,0.9,0.95,0.99)",
    )
    parser.add_argument("--distribution", choices=("erk", "uniform", "global"), default="erk",
                        help="how --synthetic spreads a sparsity over the layers (default: erk, as the scripts)")  # fmt: skip
    parser.add_argument("--num-actions", type=int, default=6, help="actions of the synthetic network (Pong: 6)")
    parser.add_argument(
        "--batch-sizes",
        type=comma_list(int, "--batch-sizes", lambda b: b >= 1, "batch sizes must be positive"),
        default=[1, 32],
        help="batch sizes to time (default: 1,32)",
    )
    parser.add_argument("--min-time", type=float, default=1.0, help="seconds spent timing each measurement (1.0)")
    parser.add_argument("--per-layer", action="store_true", help="also time each layer on its own")
    parser.add_argument("--backend", choices=("scipy", "numpy"), default=default_backend(),
                        help="sparse product to time (default: scipy when installed)")  # fmt: skip
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic networks and random inputs")
    args = parser.parse_args(argv)
    args.argv = argv
    given = set(argv if argv is not None else sys.argv[1:])
    bench_only = ("--synthetic", "--sizes", "--sparsities", "--distribution", "--num-actions", "--batch-sizes",
                  "--min-time", "--per-layer", "--backend")  # fmt: skip
    for flag in bench_only:
        if not args.benchmark and any(g == flag or g.startswith(flag + "=") for g in given):
            parser.error(f"{flag}: only with --benchmark")
    for flag in ("--sizes", "--sparsities", "--distribution", "--num-actions"):
        if not args.synthetic and any(g == flag or g.startswith(flag + "=") for g in given):
            parser.error(f"{flag}: only with --synthetic")
    if not args.run_dirs and not args.synthetic:
        parser.error("give at least one RUN_DIR" + (" or --synthetic" if args.benchmark else ""))
    if args.min_time < 0:
        parser.error("--min-time: must be non-negative")
    if args.num_actions < 1:
        parser.error("--num-actions: must be at least 1")
    if args.backend == "scipy" and scipy is None:
        parser.error("--backend: scipy is not installed (use --backend numpy)")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    try:
        for run_dir in args.run_dirs:  # every folder is checked before JAX is imported
            check_run_dir(run_dir)
        if args.benchmark:
            print(run_benchmark(args), end="", flush=True)
            return
        for run_dir in args.run_dirs:
            path, meta = export_run(run_dir)
            sparsity = ", ".join(f"{name} {value:.4f}" for name, value in meta["sparsity"].items())
            print(
                f"wrote {path} ({human_bytes(path.stat().st_size)}; sparsity {sparsity}; max |NumPy - JAX| "
                f"{meta['max_abs_error']:.2e} on 8 random inputs)",
                flush=True,
            )
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
