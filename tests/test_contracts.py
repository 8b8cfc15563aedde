"""The contract every script keeps (docs/contract.md): shared code kept identical, common flags, documentation of every flag.

Single-file scripts duplicate code on purpose; these tests make sure the copies never diverge."""

import dataclasses
import importlib
import inspect
import os
import subprocess
import sys
from pathlib import Path

import pytest
import tyro

ROOT = Path(__file__).resolve().parents[1]
EAUDE = ["eaudedqn_atari_jax", "eaudedqn_jax", "eaudecql_atari_jax", "eaudesac_mujoco_jax"]
POLYPRUNE = ["polyprune_dqn_atari_jax", "polyprune_cql_atari_jax", "polyprune_sac_mujoco_jax", "polyprune_dqn_jax"]
SCRIPTS = EAUDE + POLYPRUNE

# functions every script (or every script of a family) carries verbatim
SHARED_EVERYWHERE = [
    "env_seed",
    "is_prunable",
    "prunable_shapes",
    "layer_densities",
    "layer_zero_counts",
    "keep_largest",
    "counted_masks",
    "magnitude_masks",
    "apply_masks",
    "measured_sparsity",
    "atomic_write",
    "run_config",
    "json_line",
    "truncate_jsonl",
    "checkpoint_dirs",
    "check_output_dir",
    *(f"Run.{method}" for method in ("__init__", "open_logs", "elapsed", "scalar", "progress", "population_event")),
    *(f"Run.{method}" for method in ("watch_signals", "log_videos", "close")),
]
# a checkpoint holds the replay buffer, except in the offline CQL scripts (--resume reloads their dataset)
WITH_REPLAY = [script for script in SCRIPTS if "cql" not in script]
SHARED_WITH_REPLAY = ["Run.save_checkpoint", "Run.resume"]
OFFLINE = ["eaudecql_atari_jax", "polyprune_cql_atari_jax"]
SHARED_EAUDE = ["tournament_selection", "exploration_sparsity", "plan_next_population"]
EAUDE_DISCRETE = ["eaudedqn_atari_jax", "eaudedqn_jax", "eaudecql_atari_jax"]
SHARED_EAUDE_DISCRETE = ["population_step", "renew_population", "init_learner"]  # Alg. 1 l. 1 and l. 12-16
SHARED_POLYPRUNE = ["polynomial_sparsity"]
SHARED_ATARI = ["MACHADO_PROTOCOL", "zero_fill_reset_frames", "QNetwork", "HEAD_WIDTHS"]
ONLINE_DISCRETE = ["eaudedqn_atari_jax", "polyprune_dqn_atari_jax", "eaudedqn_jax", "polyprune_dqn_jax"]
ATARI = ["eaudedqn_atari_jax", "polyprune_dqn_atari_jax", "eaudecql_atari_jax", "polyprune_cql_atari_jax"]


def load(name: str):
    return importlib.import_module(name)


def source(module, name: str) -> str:
    value = module
    for part in name.split("."):  # "Run.scalar": a method
        value = getattr(value, part)
    if isinstance(value, dict):
        return repr(value)
    return inspect.getsource(getattr(value, "__wrapped__", value))


def pairs(group: list[str], names: list[str]):
    return [(script, name) for script in group[1:] for name in names]


@pytest.mark.parametrize("script, name", pairs(SCRIPTS, SHARED_EVERYWHERE))
def test_shared_code_is_identical_everywhere(script: str, name: str) -> None:
    assert source(load(script), name) == source(load(SCRIPTS[0]), name), f"{script}.{name} diverged"


@pytest.mark.parametrize("script, name", pairs(WITH_REPLAY, SHARED_WITH_REPLAY) + pairs(OFFLINE, SHARED_WITH_REPLAY))
def test_checkpoint_code_is_identical_in_scripts_of_the_same_kind(script: str, name: str) -> None:
    group = OFFLINE if script in OFFLINE else WITH_REPLAY
    assert source(load(script), name) == source(load(group[0]), name), f"{script}.{name} diverged"


@pytest.mark.parametrize("script, name", pairs(EAUDE, SHARED_EAUDE))
def test_population_code_is_identical_in_eaude_scripts(script: str, name: str) -> None:
    assert source(load(script), name) == source(load(EAUDE[0]), name)


@pytest.mark.parametrize("script, name", pairs(EAUDE_DISCRETE, SHARED_EAUDE_DISCRETE))
def test_population_step_is_identical_in_discrete_eaude_scripts(script: str, name: str) -> None:
    assert source(load(script), name) == source(load(EAUDE_DISCRETE[0]), name)


@pytest.mark.parametrize("script, name", pairs(POLYPRUNE, SHARED_POLYPRUNE))
def test_schedule_is_identical_in_polyprune_scripts(script: str, name: str) -> None:
    assert source(load(script), name) == source(load(POLYPRUNE[0]), name)


@pytest.mark.parametrize("script, name", pairs(ATARI, SHARED_ATARI))
def test_atari_environment_and_network_are_identical(script: str, name: str) -> None:
    assert source(load(script), name) == source(load(ATARI[0]), name)


@pytest.mark.parametrize("script", ["eaudedqn_jax", "eaudesac_mujoco_jax"])
def test_behaviour_sampling_is_identical_in_online_eaude_scripts(script: str) -> None:
    reference = source(load("eaudedqn_atari_jax"), "behaviour_probabilities")
    assert source(load(script), "behaviour_probabilities") == reference


@pytest.mark.parametrize(
    "script, name", pairs(ONLINE_DISCRETE, ["epsilon_schedule", "epsilon_greedy", "gradient_steps_due"])
)
def test_acting_and_cadence_are_identical_in_online_discrete_scripts(script: str, name: str) -> None:
    assert source(load(script), name) == source(load(ONLINE_DISCRETE[0]), name)


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
