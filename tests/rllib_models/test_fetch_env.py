"""Fetch among distractors: the rooms each condition builds, the observation encoding, the pickup rule, the
settings' errors. Real MiniGrid envs; no Ray."""

from __future__ import annotations

import numpy as np
import pytest
from minigrid.core.world_object import WorldObj

from rllib_models.fetch import FetchSettings
from rllib_models.fetch_env import FetchDistractors
from rllib_models.fetch_rooms import NOVEL_COLORS, TRAIN_COLORS, FetchConfig, parse_condition

SEEDS = range(40)


def objects(env: FetchDistractors) -> list[tuple[tuple[int, int], WorldObj]]:
    """(position, object) of every pickable object in the room."""
    grid = env.room.grid
    return [((x, y), o) for x in range(grid.width) for y in range(grid.height)
            if (o := grid.get(x, y)) is not None and o.can_pickup()]


def split(env: FetchDistractors) -> tuple[list, list]:
    """(targets, distractors): objects of the target's colour and kind, and the others."""
    objs = objects(env)
    target = [(p, o) for p, o in objs if (o.color, o.type) == env.room.target]
    return target, [(p, o) for p, o in objs if (o.color, o.type) != env.room.target]


@pytest.mark.parametrize("condition", ["distractors2", "distractors4", "distractors0", "novelcolors2",
                                       "novelkinds3", "novel4"])
def test_every_room_has_exactly_one_target_and_the_conditions_distractors(condition):
    env = FetchDistractors({"condition": condition})
    variant, n = parse_condition(condition)
    for seed in SEEDS:
        env.reset(seed=seed)
        target, distractors = split(env)
        assert len(target) == 1, "exactly one object is right"
        color, kind = env.room.target
        assert color in TRAIN_COLORS and kind in ("key", "ball"), "targets are always of the training kinds"
        kinds = {o.type for _, o in distractors}
        colors = {o.color for _, o in distractors}
        assert len(distractors) == n
        if variant in ("novelcolors", "novel"):
            assert colors <= set(NOVEL_COLORS), "novel colours only: none seen in training"
        else:
            assert colors <= set(TRAIN_COLORS)
        if variant in ("novelkinds", "novel"):
            assert kinds <= {"box"}
        else:
            assert kinds <= {"key", "ball"}


def test_a_test_condition_changes_only_the_distractors_of_the_same_room():
    """Same seed: the same target, the same agent pose, the same object positions (novel_colors, novel_kinds):
    comparisons across conditions are paired."""
    for seed in SEEDS:
        rooms = {}
        for condition in ("distractors2", "novelcolors2", "novelkinds2"):
            env = FetchDistractors({"condition": condition})
            env.reset(seed=seed)
            rooms[condition] = (env.room.target, tuple(env.room.agent_pos), env.room.agent_dir,
                                sorted(p for p, _ in objects(env)))
        assert rooms["distractors2"] == rooms["novelcolors2"] == rooms["novelkinds2"]


def test_observation_encodes_the_view_and_the_mission_one_hot():
    env = FetchDistractors({"view_size": 5})
    for seed in SEEDS:
        obs, _ = env.reset(seed=seed)
        assert obs.shape == env.observation_space.shape == (5 * 5 * 20 + 3 + 2,) and obs.dtype == np.float32
        view, mission = obs[:500].reshape(25, 20), obs[500:]
        # each viewed cell: one object kind (of 11), one colour (of 6), one state (of 3)
        assert (view[:, :11].sum(1) == 1).all() and (view[:, 11:17].sum(1) == 1).all() and \
            (view[:, 17:].sum(1) == 1).all()
        color, kind = env.room.target
        assert mission[list(TRAIN_COLORS).index(color)] == 1 and mission[3 + ("key", "ball").index(kind)] == 1
        assert mission.sum() == 2
        raw = env.room.gen_obs()["image"].reshape(-1, 3)
        assert (view[np.arange(25), raw[:, 0]] == 1).all(), "the kind channels are MiniGrid's object indices"


def face(env: FetchDistractors, pos: tuple[int, int]) -> bool:
    """Put the agent on a free cell next to pos, facing it; False if pos has no free neighbour."""
    room = env.room
    for d, (dx, dy) in enumerate([(1, 0), (0, 1), (-1, 0), (0, -1)]):  # MiniGrid's direction vectors
        cell = (pos[0] - dx, pos[1] - dy)
        if room.grid.get(*cell) is None:
            room.agent_pos, room.agent_dir = np.array(cell), d
            return True
    return False


@pytest.mark.parametrize("pick", ["target", "distractor"])
def test_picking_up_ends_the_episode_and_only_the_target_pays(pick):
    env = FetchDistractors()
    checked = 0
    for seed in SEEDS:
        env.reset(seed=seed)
        target, distractors = split(env)
        pos = (target if pick == "target" else distractors)[0][0]
        if not face(env, pos):
            continue
        _, reward, terminated, truncated, info = env.step(3)  # pickup
        assert terminated and not truncated
        assert info["success"] == (pick == "target")
        assert (reward > 0) == (pick == "target")
        if pick == "target":
            assert reward == pytest.approx(1 - 0.9 * 1 / env.room.max_steps)  # MiniGrid's reward after 1 step
        checked += 1
    assert checked >= 30


def test_share_color_false_keeps_the_targets_colour_unique():
    env = FetchDistractors({"share_color": False, "num_distractors": 4})
    for seed in SEEDS:
        env.reset(seed=seed)
        _, distractors = split(env)
        assert all(o.color != env.room.target[0] for _, o in distractors)


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"view_size": 4}, "view_size"), ({"size": 3}, "size"), ({"num_distractors": 15}, "num_distractors"),
    ({"distractor_kinds": ("door",)}, "distractor_kinds"), ({"distractor_colors": ("pink",)}, "distractor_colors"),
    ({"distractor_colors": ("red",), "share_color": False}, "distractor_colors"),  # a red target leaves none
])
def test_a_room_that_cannot_exist_is_refused_naming_the_field(kwargs, field):
    with pytest.raises(ValueError, match=f"^{field}: Expected .*, got"):
        FetchConfig(**kwargs)


def test_settings_refuse_a_condition_that_cannot_be_built_is_seen_in_training_or_unknown():
    with pytest.raises(ValueError, match=r"test_conditions: condition 'distractors4' cannot be built.*num_distr"):
        FetchSettings(size=4, num_distractors=2).check_env()  # 4 distractors do not fit in 2x2 free cells
    with pytest.raises(ValueError, match="test_conditions: Expected conditions never seen in training, got "
                       "'distractors2'"):
        FetchSettings(test_conditions=["distractors2"]).check_env()
    with pytest.raises(ValueError, match="api_stack: Expected 'new'"):
        FetchSettings(api_stack="old").check_env()
    with pytest.raises(ValueError, match=r"Expected <variant><count> with variant one of .*got 'more'"):
        FetchSettings(test_conditions=["more"])
    FetchSettings().check_env()
    assert FetchSettings().conditions() == ["distractors2", "distractors4", "novelcolors2", "novelkinds2", "novel4"]
    assert FetchSettings(num_distractors=1).conditions()[0] == "distractors1"
