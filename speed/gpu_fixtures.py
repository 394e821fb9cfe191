"""Fixtures of `speed/gpu_check.py`: Qwen2-VL-shaped random-weight checkpoints built offline, chart images,
and the scripted teacher that writes parseable QA pairs.

Throughput and memory do not depend on the weights' values, so a model shaped like Qwen2-VL-2B/7B-Instruct (the
public `config.json` values below), randomly initialised in bf16 directly on the GPU and saved with
`save_pretrained`, costs what the real one costs. What is ours and not Qwen's:
- the tokenizer: a byte-level BPE trained on the benchmark's own prompts (so their token counts are realistic),
  its vocabulary padded with never-merged filler tokens to Qwen2's 151,643 regular tokens, then Qwen2's 14 special
  tokens at their real ids (151643..151656): `len(tokenizer)` = 151,657 as for the real one, and the model's
  embedding rows (151,936 / 152,064) are the real configs' sizes;
- the generation config has no EOS token, so random weights always write exactly `max_new_tokens` tokens (the real
  one stops at <|im_end|>); everything else (repetition penalty 1.05, pad = <|endoftext|>) is Qwen's.
The processor is the real `Qwen2VLProcessor` (`Qwen2VLImageProcessor` + `Qwen2VLVideoProcessor`) with Qwen's ChatML
chat template.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

N_REGULAR = 151643  # Qwen2's regular (BPE) tokens; the special tokens follow at these ids
QWEN_SPECIAL = (
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>", "<|box_start|>",
    "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>", "<|vision_end|>", "<|vision_pad|>",
    "<|image_pad|>", "<|video_pad|>",
)  # fmt: skip
# Qwen2-VL-*-Instruct's chat_template (ChatML with a default system turn and vision placeholders).
QWEN_CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}"
    "{% if add_vision_id %}Picture {{ image_count.value }}: {% endif %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}{% set video_count.value = video_count.value + 1 %}"
    "{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# Language-model shapes from the public config.json of Qwen/Qwen2-VL-{2B,7B}-Instruct; "tiny-*" for CPU tests.
TEXT_SHAPES: dict[str, dict[str, Any]] = {
    "2b": {"hidden_size": 1536, "intermediate_size": 8960, "num_hidden_layers": 28, "num_attention_heads": 12,
           "num_key_value_heads": 2, "vocab_size": 151936, "tie_word_embeddings": True,
           "mrope_section": [16, 24, 24]},
    "7b": {"hidden_size": 3584, "intermediate_size": 18944, "num_hidden_layers": 28, "num_attention_heads": 28,
           "num_key_value_heads": 4, "vocab_size": 152064, "tie_word_embeddings": False,
           "mrope_section": [16, 24, 24]},
    "tiny-2b": {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
                "num_key_value_heads": 2, "vocab_size": 151936, "tie_word_embeddings": True,
                "mrope_section": [2, 3, 3]},
    "tiny-7b": {"hidden_size": 96, "intermediate_size": 192, "num_hidden_layers": 2, "num_attention_heads": 4,
                "num_key_value_heads": 2, "vocab_size": 152064, "tie_word_embeddings": False,
                "mrope_section": [4, 4, 4]},
}  # fmt: skip
VISION_SHAPES: dict[str, dict[str, Any]] = {
    "full": {"depth": 32, "embed_dim": 1280, "num_heads": 16, "mlp_ratio": 4},
    "tiny": {"depth": 2, "embed_dim": 32, "num_heads": 2, "mlp_ratio": 2},
}


def qwen2_vl_config(shape: str) -> dict[str, Any]:
    """A config.json like Qwen2-VL-*-Instruct's for `shape` ('2b', '7b', 'tiny-2b', 'tiny-7b')."""
    text = dict(TEXT_SHAPES[shape])
    mrope = text.pop("mrope_section")
    vision = VISION_SHAPES["tiny" if shape.startswith("tiny") else "full"]
    return {
        "architectures": ["Qwen2VLForConditionalGeneration"], "model_type": "qwen2_vl", **text,
        "attention_dropout": 0.0, "bos_token_id": 151643, "eos_token_id": 151645, "hidden_act": "silu",
        "initializer_range": 0.02, "max_position_embeddings": 32768, "max_window_layers": text["num_hidden_layers"],
        "rms_norm_eps": 1e-6, "rope_theta": 1000000.0, "sliding_window": 32768, "use_sliding_window": False,
        "use_cache": True, "rope_scaling": {"type": "mrope", "mrope_section": mrope},
        "vision_start_token_id": 151652, "vision_end_token_id": 151653, "vision_token_id": 151654,
        "image_token_id": 151655, "video_token_id": 151656,
        "vision_config": {**vision, "in_chans": 3, "hidden_size": text["hidden_size"], "patch_size": 14,
                          "spatial_merge_size": 2, "spatial_patch_size": 14, "temporal_patch_size": 2},
    }  # fmt: skip


def build_tokenizer(corpus: Sequence[str], bpe_vocab: int = 4000):  # -> PreTrainedTokenizerFast
    """Byte-level BPE on `corpus`, padded with filler tokens to Qwen2's size, plus Qwen2's special tokens."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    small = Tokenizer(models.BPE())
    small.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(vocab_size=bpe_vocab, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)  # fmt: skip
    small.train_from_iterator(list(corpus), trainer=trainer)
    state = json.loads(small.to_str())["model"]
    vocab: dict[str, int] = dict(state["vocab"])
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in state["merges"]]
    for i in range(len(vocab), N_REGULAR):  # never produced by a merge; decodes to a word, as a real token does
        vocab[f"Ġw{i}"] = i
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in QWEN_SPECIAL])
    assert tok.token_to_id("<|image_pad|>") == 151655 and tok.get_vocab_size() == N_REGULAR + len(QWEN_SPECIAL)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>", padding_side="left",
        clean_up_tokenization_spaces=False, model_max_length=32768, chat_template=QWEN_CHAT_TEMPLATE,
        extra_special_tokens={},
    )  # fmt: skip


def build_processor(tokenizer: Any):  # -> Qwen2VLProcessor
    from transformers import Qwen2VLProcessor
    from transformers.models.qwen2_vl.image_processing_qwen2_vl import Qwen2VLImageProcessor
    from transformers.models.qwen2_vl.video_processing_qwen2_vl import Qwen2VLVideoProcessor

    return Qwen2VLProcessor(image_processor=Qwen2VLImageProcessor(), tokenizer=tokenizer,
                            video_processor=Qwen2VLVideoProcessor(), chat_template=QWEN_CHAT_TEMPLATE)  # fmt: skip


def build_checkpoint(
    shape: str, out_dir: Path, processor: Any, device: str, dtype: Any, seed: int = 0
) -> dict[str, int]:
    """Random-init a Qwen2-VL of `shape` on `device` in `dtype`, save it with the processor; returns its sizes."""
    import torch
    from transformers import AutoConfig, AutoModelForImageTextToText, GenerationConfig

    config = AutoConfig.for_model(**qwen2_vl_config(shape))
    torch.manual_seed(seed)
    with torch.device(device):
        model = AutoModelForImageTextToText.from_config(config, dtype=dtype)
    model.generation_config = GenerationConfig(  # Qwen2-VL-Instruct's, minus EOS: fixed-length outputs
        bos_token_id=151643, pad_token_id=151643, eos_token_id=None, do_sample=False, repetition_penalty=1.05
    )
    n_params = sum(p.numel() for p in model.parameters())
    n_vision = sum(p.numel() for n, p in model.named_parameters() if "visual" in n)
    text, elem = TEXT_SHAPES[shape], torch.finfo(dtype).bits // 8
    embed = 0 if text["tie_word_embeddings"] else text["vocab_size"] * text["hidden_size"]
    head_dim = text["hidden_size"] // text["num_attention_heads"]
    sizes = {  # what one decode step reads: the language model's weights (a lookup reads 1 embedding row)
        "params": n_params, "vision_params": n_vision, "decode_weight_bytes": (n_params - n_vision - embed) * elem,
        "kv_bytes_per_token": 2 * text["num_hidden_layers"] * text["num_key_value_heads"] * head_dim * elem,
    }  # fmt: skip
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    processor.save_pretrained(out_dir)
    del model
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
    return {**sizes, "bytes": sum(f.stat().st_size for f in out_dir.glob("*.safetensors"))}


def make_charts(folder: Path, n: int, size: int, seed: int = 0) -> list[dict[str, Any]]:
    """`n` bar-chart JPEGs (noisy background, 3-7 bars with value labels) of `size`x`size`; returns one ChartQA-style
    question per chart ({"image", "question", "answers", "question_type"}, image relative to `folder`'s parent)."""
    import numpy as np
    from PIL import Image, ImageDraw

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        noise = rng.integers(200, 256, size=(size // 4, size // 4, 3), dtype=np.uint8)
        img = Image.fromarray(noise).resize((size, size), Image.Resampling.BICUBIC)
        draw = ImageDraw.Draw(img)
        values = rng.integers(1, 100, size=int(rng.integers(3, 8))).tolist()
        width = (size - 40) // len(values)
        for j, v in enumerate(values):
            x0, top = 20 + j * width, size - 20 - int(v / 100 * (size - 60))
            color = tuple(int(c) for c in rng.integers(0, 200, size=3))
            draw.rectangle([x0 + 4, top, x0 + width - 4, size - 20], fill=color)
            draw.text((x0 + 6, top - 12), str(v), fill=(0, 0, 0))
        name = f"chart_{i:05d}.jpg"
        img.save(folder / name, quality=90)
        rows.append({"image": f"{folder.name}/{name}", "question": "What is the value of the tallest bar?",
                     "answers": [str(max(values))], "question_type": "max"})  # fmt: skip
    return rows


class ScriptedTeacher:
    """A stand-in teacher for one annotate run: for each image, `k` QA pairs as the JSON list the `chartqa` prompt
    asks for (answers derived from the image id). Random weights write text no parser turns into QA pairs; with
    this backend the real annotate stage writes its real records (images.jsonl, annotations.jsonl, qa.jsonl, the
    manifest), so identify, level and evaluate run their real code on them."""

    name = "scripted"

    def __init__(self, k: int) -> None:
        self.k = k

    def generate(self, requests: list[Any]) -> list[Any]:
        import hashlib

        from mpa.backends import GenResult

        out = []
        for r in requests:
            h = int(hashlib.sha256(r.key.encode()).hexdigest(), 16)
            pairs = [{"question": f"What is the value of bar {j + 1}?", "answer": str((h >> (8 * j)) % 100)}
                     for j in range(self.k)]  # fmt: skip
            out.append(GenResult(key=r.key, texts=[json.dumps(pairs)]))
        return out

    def close(self) -> None:
        pass
