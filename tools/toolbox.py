"""What several tools share: a command-line mistake as one `error:` line, the processor's model, JSON-lines logs."""

import argparse
import contextlib
import gzip
import json
import platform
import sys
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
