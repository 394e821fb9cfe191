"""Tiny random-init checkpoints of many real Hugging Face VLM families, built offline, for tests.

`mpa.testing.tiny` builds one LLaVA and one Idefics3 with mpa's own chat template. This module adds the families users
actually run, each as its real transformers model class and real processor class, with special tokens where the
processor looks for them and a chat template modelled on the published checkpoint's (`mpa.testing.templates`), so code
that handles "any VLM" meets real prompt formats, image-token expansion and end-of-turn tokens. Every model has
well under 1M parameters (1-2 layers, hidden 32-64, a byte-level BPE vocabulary of ~400 trained on
`mpa.testing.tiny`'s corpus) and builds and saves in well under a second once transformers is imported.

    from mpa.testing.families import FAMILIES
    model_dir = FAMILIES["qwen2_vl"](Path("tiny-qwen2-vl"))  # then AutoModelForImageTextToText / AutoProcessor

`generation_config.eos_token_id` is the family's end-of-turn token(s). PaliGemma ships no chat template and gets none
(call its processor with text and images). LLaVA and Idefics3 come from `mpa.testing.tiny` (our `<|user|>` template).

How each family's processor takes a pixel budget (keyword arguments of the processor call, or of
`apply_chat_template(..., processor_kwargs={...})`):
- qwen2_vl, qwen2_5_vl, qwen3_vl, qwen3_5: `size={"shortest_edge": MIN_PIXELS, "longest_edge": MAX_PIXELS}` (or the
  deprecated `min_pixels=` / `max_pixels=`; the image processors have no such attributes in transformers 5). The
  image is resized to multiples of patch x merge (28 px for Qwen2/2.5 with patch 14, 32 px for Qwen3 / 3.5 with
  patch 16) within the budget; `image_grid_thw` shows the result. Saved default: 28x28 to 64x64 pixels.
- smolvlm, idefics3: `do_image_splitting=True` with `size={"longest_edge": N}` cuts the image into tiles of
  `max_image_size` (32 px) plus a global image; without splitting every image is one 32 px tile.
- mistral3: `size={"longest_edge": N}`; the image keeps its aspect ratio, in multiples of 16 px (patch 8 x merge 2).
- internvl: `max_patches=N` (and `min_patches`): the image is tiled into up to N 32 px crops plus a 32 px thumbnail
  (saved default N = 4; the processor crops by default, as published); `crop_to_patches=False` gives one tile.
- gemma3: fixed 32 px; `do_pan_and_scan=True` (with `pan_and_scan_*` limits) adds crops of wide/tall images.
- llava_onevision, llava_next: anyres tiling over `image_grid_pinpoints` saved with the checkpoint (here up to
  64x64); the model unpads with the same pinpoints, so there is no per-call budget.
- llava, paligemma: fixed size (32 px), no budget.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from mpa.testing import templates
from mpa.testing.templates import build_tokenizer
from mpa.testing.tiny import build_tiny_idefics3, build_tiny_llava, save_checkpoint

IMAGE_SIZE = 32  # fixed-size families; Qwen families allow 28-64 px (see the module docstring)
PINPOINTS = [[IMAGE_SIZE, 2 * IMAGE_SIZE], [2 * IMAGE_SIZE, IMAGE_SIZE], [2 * IMAGE_SIZE, 2 * IMAGE_SIZE]]
QWEN_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>")
QWEN_END = ["<|im_end|>", "<|endoftext|>"]


def _text(tok, **overrides) -> dict:
    """Keyword arguments of a 2-layer, hidden-64 decoder config over `tok`'s vocabulary."""
    return {
        **{"vocab_size": len(tok), "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2},
        **{"num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16, "max_position_embeddings": 1024},
        **{"pad_token_id": tok.pad_token_id, "bos_token_id": tok.bos_token_id, "eos_token_id": tok.eos_token_id},
        "tie_word_embeddings": False,
        **overrides,
    }


def _vision(**overrides) -> dict:
    """Keyword arguments of a 2-layer, hidden-32 ViT (SigLIP / CLIP / SmolVLM style) on 32 px images, 8 px patches."""
    return {
        **{"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2},
        **{"image_size": IMAGE_SIZE, "patch_size": 8},
        **overrides,
    }


def _save(model_cls, config, processor, out_dir: Path, end_of_turn: Sequence[str], seed: int) -> Path:
    """Instantiate `model_cls(config)` with `seed`, set greedy generation ending at `end_of_turn`, save both."""
    import torch

    torch.manual_seed(seed)
    model = model_cls(config)
    with torch.no_grad():  # random init leaves some matrices at zero (Gemma 3's mm_input_projection_weight), which
        for param in model.parameters():  # would cut the image off the language model; no trained model has that
            if param.dim() >= 2 and not param.any():
                param.normal_(0.0, 0.02)
    return save_checkpoint(model, processor, out_dir, end_of_turn)


def _qwen(template: str, config_cls, vision: dict, processor_cls, video_cls, patch_size: int, *, think=False, **text):
    """(config, processor) of a Qwen family: ChatML tokens, `<|image_pad|>`, patch x 2 merge, 28-64 px budget."""
    import transformers as hf

    media = {"image_token": "<|image_pad|>", "video_token": "<|video_pad|>"}
    plain = ("<think>", "</think>") if think else ()
    tok = build_tokenizer(
        template, QWEN_TOKENS, eos="<|im_end|>", pad="<|endoftext|>", named=media, plain=plain, qwen=True
    )
    ids = tok.convert_tokens_to_ids
    config = config_cls(
        text_config=_text(tok, **text),
        vision_config=vision,
        image_token_id=ids("<|image_pad|>"),
        video_token_id=ids("<|video_pad|>"),
        vision_start_token_id=ids("<|vision_start|>"),
        vision_end_token_id=ids("<|vision_end|>"),
    )
    budget = {"shortest_edge": 28 * 28, "longest_edge": 64 * 64}
    media = {"patch_size": patch_size, "merge_size": 2, "temporal_patch_size": 2, "size": budget}
    image_processor = hf.Qwen2VLImageProcessor(**media)
    processor = processor_cls(image_processor, tok, video_cls(**media), chat_template=template)
    return config, processor


def build_qwen2_vl(out_dir: Path, *, seed: int = 0) -> Path:
    """Qwen2-VL: ViT (patch 14, 2x2 merger) + Qwen2 decoder with multimodal RoPE."""
    import transformers as hf

    rope = {"rope_type": "default", "rope_theta": 1e6, "mrope_section": [2, 3, 3]}  # sums to head_dim / 2
    vision = {"depth": 2, "embed_dim": 32, "hidden_size": 64, "mlp_ratio": 2, "num_heads": 2, "patch_size": 14}
    config, processor = _qwen(
        templates.QWEN2_VL,
        hf.Qwen2VLConfig,
        vision,
        hf.Qwen2VLProcessor,
        hf.Qwen2VLVideoProcessor,
        14,
        rope_parameters=rope,
    )
    return _save(hf.Qwen2VLForConditionalGeneration, config, processor, out_dir, QWEN_END, seed)


def build_qwen2_5_vl(out_dir: Path, *, seed: int = 0) -> Path:
    """Qwen2.5-VL: windowed-attention ViT (patch 14) + Qwen2 decoder with multimodal RoPE."""
    import transformers as hf

    rope = {"rope_type": "default", "rope_theta": 1e6, "mrope_section": [2, 3, 3]}
    vision = {
        **{"depth": 2, "hidden_size": 32, "intermediate_size": 64, "num_heads": 2, "out_hidden_size": 64},
        **{"patch_size": 14, "window_size": 112, "fullatt_block_indexes": [1]},
    }
    config, processor = _qwen(
        templates.QWEN2_VL,
        hf.Qwen2_5_VLConfig,
        vision,
        hf.Qwen2_5_VLProcessor,
        hf.Qwen2VLVideoProcessor,
        14,
        rope_parameters=rope,
    )
    return _save(hf.Qwen2_5_VLForConditionalGeneration, config, processor, out_dir, QWEN_END, seed)


def _qwen3_vision(**overrides) -> dict:
    return {
        **{"depth": 2, "hidden_size": 32, "intermediate_size": 64, "num_heads": 2, "out_hidden_size": 64},
        **{"patch_size": 16, "num_position_embeddings": 16},
        **overrides,
    }


def build_qwen3_vl(out_dir: Path, *, seed: int = 0) -> Path:
    """Qwen3-VL: ViT (patch 16) with DeepStack features + Qwen3 decoder with interleaved multimodal RoPE."""
    import transformers as hf

    rope = {"rope_type": "default", "rope_theta": 5e6, "mrope_section": [2, 3, 3], "mrope_interleaved": True}
    vision = _qwen3_vision(deepstack_visual_indexes=[0])
    config, processor = _qwen(
        templates.QWEN3_VL,
        hf.Qwen3VLConfig,
        vision,
        hf.Qwen3VLProcessor,
        hf.Qwen3VLVideoProcessor,
        16,
        rope_parameters=rope,
    )
    return _save(hf.Qwen3VLForConditionalGeneration, config, processor, out_dir, QWEN_END, seed)


def build_qwen3_5(out_dir: Path, *, seed: int = 0) -> Path:
    """Qwen3.5: ViT (patch 16) + hybrid decoder (a Gated DeltaNet linear-attention layer, then a gated full one)."""
    import transformers as hf

    # Partial rotary: head_dim 32 x 0.25 = 8 rotary dims, so mrope_section sums to 4 (published: 256 x 0.25 -> 32).
    rope = {"rope_type": "default", "rope_theta": 1e7, "partial_rotary_factor": 0.25, "mrope_section": [2, 1, 1]}
    linear = {"linear_num_key_heads": 2, "linear_num_value_heads": 4, "linear_key_head_dim": 8}
    linear |= {"linear_value_head_dim": 8, "linear_conv_kernel_dim": 4}
    config, processor = _qwen(
        templates.QWEN3_5,
        hf.Qwen3_5Config,
        _qwen3_vision(),
        hf.Qwen3VLProcessor,  # what AutoProcessor maps qwen3_5 to
        hf.Qwen3VLVideoProcessor,
        16,
        think=True,
        head_dim=32,
        rope_parameters=rope,
        layer_types=["linear_attention", "full_attention"],
        **linear,
    )
    return _save(hf.Qwen3_5ForConditionalGeneration, config, processor, out_dir, QWEN_END, seed)


def build_internvl(out_dir: Path, *, seed: int = 0) -> Path:
    """InternVL (HF-native, InternVL3 style): InternViT + pixel-shuffle MLP projector + Qwen2 decoder."""
    import transformers as hf

    named = {"start_image_token": "<img>", "end_image_token": "</img>", "context_image_token": "<IMG_CONTEXT>"}
    named["video_token"] = "<video>"
    tok = build_tokenizer(
        templates.INTERNVL, QWEN_TOKENS, eos="<|im_end|>", pad="<|endoftext|>", named=named, qwen=True
    )
    image_seq_length = (IMAGE_SIZE // 8) ** 2 // 4  # pixel shuffle with downsample_ratio 0.5
    config = hf.InternVLConfig(
        vision_config=_vision(image_size=[IMAGE_SIZE] * 2, patch_size=[8, 8]),
        text_config={**_text(tok), "model_type": "qwen2"},
        image_token_id=tok.convert_tokens_to_ids("<IMG_CONTEXT>"),
        image_seq_length=image_seq_length,
        downsample_ratio=0.5,
    )
    size = {"height": IMAGE_SIZE, "width": IMAGE_SIZE}
    processor = hf.InternVLProcessor(
        image_processor=hf.GotOcr2ImageProcessor(size=size, max_patches=4),
        tokenizer=tok,
        video_processor=hf.InternVLVideoProcessor(size=size),
        image_seq_length=image_seq_length,
        chat_template=templates.INTERNVL,
    )
    return _save(hf.InternVLForConditionalGeneration, config, processor, out_dir, ["<|im_end|>"], seed)


def build_gemma3(out_dir: Path, *, seed: int = 0) -> Path:
    """Gemma 3: SigLIP + average-pooled projector (2x2 -> 4 image tokens) + Gemma 3 decoder."""
    import transformers as hf

    named = {"boi_token": "<start_of_image>", "eoi_token": "<end_of_image>", "image_token": "<image_soft_token>"}
    special = ("<start_of_turn>", "<end_of_turn>")
    tok = build_tokenizer(templates.GEMMA3, special, eos="<eos>", pad="<pad>", bos="<bos>", named=named)
    ids = tok.convert_tokens_to_ids
    config = hf.Gemma3Config(
        text_config=_text(tok, query_pre_attn_scalar=16, sliding_window=64),
        vision_config=_vision(),
        mm_tokens_per_image=4,
        boi_token_index=ids("<start_of_image>"),
        eoi_token_index=ids("<end_of_image>"),
        image_token_index=ids("<image_soft_token>"),
    )
    image_processor = hf.Gemma3ImageProcessor(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}, do_pan_and_scan=False)
    processor = hf.Gemma3Processor(image_processor, tok, chat_template=templates.GEMMA3, image_seq_length=4)
    return _save(hf.Gemma3ForConditionalGeneration, config, processor, out_dir, ["<eos>", "<end_of_turn>"], seed)


def build_llava_onevision(out_dir: Path, *, seed: int = 0) -> Path:
    """LLaVA-OneVision: SigLIP + anyres tiling + MLP projector + Qwen2 decoder."""
    import transformers as hf

    named = {"image_token": "<image>", "video_token": "<video>"}
    template = templates.LLAVA_ONEVISION
    tok = build_tokenizer(template, QWEN_TOKENS, eos="<|im_end|>", pad="<|endoftext|>", named=named, qwen=True)
    pinpoints = [[IMAGE_SIZE, IMAGE_SIZE], *PINPOINTS]
    config = hf.LlavaOnevisionConfig(
        vision_config={**_vision(), "model_type": "siglip_vision_model"},
        text_config={**_text(tok), "model_type": "qwen2"},
        image_token_index=tok.convert_tokens_to_ids("<image>"),
        video_token_index=tok.convert_tokens_to_ids("<video>"),
        vision_feature_select_strategy="full",
        vision_feature_layer=-1,
        image_grid_pinpoints=pinpoints,
    )
    size = {"height": IMAGE_SIZE, "width": IMAGE_SIZE}
    processor = hf.LlavaOnevisionProcessor(
        image_processor=hf.LlavaOnevisionImageProcessor(size=size, image_grid_pinpoints=pinpoints),
        tokenizer=tok,
        video_processor=hf.LlavaOnevisionVideoProcessor(size=size),
        num_image_tokens=(IMAGE_SIZE // 8) ** 2,
        vision_feature_select_strategy="full",
        chat_template=template,
    )
    return _save(hf.LlavaOnevisionForConditionalGeneration, config, processor, out_dir, ["<|im_end|>"], seed)


def build_llava_next(out_dir: Path, *, seed: int = 0) -> Path:
    """LLaVA-NeXT (v1.6 Mistral): CLIP (penultimate layer, CLS dropped) + anyres tiling + Mistral decoder."""
    import transformers as hf

    named = {"image_token": "<image>"}
    tok = build_tokenizer(
        templates.LLAVA_NEXT, ["<unk>"], eos="</s>", pad="<pad>", bos="<s>", named=named, add_bos=True
    )
    config = hf.LlavaNextConfig(
        vision_config={**_vision(), "model_type": "clip_vision_model"},
        text_config={**_text(tok), "model_type": "mistral"},
        image_token_index=tok.convert_tokens_to_ids("<image>"),
        image_grid_pinpoints=PINPOINTS,
        image_seq_length=(IMAGE_SIZE // 8) ** 2,
    )
    image_processor = hf.LlavaNextImageProcessor(
        size={"shortest_edge": IMAGE_SIZE},
        crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
        image_grid_pinpoints=PINPOINTS,
    )
    processor = hf.LlavaNextProcessor(
        image_processor=image_processor,
        tokenizer=tok,
        patch_size=8,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,  # CLIP's CLS
        chat_template=templates.LLAVA_NEXT,
    )
    return _save(hf.LlavaNextForConditionalGeneration, config, processor, out_dir, ["</s>"], seed)


def build_mistral3(out_dir: Path, *, seed: int = 0) -> Path:
    """Mistral 3 (Small 3.1): Pixtral ViT (2D RoPE, any aspect ratio) + 2x2 patch merger + Mistral decoder."""
    import transformers as hf

    special = ("<unk>", "[INST]", "[/INST]", "[SYSTEM_PROMPT]", "[/SYSTEM_PROMPT]", "[IMG]", "[IMG_BREAK]", "[IMG_END]")
    tok = build_tokenizer(templates.MISTRAL3, special, eos="</s>", pad="<pad>", bos="<s>")
    config = hf.Mistral3Config(
        vision_config={**_vision(image_size=2 * IMAGE_SIZE), "head_dim": 16, "model_type": "pixtral"},
        text_config={**_text(tok), "model_type": "mistral"},
        image_token_index=tok.convert_tokens_to_ids("[IMG]"),
        spatial_merge_size=2,
        vision_feature_layer=-1,
        tie_word_embeddings=False,
    )
    image_processor = hf.PixtralImageProcessor(size={"longest_edge": 2 * IMAGE_SIZE}, patch_size=8)
    processor = hf.PixtralProcessor(
        image_processor, tok, patch_size=8, spatial_merge_size=2, chat_template=templates.MISTRAL3
    )
    return _save(hf.Mistral3ForConditionalGeneration, config, processor, out_dir, ["</s>"], seed)


def build_smolvlm(out_dir: Path, *, seed: int = 0) -> Path:
    """SmolVLM (2): SigLIP-style ViT + pixel shuffle + Llama decoder, with SmolVLM's processor and template."""
    import transformers as hf

    special = ("<fake_token_around_image>", "<global-img>", "<image>", "<video>")
    tok = build_tokenizer(templates.SMOLVLM, special, eos="<end_of_utterance>", pad="<|im_end|>", bos="<|im_start|>")
    config = hf.SmolVLMConfig(
        vision_config=_vision(),
        text_config={**_text(tok), "model_type": "llama"},
        image_token_id=tok.convert_tokens_to_ids("<image>"),
        scale_factor=2,
        pad_token_id=tok.pad_token_id,
    )
    media = {"size": {"longest_edge": IMAGE_SIZE}, "max_image_size": {"longest_edge": IMAGE_SIZE}}
    processor = hf.SmolVLMProcessor(
        image_processor=hf.SmolVLMImageProcessor(do_image_splitting=False, **media),
        tokenizer=tok,
        video_processor=hf.SmolVLMVideoProcessor(**media),
        image_seq_len=(IMAGE_SIZE // 8) ** 2 // 4,  # pixel shuffle, scale factor 2
        chat_template=templates.SMOLVLM,
    )
    return _save(hf.SmolVLMForConditionalGeneration, config, processor, out_dir, ["<end_of_utterance>"], seed)


def build_paligemma(out_dir: Path, *, seed: int = 0) -> Path:
    """PaliGemma: SigLIP + linear projector + Gemma decoder; no chat template, as published."""
    import transformers as hf

    tok = build_tokenizer(None, ["<unk>"], eos="<eos>", pad="<pad>", bos="<bos>", named={"image_token": "<image>"})
    image_processor = hf.SiglipImageProcessor(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE})
    image_processor.image_seq_length = (IMAGE_SIZE // 8) ** 2  # PaliGemmaProcessor reads it
    processor = hf.PaliGemmaProcessor(image_processor=image_processor, tokenizer=tok)  # adds <loc*> / <seg*> tokens
    config = hf.PaliGemmaConfig(
        vision_config={**_vision(), "model_type": "siglip_vision_model", "projection_dim": 64},
        text_config={**_text(tok, num_key_value_heads=1), "model_type": "gemma"},
        image_token_index=tok.convert_tokens_to_ids("<image>"),
        projection_dim=64,
        hidden_size=64,
    )
    return _save(hf.PaliGemmaForConditionalGeneration, config, processor, out_dir, ["<eos>"], seed)


FAMILIES: dict[str, Callable[..., Path]] = {
    "llava": build_tiny_llava,
    "idefics3": build_tiny_idefics3,
    "smolvlm": build_smolvlm,
    "qwen2_vl": build_qwen2_vl,
    "qwen2_5_vl": build_qwen2_5_vl,
    "qwen3_vl": build_qwen3_vl,
    "qwen3_5": build_qwen3_5,
    "internvl": build_internvl,
    "gemma3": build_gemma3,
    "llava_onevision": build_llava_onevision,
    "llava_next": build_llava_next,
    "mistral3": build_mistral3,
    "paligemma": build_paligemma,
}
