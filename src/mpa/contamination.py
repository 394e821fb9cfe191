"""The contamination guard: find pool images that are near-duplicates of a benchmark's images, before annotation.

An unlabeled pool scraped from the web may hold the very images a benchmark tests on (or resized, re-encoded or
slightly cropped copies of them); leveling on them would inflate the after-score. `Screen` holds the reference
(benchmark) images and tells, for each pool image, which reference it copies, if any.

Why not a global perceptual hash (imagehash's pHash / colorhash, the maintained choice)? Measured on easy-VQA
(64×64, one shape on white), pHash puts *different* images at Hamming distance 0–4 (a black triangle vs a black
rectangle; 51 of 9,000 distinct pairs ≤ 4) while a 3-pixel crop of the *same* image moves it to 32 and JPEG q70 to
22: on images that are mostly background, a global hash sees the background. So the check compares small
thumbnails directly, against 81 crop views of each reference (0 / 3 / 6 % cut from each side) so a cropped copy
lines up with one of them:
  * plain background (three quarters of the border is one colour): the shapes must coincide — foreground masks
    (pixels far from the background colour) with IoU ≥ 0.85 in the best view, foreground mean colours within 0.15
    and backgrounds within 0.015. On easy-VQA: 400 of 400 changed copies flagged (JPEG q70, resized, cropped 3 px,
    cropped on one side, cropped + resized), 1 of 250,000 distinct test-image pairs (the same shape and colour at
    almost the same place: a real near-duplicate). Of the demo's 2,000 pool images, 5 match a test image.
  * anything else (photos, charts with texture, a shape touching the border): the mean absolute difference of
    24×24 thumbnails in the best view ≤ 0.012 against a plain-background reference (changed easy-VQA copies
    ≤ 0.0105, distinct pairs from 0.0077 up) and ≤ 0.03 against a textured one (photo-like images: copies cropped
    on one side ≤ 0.022, distinct ≥ 0.2); `tests/test_contamination.py` checks copies and distinct images of both
    kinds.
A cheap filter (background/foreground colours and mask area, or an 8×8 thumbnail) picks the few references worth
the full comparison, so a pool image costs about a millisecond against a thousand references.

Pure numpy + Pillow; nothing here reads a label.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

METHOD = "thumbs@1"  # recorded with every result: a changed rule is a changed input set
MASK_SIZE = 32
THUMB_SIZE = 24
COARSE_SIZE = 8
CROP_FRACTIONS = (0.0, 0.03, 0.06)  # cut from each side, as a share of the side
PLAIN_BORDER_SHARE = 0.75  # a background is plain when this share of the border is within
PLAIN_BORDER_DIFF = 0.03  # this much (largest channel, 0–1 scale) of the border's median colour
FOREGROUND_DIFF = 0.25  # a pixel whose largest channel differs this much from the background is foreground
MIN_IOU = 0.85
MAX_FG_COLOUR_DIFF = 0.15
MAX_BG_DIFF = 0.015
MAX_THUMB_MAD = 0.012  # against a plain-background reference (easy-VQA: changed copies ≤ 0.0105)
MAX_THUMB_MAD_TEXTURED = 0.03  # against a textured one (photo-like: changed copies ≤ 0.022, distinct ≥ 0.2)
MAX_COARSE_MAD = 0.06


@dataclass(frozen=True)
class Match:
    """A pool image flagged as a near-duplicate of `reference` (an image path of benchmark `benchmark`)."""

    benchmark: str
    reference: str
    rule: str  # "mask" (plain background) or "thumbnail"
    score: float  # mask IoU, or thumbnail mean absolute difference


def _rgb(image: Image.Image) -> Image.Image:
    return image if image.mode == "RGB" else image.convert("RGB")


def _views(image: Image.Image, size: int, all_crops: bool) -> np.ndarray:
    """(views, size, size, 3) float32 in [0, 1]: the image resized, or each of its 81 crop views resized."""
    w, h = image.size
    crops = itertools.product(CROP_FRACTIONS, repeat=4) if all_crops else [(0.0, 0.0, 0.0, 0.0)]
    out = []
    for left, top, right, bottom in crops:
        box = (round(left * w), round(top * h), w - round(right * w), h - round(bottom * h))
        out.append(np.asarray(image.resize((size, size), Image.Resampling.BILINEAR, box=box), dtype=np.float32))
    return np.stack(out) / 255.0


def _border(view: np.ndarray) -> np.ndarray:
    return np.concatenate([view[0], view[-1], view[:, 0], view[:, -1]])


@dataclass(frozen=True)
class _Features:
    plain: bool
    background: np.ndarray  # (3,)
    foreground: np.ndarray  # (3,) mean colour of the foreground (background colour if there is none)
    area: float  # foreground share of the image


def _features(view: np.ndarray) -> tuple[_Features, np.ndarray]:
    border = _border(view)
    background = np.median(border, axis=0)
    mask = np.abs(view - background).max(axis=-1) > FOREGROUND_DIFF
    plain = bool((np.abs(border - background).max(axis=-1) <= PLAIN_BORDER_DIFF).mean() >= PLAIN_BORDER_SHARE)
    foreground = view[mask].mean(axis=0) if mask.any() else background
    return _Features(plain, background, foreground, float(mask.mean())), mask


def _masks(views: np.ndarray) -> np.ndarray:
    """(views, size*size) foreground masks of a stack of views, each against its own border's median colour."""
    border = np.concatenate([views[:, 0], views[:, -1], views[:, :, 0], views[:, :, -1]], axis=1)
    background = np.median(border, axis=1)[:, None, None, :]
    return (np.abs(views - background).max(axis=-1) > FOREGROUND_DIFF).reshape(len(views), -1)


class Screen:
    """Reference images of one or more benchmarks; `match(image)` says which one a pool image copies."""

    def __init__(self) -> None:
        self.names: list[tuple[str, str]] = []  # (benchmark, image path) per reference
        self._bg: list[np.ndarray] = []
        self._fg: list[np.ndarray] = []
        self._area: list[float] = []
        self._plain: list[bool] = []
        self._masks: list[np.ndarray | None] = []  # (81, MASK_SIZE**2) bool, plain references only
        self._coarse: list[np.ndarray] = []  # (COARSE_SIZE**2 * 3,)
        self._thumbs: dict[int, np.ndarray] = {}  # (81, THUMB_SIZE**2 * 3), computed when first needed
        self._arrays: tuple[np.ndarray, ...] | None = None

    def __len__(self) -> int:
        return len(self.names)

    def add(self, benchmark: str, paths: Iterable[str]) -> None:
        """Add each distinct image of `paths` (a benchmark's image files) as a reference."""
        seen = {p for _, p in self.names}
        for path in paths:
            if path in seen:
                continue
            seen.add(path)
            with Image.open(path) as im:
                image = _rgb(im)
                masks = _views(image, MASK_SIZE, all_crops=True)
                coarse = _views(image, COARSE_SIZE, all_crops=False)[0]
            feats, _ = _features(masks[0])
            self.names.append((benchmark, path))
            self._bg.append(feats.background)
            self._fg.append(feats.foreground)
            self._area.append(feats.area)
            self._plain.append(feats.plain)
            self._masks.append(_masks(masks) if feats.plain else None)
            self._coarse.append(coarse.reshape(-1))
        self._arrays = None

    def _stacked(self) -> tuple[np.ndarray, ...]:
        if self._arrays is None:
            self._arrays = (np.array(self._bg).reshape(-1, 3), np.array(self._fg).reshape(-1, 3),
                            np.array(self._area), np.array(self._plain, dtype=bool),
                            np.array(self._coarse).reshape(len(self.names), -1))  # fmt: skip
        return self._arrays

    def match(self, image: Image.Image) -> Match | None:
        """The reference `image` is a near-duplicate of (the closest one), or None."""
        if not self.names:
            return None
        image = _rgb(image)
        feats, mask = _features(_views(image, MASK_SIZE, all_crops=False)[0])
        bg, fg, area, plain, coarse = self._stacked()
        if feats.plain:
            near = (
                plain
                & (np.abs(bg - feats.background).max(axis=1) <= MAX_BG_DIFF)
                & (np.abs(fg - feats.foreground).max(axis=1) <= MAX_FG_COLOUR_DIFF)
                & (area <= 2 * feats.area + 1e-9)
                & (feats.area <= 2 * area + 1e-9)
            )
            best: tuple[float, int] | None = None
            flat = mask.reshape(-1)
            for i in np.flatnonzero(near):
                views = self._masks[i]
                assert views is not None
                inter = (views & flat).sum(axis=1)
                union = (views | flat).sum(axis=1)
                iou = float(np.max(np.where(union > 0, inter / np.maximum(union, 1), 1.0)))
                if iou >= MIN_IOU and (best is None or iou > best[0]):
                    best = (iou, int(i))
            if best is not None:
                return Match(*self.names[best[1]], rule="mask", score=round(best[0], 4))
            return None
        small = _views(image, COARSE_SIZE, all_crops=False)[0].reshape(-1)
        near_coarse = np.flatnonzero(np.abs(coarse - small).mean(axis=1) <= MAX_COARSE_MAD)
        if near_coarse.size == 0:
            return None
        thumb = _views(image, THUMB_SIZE, all_crops=False)[0].reshape(-1)
        best_mad: tuple[float, int] | None = None
        for i in near_coarse:
            mad = float(np.abs(self._thumb_views(int(i)) - thumb).mean(axis=1).min())
            limit = MAX_THUMB_MAD if plain[i] else MAX_THUMB_MAD_TEXTURED
            if mad <= limit and (best_mad is None or mad < best_mad[0]):
                best_mad = (mad, int(i))
        if best_mad is not None:
            return Match(*self.names[best_mad[1]], rule="thumbnail", score=round(best_mad[0], 5))
        return None

    def _thumb_views(self, i: int) -> np.ndarray:
        if i not in self._thumbs:
            with Image.open(self.names[i][1]) as im:
                self._thumbs[i] = _views(_rgb(im), THUMB_SIZE, all_crops=True).reshape(81, -1)
        return self._thumbs[i]


def normalize_question(text: str) -> str:
    """Lower-case words only: how pseudo-questions are compared with a benchmark's questions."""
    return " ".join("".join(ch if ch.isalnum() else " " for ch in text.lower()).split())


def image_paths(paths: Iterable[str | Path]) -> list[str]:
    """Distinct image paths in first-seen order (a benchmark lists one image per question)."""
    return list(dict.fromkeys(str(p) for p in paths))
