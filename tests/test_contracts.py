"""The contract every script keeps (docs/contract.md): shared code kept identical, common flags, documentation of every flag.

Single-file scripts duplicate code on purpose; these tests make sure the copies never diverge."""

import ast
import dataclasses
import importlib
import inspect
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import tyro

ROOT = Path(__file__).resolve().parents[1]
EAUDE = ["eaudedqn_atari_jax", "eaudedqn_jax", "eaudecql_atari_jax", "eaudesac_mujoco_jax"]
POLYPRUNE = ["polyprune_dqn_atari_jax", "polyprune_cql_atari_jax", "polyprune_sac_mujoco_jax", "polyprune_dqn_jax"]
SCRIPTS = EAUDE + POLYPRUNE

ONLINE = [script for script in SCRIPTS if "cql" not in script]
OFFLINE = ["eaudecql_atari_jax", "polyprune_cql_atari_jax"]
ONLINE_DISCRETE = ["eaudedqn_atari_jax", "polyprune_dqn_atari_jax", "eaudedqn_jax", "polyprune_dqn_jax"]
ATARI = ["eaudedqn_atari_jax", "polyprune_dqn_atari_jax", "eaudecql_atari_jax", "polyprune_cql_atari_jax"]
CLASSIC = ["eaudedqn_jax", "polyprune_dqn_jax"]
EAUDE_DISCRETE = ["eaudedqn_atari_jax", "eaudedqn_jax", "eaudecql_atari_jax"]

# code carried verbatim: each name is identical in every script that defines it (a script holds only what it calls)
SHARED = [
    *("env_seed", "MACHADO_PROTOCOL", "zero_fill_reset_frames", "HEAD_WIDTHS"),
    *("MINATAR_GAMES", "MINATAR_IDS", "MinAtarEnvs", "network_width"),
    *("is_prunable", "prunable_shapes", "layer_densities", "layer_zero_counts", "keep_largest", "counted_masks"),
    *("magnitude_masks", "apply_masks", "measured_sparsity", "polynomial_sparsity"),
    *("behaviour_probabilities", "tournament_selection", "exploration_sparsity", "plan_next_population"),
    *("renew_population", "epsilon_schedule", "epsilon_greedy", "gradient_steps_due", "ArgumentError", "parse_args"),
    *("DIVERGED", "atomic_write", "run_config", "json_line", "truncate_jsonl", "checkpoint_dirs"),
    "write_video",
    *(f"Run.{method}" for method in ("open_logs", "elapsed", "scalar", "population_event", "watch_signals")),
    *(f"Run.{method}" for method in ("hold_lock", "writing", "log_videos")),
]
# ... or identical within each group of scripts that needs its own version
SPLIT = {
    "QNetwork": [ATARI, CLASSIC],  # a CNN on Atari frames, an MLP on classic control
    "population_step": [EAUDE_DISCRETE],  # EauDeSAC renews two critic populations (Alg. 2)
    "init_learner": [EAUDE, POLYPRUNE],
    "take": [EAUDE],
    "Run.__init__": [EAUDE, POLYPRUNE],  # only EauDe runs write population.jsonl
    "Run.close": [EAUDE, POLYPRUNE],
    "Run.progress": [OFFLINE, ONLINE],  # the offline ETA counts the evaluations still to come
    "Run.save_checkpoint": [OFFLINE, ONLINE],  # a checkpoint holds the replay buffer, except offline (the dataset)
    "Run.resume": [OFFLINE, ONLINE],
}
# every script defines these (the contract's run outputs and Eq. 2 / Alg. 1 building blocks)
EVERYWHERE = ["env_seed", "is_prunable", "counted_masks", "measured_sparsity", "atomic_write", "run_config", "Run"]

# tools/export_sparse.py prunes any script's dense model with it
KEPT_FOR_TOOLS = ["magnitude_masks"]


def load(name: str):
    return importlib.import_module(name)


def defines(module, name: str) -> bool:
    value = module
    for part in name.split("."):  # vars: a method the class inherits is not defined here
        if part not in vars(value):
            return False
        value = vars(value)[part]
    return True


def source(module, name: str) -> str:
    value = module
    for part in name.split("."):  # "Run.scalar": a method
        value = getattr(value, part)
    if isinstance(value, (dict, str, tuple)):  # a constant
        return repr(value)
    return inspect.getsource(getattr(value, "__wrapped__", value))


GROUPS = [(name, SCRIPTS) for name in SHARED] + [(name, group) for name, groups in SPLIT.items() for group in groups]


@pytest.mark.parametrize("name, group", GROUPS, ids=[f"{name}-{group[0]}" for name, group in GROUPS])
def test_shared_code_is_identical_wherever_it_appears(name: str, group: list[str]) -> None:
    holders = [script for script in group if defines(load(script), name)]
    assert len(holders) >= 2 or group is not SCRIPTS, f"{name} is in {holders} only: it is not shared code any more"
    reference = source(load(holders[0]), name)
    diverged = [script for script in holders[1:] if source(load(script), name) != reference]
    assert not diverged, f"{name} of {diverged} diverged from {holders[0]}"


@pytest.mark.parametrize("script", SCRIPTS)
def test_each_script_defines_the_shared_core_and_only_what_it_uses(script: str) -> None:
    module, text = load(script), (ROOT / f"{script}.py").read_text()
    assert all(defines(module, name) for name in EVERYWHERE)
    tree = ast.parse(text)
    names = [node.name for node in tree.body if isinstance(node, (ast.FunctionDef, ast.ClassDef))]
    names += [name for name, value in vars(module.Run).items() if inspect.isfunction(value)]
    names = [name for name in names if not name.startswith("__") and name not in KEPT_FOR_TOOLS]
    unused = [name for name in names if len(re.findall(rf"\b{name}\b", text)) < 2]
    assert not unused, f"{script} defines {unused} but never uses them"


COMMON_DEFAULTS = {
    "seed": 1,
    "track": False,
    "wandb_project_name": "eaudeqn",
    "wandb_entity": None,
    "capture_video": False,
    "save_model": False,
    "output_dir": "runs",
    "resume": None,
}


@pytest.mark.parametrize("script", SCRIPTS)
def test_common_flags_and_defaults(script: str) -> None:
    args = load(script).Args()
    for name, default in COMMON_DEFAULTS.items():
        assert getattr(args, name) == default, f"{script} --{name}"
    assert args.exp_name == script
    fields = {f.name for f in dataclasses.fields(args)}
    assert {"env_id", "checkpoint_interval", "network_size", "sparsity_distribution", "eval_episodes"} <= fields
    if script in EAUDE:
        assert (args.num_networks, args.tournament_size, args.u_max, args.s_max) == (5, 3, 3.0, 0.01)
    else:
        assert (args.final_sparsity, args.pruning_start, args.pruning_end, args.pruning_power) == (0.95, 0.2, 0.8, 3)


FAMILY_PAGE = {
    "eaudedqn_atari_jax": "online-atari.md",
    "polyprune_dqn_atari_jax": "online-atari.md",
    "eaudecql_atari_jax": "offline-atari.md",
    "polyprune_cql_atari_jax": "offline-atari.md",
    "eaudesac_mujoco_jax": "mujoco.md",
    "polyprune_sac_mujoco_jax": "mujoco.md",
    "eaudedqn_jax": "classic-control.md",
    "polyprune_dqn_jax": "classic-control.md",
}


@pytest.mark.parametrize("script", SCRIPTS)
def test_every_flag_is_documented(script: str) -> None:
    """The README lists every script; docs/contract.md and the script's family page document each of its flags."""
    assert f"`{script}.py`" in (ROOT / "README.md").read_text()
    docs = (ROOT / "docs" / "contract.md").read_text() + (ROOT / "docs" / FAMILY_PAGE[script]).read_text()
    missing = [
        f"--{f.name.replace('_', '-')}"
        for f in dataclasses.fields(load(script).Args)
        if f"`--{f.name.replace('_', '-')}`" not in docs
    ]
    assert not missing, f"docs/contract.md and docs/{FAMILY_PAGE[script]} do not document {missing} of {script}.py"


@pytest.mark.parametrize("script", SCRIPTS)
def test_every_flag_has_help_text(script: str, capsys, monkeypatch: pytest.MonkeyPatch) -> None:
    """tyro reads each field's comment as its --help text: no flag may show only its default."""
    monkeypatch.setenv("COLUMNS", "400")  # one line per flag
    with pytest.raises(SystemExit):
        load(script).parse_args(["--help"])
    help_of, flag = {}, None
    for line in capsys.readouterr().out.splitlines():
        text = line.strip("│| ")
        if text.startswith("-"):  # "--flag TYPE   help text", or the help on the next lines when the flag is long
            flag, _, text = text.partition("  ")
            flag = flag.split()[0].rstrip(",")
        if flag is not None:
            help_of[flag] = help_of.get(flag, "") + " " + text.strip()
    for field in dataclasses.fields(load(script).Args):
        flag = f"--{field.name.replace('_', '-')}"
        text = help_of.get(flag, "").split("(default")[0].strip()
        assert len(text) > 10, f"{script} {flag} has no help text"


@pytest.mark.parametrize("utf8_boxes", [True, False], ids=["utf8-boxes", "ascii-rules"])
@pytest.mark.parametrize("script", SCRIPTS)
def test_a_parse_error_is_one_line_whatever_tyro_draws(
    script: str, utf8_boxes: bool, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    """tyro frames its errors in UTF-8 boxes or, with PYTHON_TYRO_UTF8_BOXES=False or a non-UTF-8 stdout, in ASCII
    rules; either way the user sees tyro's message on one line."""
    monkeypatch.setitem(tyro._settings._experimental_options, "utf8_boxes", utf8_boxes)
    with pytest.raises(SystemExit) as exit_:
        load(script).parse_args(["--seed", "abc"])
    assert exit_.value.code == 2
    expected = "error: Error parsing --seed: invalid literal for int() with base 10: 'abc' (see --help)"
    assert capsys.readouterr().err.splitlines() == [expected]
    with pytest.raises(SystemExit):
        load(script).parse_args(["--sed", "1"])
    assert capsys.readouterr().err.splitlines() == ["error: Unrecognized options: --sed, 1 (see --help)"]


def test_ascii_error_format_from_the_environment_variable() -> None:
    env = {**os.environ, "PYTHON_TYRO_UTF8_BOXES": "False"}
    result = subprocess.run(
        [sys.executable, "polyprune_dqn_jax.py", "--seed", "abc"], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.splitlines() == [
        "error: Error parsing --seed: invalid literal for int() with base 10: 'abc' (see --help)"
    ]


@pytest.mark.parametrize("script", SCRIPTS)
def test_unknown_flag_is_one_error_line_with_exit_code_2(script: str, capsys) -> None:
    with pytest.raises(SystemExit) as exit_:
        load(script).parse_args(["--no-such-flag", "1"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and "--no-such-flag" in err[0]
