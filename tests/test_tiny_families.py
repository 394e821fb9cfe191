"""Tiny checkpoints of every family in `mpa.testing.families`: build offline, reload, prompt, mask, budget, generate."""

from __future__ import annotations

import pytest

pytest.importorskip("torchvision")  # the Qwen / SmolVLM / InternVL / LLaVA-OneVision processors need it

import torch
from PIL import Image
from transformers import AutoModelForImageTextToText, AutoProcessor
from transformers.tokenization_utils_tokenizers import TokenizersBackend

from mpa.testing.families import FAMILIES

pytestmark = pytest.mark.models

CHAT = sorted(set(FAMILIES) - {"paligemma"})
QWEN_SYSTEM = "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
QWEN_USER = "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>What colour is it?<|im_end|>\n"
# The generation prompt each template renders for one image + "What colour is it?" (the published formats).
PROMPTS = {
    "llava": "<|user|><image>What colour is it?<|end|><|assistant|>",
    "idefics3": "<|user|><image>What colour is it?<|end|><|assistant|>",
    "smolvlm": "<|im_start|>User:<image>What colour is it?<end_of_utterance>\nAssistant:",
    "qwen2_vl": QWEN_SYSTEM + QWEN_USER + "<|im_start|>assistant\n",
    "qwen2_5_vl": QWEN_SYSTEM + QWEN_USER + "<|im_start|>assistant\n",
    "qwen3_vl": QWEN_USER + "<|im_start|>assistant\n",
    "qwen3_5": QWEN_USER + "<|im_start|>assistant\n<think>\n",
    "internvl": "<|im_start|>user\n<IMG_CONTEXT>\nWhat colour is it?<|im_end|>\n<|im_start|>assistant\n",
    "gemma3": "<bos><start_of_turn>user\n<start_of_image>What colour is it?<end_of_turn>\n<start_of_turn>model\n",
    "llava_onevision": "<|im_start|>user <image>\nWhat colour is it?<|im_end|><|im_start|>assistant\n",
    "llava_next": "[INST] <image>\nWhat colour is it? [/INST]",
    "mistral3": "<s>[SYSTEM_PROMPT]You are a helpful assistant.[/SYSTEM_PROMPT][INST][IMG]What colour is it?[/INST]",
}
# What `return_assistant_tokens_mask` marks when the assistant answers "red": the reply and its end of turn.
REPLIES = {
    "llava": "red<|end|>",
    "idefics3": "red<|end|>",
    "smolvlm": " red<end_of_utterance>",
    "qwen2_vl": "red<|im_end|>",
    "qwen2_5_vl": "red<|im_end|>",
    "qwen3_vl": "red<|im_end|>",
    "qwen3_5": "<think>\n\n</think>\n\nred<|im_end|>",
    "internvl": "red<|im_end|>",
    "gemma3": "red<end_of_turn>",
    "llava_onevision": "\nred<|im_end|>",
    "llava_next": " red</s>",
    "mistral3": "red</s>",
}
QWEN_END = {"<|im_end|>", "<|endoftext|>"}
END_OF_TURN = {
    "llava": {"<|end|>"},
    "idefics3": {"<|end|>"},
    "smolvlm": {"<end_of_utterance>"},
    "qwen2_vl": QWEN_END,
    "qwen2_5_vl": QWEN_END,
    "qwen3_vl": QWEN_END,
    "qwen3_5": QWEN_END,
    "internvl": {"<|im_end|>"},
    "gemma3": {"<end_of_turn>", "<eos>"},
    "llava_onevision": {"<|im_end|>"},
    "llava_next": {"</s>"},
    "mistral3": {"</s>"},
    "paligemma": {"<eos>"},
}
QWEN_SMALL = {"size": {"shortest_edge": 28 * 28, "longest_edge": 28 * 28}}
QWEN3_SMALL = {"size": {"shortest_edge": 32 * 32, "longest_edge": 32 * 32}}
# Processor kwargs that shrink (or grow) the pixel budget of a 64x48 image; see the module docstring.
BUDGETS = {
    "qwen2_vl": QWEN_SMALL,
    "qwen2_5_vl": QWEN_SMALL,
    "qwen3_vl": QWEN3_SMALL,
    "qwen3_5": QWEN3_SMALL,
    "smolvlm": {"do_image_splitting": True, "size": {"longest_edge": 64}},
    "idefics3": {"do_image_splitting": True, "size": {"longest_edge": 64}},
    "mistral3": {"size": {"longest_edge": 32}},
    "internvl": {"max_patches": 1},
    "gemma3": {"do_pan_and_scan": True, "pan_and_scan_min_crop_size": 16, "pan_and_scan_min_ratio_to_activate": 1.2},
}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """family -> checkpoint folder, each built once per test module."""
    dirs = {}

    def get(family: str):
        if family not in dirs:
            dirs[family] = FAMILIES[family](tmp_path_factory.mktemp(family))
        return dirs[family]

    return get


@pytest.fixture(scope="module")
def image():
    return Image.new("RGB", (64, 48), (200, 30, 30))


def user(text: str) -> dict:
    return {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": text}]}


def chat_inputs(processor, conversations, images, **processor_kwargs):
    return processor.apply_chat_template(
        conversations,
        add_generation_prompt=True,
        tokenize=True,
        return_dict=True,
        return_tensors="pt",
        processor_kwargs={"padding": True, "images": images, **processor_kwargs},
    )


@pytest.mark.parametrize("family", list(FAMILIES))
def test_builds_tiny_and_reloads_through_auto_classes(built, family):
    model_dir = built(family)
    model = AutoModelForImageTextToText.from_pretrained(model_dir)
    processor = AutoProcessor.from_pretrained(model_dir)

    assert type(model).__name__ == model.config.architectures[0]
    assert sum(p.numel() for p in model.parameters()) < 1_000_000
    eos = model.generation_config.eos_token_id
    assert set(processor.tokenizer.convert_ids_to_tokens(eos)) == END_OF_TURN[family]
    assert processor.tokenizer.padding_side == "left"
    assert (processor.chat_template is None) == (family == "paligemma")


@pytest.mark.parametrize("family", list(FAMILIES))
def test_reloaded_tokenizer_encodes_like_the_saved_file(built, family):
    tokenizer = AutoProcessor.from_pretrained(built(family)).tokenizer
    saved = TokenizersBackend.from_pretrained(built(family))
    text = 'What colour is it?\n\n 12 {"answer": "red"}  Ünïcode'
    ids = tokenizer(text, add_special_tokens=False).input_ids

    assert ids == saved(text, add_special_tokens=False).input_ids
    assert tokenizer.decode(ids) == text
    for token in tokenizer.all_special_tokens:
        assert len(tokenizer(token, add_special_tokens=False).input_ids) == 1, token


@pytest.mark.parametrize("family", CHAT)
def test_generation_prompt_is_the_published_format(built, family):
    processor = AutoProcessor.from_pretrained(built(family))
    prompt = processor.apply_chat_template([user("What colour is it?")], add_generation_prompt=True, tokenize=False)
    assert prompt == PROMPTS[family]


@pytest.mark.parametrize("family", CHAT)
def test_assistant_mask_is_the_reply_and_end_of_turn(built, family, image):
    processor = AutoProcessor.from_pretrained(built(family))
    conversation = [user("What colour is it?"), {"role": "assistant", "content": [{"type": "text", "text": "red"}]}]
    out = processor.apply_chat_template(
        conversation,
        tokenize=True,
        return_dict=True,
        return_assistant_tokens_mask=True,
        return_tensors="pt",
        processor_kwargs={"images": [image]},
    )
    masked = out["input_ids"][0][out["assistant_masks"][0].bool()]
    assert processor.tokenizer.decode(masked) == REPLIES[family]


@pytest.mark.parametrize("family", CHAT)
def test_batched_chat_generation_is_left_padded_and_matches_one_by_one(built, family, image):
    model = AutoModelForImageTextToText.from_pretrained(built(family))
    processor = AutoProcessor.from_pretrained(built(family))
    conversations = [[user("What colour is it?")], [user("What colour is it? Answer with one word, please.")]]

    batch = chat_inputs(processor, conversations, [[image], [image]])
    assert batch["attention_mask"][:, -1].all() and not batch["attention_mask"][0, 0]
    new = model.generate(**batch, max_new_tokens=5, do_sample=False)[:, batch["input_ids"].shape[1] :]

    for i, conversation in enumerate(conversations):
        single = chat_inputs(processor, [conversation], [[image]])
        alone = model.generate(**single, max_new_tokens=5, do_sample=False)[0, single["input_ids"].shape[1] :]
        assert torch.equal(alone, new[i, : len(alone)])


@pytest.mark.parametrize("family", sorted(BUDGETS))
def test_pixel_budget_changes_the_image_tokens(built, family, image):
    model = AutoModelForImageTextToText.from_pretrained(built(family))
    processor = AutoProcessor.from_pretrained(built(family))
    picture = Image.new("RGB", (128, 32), (200, 30, 30)) if family == "gemma3" else image  # pan and scan: wide

    default = chat_inputs(processor, [[user("What colour is it?")]], [[picture]])
    budget = chat_inputs(processor, [[user("What colour is it?")]], [[picture]], **BUDGETS[family])

    assert default["input_ids"].shape[1] != budget["input_ids"].shape[1]
    if "image_grid_thw" in default:
        assert default["image_grid_thw"].tolist() == [[1, 4, 4]]
        assert budget["image_grid_thw"].tolist() == [[1, 2, 2]]
    model.generate(**budget, max_new_tokens=2, do_sample=False)


@pytest.mark.parametrize("family", ["qwen2_vl", "qwen2_5_vl"])
def test_qwen_min_max_pixels_keywords_still_work(built, family, image):
    processor = AutoProcessor.from_pretrained(built(family))
    inputs = chat_inputs(processor, [[user("What colour is it?")]], [[image]], min_pixels=28 * 28, max_pixels=28 * 28)
    assert inputs["image_grid_thw"].tolist() == [[1, 2, 2]]


def test_paligemma_has_no_chat_template_and_generates_from_plain_prompts(built, image):
    model = AutoModelForImageTextToText.from_pretrained(built("paligemma"))
    processor = AutoProcessor.from_pretrained(built("paligemma"))
    prompts = ["<image>What colour is it?", "<image>What colour is it? Answer with one word."]

    inputs = processor(text=prompts, images=[[image], [image]], padding=True, return_tensors="pt")

    assert not inputs["attention_mask"][0, 0] and inputs["attention_mask"][:, -1].all()
    out = model.generate(**inputs, max_new_tokens=5, do_sample=False)
    assert out.shape[0] == 2
