"""The rooms of the Fetch-among-distractors task, without MiniGrid: its settings and named conditions (the spec
checks them without importing an env). The env itself is rllib_models.fetch_env.FetchDistractors.

A condition is named ``<variant><count>``, the name its metrics carry (``eval/success_rate_novelcolors2``):
``count`` distractors of the variant's kinds and colours. Variants: ``distractors`` (the training kinds and
colours: ``distractors<num_distractors>`` is the training condition, any other count is a test condition),
``novelcolors`` (colours never seen in training), ``novelkinds`` (boxes, a kind never seen), ``novel`` (both).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

__all__ = [
    "COLORS",
    "FETCH_ENV",
    "NOVEL_COLORS",
    "OBJECT_KINDS",
    "TARGET_COLORS",
    "TARGET_KINDS",
    "TRAIN_COLORS",
    "VARIANTS",
    "FetchConfig",
    "condition_config",
    "parse_condition",
    "train_condition",
]

COLORS = ("red", "green", "blue", "purple", "yellow", "grey")  # MiniGrid's six, in its index order
OBJECT_KINDS = ("key", "ball", "box")  # what may be placed (MiniGrid world objects that can be picked up)
FETCH_ENV = "rims_fetch"  # the name RLlib's env runners create it by
TARGET_KINDS = ("key", "ball")  # the kinds a mission can name (MiniGrid's Fetch)
TRAIN_COLORS = ("red", "green", "blue")  # target colours, and the distractors' colours in training
NOVEL_COLORS = ("purple", "yellow", "grey")  # MiniGrid's other three colours: distractors in test conditions only
TARGET_COLORS = TRAIN_COLORS


@dataclass(frozen=True)
class FetchConfig:
    """One room: its size, the view, the distractors. Kinds from OBJECT_KINDS, colours from MiniGrid's six."""

    size: int = 6
    view_size: int = 5
    num_distractors: int = 2
    distractor_kinds: tuple[str, ...] = TARGET_KINDS
    distractor_colors: tuple[str, ...] = TRAIN_COLORS
    max_steps: int | None = None  # None: MiniGrid Fetch's 5 * size**2
    share_color: bool = True  # distractors may have the target's colour (False: colour alone names the target)

    def __post_init__(self) -> None:
        if self.size < 4:
            raise ValueError(f"size: Expected a room of at least 4 x 4 cells (walls included), got {self.size}")
        if self.view_size < 3 or self.view_size % 2 == 0:
            raise ValueError(f"view_size: Expected an odd number >= 3 (MiniGrid's view), got {self.view_size}")
        free = (self.size - 2) ** 2 - 1  # interior cells, less the agent's
        if not 0 <= self.num_distractors < free:
            raise ValueError(f"num_distractors: Expected 0..{free - 1} in a room of size {self.size}, "
                             f"got {self.num_distractors}")
        bad = [k for k in self.distractor_kinds if k not in OBJECT_KINDS]
        if bad or not self.distractor_kinds:
            raise ValueError(f"distractor_kinds: Expected a non-empty subset of {list(OBJECT_KINDS)}, got "
                             f"{list(self.distractor_kinds)}")
        bad = [c for c in self.distractor_colors if c not in COLORS]
        if bad or not self.distractor_colors:
            raise ValueError(f"distractor_colors: Expected a non-empty subset of {list(COLORS)}, got "
                             f"{list(self.distractor_colors)}")
        for color in TARGET_COLORS:  # every possible target must leave some distractor that is not it
            pool = [(c, k) for c in self.distractor_colors for k in self.distractor_kinds
                    if (c, k) not in ((color, "key"), (color, "ball")) and (self.share_color or c != color)]
            if self.num_distractors and not pool:
                raise ValueError(f"distractor_colors: Expected colours and kinds that leave a distractor unlike a "
                                 f"{color} target, got colours {list(self.distractor_colors)}, kinds "
                                 f"{list(self.distractor_kinds)}, share_color={self.share_color}")


VARIANTS = {  # variant -> (distractor kinds, distractor colours); None: the training room's own
    "distractors": (None, None),
    "novelcolors": (None, NOVEL_COLORS),
    "novelkinds": (("box",), None),
    "novel": (("box",), NOVEL_COLORS),
}
_NAME = re.compile(r"^([a-z]+)(\d+)$")


def parse_condition(name: str) -> tuple[str, int]:
    """"novelcolors2" -> ("novelcolors", 2); ValueError naming the grammar otherwise."""
    m = _NAME.match(name)
    if not m or m.group(1) not in VARIANTS:
        raise ValueError(f"condition: Expected <variant><count> with variant one of {list(VARIANTS)} (e.g. "
                         f"'novelcolors2'), got {name!r}")
    return m.group(1), int(m.group(2))


def train_condition(base: FetchConfig) -> str:
    """The name of the training condition of ``base``: ``distractors<num_distractors>``."""
    return f"distractors{base.num_distractors}"


def condition_config(name: str, base: FetchConfig) -> FetchConfig:
    """The room of condition ``name`` built on the training room ``base`` (ValueError if it cannot exist)."""
    variant, count = parse_condition(name)
    kinds, colors = VARIANTS[variant]
    return replace(base, num_distractors=count, distractor_kinds=kinds or base.distractor_kinds,
                   distractor_colors=colors or base.distractor_colors)
