"""The errors rims_core raises on purpose, torch-free so that any layer above can catch them by class.

``RIMConfigError`` (a setting out of range) is raised while validating a RIMConfig; it stays importable from
``rims_core.config``. ``NonFiniteLossError`` marks a training run whose loss stopped being finite: the RL
loop (rllib_models.ppo) raises it, and callers such as a sweep treat it as a diverged run, not a crash to retry.
"""

from __future__ import annotations

__all__ = ["NonFiniteLossError", "RIMConfigError"]


class RIMConfigError(ValueError):
    """A RIM setting is out of range; the message names the field, the value and the fix."""


class NonFiniteLossError(FloatingPointError):
    """A training loss became NaN or infinite: the run diverged. The message says which loss, its value and when.

    A FloatingPointError, so code that caught the plain FloatingPointError raised before still catches it.
    ``step``: the training step (or env step) at which it happened, where the raiser knows it.
    """

    def __init__(self, message: str, step: int | None = None) -> None:
        super().__init__(message)
        self.step = step
