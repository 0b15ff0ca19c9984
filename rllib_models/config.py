"""The ``model_config`` of the RIM policy: the sweep vocabulary, validated before any worker starts.

RLlib hands a module whatever dict the user wrote (its own examples read it with ``.get`` and so silently ignore a
typo). Here every key is known or refused, with the closest valid key as a hint; the only foreign keys accepted
are those RLlib itself merges into every module's model_config (``RLLIB_MERGED_KEYS``). The RIM's own settings
are not restated here: they are rims_core's RIMConfig (its fields, defaults and checks), whose fields are top-level
keys of the model_config, as they are ``model.*`` keys of a sweep spec.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field, fields
from typing import Any

from rims_core.config import RIM_ONLY_KEYS, RIMConfig, RIMConfigError

__all__ = ["DEFAULT_ATARI_FILTERS", "DEFAULT_HIDDEN_SIZE", "RIM_KEYS", "RLLIB_MERGED_KEYS", "ModelConfigError",
           "RIMModelConfig", "parse_model_config"]

# The model_config keys that configure the RIM itself: RIMConfig's fields, hidden_size and the RIM-only ones
RIM_KEYS = ("hidden_size", *RIM_ONLY_KEYS)
DEFAULT_HIDDEN_SIZE = 600  # total over units: the paper's Atari agents have 6 units of 100

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
    """The RIM policy's settings: the RIM (a rims_core.RIMConfig) and what the policy puts around it.

    In the model_config dict (to_model_config, parse_model_config) the RIM's fields are top-level keys, the names
    of the sweep spec's ``model.*`` keys; their defaults are RIMConfig's (6 units, 4 active: the paper's Atari
    agents use 6 units and report 4 and 5 active), with hidden_size DEFAULT_HIDDEN_SIZE, the TOTAL over units.
    The RIM's output feeds the policy and value heads directly.
    """

    rim: RIMConfig = field(default_factory=lambda: RIMConfig(hidden_size=DEFAULT_HIDDEN_SIZE))
    max_seq_len: int = 32  # truncated-BPTT length of training sequences (RLlib's contract for stateful modules)
    # image observations: [out_channels, kernel, stride] per conv layer ("same" padding)
    conv_filters: tuple[tuple[int, int, int], ...] = DEFAULT_ATARI_FILTERS
    encoder_hiddens: tuple[int, ...] = (256,)  # vector observations: MLP sizes before the RIM
    # on CUDA, the RIM's steps as Triton kernels where they pass their check (rims_core.enable_triton)
    triton: bool = True
    # on CUDA, the RIM's acting steps and learner passes as CUDA graphs (rims_core.install_graphs); off by default
    # until timed on a GPU, as the sweeps' resources.cuda_graph
    cuda_graph: bool = False
    # the RIM keeps less for backward and recomputes it there (rims_core.set_recompute; the sweeps'
    # resources.recompute): the learner's memory, not the actors'
    recompute: bool = False

    def rim_kwargs(self) -> dict[str, Any]:
        """Arguments of rims_core.RIM besides input_size: hidden_size and the RIM-only settings."""
        return {k: getattr(self.rim, k) for k in RIM_KEYS}

    def to_model_config(self) -> dict[str, Any]:
        """The plain dict to put in an RLModuleSpec (round-trips through parse_model_config)."""
        return {**self.rim.to_dict(), "max_seq_len": self.max_seq_len,
                "conv_filters": [list(f) for f in self.conv_filters],
                "encoder_hiddens": list(self.encoder_hiddens), "triton": self.triton, "cuda_graph": self.cuda_graph,
                "recompute": self.recompute}


# every key a model_config may hold: the RIM's, then the policy's own
_FIELDS = (*RIM_KEYS, *(f.name for f in fields(RIMModelConfig) if f.name != "rim"))


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
    if "max_seq_len" in values:
        _positive_int("max_seq_len", values["max_seq_len"])
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
    for key in ("triton", "cuda_graph", "recompute"):
        if key in values and not isinstance(values[key], bool):
            raise ModelConfigError(f"model_config: Expected {key} to be true or false, got {values[key]!r}")
    rim = {"hidden_size": DEFAULT_HIDDEN_SIZE, **{k: values.pop(k) for k in RIM_KEYS if k in values}}
    try:
        rim_config = RIMConfig(**rim)  # RIMConfig checks every RIM setting: positive sizes, top_k <= num_units, ...
    except RIMConfigError as e:
        raise ModelConfigError("model_config: " + str(e).replace("RIMConfig: ", "")) from None
    return RIMModelConfig(rim=rim_config, **values)
