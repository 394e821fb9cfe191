"""Errors a user can fix: the CLI prints them as one `mpa: error: ...` line and exits with code 2."""

from __future__ import annotations


class MPAError(Exception):
    """A problem with inputs, settings or the run directory; the message names the file/key and the fix."""


class ConfigError(MPAError, ValueError):
    """A config problem: the message names the key or file and how to fix it."""


class StageConflictError(MPAError, RuntimeError):
    """A stage folder holds work made with other settings, or an upstream stage has not finished."""
