"""Checkpoints are written atomically: a write that fails (disk full) or is killed mid-way never leaves a
half-written checkpoint where a restarted trial reads it; a damaged file is refused with its path."""

from __future__ import annotations

import errno
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch

from sweeps import trial
from sweeps.trial import CHECKPOINT_FILE, load_checkpoint, save_checkpoint
from tests.sweeps.servers import GUARD_S

SIZE = 4_000_000  # floats: a 16 MB checkpoint

# A writer that says what it does, one line per event ("start STEP", "begin STEP", "saved STEP", "paused BYTES"),
# so that the test kills it at a moment defined by its progress, never by the clock. argv: the directory and where
# its second write stops and waits for the SIGKILL: "free" (nowhere: it is killed while it runs), a fraction of
# the file ("0.4": torch.save has written 40% of the bytes), "fsync1" (every byte written, before the rename),
# "fsync2" (after the rename, at the directory's fsync).
WRITER = f"""
import itertools, os, signal, sys, torch
from pathlib import Path
from sweeps import trial

d, stop = Path(sys.argv[1]), sys.argv[2]
final = d / trial.CHECKPOINT_FILE
real_save, real_fsync = torch.save, os.fsync


def say(*words):
    print(*words, flush=True)


def wait_for_the_kill(where):
    say("paused", where)
    while True:
        signal.pause()


class StopsPartWay:  # the file torch.save writes to; stops before byte `at`
    def __init__(self, f, at):
        self.f, self.at, self.n = f, at, 0

    def write(self, b):
        if self.n + len(b) > self.at:
            self.f.write(b[: self.at - self.n])
            self.f.flush()
            wait_for_the_kill(self.at)
        self.n += len(b)
        return self.f.write(b)

    def flush(self):
        self.f.flush()


def stopping_fsync(k):
    calls = []

    def fsync(fd):
        calls.append(fd)
        if len(calls) == k:
            wait_for_the_kill(stop)
        return real_fsync(fd)
    return fsync


step = int(trial.load_checkpoint(d)["step"]) if final.exists() else 0
say("start", step)
for saves in itertools.count():
    step += 1
    if saves == 1 and stop.startswith("fsync"):
        trial.os.fsync = stopping_fsync(int(stop[-1]))
    elif saves == 1 and stop != "free":
        at = int(float(stop) * final.stat().st_size)
        torch.save = lambda obj, f: real_save(obj, StopsPartWay(f, at))
    say("begin", step)
    trial.save_checkpoint(d, {{"step": step, "w": torch.full(({SIZE},), float(step))}})
    say("saved", step)
"""


def state(step: int) -> dict:
    return {"step": step, "w": torch.full((1000,), float(step))}


def test_a_failed_write_leaves_the_previous_checkpoint(tmp_path, monkeypatch):
    save_checkpoint(tmp_path, state(1))
    real_save = torch.save

    def disk_full(obj, f):  # writes part of the file, then the disk is full (simulated: no small fs to fill here)
        real_save(obj, f)
        f.truncate(100)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(trial.torch, "save", disk_full)
    with pytest.raises(OSError, match="No space left"):
        save_checkpoint(tmp_path, state(2))
    assert load_checkpoint(tmp_path)["step"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == [CHECKPOINT_FILE], "no temporary file left behind"


class Writer:
    """The writer as a process, and its progress lines as they come."""

    def __init__(self, directory: Path, stop: str) -> None:
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
        self.proc = subprocess.Popen([sys.executable, "-c", WRITER, str(directory), stop], env=env,
                                     stdout=subprocess.PIPE, text=True)
        self.lines: queue.Queue[list[str] | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.put(line.split())
        self.lines.put(None)

    def next(self, event: str) -> str:
        """The writer's next report of `event` (earlier events are passed over)."""
        while True:
            try:
                words = self.lines.get(timeout=GUARD_S)  # a failure guard for a stuck writer, not a pace
            except queue.Empty:
                pytest.fail(f"the writer said nothing for {GUARD_S} s while the test waited for '{event}'")
            if words is None:
                pytest.fail(f"the writer exited ({self.proc.wait()}) before it said '{event}'")
            if words[0] == event:
                return words[1]

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait()


@pytest.mark.integration
@pytest.mark.slow
def test_sigkill_during_writes_never_leaves_a_torn_checkpoint(tmp_path):
    """A real process writes 16 MB checkpoints in a loop and is SIGKILLed 8 times, each time restarted from what
    it left. Each kill comes once the writer has saved a new step: in 5 rounds at a chosen point of its next write
    (at byte 0, at 40% and 99% of the file, before the rename, after it), in 3 wherever it is by then. Every
    checkpoint read back is whole, consistent with its step, and the last one saved before the kill."""
    d, torn_dir = tmp_path / "ckpt", tmp_path / "torn"
    d.mkdir()
    torn_dir.mkdir()
    tmp = d / (CHECKPOINT_FILE + ".tmp")
    torn_moments, steps = 0, []
    for stop in ("0.0", "free", "0.4", "fsync1", "free", "0.99", "fsync2", "free"):
        writer = Writer(d, stop)
        try:
            assert int(writer.next("start")) == (steps[-1] if steps else 0), "restarted from the last checkpoint"
            saved = int(writer.next("saved"))  # a new step is whole on disk: now the kill
            if stop == "free":
                writer.next("begin")  # it has begun the next write: kill it wherever it is by now
            else:
                where = writer.next("paused")
        finally:
            writer.kill()
        if stop == "fsync2":  # renamed: the new checkpoint is the one read back
            assert not tmp.exists()
            saved += 1
        elif stop != "free":
            assert tmp.exists(), "the kill landed during the write"
            if stop != "fsync1":
                assert tmp.stat().st_size == int(where), "the write stopped at the chosen byte"
            if 0 < tmp.stat().st_size < (d / CHECKPOINT_FILE).stat().st_size:
                shutil.copy(tmp, torn_dir / CHECKPOINT_FILE)
                with pytest.raises(ValueError, match="unreadable"):  # torn: loading it would have failed
                    load_checkpoint(torn_dir)
        torn_moments += tmp.exists()
        ckpt = load_checkpoint(d)
        assert torch.equal(ckpt["w"], torch.full((SIZE,), float(ckpt["step"]))), "a whole, consistent state"
        if stop == "free":
            assert int(ckpt["step"]) >= saved
        else:
            assert int(ckpt["step"]) == saved, "the last checkpoint saved before the kill"
        steps.append(int(ckpt["step"]))
    assert steps == sorted(set(steps)), "each restart saved a new step after the last checkpoint"
    assert torn_moments >= 4, "the kills at byte 0, 40%, 99% and before the rename each left a torn .tmp"
    print(f"\nRELIABILITY checkpoints: 8 SIGKILLs, {torn_moments} during a write (a torn .tmp left, never read); "
          f"8/8 reloads whole, steps {steps}")


@pytest.mark.parametrize("keep", [0.5, 0.0], ids=["half", "empty"])  # empty: torch.load's EOFError has no message
def test_a_damaged_checkpoint_is_refused_with_its_path(tmp_path, keep):
    save_checkpoint(tmp_path, state(3))
    data = (tmp_path / CHECKPOINT_FILE).read_bytes()
    (tmp_path / CHECKPOINT_FILE).write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(ValueError, match=f"checkpoint {tmp_path / CHECKPOINT_FILE} is unreadable"):
        load_checkpoint(tmp_path)
