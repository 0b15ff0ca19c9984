"""The ``rims`` command: a thin shell over the libraries (rims_core, rllib_models, sweeps, analysis).

Nothing in the libraries imports this package. Each command group is one module (``demo``, ``sweep``, ``rl``,
``runs`` for ``eval`` and ``tracking``, ``analyze``) that imports argparse and the standard library at its top
and what its command needs inside the command, so a refused spec never loads torch, Ray, MLflow or Optuna.
The entry point is :func:`rims_cli.main.main` (``python -m rims_cli`` runs it too).
"""

__all__: list[str] = []
