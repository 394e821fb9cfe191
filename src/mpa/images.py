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
import warnings
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from mpa.config import ConfigError, ImagesConfig
from mpa.pixels import fit_pixel_budget, pixel_budget_size

log = logging.getLogger(__name__)
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff"}
MAX_IMAGE_PIXELS = 16_000 * 16_000  # decompression-bomb guard: refuse anything larger
MAX_DECODED_PIXELS = 4096 * 4096  # larger images are downscaled on decode (above every processor's own budget)
MIN_SIDE = 32  # smaller sides are upscaled (nearest): some processors reject images under 28 px
MAX_ASPECT = 100.0  # longer/shorter side; beyond it no VLM processor gives a usable image (Qwen2-VL refuses > 200)


@dataclass(frozen=True)
class ImageSource:
    """One input image: `source` is its stable key (a path, or `dataset[split]#row`)."""

    source: str
    path: Path | None = None
    dataset_row: int | None = None


def _list_folder(root: Path) -> list[ImageSource]:
    """Files named like images, or with no extension at all (a misnamed or extension-less file may still be an
    image; one that is not is recorded as skipped with a reason). Symlinks are listed even when broken, so they
    are accounted for. Hidden files and folders are not inputs; other files (captions, CSVs) are counted in a log
    line."""
    paths, ignored = [], Counter[str]()
    for p in root.rglob("*"):
        if any(part.startswith(".") for part in p.relative_to(root).parts) or not (p.is_symlink() or p.is_file()):
            continue
        if p.suffix.lower() in IMAGE_SUFFIXES or not p.suffix:
            paths.append(p)
        else:
            ignored[p.suffix.lower()] += 1
    if ignored:
        log.info("images.path %s: ignored %d files that are not images by name (%s)", root, sum(ignored.values()),
                 ", ".join(f"{n} {suffix}" for suffix, n in ignored.most_common()))  # fmt: skip
    return [ImageSource(str(p), p) for p in sorted(paths)]


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
    if cfg.part is not None:
        sources = sources[cfg.part[0] - 1 :: cfg.part[1]]
    if not sources:
        raise ConfigError(
            f"images.path {cfg.path}: no images found (looked for files named {', '.join(sorted(IMAGE_SUFFIXES))} or "
            "without an extension); point images.path at a folder of images, a .txt/.jsonl list or a saved dataset"
        )
    return sources


def content_id(data: bytes) -> str:
    """A content hash: moved or duplicated files get the same id."""
    return hashlib.sha256(data).hexdigest()[:20]


@dataclass(frozen=True)
class LoadedImage:
    image_id: str
    image: Image.Image | None
    error: str | None = None


class ImageRejected(ValueError):
    """An image that decodes but that no model can use (the message is the reason recorded)."""


def decode_image(data: bytes) -> Image.Image:
    """Decode bytes to an RGB image: EXIF rotation applied, first frame of an animation, alpha composited on white,
    16/32-bit and float images scaled to 8 bits, huge images downscaled and tiny ones upscaled (aspect kept)."""
    Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS
    with warnings.catch_warnings():
        # Pillow only warns between 1x and 2x its limit; anything over our limit is refused outright.
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        return _decode(data)


def _decode(data: bytes) -> Image.Image:
    with Image.open(io.BytesIO(data)) as img:
        img.seek(0)
        w, h = img.size
        if min(w, h) < 1 or max(w, h) / min(w, h) > MAX_ASPECT:
            raise ImageRejected(f"extreme aspect ratio {w}x{h} (more than {MAX_ASPECT:g}:1)")
        if w * h > MAX_DECODED_PIXELS:
            img.draft(
                "RGB", pixel_budget_size(w, h, MAX_DECODED_PIXELS)
            )  # JPEG: decode at reduced scale; others: no-op
        img = ImageOps.exif_transpose(img)
        img.load()
        img = _to_rgb(img)
    img = fit_pixel_budget(img, MAX_DECODED_PIXELS)
    w, h = img.size
    if min(w, h) < MIN_SIDE:
        scale = MIN_SIDE / min(w, h)
        img = img.resize((max(MIN_SIDE, round(w * scale)), max(MIN_SIDE, round(h * scale))), Image.Resampling.NEAREST)
    return img


def _to_rgb(img: Image.Image) -> Image.Image:
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        canvas = Image.new("RGB", rgba.size, (255, 255, 255))
        canvas.paste(rgba, mask=rgba.getchannel("A"))
        return canvas
    if img.mode.startswith(("I;16", "I", "F")):
        arr = np.asarray(img, dtype=np.float64)
        lo, hi = float(arr.min()), float(arr.max())
        top = 65535.0 if img.mode.startswith("I;16") or (lo >= 0 and hi <= 65535 and hi > 255) else max(hi, 1.0)
        if img.mode == "F" and hi <= 1.0:
            top = 1.0
        arr = np.clip(arr / top * 255.0, 0, 255).astype(np.uint8)
        return Image.fromarray(arr, mode="L").convert("RGB")
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
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        return LoadedImage(image_id, None, f"too large: {err}")
    except ImageRejected as err:
        return LoadedImage(image_id, None, f"unusable image: {err}")
    except MemoryError:
        return LoadedImage(image_id, None, "too large: out of memory while decoding")
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
