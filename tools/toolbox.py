"""What several tools share: a command-line mistake as one `error:` line, the processor's model, JSON-lines logs and
a timed run of a tool's child process."""

import argparse
import contextlib
import gzip
import json
import platform
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn


class Parser(argparse.ArgumentParser):
    def error(
        self, message: str
    ) -> NoReturn:  # one `error:` line, exit code 2 (house rule), not argparse's usage block
        print(f"error: {message} (see --help)", file=sys.stderr)
        raise SystemExit(2)


def cpu_model(fallback: str | None = None) -> str:
    """The processor's model as Linux names it in /proc/cpuinfo; elsewhere `fallback` (default: platform's answer)."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return (platform.processor() or "unknown CPU") if fallback is None else fallback


def has_avx512() -> bool:
    """Whether the processor has AVX-512 (Linux's `avx512f` flag). XLA compiles for the instruction set it finds, so a
    seeded CPU run's numbers depend on it beside the model name: on 2026-12-07 an "AMD EPYC" without AVX-512 (cpu
    family 25, model 1) gave other numbers than the VMs the records came from (an Intel Xeon among them), for the
    same code and versions."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return "avx512f" in line.split(":", 1)[1].split()
    return False


def jsonl_path(path: Path) -> Path | None:
    """`path`, or its gzipped twin `path.gz` (the published runs of docs/results/runs/), None when neither exists."""
    for candidate in (path, path.with_name(path.name + ".gz")):
        if candidate.exists():
            return candidate
    return None


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The records of a run's metrics.jsonl or population.jsonl (or its .gz twin); none when neither exists."""
    rows = []
    found = jsonl_path(path)
    if found is not None:
        raw = gzip.decompress(found.read_bytes()) if found.suffix == ".gz" else found.read_bytes()
        for line in raw.decode(errors="replace").splitlines():
            try:
                row = json.loads(line)  # Python's json reads the bare NaN / Infinity of older runs as floats
            except json.JSONDecodeError:
                continue  # a run killed mid-write leaves a partial last line
            if isinstance(row, dict):
                rows.append(row)
    return rows


@dataclass
class ChildRun:
    """What a child process left: its exit code, the JSON report it printed as its last stdout line after its tag (None
    when it failed or printed none), its stderr and its wall-clock seconds."""

    returncode: int
    report: dict[str, Any] | None
    stderr: str
    seconds: float

    @property
    def error(self) -> str:
        """The last line of stderr, the one that names the failure."""
        return (self.stderr.strip().splitlines() or ["no output"])[-1]


def run_child(
    tool: str | Path, mode: str, argv: list[str], tag: str, cwd: Path, env: dict[str, str] | None = None,
    timeout: float | None = None,
) -> ChildRun:  # fmt: skip
    """Run `python <tool> --child <mode> -- <argv>` in a fresh process (its own JAX and peak memory) and time it; the
    child reports by printing `<tag> <json>` last. subprocess.TimeoutExpired after `timeout` seconds."""
    command = [sys.executable, str(Path(tool).resolve()), "--child", mode, "--", *argv]
    start = time.time()
    result = subprocess.run(command, capture_output=True, text=True, cwd=cwd, env=env, timeout=timeout)
    seconds = time.time() - start
    lines = result.stdout.strip().splitlines()
    reported = result.returncode == 0 and bool(lines) and lines[-1].startswith(f"{tag} ")
    report = json.loads(lines[-1].removeprefix(f"{tag} ")) if reported else None
    return ChildRun(result.returncode, report, result.stderr, seconds)
