"""From a validated spec to trials: grid and random search expand here, Optuna gets a define-by-run space.

Rules every search follows:
- top_k <= num_units is a constraint, not a filter after the fact: grid combinations that break it are never
  generated, random draws and Optuna suggest top_k within [low, min(high, num_units)]; no trial is wasted.
- keys that only exist for RIMs (model.num_units, model.top_k, ...) are varied only when model.kind is rims;
  baselines get one trial per distinct configuration of the keys that apply to them.
- seeds are their own axis: every configuration runs with every seed (grid / random: explicit trials, grouped
  by configuration; Optuna: Tune's Repeater, so the searcher sees the mean over seeds).
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import numpy as np

from .flat import is_rim_only, resolve
from .search import search_algorithm
from .spec_models import SweepSpec, base_config

__all__ = ["OptunaSpace", "expand", "optuna_space", "trial_points", "varying_keys"]


def _valid(flat: dict[str, Any]) -> bool:
    return flat.get("model.kind") != "rims" or flat["model.top_k"] <= flat["model.num_units"]


def _dedupe(configs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    seen, out = set(), []
    for c in configs:
        r = resolve(c)
        key = repr(sorted(r.items(), key=lambda kv: kv[0]))  # values may be lists
        if key not in seen:
            seen.add(key)
            out.append(r)
    return out


def expand(spec: SweepSpec) -> list[dict[str, Any]]:
    """Configurations (flat dicts, without seed) of an expanded search (grid, random: sweeps.search), constraint
    applied, grids deduplicated. A union of spaces expands each (random search: num_samples draws from each) and
    keeps the distinct ones."""
    if isinstance(spec.space, list):
        return _dedupe([c for sub in spec.subspecs() for c in expand(sub)])
    search = search_algorithm(spec.search.algorithm)
    if not search.expanded:
        raise ValueError(f"expand: search.algorithm {search.name!r} is not expanded (Optuna suggests)")
    base = base_config(spec)
    if not search.sampled:  # every combination of the grids
        keys = list(spec.space)
        grids = [spec.space[k]["grid"] for k in keys]
        configs = [{**base, **dict(zip(keys, combo, strict=True))} for combo in itertools.product(*grids)]
        return _dedupe([c for c in configs if _valid(c)])
    rng = np.random.RandomState(spec.search.seed)
    configs = []
    for _ in range(spec.search.num_samples):
        for _attempt in range(1000):
            c = {**base, **{k: _draw(rng, d) for k, d in spec.space.items() if k != "model.top_k"}}
            if "model.top_k" in spec.space and c["model.kind"] == "rims":
                c["model.top_k"] = _draw(rng, spec.space["model.top_k"], upper=c["model.num_units"])
            if c.get("model.top_k") is not None and _valid(c):
                configs.append(c)
                break
    return [resolve(c) for c in configs]


def _draw(rng: np.random.RandomState, dist: dict[str, Any], upper: int | None = None) -> Any:
    kind, arg = next(iter(dist.items()))
    if kind in ("grid", "choice"):
        values = [v for v in arg if upper is None or v <= upper]
        return values[rng.randint(len(values))] if values else None
    if kind == "uniform":
        return float(rng.uniform(arg[0], arg[1]))
    if kind == "loguniform":
        return float(math.exp(rng.uniform(math.log(arg[0]), math.log(arg[1]))))
    hi = arg[1] if upper is None else min(arg[1], upper)
    return int(rng.randint(arg[0], hi + 1)) if hi >= arg[0] else None


def varying_keys(spec: SweepSpec) -> list[str]:
    """The keys the spec's space (or any space of a union) varies, model.kind first, then in the spec's order:
    what trial run names and the progress table show (seed aside: its own axis)."""
    keys = dict.fromkeys(k for sub in spec.subspecs() for k in sub.space if k != "seed")
    return sorted(keys, key=lambda k: k != "model.kind")


def trial_points(spec: SweepSpec) -> list[dict[str, Any]]:
    """Every trial of a grid / random sweep: each configuration with each seed, seeds adjacent."""
    return [{**c, "seed": s} for c in expand(spec) for s in spec.seed_list]


class OptunaSpace:
    """A define-by-run space for OptunaSearch (picklable, so Tune can checkpoint the searcher): suggests the
    space's keys (kind first, top_k bounded by num_units, RIM-only keys only for rims) and returns the fixed
    keys as constants."""

    def __init__(self, space: dict[str, dict[str, Any]], base: dict[str, Any]) -> None:
        self.space, self.base = space, base
        self.order = sorted(space, key=lambda k: (k != "model.kind", k == "model.top_k", k))

    def __call__(self, trial: Any) -> dict[str, Any]:
        chosen: dict[str, Any] = {}
        for key in self.order:
            kind = chosen.get("model.kind", self.base["model.kind"])
            if kind != "rims" and is_rim_only(key):
                continue
            dist_kind, arg = next(iter(self.space[key].items()))
            if key == "model.top_k":
                units = chosen.get("model.num_units", self.base["model.num_units"])
                values = arg if dist_kind in ("grid", "choice") else list(range(arg[0], arg[1] + 1))
                valid = [v for v in values if v <= units]
                chosen[key] = trial.suggest_int(key, min(valid), max(valid))
            elif dist_kind in ("grid", "choice"):
                chosen[key] = trial.suggest_categorical(key, arg)
            elif dist_kind == "int":
                chosen[key] = trial.suggest_int(key, arg[0], arg[1])
            else:
                chosen[key] = trial.suggest_float(key, arg[0], arg[1], log=dist_kind == "loguniform")
        return {k: v for k, v in self.base.items() if k not in chosen}


def optuna_space(spec: SweepSpec) -> OptunaSpace:
    """The define-by-run space of a spec (see OptunaSpace)."""
    return OptunaSpace(dict(spec.space), base_config(spec))
