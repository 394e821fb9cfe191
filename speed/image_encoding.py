"""How long the OpenAI backend spends turning one image into a data URL, PNG vs JPEG, and how big it gets.

Two synthetic images at the paper's Qwen2-VL pixel budget (512 * 28 * 28 pixels): a "photo" (smooth gradients plus
sensor-like noise: every pixel a different colour, the case `image_format: auto` sends as JPEG) and a "chart"
(flat colours and sharp edges, sent as PNG). Prints ms per image and base64 size; writes JSON.

    python speed/image_encoding.py [--repeats 20] [--out runs/bench/image_encoding.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from mpa.backends.openai_api import image_data_url, is_photo
from mpa.pixels import fit_pixel_budget

BUDGET = 512 * 28 * 28


def photo(width: int = 4000, height: int = 3000) -> Image.Image:
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    base = np.stack([x / width * 255, y / height * 255, (x + y) / (width + height) * 255], axis=-1)
    noisy = base + rng.normal(0, 12, base.shape)
    return fit_pixel_budget(Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8)), BUDGET)


def chart(width: int = 1600, height: int = 1200) -> Image.Image:
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    for i, value in enumerate((0.3, 0.8, 0.55, 0.9, 0.4)):
        draw.rectangle((100 + i * 280, height - 100 - value * 900, 300 + i * 280, height - 100), fill=(40, 90, 200))
        draw.text((110 + i * 280, height - 80), f"label {i}", fill="black")
    return fit_pixel_budget(image, BUDGET)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--out", type=Path, default=Path("runs/bench/image_encoding.json"))
    args = parser.parse_args()
    rows = []
    for name, image in (("photo", photo()), ("chart", chart())):
        for fmt in ("png", "jpeg", "auto"):
            times, url = [], ""
            for _ in range(args.repeats):
                t0 = time.perf_counter()
                url = image_data_url(image, fmt, 95)
                times.append(time.perf_counter() - t0)
            sent = url.split(";", 1)[0].removeprefix("data:image/")
            rows.append({"image": name, "size": f"{image.width}x{image.height}", "photo": is_photo(image),
                         "format": fmt, "sent_as": sent, "ms": 1000 * statistics.median(times),
                         "kib": len(url) / 1024})  # fmt: skip
    print(f"{'image':<6} {'size':<9} {'format':<6} {'sent as':<7} {'ms/image':>9} {'KiB':>8}")
    for r in rows:
        print(f"{r['image']:<6} {r['size']:<9} {r['format']:<6} {r['sent_as']:<7} {r['ms']:>9.1f} {r['kib']:>8.0f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
