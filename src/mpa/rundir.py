"""The run directory: stage folders, append-only JSONL records, atomic manifests, fingerprints and resume.

Layout (each stage owns one folder; files are the interface between stages)::

    RUN_DIR/config.yaml               resolved config of the latest invocation
    RUN_DIR/<stage>/started.json      fingerprint + settings, written when the stage starts
    RUN_DIR/<stage>/*.jsonl           append-only records with stable keys
    RUN_DIR/<stage>/manifest.json     written atomically and last: the stage is complete

A stage that is complete with the same fingerprint is skipped; a stage started or finished with other settings
is refused (naming the changed keys) unless forced, in which case it and every later stage are cleared.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ValidationError

from mpa import __version__
from mpa.contract import CHAIN, PIPELINE
from mpa.contract import STAGES as CONTRACT
from mpa.errors import MPAError, RunBusyError, StageConflictError

__all__ = ["JsonlWriter", "RunDir", "StageConflictError", "atomic_write_json", "hold_run_dir", "iter_jsonl"]

R = TypeVar("R", bound=BaseModel)
SCHEMA_VERSION = 1
STAGES = CHAIN  # the stages whose outputs feed the next (mpa.contract); evaluate's units stand on their own


@functools.cache
def file_mode() -> int:
    """The mode `open()` gives a new file under the process umask (0644 under the usual 022). Temporary files are
    created 0600; atomic writes set this mode before the rename, so teammates can read a run as they can read
    anything else the user writes. (The umask can only be read by setting it, hence once, cached.)"""
    umask = os.umask(0o022)
    os.umask(umask)
    return 0o666 & ~umask


def atomic_write_text(path: Path, text: str) -> None:
    """Write a file so readers see the old or the new content, never a torn one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, file_mode())
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError as err:
        Path(tmp).unlink(missing_ok=True)
        raise OSError(err.errno, f"{err.strerror} while writing", str(path)) from err
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=False, ensure_ascii=False) + "\n")


def read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def repair_jsonl(path: Path) -> int:
    """Truncate a torn last line (a crash mid-write); returns the number of bytes removed."""
    if not path.exists():
        return 0
    size = path.stat().st_size
    if size == 0:
        return 0
    with path.open("rb+") as handle:
        handle.seek(max(0, size - 1))
        if handle.read(1) == b"\n":
            return 0
        # Find the end of the last complete line.
        chunk = 1 << 16
        pos = size
        cut = 0
        while pos > 0:
            start = max(0, pos - chunk)
            handle.seek(start)
            data = handle.read(pos - start)
            idx = data.rfind(b"\n")
            if idx >= 0:
                cut = start + idx + 1
                break
            pos = start
        handle.truncate(cut)
        return size - cut


def iter_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    """Stream the complete records of a JSONL file (a torn last line is ignored)."""
    if not path.exists():
        return
    with path.open("r", encoding="utf-8") as handle:
        for line_no, line in enumerate(handle, 1):
            if not line.endswith("\n"):
                return  # torn tail: not a record yet
            line = line.strip()
            if not line:
                continue
            try:
                yield json.loads(line)
            except json.JSONDecodeError as err:
                msg = f"{path}:{line_no}: corrupt record ({err}); delete that line (or the stage folder) and rerun"
                raise MPAError(msg) from None


class JsonlWriter:
    """Append records to a JSONL file; each `write_many` is flushed and fsynced as one write."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        repair_jsonl(path)
        self._handle = path.open("a", encoding="utf-8")

    def write_many(self, records: Iterable[dict[str, Any]]) -> None:
        text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
        if text:
            try:
                self._handle.write(text)
                self._handle.flush()
                os.fsync(self._handle.fileno())
            except OSError as err:  # disk full, quota: name the file; a torn tail is repaired on the next run
                raise OSError(err.errno, f"{err.strerror} while writing", str(self.path)) from err

    def close(self) -> None:
        # Fails only after a failed write (already raised); what reached the disk is repaired on the next run.
        with contextlib.suppress(OSError):
            self._handle.close()

    def __enter__(self) -> JsonlWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def done_keys(path: Path, key: str) -> set[str]:
    """Keys written to a JSONL file without an `error` (failed records are retried when the stage resumes)."""
    repair_jsonl(path)
    return {str(r[key]) for r in iter_jsonl(path) if not r.get("error")}


def read_records(path: Path, record: type[R]) -> Iterator[R]:
    """The records of a JSONL artifact, each validated into the type it was written as (`mpa.records`); a line
    that no longer fits (edited by hand, or another mpa version) is one error naming the file and line."""
    for line_no, row in enumerate(iter_jsonl(path), 1):
        try:
            yield record.model_validate(row)
        except ValidationError as err:
            problem = err.errors()[0]
            where = ".".join(str(p) for p in problem["loc"])
            raise MPAError(f"{path}:{line_no}: not a {record.__name__} ({where}: {problem['msg']}); restore the file "
                           "or delete the stage folder and rerun") from None  # fmt: skip


def latest_records(path: Path, key: str, record: type[R]) -> dict[str, R]:
    """`latest_by_key`, typed: the last record written for each key."""
    return {str(getattr(r, key)): r for r in read_records(path, record)}


def latest_by_key(path: Path, key: str) -> dict[str, dict[str, Any]]:
    """The last record written for each key (a retried failure supersedes the failed record), in first-seen order."""
    out: dict[str, dict[str, Any]] = {}
    for record in iter_jsonl(path):
        out[str(record[key])] = record
    return out


def fingerprint(settings: dict[str, Any]) -> str:
    """A short stable hash of the settings that change a stage's outputs."""
    blob = json.dumps(settings, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:16]


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(tree, dict):
        out: dict[str, Any] = {}
        for k, v in tree.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out
    return {prefix.rstrip("."): tree}


def changed_keys(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Dotted keys whose values differ between two settings trees."""
    a, b = _flatten(old), _flatten(new)
    return sorted(k for k in a.keys() | b.keys() if a.get(k, "<unset>") != b.get(k, "<unset>"))


@dataclass(frozen=True)
class Decision:
    """What to do with a stage (or unit) folder, given the settings it would run with now."""

    action: Literal["run", "resume", "skip", "refuse"]
    changed: tuple[str, ...] = ()  # refuse: the dotted settings keys that differ

    @property
    def detail(self) -> str:
        if self.action == "refuse":
            return "changed: " + (", ".join(self.changed) or "upstream results") + " (use --force)"
        return {"run": "", "resume": "interrupted", "skip": "complete, same settings"}[self.action]


def resume_decision(previous: dict[str, Any] | None, finished: bool, fp: str, settings: dict[str, Any]) -> Decision:
    """The one resume / refuse rule. `previous` is the folder's manifest (`finished`) or its started.json — the
    fingerprint and settings it was begun with — or None for a fresh folder. Same fingerprint: skip a finished
    folder, resume an unfinished one; another fingerprint: refuse, naming the changed keys (--force redoes it)."""
    if previous is None:
        return Decision("run")
    if previous.get("fingerprint") == fp:
        return Decision("skip" if finished else "resume")
    return Decision("refuse", tuple(changed_keys(previous.get("settings", {}), settings)))


LOCK_NAME = ".mpa.lock"
_HELD: dict[Path, list[int]] = {}  # run directories this process holds: resolved path -> [fd, depth]


@contextlib.contextmanager
def hold_run_dir(root: Path | str, command: str, wait_s: float = 5.0) -> Iterator[None]:
    """Hold a run directory exclusively while changing it: the stages of `mpa run` / `mpa demo`, and each write of
    `mpa view`. Another process that tries gets `RunBusyError` naming the holder (pid and command) after waiting
    up to `wait_s` (a view's write takes milliseconds; a run takes its time). The lock is `flock` on
    RUN_DIR/.mpa.lock, released by the kernel when the holder exits, even on SIGKILL, so a crash leaves no stale
    lock. Re-entrant within a process (rounds run pipelines inside a run)."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    key = root.resolve()
    if key in _HELD:
        _HELD[key][1] += 1
        try:
            yield
        finally:
            _HELD[key][1] -= 1
        return
    fd = os.open(root / LOCK_NAME, os.O_RDWR | os.O_CREAT, file_mode())
    deadline = time.monotonic() + wait_s
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            if time.monotonic() < deadline:
                time.sleep(0.05)
                continue
            holder = os.read(fd, 4096).decode("utf-8", "replace").strip() or "starting up"
            os.close(fd)
            raise RunBusyError(f"{root} is being changed by another mpa process ({holder}); wait until it ends, "
                               "or use another run directory") from None  # fmt: skip
    os.ftruncate(fd, 0)
    os.write(fd, f"pid {os.getpid()}: {command}".encode())
    _HELD[key] = [fd, 1]
    try:
        yield
    finally:
        del _HELD[key]
        os.close(fd)  # releases the flock


class RunDir:
    """Paths and bookkeeping of one run directory."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)

    def stage_dir(self, stage: str) -> Path:
        return self.root / stage

    def manifest_path(self, stage: str) -> Path:
        return self.stage_dir(stage) / "manifest.json"

    def manifest(self, stage: str) -> dict[str, Any] | None:
        path = self.manifest_path(stage)
        return read_json(path) if path.exists() else None

    def previous(self, stage: str) -> tuple[dict[str, Any] | None, bool]:
        """What a stage folder was made with: (its manifest, True) when finished, (its started.json, False) when
        begun, (None, False) when fresh."""
        manifest = self.manifest(stage)
        if manifest is not None:
            return manifest, True
        started = self.stage_dir(stage) / "started.json"
        return (read_json(started), False) if started.exists() else (None, False)

    def decide(self, stage: str, fp: str, settings: dict[str, Any]) -> Decision:
        """`resume_decision` for one stage or unit folder of this run directory."""
        return resume_decision(*self.previous(stage), fp, settings)

    def is_complete(self, stage: str, fp: str) -> bool:
        manifest = self.manifest(stage)
        return manifest is not None and manifest.get("fingerprint") == fp

    def check_version(self) -> None:
        """Refuse a run directory written by an incompatible schema."""
        for stage in PIPELINE:
            for name in ("manifest.json", "started.json"):
                path = self.stage_dir(stage) / name
                if path.exists():
                    found = read_json(path).get("schema_version")
                    if found != SCHEMA_VERSION:
                        raise StageConflictError(
                            f"{path} was written by another mpa version (schema {found}, this mpa writes "
                            f"{SCHEMA_VERSION}); use a new --run-dir or rerun with --force"
                        )

    def begin(self, stage: str, fp: str, settings: dict[str, Any], force: bool = False) -> bool:
        """Prepare a stage; returns False if it is already complete with these settings (skip it).

        Raises `StageConflictError` when the folder holds work made with other settings and `force` is off;
        with `force`, that stage and every later stage are cleared and redone. A stage complete with the same
        settings is skipped even with `force` (delete its folder to recompute it).
        """
        sdir = self.stage_dir(stage)
        started_path = sdir / "started.json"
        decision = self.decide(stage, fp, settings)
        if decision.action == "refuse":
            if not force:
                keys = decision.changed or ("(model or upstream files)",)
                raise StageConflictError(
                    f"stage '{stage}' in {sdir} was run with other settings; changed: {', '.join(keys)}. "
                    "Use --force to redo it (and the stages after it), or choose another --run-dir."
                )
            self.clear_from(stage)
        elif decision.action == "skip":
            return False
        sdir.mkdir(parents=True, exist_ok=True)
        if not started_path.exists():
            atomic_write_json(
                started_path,
                {"schema_version": SCHEMA_VERSION, "fingerprint": fp, "settings": settings, "started_at": time.time()},
            )
        return True

    def finish(self, stage: str, fp: str, settings: dict[str, Any], outputs: dict[str, Any]) -> dict[str, Any]:
        """Write the stage manifest, atomically and last."""
        started = read_json(self.stage_dir(stage) / "started.json")
        return self.write_manifest(stage, fp, settings, outputs, started.get("started_at"))

    def write_manifest(
        self,
        stage: str,
        fp: str,
        settings: dict[str, Any],
        outputs: dict[str, Any],
        started_at: float | None,
        finished_at: float | None = None,
    ) -> dict[str, Any]:
        """The manifest of a finished stage or unit (`finish`; evaluate writes its own over its units, finished
        when its last unit finished)."""
        manifest = {
            "schema_version": SCHEMA_VERSION,
            "mpa_version": __version__,
            "stage": stage,
            "fingerprint": fp,
            "settings": settings,
            "started_at": started_at,
            "finished_at": time.time() if finished_at is None else finished_at,
            **outputs,
        }
        manifest["io"] = CONTRACT[stage.split("/")[0]].io(manifest)
        atomic_write_json(self.manifest_path(stage), manifest)
        return manifest

    def clear_from(self, stage: str) -> None:
        """Delete a stage's folder and those of the pipeline stages after it (a sub-folder unit: only itself)."""
        later = STAGES[STAGES.index(stage) :] if stage in STAGES else (stage,)
        for name in later:
            shutil.rmtree(self.stage_dir(name), ignore_errors=True)

    def require(self, stage: str) -> dict[str, Any]:
        """The manifest of a finished upstream stage, or a clear error."""
        manifest = self.manifest(stage)
        if manifest is None:
            raise StageConflictError(
                f"stage '{stage}' has not finished in {self.root}; run `mpa {stage} --run-dir {self.root} ...` "
                "or `mpa run` first"
            )
        return manifest
