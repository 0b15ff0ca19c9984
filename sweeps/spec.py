"""The sweep spec: read, validated before Ray starts or any MLflow run exists, and what a sweep logs of it.

One vocabulary: the dotted keys of the spec (``model.num_units``, ``optim.lr``, ``task.blank``) are the keys of
the Tune config, the MLflow params and the Parquet columns. Every error names its path in the spec.

Loading imports no torch, Ray, MLflow or Optuna: a refused spec is answered at once. The pieces: the models
(spec_models.py), the checks across fields (spec_checks.py), pydantic's errors as paths (spec_errors.py).
"""

from __future__ import annotations

import copy
import difflib
import json
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from .spec_checks import validate
from .spec_errors import drop, pydantic_errors
from .spec_models import SpecError, SweepSpec, base_config
from .tasks import TASKS

# the entry points callers import from here; the spec's models are in spec_models, its checks in spec_checks
__all__ = ["SpecError", "SweepSpec", "base_config", "load_spec", "preflight_errors", "smoke_spec", "sweep_params"]


def _build(raw: dict[str, Any]) -> tuple[SweepSpec | None, list[tuple[str, str]], frozenset[str]]:
    """The spec from its YAML mapping, with every problem of its fields: each invalid value is reported, then
    replaced by its default (an unknown key removed) and the model built again, so the checks across fields
    (load_spec) can still run on the rest. Returns (spec or None, errors, the paths replaced)."""
    data = copy.deepcopy(raw)
    errors: list[tuple[str, str]] = []
    unsure: set[str] = set()
    for _ in range(4):  # field errors, then the errors of validators that need valid fields
        try:
            return SweepSpec(**data), errors, frozenset(unsure)
        except ValidationError as e:
            found, faulty = pydantic_errors(e, SweepSpec, data)
            errors += [(p, m) for p, m in found if not m.startswith("task.name:")]  # load_spec names it
            if "name" not in data or not isinstance(data.get("name"), str):
                data["name"] = "spec"  # a placeholder, to check the rest
            dropped = [drop(data, parts) for parts in faulty if parts and parts != ["name"]]
            if not dropped or None in dropped:
                return None, errors, frozenset(unsure)
            unsure.update(d for d in dropped if d)
    return None, errors, frozenset(unsure)


def _read(source: str | Path | dict[str, Any]) -> dict[str, Any]:
    if isinstance(source, dict):
        raw = source
    else:
        path = Path(source)
        if not path.is_file():
            raise SpecError([(str(path), "no such spec file")])
        try:
            raw = yaml.safe_load(path.read_text())
        except yaml.YAMLError as e:
            raise SpecError([(str(path), f"malformed YAML: {e}")]) from None
    if not isinstance(raw, dict):
        raise SpecError([("<spec>", f"expected a mapping at the top level, got {type(raw).__name__}")])
    return raw


def preflight_errors(spec: SweepSpec) -> list[tuple[str, str]]:
    """The task's checks of this machine (data files there and whole, the game installed), on its settings
    without the keys it does not know (a typo does not hide a missing data folder); nothing if other settings
    are invalid (the check might read one of them)."""
    task = {k: v for k, v in spec.task.items() if k != "name"}
    try:
        settings = spec.task_cls.settings_model(**task)
    except ValidationError as e:
        if any(err["type"] != "extra_forbidden" for err in e.errors()):
            return []
        unknown = {err["loc"][0] for err in e.errors()}
        settings = spec.task_cls.settings_model(**{k: v for k, v in task.items() if k not in unknown})
    return spec.task_cls.preflight(settings)


def load_spec(source: str | Path | dict[str, Any], *, preflight: bool = False) -> SweepSpec:
    """Parse and validate a spec (a YAML path or a dict). Raises SpecError listing every problem by path, all
    at once: the fields, the space, the checks across fields and, with ``preflight``, the task's checks of this
    machine (data files, the game), which ``rims sweep run`` / ``local`` / ``validate`` and ``rims rl train``
    ask for (``rims sweep submit`` does not: the data are where the sweep runs)."""
    raw = _read(source)
    errors: list[tuple[str, str]] = []
    task = raw.get("task")
    if not isinstance(task, dict) or task.get("name") not in TASKS:
        got = task.get("name") if isinstance(task, dict) else task
        close = difflib.get_close_matches(str(got), sorted(TASKS), n=1)
        errors.append(("task.name", f"expected one of {sorted(TASKS)}, got {got!r}"
                                    + (f"; did you mean {close[0]!r}?" if close else "")))
    spec, field_errors, unsure = _build(raw)
    errors += field_errors
    if spec is not None:
        errors += validate(spec, unsure)
        if preflight:
            errors += preflight_errors(spec)
    if errors or spec is None:
        raise SpecError(list(dict.fromkeys(errors)) or [("<spec>", "invalid")])
    return spec


def smoke_spec(spec: SweepSpec) -> SweepSpec:
    """Every trial for a few steps, as its task defines a smoke run: for tests and first contact (``--smoke``)."""
    task, optim = spec.task_cls.smoke(dict(spec.task), spec.optim.model_dump())
    return spec.model_copy(update={"task": task, "optim": spec.optim.model_copy(update=optim)})


def sweep_params(spec: SweepSpec, smoke: bool) -> dict[str, Any]:
    """The sweep-level settings logged as the parent run's params (dotted names as in the spec)."""
    metric, mode = spec.objective
    return {"search.algorithm": spec.search.algorithm, "search.num_samples": spec.search.num_samples,
            "search.metric": metric, "search.mode": mode, "scheduler.name": spec.scheduler.name,
            "seeds": json.dumps(spec.seed_list), "resources.cpu": spec.resources.cpu,
            "resources.gpu": spec.resources.gpu, "resources.triton": spec.resources.triton,
            "resources.cuda_graph": spec.resources.cuda_graph, "resources.recompute": spec.resources.recompute,
            "smoke": smoke,
            "task.name": spec.task["name"]}
