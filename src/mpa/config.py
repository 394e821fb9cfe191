"""The typed configuration tree of an `mpa` run: one pydantic model per concern, documented once.

A config comes from YAML (`load_config`), from CLI flags, and from dotted overrides (`level.epochs=2`).
Unknown keys and wrong types are errors that name the key; the resolved config is saved in the run directory.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Union

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)

from mpa import strategies
from mpa.errors import ConfigError

__all__ = ["ConfigError", "MPAConfig", "ModelConfig", "build_config", "load_config", "model_config"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class _ModelBase(_Strict):
    """What every backend's model config has: the weights (loaded in-process, or for a served student, loaded to
    train it and to evaluate the leveled weights), how images are sized, batching and cost. One subclass per
    backend adds its own options; `ModelConfig` is their union, keyed on `backend` (a key of
    `mpa.backends.registry.REGISTRY`)."""

    model: str = Field(
        description="Hub id or local folder of the checkpoint; for backend openai the served model name."
    )
    backend: str = Field(description="hf (default), openai, vllm or scripted: see each backend's options below.")
    revision: str | None = Field(None, description="Hub revision (branch, tag or commit).")
    adapter: str | None = Field(None, description="Optional PEFT adapter folder applied on top of `model`.")
    device: str = Field("auto", description="'auto' (CUDA if present, else CPU), 'cpu', 'cuda', 'cuda:1', ...")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="'auto' = bfloat16 on CUDA with bf16 support, float32 otherwise."
    )
    batch_size: int = Field(16, ge=1, description="Sequences per generate call (does not change outputs).")
    min_pixels: int | None = Field(None, ge=1, description="Pixel budget floor, for processors that support it.")
    max_pixels: int | None = Field(None, ge=1, description="Pixel budget ceiling (the paper: 512*28*28 for Qwen2-VL).")
    trust_remote_code: bool = False
    attn_implementation: str | None = Field(None, description="e.g. 'sdpa', 'flash_attention_2'.")
    cost_per_1k_prompt_tokens: float | None = Field(
        None, ge=0, description="USD per 1,000 prompt tokens, to report a cost with the usage in stage manifests."
    )
    cost_per_1k_completion_tokens: float | None = Field(None, ge=0, description="USD per 1,000 completion tokens.")

    # The backend class ("module:Class", imported only when a model is loaded).
    implementation: ClassVar[str]
    # Whether the backend holds the weights in this process, so it can apply an adapter or a fine-tuned folder (an
    # OpenAI client cannot: its server holds the weights).
    in_process: ClassVar[bool] = True
    # What fine-tunes this model's weights in the level stage ("module:Class" of a `backends.base.Training`), or
    # None when it has no weights to train. A served model (openai) names the HF checkpoint its server holds.
    training: ClassVar[str | None] = "mpa.backends.hf_train:HFTraining"

    @model_validator(mode="before")
    @classmethod
    def _options_of_other_backends(cls, data: Any) -> Any:
        """Another backend's option is an error naming that backend — except at its default value, which is how
        run directories written before the per-backend configs spelled every option out (they still resume)."""
        if not isinstance(data, dict):
            return data
        own = cls.model_fields
        for key in [k for k in data if k not in own]:
            for other in BACKEND_CONFIGS.values():
                field = other.model_fields.get(key)
                if field is None or key in _ModelBase.model_fields:
                    continue
                if data[key] == field.default or data[key] is None:
                    data = {k: v for k, v in data.items() if k != key}
                    break
                owner = next(name for name, c in BACKEND_CONFIGS.items() if c is other)
                raise ValueError(f"'{key}' is an option of backend {owner}, not {data.get('backend', 'hf')}")
        return data

    def identity(self) -> dict[str, Any]:
        """What, beyond the weights, changes this model's outputs (stage fingerprints; never secrets)."""
        return {"model": self.model, "revision": self.revision, "backend": self.backend, "dtype": self.dtype,
                "min_pixels": self.min_pixels, "max_pixels": self.max_pixels}  # fmt: skip

    def requests_in_flight(self) -> int:
        """Requests the backend keeps in flight at once (0: it runs its batches one after another)."""
        return 0

    def server_defaults(self) -> list[str]:
        """Decoding parameters the backend cannot send, left to a server's defaults (recorded in manifests)."""
        return []


class HFModelConfig(_ModelBase):
    """`backend: hf` — the model loaded in this process with transformers."""

    backend: Literal["hf"] = "hf"
    implementation: ClassVar[str] = "mpa.backends.hf:HFBackend"


class VLLMModelConfig(_ModelBase):
    """`backend: vllm` — the model loaded in this process by vLLM's offline engine (a CUDA machine)."""

    backend: Literal["vllm"]
    implementation: ClassVar[str] = "mpa.backends.vllm_offline:VLLMBackend"
    gpu_memory_utilization: float = Field(
        0.9, gt=0.0, le=1.0, description="Share of GPU memory vLLM reserves (weights + KV cache)."
    )

    def requests_in_flight(self) -> int:
        return 256  # vLLM schedules its own batches; hand it whole stages


class OpenAIModelConfig(_ModelBase):
    """`backend: openai` — a model served behind an OpenAI-compatible `/v1/chat/completions` endpoint (vLLM,
    SGLang, TGI, `transformers serve`, hosted APIs); see mpa/backends/openai_api.py."""

    backend: Literal["openai"]
    implementation: ClassVar[str] = "mpa.backends.openai_api:OpenAIBackend"
    in_process: ClassVar[bool] = False
    base_url: str = Field(description="The endpoint, e.g. http://127.0.0.1:8000/v1.")
    api_key_env: str | None = Field(
        None,
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        description="NAME of the environment variable holding the API key (the key itself is never stored); "
        "unset = the placeholder 'EMPTY' that local servers accept.",
    )
    concurrency: int = Field(32, ge=1, description="Requests in flight (a continuous-batching server batches them).")
    timeout_s: float = Field(120.0, gt=0, description="Per-request timeout; a timeout is retried.")
    max_retries: int = Field(
        5,
        ge=0,
        description="Retries after 429/5xx/timeouts/dropped connections (exponential backoff with jitter, never "
        "sooner than the server's Retry-After).",
    )
    supports_n: bool | None = Field(
        None,
        description="The server returns n samples per request; None = detect, falling back to n requests with "
        "distinct seeds when fewer come back (`transformers serve` ignores n).",
    )
    image_format: Literal["auto", "png", "jpeg"] = Field(
        "auto",
        description="How images travel. auto = JPEG for photos (more than 4,096 colours), PNG (lossless) for "
        "charts, screenshots and other few-colour images.",
    )
    jpeg_quality: int = Field(95, ge=1, le=100, description="JPEG quality when images travel as JPEG.")
    sampling_params: Literal["vllm", "transformers", "none"] = Field(
        "vllm",
        description="How top_k and repetition_penalty reach the server, which otherwise applies the model's "
        "generation_config (Qwen2-VL: top_k=1, repetition_penalty=1.05). vllm = as request fields (vLLM, SGLang); "
        "transformers = repetition_penalty as `frequency_penalty` + 1 (`transformers serve`, which rejects unknown "
        "fields; top_k stays the server's); none = neither (hosted APIs). The stage manifest names the parameters "
        "left to the server.",
    )

    def identity(self) -> dict[str, Any]:  # which server, and how images travel (never the API key)
        return {**super().identity(), "base_url": self.base_url, "image_format": self.image_format}

    def requests_in_flight(self) -> int:
        return self.concurrency

    def server_defaults(self) -> list[str]:
        return {"vllm": [], "transformers": ["top_k"], "none": ["top_k", "repetition_penalty"]}[self.sampling_params]


class ScriptedModelConfig(_ModelBase):
    """`backend: scripted` — no weights: `model` is a JSON script of replies (mpa/backends/scripted.py), for fast
    tests and dry runs of the stages."""

    backend: Literal["scripted"]
    implementation: ClassVar[str] = "mpa.backends.scripted:ScriptedBackend"
    in_process: ClassVar[bool] = False  # nothing to apply an adapter to
    training: ClassVar[str | None] = None


# The backend registry: adding a backend is its module, its config class above, and one line here.
BACKEND_CONFIGS: dict[str, type[_ModelBase]] = {
    "hf": HFModelConfig,
    "vllm": VLLMModelConfig,
    "openai": OpenAIModelConfig,
    "scripted": ScriptedModelConfig,
}


def _backend_of(value: Any) -> str:
    return value.get("backend", "hf") if isinstance(value, dict) else getattr(value, "backend", "hf")


# The union of the registered configs, keyed on `backend` (built from the registry, so it needs no edit).
ModelConfig = Annotated[
    Union[tuple(Annotated[c, Tag(name)] for name, c in BACKEND_CONFIGS.items())],  # type: ignore[valid-type]  # noqa: UP007
    Discriminator(
        _backend_of,
        custom_error_type="backend",
        custom_error_message=f"unknown backend; choose one of {', '.join(BACKEND_CONFIGS)}",
    ),
]
_MODEL_ADAPTER: TypeAdapter[Any] = TypeAdapter(ModelConfig)


def model_config(**fields: Any) -> HFModelConfig | VLLMModelConfig | OpenAIModelConfig | ScriptedModelConfig:
    """A model config from keyword fields, its class chosen by `backend` (default hf)."""
    try:
        return _MODEL_ADAPTER.validate_python(fields)  # type: ignore[no-any-return]
    except ValidationError as err:
        raise ConfigError(_format_validation_error(err, "model")) from None


class ImagesConfig(_Strict):
    """Where the unlabeled images come from."""

    path: str = Field(
        description="A folder (searched recursively), a .txt/.jsonl list of paths, or a local HF dataset."
    )
    kind: Literal["auto", "folder", "list", "hf_dataset"] = "auto"
    image_column: str = Field("image", description="Image column of a HF dataset, or path key of a JSONL list.")
    split: str | None = Field(None, description="Split of a HF DatasetDict (default: 'train' or the only split).")
    limit: int | None = Field(None, ge=1, description="Use only the first N images (in a stable order).")
    part: tuple[int, int] | None = Field(
        None,
        description="[i, n]: use only the i-th of n interleaved parts of the images (rounds.pool: slices sets it).",
    )

    @field_validator("part")
    @classmethod
    def _part_in_range(cls, value: tuple[int, int] | None) -> tuple[int, int] | None:
        if value is not None and not 1 <= value[0] <= value[1]:
            raise ValueError("must be [i, n] with 1 <= i <= n")
        return value


class AnnotateConfig(_Strict):
    """Pseudo Annotator (PA): the teacher writes question/answer pairs for each image."""

    task: str = Field("generic", description="Prompt preset: textvqa, stvqa, chartqa, okvqa, generic, or *-paper.")
    prompt_file: str | None = Field(None, description="A text file with your own annotation prompt ({k} = pairs).")
    pairs_per_image: int = Field(3, ge=1, description="k: QA pairs asked for per generation (JSON presets).")
    samples_per_image: int = Field(1, ge=1, description="n: teacher generations per image.")
    temperature: float = Field(0.0, ge=0.0, description="0 = greedy; > 0 samples (seeded, batch-invariant).")
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    top_k: int = Field(0, ge=0, description="Sampling: keep the k most likely tokens (0 = off).")
    repetition_penalty: float = Field(
        1.0, gt=0.0, description="1.0 = off. Set explicitly for every backend (checkpoint defaults are not used)."
    )
    max_new_tokens: int = Field(256, ge=1)
    max_answer_words: int = Field(8, ge=1, description="Longer pseudo-answers are rejected as 'answer_too_long'.")


class IdentifyConfig(_Strict):
    """Parity Identifier (PI): keep samples the teacher gets right and the student gets wrong."""

    matcher: Literal["compat", "exact", "anls", "relaxed"] = Field(
        "exact", description="compat = the paper's substring rule; exact = VQA-normalised equality."
    )
    anls_threshold: float = Field(0.5, gt=0.0, le=1.0)
    relaxed_tolerance: float = Field(0.05, ge=0.0)
    strategy: str = Field(
        "parity",
        description="Which pseudo-QAs to keep, a name in mpa.strategies.REGISTRY: parity (teacher right, student "
        "wrong), all, random (seeded, the parity set's size), teacher_consistent, student_fails, graded (ranked by "
        "gap score: teacher agreement share minus student agreement).",
    )
    consensus: Literal["all", "majority", "any"] = Field(
        "all",
        description="With more `teachers`: how many of the teachers (the annotating one included) must answer like "
        "the pseudo-answer for it to count as teacher-consistent.",
    )
    min_gap_score: float = Field(
        0.5,
        ge=-1.0,
        le=1.0,
        description="strategy graded: keep candidates whose gap score (teacher agreement share minus student "
        "agreement, in [-1, 1]) is at least this.",
    )
    top_share: float | None = Field(
        None,
        gt=0.0,
        le=1.0,
        description="strategy graded: keep only this share of all candidates, highest scores first.",
    )
    self_consistency: int = Field(1, ge=1, description="k sampled teacher answers (1 = greedy only).")
    self_consistency_min_share: float = Field(0.5, gt=0.0, le=1.0, description="Share of samples that must agree.")
    self_consistency_temperature: float = Field(0.7, gt=0.0)
    max_new_tokens: int = Field(16, ge=1)
    repetition_penalty: float = Field(1.0, gt=0.0, description="Applied to both models' answers (1.0 = off).")

    @field_validator("strategy")
    @classmethod
    def _registered_strategy(cls, value: str) -> str:
        return strategies.check_name(value)  # read at validation time, so a strategy registered later is accepted


# The default LoRA targets: every linear layer of the language model, resolved per model (mpa.backends.hf_parts).
LANGUAGE_MODEL_LINEAR = "language-model-linear"


class LevelConfig(_Strict):
    """Parity Leveler (PL): fine-tune the student on the selected set, with guards against forgetting."""

    method: Literal["lora", "full"] = "lora"
    lora_r: int = Field(16, ge=1)
    lora_alpha: int = Field(32, ge=1)
    lora_dropout: float = Field(0.05, ge=0.0, lt=1.0)
    lora_target_modules: str | list[str] = Field(
        LANGUAGE_MODEL_LINEAR,
        description="PEFT target_modules: a regex (full match) or a list of module names. Default "
        "'language-model-linear': every linear layer of the language model (attention, MLP, and linear-attention "
        "projections such as Qwen3.5's), never the vision tower, the projector or lm_head.",
    )
    freeze_vision: bool = Field(True, description="Full fine-tuning: keep the vision tower (encoder) frozen.")
    freeze_projector: bool = Field(
        False, description="Full fine-tuning: also keep the vision-language projector / merger frozen."
    )
    epochs: float = Field(3.0, gt=0.0)
    max_steps: int = Field(-1, ge=-1, description="If > 0, overrides epochs.")
    learning_rate: float = Field(2e-4, gt=0.0)
    batch_size: int = Field(8, ge=1)
    grad_accum: int = Field(1, ge=1)
    warmup_ratio: float = Field(0.03, ge=0.0, lt=1.0)
    weight_decay: float = Field(0.0, ge=0.0)
    lr_scheduler: Literal["cosine", "linear", "constant", "constant_with_warmup", "cosine_with_min_lr"] = "cosine"
    balance: Literal["none", "answer_type", "answer"] = Field(
        "none", description="Resample the gap set so answer types (or answers) are equally represented."
    )
    max_per_answer: int | None = Field(None, ge=1, description="Cap on samples sharing one pseudo-answer.")
    retention_ratio: float = Field(
        0.0, ge=0.0, description="Retention samples (teacher and student already right) per gap sample."
    )
    val_fraction: float = Field(
        0.1, ge=0.0, lt=1.0, description="Label-free validation share of teacher-consistent QAs."
    )
    early_stopping_patience: int | None = Field(3, ge=1, description="Evaluations without improvement; None = off.")
    eval_steps: int | None = Field(None, ge=1, description="Evaluate every N steps (default: about 10 per run).")
    merge: bool = Field(False, description="Also save a merged full model (LoRA) loadable by from_pretrained.")
    bf16: Literal["auto", "true", "false"] = "auto"
    gradient_checkpointing: bool = False


class BenchmarkConfig(_Strict):
    """One evaluation benchmark (local files; nothing is downloaded)."""

    name: str = Field(description="A registered benchmark: a key of mpa.evaluation.BENCHMARKS (checked before a run).")
    data_dir: str | None = Field(None, description="The benchmark's release folder (not needed for easyvqa).")
    split: str | None = None
    limit: int | None = Field(None, ge=1, description="Evaluate the first N questions only.")
    metric: str | None = Field(None, description="Override the official metric (a key of mpa.evaluation.METRICS).")


class EvaluateConfig(_Strict):
    """Evaluation of teacher, student before and student after on benchmarks (skipped when none are listed)."""

    benchmarks: list[BenchmarkConfig] = Field(default_factory=list)
    models: list[Literal["teacher", "student_before", "student_after"]] = Field(
        default_factory=lambda: ["teacher", "student_before", "student_after"]
    )
    max_new_tokens: int = Field(32, ge=1)
    repetition_penalty: float = Field(1.0, gt=0.0, description="1.0 = off, for every model and backend.")


class ContaminationConfig(_Strict):
    """The contamination guard (mpa/contamination.py): before annotate, every pool image is compared with the images
    of the `evaluate.benchmarks`; near-duplicates (copies, resized, re-encoded or slightly cropped) are left out."""

    check: bool = Field(True, description="Scan the pool against the evaluation benchmarks' images.")
    allow: bool = Field(
        False, description="Keep flagged images in the pool (they are still listed in RUN_DIR/contamination/)."
    )


class RoundsConfig(_Strict):
    """Rounds beyond the paper: after leveling, the leveled student is asked again, the gaps it still has are
    selected and it is leveled again (RUN_DIR/rounds/<r>/, each round a run directory of its own)."""

    count: int = Field(1, ge=1, description="Rounds of identify → level (1 = the paper's single pass).")
    pool: Literal["same", "slices"] = Field(
        "same",
        description="same = every round asks about the whole pool (its annotations are reused); slices = round r "
        "annotates only the r-th of `count` parts of the pool.",
    )
    stop_early: bool = Field(
        True,
        description="Stop after a round whose label-free validation accuracy gains no more than `min_gain` over the "
        "student it started from (no label is read); the previous round's student is the result.",
    )
    min_gain: float = Field(0.0, description="A round must gain more than this (label-free validation accuracy).")


class ExportConfig(_Strict):
    """Formats the parity set is exported to, for other fine-tuning frameworks."""

    formats: list[Literal["llava", "sharegpt", "llamafactory", "swift", "trl"]] = Field(
        default_factory=lambda: ["llava", "sharegpt"],
        description="Files with the run's image paths (llava, sharegpt) or self-contained folders with the images "
        "copied (llamafactory, swift, trl); mpa.export.",
    )


class EngineConfig(_Strict):
    """Where generation runs: in this process (`local`), or fanned out over a Ray cluster (`ray`): a pool of
    actors, each holding one backend (an HF model on its GPU, or an OpenAI client for its node's server). The
    engine never changes outputs, so it is not part of any stage fingerprint."""

    name: Literal["local", "ray"] = Field("local", description="local = this process; ray = a Ray actor pool.")
    ray_address: str | None = Field(
        None, description="ray: None = start a local Ray instance; 'auto' or ray://HOST:10001 = join a cluster."
    )
    num_actors: int = Field(2, ge=1, description="ray: backends working in parallel (e.g. one per GPU).")
    num_gpus_per_actor: float | None = Field(
        None,
        ge=0.0,
        description="ray: GPUs reserved per actor. None = 1 for in-process models (hf, vllm) when the cluster has "
        "GPUs, 0 for backend openai; a large in-process model on a cluster without GPUs is refused unless this is "
        "set to 0 explicitly.",
    )
    num_cpus_per_actor: float = Field(1.0, gt=0.0, description="ray: CPUs reserved per actor.")


class MPAConfig(_Strict):
    """A whole run: inputs, models, and one section per stage."""

    run_dir: str
    seed: int = 0
    images: ImagesConfig
    teacher: ModelConfig
    student: ModelConfig
    teachers: list[ModelConfig] = Field(
        default_factory=list,
        description="More teachers that answer every pseudo-question at identify, any backend each; a pseudo-QA is "
        "teacher-consistent under `identify.consensus` over all of them and `teacher`.",
    )
    annotate: AnnotateConfig = Field(default_factory=AnnotateConfig)
    identify: IdentifyConfig = Field(default_factory=IdentifyConfig)
    level: LevelConfig = Field(default_factory=LevelConfig)
    export: ExportConfig = Field(default_factory=ExportConfig)
    evaluate: EvaluateConfig = Field(default_factory=EvaluateConfig)
    engine: EngineConfig = Field(default_factory=EngineConfig)
    contamination: ContaminationConfig = Field(default_factory=ContaminationConfig)
    rounds: RoundsConfig = Field(default_factory=RoundsConfig)

    @model_validator(mode="after")
    def _rounds_need_a_model_to_start_from(self) -> MPAConfig:
        if self.rounds.count > 1 and self.level.method == "lora" and not self.level.merge:
            raise ValueError(
                "rounds.count > 1 with level.method lora needs level.merge: true (each round starts from the "
                "previous round's merged model)"
            )
        return self

    @field_validator("run_dir")
    @classmethod
    def _non_empty(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be empty")
        return value


def _format_validation_error(err: ValidationError, source: str) -> str:
    problems = []
    for e in err.errors():
        # (a model config's location includes its backend's tag, e.g. teacher.openai.base_url: not a key)
        key = ".".join(str(p) for p in e["loc"] if p not in BACKEND_CONFIGS) or "<root>"
        if e["type"] == "extra_forbidden":
            problems.append(f"unknown key '{key}' (remove it or check its spelling)")
        elif e["type"] == "missing":
            problems.append(f"missing required key '{key}'")
        elif key.endswith("api_key_env"):  # never echo what may be a pasted key
            problems.append(f"'{key}': must be the NAME of an environment variable, e.g. OPENAI_API_KEY")
        else:
            problems.append(f"'{key}': {e['msg']} (got {e.get('input')!r})")
    return f"{source}: " + "; ".join(problems)


def set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    """Set `a.b.c = value` in a nested dict, creating sections as needed."""
    parts = dotted.split(".")
    node = tree
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"override '{dotted}': '{part}' is not a section")
        node = child
    node[parts[-1]] = value


def parse_override(text: str) -> tuple[str, Any]:
    """Parse `key.path=value`; the value is read as YAML so numbers, booleans and lists work."""
    if "=" not in text:
        raise ConfigError(f"--set {text}: an override must look like section.key=value, e.g. level.epochs=2")
    key, raw = text.split("=", 1)
    return key.strip(), yaml.safe_load(raw) if raw.strip() else ""


def build_config(tree: dict[str, Any], overrides: list[str] | None = None, source: str = "config") -> MPAConfig:
    """Validate a nested dict (plus `key=value` overrides) into an `MPAConfig`."""
    tree = yaml.safe_load(yaml.safe_dump(tree))  # deep copy of plain data
    for item in overrides or []:
        set_dotted(tree, *parse_override(item))
    try:
        return MPAConfig.model_validate(tree)
    except ValidationError as err:
        raise ConfigError(_format_validation_error(err, source)) from None


def read_yaml(path: Path) -> dict[str, Any]:
    """Read a YAML mapping with errors that name the file."""
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of sections (run_dir, images, teacher, ...)")
    return data


def load_config(path: Path, overrides: list[str] | None = None) -> MPAConfig:
    """Load and validate a YAML config file."""
    return build_config(read_yaml(path), overrides, source=str(path))


def dump_config(cfg: MPAConfig) -> str:
    """The resolved config as YAML (every default written out)."""
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)
