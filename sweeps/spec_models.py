"""The sweep spec's pydantic models: each field checked on its own (checks across fields: spec_checks.py).

The RIM settings (``model.*`` but kind, hidden_size, num_layers) are not restated here: their names, types and
defaults are read from rims_core.config's RIMConfig, InputAttentionConfig and CommConfig, and each sub-model is
built into its dataclass once its fields pass, so the dataclass's own checks run too. What the spec adds is its
vocabulary around them; each field's description and range (for pydantic's error) come from the field's
metadata in rims_core.config (``rim_rule``), where the dataclass's own check is declared.
"""

from __future__ import annotations

from dataclasses import MISSING, fields
from typing import Any, Literal, get_type_hints

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, field_validator, model_validator

from rims_core.config import BOUNDS, MODEL_KINDS, CommConfig, InputAttentionConfig, RIMConfig, RIMConfigError

from .flat import flatten
from .search import SEARCH_ALGORITHMS
from .tasks import TASKS, TaskDeclaration

__all__ = [
    "AttentionSpec",
    "CommSpec",
    "ModelSpec",
    "OptimSpec",
    "ResourcesSpec",
    "SchedulerSpec",
    "SearchSpec",
    "SpecError",
    "StopSpec",
    "SweepSpec",
    "base_config",
    "known_keys",
    "rim_rule",
]


class SpecError(ValueError):
    """A spec is invalid; ``errors`` holds (path, message) pairs, all reported at once."""

    def __init__(self, errors: list[tuple[str, str]]) -> None:
        self.errors = errors
        super().__init__("invalid sweep spec:\n" + "\n".join(f"  {p}: {m}" for p, m in errors))


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def rim_rule(f: Any) -> dict[str, Any]:
    """The pydantic Field arguments of a rims_core config field: the range its check enforces (BOUNDS) and its
    description, both from the field's metadata in rims_core.config (declared there once)."""
    rule = dict(BOUNDS.get(f.metadata.get("check"), {}))
    if f.metadata.get("doc"):
        rule["description"] = f.metadata["doc"]
    return rule


def _fields_of(config: type, skip: tuple[str, ...] = (), types: dict[str, type] | None = None) -> dict[str, Any]:
    """The pydantic field definitions of a rims_core config dataclass: its names, types and defaults (a
    dataclass-valued field as the spec model given in ``types``), with the range and description of each field's
    metadata (rim_rule)."""
    hints = get_type_hints(config)
    out: dict[str, Any] = {}
    for f in fields(config):
        if f.name in skip:
            continue
        rule = rim_rule(f)
        if types and f.name in types:
            out[f.name] = (types[f.name], Field(default_factory=types[f.name], **rule))
        else:
            out[f.name] = (hints[f.name], Field(f.default if f.default is not MISSING else ..., **rule))
    return out


def _build_config(config: type, values: dict[str, Any]) -> None:
    """Run the dataclass's own checks on values that passed the fields' (the same ranges: a failure here is a
    rule of rims_core that no field's range states)."""
    try:
        config(**values)
    except RIMConfigError as e:
        raise ValueError(str(e)) from None


class AttentionSpec(create_model("_AttentionFields", __base__=_Strict, **_fields_of(InputAttentionConfig))):
    """``model.input_attention.*``: rims_core.config.InputAttentionConfig."""

    @model_validator(mode="after")
    def _config(self) -> AttentionSpec:
        _build_config(InputAttentionConfig, self.model_dump())
        return self


class CommSpec(create_model("_CommFields", __base__=_Strict, **_fields_of(CommConfig))):
    """``model.comm.*``: rims_core.config.CommConfig."""

    @model_validator(mode="after")
    def _config(self) -> CommSpec:
        _build_config(CommConfig, self.model_dump())
        return self


class ModelSpec(create_model(
        "_ModelFields", __base__=_Strict,
        kind=(Literal[MODEL_KINDS], Field("rims", description="model family")),
        # the one RIM setting baselines share; the spec gives it the paper's default (RIMConfig has none)
        hidden_size=(int, Field(600, **rim_rule(next(f for f in fields(RIMConfig) if f.name == "hidden_size")))),
        num_layers=(int, Field(1, ge=1)),
        **_fields_of(RIMConfig, skip=("hidden_size",),
                     types={"input_attention": AttentionSpec, "comm": CommSpec}))):
    """``model.*``: the recurrent core (RIM or a baseline) and its settings. The RIM-only keys (RIMConfig's
    fields but hidden_size) apply to kind rims only; hidden_size / num_units / top_k are checked together over
    the whole space (spec_checks), since a sweep may vary them."""


class OptimSpec(_Strict):
    """``optim.*``: Adam with gradient clipping, and a learning-rate schedule for the supervised tasks."""

    lr: float = Field(1e-3, gt=0, description="Adam learning rate")
    batch_size: int = Field(64, ge=1)
    max_steps: int = Field(1000, ge=1, description="training steps per trial")
    grad_clip: float = Field(1.0, gt=0, description="max gradient norm")
    eval_every: int = Field(100, ge=1, description="steps between evaluations, reports and checkpoints")
    lr_schedule: Literal["constant", "plateau"] = Field(
        "constant", description="'plateau': multiply the learning rate by plateau_factor when the task's objective "
        "(val/) has not improved for plateau_patience evaluations (torch's ReduceLROnPlateau, as the official "
        "RIMs scripts construct it); supervised tasks only")
    plateau_factor: float = Field(0.5, gt=0, lt=1, description="lr_schedule 'plateau': the factor (official: 0.5)")
    plateau_patience: int = Field(5, ge=0, description="lr_schedule 'plateau': evaluations without improvement "
                                  "before the learning rate drops (official: 5)")
    precision: Literal["fp32", "bf16"] = Field(
        "fp32", description="'bf16': the loss and the evaluations run under torch.autocast(bfloat16) on the trial's "
        "device (matmuls in bf16); parameters, optimizer state and the recurrent state stay fp32 (a RIM's "
        "recurrence runs in fp32 on bf16 input maps). Supervised tasks only")


class SearchSpec(_Strict):
    algorithm: Literal[tuple(SEARCH_ALGORITHMS)] = "grid"  # sweeps.search.SEARCH_ALGORITHMS
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
    triton: bool = Field(True, description="on CUDA, run a RIM trial's steps as Triton kernels when they pass a "
                         "check against the torch step at the trial's start (tag rims.triton); false: never")
    cuda_graph: bool = Field(False, description="on CUDA, replay a RIM trial's training forward and backward, and "
                             "its evaluations, as whole-sequence CUDA graphs, shapes bucketed "
                             "(rims_core.install_graphs; tag rims.cuda_graph; PPO: the policy's acting steps and "
                             "learner passes); off by default until measured on a GPU with the Triton step")
    recompute: bool = Field(False, description="keep less activation memory in a RIM trial's training steps and "
                            "recompute the rest in backward: the same gradients, about 40% of the memory, 3-14% "
                            "more time on a CPU (rims_core.set_recompute; PPO: the RIM policy's learner passes)")


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
    def task_cls(self) -> type[TaskDeclaration]:
        """The task's declaration (sweeps.tasks.TASKS; its implementation: sweeps.tasks.task_class)."""
        return TASKS[self.task["name"]]

    def task_settings(self, overrides: dict[str, Any] | None = None) -> BaseModel:
        values = {k: v for k, v in self.task.items() if k != "name"}
        values.update(overrides or {})
        return self.task_cls.settings_model(**values)

    @property
    def objective(self) -> tuple[str, str]:
        metric, mode = self.task_cls.objective
        return self.search.metric or metric, self.search.mode or (mode if self.search.metric is None else "min")


def base_config(spec: SweepSpec) -> dict[str, Any]:
    """The fixed part of every trial's flat config: dotted keys -> values (before the space is applied)."""
    flat = flatten(spec.model.model_dump(), "model") | flatten(spec.optim.model_dump(), "optim")
    try:  # every task setting, defaults included, so a run's params say everything it was trained with
        settings = spec.task_settings().model_dump()
    except (ValidationError, TypeError):
        settings = {}  # reported by the checks (spec_checks)
    for k, v in {**settings, **spec.task}.items():
        flat[f"task.{k}"] = v
    return flat


def known_keys(spec: SweepSpec) -> set[str]:
    """Every dotted key a space of this spec may vary."""
    keys = set(base_config(spec))
    keys |= {f"task.{k}" for k in spec.task_cls.settings_model.model_fields}
    return keys - {"task.name"}
