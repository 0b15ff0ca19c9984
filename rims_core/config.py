"""Validated configuration of one RIM layer (Goyal et al., ICLR 2021).

Every field is checked on construction; an error names the field, the value given and what would be
accepted, in PyTorch's "Expected ..., got ..." style. Defaults follow the paper's text (Table 3,
Appendix C): key size 64 and value size 4 x unit size for the input attention, one head (copying and
sequential MNIST; the paper uses 4 elsewhere), communication with 4 heads of key and value size 32
(the official code uses 16), dropout 0.1 on both attentions. One default departs from the paper's text:
the communication output (CommConfig.output) is bounded, because the literal residual lets the state
diverge over long horizons (docs/model.md, "Communication output and bounded state").
"""

from __future__ import annotations

from dataclasses import MISSING, asdict, dataclass, field, fields, replace
from typing import Any, Literal

from .errors import RIMConfigError

__all__ = [
    "BOUNDS",
    "CELLS",
    "COMM_OUTPUTS",
    "DEFAULT_COMM_OUTPUT",
    "MODEL_KINDS",
    "RIM_ONLY_KEYS",
    "SELECTIONS",
    "CommConfig",
    "InputAttentionConfig",
    "RIMConfig",
    "RIMConfigError",
]

# model.kind: a RIM or one of its baselines (rims_core.build_recurrent): torch's LSTM and GRU, a causal Transformer
# (rims_core.transformer) and a Relational Memory Core (rims_core.rmc), the seed's other rows
MODEL_KINDS = ("rims", "lstm", "gru", "transformer", "rmc")
CELLS = ("lstm", "gru")
SELECTIONS = ("topk", "random", "all")
# How an active unit's communication read r enters its state, and the bound on every |h| element it gives for
# any weights, inputs and horizon (from a start within the bound; docs/model.md derives them):
#   residual        h = h~ + W^o r                                     the paper's text; no bound
#   gated_residual  h = h~ + g * tanh(W^o r + b^o), g = sigmoid(W^g r + b^g)
#                                                                      the official code; LSTM units |h| < 2,
#                                                                      GRU units none (+1 per step at most)
#   convex          h = (1 - g) * h~ + g * tanh(W^o r + b^o)           a highway update; |h| <= 1, both cells
# The default (None) is the bounded form for the cell: gated_residual for LSTM units, convex for GRU units.
COMM_OUTPUTS = ("residual", "gated_residual", "convex")
DEFAULT_COMM_OUTPUT = {"lstm": "gated_residual", "gru": "convex"}


# Each field's check and description live in its metadata (``_setting``): __post_init__ runs the checks, and the
# sweep spec reads the same metadata for its fields' ranges (BOUNDS, in pydantic's terms) and help texts.
BOUNDS: dict[str, dict[str, Any]] = {"positive": {"ge": 1}, "positive_or_none": {"ge": 1},
                                     "probability": {"ge": 0.0, "lt": 1.0}}


def _setting(default: Any = MISSING, doc: str = "", check: str | None = None, **kw: Any) -> Any:
    """A dataclass field with its description and its range check (a key of BOUNDS, or None)."""
    return field(default=default, metadata={"doc": doc, "check": check}, **kw)


def _check_fields(obj: Any, owner: str) -> None:
    """Run every field's range check, in field order (the first failure is the error)."""
    for f in fields(obj):
        check, value = f.metadata.get("check"), getattr(obj, f.name)
        if check == "positive" or (check == "positive_or_none" and value is not None):
            _positive_int(owner, f.name, value)
        elif check == "probability":
            _probability(owner, f.name, value)


def _positive_int(owner: str, name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise RIMConfigError(f"{owner}: Expected {name} to be a positive int, got {value!r}")


def _probability(owner: str, name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= float(value) < 1.0:
        raise RIMConfigError(f"{owner}: Expected {name} to be a float in [0, 1), got {value!r}")


@dataclass(frozen=True)
class InputAttentionConfig:
    """Input attention: each unit queries X = [null; x_t] with its own query projection.

    Keys and values are projections of X shared by all units and have no bias, so the null row has key 0
    and value 0, exactly as in the paper (K = X W^e, V = X W^v).
    """

    # paper: 1 head for copying / sequential MNIST, 4 in the other settings
    heads: int = _setting(1, "input attention heads (paper: 1 for copying / sMNIST)", "positive")
    key_size: int = _setting(64, "input attention key size (paper: 64)", "positive")  # paper, Table 3
    # paper: 400 for units of 100
    value_size: int | None = _setting(None, "value size per head; None = 4 x unit size", "positive_or_none")
    # selection uses the probabilities before dropout
    dropout: float = _setting(0.1, "dropout on the input attention probabilities", "probability")

    def __post_init__(self) -> None:
        _check_fields(self, "InputAttentionConfig")


@dataclass(frozen=True)
class CommConfig:
    """Communication: active units read from all units through multi-head attention.

    ``output`` says how the read enters the state (see COMM_OUTPUTS). The default, None, resolves by cell to a
    form whose state is bounded over any horizon and for any weights: the official code's gated residual for
    LSTM units (|h| < 2), the convex (highway) update for GRU units (|h| <= 1); see RIMConfig.comm_output.
    The paper's plain ``"residual"`` has no bound: stateful training across detached chunks can diverge with it.
    """

    enabled: bool = _setting(True, "communication between units on/off")
    heads: int = _setting(4, check="positive")  # paper, Table 3
    key_size: int = _setting(32, check="positive")  # paper's text; the official code uses 16
    value_size: int = _setting(32, check="positive")  # paper's text; the official code uses 16
    dropout: float = _setting(0.1, check="probability")
    output: Literal["residual", "gated_residual", "convex"] | None = _setting(
        None, "how the read enters the state: residual (paper's text, unbounded), gated_residual (official code; "
        "|h| < 2 with LSTM units), convex (|h| <= 1); None = bounded form for the cell (gated_residual for LSTM "
        "units, convex for GRU units); see docs/model.md")

    def __post_init__(self) -> None:
        owner = "CommConfig"
        if not isinstance(self.enabled, bool):
            raise RIMConfigError(f"{owner}: Expected enabled to be a bool, got {self.enabled!r}")
        _check_fields(self, owner)
        if self.output is not None and self.output not in COMM_OUTPUTS:
            raise RIMConfigError(
                f"{owner}: Expected output to be one of {COMM_OUTPUTS} or None (the bounded form for the cell), "
                f"got {self.output!r}"
            )


def _sub_config(cls: type, value: Any, name: str) -> Any:
    """Accept a config object or a plain dict of its fields (as read from YAML)."""
    if isinstance(value, cls):
        return value
    if isinstance(value, dict):
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(value) - known)
        if unknown:
            raise RIMConfigError(
                f"RIMConfig: unknown key(s) {unknown} in {name}; expected a subset of {sorted(known)}"
            )
        return cls(**value)
    raise RIMConfigError(f"RIMConfig: Expected {name} to be a {cls.__name__} or a dict, got {value!r}")


@dataclass(frozen=True)
class RIMConfig:
    """One RIM layer: k_T = num_units recurrent cells of hidden_size // num_units each.

    hidden_size is the TOTAL over units, as in the paper's tables and in nn.LSTM (600 = 6 x 100).
    """

    hidden_size: int = _setting(doc="total hidden size (divisible by num_units for rims)", check="positive")
    num_units: int = _setting(6, "k_T (rims only)", "positive")  # paper default
    top_k: int = _setting(4, "k_A, active units per step (rims only), <= num_units", "positive")
    cell: Literal["lstm", "gru"] = _setting("lstm", "per-unit cell (rims only)")
    selection: Literal["topk", "random", "all"] = _setting("topk", "selection rule (rims only)")
    input_attention: InputAttentionConfig = field(default_factory=InputAttentionConfig)
    comm: CommConfig = field(default_factory=CommConfig)

    def __post_init__(self) -> None:
        owner = "RIMConfig"
        _check_fields(self, owner)
        object.__setattr__(
            self, "input_attention", _sub_config(InputAttentionConfig, self.input_attention, "input_attention")
        )
        object.__setattr__(self, "comm", _sub_config(CommConfig, self.comm, "comm"))
        if self.hidden_size % self.num_units:
            divisors = [d for d in range(1, min(self.hidden_size, 64) + 1) if self.hidden_size % d == 0]
            raise RIMConfigError(
                f"{owner}: Expected hidden_size to be divisible by num_units, got hidden_size="
                f"{self.hidden_size} and num_units={self.num_units}; num_units in {divisors} would divide it"
            )
        if self.top_k > self.num_units:
            raise RIMConfigError(
                f"{owner}: Expected top_k <= num_units, got top_k={self.top_k} > num_units="
                f"{self.num_units}; set top_k to at most {self.num_units}"
            )
        if self.cell not in CELLS:
            raise RIMConfigError(f"{owner}: Expected cell to be one of {CELLS}, got {self.cell!r}")
        if self.selection not in SELECTIONS:
            raise RIMConfigError(f"{owner}: Expected selection to be one of {SELECTIONS}, got {self.selection!r}")
        if self.selection == "all" and self.top_k != self.num_units:
            raise RIMConfigError(
                f"{owner}: selection='all' activates every unit, so top_k must equal num_units; got top_k="
                f"{self.top_k}, num_units={self.num_units}; set top_k={self.num_units} or selection='topk'"
            )

    @property
    def unit_size(self) -> int:
        """Hidden size of one unit, H = hidden_size // num_units."""
        return self.hidden_size // self.num_units

    @property
    def comm_output(self) -> str:
        """Resolved communication output form (comm.output, or by cell when None: see DEFAULT_COMM_OUTPUT)."""
        return self.comm.output or DEFAULT_COMM_OUTPUT[self.cell]

    @property
    def input_value_size(self) -> int:
        """Resolved input-attention value size per head (default 4 x unit size, as in the paper)."""
        v = self.input_attention.value_size
        return 4 * self.unit_size if v is None else v

    def replace(self, **changes: Any) -> RIMConfig:
        """A copy with some fields changed (validated again)."""
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """Nested plain dict, the form the sweep spec and MLflow params use (under ``model.``)."""
        return asdict(self)


# RIMConfig's fields that only a RIM has: every field but hidden_size (nn.LSTM / nn.GRU share that). The spec's
# model.* keys of the same names are varied and logged only for model.kind == "rims".
RIM_ONLY_KEYS = tuple(f.name for f in fields(RIMConfig) if f.name != "hidden_size")
