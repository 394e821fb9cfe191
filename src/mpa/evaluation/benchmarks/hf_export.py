"""Read Hugging Face dataset exports saved locally (Parquet files or `save_to_disk`) and extract their images.

Two layouts are recognised under DATA_DIR (nothing is downloaded):

- Parquet, as on the Hub: `data/{split}-00000-of-00004.parquet` (sharded), `{split}.parquet`, or the
  `refs/convert/parquet` layout `{config}/{split}/0000.parquet`. Any other `*.parquet` file is "unsplit" and
  is used for whichever split is asked for, when the export has no named splits.
- `save_to_disk`: `dataset_dict.json` ({"splits": [...]}) with one folder per split, or a single dataset folder
  (`state.json` + `data-*.arrow`, Arrow IPC streams). Read with pyarrow directly; `datasets` is not imported.

Rows are read in batches, in file order (shards sorted by name), and stop as soon as the caller stops iterating,
so `limit` never reads more than it needs. Image cells (`{"bytes", "path"}` structs, raw bytes or path strings)
are written once to `cache_dir/<content hash><ext>`; a later load finds the file and does not write it again.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from mpa.evaluation.benchmarks.common import BenchmarkError, EvalSample

__all__ = [
    "ExportPart",
    "columns_of",
    "extract_image",
    "find_export",
    "iter_rows",
    "samples_from_export",
    "select_split",
]

_SHARD = re.compile(r"^(?P<split>.+?)-\d{5}-of-\d{5}$")
_KNOWN_SPLITS = {"train", "validation", "val", "test", "val2014", "train2014", "testdev", "dev"}
_MAGIC = (
    (b"\x89PNG\r\n\x1a\n", ".png"),
    (b"\xff\xd8\xff", ".jpg"),
    (b"GIF87a", ".gif"),
    (b"GIF89a", ".gif"),
    (b"BM", ".bmp"),
    (b"II*\x00", ".tif"),
    (b"MM\x00*", ".tif"),
)
_BATCH_ROWS = 256


@dataclass(frozen=True)
class ExportPart:
    """One file of an export: `split` is "" when the file name carries no split."""

    split: str
    path: Path
    kind: str  # "parquet" | "arrow"


def _parquet_split(path: Path) -> str:
    shard = _SHARD.match(path.stem)
    if shard:
        return shard.group("split")
    if path.stem in _KNOWN_SPLITS:
        return path.stem
    if path.stem.isdigit():  # refs/convert/parquet: {config}/{split}/0000.parquet
        return path.parent.name
    return ""


def _arrow_parts(folder: Path, split: str) -> list[ExportPart]:
    state = json.loads((folder / "state.json").read_text(encoding="utf-8"))
    files = [entry["filename"] for entry in state.get("_data_files", [])]
    return [ExportPart(split, folder / name, "arrow") for name in files]


def find_export(data_dir: Path) -> list[ExportPart]:
    """Every part of a Hugging Face export under `data_dir` ([] when there is none)."""
    if (data_dir / "dataset_dict.json").is_file():
        splits = json.loads((data_dir / "dataset_dict.json").read_text(encoding="utf-8")).get("splits", [])
        return [part for split in splits for part in _arrow_parts(data_dir / split, split)]
    if (data_dir / "state.json").is_file():
        return _arrow_parts(data_dir, "")
    # Hidden folders under data_dir (our .mpa_cache, .git, ...) are skipped; folders above it are not looked at.
    paths = sorted(
        p for p in data_dir.rglob("*.parquet") if not any(s.startswith(".") for s in p.relative_to(data_dir).parts)
    )
    return [ExportPart(_parquet_split(p), p, "parquet") for p in paths]


def select_split(benchmark: str, parts: list[ExportPart], aliases: Sequence[str], data_dir: Path) -> list[ExportPart]:
    """The parts of the requested split (any of `aliases`), or all unsplit parts when the export names no split."""
    chosen = [p for p in parts if p.split in aliases]
    if chosen:
        return chosen
    named = sorted({p.split for p in parts if p.split})
    if not named:
        return parts
    raise BenchmarkError(
        f"{benchmark}: no {aliases[0]!r} split in the Hugging Face export at {data_dir} "
        f"(found: {', '.join(named)}); pass split= one of those"
    )


def columns_of(part: ExportPart) -> list[str]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    if part.kind == "parquet":
        return list(pq.read_schema(part.path).names)
    with pa.memory_map(str(part.path)) as source:
        return list(pa.ipc.open_stream(source).schema.names)


def iter_rows(parts: list[ExportPart], columns: Sequence[str]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(`"<file> row <i>"`, row) for every row of the given parts, in order; rows hold the requested columns
    that exist in the file."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    for part in parts:
        present = [c for c in columns if c in columns_of(part)]
        if part.kind == "parquet":
            batches: Iterator[Any] = pq.ParquetFile(part.path).iter_batches(batch_size=_BATCH_ROWS, columns=present)
            row = 0
            for batch in batches:
                for record in batch.to_pylist():
                    yield f"{part.path} row {row}", record
                    row += 1
        else:
            with pa.memory_map(str(part.path)) as source:
                row = 0
                for batch in pa.ipc.open_stream(source):
                    for record in batch.select(present).to_pylist():
                        yield f"{part.path} row {row}", record
                        row += 1


def _suffix(data: bytes, name: str | None) -> str:
    for magic, suffix in _MAGIC:
        if data.startswith(magic):
            return suffix
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return ".webp"
    suffix = Path(name).suffix.lower() if name else ""
    return suffix if re.fullmatch(r"\.[a-z0-9]{1,5}", suffix) else ".bin"


def _write_once(data: bytes, path: Path) -> None:
    if path.is_file() and path.stat().st_size == len(data):
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)  # atomic: a crash never leaves a torn image that a later load would trust


def extract_image(value: Any, cache_dir: Path, export_dir: Path) -> str | None:
    """A real file for one image cell: bytes are written to `cache_dir` (named by content hash), paths are kept.

    Returns None when the cell holds neither bytes nor the path of an existing file.
    """
    data: bytes | None = None
    name: str | None = None
    if isinstance(value, dict):
        data, name = value.get("bytes"), value.get("path")
    elif isinstance(value, (bytes, bytearray)):
        data = bytes(value)
    elif isinstance(value, str):
        name = value
    if data:
        path = cache_dir / f"{hashlib.sha256(data).hexdigest()[:32]}{_suffix(data, name)}"
        _write_once(data, path)
        return str(path)
    if name:
        candidate = Path(name) if Path(name).is_absolute() else export_dir / name
        if candidate.is_file():
            return str(candidate)
    return None


def samples_from_export(
    benchmark: str,
    data_dir: Path,
    parts: list[ExportPart],
    columns: Sequence[str],
    to_sample: Callable[[str, dict[str, Any]], EvalSample | None],
    *,
    optional: Sequence[str] = (),
    image_column: str = "image",
    cache_dir: Path,
    limit: int | None,
) -> list[EvalSample]:
    """Turn export rows into samples: `to_sample(where, row)` builds one (image_path left empty) or skips the row
    (None, e.g. another ChartQA subset); the image of each kept row is then extracted into `cache_dir`.
    `columns` must all exist (an error lists what the export has); `optional` columns are read when present.

    Stops after `limit` samples. Rows without a usable image raise one error naming the first and the count.
    """
    required = [c for c in columns if c != image_column]
    found = set().union(*(columns_of(p) for p in parts)) if parts else set()
    missing_columns = [c for c in [*required, image_column] if c not in found]
    if missing_columns:
        raise BenchmarkError(
            f"{benchmark}: the Hugging Face export at {data_dir} has no column(s) {', '.join(missing_columns)} "
            f"(found: {', '.join(sorted(found))})"
        )
    samples: list[EvalSample] = []
    bad: list[str] = []
    for where, row in iter_rows(parts, [*required, *optional, image_column]):
        if limit is not None and len(samples) >= limit:
            break
        sample = to_sample(where, row)
        if sample is None:
            continue
        path = extract_image(row.get(image_column), cache_dir, data_dir)
        if path is None:
            bad.append(where)
        samples.append(replace(sample, image_path=path or ""))
    if bad:
        raise BenchmarkError(
            f"{benchmark}: {len(bad)} of {len(samples)} rows of the Hugging Face export have no usable image, "
            f"first: {bad[0]}; expected an image column with bytes or the path of an existing file"
        )
    return samples
