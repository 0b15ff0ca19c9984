"""rims_core.memory: counting what autograd saves, and setting RIMCell.recompute across a model."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from rims_core import RIM, saved_bytes, set_recompute


def test_saved_bytes_counts_each_storage_once():
    x = torch.randn(100, requires_grad=True)
    w = torch.randn(100, requires_grad=True)
    assert saved_bytes(lambda: x * x) == 400  # x saved twice, one storage
    assert saved_bytes(lambda: x * w) == 800
    assert saved_bytes(lambda: (x * w)[:10].sin()) == 800 + 400  # sin saves the slice: its whole storage
    with torch.no_grad():
        assert saved_bytes(lambda: x * w) == 0


def test_set_recompute_reaches_every_rim_cell_of_a_model():
    model = nn.Sequential(RIM(3, 8, num_layers=2, num_units=2, top_k=1, bidirectional=True), nn.Linear(16, 2))
    cells = list(model[0].cells)
    assert len(cells) == 4 and not any(c.recompute for c in cells)
    assert set_recompute(model) == 4
    assert all(c.recompute for c in cells)
    assert set_recompute(model, False) == 4 and not any(c.recompute for c in cells)
    assert set_recompute(nn.Linear(2, 2)) == 0


def test_set_recompute_refuses_what_is_not_a_bool():
    with pytest.raises(TypeError, match=r"Expected on to be True or False, got 'yes'"):
        set_recompute(RIM(3, 8, num_units=2, top_k=1), "yes")
