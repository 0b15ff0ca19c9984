"""A trial's outcome, defined once for both runners (Ray Tune's and the local one): the kinds, how a trial's
last report or error maps to one, how a run its trial did not close is tagged, and the sweep's counts.

- completed: trained to ``optim.max_steps`` (its run closed itself, FINISHED).
- stopped_early: ended by a scheduler, the stopping rule or the time budget; its last report stands (run
  FINISHED, tagged ``rims.stopped_early=true``).
- failed: the trial itself found training cannot go on (a non-finite loss, supervised or RL): its run is
  FAILED with the reason in ``rims.failure``, and it is not retried (the same seed would diverge again).
- errored: it raised (after Tune's retries, ``max_failures``): run FAILED, the error in ``rims.failure``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from .keys import TAG_FAILURE, TAG_STOPPED_EARLY

__all__ = ["COMPLETED", "ERRORED", "FAILED", "OUTCOMES", "STOPPED_EARLY", "Outcome", "Tally", "closing",
           "failed_report", "tune_outcome"]

Outcome = Literal["completed", "stopped_early", "failed", "errored"]
COMPLETED: Outcome = "completed"
STOPPED_EARLY: Outcome = "stopped_early"
FAILED: Outcome = "failed"
ERRORED: Outcome = "errored"
OUTCOMES: tuple[Outcome, ...] = (COMPLETED, STOPPED_EARLY, FAILED, ERRORED)  # the order of the printed counts


def failed_report(step: int) -> dict[str, float]:
    """The last report of a trial that failed (the runners read ``failed`` to count it)."""
    return {"failed": 1.0, "step": step}


def tune_outcome(error: BaseException | None, metrics: dict[str, Any] | None, max_steps: int) -> Outcome:
    """A Tune trial's outcome from its result: an error wins, then a failed last report, then a last step short
    of max_steps (a scheduler or the stopping rule ended it)."""
    if error is not None:
        return ERRORED
    if metrics and metrics.get("failed"):
        return FAILED
    if metrics and metrics.get("step", 0) < max_steps:
        return STOPPED_EARLY
    return COMPLETED


def closing(outcome: Outcome, reason: str | None = None) -> tuple[dict[str, str], str] | None:
    """(tags, terminal status) for the run of a trial that did not close it itself: errored (the error, FAILED)
    or stopped early (FINISHED, marked as such); None for the outcomes whose trial closed its run."""
    if outcome == ERRORED:
        return {TAG_FAILURE: (reason or "error")[:500]}, "FAILED"
    if outcome == STOPPED_EARLY:
        return {TAG_STOPPED_EARLY: "true"}, "FINISHED"
    return None


@dataclass
class Tally:
    """The sweep's counts by outcome and its failure lines (``<trial id>: <reason>``), as printed, logged as the
    parent run's ``sweep/<outcome>`` metrics and written to its summary.json."""

    counts: dict[str, int] = field(default_factory=lambda: {"trials": 0, **dict.fromkeys(OUTCOMES, 0)})
    failures: list[str] = field(default_factory=list)

    def add(self, trial_id: str, outcome: Outcome, reason: str | None = None) -> None:
        """Count one trial; a failed or errored one adds its failure line (the reason, else the outcome)."""
        if outcome not in OUTCOMES:
            raise ValueError(f"outcome: expected one of {list(OUTCOMES)}, got {outcome!r}")
        self.counts["trials"] += 1
        self.counts[outcome] += 1
        if outcome in (FAILED, ERRORED):
            self.failures.append(f"{trial_id}: {reason or outcome}")

    @property
    def summary(self) -> dict[str, Any]:
        """The parent run's summary.json."""
        return {"counts": self.counts, "failures": self.failures}

    @property
    def status(self) -> str:
        """The parent run's status: FAILED when every trial errored (nothing ran), else FINISHED."""
        return "FAILED" if self.counts["trials"] and self.counts[ERRORED] == self.counts["trials"] else "FINISHED"
