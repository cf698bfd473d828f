"""A time-boxed child process whose output goes both to a log file and to the terminal.

perf/gpu_check.py runs each of its stages through :func:`run_stage`: a stage that outlives its
time is interrupted (SIGINT to its process group, so pytest and the sweep print what they have;
SIGKILL after a grace period), a stage that fails is reported, and in both cases the next stage
runs.
"""
from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

GRACE_S = 20.0  # after SIGINT, before SIGKILL


@dataclass
class StageResult:
    """How one stage ended: status is "passed", "failed", "timed out" or "skipped"."""

    name: str
    status: str
    seconds: float = 0.0
    allotted_s: float = 0.0
    returncode: int | None = None
    log: str | None = None
    detail: str = ""

    def as_dict(self) -> dict:
        return asdict(self)


def _tee(stream, log_file, prefix: str, echo: bool) -> None:
    for line in iter(stream.readline, b""):
        log_file.write(line)
        log_file.flush()
        if echo:
            sys.stdout.write(prefix + line.decode(errors="replace"))
            sys.stdout.flush()


def _interruptible() -> None:
    """In the child, before it runs: SIGINT back to its default, so a Python child turns it into
    KeyboardInterrupt. A job started in the background by a non-interactive shell (``cmd &``, as
    a CI runner or a remote command may start gpu_check) inherits SIGINT ignored, and Python then
    never installs its handler: the interrupt would do nothing and the stage would be killed."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def run_stage(name: str, command: list[str], log_path: Path, allotted_s: float, env: dict[str, str] | None = None,
              cwd: Path | None = None, echo: bool = True) -> StageResult:
    """Run ``command`` for at most ``allotted_s`` seconds, its stdout and stderr into ``log_path``."""
    start = time.monotonic()
    with log_path.open("wb") as log_file:
        log_file.write(f"$ {shlex.join(command)}\n".encode())
        log_file.flush()
        try:
            proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=cwd,
                                    env=env, start_new_session=True, preexec_fn=_interruptible)
        except OSError as e:
            return StageResult(name, "failed", time.monotonic() - start, allotted_s, None, log_path.name, f"could not start: {e}")
        reader = threading.Thread(target=_tee, args=(proc.stdout, log_file, f"[{name}] ", echo), daemon=True)
        reader.start()
        timed_out = False
        try:
            proc.wait(timeout=allotted_s)
        except subprocess.TimeoutExpired:
            timed_out = True
            os.killpg(proc.pid, signal.SIGINT)
            try:
                proc.wait(timeout=GRACE_S)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        reader.join(timeout=GRACE_S)
    seconds = time.monotonic() - start
    if timed_out:
        detail = f"interrupted after its {allotted_s:.0f} s"
        return StageResult(name, "timed out", seconds, allotted_s, proc.returncode, log_path.name, detail)
    status = "passed" if proc.returncode == 0 else "failed"
    return StageResult(name, status, seconds, allotted_s, proc.returncode, log_path.name,
                       "" if status == "passed" else f"exit code {proc.returncode}")
