"""The network both RLlib adapters wrap: observation encoder -> rims_core.RIM -> policy and value heads.

Shape legend: B batch (sequences), T time, S RIM layers (1), Hd hidden_size (total over units), K units.
Pure torch: no RLlib import, so the new-stack module and the old-stack ModelV2 stay thin.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from rims_core import RIM, GraphedRIM, enable_triton, install_graphs, set_recompute

from .config import RIMModelConfig

__all__ = ["RIMPolicyCore", "build_encoder"]

#: what captures model_config cuda_graph's graphs on a CPU device, as (training capture, inference capture):
#: None (the default) installs none there. Tests set stand-ins (tests/rllib_models/test_module.py).
CPU_GRAPH_CAPTURES: tuple | None = None


def _same_pad(size: int, kernel: int, stride: int) -> tuple[int, int, int]:
    """Padding (before, after) and output size of a 'same' convolution, as RLlib's CNN encoders do it."""
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2, out


def build_encoder(obs_shape: tuple[int, ...], cfg: RIMModelConfig) -> tuple[nn.Module, int]:
    """(encoder, output size) for observations of obs_shape (without batch dims).

    (H, W, C) images: the conv stack of cfg.conv_filters, channels-last in, 'same' padding and ReLU on every layer
    (as RLlib's TorchCNN, so both policies get the same encoder; 84x84 -> 21 -> 11 -> 1 with the default
    filters), flattened.
    (D,) vectors: an MLP of cfg.encoder_hiddens with ReLU (the identity when the list is empty).
    """
    if len(obs_shape) == 3:
        h, w, c = obs_shape
        layers: list[nn.Module] = []
        for out, k, s in cfg.conv_filters:
            ph0, ph1, h = _same_pad(h, k, s)
            pw0, pw1, w = _same_pad(w, k, s)
            layers += [nn.ZeroPad2d((pw0, pw1, ph0, ph1)), nn.Conv2d(c, out, k, s), nn.ReLU()]
            c = out
        return nn.Sequential(*layers, nn.Flatten()), c * h * w
    if len(obs_shape) == 1:
        size, layers = obs_shape[0], []
        for out in cfg.encoder_hiddens:
            layers += [nn.Linear(size, out), nn.ReLU()]
            size = out
        return nn.Sequential(*layers), size
    raise ValueError(f"RIMPolicyCore: Expected an observation of shape (D,) or (H, W, C), got {obs_shape}")


class RIMPolicyCore(nn.Module):
    """Encoder -> RIM -> (policy logits, value), over (B, T, *obs_shape) sequences.

    State: h (B, S, Hd) and, for LSTM cells, c (B, S, Hd), batch first as RLlib stores states per sequence.
    Initialisation follows CleanRL's PPO: orthogonal, gain 0.01 on the policy head and 1 on the value head.
    """

    def __init__(self, obs_shape: tuple[int, ...], num_outputs: int, cfg: RIMModelConfig) -> None:
        super().__init__()
        self.cfg, self.obs_shape = cfg, tuple(obs_shape)
        self.encoder, enc_size = build_encoder(self.obs_shape, cfg)
        self.rim = RIM(enc_size, batch_first=True, **cfg.rim_kwargs())
        # RLlib acts in eval mode and learns in training mode: ties at a zero state must pick the same units
        # in both, or the learner replays an episode from other units than the actor used
        for cell in self.rim.cells:
            cell.random_ties = False
        set_recompute(self.rim, cfg.recompute)  # model_config recompute: only a backward (the learner) reads it
        self.pi = nn.Linear(cfg.rim.hidden_size, num_outputs)
        self.vf = nn.Linear(cfg.rim.hidden_size, 1)
        for head, gain in ((self.pi, 0.01), (self.vf, 1.0)):
            nn.init.orthogonal_(head.weight, gain)
            nn.init.zeros_(head.bias)
        self.state_keys = ("h", "c") if cfg.rim.cell == "lstm" else ("h",)
        self._active_sum = torch.zeros(cfg.rim.num_units, dtype=torch.float64)
        self._active_steps = 0
        #: the Triton step's status on the device of the last forward (rims_core.enable_triton): None (a CPU, or
        #: not decided yet), "on" or "off: why"; decided at the first forward on each device
        self.triton_status: str | None = None
        self._triton_device: torch.device | None = None
        # model_config cuda_graph: the RIM's graphs (rims_core.GraphedRIM; its status and captures), installed at
        # the first forward on CUDA; kept outside the module tree, so state_dict keys do not change
        self.__dict__["graphs"] = None

    def initial_state(self) -> dict[str, Tensor]:
        """Zero state per sequence, without batch dim: each (S, Hd)."""
        return {k: torch.zeros(self.rim.num_layers, self.cfg.rim.hidden_size) for k in self.state_keys}

    def forward(self, obs: Tensor, state: dict[str, Tensor], *, collect: bool = False,
                seq_lens: Tensor | None = None) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        """obs (B, T, *obs_shape), state {k: (B, S, Hd)} -> embeddings (B, T, Hd), logits (B, T, A), state out.

        seq_lens (B,): real steps of each zero-padded sequence (RLlib's SEQ_LENS). Where some are shorter than T,
        the state out is the state after each sequence's last real step, not after its padding, and embeddings at
        padded steps are zeros (ray#21392: a state taken from the padded end is a state the episode never had).
        collect=True adds this call's unit selections to the running statistics (selection_stats)."""
        B, T = obs.shape[:2]
        x = obs.reshape(B * T, *self.obs_shape).float()
        if x.dim() == 4:
            x = x.permute(0, 3, 1, 2)  # channels-last frames -> (B*T, C, H, W)
        z = self.encoder(x).reshape(B, T, -1)  # (B, T, E)
        if z.device != self._triton_device:  # where this module now runs: check the Triton step there once
            self.triton_status = enable_triton(self.rim, z.device, self.cfg.triton)
            self._triton_device = z.device
            self._install_graphs(z.device)
        hx = tuple(state[k].transpose(0, 1).contiguous() for k in self.state_keys)  # each (S, B, Hd)
        lens = None if seq_lens is None else torch.as_tensor(seq_lens).to("cpu", torch.int64).reshape(-1)
        padded = lens is not None and T > 1 and bool((lens < T).any())
        # a packed sequence makes the RIM hold each state through its padding (nn.LSTM's contract); a batch
        # without padding (every sampling step) takes the plain path, unchanged
        rim_in = pack_padded_sequence(z, lens, batch_first=True, enforce_sorted=False) if padded else z
        res = self.rim(rim_in, hx if len(hx) == 2 else hx[0], return_trace=collect)
        out, hn, trace = res if collect else (*res, None)
        if padded:
            out = pad_packed_sequence(out, batch_first=True, total_length=T)[0]  # (B, T, Hd), zeros at padding
        hn = hn if isinstance(hn, tuple) else (hn,)
        if collect:
            active = trace.active[0].float()  # (T, B, K), first layer
            self._active_sum += active.sum(dim=(0, 1)).double().cpu()
            self._active_steps += active.shape[0] * active.shape[1]
        new_state = {k: v.transpose(0, 1) for k, v in zip(self.state_keys, hn, strict=True)}  # each (B, S, Hd)
        return out, self.pi(out), new_state

    def _install_graphs(self, device: torch.device) -> None:
        """model_config cuda_graph on CUDA: acting steps (no grad, T = 1) replay forward-only graphs, learner
        passes (packed, padded sequences included) forward-and-backward ones; shapes bucketed (rims_core.graphs).
        """
        cpu = device.type != "cuda"
        if self.graphs is not None or not self.cfg.cuda_graph or (cpu and CPU_GRAPH_CAPTURES is None):
            return
        capture, capture_inference = CPU_GRAPH_CAPTURES if cpu else (None, None)
        self.__dict__["graphs"] = install_graphs(self.rim, capture=capture, capture_inference=capture_inference)

    @property
    def graph_status(self) -> str | None:
        """model_config cuda_graph's state: None (off, or no CUDA forward yet), "graphs, N captured" or "off: why"
        (a capture failed; the RIM runs eagerly)."""
        g: GraphedRIM | None = self.graphs
        return None if g is None else g.summary

    def value(self, embeddings: Tensor) -> Tensor:
        """embeddings (B, T, Hd) -> values (B, T)."""
        return self.vf(embeddings).squeeze(-1)

    def selection_stats(self, reset: bool = True) -> dict[str, float]:
        """``rims/active_frac/<k>``: fraction of collected steps at which unit k was active (empty if none)."""
        if not self._active_steps:
            return {}
        frac = (self._active_sum / self._active_steps).tolist()
        if reset:
            self._active_sum.zero_()
            self._active_steps = 0
        return {f"rims/active_frac/{k}": float(v) for k, v in enumerate(frac)}
