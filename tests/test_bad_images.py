"""A generated corpus of broken and odd images: each is decoded or skipped with a reason, never a crash, and
every input is accounted for when the corpus goes through `annotate` on a real tiny teacher."""

from __future__ import annotations

import io
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import zlib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from PIL import Image

from mpa.config import build_config
from mpa.images import MAX_DECODED_PIXELS, MIN_SIDE, ImageSource, LoadedImage, decode_image, load_image
from mpa.pipeline import run_pipeline
from mpa.rundir import iter_jsonl
from tests.test_pipeline import make_tree


def _png(img: Image.Image, **kw: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG", **kw)
    return buf.getvalue()


def _encode(img: Image.Image, fmt: str, **kw: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def _bomb_png(width: int, height: int) -> bytes:
    """A valid PNG header claiming a huge size, with almost no data (the decompression-bomb shape)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def _exif_rotated_jpeg() -> bytes:
    img = Image.new("RGB", (80, 40), (200, 30, 30))
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90° clockwise to display
    return _encode(img, "JPEG", exif=exif.tobytes())


def _animated_gif() -> bytes:
    frames = [Image.new("RGB", (24, 24), c) for c in [(0, 0, 255), (255, 0, 0), (0, 255, 0)]]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:], duration=50, loop=0)
    return buf.getvalue()


def _transparent_p() -> bytes:
    img = Image.new("P", (32, 32), 0)
    img.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    img.paste(1, (0, 0, 16, 32))
    return _png(img, transparency=0)  # left half blue, right half transparent


def _sixteen_bit() -> bytes:
    img = Image.new("I;16", (32, 32))
    img.paste(65535, (0, 0, 16, 32))
    return _png(img)


GOOD = Image.new("RGB", (48, 40), (10, 160, 90))
NOISE = Image.effect_noise((64, 64), 40).convert("RGB")

# name -> (bytes, expected status, expected reason prefix or decoded check)
CORPUS: dict[str, tuple[bytes, str, str]] = {
    "ok.png": (_png(GOOD), "ok", ""),
    "spaces and ünïcode 图像.png": (_png(Image.new("RGB", (40, 40), (1, 2, 3))), "ok", ""),
    "zero.png": (b"", "skipped", "empty file"),
    "truncated.png": (_png(NOISE)[:300], "skipped", "not a decodable image"),
    "truncated.jpg": (_encode(NOISE, "JPEG")[:400], "skipped", "not a decodable image"),
    "garbage.png": (os.urandom(2048), "skipped", "not a decodable image"),
    "text.jpg": (b"this is a caption, not an image\n", "skipped", "not a decodable image"),
    "png_named.jpg": (_png(Image.new("RGB", (36, 36), (9, 9, 9))), "ok", ""),
    "no_extension": (_png(Image.new("RGB", (36, 30), (90, 9, 9))), "ok", ""),
    "cmyk.jpg": (_encode(Image.new("CMYK", (32, 32), (0, 255, 255, 0)), "JPEG"), "ok", ""),
    "p_transparent.png": (_transparent_p(), "ok", ""),
    "la.png": (_png(Image.new("LA", (32, 32), (128, 100))), "ok", ""),
    "sixteen_bit.png": (_sixteen_bit(), "ok", ""),
    "one_bit.png": (_png(Image.new("1", (40, 40), 1)), "ok", ""),
    "float.tif": (_encode(Image.new("F", (32, 32), 0.5), "TIFF"), "ok", ""),
    "exif_rotated.jpg": (_exif_rotated_jpeg(), "ok", ""),
    "animated.gif": (_animated_gif(), "ok", ""),
    "webp.webp": (_encode(Image.new("RGB", (40, 40), (5, 50, 200)), "WEBP", lossless=True), "ok", ""),
    "bmp.bmp": (_encode(Image.new("RGB", (40, 40), (50, 5, 200)), "BMP"), "ok", ""),
    "bomb.png": (_bomb_png(30_000, 30_000), "skipped", "too large"),
    "bomb_under_2x.png": (_bomb_png(20_000, 20_000), "skipped", "too large"),  # Pillow only warns here
    "huge.png": (_png(Image.new("RGB", (5000, 4000), (250, 250, 0))), "ok", ""),
    "one_pixel.png": (_png(Image.new("RGB", (1, 1), (255, 0, 255))), "ok", ""),
    "sliver.png": (_png(Image.new("RGB", (1, 500), (0, 0, 0))), "skipped", "unusable image: extreme aspect ratio"),
    "ok_copy.png": (_png(GOOD), "duplicate", "same content as"),
}


def _decoded(name: str) -> Image.Image:
    img = decode_image(CORPUS[name][0])
    assert img.mode == "RGB"
    return img


def test_odd_modes_and_orientations_decode_to_what_a_viewer_shows() -> None:
    assert _decoded("exif_rotated.jpg").size == (40, 80)  # EXIF rotation applied
    assert _decoded("animated.gif").getpixel((5, 5))[2] > 200  # first (blue) frame
    p = _decoded("p_transparent.png")
    assert p.getpixel((5, 5)) == (0, 0, 255) and p.getpixel((25, 5)) == (255, 255, 255)  # alpha on white
    assert _decoded("sixteen_bit.png").getpixel((5, 5)) == (255, 255, 255)  # 16-bit white stays white
    assert _decoded("sixteen_bit.png").getpixel((25, 5)) == (0, 0, 0)
    assert _decoded("float.tif").getpixel((5, 5))[0] in (127, 128)
    cmyk = _decoded("cmyk.jpg").getpixel((5, 5))
    assert cmyk[0] > 200 and cmyk[1] < 60 and cmyk[2] < 60  # C=0 M=Y=255: red
    assert _decoded("one_bit.png").getpixel((3, 3)) == (255, 255, 255)
    assert _decoded("la.png").getpixel((3, 3))[0] > 128  # grey over white


def test_sizes_are_brought_into_range() -> None:
    huge = _decoded("huge.png")
    assert huge.width * huge.height <= MAX_DECODED_PIXELS and abs(huge.width / huge.height - 1.25) < 0.01
    tiny = _decoded("one_pixel.png")
    assert tiny.size == (MIN_SIDE, MIN_SIDE) and tiny.getpixel((0, 0)) == (255, 0, 255)


def test_unreadable_file_is_recorded_not_raised(tmp_path: Path) -> None:
    missing = load_image(ImageSource("gone.png", tmp_path / "gone.png"))
    assert missing.image is None and missing.error.startswith("unreadable: FileNotFoundError")
    folder = tmp_path / "dir.png"
    folder.mkdir()
    as_dir = load_image(ImageSource(str(folder), folder))
    assert as_dir.image is None and as_dir.error.startswith("unreadable: IsADirectoryError")


def test_permission_denied_is_recorded() -> None:
    """chmod 000 does not stop root, so as root the check runs in a child process as user `nobody`."""
    with tempfile.TemporaryDirectory(prefix="mpa_perm_") as tmp:
        Path(tmp).chmod(0o755)
        secret = Path(tmp) / "secret.png"
        secret.write_bytes(CORPUS["ok.png"][0])
        secret.chmod(0)
        code = (
            "from pathlib import Path; from mpa.images import ImageSource, load_image; "
            f"print(load_image(ImageSource('s', Path({str(secret)!r}))).error)"
        )
        cmd = [sys.executable, "-c", code]
        if os.geteuid() == 0:
            if not shutil.which("setpriv"):
                pytest.skip("running as root without setpriv: cannot drop privileges to test permissions")
            cmd = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *cmd]
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
        out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=60, cwd=tmp)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().startswith("unreadable: PermissionError")


# derandomize: the same 150 examples on every run (CI stays reproducible); the example below was found by a
# random run (a flipped BMP header byte that claims 503 Mpx) and is kept.
@settings(max_examples=150, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@example(fmt="BMP", cuts=[(21, 1)], keep=54)
@given(
    fmt=st.sampled_from(["PNG", "JPEG", "GIF", "WEBP", "BMP", "TIFF"]),
    cuts=st.lists(st.tuples(st.integers(0, 4000), st.integers(0, 255)), max_size=6),
    keep=st.integers(0, 5000),
)
def test_corrupted_bytes_never_raise(fmt: str, cuts: list[tuple[int, int]], keep: int) -> None:
    """Any byte flips and any truncation of a real encoded image: decoded to RGB or skipped with a reason."""
    data = bytearray(_encode(Image.effect_noise((40, 30), 50).convert("RGB"), fmt))
    for pos, value in cuts:
        if data:
            data[pos % len(data)] = value
    loaded = _load_bytes(bytes(data[:keep] if keep < len(data) else data))
    if loaded.image is None:
        reasons = {"empty file", "not a decodable image", "unusable image", "too large"}
        assert loaded.error and loaded.error.split(":")[0] in reasons
    else:
        assert loaded.image.mode == "RGB" and min(loaded.image.size) >= MIN_SIDE


def _load_bytes(data: bytes) -> LoadedImage:
    with tempfile.NamedTemporaryFile(suffix=".img") as handle:
        handle.write(data)
        handle.flush()
        return load_image(ImageSource(handle.name, Path(handle.name)))


def test_corpus_through_annotate_accounts_for_every_image(
    tmp_path: Path, tiny_teacher_dir: Path, tiny_student_dir: Path
) -> None:
    folder = tmp_path / "odd images"
    folder.mkdir()
    for name, (data, _, _) in CORPUS.items():
        (folder / name).write_bytes(data)
    (folder / "broken link.png").symlink_to(folder / "does_not_exist.png")
    (folder / "caption.txt").write_text("not an input: ignored by extension")
    (folder / ".hidden.png").write_bytes(CORPUS["ok.png"][0])
    tree = make_tree(tmp_path / "run", tiny_teacher_dir, tiny_student_dir, folder)
    manifest = run_pipeline(build_config(tree), ["annotate"])["annotate"]
    counts = manifest["counts"]
    recs = {Path(r["source"]).name: r for r in iter_jsonl(tmp_path / "run/annotate/images.jsonl")}
    assert set(recs) == {*CORPUS, "broken link.png"}  # every listed input has exactly one record
    assert len(list(iter_jsonl(tmp_path / "run/annotate/images.jsonl"))) == len(recs)
    for name, (_, status, reason) in CORPUS.items():
        assert recs[name]["status"] == status, (name, recs[name])
        assert str(recs[name].get("reason") or "").startswith(reason), (name, recs[name])
    assert recs["broken link.png"]["status"] == "skipped"
    assert recs["broken link.png"]["reason"].startswith("unreadable: FileNotFoundError")
    n_ok = sum(s == "ok" for _, s, _ in CORPUS.values())
    assert counts["images_ok"] == n_ok and counts["images_duplicate"] == 1
    assert counts["images_skipped"] == len(recs) - n_ok - 1
    assert counts["generations"] == n_ok  # every usable image annotated once, none failed
    assert counts["generation_status"].get("failed", 0) == 0
    assert counts["skip_reasons"] == {"empty file": 1, "not a decodable image": 4, "too large": 2,
                                      "unusable image": 1, "unreadable": 1}  # fmt: skip
    io = manifest["io"]  # the same accounting in the shape every stage shares
    assert io["in"]["images"] == len(recs) and io["out"]["images_annotated"] == n_ok
    images_skipped = {k: v for k, v in io["skipped"].items() if k.startswith("image ")}
    assert sum(images_skipped.values()) == len(recs) - n_ok and io["failed"] == {}
