"""Every runtime dependency declared in pyproject.toml is imported by some .py file of the repository: a dependency
nothing imports is dead weight for every user (or a sign that the code meant to use it never got written)."""

import ast
import functools
import re
import tomllib
from collections.abc import Iterable
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def normalise(distribution: str) -> str:
    """PEP 503: 'Ale_Py' and 'ale-py' name the same distribution."""
    return re.sub(r"[-_.]+", "-", distribution).lower()


def declared_dependencies() -> list[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return [re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", requirement).group(0) for requirement in project["dependencies"]]


@functools.cache
def modules_by_distribution() -> dict[str, set[str]]:
    by_distribution: dict[str, set[str]] = {}
    for module, distributions in metadata.packages_distributions().items():
        for name in distributions:
            by_distribution.setdefault(normalise(name), set()).add(module)
    return by_distribution


def import_names(distribution: str) -> set[str]:
    """The top-level modules an installed distribution provides (ale-py -> ale_py, tensorboardx -> tensorboardX,
    imageio-ffmpeg -> imageio_ffmpeg), read from the installed metadata rather than guessed from the name."""
    return modules_by_distribution().get(normalise(distribution), set())


def repository_files() -> list[Path]:
    return [
        path
        for path in ROOT.rglob("*.py")
        if not any(part.startswith(".") or part == "__pycache__" for part in path.relative_to(ROOT).parts)
    ]


def imported_modules(sources: Iterable[str]) -> set[str]:
    """Top-level names of every absolute import, at any depth (the scripts import some packages inside functions)."""
    modules = set()
    for source in sources:
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.Import):
                modules.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules.add(node.module.split(".")[0])
    return modules


def unused(dependencies: Iterable[str], modules: set[str]) -> list[str]:
    return [dependency for dependency in dependencies if not import_names(dependency) & modules]


def test_every_declared_dependency_is_imported_by_the_repository() -> None:
    dependencies = declared_dependencies()
    assert {"ale-py", "envpool", "jax", "tensorboardx"} <= set(dependencies)
    not_installed = [dependency for dependency in dependencies if not import_names(dependency)]
    assert not not_installed, f"declared but not installed (run uv sync): {not_installed}"
    files = repository_files()
    assert ROOT / "tools" / "evaluate.py" in files and ROOT / "eaudedqn_atari_jax.py" in files
    modules = imported_modules(path.read_text() for path in files)
    assert not unused(dependencies, modules), (
        f"declared in pyproject.toml, imported nowhere: {unused(dependencies, modules)}"
    )


def test_the_check_sees_imports_inside_functions_and_maps_distribution_names() -> None:
    source = (
        "import numpy as np\n\ndef f():\n    import imageio.v2 as imageio\n    from tensorboardX import SummaryWriter\n"
    )
    modules = imported_modules([source, "from . import relative\nimport ale_py.env\n"])
    assert modules == {"numpy", "imageio", "tensorboardX", "ale_py"}
    assert unused(["numpy", "imageio", "tensorboardx", "ale-py", "imageio-ffmpeg", "mujoco"], modules) == [
        "imageio-ffmpeg",
        "mujoco",
    ]
