"""Where runs go and where a sweep came from: tracking URIs every process can use, the git state of the
submitting tree and package versions (the parent run's provenance tags). Standard library only."""

from __future__ import annotations

import os
import subprocess
from importlib import metadata
from pathlib import Path
from urllib.parse import urlparse

from ..keys import TAG_GIT_DIRTY, TAG_GIT_SHA, TAG_SPEC_PATH, TAG_VERSION_PREFIX

__all__ = ["absolute_tracking_uri", "git_state", "is_local_uri", "package_versions", "sweep_tags"]


def absolute_tracking_uri(uri: str | None, cwd: Path | None = None) -> str:
    """The tracking URI every process can use: default sqlite:///<abs cwd>/mlflow.db; relative paths made
    absolute (trials run in other processes and directories)."""
    cwd = (cwd or Path.cwd()).resolve()
    if not uri:
        return f"sqlite:///{cwd / 'mlflow.db'}"
    p = urlparse(uri)
    if p.scheme == "sqlite":
        path = uri[len("sqlite:///"):]
        return uri if path.startswith("/") else f"sqlite:///{(cwd / path).resolve()}"
    if p.scheme in ("", "file"):
        path = Path(p.path if p.scheme == "file" else uri)
        return f"file://{(cwd / path).resolve() if not path.is_absolute() else path}"
    return uri


def is_local_uri(uri: str) -> bool:
    """True for stores only this machine can reach (sqlite files, local file stores)."""
    return urlparse(uri).scheme in ("sqlite", "file", "")


def git_state(cwd: Path | None = None) -> tuple[str, bool]:
    """(sha, dirty) of the working tree the sweep is submitted from; ("unknown", False) outside git.

    RIMS_GIT_SHA / RIMS_GIT_DIRTY, when set, win: for jobs whose working copy has no .git.
    """
    if os.environ.get("RIMS_GIT_SHA"):
        return os.environ["RIMS_GIT_SHA"], os.environ.get("RIMS_GIT_DIRTY", "false").lower() == "true"
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10,
                             check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd,
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip() != ""
        return sha, dirty
    except (OSError, subprocess.SubprocessError):
        return "unknown", False


def sweep_tags(spec_path: str | Path | None = None) -> dict[str, str]:
    """The parent run's provenance tags: git sha and dirty flag of the submitting tree (outside a repository,
    of the spec file's folder), package versions, and the spec's path as given (the report's "Reproduce")."""
    sha, dirty = git_state()
    if sha == "unknown" and spec_path is not None:
        sha, dirty = git_state(Path(spec_path).resolve().parent)
    return {TAG_GIT_SHA: sha, TAG_GIT_DIRTY: str(dirty),
            **({TAG_SPEC_PATH: str(spec_path)} if spec_path is not None else {}),
            **{f"{TAG_VERSION_PREFIX}{k}": v for k, v in package_versions().items()}}


def package_versions() -> dict[str, str]:
    """Installed version of each package a sweep's results depend on ("missing" when not installed)."""
    out = {}
    for name in ("torch", "ray", "mlflow", "optuna", "rims-lab"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "missing"
    return out
