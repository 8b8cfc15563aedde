"""Run a script on a disk that fails on purpose (tests/test_reliability.py, docs/reliability.md):

    python tests/support/write_faults.py MODE N SCRIPT [ARGS...]

counts the write() calls into the run folder (run.lock and the TensorBoard events aside, whose writes come from a
thread at moments of its own) made once the folder holds a complete checkpoint, and at the N-th one:

* `oserror`: raises `OSError(ENOSPC)`, as a full disk would;
* `kill`: writes half of the data, then SIGKILLs the process (a torn line or a half-written checkpoint file);
* `hang`: touches `<run folder>/hanging` and sleeps until killed (a run that is still going, for a second writer).

The script runs as `__main__` in this process, so its own error handling is what the test sees."""

import builtins
import errno
import os
import runpy
import signal
import sys
import time
from pathlib import Path
from typing import Any

MODE, AT, SCRIPT, *ARGV = sys.argv[1:]
real_open, count = builtins.open, 0


def fault(path: Path, file: Any, data: Any) -> None:
    global count
    run_dir = path.parent.parent if path.parent.name == "checkpoint.tmp" else path.parent
    if path.name == "run.lock" or "tfevents" in path.name or not (run_dir / "checkpoint" / "meta.json").is_file():
        return
    count += 1
    if count < int(AT):
        return
    if MODE == "kill":
        file.write(data[: len(data) // 2])
        file.flush()
        os.kill(os.getpid(), signal.SIGKILL)
    if MODE == "hang":
        (run_dir / "hanging").touch()
        time.sleep(3600)
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


class FaultyFile:
    def __init__(self, file: Any, path: Path) -> None:
        self._file, self._path = file, path

    def write(self, data: Any) -> int:
        fault(self._path, self._file, data)
        return self._file.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._file, name)

    def __enter__(self) -> "FaultyFile":
        return self

    def __exit__(self, *exc: object) -> None:
        self._file.close()


def faulty_open(file: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
    opened = real_open(file, mode, *args, **kwargs)
    writing = isinstance(file, (str, os.PathLike)) and any(c in mode for c in "wax+")
    return FaultyFile(opened, Path(file)) if writing else opened


builtins.open = faulty_open
sys.argv = [SCRIPT, *ARGV]
runpy.run_path(SCRIPT, run_name="__main__")
