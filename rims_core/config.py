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

from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, Literal

from .errors import RIMConfigError

__all__ = [
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

MODEL_KINDS = ("rims", "lstm", "gru")  # model.kind: a RIM or one of its torch baselines (rims_core.build_recurrent)
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

    heads: int = 1  # paper: 1 head for copying / sequential MNIST, 4 in the other settings
    key_size: int = 64  # paper, Table 3
    value_size: int | None = None  # None: 4 x unit size (paper: 400 for units of 100)
    dropout: float = 0.1  # on the attention probabilities; selection uses them before dropout

    def __post_init__(self) -> None:
        owner = "InputAttentionConfig"
        _positive_int(owner, "heads", self.heads)
        _positive_int(owner, "key_size", self.key_size)
        if self.value_size is not None:
            _positive_int(owner, "value_size", self.value_size)
        _probability(owner, "dropout", self.dropout)


@dataclass(frozen=True)
class CommConfig:
    """Communication: active units read from all units through multi-head attention.

    ``output`` says how the read enters the state (see COMM_OUTPUTS). The default, None, resolves by cell to a
    form whose state is bounded over any horizon and for any weights: the official code's gated residual for
    LSTM units (|h| < 2), the convex (highway) update for GRU units (|h| <= 1); see RIMConfig.comm_output.
    The paper's plain ``"residual"`` has no bound: stateful training across detached chunks can diverge with it.
    """

    enabled: bool = True
    heads: int = 4  # paper, Table 3
    key_size: int = 32  # paper's text; the official code uses 16
    value_size: int = 32  # paper's text; the official code uses 16
    dropout: float = 0.1
    output: Literal["residual", "gated_residual", "convex"] | None = None  # None: bounded form for the cell

    def __post_init__(self) -> None:
        owner = "CommConfig"
        if not isinstance(self.enabled, bool):
            raise RIMConfigError(f"{owner}: Expected enabled to be a bool, got {self.enabled!r}")
        _positive_int(owner, "heads", self.heads)
        _positive_int(owner, "key_size", self.key_size)
        _positive_int(owner, "value_size", self.value_size)
        _probability(owner, "dropout", self.dropout)
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

    hidden_size: int
    num_units: int = 6  # k_T, paper default
    top_k: int = 4  # k_A: units active per step, 1 <= top_k <= num_units
    cell: Literal["lstm", "gru"] = "lstm"
    selection: Literal["topk", "random", "all"] = "topk"
    input_attention: InputAttentionConfig = field(default_factory=InputAttentionConfig)
    comm: CommConfig = field(default_factory=CommConfig)

    def __post_init__(self) -> None:
        owner = "RIMConfig"
        _positive_int(owner, "hidden_size", self.hidden_size)
        _positive_int(owner, "num_units", self.num_units)
        _positive_int(owner, "top_k", self.top_k)
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
