"""A trial run's name: what differs between the sweep's trials (``rims num_units=6 top_k=4 seed=0``)."""

from __future__ import annotations

import json
from typing import Any

__all__ = ["run_name"]


def run_name(config: dict[str, Any], varying: list[str]) -> str:
    """A trial run's name: what differs between the sweep's trials, under the spec's names (e.g. ``rims
    num_units=6 top_k=4 comm.enabled=true seed=0``): model.kind's value, then each varied key the
    configuration has (RIM-only keys are absent from a baseline's) as ``key=value``, the key without its
    section (``model.``, ``optim.``, ``task.``) unless that is ambiguous, then the seed. A function of the
    configuration alone, so a resumed trial, or the same configuration and seed, gets the same name."""
    tails = [k.split(".", 1)[-1] for k in varying]
    parts = [_short(config["model.kind"])] if "model.kind" in config else []
    for key, tail in zip(varying, tails, strict=True):
        if key in config and key not in ("model.kind", "seed"):
            parts.append(f"{tail if tails.count(tail) == 1 else key}={_short(config[key])}")
    if "seed" in config:
        parts.append(f"seed={config['seed']}")
    return " ".join(parts).replace("'", "").replace("\\", "")[:200] or "trial"


def _short(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list | dict):
        return json.dumps(value, separators=(",", ":"))
    return str(value)
