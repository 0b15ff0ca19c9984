"""The spec's checks across fields (each field alone: spec_models.py): the space against the keys and the search
algorithm, the metrics against the task, every reachable model against rims_core's RIMConfig, and an RL task's
checks on every configuration the sweep runs (which needs the space expanded: sweeps.space)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ValidationError

from rims_core.config import RIMConfig, RIMConfigError

from .flat import nest, resolve
from .search import DISTRIBUTIONS, search_algorithm
from .space import trial_points
from .spec_errors import closest, field_errors, pydantic_errors
from .spec_models import ModelSpec, OptimSpec, SweepSpec, base_config, known_keys

__all__ = ["check_distribution", "validate"]

Errors = list[tuple[str, str]]  # (dotted path in the spec, message)


def check_distribution(path: str, dist: Any) -> Errors:
    """One space entry ({grid: [...]}, {uniform: [low, high]}, ...) is well formed."""
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


def validate(spec: SweepSpec, unsure: frozenset[str] = frozenset()) -> Errors:
    """Checks across fields (the pydantic models check each field). Empty list = valid.

    unsure: paths whose given value was invalid and was replaced by its default to check the rest (see
    sweeps.spec.load_spec); checks that read one of them are skipped, so a bad value is reported once, not again
    as a mismatch between its default and another field."""
    def sure(*paths: str) -> bool:
        return not any(u == p or u.startswith(p + ".") or p.startswith(u + ".") for u in unsure for p in paths)

    search = search_algorithm(spec.search.algorithm)
    if isinstance(spec.space, list):
        errors: Errors = []
        if not spec.space:
            errors.append(("space", "expected a space or a non-empty list of spaces, got []"))
        elif not search.union and sure("search.algorithm"):
            errors.append(("space", "a list of spaces (a union) works with grid and random search; Optuna needs "
                                    "one space"))
        for i, sub in enumerate(spec.subspecs() or [spec.model_copy(update={"space": {}})]):
            errors += [(p.replace("space.", f"space[{i}].", 1) if p.startswith("space.") else p, m)
                       for p, m in validate(sub, unsure)]
        return list(dict.fromkeys(errors))  # the non-space errors repeat for every sub-space
    errors = []
    keys = known_keys(spec)
    restricted = set(search.distributions) != set(DISTRIBUTIONS)  # grid: every entry a grid, even a malformed one
    errors += _task_errors(spec)
    if spec.task_cls.rl and (spec.optim.lr_schedule != "constant" or "optim.lr_schedule" in spec.space):
        errors.append(("optim.lr_schedule", f"task {spec.task['name']!r} is trained by PPO, whose learning rate is "
                       f"RLlib's; expected 'constant', got {spec.optim.lr_schedule!r}"
                       + (" (varied by space.optim.lr_schedule)" if "optim.lr_schedule" in spec.space else "")))
    if spec.task_cls.rl and (spec.optim.precision != "fp32" or "optim.precision" in spec.space):
        errors.append(("optim.precision", f"task {spec.task['name']!r} is trained by PPO, which runs in fp32; "
                       f"expected 'fp32', got {spec.optim.precision!r}"
                       + (" (varied by space.optim.precision)" if "optim.precision" in spec.space else "")))
    for key, dist in spec.space.items():
        path = f"space.{key}"
        if key == "seed":
            errors.append((path, "seeds are their own axis: set `seeds: n` instead of searching over them"))
            continue
        if key not in keys:
            close = closest(key, sorted(keys))
            hint = f"; did you mean {close[0]!r}?" if close else f"; expected one of {sorted(keys)}"
            errors.append((path, f"unknown key {key!r}{hint}"))
            continue
        bad = check_distribution(path, dist)
        errors += bad or _value_errors(spec, key, dist)
        if (restricted and sure("search.algorithm") and isinstance(dist, dict)
                and next(iter(dist), None) not in search.distributions):
            errors.append((path, f"search.algorithm is {search.name!r}, so every space entry must be a "
                                 f"{' or '.join(search.distributions)}; got {dist!r}"))
    for key in ("model.hidden_size", "model.num_units"):
        d = spec.space.get(key)
        if isinstance(d, dict) and next(iter(d), None) in ("uniform", "loguniform", "int"):
            errors.append((f"space.{key}", "must be a grid or choice: hidden_size must be divisible by num_units, "
                                            f"which a range cannot guarantee; got {d!r}"))
    d = spec.space.get("model.top_k")
    if (not search.expanded and sure("search.algorithm") and isinstance(d, dict)
            and next(iter(d), None) in ("grid", "choice")):
        vals = next(iter(d.values()))  # a searcher suggests top_k as an int range bounded by each num_units
        if not (isinstance(vals, list) and vals and all(isinstance(v, int) for v in vals)
                and sorted(vals) == list(range(min(vals), max(vals) + 1))):
            errors.append(("space.model.top_k", "with Optuna, top_k is suggested as an integer range bounded by "
                           f"num_units: give {{int: [low, high]}} or consecutive ints, got {vals}"))
    errors += _metric_errors(spec, "search.metric", spec.objective[0])
    if spec.stop.metric is not None:
        errors += _metric_errors(spec, "stop.metric", spec.stop.metric)
    if sure("model.kind", "model.hidden_size", "model.num_units", "model.top_k"):
        errors += _check_models(spec)
    if (spec.task_cls.rl and not unsure
            and not any(p.startswith(("space", "task", "model", "optim")) for p, _ in errors)):
        errors += _check_rl(spec)  # expands the space: only once the space and the settings are valid
    return list(dict.fromkeys(errors))


def _value_errors(spec: SweepSpec, key: str, dist: dict[str, Any]) -> Errors:
    """Each value of a grid or choice as the field it varies checks it (``space.model.top_k.grid[0]``: top_k=0
    is refused as model.top_k: 0 would be), so a bad value is refused before launch, not in its trial. Checks
    across fields (top_k <= num_units) are the expansion's and _check_models'."""
    kind, values = next(iter(dist.items()))
    if kind not in ("grid", "choice"):
        return []
    section, *parts = key.split(".")
    holder: type[BaseModel]
    if section == "task":
        holder, fixed = spec.task_cls.settings_model, {k: v for k, v in spec.task.items() if k != "name"}
    else:
        holder, fixed = (ModelSpec, spec.model.model_dump()) if section == "model" else (OptimSpec,
                                                                                          spec.optim.model_dump())
        for part in parts[:-1]:  # model.comm.heads: CommSpec's field heads
            holder, fixed = holder.model_fields[part].annotation, fixed[part]
    return [(f"space.{key}.{kind}[{i}]", msg) for i, value in enumerate(values)
            for msg in field_errors(holder, fixed, parts[-1], value)]


def _task_errors(spec: SweepSpec) -> Errors:
    """The task's settings (``task.*``) as its settings model checks them, unknown keys with a did-you-mean."""
    try:
        spec.task_settings()
    except ValidationError as e:
        return pydantic_errors(e, spec.task_cls.settings_model, {k: v for k, v in spec.task.items() if k != "name"},
                               prefix="task")[0]
    return []


def _check_rl(spec: SweepSpec) -> Errors:
    """An RL task's cross-field checks (the env exists, PPO can build the model, minibatch <= batch) on every
    configuration an expanded sweep runs (on the base configuration when a searcher suggests them)."""
    expanded = search_algorithm(spec.search.algorithm).expanded
    points = trial_points(spec)[:1000] if expanded else [base_config(spec) | {"seed": 0}]
    errors: Errors = []
    for point in points:
        flat = resolve(dict(point))
        try:
            settings = spec.task_cls.settings_model(**{k: v for k, v in nest(flat, "task").items() if k != "name"})
        except ValidationError as e:
            errors += [("task." + ".".join(str(p) for p in err["loc"]), err["msg"]) for err in e.errors()]
            continue
        errors += spec.task_cls.check(settings, nest(flat, "model"), nest(flat, "optim"))
    return list(dict.fromkeys(errors))


def _metric_errors(spec: SweepSpec, field: str, metric: str) -> Errors:
    """A metric the trials report, and not an out-of-distribution test column (choosing or stopping on the
    test column biases the result)."""
    if metric.split("/")[0] not in ("val", "train", "eval"):
        return [(field, f"expected a metric like 'val/<name>', got {metric!r}")]
    if metric.startswith("eval/"):
        return [(field, f"{metric!r} is an out-of-distribution test condition; use a val/ metric (selecting "
                        "on the test column biases the result)")]
    name = metric.split("/", 1)[1]
    docs = spec.task_cls.metric_docs
    if name not in docs and name.split("_")[0] not in docs:
        return [(field, f"unknown metric {metric!r} for task {spec.task['name']!r}; the task reports "
                        f"{sorted('val/' + m for m in docs)}")]
    return []


def _values(spec: SweepSpec, key: str) -> list[Any] | None:
    """The values a key takes over the space (its fixed value if not varied); None when its space entry is
    malformed or continuous (reported elsewhere, and then nothing can be concluded from it)."""
    d = spec.space.get(key)
    if d is None:
        return [base_config(spec)[key]]
    if check_distribution("", d):
        return None
    kind, arg = next(iter(d.items()))
    return list(arg) if kind in ("grid", "choice") else list(range(arg[0], arg[1] + 1)) if kind == "int" else None


def _check_models(spec: SweepSpec) -> Errors:
    """Every reachable (kind, hidden_size, num_units, top_k) gives a valid model; top_k > num_units is the
    constraint the expansion enforces, so it is an error only when no value of top_k can satisfy it."""
    errors: Errors = []
    kinds = _values(spec, "model.kind")
    if not kinds or "rims" not in kinds:
        return errors
    units, ks, sizes = (_values(spec, k) for k in ("model.num_units", "model.top_k", "model.hidden_size"))
    if not all(isinstance(v, int) for v in (units or []) + (ks or []) + (sizes or [])):
        return errors  # a grid of non-integers: reported by _value_errors
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
