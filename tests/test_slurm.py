"""`benchmark.sh --preset smoke --slurm` against a real single-node Slurm started on localhost by the fixture.

The fixture installs Debian's slurm-wlm and munge when slurmctld is missing (needs root and apt-get), writes a private
slurm.conf (own ports, state and spool folders, own munge socket and key), starts munged, slurmctld and slurmd, and
stops them afterwards. It skips with the reason when Slurm cannot be installed or started. The "stand-in" variant runs
the smoke preset with stand-in scripts (tests/support/benchmark_fakes.py) through the same sbatch template, including a crash
and the resume on re-submission; the "real" variant runs the real scripts and skips while they are missing.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.benchmark_fakes import ALGO_SCRIPTS, REPO_ROOT, make_fake_script_dir

pytestmark = pytest.mark.slow
SBATCH_ARGS = "--cpus-per-task=1 --mem=256M"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _install_slurm() -> str | None:
    """Install slurm-wlm and munge with apt-get; return why it is impossible, or None when installed."""
    if shutil.which("slurmctld") and shutil.which("munged"):
        return None
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        return "Slurm is not installed and cannot be installed here (needs root and apt-get)"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update", "-q"], ["apt-get", "install", "-y", "-q", "slurm-wlm", "munge"]):
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
        if proc.returncode != 0:
            return f"`{' '.join(cmd)}` failed: {proc.stderr.strip()[-300:]}"
    return None if shutil.which("slurmctld") else "slurm-wlm installed but slurmctld not found"


def _kill_pidfile(path: Path) -> None:
    try:
        os.kill(int(path.read_text().strip()), signal.SIGTERM)
    except (OSError, ValueError):
        pass


@pytest.fixture(scope="module")
def slurm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """Start a private single-node Slurm; yield the environment (SLURM_CONF) its clients need."""
    t0 = time.monotonic()
    reason = _install_slurm()
    if reason:
        pytest.skip(reason)
    if os.geteuid() != 0:
        pytest.skip("starting slurmd needs root")
    d = tmp_path_factory.mktemp("slurm")
    for sub in ("state", "spool", "munge"):
        (d / sub).mkdir()
    (d / "munge").chmod(0o700)
    key = d / "munge" / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o600)
    sock = d / "munge" / "munge.sock"
    host = subprocess.run(["hostname", "-s"], capture_output=True, text=True).stdout.strip() or "localhost"
    mem_mb = int(int(Path("/proc/meminfo").read_text().split()[1]) / 1024 * 0.9)
    conf = d / "slurm.conf"
    conf.write_text(
        f"""ClusterName=eaudetest
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={_free_port()}
SlurmdPort={_free_port()}
AuthType=auth/munge
AuthInfo=socket={sock}
CredType=cred/munge
SlurmUser=root
SlurmdUser=root
StateSaveLocation={d}/state
SlurmdSpoolDir={d}/spool
SlurmctldPidFile={d}/slurmctld.pid
SlurmdPidFile={d}/slurmd.pid
SlurmctldLogFile={d}/slurmctld.log
SlurmdLogFile={d}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
InactiveLimit=0
KillWait=5
MinJobAge=3600
NodeName={host} NodeAddr=127.0.0.1 CPUs={os.cpu_count()} RealMemory={mem_mb} State=UNKNOWN
PartitionName=debug Nodes={host} Default=YES MaxTime=INFINITE State=UP
"""
    )
    env = {**os.environ, "SLURM_CONF": str(conf)}
    pidfiles = [d / "slurmd.pid", d / "slurmctld.pid", d / "munge" / "munged.pid"]
    try:
        munged = ["munged", "--force", f"--key-file={key}", f"--socket={sock}", f"--pid-file={pidfiles[2]}"]
        munged += [f"--log-file={d}/munge/munged.log", f"--seed-file={d}/munge/seed"]
        subprocess.run(munged, check=True, capture_output=True, timeout=30)
        subprocess.run(["slurmctld", "-f", str(conf), "-i"], check=True, capture_output=True, env=env, timeout=30)
        subprocess.run(["slurmd", "-f", str(conf), "-N", host], check=True, capture_output=True, env=env, timeout=30)
        deadline = time.monotonic() + 60
        state = ""
        while time.monotonic() < deadline:
            state = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, env=env).stdout
            if state.strip() == "idle":
                break
            time.sleep(1)
        else:
            raise RuntimeError(f"node never became idle (sinfo: {state.strip()!r})")
    except (subprocess.SubprocessError, OSError, RuntimeError) as e:
        logs = " | ".join(p.read_text()[-300:] for p in d.glob("*.log"))
        for p in pidfiles:
            _kill_pidfile(p)
        pytest.skip(f"Slurm could not be started: {e}; logs: {logs}")
    print(f"single-node Slurm ready in {time.monotonic() - t0:.1f} s")
    yield env
    subprocess.run(["scancel", "--user", "root"], env=env, capture_output=True)
    for p in pidfiles:
        _kill_pidfile(p)


def _submit(args: list[str], env: dict[str, str]) -> tuple[str, str]:
    proc = subprocess.run(
        ["bash", str(REPO_ROOT / "benchmark.sh"), *args, "--slurm", "--sbatch-args", SBATCH_ARGS],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip(), proc.stderr


def _wait(job: str, env: dict[str, str], timeout: float) -> dict[str, str]:
    """Wait until job array `job` left the queue; return {array task id: final JobState}."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not subprocess.run(["squeue", "-h", "-j", job], capture_output=True, text=True, env=env).stdout.strip():
            break
        time.sleep(2)
    else:
        pytest.fail(f"job {job} still queued after {timeout} s")
    out = subprocess.run(["scontrol", "-o", "show", "job", job], capture_output=True, text=True, env=env).stdout
    states = {}
    for line in out.splitlines():
        fields = dict(f.split("=", 1) for f in line.split() if "=" in f)
        states[fields["ArrayTaskId"]] = fields["JobState"]
    return states


def test_smoke_preset_on_slurm_with_stand_in_scripts(slurm: dict[str, str], tmp_path: Path) -> None:
    repo = make_fake_script_dir(tmp_path / "repo")
    out = tmp_path / "runs"
    args = ["--preset", "smoke", "--script-dir", str(repo), "--python", "python3", "--output-dir", str(out)]
    env = {**slurm, "FAKE_CALL_LOG": str(tmp_path / "calls.jsonl"), "FAKE_CRASH_EXP": "eaudesac_small"}
    job, err = _submit(args, env)
    assert job.isdigit() and "11 to run" in err
    states = _wait(job, env, timeout=300)
    assert len(states) == 11
    assert sorted(states.values()) == ["COMPLETED"] * 10 + ["FAILED"]
    tasks = next((out / "_slurm").glob("*/tasks.tsv"))
    assert len(list(tasks.parent.glob(f"{job}_*.out"))) == 11  # one log per array task
    assert len(list(out.glob("*/*.cleanrl_model"))) == 10
    crashed = next(out.glob("Hopper-v5__eaudesac_small__1__*"))
    # Re-submitting the same sweep runs only the crashed run, resumed from its checkpoint.
    job2, err = _submit(args, env)
    assert "10 finished, 1 to run" in err
    assert _wait(job2, env, timeout=120) == {"0": "COMPLETED"}
    assert (crashed / "eaudesac_small.cleanrl_model").exists()
    resumed = [json.loads(x) for x in (tmp_path / "calls.jsonl").read_text().splitlines()][-1]
    assert resumed["argv"][resumed["argv"].index("--resume") + 1] == str(crashed)
    # Everything finished: nothing is submitted.
    job3, err = _submit(args, env)
    assert job3 == "" and "11 finished, 0 to run" in err


def test_smoke_preset_on_slurm_with_real_scripts(slurm: dict[str, str], tmp_path: Path) -> None:
    needed = [*ALGO_SCRIPTS, "tools/write_dqn_replay_dataset.py"]
    missing = [s for s in needed if not (REPO_ROOT / s).exists()]
    if missing:
        pytest.skip(f"algorithm scripts missing: {', '.join(missing)}")
    out = tmp_path / "runs"
    job, _ = _submit(["--preset", "smoke", "--output-dir", str(out)], slurm)
    states = _wait(job, slurm, timeout=3600)
    logs = {p.name: p.read_text()[-2000:] for p in (out / "_slurm").glob("*/*.out")}
    assert sorted(states.values()) == ["COMPLETED"] * 11, logs
    runs = [p for p in out.iterdir() if (p / "config.json").exists()]
    assert len(runs) == 11
    for run in runs:
        exp = run.name.split("__")[1]
        assert (run / f"{exp}.cleanrl_model").exists(), run
        assert (run / "metrics.jsonl").stat().st_size > 0, run
