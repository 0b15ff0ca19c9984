"""A Ray worker setup hook for tests: PPO's learner results report a non-finite loss.

``ray.init(runtime_env={"worker_process_setup_hook": "tests.sweeps.nonfinite.poison_ppo_loss", "env_vars":
{ATTEMPTS: <file>}})``: in every worker, rllib_models.ppo reads its learner's result as usual but with
``train/loss`` NaN, so train_ppo's own check raises at the trial's first report; each such report appends a line
to the file named by ATTEMPTS, which counts the trial's attempts (Tune's retries would add lines).
"""

from __future__ import annotations

import os
from typing import Any

__all__ = ["ATTEMPTS", "poison_ppo_loss"]

ATTEMPTS = "RIMS_TEST_NONFINITE_ATTEMPTS"


def poison_ppo_loss() -> None:
    import rllib_models.ppo as ppo

    real = ppo.ppo_metrics

    def poisoned(result: dict[str, Any], evaluation: dict[str, Any] | None) -> dict[str, float]:
        with open(os.environ[ATTEMPTS], "a") as f:
            f.write("report\n")
        return {**real(result, evaluation), "train/loss": float("nan")}

    ppo.ppo_metrics = poisoned
