"""The ``model_config`` of the RIM policy: the sweep vocabulary, validated before any worker starts.

RLlib hands a module whatever dict the user wrote (its own examples read it with ``.get`` and so silently ignore a
typo). Here every key is known or refused, with the closest valid key as a hint; the only foreign keys accepted
are those RLlib itself merges into every module's model_config (``RLLIB_MERGED_KEYS``).
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Any

from rims_core import RIMConfig, RIMConfigError

__all__ = ["DEFAULT_ATARI_FILTERS", "RLLIB_MERGED_KEYS", "ModelConfigError", "RIMModelConfig",
           "parse_model_config"]

# Keys an AlgorithmConfig merges into every RLModule's model_config (`_model_config_auto_includes`):
# PPO adds vf_share_layers=False. The RIM module always shares encoder and core between policy and value (as
# CleanRL's Atari agent does), so the flag is accepted and has no effect.
RLLIB_MERGED_KEYS = frozenset({"vf_share_layers"})

# The conv stack for 84x84 frames, [out_channels, kernel, stride], 'same' padding on every layer as RLlib's CNN
# encoders pad: 84 -> 21 -> 11 -> 1x1x256. It is RLlib's 84x84 default (models.utils.get_filter_config) with the
# last stride set to 11: with 'same' padding RLlib's own last layer (stride 1) keeps 11x11x256 = 30,976 features,
# an 8M-weight first LSTM layer. Both the RIM module and the LSTM baseline use this stack.
DEFAULT_ATARI_FILTERS: tuple[tuple[int, int, int], ...] = ((16, 8, 4), (32, 4, 2), (256, 11, 11))


class ModelConfigError(ValueError):
    """A model_config the RIM module cannot build; the message names the key, the value and what is allowed."""


@dataclass(frozen=True)
class RIMModelConfig:
    """The RIM policy's settings; the names are those of the sweep spec's ``model.*`` keys.

    hidden_size is the TOTAL over units (6 x 100 = 600, as in the paper); the RIM's output feeds the policy
    and value heads directly.
    """

    num_units: int = 6  # k_T; the paper's Atari agents use 6 units
    top_k: int = 4  # k_A; the paper reports 4 and 5 active units on Atari
    hidden_size: int = 600  # total over units
    cell: str = "lstm"
    selection: str = "topk"
    input_attention: dict[str, Any] = field(default_factory=dict)
    comm: dict[str, Any] = field(default_factory=dict)
    max_seq_len: int = 32  # truncated-BPTT length of training sequences (RLlib's contract for stateful modules)
    # image observations: [out_channels, kernel, stride] per conv layer ("same" padding)
    conv_filters: tuple[tuple[int, int, int], ...] = DEFAULT_ATARI_FILTERS
    encoder_hiddens: tuple[int, ...] = (256,)  # vector observations: MLP sizes before the RIM

    def rim_kwargs(self) -> dict[str, Any]:
        """Arguments of rims_core.RIM besides input_size (validated by RIMConfig)."""
        return {"hidden_size": self.hidden_size, "num_units": self.num_units, "top_k": self.top_k,
                "cell": self.cell, "selection": self.selection, "input_attention": dict(self.input_attention),
                "comm": dict(self.comm)}

    def to_model_config(self) -> dict[str, Any]:
        """The plain dict to put in an RLModuleSpec (round-trips through parse_model_config)."""
        return {"num_units": self.num_units, "top_k": self.top_k, "hidden_size": self.hidden_size,
                "cell": self.cell, "selection": self.selection, "input_attention": dict(self.input_attention),
                "comm": dict(self.comm), "max_seq_len": self.max_seq_len,
                "conv_filters": [list(f) for f in self.conv_filters],
                "encoder_hiddens": list(self.encoder_hiddens)}


_FIELDS = tuple(RIMModelConfig.__dataclass_fields__)


def _positive_int(key: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ModelConfigError(f"model_config: Expected {key} to be a positive int, got {value!r}")
    return value


def parse_model_config(model_config: dict[str, Any] | None) -> RIMModelConfig:
    """Validate a model_config dict (None: defaults) into a RIMModelConfig.

    Raises ModelConfigError on an unknown key (with the closest valid one), a wrong type, or a RIM that cannot
    exist (top_k > num_units, hidden_size not divisible by num_units, ...).
    """
    raw = dict(model_config or {})
    unknown = sorted(k for k in raw if k not in _FIELDS and k not in RLLIB_MERGED_KEYS)
    if unknown:
        hints = []
        for key in unknown:
            close = difflib.get_close_matches(key, _FIELDS, n=1)
            hints.append(f"{key!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
        raise ModelConfigError(f"model_config: unknown key(s) {', '.join(hints)}; expected a subset of "
                               f"{sorted(_FIELDS)} (and RLlib's own {sorted(RLLIB_MERGED_KEYS)})")
    values = {k: raw[k] for k in _FIELDS if k in raw}
    for key in ("num_units", "top_k", "hidden_size", "max_seq_len"):
        if key in values:
            _positive_int(key, values[key])
    for key in ("input_attention", "comm"):
        if key in values and not isinstance(values[key], dict):
            raise ModelConfigError(f"model_config: Expected {key} to be a dict of its settings, got {values[key]!r}")
    if "conv_filters" in values:
        filters = values["conv_filters"]
        ok = isinstance(filters, list | tuple) and filters and all(
            isinstance(f, list | tuple) and len(f) == 3 and all(isinstance(v, int) and v > 0 for v in f)
            for f in filters)
        if not ok:
            raise ModelConfigError("model_config: Expected conv_filters to be a non-empty list of [out_channels, "
                                   f"kernel, stride] positive ints, got {filters!r}")
        values["conv_filters"] = tuple(tuple(f) for f in filters)
    if "encoder_hiddens" in values:
        hid = values["encoder_hiddens"]
        if not isinstance(hid, list | tuple) or not all(isinstance(v, int) and v > 0 for v in hid):
            raise ModelConfigError(f"model_config: Expected encoder_hiddens to be a list of positive ints, got {hid!r}")
        values["encoder_hiddens"] = tuple(hid)
    cfg = RIMModelConfig(**values)
    try:
        RIMConfig(**cfg.rim_kwargs())
    except RIMConfigError as e:
        raise ModelConfigError("model_config: " + str(e).replace("RIMConfig: ", "")) from None
    return cfg
