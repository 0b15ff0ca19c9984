"""Bouncing balls: the physics, the rendering, determinism, the settings, the metrics, and a learning check."""

from __future__ import annotations

import math
import time

import numpy as np
import pydantic
import pytest
import torch

from sweeps.tasks.base import EVAL_SEED
from sweeps.tasks.bouncing import (
    RADIUS,
    TRAIN_SEED,
    BouncingSettings,
    BouncingTask,
    collide,
    curtain_band,
    make_videos,
    render,
    rollout_logits,
    simulate,
)

SMALL = {"frame_size": 16, "n_frames": 20, "burn_in": 5, "rollout": 5, "eval_size": 8, "train_size": 16}
RIMS = {"kind": "rims", "hidden_size": 24, "num_units": 3, "top_k": 2, "num_layers": 1}
LSTM = {"kind": "lstm", "hidden_size": 24, "num_layers": 1}


def pairwise_distances(pos: np.ndarray) -> np.ndarray:
    """(N, T, n, 2) -> (N, T, n, n) centre distances, inf on the diagonal."""
    d = np.linalg.norm(pos[:, :, :, None] - pos[:, :, None], axis=-1)
    n = pos.shape[2]
    d[:, :, range(n), range(n)] = np.inf
    return d


# ---------------------------------------------------------------------------------------------- physics
def test_a_lone_ball_keeps_its_speed_and_stays_in_the_box():
    pos, vel = simulate(20, 1, 500, seed=3)
    speed = np.linalg.norm(vel, axis=-1)  # (N, T, 1)
    np.testing.assert_allclose(speed, np.broadcast_to(speed[:, :1], speed.shape), rtol=1e-12)
    assert pos.min() >= RADIUS - 1e-12 and pos.max() <= 1 - RADIUS + 1e-12
    flips = (np.sign(vel[:, 1:]) != np.sign(vel[:, :-1])).any(-1).sum()
    assert flips > 20 * 5  # it did hit the walls (500 frames at >= 0.02 per frame cross the box many times)


def test_a_head_on_collision_exchanges_the_velocities():
    pos = np.array([[0.40, 0.5], [0.58, 0.5]])  # 0.18 apart: overlapping (2 * RADIUS = 0.2)
    vel = np.array([[0.03, 0.0], [-0.01, 0.0]])
    np.testing.assert_allclose(collide(pos, vel), vel[::-1], atol=1e-15)
    # Oblique: only the components along the line of centres (x here) are exchanged.
    vel = np.array([[0.03, 0.02], [0.0, -0.01]])
    np.testing.assert_allclose(collide(pos, vel), [[0.0, 0.02], [0.03, -0.01]], atol=1e-15)
    # Receding, or not touching: unchanged.
    np.testing.assert_array_equal(collide(pos, -vel), -vel)
    np.testing.assert_array_equal(collide(pos - np.array([[0.1, 0], [0, 0]]), vel), vel)


def test_total_kinetic_energy_is_conserved_through_many_collisions():
    pos, vel = simulate(50, 6, 300, seed=4)
    ke = (vel**2).sum((-1, -2))  # (N, T), equal masses
    np.testing.assert_allclose(ke, np.broadcast_to(ke[:, :1], ke.shape), rtol=1e-9)
    assert (pairwise_distances(pos) < 2 * RADIUS).sum() > 1000  # balls did collide
    assert not np.allclose(vel, vel[:, :1])


def test_balls_never_overlap_by_more_than_a_small_tolerance():
    """Start apart; then a pair interpenetrates by at most its closing speed per substep (2 * 0.05 / 4 =
    0.025), a little more when three touch at once: 0.04 is a fifth of a diameter."""
    pos, _ = simulate(100, 8, 200, seed=5)
    d = pairwise_distances(pos)
    assert d[:, 0].min() >= 2 * RADIUS
    assert d.min() >= 2 * RADIUS - 0.04


# ---------------------------------------------------------------------------------------------- rendering
def test_frames_are_binary_and_a_ball_lights_its_disc():
    v = make_videos(16, 4, 10, 32, seed=0)
    assert v.shape == (16, 10, 32, 32) and v.dtype == np.uint8
    assert set(np.unique(v)) == {0, 1}
    lone = render(np.full((1, 1, 1, 2), 0.5), 32)[0, 0]
    assert abs(lone.sum() - math.pi * (RADIUS * 32) ** 2) < 6  # ~32 pixels
    assert lone[16, 16] == 1 and lone[0, 0] == 0


def test_more_balls_light_more_pixels():
    lit4 = make_videos(64, 4, 20, 32, seed=1).mean()
    lit8 = make_videos(64, 8, 20, 32, seed=1).mean()
    assert lit8 > 1.6 * lit4


def test_the_curtain_hides_the_middle_third():
    band = curtain_band(32)
    assert (band.start, band.stop) == (10, 22)
    plain = make_videos(32, 3, 20, 32, seed=2)
    hidden = make_videos(32, 3, 20, 32, seed=2, curtain=True)
    assert plain[..., band].sum() > 0 and hidden[..., band].sum() == 0
    outside = np.ones(32, bool)
    outside[band] = False
    np.testing.assert_array_equal(hidden[..., outside], plain[..., outside])


# ---------------------------------------------------------------------------------------------- determinism
def test_videos_are_deterministic_by_seed():
    a, b, c = (make_videos(8, 4, 12, 16, seed=s) for s in (7, 7, 8))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_eval_data_depend_on_the_settings_only():
    s = BouncingSettings(**SMALL)
    one, two = BouncingTask(s, RIMS).eval_videos, BouncingTask(s, LSTM).eval_videos
    assert list(one) == ["val", "balls4", "balls6", "balls8", "curtain3"]
    for k in one:
        assert torch.equal(one[k], two[k]), k
    assert not torch.equal(one["val"], one["balls4"])  # val and eval are different videos
    expected = make_videos(8, 4, 20, 16, EVAL_SEED)
    np.testing.assert_array_equal(one["val"].numpy(), expected)
    assert one["curtain3"][..., curtain_band(16)].sum() == 0


def test_sample_batch_is_driven_by_the_generator():
    task = BouncingTask(BouncingSettings(**SMALL), LSTM)
    a, b, c = (task.sample_batch(6, torch.Generator().manual_seed(s)) for s in (0, 0, 1))
    assert a.shape == (6, 20, 16, 16) and a.dtype == torch.float32 and a.device == task.device
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert set(a.unique().tolist()) == {0.0, 1.0}
    pool = make_videos(16, 4, 20, 16, TRAIN_SEED)  # the pool, unpacked, holds every sampled video
    assert all(any(np.array_equal(v.numpy(), p) for p in pool) for v in a)


# ---------------------------------------------------------------------------------------------- settings
def test_settings_reject_unknown_keys_and_too_long_horizons():
    with pytest.raises(pydantic.ValidationError, match="Extra inputs are not permitted"):
        BouncingSettings(n_balls=4)
    with pytest.raises(pydantic.ValidationError, match=r"burn_in \+ rollout <= n_frames.*burn_in=15.*rollout=40"):
        BouncingSettings(rollout=40)
    with pytest.raises(pydantic.ValidationError, match="non-empty"):
        BouncingSettings(test_balls=[])
    with pytest.raises(pydantic.ValidationError):
        BouncingSettings(eval_size=0)
    assert BouncingSettings(burn_in=31, rollout=20).n_frames == 51  # exactly n_frames is allowed


# ---------------------------------------------------------------------------------------------- model and metrics
@pytest.mark.parametrize("model", [RIMS, LSTM], ids=["rims", "lstm"])
def test_evaluate_reports_every_condition(model):
    torch.manual_seed(0)
    task = BouncingTask(BouncingSettings(**SMALL), model)
    net = task.build_model().eval()
    out = task.evaluate(net)
    names = {"val/bce", "val/rollout_bce", "eval/bce_curtain3", "eval/rollout_bce_curtain3"}
    names |= {f"eval/{m}_balls{n}" for m in ("bce", "rollout_bce") for n in (4, 6, 8)}
    assert set(out) == names
    assert all(0 < v < 2 for v in out.values())
    no_curtain = BouncingTask(BouncingSettings(**SMALL, curtain=False, test_balls=[2]), model)
    assert set(no_curtain.evaluate(net)) == {"val/bce", "val/rollout_bce", "eval/bce_balls4",
                                             "eval/rollout_bce_balls4", "eval/bce_balls2",
                                             "eval/rollout_bce_balls2"}
    loss, m = task.loss(net, task.sample_batch(4, torch.Generator().manual_seed(0)))
    assert loss.requires_grad and loss.dim() == 0 and set(m) == {"bce"} and m["bce"] == pytest.approx(loss.item())


@pytest.mark.parametrize("model", [RIMS, LSTM], ids=["rims", "lstm"])
def test_stepping_with_the_state_matches_the_whole_sequence(model):
    """The rollout relies on the core's (out, state) contract: one frame at a time equals one call."""
    torch.manual_seed(0)
    task = BouncingTask(BouncingSettings(**SMALL), model)
    net = task.build_model().eval()
    frames = task.eval_videos["val"][:4].float()
    with torch.no_grad():
        whole, _ = net(frames)
        state, steps = None, []
        for t in range(frames.shape[1]):
            logits, state = net(frames[:, t:t + 1], state)
            steps.append(logits)
        roll = rollout_logits(net, frames, burn_in=5, steps=5)
        _, after_burn_in = net(frames[:, :5])
        second, _ = net(torch.sigmoid(roll[:, :1]), after_burn_in)  # fed its own prediction, state carried
    torch.testing.assert_close(torch.cat(steps, 1), whole, rtol=1e-5, atol=1e-5)
    assert roll.shape == (4, 5, 16, 16)
    torch.testing.assert_close(roll[:, 0], whole[:, 4])  # the first rollout frame follows the burn-in
    torch.testing.assert_close(roll[:, 1:2], second)
    assert not torch.allclose(roll[:, 1], whole[:, 5])  # later ones see the model's own predictions


# ---------------------------------------------------------------------------------------------- learning
@pytest.mark.learning
@pytest.mark.slow
def test_rim_learns_next_frame_prediction():
    """5 s on 2 idle CPU cores (14 s on a loaded machine). A model that ignores its input can do no better
    than the per-pixel mean occupancy of the training frames (its BCE, ~0.29 here); after 300 steps the RIM's
    teacher-forced val BCE must be below 0.8 x that and at least 30% below its value at initialisation (~0.31:
    the decoder starts at the base rate, so that is near the mean-occupancy BCE already). Measured over torch
    seeds 0..3: 0.31 -> 0.139..0.147."""
    torch.set_num_threads(2)
    torch.manual_seed(0)
    settings = BouncingSettings(frame_size=16, n_frames=20, train_balls=3, test_balls=[5], curtain=False,
                                burn_in=5, rollout=5, train_size=500, eval_size=64)
    task = BouncingTask(settings, {"kind": "rims", "hidden_size": 48, "num_units": 4, "top_k": 3})
    model = task.build_model()
    gen = torch.Generator().manual_seed(0)
    pool = task.sample_batch(500, torch.Generator().manual_seed(1))
    occupancy = pool.mean((0, 1)).clamp(1e-3, 1 - 1e-3)  # (S, S)
    target = task.eval_videos["val"][:, 1:].float()
    mean_bce = torch.nn.functional.binary_cross_entropy(occupancy.expand_as(target), target).item()
    start = time.perf_counter()
    model.eval()
    before = task.evaluate(model)["val/bce"]
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(300):
        loss, _ = task.loss(model, task.sample_batch(32, gen))
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    after = task.evaluate(model)["val/bce"]
    took = time.perf_counter() - start
    print(f"val bce {before:.3f} -> {after:.3f}, mean-occupancy bce {mean_bce:.3f}, {took:.1f} s")
    assert after < 0.7 * before and after < 0.8 * mean_bce, (
        f"val bce {before:.3f} -> {after:.3f}, mean-occupancy bce {mean_bce:.3f}, {took:.0f} s")
