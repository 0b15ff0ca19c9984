"""The sweep spec: pydantic models of the YAML, validated before Ray starts or any MLflow run exists.

One vocabulary: the dotted keys of the spec (``model.num_units``, ``optim.lr``, ``task.blank``) are the keys of
the Tune config, the MLflow params and the Parquet columns. Every error names its path in the spec.
"""

from __future__ import annotations

import copy
import difflib
import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from rims_core import RIMConfig, RIMConfigError

from .tasks import TASKS, RLTask

__all__ = [
    "DISTRIBUTIONS",
    "ModelSpec",
    "OptimSpec",
    "SchedulerSpec",
    "SearchSpec",
    "SpecError",
    "StopSpec",
    "SweepSpec",
    "load_spec",
    "preflight_errors",
    "smoke_spec",
    "sweep_params",
]

DISTRIBUTIONS = ("grid", "choice", "uniform", "loguniform", "int")


class SpecError(ValueError):
    """A spec is invalid; ``errors`` holds (path, message) pairs, all reported at once."""

    def __init__(self, errors: list[tuple[str, str]]) -> None:
        self.errors = errors
        super().__init__("invalid sweep spec:\n" + "\n".join(f"  {p}: {m}" for p, m in errors))


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AttentionSpec(_Strict):
    heads: int = Field(1, ge=1, description="input attention heads (paper: 1 for copying / sMNIST)")
    key_size: int = Field(64, ge=1, description="input attention key size (paper: 64)")
    value_size: int | None = Field(None, ge=1, description="value size per head; None = 4 x unit size")
    dropout: float = Field(0.1, ge=0.0, lt=1.0, description="dropout on the input attention probabilities")


class CommSpec(_Strict):
    enabled: bool = Field(True, description="communication between units on/off")
    heads: int = Field(4, ge=1)
    key_size: int = Field(32, ge=1)
    value_size: int = Field(32, ge=1)
    dropout: float = Field(0.1, ge=0.0, lt=1.0)
    output: Literal["residual", "gated_residual", "convex"] | None = Field(
        None, description="how the read enters the state: residual (paper's text, unbounded), gated_residual "
        "(official code; |h| < 2 with LSTM units), convex (|h| <= 1); None = bounded form for the cell "
        "(gated_residual for LSTM units, convex for GRU units); see docs/model.md")


class ModelSpec(_Strict):
    """``model.*``: the recurrent core (RIM or a baseline) and its settings."""

    kind: Literal["rims", "lstm", "gru"] = Field("rims", description="model family")
    hidden_size: int = Field(600, ge=1, description="total hidden size (divisible by num_units for rims)")
    num_layers: int = Field(1, ge=1)
    num_units: int = Field(6, ge=1, description="k_T (rims only)")
    top_k: int = Field(4, ge=1, description="k_A, active units per step (rims only), <= num_units")
    cell: Literal["lstm", "gru"] = Field("lstm", description="per-unit cell (rims only)")
    selection: Literal["topk", "random", "all"] = Field("topk", description="selection rule (rims only)")
    input_attention: AttentionSpec = Field(default_factory=AttentionSpec)
    comm: CommSpec = Field(default_factory=CommSpec)


class OptimSpec(_Strict):
    """``optim.*``: Adam with gradient clipping."""

    lr: float = Field(1e-3, gt=0, description="Adam learning rate")
    batch_size: int = Field(64, ge=1)
    max_steps: int = Field(1000, ge=1, description="training steps per trial")
    grad_clip: float = Field(1.0, gt=0, description="max gradient norm")
    eval_every: int = Field(100, ge=1, description="steps between evaluations, reports and checkpoints")


class SearchSpec(_Strict):
    algorithm: Literal["grid", "random", "optuna"] = "grid"
    num_samples: int = Field(1, ge=1, description="configurations to draw (random, optuna); grid: ignored")
    metric: str | None = Field(None, description="metric to optimise; default: the task's val objective")
    mode: Literal["min", "max"] | None = None
    seed: int = Field(0, description="seed of the search itself (random draws, Optuna's sampler)")


class SchedulerSpec(_Strict):
    name: Literal["none", "asha"] = "none"
    grace_period: int = Field(1, ge=1, description="ASHA: evaluations before a trial can be stopped")
    reduction_factor: float = Field(3, gt=1)


class StopSpec(_Strict):
    """When trials (or the sweep) stop before optim.max_steps."""

    metric: str | None = Field(None, description="stop a trial once this metric reaches threshold")
    threshold: float | None = Field(None, description="the value of stop.metric that ends a trial")
    mode: Literal["min", "max"] = Field("min", description="min: stop when metric <= threshold; max: >=")
    time_budget_s: float | None = Field(None, gt=0, description="wall-clock budget of the whole sweep")

    @model_validator(mode="after")
    def _pair(self) -> StopSpec:
        if (self.metric is None) != (self.threshold is None):
            raise ValueError("stop.metric and stop.threshold go together: give both or neither")
        return self


class ResourcesSpec(_Strict):
    cpu: float = Field(1, gt=0, description="CPUs Ray reserves per trial (each trial runs one torch thread)")
    gpu: float = Field(0, ge=0, description="GPUs per trial (a fraction shares one GPU)")


class SweepSpec(_Strict):
    """The whole spec. ``space`` maps dotted keys to one distribution each."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$", description="sweep name (also the results folder)")
    experiment: str | None = Field(None, description="MLflow experiment; default: the sweep name")
    task: dict[str, Any]
    model: ModelSpec = Field(default_factory=ModelSpec)
    optim: OptimSpec = Field(default_factory=OptimSpec)
    seeds: int | list[int] = Field(1, description="n (seeds 0..n-1) or an explicit list: every configuration runs each")
    space: dict[str, Any] | list[dict[str, Any]] = Field(
        default_factory=dict, description="dotted key -> distribution; or a list of such spaces, run as their union")
    search: SearchSpec = Field(default_factory=SearchSpec)
    scheduler: SchedulerSpec = Field(default_factory=SchedulerSpec)
    resources: ResourcesSpec = Field(default_factory=ResourcesSpec)
    stop: StopSpec = Field(default_factory=StopSpec)
    max_concurrent: int = Field(0, ge=0, description="max trials at once; 0 = as many as resources allow")
    max_failures: int = Field(2, ge=0, description="retries of a trial after a crash (node loss), from its checkpoint")

    @field_validator("seeds", mode="before")
    @classmethod
    def _seeds(cls, v: Any) -> Any:
        ints = isinstance(v, list) and all(isinstance(s, int) and not isinstance(s, bool) for s in v)
        if isinstance(v, bool) or not (isinstance(v, int) or ints):
            raise ValueError(f"expected a positive number of seeds or a list of integer seeds, got {v!r}")
        if isinstance(v, int) and v < 1:
            raise ValueError(f"expected a positive number of seeds or a list, got {v}")
        if isinstance(v, list) and (not v or len(set(v)) != len(v)):
            raise ValueError(f"expected a non-empty list of distinct seeds, got {v}")
        return v

    @field_validator("space", mode="before")
    @classmethod
    def _space(cls, v: Any) -> Any:
        if isinstance(v, list) and not all(isinstance(s, dict) for s in v):
            raise ValueError(f"expected a list of spaces (mappings of dotted keys to distributions), got {v!r}")
        if not isinstance(v, dict | list):
            raise ValueError("expected a mapping of dotted keys to distributions ({grid: [...]}, {uniform: [low, "
                             f"high]}}, ...), or a list of such mappings, got {v!r}")
        return v

    @model_validator(mode="before")
    @classmethod
    def _task_optim_defaults(cls, data: Any) -> Any:
        """RL tasks bring their own optim.* defaults (learning rate, budget in env steps, minibatch)."""
        if isinstance(data, dict) and isinstance(data.get("task"), dict):
            task_cls = TASKS.get(data["task"].get("name"))
            defaults = task_cls.optim_defaults if task_cls is not None else {}
            if defaults and (data.get("optim") is None or isinstance(data.get("optim"), dict)):
                data = {**data, "optim": {**defaults, **(data.get("optim") or {})}}
        return data

    @model_validator(mode="after")
    def _task_known(self) -> SweepSpec:
        name = self.task.get("name")
        if name not in TASKS:
            raise ValueError(f"task.name: expected one of {sorted(TASKS)}, got {name!r}")
        return self

    def subspecs(self) -> list[SweepSpec]:
        """One spec per space of a union (a spec with one space: itself)."""
        if isinstance(self.space, dict):
            return [self]
        return [self.model_copy(update={"space": sub}) for sub in self.space]

    @property
    def space_keys(self) -> list[str]:
        """Every key any of the spaces varies."""
        return sorted({k for sub in self.subspecs() for k in sub.space})

    @property
    def seed_list(self) -> list[int]:
        return list(range(self.seeds)) if isinstance(self.seeds, int) else list(self.seeds)

    @property
    def task_cls(self):
        return TASKS[self.task["name"]]

    def task_settings(self, overrides: dict[str, Any] | None = None):
        values = {k: v for k, v in self.task.items() if k != "name"}
        values.update(overrides or {})
        return self.task_cls.settings_model(**values)

    @property
    def objective(self) -> tuple[str, str]:
        metric, mode = self.task_cls.objective
        return self.search.metric or metric, self.search.mode or (mode if self.search.metric is None else "min")


def base_config(spec: SweepSpec) -> dict[str, Any]:
    """The fixed part of every trial's flat config: dotted keys -> values (before the space is applied)."""
    flat: dict[str, Any] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, BaseModel):
            value = value.model_dump()
        if isinstance(value, dict):
            for k, v in value.items():
                walk(f"{prefix}.{k}", v)
        else:
            flat[prefix] = value

    walk("model", spec.model)
    walk("optim", spec.optim)
    try:  # every task setting, defaults included, so a run's params say everything it was trained with
        settings = spec.task_settings().model_dump()
    except (ValidationError, TypeError):
        settings = {}  # reported by validate()
    for k, v in {**settings, **spec.task}.items():
        flat[f"task.{k}"] = v
    return flat


def known_keys(spec: SweepSpec) -> set[str]:
    keys = set(base_config(spec))
    keys |= {f"task.{k}" for k in spec.task_cls.settings_model.model_fields}
    return keys - {"task.name"}


def _check_distribution(path: str, dist: Any) -> list[tuple[str, str]]:
    if not isinstance(dist, dict) or len(dist) != 1 or next(iter(dist)) not in DISTRIBUTIONS:
        return [(path, f"expected one of {{{', '.join(d + ': ...' for d in DISTRIBUTIONS)}}}, got {dist!r}")]
    kind, arg = next(iter(dist.items()))
    if kind in ("grid", "choice"):
        if not isinstance(arg, list) or not arg:
            return [(f"{path}.{kind}", f"expected a non-empty list of values, got {arg!r}")]
        return []
    ok = isinstance(arg, list) and len(arg) == 2 and all(isinstance(a, int | float) and not isinstance(a, bool)
                                                          for a in arg)
    if not ok or not arg[0] < arg[1] + (1 if kind == "int" else 0):
        return [(f"{path}.{kind}", f"expected [low, high] with low < high, got {arg!r}")]
    if kind == "loguniform" and arg[0] <= 0:
        return [(f"{path}.{kind}", f"expected low > 0 for a log-uniform range, got {arg!r}")]
    if kind == "int" and not all(isinstance(a, int) for a in arg):
        return [(f"{path}.{kind}", f"expected integer bounds, got {arg!r}")]
    return []


def validate(spec: SweepSpec, unsure: frozenset[str] = frozenset()) -> list[tuple[str, str]]:
    """Checks across fields (the pydantic models check each field). Empty list = valid.

    unsure: paths whose given value was invalid and was replaced by its default to check the rest (see
    load_spec); checks that read one of them are skipped, so a bad value is reported once, not again as a
    mismatch between its default and another field."""
    def sure(*paths: str) -> bool:
        return not any(u == p or u.startswith(p + ".") or p.startswith(u + ".") for u in unsure for p in paths)

    if isinstance(spec.space, list):
        errors: list[tuple[str, str]] = []
        if not spec.space:
            errors.append(("space", "expected a space or a non-empty list of spaces, got []"))
        elif spec.search.algorithm == "optuna" and sure("search.algorithm"):
            errors.append(("space", "a list of spaces (a union) works with grid and random search; Optuna needs "
                                    "one space"))
        for i, sub in enumerate(spec.subspecs() or [spec.model_copy(update={"space": {}})]):
            errors += [(p.replace("space.", f"space[{i}].", 1) if p.startswith("space.") else p, m)
                       for p, m in validate(sub, unsure)]
        return list(dict.fromkeys(errors))  # the non-space errors repeat for every sub-space
    errors = []
    keys = known_keys(spec)
    errors += _task_errors(spec)
    for key, dist in spec.space.items():
        path = f"space.{key}"
        if key == "seed":
            errors.append((path, "seeds are their own axis: set `seeds: n` instead of searching over them"))
            continue
        if key not in keys:
            close = _closest(key, sorted(keys))
            hint = f"; did you mean {close[0]!r}?" if close else f"; expected one of {sorted(keys)}"
            errors.append((path, f"unknown key {key!r}{hint}"))
            continue
        errors += _check_distribution(path, dist)
        if (spec.search.algorithm == "grid" and sure("search.algorithm") and isinstance(dist, dict)
                and next(iter(dist), None) != "grid"):
            errors.append((path, f"search.algorithm is 'grid', so every space entry must be a grid; got {dist!r}"))
    for key in ("model.hidden_size", "model.num_units"):
        d = spec.space.get(key)
        if isinstance(d, dict) and next(iter(d), None) in ("uniform", "loguniform", "int"):
            errors.append((f"space.{key}", "must be a grid or choice: hidden_size must be divisible by num_units, "
                                            f"which a range cannot guarantee; got {d!r}"))
    d = spec.space.get("model.top_k")
    if (spec.search.algorithm == "optuna" and sure("search.algorithm") and isinstance(d, dict)
            and next(iter(d), None) in ("grid", "choice")):
        vals = next(iter(d.values()))
        if not (isinstance(vals, list) and vals and all(isinstance(v, int) for v in vals)
                and sorted(vals) == list(range(min(vals), max(vals) + 1))):
            errors.append(("space.model.top_k", "with Optuna, top_k is suggested as an integer range bounded by "
                           f"num_units: give {{int: [low, high]}} or consecutive ints, got {vals}"))
    errors += _metric_errors(spec, "search.metric", spec.objective[0])
    if spec.stop.metric is not None:
        errors += _metric_errors(spec, "stop.metric", spec.stop.metric)
    if sure("model.kind", "model.hidden_size", "model.num_units", "model.top_k"):
        errors += _check_models(spec)
    if (issubclass(spec.task_cls, RLTask) and not unsure
            and not any(p.startswith(("space", "task", "model", "optim")) for p, _ in errors)):
        errors += _check_rl(spec)  # expands the space: only once the space and the settings are valid
    return list(dict.fromkeys(errors))


def _task_errors(spec: SweepSpec) -> list[tuple[str, str]]:
    """The task's settings (``task.*``) as its settings model checks them, unknown keys with a did-you-mean."""
    try:
        spec.task_settings()
    except ValidationError as e:
        return _pydantic_errors(e, spec.task_cls.settings_model, {k: v for k, v in spec.task.items() if k != "name"},
                                prefix="task")[0]
    return []


def _check_rl(spec: SweepSpec) -> list[tuple[str, str]]:
    """An RL task's cross-field checks (the env exists, PPO can build the model, minibatch <= batch) on every
    configuration a grid or random sweep runs (on the base configuration for Optuna)."""
    from .flat import nest, resolve
    from .space import trial_points

    points = [base_config(spec) | {"seed": 0}] if spec.search.algorithm == "optuna" else trial_points(spec)[:1000]
    errors: list[tuple[str, str]] = []
    for point in points:
        flat = resolve(dict(point))
        try:
            settings = spec.task_cls.settings_model(**{k: v for k, v in nest(flat, "task").items() if k != "name"})
        except ValidationError as e:
            errors += [("task." + ".".join(str(p) for p in err["loc"]), err["msg"]) for err in e.errors()]
            continue
        errors += spec.task_cls.check(settings, nest(flat, "model"), nest(flat, "optim"))
    return list(dict.fromkeys(errors))


def _metric_errors(spec: SweepSpec, field: str, metric: str) -> list[tuple[str, str]]:
    """A metric the trials report, and not an out-of-distribution test column (choosing or stopping on the
    test column biases the result)."""
    if metric.split("/")[0] not in ("val", "train", "eval"):
        return [(field, f"expected a metric like 'val/<name>', got {metric!r}")]
    if metric.startswith("eval/"):
        return [(field, f"{metric!r} is an out-of-distribution test condition; use a val/ metric (selecting "
                        "on the test column biases the result)")]
    name = metric.split("/", 1)[1]
    if name not in spec.task_cls.metric_docs and name.split("_")[0] not in spec.task_cls.metric_docs:
        return [(field, f"unknown metric {metric!r} for task {spec.task['name']!r}; the task reports "
                        f"{sorted('val/' + m for m in spec.task_cls.metric_docs)}")]
    return []


def _values(spec: SweepSpec, key: str) -> list[Any] | None:
    """The values a key takes over the space (its fixed value if not varied); None when its space entry is
    malformed or continuous (reported elsewhere, and then nothing can be concluded from it)."""
    d = spec.space.get(key)
    if d is None:
        return [base_config(spec)[key]]
    if _check_distribution("", d):
        return None
    kind, arg = next(iter(d.items()))
    return list(arg) if kind in ("grid", "choice") else list(range(arg[0], arg[1] + 1)) if kind == "int" else None


def _check_models(spec: SweepSpec) -> list[tuple[str, str]]:
    """Every reachable (kind, hidden_size, num_units, top_k) gives a valid model; top_k > num_units is the
    constraint the expansion enforces, so it is an error only when no value of top_k can satisfy it."""
    errors: list[tuple[str, str]] = []
    kinds = _values(spec, "model.kind")
    if not kinds or "rims" not in kinds:
        return errors
    units, ks, sizes = (_values(spec, k) for k in ("model.num_units", "model.top_k", "model.hidden_size"))
    if not all(isinstance(v, int) for v in (units or []) + (ks or []) + (sizes or [])):
        return errors  # a grid of non-integers: reported by the type check of the trial's config
    if ks and units and min(ks) > max(units):
        errors.append(("space.model.top_k" if "model.top_k" in spec.space else "model.top_k",
                       f"top_k must be <= num_units, got top_k={min(ks)} > num_units={max(units)}: "
                       "no configuration satisfies it"))
    for h in sizes or []:
        for n in units or []:
            try:
                RIMConfig(hidden_size=h, num_units=n, top_k=1)
            except RIMConfigError as e:
                path = "space.model.hidden_size" if "model.hidden_size" in spec.space else "model.hidden_size"
                errors.append((path, str(e).replace("RIMConfig: ", "")))
    return errors


def _closest(word: str, allowed: list[str]) -> list[str]:
    """The allowed key a typo most likely meant: the closest spelling, else the one key it begins (``clip`` ->
    ``clip_param``); [] if none."""
    close = difflib.get_close_matches(word, allowed, n=1)
    if close:
        return close
    starts = [a for a in allowed if a.startswith(word) or word.startswith(a)]
    return starts if len(starts) == 1 else []


def _path(parts: list[Any]) -> str:
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out


def _locate(data: Any, loc: tuple[Any, ...], missing: bool) -> list[Any] | None:
    """A pydantic error's location as a path in the data given: the member tags pydantic adds for a union
    type ("int", "list[int]") are dropped; None for an error of the union member that does not match the data
    (a dict checked as the list alternative): noise beside the error of the member that does."""
    node, parts = data, []
    for i, part in enumerate(loc):
        if ((isinstance(node, dict) and part in node)
                or (isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node))):
            node = node[part]
        elif missing and i == len(loc) - 1:
            pass
        elif isinstance(part, str):  # a union member's tag
            if isinstance(node, dict | list) and not part.startswith("dict[" if isinstance(node, dict) else "list["):
                return None
            continue
        parts.append(part)
    return parts


def _model_at(model: type[BaseModel] | None, parts: list[Any]) -> type[BaseModel] | None:
    """The pydantic model that holds the field at parts[:-1] (for the keys it allows), or None."""
    for p in parts[:-1]:
        field = model.model_fields.get(p) if model is not None and isinstance(p, str) else None
        ann = field.annotation if field is not None else None
        model = ann if isinstance(ann, type) and issubclass(ann, BaseModel) else None
    return model


def _pydantic_errors(e: ValidationError, model: type[BaseModel], data: dict[str, Any], prefix: str = ""
                     ) -> tuple[list[tuple[str, str]], list[list[Any]]]:
    """A ValidationError as (path, message) pairs that name the dotted field, the value given and what is
    allowed (an unknown key: the closest allowed one); and the paths (in data) of the values at fault."""
    errors: dict[str, list[str]] = {}
    faulty: list[list[Any]] = []
    for err in e.errors():
        parts = _locate(data, err["loc"], err["type"] == "missing")
        if parts is None:
            continue
        path = ".".join(p for p in (prefix, _path(parts)) if p) or "<spec>"
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            holder = _model_at(model, parts)
            allowed = sorted(holder.model_fields) if holder is not None else []
            close = _closest(str(parts[-1]), allowed)
            where = path.rsplit(".", 1)[0] + "." if "." in path else ""
            msg = (f"unknown key, not permitted (value {err['input']!r}); "
                   + (f"did you mean {where + close[0]!r}?" if close else f"expected one of {allowed}"))
        elif err["type"] != "missing" and not isinstance(err["input"], dict) and "got " not in msg:
            msg += f" (got {err['input']!r})"
        errors.setdefault(path, [])
        if msg not in errors[path]:
            errors[path].append(msg)
        faulty.append(parts)
    return [(p, "; or ".join(ms)) for p, ms in errors.items()], faulty


def _drop(data: dict[str, Any], parts: list[Any]) -> str | None:
    """Remove the value at parts (up to the first list in the way) so the field's default stands in; returns
    the dotted path removed, None if nothing could be (an error of the whole spec)."""
    cut = next((i for i, p in enumerate(parts) if isinstance(p, int)), len(parts))
    parts = parts[:cut]
    if not parts:
        return None
    node = data
    for p in parts[:-1]:
        node = node.get(p) if isinstance(node, dict) else None
    if not isinstance(node, dict) or parts[-1] not in node:
        return None
    del node[parts[-1]]
    return ".".join(parts)


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
            found, faulty = _pydantic_errors(e, SweepSpec, data)
            errors += [(p, m) for p, m in found if not m.startswith("task.name:")]  # load_spec names it
            if "name" not in data or not isinstance(data.get("name"), str):
                data["name"] = "spec"  # a placeholder, to check the rest
            dropped = [_drop(data, parts) for parts in faulty if parts and parts != ["name"]]
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
            "resources.gpu": spec.resources.gpu, "smoke": smoke, "task.name": spec.task["name"]}
