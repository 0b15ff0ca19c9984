"""Flat configs: the dotted keys (``model.comm.enabled``) shared by the spec, the Tune config, MLflow params and
Parquet columns, and the few rules that apply to them.

A trial's config is a flat dict of dotted keys -> values plus ``seed``. Keys that only a RIM has (RIMConfig's
fields but hidden_size, under ``model.``) are dropped for the baselines: never varied, never logged.
Imports nothing but the standard library and rims_core.config (which imports no torch).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

from rims_core.config import RIM_ONLY_KEYS

__all__ = ["RIM_ONLY", "config_id", "flatten", "is_rim_only", "nest", "resolve"]

RIM_ONLY = tuple(f"model.{k}" for k in RIM_ONLY_KEYS)  # model.num_units, model.top_k, ..., model.comm


def is_rim_only(key: str) -> bool:
    """Whether a dotted key applies to model.kind == "rims" only (``model.comm.heads`` does)."""
    return any(key == p or key.startswith(p + ".") for p in RIM_ONLY)


def flatten(value: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    """{"comm": {"enabled": x}} under prefix "model" -> {"model.comm.enabled": x}; lists and scalars are leaves."""
    flat: dict[str, Any] = {}
    for k, v in value.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        if isinstance(v, Mapping):
            flat.update(flatten(v, key))
        else:
            flat[key] = v
    return flat


def nest(flat: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    """{"model.comm.enabled": x, ...} -> {"comm": {"enabled": x}, ...} for the keys under prefix."""
    out: dict[str, Any] = {}
    for key, value in flat.items():
        if not key.startswith(prefix + "."):
            continue
        node = out
        *parents, leaf = key[len(prefix) + 1:].split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return out


def resolve(flat: Mapping[str, Any]) -> dict[str, Any]:
    """A trial's flat config as it applies: RIM-only keys dropped for baselines, Tune's own keys dropped."""
    kind = flat.get("model.kind")
    return {k: v for k, v in flat.items()
            if not k.startswith("__") and not (kind != "rims" and is_rim_only(k))}


def config_id(flat: Mapping[str, Any]) -> str:
    """A stable id of a configuration, the same for all its seeds (groups seeds in tables)."""
    items = sorted((k, v) for k, v in resolve(flat).items() if k != "seed")
    return hashlib.sha1(repr(items).encode()).hexdigest()[:10]
