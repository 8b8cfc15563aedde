"""Break each line of the paper's algorithms on purpose and check that a test of that script notices.

The catalogue lives in `tools/mutants/<script>.toml`: the script's own test files (`tests = [...]`) and one
`[[mutant]]` per break, with the paper line it breaks (`line`), what the break does (`what`), the exact text to
replace (`find`, which must occur exactly once in the script), its replacement (`replace`) and the test expected to
fail (`catcher`, a pytest node id). For each mutant, in a temporary copy of the repository (the working tree is never
touched), the tool applies the break, runs the catcher, and, if the catcher still passes, every non-slow test of the
script's test files. A mutant is *killed* when a test fails, *survived* when all pass, *invalid* when the mutated
script does not even import (a broken mutant proves nothing).

    uv run python tools/mutation_test.py                          # every catalogue
    uv run python tools/mutation_test.py --script eaudedqn_jax    # one script
    uv run python tools/mutation_test.py --jobs 2 --write-docs     # and write docs/mutation/<script>.md

`--jobs N` runs N mutants at a time, each in its own copy. Exit code 0 when every mutant is killed, 1 otherwise.
"""

import argparse
import concurrent.futures
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path

from toolbox import cpu_model

ROOT = Path(__file__).resolve().parents[1]
CATALOGUES = ROOT / "tools" / "mutants"
DOCS = ROOT / "docs" / "mutation"
TIMEOUT = 900  # seconds per pytest call: a mutant that hangs a test counts as killed


@dataclass
class Mutant:
    script: str
    line: str
    what: str
    find: str
    replace: str
    catcher: str
    tests: list[str]


@dataclass
class Outcome:
    mutant: Mutant
    status: str  # killed | survived | invalid
    caught_by: str
    seconds: float


def load_catalogue(path: Path) -> list[Mutant]:
    data = tomllib.loads(path.read_text())
    script = path.stem
    return [
        Mutant(script, m["line"], m["what"], m["find"], m["replace"], m.get("catcher", ""), list(data["tests"]))
        for m in data.get("mutant", [])
    ]


def repository_copy() -> Path:
    """The tracked and untracked-but-not-ignored files of the repository, copied to a temporary folder."""
    listed = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, capture_output=True, check=True
    ).stdout.decode()
    copy = Path(tempfile.mkdtemp(prefix="mutation-"))
    for name in filter(None, listed.split("\0")):
        source = ROOT / name
        if source.is_file():
            (copy / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, copy / name)
    return copy


def pytest(copy: Path, targets: list[str], *options: str) -> tuple[int, str]:
    command = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "-rfE", *options, *targets]
    try:
        result = subprocess.run(command, cwd=copy, capture_output=True, text=True, timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        return -1, "timeout"
    return result.returncode, result.stdout + result.stderr


def first_failure(output: str) -> str:
    match = re.search(r"^(?:FAILED|ERROR) (\S+)", output, flags=re.MULTILINE)
    return match.group(1) if match else "timeout" if output == "timeout" else "?"


def run_mutant(copy: Path, mutant: Mutant) -> Outcome:
    path = copy / f"{mutant.script}.py"
    original = path.read_text()
    count = original.count(mutant.find)
    if count != 1:
        return Outcome(mutant, "invalid", f"`find` occurs {count} times", 0.0)
    start = time.time()
    path.write_text(original.replace(mutant.find, mutant.replace))
    try:
        imports = subprocess.run(
            [sys.executable, "-c", f"import {mutant.script}"], cwd=copy, capture_output=True, text=True, timeout=300
        )
        if imports.returncode != 0:
            return Outcome(mutant, "invalid", imports.stderr.strip().splitlines()[-1][:80], time.time() - start)
        runs = [[mutant.catcher]] if mutant.catcher else []
        runs.append([*mutant.tests, "-m", "not slow"])
        for targets in runs:
            code, output = pytest(copy, targets)
            if code in (1, -1):
                return Outcome(mutant, "killed", first_failure(output), time.time() - start)
            if code not in (0, 5):  # 5: no test selected
                return Outcome(mutant, "invalid", f"pytest exit {code}", time.time() - start)
        return Outcome(mutant, "survived", "", time.time() - start)
    finally:
        path.write_text(original)


def markdown(script: str, outcomes: list[Outcome]) -> str:
    cpu = cpu_model()
    killed = sum(o.status == "killed" for o in outcomes)
    lines = [
        f"# Mutation testing of `{script}.py`",
        "",
        "Each row breaks one line of the script on purpose (in a temporary copy of the repository) and names the test of",
        f"the script's own test files that fails. The breaks are listed in `tools/mutants/{script}.toml`. Re-run with",
        "",
        f"    uv run python tools/mutation_test.py --script {script} --write-docs",
        "",
        f"Result: {killed} of {len(outcomes)} mutants killed. Machine: {cpu}, {platform.system()}, Python"
        f" {platform.python_version()}; s: wall-clock seconds of the pytest calls, start-up included (not a benchmark).",
        "",
        "| line | break | result | caught by | s |",
        "|---|---|---|---|---|",
    ]
    for o in outcomes:
        caught = f"`{o.caught_by.split('::', 1)[-1]}`" if o.status == "killed" else o.caught_by
        lines.append(f"| {o.mutant.line} | {o.mutant.what} | {o.status} | {caught} | {o.seconds:.0f} |")
    return "\n".join(lines) + "\n"


def write_index() -> None:
    """docs/mutation/README.md: one row per script, read from the per-script pages written so far."""
    rows = []
    for page in sorted(DOCS.glob("*_jax.md")):
        result = next(line for line in page.read_text().splitlines() if line.startswith("Result:"))
        rows.append(f"| [`{page.stem}.py`]({page.name}) | {result.split('.', 1)[0].removeprefix('Result: ')} |")
    lines = [
        "# Mutation testing",
        "",
        "A test suite that cannot fail proves nothing. `tools/mutation_test.py` breaks one line of a script at a time (the",
        "lines of Algorithms 1 and 2, Eq. 2, Eq. 3, the tournament, the behaviour draw, the mask re-application, the",
        "replay's terminal, truncation and frame-stack rules and the losses) and checks that a test of that script's own",
        "test files fails. The breaks are listed in `tools/mutants/<script>.toml`, each with the paper line it breaks;",
        "`tests/test_mutation_catalogue.py` keeps the catalogue in step with the code. Re-run everything with",
        "",
        "    uv run python tools/mutation_test.py --jobs 2 --write-docs",
        "",
        "| script | mutants killed |",
        "|---|---|",
        *rows,
        "",
        "If you change a line of an algorithm, run its script's catalogue: a mutant that survives means the tests no",
        "longer notice that line breaking.",
    ]
    (DOCS / "README.md").write_text("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--script", nargs="+", default=None, help="scripts to mutate (default: every catalogue)")
    parser.add_argument("--jobs", type=int, default=1, help="mutants run at the same time (default 1)")
    parser.add_argument("--write-docs", action="store_true", help="write docs/mutation/<script>.md per script")
    options = parser.parse_args()
    paths = sorted(CATALOGUES.glob("*.toml"))
    if options.script:
        paths = [CATALOGUES / f"{name.removesuffix('.py')}.toml" for name in options.script]
        missing = [str(p) for p in paths if not p.exists()]
        if missing:
            print(f"error: --script: no catalogue {', '.join(missing)}", file=sys.stderr)
            raise SystemExit(2)
    mutants = [m for path in paths for m in load_catalogue(path)]
    copies = [repository_copy() for _ in range(max(options.jobs, 1))]
    free = list(copies)
    outcomes: dict[int, Outcome] = {}

    def run(index: int) -> tuple[int, Outcome]:
        copy = free.pop()
        try:
            return index, run_mutant(copy, mutants[index])
        finally:
            free.append(copy)

    try:
        with concurrent.futures.ThreadPoolExecutor(max_workers=len(copies)) as pool:
            for done, (index, outcome) in enumerate(pool.map(run, range(len(mutants))), 1):
                outcomes[index] = outcome
                mutant = outcome.mutant
                print(
                    f"[{done}/{len(mutants)}] {outcome.status:8s} {mutant.script}: {mutant.line}: {mutant.what}"
                    f" -> {outcome.caught_by} ({outcome.seconds:.0f} s)",
                    flush=True,
                )
    finally:
        for copy in copies:
            shutil.rmtree(copy, ignore_errors=True)
    ordered = [outcomes[i] for i in sorted(outcomes)]
    survivors = [o for o in ordered if o.status != "killed"]
    print(f"{len(ordered) - len(survivors)} of {len(ordered)} mutants killed")
    if options.write_docs:
        DOCS.mkdir(parents=True, exist_ok=True)
        for path in paths:
            (DOCS / f"{path.stem}.md").write_text(
                markdown(path.stem, [o for o in ordered if o.mutant.script == path.stem])
            )
        write_index()
    raise SystemExit(1 if survivors else 0)


if __name__ == "__main__":
    main()
