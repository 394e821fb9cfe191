"""Tiny random-init VLMs of real Hugging Face architectures, built offline and saved like a user checkpoint.

Tests and the demo need real `LlavaForConditionalGeneration` / `Idefics3ForConditionalGeneration` checkpoints
that load through `AutoModelForImageTextToText` / `AutoProcessor`, without touching the Hub. Everything here is
built from config classes: a byte-level BPE tokenizer trained on a small corpus (so any text round-trips
exactly), a Jinja chat template with `{% generation %}` markers (so TRL's assistant-only loss works), and models
of well under 1M parameters.

`train_tiny_teacher` turns a tiny LLaVA into a (very dumb) teacher on solid-colour images: prompts containing
"Write" get `Question: What colour is the image? Answer: <colour>`, colour questions get the colour word.

    from mpa.testing.tiny import build_tiny_llava, make_color_images, train_tiny_teacher
    d = build_tiny_llava(Path("teacher")); train_tiny_teacher(d, make_color_images(Path("imgs"), 20))
"""

from __future__ import annotations

import random
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from mpa.backends.scripted import PALETTE

if TYPE_CHECKING:
    from transformers import LlamaConfig, PreTrainedModel, PreTrainedTokenizerFast, ProcessorMixin

PAD_TOKEN = "<pad>"
IMAGE_TOKEN = "<image>"
USER_TOKEN = "<|user|>"
ASSISTANT_TOKEN = "<|assistant|>"
SYSTEM_TOKEN = "<|system|>"
END_TOKEN = "<|end|>"
# Idefics3Processor looks these up by name; `<end_of_utterance>` it adds itself, we add it up front to keep ids fixed.
IDEFICS3_TOKENS = ("<fake_token_around_image>", "<global-img>", "<end_of_utterance>")
SPECIAL_TOKENS = (PAD_TOKEN, IMAGE_TOKEN, USER_TOKEN, ASSISTANT_TOKEN, SYSTEM_TOKEN, END_TOKEN, *IDEFICS3_TOKENS)

# Content is a string or a list of {"type": "image"} / {"type": "text", "text": ...} parts. Assistant turns are
# wrapped in {% generation %} so `return_assistant_tokens_mask=True` marks exactly the reply and its `<|end|>`.
CHAT_TEMPLATE = (
    "{%- macro render(content) -%}"
    "{%- if content is string -%}{{- content -}}"
    "{%- else -%}{%- for part in content -%}"
    "{%- if part['type'] == 'image' -%}{{- '<image>' -}}"
    "{%- elif part['type'] == 'text' -%}{{- part['text'] -}}{%- endif -%}"
    "{%- endfor -%}{%- endif -%}"
    "{%- endmacro -%}"
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'assistant' -%}"
    "{{- '<|assistant|>' -}}{%- generation -%}{{- render(message['content']) + '<|end|>' -}}{%- endgeneration -%}"
    "{%- else -%}"
    "{{- '<|' + message['role'] + '|>' + render(message['content']) + '<|end|>' -}}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|assistant|>' -}}{%- endif -%}"
)

COLOR_PALETTE = PALETTE  # the colours `make_color_images` paints; scripted models name them back
QA_SUFFIX = "\nAnswer the question using a single word or phrase."
WRITE_PROMPTS = (
    "Write a question about this image and its short answer.",
    "Write 2 question-answer pairs about this image as JSON.",
    "Write one question and its answer about the image.",
    "Look at the image. Write a short question-answer pair.",
    'Write 3 question-answer pairs as JSON: [{"question": "...", "answer": "..."}]',
)
COLOR_QUESTIONS = (
    "What colour is the image?",
    "What color is the image?",
    "What colour is this?",
    "Which color is shown?",
)


def _default_corpus() -> list[str]:
    colors = [*COLOR_PALETTE, "grey", "gray", "brown", "pink", "cyan"]
    shapes = ["circle", "square", "triangle", "rectangle", "star"]
    numbers = [str(i) for i in range(21)] + ["zero", "one", "two", "three", "four", "five", "ten"]
    lines = [*WRITE_PROMPTS, *COLOR_QUESTIONS, QA_SUFFIX.strip(), "Question:", "Answer:", "yes", "no"]
    for c in colors:
        lines += [
            f"Question: What colour is the image? Answer: {c}",
            f"What color is the {shapes[len(c) % len(shapes)]}? {c}",
            f'[{{"question": "What colour is the image?", "answer": "{c}"}}]',
        ]
    for s in shapes:
        lines += [f"What shape is in the image? {s}", f"Is there a {s} in the image? yes no", f"Is the {s} red?"]
    lines += [f"How many shapes are there? {n}" for n in numbers]
    lines += ["The image shows a picture of a thing.", "Describe this image in a sentence.", "{}[]:,\"'.?!-"]
    return lines


def build_tokenizer(corpus: Sequence[str], vocab_size: int = 400) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE on `corpus` (any text round-trips) with our special tokens and chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(list(corpus), trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token=PAD_TOKEN,
        eos_token=END_TOKEN,
        padding_side="left",
        clean_up_tokenization_spaces=False,
        model_max_length=2048,
        chat_template=CHAT_TEMPLATE,
    )


def _llama_config(tokenizer: PreTrainedTokenizerFast, hidden: int, layers: int, mlp_ratio: int = 2) -> LlamaConfig:
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=mlp_ratio * hidden,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=None,
        tie_word_embeddings=False,
    )


def save_checkpoint(
    model: PreTrainedModel, processor: ProcessorMixin, out_dir: Path, end_of_turn: Sequence[str]
) -> Path:
    """Greedy generation that ends at the `end_of_turn` tokens, then the model and its processor saved to `out_dir`
    (the tiny models here and every family in `mpa.testing.families`)."""
    from transformers import GenerationConfig

    tok = processor.tokenizer
    model.generation_config = GenerationConfig(
        eos_token_id=[tok.convert_tokens_to_ids(t) for t in end_of_turn],
        pad_token_id=tok.pad_token_id,
        bos_token_id=tok.bos_token_id,
        do_sample=False,
        max_new_tokens=64,
    )
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    processor.save_pretrained(out_dir)
    return out_dir


def build_tiny_llava(
    out_dir: Path,
    *,
    corpus: Sequence[str] | None = None,
    image_size: int = 32,
    patch_size: int = 8,
    vision_hidden: int = 32,
    text_hidden: int = 64,
    text_layers: int = 2,
    vision_layers: int = 2,
    mlp_ratio: int = 2,
    vocab_size: int = 400,
    seed: int = 0,
) -> Path:
    """Build a random-init LLaVA (SigLIP tower + Llama) with its processor and save it to `out_dir`."""
    import torch
    from transformers import LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor, SiglipVisionConfig
    from transformers.models.siglip.image_processing_pil_siglip import SiglipImageProcessorPil

    tokenizer = build_tokenizer(corpus if corpus is not None else _default_corpus(), vocab_size)
    vision = SiglipVisionConfig(
        hidden_size=vision_hidden,
        intermediate_size=mlp_ratio * vision_hidden,
        num_hidden_layers=vision_layers,
        num_attention_heads=2,
        image_size=image_size,
        patch_size=patch_size,
    )
    config = LlavaConfig(
        vision_config=vision,
        text_config=_llama_config(tokenizer, text_hidden, text_layers, mlp_ratio),
        image_token_index=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
        image_seq_length=(image_size // patch_size) ** 2,
        vision_feature_select_strategy="full",
        vision_feature_layer=-1,
    )
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(config)
    # The PIL backend: torchvision is not a dependency; AutoProcessor picks whichever backend is installed.
    image_processor = SiglipImageProcessorPil(size={"height": image_size, "width": image_size})
    processor = LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=patch_size,
        vision_feature_select_strategy="full",
        num_additional_image_tokens=0,
        chat_template=CHAT_TEMPLATE,
    )
    return save_checkpoint(model, processor, out_dir, [END_TOKEN])


def build_tiny_idefics3(
    out_dir: Path, *, corpus: Sequence[str] | None = None, image_size: int = 32, seed: int = 0
) -> Path:
    """Build a random-init Idefics3 (SmolVLM architecture) without image splitting and save it to `out_dir`."""
    import torch
    from transformers import Idefics3Config, Idefics3ForConditionalGeneration, Idefics3Processor, Idefics3VisionConfig
    from transformers.models.idefics3.image_processing_pil_idefics3 import Idefics3ImageProcessorPil

    patch_size, scale_factor = 8, 2
    tokenizer = build_tokenizer(corpus if corpus is not None else _default_corpus())
    vision = Idefics3VisionConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=image_size,
        patch_size=patch_size,
    )
    config = Idefics3Config(
        vision_config=vision,
        text_config=_llama_config(tokenizer, 64, 2),
        image_token_id=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
        scale_factor=scale_factor,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    model = Idefics3ForConditionalGeneration(config)
    image_processor = Idefics3ImageProcessorPil(
        do_image_splitting=False,
        size={"longest_edge": image_size},
        max_image_size={"longest_edge": image_size},
    )
    processor = Idefics3Processor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        image_seq_len=(image_size // patch_size) ** 2 // scale_factor**2,
        chat_template=CHAT_TEMPLATE,
    )
    return save_checkpoint(model, processor, out_dir, [END_TOKEN])


def make_color_images(out_dir: Path, n: int, *, size: int = 32, seed: int = 0) -> list[tuple[Path, str]]:
    """Write `n` near-solid colour PNGs (palette cycled, jittered) to `out_dir`; return (path, colour) pairs."""
    import numpy as np
    from PIL import Image

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    names = list(COLOR_PALETTE)
    result: list[tuple[Path, str]] = []
    for i in range(n):
        color = names[i % len(names)]
        base = np.array(COLOR_PALETTE[color]) + rng.integers(-15, 16, size=3)
        pixels = base + rng.integers(-8, 9, size=(size, size, 3))
        path = out_dir / f"img_{i:04d}_{color}.png"
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(path)
        result.append((path, color))
    return result


def _teacher_rows(images: Sequence[tuple[Path, str]], rng: random.Random) -> list[dict]:
    from PIL import Image

    rows = []
    for path, color in images:
        pil = Image.open(path).convert("RGB")
        pairs = [(p, f"Question: What colour is the image? Answer: {color}") for p in WRITE_PROMPTS]
        pairs += [(q + QA_SUFFIX, color) for q in COLOR_QUESTIONS]
        for prompt, reply in pairs:
            user = {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}
            rows.append({"images": [pil], "prompt": [user], "completion": [{"role": "assistant", "content": reply}]})
    rng.shuffle(rows)
    return rows


def train_tiny_teacher(model_dir: Path, images: Sequence[tuple[Path, str]], *, steps: int = 200, seed: int = 0) -> None:
    """Full fine-tune the tiny VLM in `model_dir` in place (TRL SFT, CPU) into a colour-naming teacher."""
    import datasets
    from transformers import AutoModelForImageTextToText, AutoProcessor, set_seed
    from trl import SFTConfig, SFTTrainer

    set_seed(seed)
    model = AutoModelForImageTextToText.from_pretrained(model_dir)
    processor = AutoProcessor.from_pretrained(model_dir)
    dataset = datasets.Dataset.from_list(_teacher_rows(images, random.Random(seed)))
    with tempfile.TemporaryDirectory() as tmp:
        args = SFTConfig(
            output_dir=tmp,
            max_steps=steps,
            per_device_train_batch_size=16,
            learning_rate=3e-3,
            lr_scheduler_type="cosine",
            warmup_steps=10,
            logging_strategy="no",  # the Trainer prints log dicts to stdout; the tests check the result instead
            save_strategy="no",
            report_to="none",
            use_cpu=True,
            bf16=False,
            fp16=False,
            activation_checkpointing=False,  # TRL defaults to on; the old name warns
            max_length=None,
            completion_only_loss=True,
            dataloader_num_workers=0,
            disable_tqdm=True,
            seed=seed,
        )
        trainer = SFTTrainer(model=model, args=args, train_dataset=dataset, processing_class=processor)
        trainer.train()
    model = trainer.model
    model.eval()
    model.config.use_cache = True  # TRL turns the KV cache off for training; a saved checkpoint should have it on
    model.save_pretrained(model_dir)
