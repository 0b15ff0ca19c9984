"""The paper's tasks. Each module builds its data deterministically from a seed and reports the same
metric names for every model kind."""
