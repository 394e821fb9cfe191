"""Prompt formats of published VLM checkpoints for the tiny offline models of `mpa.testing.families`.

`build_tokenizer` trains a tiny byte-level BPE that carries a family's special tokens and chat template; the
constants below are the chat templates.

Each template renders what the published checkpoint's template renders for text / image parts (and video parts where
the family has them): same role markers, image placeholders, whitespace and generation prompt. Tool calling is left
out. The one other change: the assistant's reply and its end-of-turn marker are wrapped in
`{% generation %}...{% endgeneration %}`, which renders nothing, so `return_assistant_tokens_mask=True` (TRL's
`assistant_only_loss`) marks exactly what the model must learn to write. Each constant names its source.

Quirks kept because the published templates have them (compare tokenised train and inference prompts per family):
- LLaVA-OneVision: a full conversation renders `<|im_start|>assistant \\n<reply>` (space before the newline) but the
  generation prompt ends `<|im_start|>assistant\\n`; turns end `<|im_end|>` with no newline.
- SmolVLM: the generation prompt ends `Assistant:`; a full conversation renders `Assistant: <reply>`.
- Qwen3.5: the generation prompt ends `<think>\\n` (thinking on) unless `enable_thinking=False` is passed, which
  gives `<think>\\n\\n</think>\\n\\n`; the last assistant turn of a full conversation renders with an empty think block.
- LLaVA-NeXT (Mistral): there is no generation prompt; the prompt ends ` [/INST]` and replies render ` <reply></s> `.
- Mistral 3: a default system prompt is always rendered. The published one is long and contains today's date
  (`strftime_now`); ours is short and fixed, so prompts (and fingerprints of them) do not change from day to day.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from mpa.testing.tiny import _default_corpus

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerFast


def build_tokenizer(
    template: str | None,
    special: Sequence[str],
    *,
    eos: str,
    pad: str,
    bos: str | None = None,
    named: dict[str, str] | None = None,
    plain: Sequence[str] = (),
    add_bos: bool = False,
    qwen: bool = False,
) -> PreTrainedTokenizerFast:
    """A byte-level BPE (vocab ~400) trained on mpa.testing.tiny's corpus: any text round-trips; special tokens first.

    `named` become tokenizer attributes the processors read (`tokenizer.image_token`, `.boi_token`, ...); `plain`
    are single, non-special tokens (Qwen's `<think>`); `add_bos` makes the tokenizer prepend `bos` like Llama's;
    `qwen` uses Qwen's NFC + regex pre-tokenization (AutoTokenizer rebuilds Qwen3.5 tokenizers that way on load).
    """
    from tokenizers import (
        AddedToken,
        Regex,
        Tokenizer,
        decoders,
        models,
        normalizers,
        pre_tokenizers,
        processors,
        trainers,
    )
    from transformers import PreTrainedTokenizerFast
    from transformers.models.qwen3_5.tokenization_qwen3_5 import PRETOKENIZE_REGEX

    named = named or {}
    tokens = list(dict.fromkeys([pad, eos, *([bos] if bos else []), *special, *named.values()]))
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    if qwen:
        tok.normalizer = normalizers.NFC()
        split = pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated")
        tok.pre_tokenizer = pre_tokenizers.Sequence(
            [split, pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)]
        )
    tok.decoder = decoders.ByteLevel()
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=tokens, initial_alphabet=alphabet, show_progress=False)
    tok.train_from_iterator(_default_corpus(), trainer=trainer)
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in plain])
    if add_bos:
        bos_id = tok.token_to_id(bos)
        tok.post_processor = processors.TemplateProcessing(single=f"{bos} $A", special_tokens=[(bos, bos_id)])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=bos,
        eos_token=eos,
        pad_token=pad,
        extra_special_tokens=named,
        padding_side="left",
        clean_up_tokenization_spaces=False,
        model_max_length=2048,
        chat_template=template,
    )


# Qwen/Qwen2-VL-2B-Instruct and Qwen/Qwen2.5-VL-3B-Instruct (identical `chat_template.json`): ChatML with a default
# system prompt; images render `<|vision_start|><|image_pad|><|vision_end|>`, expanded by Qwen2VLProcessor.
QWEN2_VL = (
    "{%- set image_count = namespace(value=0) -%}{%- set video_count = namespace(value=0) -%}"
    "{%- macro render(content) -%}"
    "{%- if content is string -%}{{- content -}}{%- else -%}{%- for part in content -%}"
    "{%- if part['type'] == 'image' or 'image' in part or 'image_url' in part -%}"
    "{%- set image_count.value = image_count.value + 1 -%}"
    "{%- if add_vision_id -%}{{- 'Picture ' ~ image_count.value ~ ': ' -}}{%- endif -%}"
    "{{- '<|vision_start|><|image_pad|><|vision_end|>' -}}"
    "{%- elif part['type'] == 'video' or 'video' in part -%}"
    "{%- set video_count.value = video_count.value + 1 -%}"
    "{%- if add_vision_id -%}{{- 'Video ' ~ video_count.value ~ ': ' -}}{%- endif -%}"
    "{{- '<|vision_start|><|video_pad|><|vision_end|>' -}}"
    "{%- elif 'text' in part -%}{{- part['text'] -}}{%- endif -%}"
    "{%- endfor -%}{%- endif -%}"
    "{%- endmacro -%}"
    "{%- for message in messages -%}"
    "{%- if loop.first and message['role'] != 'system' -%}"
    "{{- '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' -}}"
    "{%- endif -%}"
    "{{- '<|im_start|>' + message['role'] + '\\n' -}}"
    "{%- if message['role'] == 'assistant' -%}"
    "{%- generation -%}{{- render(message['content']) + '<|im_end|>' -}}{%- endgeneration -%}"
    "{%- else -%}{{- render(message['content']) + '<|im_end|>' -}}{%- endif -%}"
    "{{- '\\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"
)

# Qwen/Qwen3-VL-2B-Instruct `chat_template.json`: ChatML without a default system prompt; assistant turns render only
# their text parts.
QWEN3_VL = (
    "{%- set image_count = namespace(value=0) -%}{%- set video_count = namespace(value=0) -%}"
    "{%- macro render(content, vision) -%}"
    "{%- if content is string -%}{{- content -}}{%- else -%}{%- for part in content -%}"
    "{%- if vision and (part['type'] == 'image' or 'image' in part or 'image_url' in part) -%}"
    "{%- set image_count.value = image_count.value + 1 -%}"
    "{%- if add_vision_id -%}{{- 'Picture ' ~ image_count.value ~ ': ' -}}{%- endif -%}"
    "{{- '<|vision_start|><|image_pad|><|vision_end|>' -}}"
    "{%- elif vision and (part['type'] == 'video' or 'video' in part) -%}"
    "{%- set video_count.value = video_count.value + 1 -%}"
    "{%- if add_vision_id -%}{{- 'Video ' ~ video_count.value ~ ': ' -}}{%- endif -%}"
    "{{- '<|vision_start|><|video_pad|><|vision_end|>' -}}"
    "{%- elif 'text' in part -%}{{- part['text'] -}}{%- endif -%}"
    "{%- endfor -%}{%- endif -%}"
    "{%- endmacro -%}"
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'system' -%}"
    "{%- if loop.first -%}"
    "{{- '<|im_start|>system\\n' + render(message['content'], false) + '<|im_end|>\\n' -}}"
    "{%- endif -%}"
    "{%- elif message['role'] == 'assistant' -%}"
    "{{- '<|im_start|>assistant\\n' -}}"
    "{%- generation -%}{{- render(message['content'], false) + '<|im_end|>' -}}{%- endgeneration -%}"
    "{{- '\\n' -}}"
    "{%- else -%}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + render(message['content'], true) + '<|im_end|>\\n' -}}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"
)

# Qwen/Qwen3.5-27B `chat_template.jinja` (the small Qwen3.5 checkpoints ship the same): ChatML, content trimmed, a
# think block on assistant turns after the last user query, thinking on by default in the generation prompt.
QWEN3_5 = (
    "{%- set image_count = namespace(value=0) -%}{%- set video_count = namespace(value=0) -%}"
    "{%- macro render(content, vision) -%}"
    "{%- if content is string -%}{{- content -}}{%- elif content is iterable and content is not mapping -%}"
    "{%- for part in content -%}"
    "{%- if 'image' in part or 'image_url' in part or part['type'] == 'image' -%}"
    "{%- if vision -%}{%- set image_count.value = image_count.value + 1 -%}{%- endif -%}"
    "{%- if add_vision_id -%}{{- 'Picture ' ~ image_count.value ~ ': ' -}}{%- endif -%}"
    "{{- '<|vision_start|><|image_pad|><|vision_end|>' -}}"
    "{%- elif 'video' in part or part['type'] == 'video' -%}"
    "{%- if vision -%}{%- set video_count.value = video_count.value + 1 -%}{%- endif -%}"
    "{%- if add_vision_id -%}{{- 'Video ' ~ video_count.value ~ ': ' -}}{%- endif -%}"
    "{{- '<|vision_start|><|video_pad|><|vision_end|>' -}}"
    "{%- elif 'text' in part -%}{{- part['text'] -}}{%- endif -%}"
    "{%- endfor -%}{%- endif -%}"
    "{%- endmacro -%}"
    "{%- set ns = namespace(last_query_index=messages|length - 1) -%}"
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'user' -%}{%- set ns.last_query_index = loop.index0 -%}{%- endif -%}"
    "{%- endfor -%}"
    "{%- for message in messages -%}"
    "{%- set content = render(message['content'], true)|trim -%}"
    "{%- if message['role'] == 'assistant' -%}"
    "{%- if message['reasoning_content'] is string -%}{%- set reasoning = message['reasoning_content'] -%}"
    "{%- elif '</think>' in content -%}"
    "{%- set reasoning = content.split('</think>')[0].rstrip('\\n').split('<think>')[-1].lstrip('\\n') -%}"
    "{%- set content = content.split('</think>')[-1].lstrip('\\n') -%}"
    "{%- else -%}{%- set reasoning = '' -%}{%- endif -%}"
    "{{- '<|im_start|>assistant\\n' -}}"
    "{%- generation -%}"
    "{%- if loop.index0 > ns.last_query_index -%}"
    "{{- '<think>\\n' + reasoning|trim + '\\n</think>\\n\\n' -}}"
    "{%- endif -%}"
    "{{- content + '<|im_end|>' -}}"
    "{%- endgeneration -%}"
    "{{- '\\n' -}}"
    "{%- else -%}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + content + '<|im_end|>\\n' -}}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}"
    "{{- '<|im_start|>assistant\\n' -}}"
    "{%- if enable_thinking is defined and enable_thinking is false -%}{{- '<think>\\n\\n</think>\\n\\n' -}}"
    "{%- else -%}{{- '<think>\\n' -}}{%- endif -%}"
    "{%- endif -%}"
)

# OpenGVLab/InternVL3-1B-hf (transformers' convert_internvl_weights_to_hf.py): ChatML, no system prompt; an image
# renders `<IMG_CONTEXT>\n`, which InternVLProcessor expands to `<img><IMG_CONTEXT>*N</img>`.
INTERNVL = (
    "{%- macro render(content) -%}"
    "{%- if content is string -%}{{- content -}}{%- else -%}{%- for part in content -%}"
    "{%- if part['type'] == 'image' -%}{{- '<IMG_CONTEXT>\\n' -}}"
    "{%- elif part['type'] == 'video' -%}{{- '<video>\\n' -}}"
    "{%- elif part['type'] == 'text' -%}{{- part['text'] -}}{%- endif -%}"
    "{%- endfor -%}{%- endif -%}"
    "{%- endmacro -%}"
    "{%- for message in messages -%}"
    "{{- '<|im_start|>' + message['role'] + '\\n' -}}"
    "{%- if message['role'] == 'assistant' -%}"
    "{%- generation -%}{{- render(message['content']) + '<|im_end|>' -}}{%- endgeneration -%}"
    "{%- else -%}{{- render(message['content']) + '<|im_end|>' -}}{%- endif -%}"
    "{{- '\\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"
)

# google/gemma-3-4b-it `chat_template.json`: `<bos>`, the system prompt folded into the first user turn, role
# `model` for the assistant, text trimmed; `<start_of_image>` is expanded by Gemma3Processor.
GEMMA3 = (
    "{{- bos_token -}}"
    "{%- if messages[0]['role'] == 'system' -%}"
    "{%- if messages[0]['content'] is string -%}{%- set first_user_prefix = messages[0]['content'] + '\\n\\n' -%}"
    "{%- else -%}{%- set first_user_prefix = messages[0]['content'][0]['text'] + '\\n\\n' -%}{%- endif -%}"
    "{%- set loop_messages = messages[1:] -%}"
    "{%- else -%}{%- set first_user_prefix = '' -%}{%- set loop_messages = messages -%}{%- endif -%}"
    "{%- for message in loop_messages -%}"
    "{%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}"
    "{{- raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') -}}"
    "{%- endif -%}"
    "{%- set role = 'model' if message['role'] == 'assistant' else message['role'] -%}"
    "{{- '<start_of_turn>' + role + '\\n' + (first_user_prefix if loop.first else '') -}}"
    "{%- set ns = namespace(text='') -%}"
    "{%- if message['content'] is string -%}{%- set ns.text = message['content'] | trim -%}"
    "{%- else -%}{%- for item in message['content'] -%}"
    "{%- if item['type'] == 'image' -%}{%- set ns.text = ns.text + '<start_of_image>' -%}"
    "{%- elif item['type'] == 'text' -%}{%- set ns.text = ns.text + item['text'] | trim -%}{%- endif -%}"
    "{%- endfor -%}{%- endif -%}"
    "{%- if message['role'] == 'assistant' -%}"
    "{%- generation -%}{{- ns.text + '<end_of_turn>' -}}{%- endgeneration -%}{{- '\\n' -}}"
    "{%- else -%}{{- ns.text + '<end_of_turn>\\n' -}}{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<start_of_turn>model\\n' -}}{%- endif -%}"
)

# llava-hf/llava-onevision-qwen2-0.5b-ov-hf `chat_template.json` (as copied into transformers' LLaVA-OneVision
# processor tests): images first, then videos, then `\n` + each text part; generation block widened to `<|im_end|>`.
LLAVA_ONEVISION = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + ' '}}"
    "{# Render all images first #}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}{{ '<image>' }}{% endfor %}"
    "{# Render all video then #}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'video') %}{{ '<video>' }}{% endfor %}"
    "{# Render all text next #}"
    "{% if message['role'] != 'assistant' %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}"
    "{{ '\\n' + content['text'] }}{% endfor %}{{'<|im_end|>'}}"
    "{% else %}{% generation %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}"
    "{{ '\\n' + content['text'] }}{% endfor %}{{'<|im_end|>'}}"
    "{% endgeneration %}{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

# llava-hf/llava-v1.6-mistral-7b-hf `chat_template.json`: Mistral `[INST]` turns, images first as `<image>\n`,
# no generation prompt; the tokenizer adds `<s>`.
LLAVA_NEXT = (
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}{{ '<<SYS>>\\n' + message['content'][0]['text'] + '\\n<</SYS>>\\n\\n' }}"
    "{% elif message['role'] == 'user' %}{{ '[INST] ' }}"
    "{# Render all images first #}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}{{ '<image>\\n' }}{% endfor %}"
    "{# Render all text next #}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}"
    "{{ content['text'] }}{% endfor %}{{' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}"
    "{% generation %}{{ ' ' + message['content'][0]['text'] + '</s>' }}{% endgeneration %}{{ ' ' }}"
    "{% else %}{{ raise_exception('Only user and assistant roles are supported!') }}{% endif %}"
    "{% endfor %}"
)

# mistralai/Mistral-Small-3.1-24B-Instruct-2503 `chat_template.json`: `<s>[SYSTEM_PROMPT]...[/SYSTEM_PROMPT]`, user
# turns `[INST]...[/INST]` with `[IMG]` per image, replies end with `</s>`. Default system prompt: see module docstring.
MISTRAL3 = (
    "{%- set default_system_message = 'You are a helpful assistant.' -%}"
    "{{- bos_token -}}"
    "{%- if messages[0]['role'] == 'system' -%}"
    "{%- if messages[0]['content'] is string -%}{%- set system_message = messages[0]['content'] -%}"
    "{%- else -%}{%- set system_message = messages[0]['content'][0]['text'] -%}{%- endif -%}"
    "{%- set loop_messages = messages[1:] -%}"
    "{%- else -%}{%- set system_message = default_system_message -%}{%- set loop_messages = messages -%}{%- endif -%}"
    "{{- '[SYSTEM_PROMPT]' + system_message + '[/SYSTEM_PROMPT]' -}}"
    "{%- for message in loop_messages -%}"
    "{%- if message['role'] == 'user' -%}"
    "{%- if message['content'] is string -%}{{- '[INST]' + message['content'] + '[/INST]' -}}"
    "{%- else -%}{{- '[INST]' -}}"
    "{%- for block in message['content'] -%}"
    "{%- if block['type'] == 'text' -%}{{- block['text'] -}}"
    "{%- elif block['type'] in ['image', 'image_url'] -%}{{- '[IMG]' -}}"
    "{%- else -%}{{- raise_exception('Only text and image blocks are supported in message content!') -}}"
    "{%- endif -%}"
    "{%- endfor -%}{{- '[/INST]' -}}"
    "{%- endif -%}"
    "{%- elif message['role'] == 'system' -%}"
    "{{- '[SYSTEM_PROMPT]' + message['content'] + '[/SYSTEM_PROMPT]' -}}"
    "{%- elif message['role'] == 'assistant' -%}"
    "{%- generation -%}"
    "{%- if message['content'] is string -%}{{- message['content'] + eos_token -}}"
    "{%- else -%}{{- message['content'][0]['text'] + eos_token -}}{%- endif -%}"
    "{%- endgeneration -%}"
    "{%- else -%}{{- raise_exception('Only user, system and assistant roles are supported!') -}}"
    "{%- endif -%}"
    "{%- endfor -%}"
)

# HuggingFaceTB/SmolVLM2 (SmolVLMProcessor's DEFAULT_CHAT_TEMPLATE in transformers 5): `<|im_start|>User:<image>...`,
# turns end `<end_of_utterance>\n`, generation prompt `Assistant:`.
SMOLVLM = (
    "{%- macro render(content) -%}"
    "{%- if content is string -%}{{ content }}{%- else -%}{%- for line in content -%}"
    "{%- if line['type'] == 'text' -%}{{ line['text'] }}{%- elif line['type'] == 'image' -%}{{ '<image>' }}"
    "{%- elif line['type'] == 'video' -%}{{ '<video>' }}{%- endif -%}"
    "{%- endfor -%}{%- endif -%}"
    "{%- endmacro -%}"
    "<|im_start|>{% for message in messages %}{{message['role'] | capitalize}}"
    "{% if message['content'] is string or message['content'][0]['type'] != 'image' %}{{': '}}"
    "{% else %}{{':'}}{% endif %}"
    "{% if message['role'] == 'assistant' %}"
    "{% generation %}{{ render(message['content']) + '<end_of_utterance>' }}{% endgeneration %}"
    "{% else %}{{ render(message['content']) + '<end_of_utterance>' }}{% endif %}"
    "{{ '\\n' }}{% endfor %}{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
)
