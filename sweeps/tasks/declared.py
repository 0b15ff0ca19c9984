"""The paper's tasks as the spec knows them: settings, optim defaults, smoke runs and checks; no torch.

Each implementation (copying.py, smnist.py, bouncing.py, atari.py, fetch.py) subclasses its declaration here.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from rllib_models.fetch import FetchSettings
from rllib_models.ppo import PPOBase, PPOSettings, check_settings

from ..keys import COPY_RECALL
from .declaration import RLTaskDeclaration, TaskDeclaration, TaskSettings
from .mnist_files import (
    DIGITS_SPLIT_CAP,
    FASHION_DIR,
    FASHION_PACKAGE,
    FASHION_STAND_IN,
    MNIST_FILES,
    MNIST_URLS,
    STAND_IN,
    load_mnist,
    missing_mnist_message,
)

__all__ = [
    "MAX_BALLS",
    "NUM_SYMBOLS",
    "TRAIN_SEED",
    "AtariDeclaration",
    "BouncingDeclaration",
    "BouncingSettings",
    "CopyingDeclaration",
    "CopyingSettings",
    "FetchDeclaration",
    "SmnistDeclaration",
    "SmnistSettings",
]

NUM_SYMBOLS = COPY_RECALL  # copying: symbols to remember (the paper's; task.num_symbols)
MAX_BALLS = 10  # bouncing: random placement of non-overlapping balls stays quick up to here
TRAIN_SEED = 0  # bouncing: seed of the training pool; evaluation seeds derive from EVAL_SEED, so they never coincide


# --- copying ---------------------------------------------------------------------------------------------------
class CopyingSettings(TaskSettings):
    """``task.*`` keys of the copying task."""

    blank: int = Field(50, ge=1, description="blank span of the training sequences (paper: 50)")
    test_blanks: list[int] = Field([200], description="blank spans evaluated out of distribution (paper: 200)")
    num_symbols: int = Field(NUM_SYMBOLS, ge=1, description="symbols to copy (paper: 10); chance stays ln 8 "
                             "per recall position")
    loss: Literal["ce", "ce_all"] = Field(
        "ce", description="training loss: ce over the 10 recall positions, or ce_all over every position "
        "(the official script's definition)")
    eval_size: int = Field(512, ge=1, description="sequences in each fixed evaluation set")
    input: Literal["onehot", "embedding"] = Field(
        "onehot", description="how tokens enter the core: one-hot vectors over the 10 tokens, or a learned "
        "embedding of model.hidden_size (the official script's)")
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="dropout on the core's input and on its output, in "
                           "training (the official script: 0.5)")

    @field_validator("test_blanks")
    @classmethod
    def _positive(cls, v: list[int]) -> list[int]:
        if not v or any(b < 1 for b in v):
            raise ValueError(f"expected a non-empty list of blank spans >= 1, got {v}")
        return v


class CopyingDeclaration(TaskDeclaration):
    """Copying: train at task.blank, evaluate at task.blank (val, and eval) and at every task.test_blanks."""

    name: ClassVar[str] = "copying"
    settings_model = CopyingSettings
    implementation: ClassVar[str] = "sweeps.tasks.copying:CopyingTask"


# --- sequential MNIST ------------------------------------------------------------------------------------------
class SmnistSettings(TaskSettings):
    """``task.*`` keys of sequential MNIST with a resolution shift."""

    source: Literal["mnist", "fashion", "digits"] = Field(
        "digits", description="'mnist': the MNIST IDX files in data_dir; 'fashion': the Fashion-MNIST IDX files "
        f"(the {FASHION_STAND_IN}; `apt-get install {FASHION_PACKAGE}`), in data_dir, by default {FASHION_DIR}; "
        f"'digits': the {STAND_IN} (offline)")
    data_dir: str | None = Field(None, description="directory with the four standard IDX files (plain or .gz); "
                                 f"required for source='mnist', {FASHION_DIR} by default for source='fashion'")
    train_resolution: int = Field(14, ge=2, description="side of the training images (paper: 14, 196 steps)")
    test_resolutions: list[int] = Field([16, 19, 24], description="sides evaluated out of distribution "
                                        "(paper: 16, 19, 24)")
    val_size: int = Field(1000, ge=1, description="held-out training images in the val set (from the training "
                          f"split; with source='digits' at most {DIGITS_SPLIT_CAP})")
    eval_size: int = Field(1000, ge=1, description="test images evaluated at every resolution (with "
                           f"source='digits' at most {DIGITS_SPLIT_CAP})")
    train_size: int | None = Field(None, ge=1, description="cap on the training images; None: all that remain")

    @model_validator(mode="before")
    @classmethod
    def _fashion_dir(cls, data: Any) -> Any:
        # the Debian package's directory unless the spec names another: the settings (and so every trial) say
        # where the files were read from
        if isinstance(data, dict) and data.get("source") == "fashion" and data.get("data_dir") is None:
            return {**data, "data_dir": FASHION_DIR}
        return data

    @field_validator("test_resolutions")
    @classmethod
    def _resolutions(cls, v: list[int]) -> list[int]:
        if not v or any(r < 2 for r in v):
            raise ValueError(f"expected a non-empty list of resolutions >= 2, got {v}")
        return v

    @model_validator(mode="after")
    def _source(self) -> SmnistSettings:
        if self.source == "mnist" and self.data_dir is None:
            raise ValueError(f"source='mnist' needs data_dir: a directory with {list(MNIST_FILES)} "
                             f"(from {MNIST_URLS[0]}), or use source='fashion' (the {FASHION_STAND_IN}) or "
                             "source='digits' (the offline stand-in)")
        if self.source == "digits" and self.data_dir is not None:
            raise ValueError(f"data_dir applies to source='mnist' or 'fashion' only, got data_dir={self.data_dir!r} "
                             "with source='digits'; drop it or set source='mnist' or 'fashion'")
        return self


class SmnistDeclaration(TaskDeclaration):
    """Sequential MNIST: train at task.train_resolution; val at it, eval at it and every task.test_resolutions."""

    name: ClassVar[str] = "smnist"
    settings_model = SmnistSettings
    implementation: ClassVar[str] = "sweeps.tasks.smnist:SmnistTask"
    smoke_eval_size: ClassVar[int] = 64  # val and eval images of a smoke run

    @classmethod
    def preflight(cls, settings: SmnistSettings) -> list[tuple[str, str]]:
        """The MNIST (or Fashion-MNIST) files must be where task.data_dir says, whole and well-formed (checked
        where the sweep runs, before any run); a missing Fashion-MNIST names its apt package."""
        if settings.source == "digits":
            return []
        message = missing_mnist_message(settings.data_dir, settings.source)
        if message:
            return [("task.data_dir", message)]
        try:  # a truncated or wrong file is refused here too, not in every trial
            load_mnist(settings.data_dir, settings.source)
        except (ValueError, OSError, EOFError) as e:
            fresh = (f"`apt-get install --reinstall {FASHION_PACKAGE}`" if settings.source == "fashion"
                     else f"a fresh copy from {MNIST_URLS[0]}")
            return [("task.data_dir", f"{e}; replace the file with {fresh}")]
        return []

    @classmethod
    def smoke(cls, task: dict[str, Any], optim: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        """A few steps, and small val / eval sets: evaluating 1,000 images at every resolution (576 steps each at
        24x24) would cost a RIM more than the steps do."""
        task, optim = super().smoke(task, optim)
        n = cls.smoke_eval_size
        return {**task, **{k: min(task.get(k, n), n) for k in ("val_size", "eval_size")}}, optim


# --- bouncing balls --------------------------------------------------------------------------------------------
class BouncingSettings(TaskSettings):
    """``task.*`` keys of bouncing-ball next-frame prediction."""

    frame_size: int = Field(32, ge=4, description="side S of the square binary frames")
    n_frames: int = Field(51, ge=2, description="frames per video (paper: teacher forcing on length 51)")
    train_balls: int = Field(4, ge=1, le=MAX_BALLS, description="balls in the training and val videos")
    test_balls: list[int] = Field([6, 8], description="ball counts evaluated out of distribution")
    curtain: bool = Field(True, description="also evaluate 3 balls behind a curtain (condition curtain3)")
    burn_in: int = Field(15, ge=1, description="true frames fed before the closed-loop rollout")
    rollout: int = Field(20, ge=1, description="frames predicted in closed loop and scored after burn_in")
    train_size: int = Field(2000, ge=1, description=f"videos in the training pool (generated once, seed {TRAIN_SEED})")
    eval_size: int = Field(128, ge=1, description="videos in each fixed evaluation set")

    @field_validator("test_balls")
    @classmethod
    def _balls(cls, v: list[int]) -> list[int]:
        if not v or any(not 1 <= b <= MAX_BALLS for b in v):
            raise ValueError(f"expected a non-empty list of ball counts in 1..{MAX_BALLS}, got {v}")
        return v

    @model_validator(mode="after")
    def _horizon(self) -> BouncingSettings:
        if self.burn_in + self.rollout > self.n_frames:
            raise ValueError(f"expected burn_in + rollout <= n_frames, got burn_in={self.burn_in} + "
                             f"rollout={self.rollout} > n_frames={self.n_frames}")
        return self


class BouncingDeclaration(TaskDeclaration):
    """Bouncing balls: train at task.train_balls; val at it, eval at it, every task.test_balls and curtain3."""

    name: ClassVar[str] = "bouncing"
    settings_model = BouncingSettings
    implementation: ClassVar[str] = "sweeps.tasks.bouncing:BouncingTask"


# --- PPO tasks: Atari, Fetch among distractors ---------------------------------------------------------------
class _PPODeclaration(RLTaskDeclaration):
    """What the PPO tasks share: the checks of rllib_models.ppo.check_settings, reports in whole iterations, a
    tiny smoke iteration."""

    @classmethod
    def check(cls, settings: PPOBase, model: dict[str, Any], optim: dict[str, Any]) -> list[tuple[str, str]]:
        try:
            check_settings(settings, model, optim["batch_size"])
        except ValueError as e:
            msg = str(e)
            path, _, rest = msg.partition(": ")
            path = {"model_config": "model", "env": "task.env"}.get(path, path)
            if path in type(settings).model_fields:
                path = f"task.{path}"
            return [(path if path.startswith(("task.", "model", "optim.")) else "task", rest or msg)]
        return []

    @classmethod
    def reports(cls, settings: PPOBase, optim: dict[str, Any]) -> int:
        """Reports come at whole PPO iterations, so they are counted in iterations."""
        every = max(1, math.ceil(optim["eval_every"] / settings.batch_size))
        return max(1, math.ceil(math.ceil(optim["max_steps"] / settings.batch_size) / every))

    @classmethod
    def smoke(cls, task: dict[str, Any], optim: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        """One tiny iteration: 2 envs x 32 steps, one epoch, one small evaluation."""
        task = {**task, "num_envs": 2, "rollout_length": 32, "num_epochs": 1,
                "eval_episodes": min(cls.smoke_eval_episodes, task.get("eval_episodes", 1)),
                "max_seq_len": min(16, task.get("max_seq_len", 16))}
        return task, {**optim, "batch_size": 32, "max_steps": 64, "eval_every": 64}

    smoke_eval_episodes: ClassVar[int] = 1


class AtariDeclaration(_PPODeclaration):
    """PPO on an ALE game (``task.env``); the objective is the greedy evaluation return."""

    name: ClassVar[str] = "atari"
    settings_model = PPOSettings
    implementation: ClassVar[str] = "sweeps.tasks.atari:AtariTask"
    # CleanRL's Atari PPO: lr 2.5e-4, minibatch 1024 / 4 = 256, 10M env steps, global grad norm 0.5
    optim_defaults: ClassVar[dict[str, Any]] = {"lr": 2.5e-4, "batch_size": 256, "max_steps": 10_000_000,
                                                "grad_clip": 0.5, "eval_every": 102_400}

    @classmethod
    def preflight(cls, settings: PPOSettings) -> list[tuple[str, str]]:
        """The game exists in this machine's ale-py (ROMs ship with it)."""
        return [e for e in cls.check(settings, {"kind": "lstm"}, {"batch_size": 1}) if e[0] == "task.env"]


class FetchDeclaration(_PPODeclaration):
    """PPO on Fetch among distractors (MiniGrid); the objective is the val success rate in the training rooms,
    the out-of-distribution conditions are ``eval/<m>_<condition>``."""

    name: ClassVar[str] = "fetch"
    settings_model = FetchSettings
    implementation: ClassVar[str] = "sweeps.tasks.fetch:FetchTask"
    # MiniGrid PPO baselines (rl-starter-files): lr 1e-3, minibatch 256, grad norm 0.5
    optim_defaults: ClassVar[dict[str, Any]] = {"lr": 1e-3, "batch_size": 256, "max_steps": 500_000,
                                                "grad_clip": 0.5, "eval_every": 51_200}
    smoke_eval_episodes: ClassVar[int] = 4
