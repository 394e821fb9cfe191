"""Errors a user can fix: the CLI prints them as one `mpa: error: ...` line.

Exit codes: 0 done; 1 a run that could not finish (`RunError`: nothing selected to train on, every request of a
batch failed; also a full disk); 2 a usage, config or input error (`MPAError`, `ConfigError`, `StageConflictError`).
"""

from __future__ import annotations


class MPAError(Exception):
    """A problem with inputs, settings or the run directory; the message names the file/key and the fix."""


class ConfigError(MPAError, ValueError):
    """A config problem: the message names the key or file and how to fix it."""


class RunError(MPAError):
    """The run was set up right but could not finish (nothing to train on, every request failed): exit code 1.
    Finished stages are kept; the message says what to change before rerunning."""


class StageConflictError(MPAError, RuntimeError):
    """A stage folder holds work made with other settings, or an upstream stage has not finished."""


class RunBusyError(RunError):
    """Another mpa process is changing this run directory (see `mpa.rundir.hold_run_dir`)."""
