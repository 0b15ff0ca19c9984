"""Selection ties: at a zero state every unit's query is 0, so every unit puts exactly 1/2 on the input and the
ranking is a tie. Training breaks exact ties uniformly at random; eval breaks them by unit index."""

from __future__ import annotations

import torch

from rims_core import RIM, RIMCell


def first_step_active(cell: RIMCell, B: int) -> torch.Tensor:
    """(B, K) units active at the first step from the zero state."""
    x = torch.randn(1, B, cell.input_size)
    zero = torch.zeros(B, cell.hidden_size)
    _, _, _, tr = cell.scan(x, zero, zero if cell.config.cell == "lstm" else None, trace=True)
    return tr["active"][0]


def test_eval_breaks_ties_by_unit_index_and_is_deterministic():
    torch.manual_seed(0)
    cell = RIMCell(3, 24, num_units=6, top_k=4).eval()
    active = first_step_active(cell, 64)
    assert active[:, :4].all() and not active[:, 4:].any()  # units 0..3, in every sample
    assert torch.equal(active, first_step_active(cell, 64))


def test_training_breaks_ties_uniformly_at_random():
    """From the zero state each of the 6 units is active with probability 4/6 and every sample draws its own
    set (before, units 0..3 were always the ones to start)."""
    torch.manual_seed(0)
    cell = RIMCell(3, 24, num_units=6, top_k=4, cell="gru")
    active = first_step_active(cell, 6000)
    assert (active.sum(-1) == 4).all()
    freq = active.float().mean(0)  # sd of each frequency ~0.006
    assert torch.allclose(freq, torch.full_like(freq, 4 / 6), atol=0.03), freq
    assert len({tuple(a.tolist()) for a in active}) == 15  # all C(6, 4) sets occur


def test_only_exact_ties_are_reordered():
    """A strict ranking is kept whatever the random order: with scores (0.7, 0.5, 0.5, 0.5, 0.2) and k = 2,
    unit 0 is always chosen, unit 4 never, and the second place goes to 1, 2 or 3 with equal chance."""
    cell = RIMCell(3, 10, num_units=5, top_k=2)
    B = 3000
    score = torch.tensor([0.7, 0.5, 0.5, 0.5, 0.2]).unsqueeze(1).expand(5, B)
    torch.manual_seed(0)
    orders = cell.tie_orders(1, B, score.device)[0]  # (K, B) random unit orders
    active = cell.select(score, orders)
    assert active[0].all() and not active[4].any()
    freq = active[1:4].float().mean(1)
    assert torch.allclose(freq, torch.full_like(freq, 1 / 3), atol=0.04), freq
    assert torch.equal(cell.select(score), torch.tensor([True, True, False, False, False]).unsqueeze(1).expand(5, B))


def test_no_random_draw_where_nothing_can_tie():
    torch.manual_seed(0)
    assert RIMCell(3, 12, num_units=4, top_k=2).eval().tie_orders(5, 2, torch.device("cpu")) is None
    assert RIMCell(3, 12, num_units=4, top_k=4).tie_orders(5, 2, torch.device("cpu")) is None
    assert RIMCell(3, 12, num_units=4, top_k=2, selection="random").tie_orders(5, 2, torch.device("cpu")) is None
    orders = RIMCell(3, 12, num_units=4, top_k=2).tie_orders(5, 2, torch.device("cpu"))
    assert orders.shape == (5, 4, 2)
    assert torch.equal(orders.sort(1).values, torch.arange(4).view(1, 4, 1).expand(5, 4, 2))  # permutations


def test_fused_and_plain_paths_break_ties_identically_given_the_same_rng():
    """A zero input ties every unit at every step (the key of x_t is 0); both paths draw the same orders."""
    rim = RIM(4, 12, 2, num_units=4, top_k=2, comm={"dropout": 0.3})
    x = torch.zeros(9, 16, 4)
    traces = []
    for fused in (True, False):
        for c in rim.cells:
            c.use_fused = fused
        torch.manual_seed(3)
        out, _, tr = rim(x, return_trace=True)
        traces.append((out, tr.active))
    torch.testing.assert_close(traces[0][0], traces[1][0])
    assert torch.equal(traces[0][1], traces[1][1])
    assert len({tuple(a.tolist()) for a in traces[0][1][0, 0]}) > 1  # the draws did differ across samples


def test_random_ties_off_makes_training_select_as_eval_does():
    """What an RL learner needs: its training-mode forward must select the units its eval-mode actors did."""
    torch.manual_seed(0)
    cell = RIMCell(3, 24, num_units=6, top_k=4)
    cell.random_ties = False
    assert cell.training and cell.tie_orders(3, 2, torch.device("cpu")) is None
    active = first_step_active(cell, 64)
    assert active[:, :4].all() and not active[:, 4:].any()
