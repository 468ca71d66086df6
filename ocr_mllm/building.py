"""Build complete OCR-MLLM model folders: from a size preset with random weights, or from pretrained parts
(a causal LM, a CLIP / SigLIP / Qwen-VL low-res tower, a SAM or GOT-OCR2 high-res encoder)."""

from __future__ import annotations

import copy
import logging
from pathlib import Path

import torch
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForCausalLM,
    AutoTokenizer,
    GenerationConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    ProcessorMixin,
)

from configuration_ocr_mllm import OcrMllmConfig
from image_processing_ocr_mllm import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    OPENAI_CLIP_MEAN,
    OPENAI_CLIP_STD,
    OcrMllmImageProcessor,
)
from modeling_ocr_mllm import OcrMllmForConditionalGeneration
from processing_ocr_mllm import OcrMllmProcessor

from .folders import MODEL_CODE_FILES
from .tokenization import ENDOFTEXT, IM_END, IMAGE_TOKEN, default_corpus, train_bpe_tokenizer


logger = logging.getLogger(__name__)

# Model sizes by name. "tiny" is for tests (loads and generates on CPU in well under a second); "original" is the
# architecture of OCR_MLLM_TOY (Qwen-14B, Qwen-VL ViT-bigG, SAM ViT-B) and is meant to be filled from pretrained parts.
# Line readers keep the low-res path (ViT → Resampler) at its smallest: a 28-px view, 2 × 2 patches, 4 queries.
LINE_LOW_RES_VIEW = {
    "num_hidden_layers": 1,
    "num_attention_heads": 2,
    "image_size": 28,
    "patch_size": 14,
    "position_embedding_grid_size": 2,
}
PRESETS: dict[str, dict] = {
    "tiny": {
        "text_config": {
            "model_type": "qwen2",
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "max_position_embeddings": 2048,
            "rms_norm_eps": 1e-6,
            "tie_word_embeddings": False,
        },
        "vision_config": {
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "image_size": 56,
            "patch_size": 14,
            "position_embedding_grid_size": 2,
        },
        "high_res_vision_config": {
            "model_type": "sam_vision_model",
            "hidden_size": 32,
            "output_channels": 16,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "mlp_dim": 64,
            "image_size": 128,
            "patch_size": 16,
            "window_size": 4,
            "global_attn_indexes": [1],
        },
        "high_res_downsample_channels": [32, 64],
        "resampler_num_queries": 4,
        "resampler_num_heads": 2,
        "tokenizer_vocab_size": 512,
    },
    "original": {"tokenizer_vocab_size": None},
    # Line readers trained from scratch (scripts/quickstart.py; docs/training.md "line readers"): the high-res view is
    # one text line of 32 × line-width px; a conv stem (stride 8) gives 4 rows of SAM tokens, two [2, 1]-stride convs
    # merge them into one row of width/8 column tokens that keeps the width resolution; an auxiliary CTC head on those
    # columns gives every position a training signal. The low-res path (ViT → Resampler) stays, at 4 tokens.
    "quickstart": {
        "text_config": {
            "model_type": "qwen2",
            "hidden_size": 256,
            "intermediate_size": 768,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 4,
            "max_position_embeddings": 512,
            "rms_norm_eps": 1e-6,
            "tie_word_embeddings": False,
        },
        "vision_config": {**LINE_LOW_RES_VIEW, "hidden_size": 64, "intermediate_size": 128},
        "high_res_vision_config": {
            "model_type": "sam_vision_model",
            "hidden_size": 128,
            "output_channels": 128,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "mlp_dim": 384,
            "image_size": 640,  # the line canvas width; its height is high_res_line_height
            "patch_size": 8,
            "window_size": 4,
            "global_attn_indexes": [],  # windowed only: SAM's global attention with relative positions costs 4x a windowed block on 640 tokens
            "use_abs_pos": False,
            "initializer_range": 0.02,
        },
        "high_res_patch_embed": "conv",
        "high_res_stem_strides": [[2, 2], [2, 2], [2, 1]],  # 8 px rows, 4 px columns
        "high_res_line_height": 32,
        "high_res_downsample_channels": [128, 256],
        "high_res_downsample_strides": [[2, 1], [2, 1]],
        "ctc_loss_weight": 1.0,
        "ctc_decoding_weight": 0.5,
        "resampler_num_queries": 4,
        "resampler_num_heads": 4,
        "tokenizer_vocab_size": 1024,
    },
}


def _merged(base: dict, changes: dict) -> dict:
    """`base` with `changes` applied, nested dicts merged key by key."""
    out = copy.deepcopy(base)
    for key, value in changes.items():
        out[key] = _merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


# "tiny" with the line-reader options (conv stem, 32 × 64 line view → 16 column tokens, CTC head): tests.
PRESETS["tiny-line"] = _merged(
    PRESETS["tiny"],
    {
        "vision_config": {**LINE_LOW_RES_VIEW, "hidden_size": 32, "intermediate_size": 64},
        "high_res_vision_config": {
            "num_hidden_layers": 1,
            "image_size": 64,
            "patch_size": 8,
            "window_size": 4,
            "global_attn_indexes": [],
            "use_abs_pos": False,
        },
        "high_res_patch_embed": "conv",
        "high_res_stem_strides": [[2, 2], [2, 2], [2, 1]],
        "high_res_line_height": 32,
        "high_res_downsample_strides": [[2, 1], [2, 1]],
        "ctc_loss_weight": 1.0,
        "resampler_num_queries": 4,
        "tokenizer_vocab_size": 512,
    },
)

# The shipped reader (models/reader-mini): the quickstart's tower and LLM on an 800-px line canvas (200 columns) for
# lines of up to ~60 Latin / ~20 CJK characters, with a tokenizer for ~5,000 characters. Kept this small because on
# 2 CPU cores samples per second decide how well it reads after 2 hours (docs/training.md).
PRESETS["reader-mini"] = _merged(
    PRESETS["quickstart"],
    {
        "high_res_vision_config": {"image_size": 800},
        "tokenizer_vocab_size": 6400,  # 3,500 Simplified + their Taiwan forms + Latin, digits, punctuation, prompts
    },
)


def build_config(preset: str, vocab_size: int, image_token_id: int, **overrides) -> OcrMllmConfig:
    if preset not in PRESETS:
        raise ValueError(f"Unknown preset {preset!r}; choose from {sorted(PRESETS)}")
    settings = copy.deepcopy(PRESETS[preset])
    settings.pop("tokenizer_vocab_size", None)
    settings.update(overrides)
    text_config = settings.pop("text_config", None)
    if text_config is not None and not isinstance(text_config, dict):
        text_config = text_config.to_dict()
    if text_config is not None:
        text_config["vocab_size"] = vocab_size
    config = OcrMllmConfig(text_config=text_config, image_token_id=image_token_id, **settings)
    if text_config is None:
        config.text_config.vocab_size = vocab_size
    return config


def build_processor(
    tokenizer: PreTrainedTokenizerBase, config: OcrMllmConfig, **image_processor_kwargs
) -> OcrMllmProcessor:
    """A processor whose view sizes and image-token counts agree with `config`."""
    vision = config.vision_config
    image_processor = OcrMllmImageProcessor(
        size=vision.image_size,
        high_res_size=config.high_res_vision_config.image_size,
        high_res_line_height=config.high_res_line_height,
        image_mean=image_processor_kwargs.pop("image_mean", OPENAI_CLIP_MEAN),
        image_std=image_processor_kwargs.pop("image_std", OPENAI_CLIP_STD),
        high_res_image_mean=image_processor_kwargs.pop("high_res_image_mean", IMAGENET_MEAN),
        high_res_image_std=image_processor_kwargs.pop("high_res_image_std", IMAGENET_STD),
        **image_processor_kwargs,
    )
    return OcrMllmProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        image_token=config.image_token,
        num_high_res_tokens_per_view=config.num_high_res_tokens_per_view,
        num_low_res_tokens=config.num_low_res_tokens_per_image,
    )


def default_generation_config(tokenizer: PreTrainedTokenizerBase) -> GenerationConfig:
    stop_ids = [tokenizer.convert_tokens_to_ids(IM_END), tokenizer.convert_tokens_to_ids(ENDOFTEXT)]
    return GenerationConfig(
        eos_token_id=stop_ids,
        suppress_tokens=[tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)],  # the placeholder is never an answer
        pad_token_id=tokenizer.convert_tokens_to_ids(ENDOFTEXT),
        bos_token_id=None,
        do_sample=False,
        max_new_tokens=512,
    )


def save_model_folder(
    model: PreTrainedModel, processor: ProcessorMixin, output_dir: str | Path, max_shard_size: str = "5GB"
) -> Path:
    """Write a complete trust_remote_code folder: safetensors weights (sharded past `max_shard_size`), config
    (auto_map), generation config, tokenizer + chat template, processor config and the model's code files."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    model.generation_config = with_chat_stops(model.generation_config, processor.tokenizer)
    model.save_pretrained(output_dir, max_shard_size=max_shard_size)
    processor.save_pretrained(output_dir)
    missing = [
        name
        for name in (*MODEL_CODE_FILES, "config.json", "generation_config.json", "processor_config.json")
        if not (output_dir / name).exists()
    ]
    if missing:
        raise RuntimeError(f"Saved folder {output_dir} is incomplete, missing: {missing}")
    return output_dir


def with_chat_stops(
    generation_config: GenerationConfig | None, tokenizer: PreTrainedTokenizerBase
) -> GenerationConfig:
    """The given generation config (or our default) made to stop on <|im_end|> and <|endoftext|>, pad with
    <|endoftext|> and never emit the image placeholder; the caller's other settings are kept."""
    default = default_generation_config(tokenizer)
    if generation_config is None:
        return default
    merged = copy.deepcopy(generation_config)
    eos = merged.eos_token_id if isinstance(merged.eos_token_id, list) else [merged.eos_token_id]
    merged.eos_token_id = list(dict.fromkeys([e for e in eos if e is not None] + default.eos_token_id))
    if merged.pad_token_id is None:
        merged.pad_token_id = default.pad_token_id
    merged.suppress_tokens = list(dict.fromkeys((merged.suppress_tokens or []) + default.suppress_tokens))
    return merged


def _add_image_token(tokenizer: PreTrainedTokenizerBase) -> PreTrainedTokenizerBase:
    if IMAGE_TOKEN not in tokenizer.get_vocab():
        tokenizer.add_special_tokens({"additional_special_tokens": [IMAGE_TOKEN]}, replace_extra_special_tokens=False)
    if getattr(tokenizer, "image_token", None) is None:
        tokenizer.extra_special_tokens = {**(tokenizer.extra_special_tokens or {}), "image_token": IMAGE_TOKEN}
    if tokenizer.pad_token is None:
        tokenizer.pad_token = ENDOFTEXT if ENDOFTEXT in tokenizer.get_vocab() else tokenizer.eos_token
    from processing_ocr_mllm import CHAT_TEMPLATE

    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def build_tiny_folder(
    output_dir: str | Path,
    seed: int = 0,
    tokenizer: PreTrainedTokenizerBase | None = None,
    preset: str = "tiny",
    **overrides,
) -> Path:
    """Random weights at a size preset, with a small BPE vocabulary unless a tokenizer is given."""
    if tokenizer is None:
        vocab_size = PRESETS[preset].get("tokenizer_vocab_size") or 1024
        tokenizer = train_bpe_tokenizer(default_corpus(), vocab_size=vocab_size)
    config = build_config(
        preset, vocab_size=len(tokenizer), image_token_id=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN), **overrides
    )
    if config.ctc_loss_weight > 0:  # the turn's end is the LM's to predict; the CTC head reads the line only
        config.ctc_ignore_token_ids = [tokenizer.convert_tokens_to_ids(t) for t in (IM_END, ENDOFTEXT)] + list(
            tokenizer("\n", add_special_tokens=False)["input_ids"]
        )
    # the tokenizer's ids, so trainers need not "align" the config (TRL warns when it does)
    config.text_config.pad_token_id = tokenizer.pad_token_id
    config.text_config.eos_token_id = tokenizer.eos_token_id
    torch.manual_seed(seed)
    model = OcrMllmForConditionalGeneration(config)
    processor = build_processor(tokenizer, config)
    return save_model_folder(model, processor, output_dir)


def _load_state_dict_into(module: torch.nn.Module, state_dict: dict, what: str):
    result = module.load_state_dict(state_dict, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise ValueError(
            f"{what}: missing keys {result.missing_keys[:10]}{'…' if len(result.missing_keys) > 10 else ''}, "
            f"unexpected keys {result.unexpected_keys[:10]}{'…' if len(result.unexpected_keys) > 10 else ''}"
        )


def _high_res_parts(path: str):
    """(SamVisionConfig, encoder state dict, downsampler state dict or None) from a SAM or GOT-OCR2 checkpoint."""
    config = AutoConfig.from_pretrained(path)
    if config.model_type == "got_ocr2":
        from transformers import GotOcr2ForConditionalGeneration

        got = GotOcr2ForConditionalGeneration.from_pretrained(path, dtype=torch.float32)
        from transformers import SamVisionConfig

        fields = {k: v for k, v in config.vision_config.to_dict().items() if k != "model_type"}
        vision_config = SamVisionConfig(**fields)
        encoder = got.model.vision_tower.state_dict()
        projector = got.model.multi_modal_projector
        # GOT keeps Vary's net_2 / net_3 as conv_upsampler1/2; its linear maps to GOT's LLM and is not reused.
        downsampler = {
            "conv1.weight": projector.conv_upsampler1.weight.detach().clone(),
            "conv2.weight": projector.conv_upsampler2.weight.detach().clone(),
        }
        if projector.conv_upsampler1.bias is not None:
            logger.warning("GOT-OCR2 upsampler convs have biases; Vary's have none — biases dropped")
        return vision_config, encoder, downsampler
    if config.model_type == "sam":
        from transformers import SamModel

        sam = SamModel.from_pretrained(path, dtype=torch.float32)
        return config.vision_config, sam.vision_encoder.state_dict(), None
    if config.model_type == "sam_vision_model":
        from transformers import SamVisionModel

        sam = SamVisionModel.from_pretrained(path, dtype=torch.float32)
        return config, sam.vision_encoder.state_dict(), None
    raise ValueError(f"{path}: expected a SAM or GOT-OCR2 checkpoint, found model_type {config.model_type!r}")


def _low_res_parts(path: str):
    """(vision config, state dict) of a CLIP / SigLIP vision tower (full dual-encoder checkpoints are accepted)."""
    config = AutoConfig.from_pretrained(path)
    vision_config = getattr(config, "vision_config", config)
    if vision_config.model_type not in ("clip_vision_model", "siglip_vision_model", "siglip2_vision_model"):
        raise ValueError(
            f"{path}: expected a CLIP or SigLIP vision checkpoint, found {vision_config.model_type!r} "
            "(Qwen-VL visual weights: use scripts/convert_original_checkpoint.py --vit)"
        )
    # e.g. SiglipVisionModel: its from_pretrained also reads the vision half of a full SigLIP / CLIP checkpoint
    tower_class = type(AutoModel.from_config(vision_config))
    tower = tower_class.from_pretrained(path, dtype=torch.float32)
    return vision_config, tower.state_dict()


def build_from_parts(
    output_dir: str | Path,
    text_model: str,
    vision_model: str | None = None,
    high_res_model: str | None = None,
    preset: str = "original",
    high_res_projector_type: str = "mlp2x_gelu",
    dtype: torch.dtype = torch.float32,
    seed: int = 0,
) -> Path:
    """Assemble a model from pretrained parts; the Resampler and the high-res projector start fresh (and the
    downsampling convs too unless a GOT-OCR2 checkpoint provides Vary's)."""
    tokenizer = _add_image_token(AutoTokenizer.from_pretrained(text_model))
    language = AutoModelForCausalLM.from_pretrained(text_model, dtype=torch.float32)
    overrides = {"text_config": language.config.to_dict(), "high_res_projector_type": high_res_projector_type}
    low_res_state = high_res_state = downsampler_state = None
    if vision_model is not None:
        vision_config, low_res_state = _low_res_parts(vision_model)
        overrides["vision_config"] = vision_config.to_dict()
        if vision_config.model_type == "clip_vision_model":
            overrides["low_res_feature_select_strategy"] = "default"
    if high_res_model is not None:
        high_res_config, high_res_state, downsampler_state = _high_res_parts(high_res_model)
        overrides["high_res_vision_config"] = high_res_config.to_dict()
        if downsampler_state is not None:  # GOT's convs fix the channels (Vary: 256 → 512 → 1024)
            overrides["high_res_downsample_channels"] = [
                downsampler_state["conv1.weight"].shape[0],
                downsampler_state["conv2.weight"].shape[0],
            ]
    vocab_size = max(language.config.vocab_size, len(tokenizer))
    config = build_config(
        preset, vocab_size=vocab_size, image_token_id=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN), **overrides
    )
    torch.manual_seed(seed)
    model = OcrMllmForConditionalGeneration(config)

    if len(tokenizer) > language.config.vocab_size:
        language.resize_token_embeddings(len(tokenizer), mean_resizing=True)
    _load_state_dict_into(model.model.language_model, language.model.state_dict(), f"LLM from {text_model}")
    _load_state_dict_into(model.lm_head, language.get_output_embeddings().state_dict(), f"lm_head from {text_model}")
    if low_res_state is not None:
        _load_state_dict_into(model.model.vision_tower, low_res_state, f"low-res tower from {vision_model}")
    if high_res_state is not None:
        _load_state_dict_into(
            model.model.high_res_vision_tower, high_res_state, f"high-res tower from {high_res_model}"
        )
    if downsampler_state is not None:
        _load_state_dict_into(
            model.model.high_res_downsampler, downsampler_state, f"downsampler from {high_res_model}"
        )

    image_processor_kwargs = {}
    if vision_model is not None:
        try:
            from transformers import AutoImageProcessor

            source_processor = AutoImageProcessor.from_pretrained(vision_model)
            image_processor_kwargs = {
                "image_mean": source_processor.image_mean,
                "image_std": source_processor.image_std,
            }
        except (OSError, ValueError):
            logger.warning(
                "No image processor config in %s: using OpenAI-CLIP mean/std for the low-res view", vision_model
            )
    model = model.to(dtype)
    processor = build_processor(tokenizer, config, **image_processor_kwargs)
    return save_model_folder(model, processor, output_dir)
