"""Spill files: a run's tracking operations as JSON lines, appended in order and flushed to disk, so that
``rims tracking replay FILE`` (writer.replay) can send them later. A trial's file starts with its "open"
operation, a sweep's (``sweep.jsonl``) with its "sweep" operation."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

__all__ = ["log", "read_ops", "write_ops"]

# every tracking module logs here: users filter outage and spill warnings by this name
log = logging.getLogger("rims.tracking")


def write_ops(path: str | Path, ops: list[dict[str, Any]], *, new: bool = False) -> None:
    """Append ops to the spill file at path (new: replace what it held), each line on disk before returning:
    a crash leaves at most a torn last line, which read_ops skips."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w" if new else "a") as f:
        for op in ops:
            f.write(json.dumps(op, default=str) + "\n")
        f.flush()
        os.fsync(f.fileno())


def read_ops(path: str | Path) -> list[dict[str, Any]]:
    """The operations of a spill file; a last line cut short by a crash is ignored (it was never acknowledged)."""
    ops = []
    for line in Path(path).read_text().splitlines():
        try:
            ops.append(json.loads(line))
        except json.JSONDecodeError:
            log.warning("tracking: skipping a torn line at the end of %s", path)
    return ops
