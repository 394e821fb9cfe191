"""The contamination guard (mpa.contamination, and its place before annotate): copies of benchmark images —
exact, resized, re-encoded, cropped a few pixels — are flagged against the right benchmark image, distinct images
are not, and the stage leaves flagged pool images out (or keeps them with --allow-contamination)."""

from __future__ import annotations

import io
import json
import random
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mpa.config import build_config
from mpa.contamination import Screen
from mpa.counts import AnnotateCounts
from mpa.pipeline import run_pipeline
from mpa.rundir import iter_jsonl


def changed_copies(image: Image.Image) -> dict[str, Image.Image]:
    w, h = image.size
    buf = io.BytesIO()
    image.save(buf, "JPEG", quality=70)
    return {
        "jpeg q70": Image.open(io.BytesIO(buf.getvalue())),
        "resized": image.resize((int(w * 1.6), int(h * 1.6))),
        "cropped 3 px": image.crop((3, 3, w - 3, h - 3)),
        "cropped one side": image.crop((0, 4, w - 4, h)),
        "cropped + resized": image.crop((2, 2, w - 2, h - 2)).resize((int(w * 1.25), int(h * 1.25))),
    }


def easyvqa_test_images(n: int, seed: int = 0) -> list[str]:
    easy_vqa = pytest.importorskip("easy_vqa")
    paths = sorted(easy_vqa.get_test_image_paths().values())
    return random.Random(seed).sample(paths, n)


def photos(folder: Path, n: int, seed: int = 0) -> list[str]:
    """Photo-like images: smooth colour regions plus fine texture everywhere (no plain background)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(n):
        base = Image.fromarray(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)).resize((256, 192), Image.BICUBIC)
        texture = rng.normal(0, 20, (192, 256, 3))
        path = folder / f"photo{i}.png"
        Image.fromarray(np.clip(np.asarray(base, dtype=float) + texture, 0, 255).astype(np.uint8)).save(path)
        out.append(str(path))
    return out


def test_changed_copies_of_shape_images_are_flagged_against_the_right_image() -> None:
    refs = easyvqa_test_images(120)
    screen = Screen()
    screen.add("easyvqa_test", refs)
    for ref in refs[:25]:
        for how, copy in changed_copies(Image.open(ref).convert("RGB")).items():
            match = screen.match(copy)
            assert match is not None and match.reference == ref, f"{how} copy of {ref}: {match}"
            assert match.benchmark == "easyvqa_test"  # (by mask, or by thumbnail when the shape touches the border)


def test_distinct_shape_images_are_not_flagged() -> None:
    """easy-VQA test images against 200 others: one shape on a plain background, where a global hash collides."""
    images = easyvqa_test_images(300, seed=1)
    screen = Screen()
    screen.add("easyvqa_test", images[:200])
    flagged = [p for p in images[200:] if screen.match(Image.open(p)) is not None]
    assert flagged == []


def test_photo_copies_are_flagged_and_distinct_photos_are_not(tmp_path: Path) -> None:
    refs = photos(tmp_path / "refs", 30)
    screen = Screen()
    screen.add("photos", refs)
    for ref in refs[:10]:
        for how, copy in changed_copies(Image.open(ref).convert("RGB")).items():
            match = screen.match(copy)
            assert match is not None and match.reference == ref and match.rule == "thumbnail", how
    others = photos(tmp_path / "others", 30, seed=1)
    assert [p for p in others if screen.match(Image.open(p)) is not None] == []


def test_a_contaminated_pool_is_screened_before_annotate(tmp_path: Path) -> None:
    from tests.test_stages_scripted import benchmark_images, scripted_tree

    pool = tmp_path / "pool"
    pool.mkdir()
    for i, colour in enumerate(("red", "green", "blue", "yellow")):
        from mpa.backends.scripted import PALETTE

        Image.new("RGB", (24 + i, 20), PALETTE[colour]).save(pool / f"{i:02d}_{colour}.png")
    bench = benchmark_images(tmp_path)  # the scripted benchmark's images
    copies = {"exact": Image.open(bench[0]).convert("RGB"), **changed_copies(Image.open(bench[3]).convert("RGB"))}
    for how, image in copies.items():
        image.save(pool / f"copy {how}.png")
    tree = scripted_tree(tmp_path, pool)
    run_pipeline(build_config(tree), ["annotate"])
    run_dir = Path(tree["run_dir"])
    counts = AnnotateCounts.read(json.loads((run_dir / "annotate/manifest.json").read_text()))
    assert counts.images_flagged == len(copies) == counts.skip_reasons["contaminated"]
    assert counts.images_ok == 4
    flagged = {Path(r["source"]).name: r for r in iter_jsonl(run_dir / "contamination/flagged.jsonl")}
    assert set(flagged) == {f"copy {how}.png" for how in copies}
    assert flagged["copy exact.png"]["reference"] == str(bench[0])
    assert all(r["reference"] == str(bench[3]) for name, r in flagged.items() if name != "copy exact.png")
    skipped = [r for r in iter_jsonl(run_dir / "annotate/images.jsonl") if r["status"] == "skipped"]
    assert {Path(r["source"]).name for r in skipped} == set(flagged)
    assert all(r["reason"].startswith("contaminated: near-duplicate of jsonl image ") for r in skipped)
    assert counts.questions_in_benchmarks == counts.qa_pairs  # the scripted teacher asks the benchmark's question

    # --allow-contamination keeps them (still listed), as a changed input set: a new fingerprint
    kept = build_config({**tree, "run_dir": str(tmp_path / "kept"), "contamination": {"allow": True}})
    run_pipeline(kept, ["annotate"])
    counts = AnnotateCounts.read(json.loads((tmp_path / "kept/annotate/manifest.json").read_text()))
    assert counts.images_flagged == len(copies) and counts.images_ok == 4 + len(copies)
