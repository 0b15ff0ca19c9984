"""Real servers for integration tests: free ports, an `mlflow server` on 127.0.0.1, process clean-up by PID."""

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
from collections.abc import Iterator
from pathlib import Path

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout: float = 60) -> None:
    end = time.time() + timeout
    while time.time() < end:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except urllib.error.HTTPError:
            return  # it answered (the dashboard says 401 without Ray's auth token): it is up
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"{url} did not answer within {timeout} s")


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
        wait_http(f"http://127.0.0.1:{port}/health", timeout=120)
    except TimeoutError:
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
