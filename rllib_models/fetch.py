"""PPO on Fetch among distractors: the task's settings (``task.*`` of task ``fetch``) and its evaluation.

Evaluation runs the learner's module outside RLlib's runners (rllib_models.rollout) on fixed seeds, so every
trial of a sweep, RIM or LSTM, is scored on the same rooms: ``val/<m>`` on VAL_SEED.. in the training
condition, ``eval/<m>_<condition>`` on EVAL_SEED.. in the training condition (``distractors2`` by default) and
every test condition (fetch_rooms: ``<variant><count>``). The eval seeds are the same in every condition, and a
condition changes only the distractors, so a room of ``novelcolors2`` is the room of ``distractors2`` with its
distractors repainted: the comparison across conditions is paired. Metrics: ``success_rate`` (the right object
picked up), ``episode_return_mean`` (MiniGrid's ``1 - 0.9 * steps / max_steps`` on success), ``episode_len_mean``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

from pydantic import Field, field_validator

from .fetch_rooms import (
    FETCH_ENV,
    TARGET_KINDS,
    TRAIN_COLORS,
    FetchConfig,
    condition_config,
    parse_condition,
    train_condition,
)
from .ppo import PPOBase

__all__ = ["EVAL_SEED", "TEST_CONDITIONS", "VAL_SEED", "FetchSettings", "fetch_evaluator", "summarize"]

VAL_SEED = 20_000  # first seed of the val rooms (training condition)
EVAL_SEED = 30_000  # first seed of the eval rooms (every condition, the same rooms)
TEST_CONDITIONS = ("distractors4", "novelcolors2", "novelkinds2", "novel4")  # with the default 2 distractors


class FetchSettings(PPOBase):
    """``task.*`` of task ``fetch``: the training room, the test conditions, the evaluation, PPO.

    PPO defaults follow the MiniGrid PPO baselines (rl-starter-files: clip 0.2, 4 epochs, lr 1e-3 in optim),
    with 8 envs x 128 steps per iteration.
    """

    size: int = Field(6, ge=4, description="room side in cells, walls included (MiniGrid Fetch-6x6)")
    view_size: int = Field(5, ge=3, description="side of the agent's egocentric view (odd; MiniGrid: 7)")
    num_distractors: int = Field(2, ge=0, description="objects besides the target in the training rooms")
    distractor_kinds: list[Literal["key", "ball", "box"]] = Field(
        list(TARGET_KINDS), description="kinds of the training distractors")
    distractor_colors: list[Literal["red", "green", "blue", "purple", "yellow", "grey"]] = Field(
        list(TRAIN_COLORS), description="colours of the training distractors")
    share_color: bool = Field(True, description="distractors may have the target's colour (False: the target is "
                              "the only object of its colour, so its colour alone identifies it)")
    max_episode_steps: int | None = Field(None, ge=1, description="step limit (None: MiniGrid Fetch's 5 size^2)")
    test_conditions: list[str] = Field(list(TEST_CONDITIONS), description="conditions evaluated out of "
                                       "distribution, <variant><count>: distractors (training kinds and colours), "
                                       "novelcolors, novelkinds (boxes) or novel (both), and the distractor count")
    eval_episodes: int = Field(200, ge=1, description="episodes (rooms on fixed seeds) per condition at each report")
    eval_explore: bool = Field(True, description="evaluate the stochastic policy (False: its most likely action)")
    clip_param: float = Field(0.2, gt=0, description="PPO ratio clip (MiniGrid baselines: 0.2)")
    max_seq_len: int = Field(16, ge=1, description="training sequence length (truncated BPTT)")
    anneal_lr: bool = Field(False, description="decay optim.lr linearly to 0 over optim.max_steps")

    @field_validator("test_conditions")
    @classmethod
    def _conditions(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("expected a non-empty list of conditions such as 'novelcolors2', got []")
        for c in v:
            parse_condition(c)
        if len(set(v)) != len(v):
            raise ValueError(f"expected each condition once, got {v}")
        return v

    def room(self) -> FetchConfig:
        """The training room; raises ValueError naming the field when it cannot exist."""
        return FetchConfig(size=self.size, view_size=self.view_size, num_distractors=self.num_distractors,
                           distractor_kinds=tuple(self.distractor_kinds),
                           distractor_colors=tuple(self.distractor_colors), max_steps=self.max_episode_steps,
                           share_color=self.share_color)

    def conditions(self) -> list[str]:
        """Every evaluated condition: the training one (distractors<num_distractors>), then test_conditions."""
        return [train_condition(self.room()), *self.test_conditions]

    def env_config(self, condition: str | None = None) -> dict[str, Any]:
        """The env_config of FetchDistractors for a condition (None: the training room)."""
        r = self.room()
        return {"size": r.size, "view_size": r.view_size, "num_distractors": r.num_distractors,
                "distractor_kinds": list(r.distractor_kinds), "distractor_colors": list(r.distractor_colors),
                "max_steps": r.max_steps, "share_color": r.share_color, "condition": condition}

    def env_spec(self, train: bool) -> tuple[str, dict[str, Any]]:
        return FETCH_ENV, self.env_config()

    def check_env(self) -> None:
        self.room()
        if self.api_stack != "new":
            raise ValueError(f"api_stack: Expected 'new' for task fetch (its evaluation runs the new stack's "
                             f"module), got {self.api_stack!r}")
        train = train_condition(self.room())
        if train in self.test_conditions:
            raise ValueError(f"test_conditions: Expected conditions never seen in training, got {train!r}, the "
                             "training condition (it is evaluated anyway)")
        for c in self.test_conditions:  # the conditions' rooms must exist too (more distractors must fit)
            try:
                condition_config(c, self.room())
            except ValueError as e:
                raise ValueError(f"test_conditions: condition {c!r} cannot be built from this room: {e}") from None


def summarize(episodes: list[Any]) -> dict[str, float]:
    """success_rate, episode_return_mean and episode_len_mean of rollout.Episode records."""
    n = max(1, len(episodes))
    return {"success_rate": sum(e.success for e in episodes) / n,
            "episode_return_mean": sum(e.ret for e in episodes) / n,
            "episode_len_mean": sum(e.length for e in episodes) / n}


def fetch_evaluator(settings: FetchSettings) -> Callable[[Any], dict[str, float]]:
    """evaluate(algo) for train_ppo: val/ and eval/ metrics of the learner's module on the fixed rooms."""
    from .fetch_env import FetchDistractors
    from .rollout import run_episodes

    def episodes(module: Any, condition: str | None, first: int) -> list[Any]:
        cfg = settings.env_config(condition)
        seeds = range(first, first + settings.eval_episodes)
        return run_episodes(module, lambda: FetchDistractors(cfg), seeds, explore=settings.eval_explore,
                            sample_seed=first)

    def evaluate(algo: Any) -> dict[str, float]:
        module = algo.get_module()
        was_training = module.training
        module.eval()  # dropout off
        try:
            out = {f"val/{k}": v for k, v in summarize(episodes(module, None, VAL_SEED)).items()}
            for condition in settings.conditions():
                out.update({f"eval/{k}_{condition}": v
                            for k, v in summarize(episodes(module, condition, EVAL_SEED)).items()})
        finally:
            module.train(was_training)
        return out

    return evaluate
