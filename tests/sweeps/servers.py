"""Real servers for integration tests: free ports, an `mlflow server` on 127.0.0.1, process clean-up by PID, and
waiting on progress.

A test waits for what it needs to have happened (a file, a line, a run, an HTTP answer), never for a fixed time:
the machine may be loaded to any degree. GUARD_S bounds every such wait only so that a stuck test fails in the
end; it is never what makes a test pass.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

BIN = Path(sys.executable).parent
GUARD_S = 900.0  # the failure guard of a wait (15 min: far past any loaded machine's pace)
POLL_S = 0.1  # how often a wait looks again

T = TypeVar("T")


def wait_until(condition: Callable[[], T], what: str, guard_s: float = GUARD_S,
               alive: subprocess.Popen | None = None) -> T:
    """Poll condition until it returns something truthy, and return that. alive: a process the wait depends on;
    its exit fails the wait at once. Raises TimeoutError naming `what` after guard_s."""
    end = time.monotonic() + guard_s
    while True:
        got = condition()
        if got:
            return got
        if alive is not None and alive.poll() is not None:
            raise RuntimeError(f"waiting for {what}: the process {alive.args!r} exited ({alive.returncode})")
        if time.monotonic() > end:
            raise TimeoutError(f"{what}: not seen within the {guard_s:.0f} s failure guard")
        time.sleep(POLL_S)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5):
            return True
    except urllib.error.HTTPError:
        return True  # it answered (the dashboard says 401 without Ray's auth token): it is up
    except OSError:
        return False


def wait_http(url: str, guard_s: float = GUARD_S, alive: subprocess.Popen | None = None) -> None:
    """Until url answers HTTP (any status)."""
    wait_until(lambda: answers(url), f"an HTTP answer from {url}", guard_s, alive)


def pids_with(marker: str) -> list[int]:
    """PIDs whose command line contains marker (a unique temp dir or port of ours)."""
    out = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if marker in cmd and int(proc.name) != os.getpid():
                out.append(int(proc.name))
    return out


def session_pids(sid: int) -> dict[int, str]:
    """PID -> command line of the live processes in session sid (a process started with start_new_session=True
    heads a session whose id is its PID; what it starts stays in it, Ray's raylet and workers included)."""
    out = {}
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                stat = (proc / "stat").read_text()
                cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
            except OSError:
                continue
            state, _ppid, _pgrp, session = stat[stat.rindex(")") + 2:].split()[:4]
            if int(session) == sid and state != "Z":
                out[int(proc.name)] = cmd
    return out


def kill(pids: list[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def start_mlflow(root: Path, port: int, env: dict[str, str] | None = None, workers: int = 1,
                 log: Path | None = None) -> subprocess.Popen:
    """`mlflow server` on 127.0.0.1:port over root/mlflow.db (the same store across restarts); waits until it
    answers. One worker and no job runner by default (~0.5 GB). log: where its stderr goes."""
    env = {**(env or os.environ), "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    err = open(log, "ab") if log else subprocess.DEVNULL  # noqa: SIM115 - owned by the server process
    proc = subprocess.Popen(
        [str(BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers),
         "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}", "--default-artifact-root", str(root / "artifacts")],
        env=env, stdout=err, stderr=err, start_new_session=True)
    try:
        wait_http(f"http://127.0.0.1:{port}/health", alive=proc)
    except (TimeoutError, RuntimeError):
        stop_mlflow(proc)
        raise
    return proc


def stop_mlflow(proc: subprocess.Popen) -> None:
    """SIGKILL the server and its workers (an outage, not a shutdown); returns once they are gone."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


@contextlib.contextmanager
def mlflow_server(root: Path, env: dict[str, str] | None = None, workers: int = 1,
                  log: Path | None = None) -> Iterator[str]:
    """`mlflow server` on 127.0.0.1 on a free port, yields its URL; killed on exit."""
    port = free_port()
    proc = start_mlflow(root, port, env, workers, log)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        stop_mlflow(proc)
