"""Where edgeagent keeps its models, config, cache and state.

Resolution order for each directory: an explicit environment variable, then
the directory systemd gives the service (``STATE_DIRECTORY``,
``CONFIGURATION_DIRECTORY``, ``CACHE_DIRECTORY``), then the per-user XDG
directory.
"""

from __future__ import annotations

import os
from pathlib import Path


def _first_systemd_dir(var: str) -> Path | None:
    value = os.environ.get(var)
    if not value:
        return None
    # systemd passes a colon-separated list when several directories are set.
    return Path(value.split(":")[0])


def _xdg(var: str, default: str) -> Path:
    value = os.environ.get(var)
    return Path(value) if value else Path.home() / default


def models_dir() -> Path:
    """The one directory that holds every model file."""
    if env := os.environ.get("EDGEAGENT_MODELS"):
        return Path(env)
    if state := _first_systemd_dir("STATE_DIRECTORY"):
        return state / "models"
    return _xdg("XDG_DATA_HOME", ".local/share") / "edgeagent" / "models"


def config_file() -> Path:
    """The config file read at start (it need not exist)."""
    if env := os.environ.get("EDGEAGENT_CONFIG"):
        return Path(env)
    if conf := _first_systemd_dir("CONFIGURATION_DIRECTORY"):
        return conf / "config.toml"
    return _xdg("XDG_CONFIG_HOME", ".config") / "edgeagent" / "config.toml"


def cache_dir() -> Path:
    """Downloads and other things that can be fetched again."""
    if env := os.environ.get("EDGEAGENT_CACHE"):
        return Path(env)
    if cache := _first_systemd_dir("CACHE_DIRECTORY"):
        return cache
    return _xdg("XDG_CACHE_HOME", ".cache") / "edgeagent"


def state_dir() -> Path:
    """State the device writes and must keep across restarts (e.g. the remote config overlay)."""
    if env := os.environ.get("EDGEAGENT_STATE"):
        return Path(env)
    if state := _first_systemd_dir("STATE_DIRECTORY"):
        return state
    return _xdg("XDG_STATE_HOME", ".local/state") / "edgeagent"
