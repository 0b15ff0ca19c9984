"""analysis reads what sweeps wrote and imports nothing of the training stack: importing it pulls in neither torch,
ray nor rims_core, and of sweeps only sweeps.keys (stdlib only)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

MODULES = ["analysis.report", "analysis.tables", "analysis.plots", "analysis.export", "analysis.metrics"]


@pytest.mark.parametrize("module", MODULES)
def test_analysis_imports_no_training_stack(module):
    code = (f"import json, sys; import {module}; "
            "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('torch', 'ray', 'rims_core', 'rllib_models', 'sweeps', 'rims_cli'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = json.loads(out.stdout)
    assert set(loaded) <= {"sweeps", "sweeps.keys"}, f"{module} imports {loaded}"
