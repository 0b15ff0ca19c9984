"""The search algorithms a spec may name (``search.algorithm``), and what each implies; consulted by the spec's
checks, the space expansion, the Ray runner, the local runner and the CLI, so no module compares names.

Imports nothing but the standard library.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["DISTRIBUTIONS", "SEARCH_ALGORITHMS", "SearchAlgorithm", "search_algorithm"]

# Every distribution a space entry may name, in the order errors list them: {grid: [...]} and {choice: [...]} take
# values, the others [low, high] (int: integer bounds, inclusive).
DISTRIBUTIONS = ("grid", "choice", "uniform", "loguniform", "int")


@dataclass(frozen=True)
class SearchAlgorithm:
    """One value of ``search.algorithm``.

    expanded: every trial is known before launch (the space is expanded into configurations, each run with every
      seed); otherwise a searcher suggests configurations as results arrive (Optuna), and ``search.num_samples``
      says how many.
    sampled: configurations are drawn from the distributions (``search.num_samples`` of them, from
      ``search.seed``); otherwise every combination of the grids is one configuration.
    distributions: the space entries it accepts ({grid: [...]}, {uniform: [low, high]}, ...).
    union: whether ``space`` may be a list of spaces, run as their union.
    local: whether ``rims sweep local`` (no Ray, no searcher) can run it.
    """

    name: str
    doc: str
    expanded: bool
    sampled: bool
    distributions: tuple[str, ...]
    union: bool
    local: bool


SEARCH_ALGORITHMS: dict[str, SearchAlgorithm] = {a.name: a for a in (
    SearchAlgorithm("grid", "every combination of the space's grids", expanded=True, sampled=False,
                    distributions=("grid",), union=True, local=True),
    SearchAlgorithm("random", "search.num_samples configurations drawn from the space (search.seed)", expanded=True,
                    sampled=True, distributions=DISTRIBUTIONS, union=True, local=True),
    # a grid entry is a categorical choice for Optuna (OptunaSpace suggests it like choice)
    SearchAlgorithm("optuna", "Optuna's TPE suggests search.num_samples configurations, each scored by the mean "
                    "over seeds", expanded=False, sampled=True, distributions=DISTRIBUTIONS, union=False,
                    local=False),
)}


def search_algorithm(name: str) -> SearchAlgorithm:
    """The algorithm called ``name``; a ValueError in the spec's style for any other name."""
    try:
        return SEARCH_ALGORITHMS[name]
    except KeyError:
        raise ValueError(f"search.algorithm: expected one of {sorted(SEARCH_ALGORITHMS)}, got {name!r}") from None
