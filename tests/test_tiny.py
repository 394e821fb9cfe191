"""Tiny offline VLMs: reload via Auto classes, batched == one-by-one greedy output, the trained teacher works."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from mpa.testing.tiny import END_TOKEN, QA_SUFFIX  # noqa: E402

QA_RE = re.compile(r"Question:\s*(.+?\?)\s*Answer:\s*(\S.*)")
PROMPTS = (
    "What colour?",
    "Write 2 question-answer pairs about this image as JSON, with a short answer for each one.",
    "Is there a red circle in the image? Answer the question using a single word or phrase.",
)


def _load(model_dir: Path) -> tuple[transformers.PreTrainedModel, transformers.ProcessorMixin]:
    model = transformers.AutoModelForImageTextToText.from_pretrained(model_dir).eval()
    return model, transformers.AutoProcessor.from_pretrained(model_dir)


def _conv(image_path: Path, prompt: str) -> list[dict]:
    from PIL import Image

    image = Image.open(image_path).convert("RGB")
    return [{"role": "user", "content": [{"type": "image", "image": image}, {"type": "text", "text": prompt}]}]


def _greedy(
    model: transformers.PreTrainedModel,
    processor: transformers.ProcessorMixin,
    convs: list[list[dict]],
    max_new_tokens: int = 16,
) -> list[str]:
    batch = processor.apply_chat_template(
        convs,
        add_generation_prompt=True,
        tokenize=True,
        return_dict=True,
        return_tensors="pt",
        processor_kwargs={"padding": True},
    )
    with torch.no_grad():
        out = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False)
    return processor.batch_decode(out[:, batch["input_ids"].shape[1] :], skip_special_tokens=True)


@pytest.mark.parametrize(
    ("fixture", "model_cls", "processor_cls"),
    [
        ("tiny_llava_dir", "LlavaForConditionalGeneration", "LlavaProcessor"),
        ("tiny_idefics3_dir", "Idefics3ForConditionalGeneration", "Idefics3Processor"),
        ("tiny_student_dir", "LlavaForConditionalGeneration", "LlavaProcessor"),
    ],
)
def test_reloads_via_auto_classes(request: pytest.FixtureRequest, fixture: str, model_cls: str, processor_cls: str):
    model_dir = request.getfixturevalue(fixture)
    model, processor = _load(model_dir)
    assert type(model).__name__ == model_cls
    assert type(processor).__name__ == processor_cls
    assert sum(p.numel() for p in model.parameters()) < 1_000_000
    tokenizer = processor.tokenizer
    end_id = tokenizer.convert_tokens_to_ids(END_TOKEN)
    assert tokenizer.padding_side == "left"
    assert tokenizer.eos_token == END_TOKEN
    assert model.generation_config.eos_token_id in (end_id, [end_id])
    assert model.generation_config.pad_token_id == tokenizer.pad_token_id
    assert model.generation_config.do_sample is False
    # The chat template travels with both the processor and the tokenizer.
    auto_tok = transformers.AutoTokenizer.from_pretrained(model_dir)
    msgs = [{"role": "user", "content": "hi"}]
    expected = "<|user|>hi<|end|><|assistant|>"
    assert auto_tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False) == expected
    assert processor.apply_chat_template(msgs, add_generation_prompt=True) == expected


def test_tokenizer_roundtrips_any_text(tiny_llava_dir: Path):
    tokenizer = transformers.AutoTokenizer.from_pretrained(tiny_llava_dir)
    text = 'Héllo wörld 🙂 {"question": "Qu\'est-ce?", "answer": "42"}\n\ttabs  and  spaces'
    assert tokenizer.decode(tokenizer(text)["input_ids"]) == text


def test_chat_template_string_and_parts_agree(tiny_llava_dir: Path):
    processor = transformers.AutoProcessor.from_pretrained(tiny_llava_dir)
    as_parts = [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What colour?"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "red"}]},
    ]
    as_text = [{"role": "user", "content": "<image>What colour?"}, {"role": "assistant", "content": "red"}]
    rendered = "<|user|><image>What colour?<|end|><|assistant|>red<|end|>"
    assert processor.apply_chat_template(as_parts) == rendered
    assert processor.apply_chat_template(as_text) == rendered


@pytest.mark.parametrize("fixture", ["tiny_llava_dir", "tiny_idefics3_dir"])
def test_batched_generation_equals_one_by_one(
    request: pytest.FixtureRequest, fixture: str, color_image_labels: list[tuple[Path, str]]
):
    model, processor = _load(request.getfixturevalue(fixture))
    convs = [_conv(color_image_labels[i][0], prompt) for i, prompt in enumerate(PROMPTS)]
    batched = _greedy(model, processor, convs)
    one_by_one = [_greedy(model, processor, [conv])[0] for conv in convs]
    assert batched == one_by_one
    assert len(set(batched)) > 1  # different images and prompts give different (random) text


def test_assistant_mask_covers_reply_only(tiny_llava_dir: Path, color_image_labels: list[tuple[Path, str]]):
    processor = transformers.AutoProcessor.from_pretrained(tiny_llava_dir)
    conv = [*_conv(color_image_labels[0][0], "What colour?"), {"role": "assistant", "content": "red"}]
    out = processor.apply_chat_template(
        conv, tokenize=True, return_dict=True, return_tensors="pt", return_assistant_tokens_mask=True
    )
    ids = out["input_ids"][0][out["assistant_masks"][0].bool()]
    assert processor.tokenizer.decode(ids) == "red" + END_TOKEN


def test_trl_collator_labels_completion_only(tiny_llava_dir: Path, color_image_labels: list[tuple[Path, str]]):
    from PIL import Image
    from trl.trainer.sft_trainer import DataCollatorForVisionLanguageModeling

    processor = transformers.AutoProcessor.from_pretrained(tiny_llava_dir)
    collator = DataCollatorForVisionLanguageModeling(processor=processor, completion_only_loss=True)
    rows = []
    for (path, color), prompt in zip(color_image_labels[:2], ["What colour?", "Write a question."], strict=True):
        user = {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}
        reply = {"role": "assistant", "content": color}
        rows.append({"images": [Image.open(path).convert("RGB")], "prompt": [user], "completion": [reply]})
    batch = collator(rows)
    for row_labels, (_, color) in zip(batch["labels"], color_image_labels[:2], strict=True):
        assert processor.tokenizer.decode(row_labels[row_labels != -100]) == color + END_TOKEN


def test_teacher_names_colours_and_writes_qa(tiny_teacher_dir: Path, color_image_labels: list[tuple[Path, str]]):
    model, processor = _load(tiny_teacher_dir)
    end_id = processor.tokenizer.convert_tokens_to_ids(END_TOKEN)
    assert model.generation_config.eos_token_id in (end_id, [end_id])  # survives the save after training
    colors = [color for _, color in color_image_labels]
    # Prompts worded unlike the training ones: the teacher should key on "Write" / the question suffix.
    asked = _greedy(
        model, processor, [_conv(p, "What is the colour of this picture?" + QA_SUFFIX) for p, _ in color_image_labels]
    )
    accuracy = sum(a.strip() == c for a, c in zip(asked, colors, strict=True)) / len(colors)
    assert accuracy >= 0.9, asked
    write = "Write 4 question-answer pairs about this image as JSON, one per line."
    written = _greedy(model, processor, [_conv(p, write) for p, _ in color_image_labels], max_new_tokens=24)
    parsed = [QA_RE.fullmatch(w.strip()) for w in written]
    assert sum(m is not None for m in parsed) / len(parsed) >= 0.9, written
    assert sum(m is not None and m.group(2) == c for m, c in zip(parsed, colors, strict=True)) / len(colors) >= 0.9
