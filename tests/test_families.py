"""The architecture matrix: every model family users run, as teacher and as student, through every stage.

Per family (tiny random checkpoints of the real classes, `mpa.testing.families`):
- contract: batched == one-by-one greedy outputs; the pixel budget (min and max) reaches the processors that take
  one; the training prompt is token for token the inference prompt and the labels are the answer + end of turn;
  one freezing rule for vision tower and projector; LoRA only (and all) of the language model's linear layers;
  the image reaches the training loss (blank images change it).
- pipeline: a parrot teacher and a random student of the family through annotate → identify → level (LoRA, then
  full) → evaluate → export, plus one mixed pair (Qwen2-VL teacher, SmolVLM student).
PaliGemma (no chat template) is refused with one line naming the fix.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("torchvision")  # the Qwen / SmolVLM / InternVL / LLaVA-OneVision processors need it

import torch
from PIL import Image

from mpa.backends import GenRequest
from mpa.backends.hf import HFBackend, load_processor
from mpa.backends.hf_collator import ChatCollator
from mpa.backends.hf_parts import freeze, lora_targets, part_of
from mpa.config import build_config, model_config
from mpa.pipeline import run_pipeline
from mpa.pixels import fit_pixel_budget
from mpa.prompts import render_answer_prompt
from mpa.rundir import iter_jsonl
from mpa.testing.families import FAMILIES
from tests.families import ANNOTATE_PROMPT, CHAT_FAMILIES, QUESTION, parrot_rows, teach_fixed_replies

pytestmark = pytest.mark.families

# Parameter-name prefixes per part, read off each family's `named_parameters()` (independent of `hf_parts`).
VISION = {"idefics3": "model.vision_model.", "smolvlm": "model.vision_model."}
PROJECTOR = {"idefics3": ("model.connector.",), "smolvlm": ("model.connector.",)}
for _f in ("qwen2_vl", "qwen2_5_vl", "qwen3_vl", "qwen3_5"):
    VISION[_f] = "model.visual."
    PROJECTOR[_f] = ("model.visual.merger.", "model.visual.deepstack_merger_list.")
for _f in ("llava", "internvl", "gemma3", "mistral3", "paligemma", "llava_onevision", "llava_next"):
    VISION[_f] = "model.vision_tower."
    PROJECTOR[_f] = ("model.multi_modal_projector.", "model.image_newline")
BUDGET_FAMILIES = {"qwen2_vl", "qwen2_5_vl", "qwen3_vl", "qwen3_5"}  # processors that resize to a pixel budget


@pytest.fixture(scope="session")
def family_dir(tmp_path_factory: pytest.TempPathFactory):
    """`family_dir(name, seed)` → a saved tiny checkpoint, built once per session."""
    built: dict[tuple[str, int], Path] = {}

    def get(name: str, seed: int = 0) -> Path:
        if (name, seed) not in built:
            built[name, seed] = FAMILIES[name](tmp_path_factory.mktemp(f"{name}_{seed}"), seed=seed)
        return built[name, seed]

    return get


@pytest.fixture(scope="session")
def images(color_image_labels: list[tuple[Path, str]]) -> list[Image.Image]:
    return [Image.open(path).convert("RGB") for path, _ in color_image_labels[:4]]


def _expected_part(family: str, name: str) -> str:
    if name.startswith(PROJECTOR[family]):
        return "projector"
    return "vision_tower" if name.startswith(VISION[family]) else "language_model"


def _requests(images: list[Image.Image]) -> list[GenRequest]:
    prompt = render_answer_prompt(QUESTION)
    return [GenRequest(key=f"q{i}", prompt=prompt, image=img, max_new_tokens=6) for i, img in enumerate(images)]


@pytest.mark.parametrize("family", CHAT_FAMILIES)
def test_family_contract(family: str, family_dir: Any, images: list[Image.Image]) -> None:
    model_dir = family_dir(family)
    backend = HFBackend(model_config(model=str(model_dir), batch_size=4, device="cpu"))
    requests = _requests(images)

    # Batching (left padding, length sorting) never changes greedy outputs.
    batched = [r.texts for r in backend.generate(requests)]
    backend.batch_size = 1
    assert [r.texts for r in backend.generate(requests)] == batched

    # Training renders the inference prompt token for token; the labels are exactly the reply and its end of turn.
    model, processor = backend.model, backend.processor
    eos = model.generation_config.eos_token_id
    collator = ChatCollator(processor, eos)
    rows = [{"images": [img], "prompt": r.prompt, "completion": "red"} for img, r in zip(images, requests, strict=True)]
    batch = collator(rows)
    for i in range(len(rows)):
        infer = backend.prompt_inputs([requests[i]])
        prompt_ids = infer["input_ids"][0][infer["attention_mask"][0] == 1].tolist()
        ids, labels = batch["input_ids"][i], batch["labels"][i]
        start = int((labels != -100).nonzero()[0])
        assert ids[:start].tolist() == prompt_ids, f"{family}: the training prompt differs from the inference prompt"
        answer = labels[labels != -100].tolist()
        assert processor.tokenizer.decode(answer) == collator.before + "red" + collator.after
        assert answer[-1] in (eos if isinstance(eos, list) else [eos]), f"{family}: no end-of-turn token trained"

    # The image reaches the loss: blank images change it (a collator that dropped image tokens would not).
    model.eval()
    with torch.no_grad():
        loss = model(**batch).loss
        blanks = [Image.new("RGB", img.size, "white") for img in images]
        blank = collator([{**row, "images": [b]} for row, b in zip(rows, blanks, strict=True)])
        assert not torch.allclose(model(**blank).loss, loss), f"{family}: the image does not reach the training loss"

    # One freezing rule: parameters land in the part their family's names say; freezing touches only that part.
    for name, _ in model.named_parameters():
        assert part_of(name) == _expected_part(family, name), name
    trainable = freeze(model, vision_tower=True, projector=False)
    assert trainable["vision_tower"] == 0 and trainable["projector"] > 0 and trainable["language_model"] > 0
    for name, param in model.named_parameters():
        assert param.requires_grad == (part_of(name) != "vision_tower"), name

    # LoRA: on every linear layer of the language model, and nowhere else.
    from peft import LoraConfig, get_peft_model

    linear_lm = {
        n.rsplit(".", 1)[-1]
        for n, m in model.named_modules()
        if isinstance(m, torch.nn.Linear) and part_of(n) == "language_model" and not n.endswith("lm_head")
    }
    peft_model = get_peft_model(model, LoraConfig(r=2, target_modules=lora_targets(model)))
    wrapped = [
        n for n, m in peft_model.named_modules() if hasattr(m, "lora_A") and isinstance(m.lora_A, torch.nn.Module)
    ]
    assert wrapped and all(part_of(n.replace("base_model.model.", "")) == "language_model" for n in wrapped)
    assert {n.rsplit(".", 1)[-1] for n in wrapped} == linear_lm
    if family == "qwen3_5":
        assert {"in_proj_qkv", "in_proj_z", "out_proj"} <= linear_lm  # hybrid linear attention is covered
    backend.close()


@pytest.mark.parametrize("family", CHAT_FAMILIES)
def test_pixel_budget_reaches_the_processor(family: str, family_dir: Any) -> None:
    """Every backend fits images into [min_pixels, max_pixels]; processors that resize to a budget themselves
    (Qwen-VL family) are given the same budget, so their rounding never leaves it."""
    lo, hi = 32 * 32, 64 * 64
    processor = load_processor(model_config(model=str(family_dir(family)), min_pixels=lo, max_pixels=hi))
    for size in ((300, 150), (20, 20)):
        image = fit_pixel_budget(Image.new("RGB", size, "red"), hi, lo)
        assert lo <= image.width * image.height <= hi * 1.01
        if family in BUDGET_FAMILIES:
            ip = processor.image_processor
            grid = ip(images=[image], return_tensors="pt")["image_grid_thw"][0]
            pixels = int(grid[1] * grid[2]) * ip.patch_size**2
            assert lo <= pixels <= hi, (family, size, grid.tolist())
    if family in BUDGET_FAMILIES:
        assert (processor.image_processor.size["shortest_edge"], processor.image_processor.size["longest_edge"]) == (
            lo,
            hi,
        )


def test_paligemma_is_refused_in_one_line(family_dir: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from mpa.cli import main

    (tmp_path / "imgs").mkdir()
    Image.new("RGB", (32, 32), "red").save(tmp_path / "imgs" / "a.png")
    model = str(family_dir("paligemma"))
    capsys.readouterr()  # (building the checkpoint prints progress bars)
    argv = ["validate", "--run-dir", str(tmp_path / "run"), "--images", str(tmp_path / "imgs"), "--teacher", model,
            "--student", model]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no chat template" in err[0] and "chat_template.jinja" in err[0], err


# ------------------------------------------------------------------------------------------------ whole pipeline


@pytest.fixture(scope="session")
def parrot_dir(family_dir: Any, tmp_path_factory: pytest.TempPathFactory, images: list[Image.Image]):
    """`parrot_dir(family)`: a copy of the family's checkpoint taught to answer every teacher prompt of a run."""
    taught: dict[str, Path] = {}

    def get(family: str) -> Path:
        if family not in taught:
            out = tmp_path_factory.mktemp(f"parrot_{family}")
            shutil.copytree(family_dir(family), out, dirs_exist_ok=True)
            teach_fixed_replies(out, parrot_rows(images))
            taught[family] = out
        return taught[family]

    return get


def _run_tree(tmp_path: Path, teacher: Path, student: Path, color_images: Path) -> dict[str, Any]:
    (tmp_path / "prompt.txt").write_text(ANNOTATE_PROMPT)
    pool = tmp_path / "pool"
    pool.mkdir()
    for path in sorted(color_images.glob("*.png"))[:4]:
        shutil.copy(path, pool / path.name)
    bench = tmp_path / "bench.jsonl"
    bench.write_text("".join(json.dumps({"image": str(p), "question": QUESTION, "answers": ["red"]}) + "\n"
                             for p in sorted(pool.glob("*.png"))))  # fmt: skip
    return {
        "run_dir": str(tmp_path / "run"),
        "images": {"path": str(pool)},
        "teacher": {"model": str(teacher), "batch_size": 4, "device": "cpu"},
        "student": {"model": str(student), "batch_size": 4, "device": "cpu"},
        "annotate": {"prompt_file": str(tmp_path / "prompt.txt"), "max_new_tokens": 24},
        "identify": {"max_new_tokens": 6},
        "level": {"max_steps": 2, "batch_size": 2, "val_fraction": 0.0, "learning_rate": 1e-3},
        "evaluate": {"benchmarks": [{"name": "jsonl", "data_dir": str(bench)}], "max_new_tokens": 6},
        "contamination": {"check": False},  # the benchmark is the pool itself: the guard would drop it all
    }


def _check_run(cfg_tree: dict[str, Any], manifests: dict[str, Any]) -> None:
    run = Path(cfg_tree["run_dir"])
    counts = manifests["annotate"]["counts"]
    assert counts["qa_pairs"] == 4, counts  # the parrot teacher answered the real annotate prompt on every image
    assert manifests["identify"]["counts"]["selected"] >= 1
    assert manifests["level"]["counts"]["train"] >= 1 and (run / "level" / manifests["level"]["output"]).exists()
    summary = json.loads((run / "evaluate" / "summary.json").read_text())["jsonl"]
    assert summary["teacher"] == 1.0 and summary["student_before"] is not None and summary["student_after"] is not None
    assert len(list(iter_jsonl(run / "evaluate/student_after/jsonl/predictions.jsonl"))) == 4


@pytest.mark.parametrize("family", CHAT_FAMILIES)
def test_family_runs_every_stage_as_teacher_and_student(
    family: str, family_dir: Any, parrot_dir: Any, color_images: Path, tmp_path: Path
) -> None:
    tree = _run_tree(tmp_path, parrot_dir(family), family_dir(family, seed=1), color_images)
    manifests = run_pipeline(build_config(tree), ["annotate", "identify", "level", "evaluate"])
    _check_run(tree, manifests)
    assert manifests["level"]["student_after"]["adapter"].endswith("adapter")
    # Full fine-tuning of the same family, then the leveled (full) student is evaluated again.
    tree["level"]["method"] = "full"
    full = run_pipeline(build_config(tree), ["level", "evaluate"], force=True)
    assert full["level"]["student_after"]["adapter"] is None and full["level"]["student_after"]["model"].endswith(
        "model"
    )
    _check_run(tree, {**manifests, **full})


def test_mixed_pair_qwen2_vl_teacher_smolvlm_student(
    family_dir: Any, parrot_dir: Any, color_images: Path, tmp_path: Path
) -> None:
    tree = _run_tree(tmp_path, parrot_dir("qwen2_vl"), family_dir("smolvlm", seed=1), color_images)
    tree["teacher"].update(min_pixels=28 * 28, max_pixels=56 * 56)
    _check_run(tree, run_pipeline(build_config(tree), ["annotate", "identify", "level", "evaluate"]))
