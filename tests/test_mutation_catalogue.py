"""The mutation catalogue (tools/mutants/*.toml) stays in step with the scripts: every break still applies to exactly one
place, and every catcher is a test that exists in the script's own test files."""

import re
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = [
    "eaudedqn_atari_jax",
    "polyprune_dqn_atari_jax",
    "eaudedqn_jax",
    "polyprune_dqn_jax",
    "eaudecql_atari_jax",
    "polyprune_cql_atari_jax",
    "eaudesac_mujoco_jax",
    "polyprune_sac_mujoco_jax",
]
CATALOGUES = sorted((ROOT / "tools" / "mutants").glob("*.toml"))


def test_every_script_has_a_catalogue() -> None:
    assert sorted(p.stem for p in CATALOGUES) == sorted(SCRIPTS)


@pytest.mark.parametrize("path", CATALOGUES, ids=[p.stem for p in CATALOGUES])
def test_every_mutant_applies_once_and_names_an_existing_test_of_its_script(path: Path) -> None:
    catalogue = tomllib.loads(path.read_text())
    script = (ROOT / f"{path.stem}.py").read_text()
    tests = catalogue["tests"]
    assert tests and all((ROOT / t).is_file() for t in tests)
    assert "tests/test_contracts.py" not in tests  # identity with another script proves nothing about this one
    assert catalogue["mutant"]
    for mutant in catalogue["mutant"]:
        assert mutant["line"] and mutant["what"], mutant
        assert script.count(mutant["find"]) == 1, f"{path.stem}: find must occur once: {mutant['find']!r}"
        assert mutant["replace"] != mutant["find"]
        file, _, name = mutant["catcher"].partition("::")
        assert file in tests, f"{mutant['catcher']} is not in the script's own test files"
        assert re.search(rf"^def {re.escape(name)}\(", (ROOT / file).read_text(), flags=re.MULTILINE), name
