"""Unlabeled image inputs: discover them, give each a content-hash id, and decode them safely.

Sources: a folder (recursive, stable sorted order), a `.txt` list (one path per line) or `.jsonl` list (a path
key), or a local Hugging Face dataset saved with `save_to_disk` (an image column). Bad images are reported with a
reason by `load_image`; they never stop a run.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageOps

from mpa.config import ConfigError, ImagesConfig

log = logging.getLogger(__name__)
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff"}
MAX_IMAGE_PIXELS = 16_000 * 16_000  # decompression-bomb guard: refuse anything larger


@dataclass(frozen=True)
class ImageSource:
    """One input image: `source` is its stable key (a path, or `dataset[split]#row`)."""

    source: str
    path: Path | None = None
    dataset_row: int | None = None


def _list_folder(root: Path) -> list[ImageSource]:
    paths = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."))
    return [ImageSource(str(p), p) for p in paths]


def _list_file(list_path: Path, key: str) -> list[ImageSource]:
    out: list[ImageSource] = []
    base = list_path.parent
    for line_no, line in enumerate(list_path.read_text(encoding="utf-8").splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if list_path.suffix == ".jsonl":
            try:
                entry = json.loads(line)[key]
            except (json.JSONDecodeError, KeyError, TypeError):
                raise ConfigError(
                    f"{list_path}:{line_no}: expected a JSON object with a '{key}' path "
                    "(set images.image_column to the key that holds the path)"
                ) from None
        else:
            entry = line
        path = Path(entry) if Path(entry).is_absolute() else base / entry
        out.append(ImageSource(str(path), path))
    return out


def _open_dataset(cfg: ImagesConfig):  # -> datasets.Dataset
    import datasets

    try:
        ds = datasets.load_from_disk(cfg.path)
    except FileNotFoundError as err:
        raise ConfigError(f"images.path {cfg.path}: not a dataset saved with save_to_disk ({err})") from None
    if isinstance(ds, datasets.DatasetDict):
        split = cfg.split or ("train" if "train" in ds else next(iter(ds)) if len(ds) == 1 else None)
        if split is None or split not in ds:
            raise ConfigError(f"images.split: choose one of {sorted(ds)} for the dataset at {cfg.path}")
        ds = ds[split]
    if cfg.image_column not in ds.column_names:
        raise ConfigError(
            f"images.image_column '{cfg.image_column}' not in the dataset at {cfg.path}; columns: {ds.column_names}"
        )
    return ds


def resolve_kind(cfg: ImagesConfig) -> str:
    path = Path(cfg.path)
    if cfg.kind != "auto":
        return cfg.kind
    if path.is_file() and path.suffix in {".txt", ".jsonl"}:
        return "list"
    if path.is_dir() and ((path / "dataset_info.json").exists() or (path / "dataset_dict.json").exists()):
        return "hf_dataset"
    if path.is_dir():
        return "folder"
    raise ConfigError(f"images.path {cfg.path}: no such folder or list file")


def list_sources(cfg: ImagesConfig) -> list[ImageSource]:
    """All input images in a stable order, or a clear error if there are none."""
    kind = resolve_kind(cfg)
    path = Path(cfg.path)
    if kind == "folder":
        sources = _list_folder(path)
    elif kind == "list":
        sources = _list_file(path, cfg.image_column)
    else:
        ds = _open_dataset(cfg)
        sources = [ImageSource(f"{cfg.path}#{i}", None, i) for i in range(len(ds))]
    unique = list(dict.fromkeys(sources))
    if len(unique) < len(sources):
        log.warning("images.path %s: %d paths are listed more than once; each is used once", cfg.path,
                    len(sources) - len(unique))  # fmt: skip
        sources = unique
    if cfg.limit is not None:
        sources = sources[: cfg.limit]
    if not sources:
        raise ConfigError(f"images.path {cfg.path}: no images found (looked for {', '.join(sorted(IMAGE_SUFFIXES))})")
    return sources


def content_id(data: bytes) -> str:
    """A content hash: moved or duplicated files get the same id."""
    return hashlib.sha256(data).hexdigest()[:20]


@dataclass(frozen=True)
class LoadedImage:
    image_id: str
    image: Image.Image | None
    error: str | None = None


def decode_image(data: bytes) -> Image.Image:
    """Decode bytes to an RGB image (EXIF rotation applied, first frame of animations, alpha on white)."""
    Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS
    with Image.open(io.BytesIO(data)) as img:
        img.seek(0)
        img = ImageOps.exif_transpose(img)
        img.load()
        if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
            rgba = img.convert("RGBA")
            canvas = Image.new("RGB", rgba.size, (255, 255, 255))
            canvas.paste(rgba, mask=rgba.getchannel("A"))
            return canvas
        if img.mode in ("I;16", "I;16B", "I;16L", "I"):
            img = img.point(lambda v: v / 256).convert("L")
        return img.convert("RGB")


def read_bytes(src: ImageSource, dataset=None) -> bytes:
    if src.path is not None:
        return src.path.read_bytes()
    item = dataset[src.dataset_row]  # type: ignore[index]
    value = item[next(iter(item))] if len(item) == 1 else None
    if value is None:
        raise ValueError("dataset row has no image")
    if isinstance(value, dict) and value.get("bytes"):
        return value["bytes"]
    if isinstance(value, dict) and value.get("path"):
        return Path(value["path"]).read_bytes()
    if isinstance(value, Image.Image):
        buf = io.BytesIO()
        value.save(buf, format="PNG")
        return buf.getvalue()
    raise ValueError(f"unsupported image value of type {type(value).__name__}")


def load_image(src: ImageSource, dataset=None) -> LoadedImage:
    """Read and decode one image; never raises: failures come back with a reason."""
    try:
        data = read_bytes(src, dataset)
    except (OSError, ValueError) as err:
        return LoadedImage("", None, f"unreadable: {type(err).__name__}: {err}")
    image_id = content_id(data)
    if not data:
        return LoadedImage(image_id, None, "empty file")
    try:
        return LoadedImage(image_id, decode_image(data))
    except Image.DecompressionBombError as err:
        return LoadedImage(image_id, None, f"too large: {err}")
    except Exception as err:
        return LoadedImage(image_id, None, f"not a decodable image: {type(err).__name__}: {err}")


def iter_images(cfg: ImagesConfig, sources: list[ImageSource]) -> Iterator[tuple[ImageSource, LoadedImage]]:
    """Load images one by one in source order (a dataset is opened once, with only its image column)."""
    dataset = None
    if any(s.dataset_row is not None for s in sources):
        dataset = _open_dataset(cfg).select_columns([cfg.image_column])
        import datasets

        dataset = dataset.cast_column(cfg.image_column, datasets.Image(decode=False))
    for src in sources:
        yield src, load_image(src, dataset)
