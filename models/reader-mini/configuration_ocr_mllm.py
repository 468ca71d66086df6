# Copyright 2026 The OCR-MLLM authors. Licensed under the Apache License, Version 2.0.
"""Configuration of OCR-MLLM: a SAM ViT-B (Vary) high-res branch and a Qwen-VL-style ViT + Resampler low-res branch
feeding a causal LM. This file is copied next to the weights by `save_pretrained` and loaded with
`trust_remote_code=True`, so it imports nothing but transformers."""

import math

from transformers.configuration_utils import PreTrainedConfig, SubConfigSpec
from transformers.models.auto import CONFIG_MAPPING, AutoConfig


HIGH_RES_PROJECTOR_TYPES = "linear | mlp<N>x_gelu (e.g. mlp2x_gelu)"

# Written into config.json so every Auto class finds the code files that save_pretrained copies next to the weights
# (register_for_auto_class records only one Auto class per Python class).
AUTO_MAP = {
    "AutoConfig": "configuration_ocr_mllm.OcrMllmConfig",
    "AutoModel": "modeling_ocr_mllm.OcrMllmModel",
    "AutoModelForImageTextToText": "modeling_ocr_mllm.OcrMllmForConditionalGeneration",
    "AutoModelForCausalLM": "modeling_ocr_mllm.OcrMllmForConditionalGeneration",
}


class OcrMllmVisionConfig(PreTrainedConfig):
    r"""
    The low-resolution tower: a Qwen-VL-style ViT (448 px, patch 14, no CLS token, learned absolute position
    embedding stored on a `position_embedding_grid_size`² grid and bicubically interpolated to the patch grid,
    pre-LN blocks, no pooling or post-LN). Defaults are Qwen-VL's ViT-bigG (width 1664, 48 layers).
    """

    model_type = "ocr_mllm_vision"
    base_config_key = "vision_config"

    hidden_size: int = 1664
    intermediate_size: int = 8192
    num_hidden_layers: int = 48
    num_attention_heads: int = 16
    num_channels: int = 3
    image_size: int = 448
    patch_size: int = 14
    position_embedding_grid_size: int = 16
    hidden_act: str = "gelu"
    layer_norm_eps: float = 1e-6
    attention_dropout: float = 0.0
    initializer_range: float = 0.02

    def __post_init__(self, **kwargs):
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"vision_config.hidden_size ({self.hidden_size}) must be divisible by num_attention_heads "
                f"({self.num_attention_heads})"
            )
        if self.image_size % self.patch_size:
            raise ValueError(
                f"vision_config.image_size ({self.image_size}) must be a multiple of patch_size ({self.patch_size})"
            )
        super().__post_init__(**kwargs)


def _qwen14b_text_config() -> dict:
    # The original system's LLM (Qwen-14B) expressed as a transformers Qwen2 config: q/k/v with bias, no GQA, untied.
    return {
        "model_type": "qwen2",
        "vocab_size": 152064,
        "hidden_size": 5120,
        "intermediate_size": 13696,
        "num_hidden_layers": 40,
        "num_attention_heads": 40,
        "num_key_value_heads": 40,
        "max_position_embeddings": 8192,
        "rms_norm_eps": 1e-6,
        "rope_theta": 10000.0,
        "tie_word_embeddings": False,
    }


class OcrMllmConfig(PreTrainedConfig):
    r"""
    Args:
        text_config: any causal-LM config (dict or config; default: a Qwen2 config shaped like Qwen-14B).
        vision_config: the low-res tower — `OcrMllmVisionConfig` (Qwen-VL ViT) or a CLIP / SigLIP vision config.
        high_res_vision_config: the high-res tower — a `SamVisionConfig` (ViT-B as Vary uses it: 1024 px, patch 16,
            windowed attention with global blocks 2/5/8/11, relative positions, neck to `output_channels`).
        high_res_downsample_channels: output channels of the stride-2 convs after the SAM neck (Vary's net_2, net_3).
        high_res_projector_type: `linear` or `mlp<N>x_gelu` from the last conv's channels to the LLM width.
        resampler_num_queries: learned queries of the low-res Resampler (a square number; its sin-cos grid side).
        resampler_num_heads: heads of the Resampler's cross-attention (default: text hidden size // 128).
        low_res_feature_select_strategy: `full` keeps every token of the low-res tower, `default` drops a leading
            CLS token (CLIP).
        standardize_image_features: standardise every image token (both views) with batch statistics — running
            averages at inference, like `BatchNorm1d` without an affine part — before they enter the LLM. For models
            whose encoders and LLM start from random weights (the CPU quickstart): random towers give every token of an
            image nearly the same vector (the blank background dominates), which a random LLM is slow to look past
            (measured in docs/training.md: a 3-character reading task learned within 300 steps standardised, not at
            all without). Off for the original architecture and pretrained parts.
        high_res_patch_embed: `linear` (SAM's 16×16 patch projection, the original) or `conv` — a stem of 3×3 stride-2
            convolutions (BatchNorm + GELU between) with the same total stride as `patch_size`, for towers trained from
            scratch: small recognisers learn far faster from a convolutional stem than from a linear patch projection
            (HTR-VT, SVTR; docs/training.md). Any input size.
        high_res_stem_strides: (height, width) stride of each conv of the `conv` stem (default: log2(patch_size) convs of
            2×2). Line readers use `[[2, 2], [2, 2], [2, 1]]`: 8 px rows, 4 px columns — text recognisers need
            about two columns per character (measured in docs/training.md).
        high_res_line_height: when set, the high-res view is one text line of `(high_res_line_height,
            high_res_vision_config.image_size)` pixels (height, width) instead of a square: the image is resized to
            this height keeping its aspect ratio and placed left-aligned on the canvas. Needs the `conv` stem and no
            absolute position embedding in the SAM tower.
        high_res_downsample_strides: (height, width) stride of each downsample conv (default 2×2 each, Vary's). Lines
            use `[2, 1]` strides to merge the rows into one row of column tokens that keeps the width resolution.
        ctc_loss_weight: weight of an auxiliary CTC loss from a linear head on the high-res column tokens (after the
            projector) to the vocabulary plus a blank (id `vocab_size`), added to the LM loss in training. Needs line
            geometry (one row of high-res tokens). 0 (the original): no CTC head.
        ctc_ignore_token_ids: label ids left out of the CTC targets (the turn's closing `<|im_end|>` and newline).
        ctc_decoding_weight: λ of joint CTC/attention decoding in `generate` (Watanabe et al. 2017, as ESPnet's speech
            recognisers decode): each candidate token is scored `(1 - λ) log p_LLM + λ Δ log p_CTC-prefix`, so the
            LLM's answer stays consistent with what the CTC head sees in the line (and cannot loop). 0: the LLM alone.
        image_token / image_token_id: the placeholder the processor expands and the model fills with image features.
    """

    model_type = "ocr_mllm"
    sub_configs_defaults = {
        "text_config": SubConfigSpec(config_class=AutoConfig, model_type="qwen2"),
        "vision_config": SubConfigSpec(config_class=AutoConfig, model_type="clip_vision_model"),
        "high_res_vision_config": SubConfigSpec(config_class=AutoConfig, model_type="sam_vision_model"),
    }
    attribute_map = {"image_token_index": "image_token_id"}

    text_config: dict | PreTrainedConfig | None = None
    vision_config: dict | PreTrainedConfig | None = None
    high_res_vision_config: dict | PreTrainedConfig | None = None
    high_res_downsample_channels: list[int] | tuple[int, ...] = (512, 1024)
    high_res_projector_type: str = "mlp2x_gelu"
    resampler_num_queries: int = 256
    resampler_num_heads: int | None = None
    resampler_layer_norm_eps: float = 1e-6
    low_res_feature_select_strategy: str = "full"
    standardize_image_features: bool = False
    high_res_patch_embed: str = "linear"
    high_res_stem_strides: list | None = None
    high_res_line_height: int | None = None
    high_res_downsample_strides: list | None = None
    ctc_loss_weight: float = 0.0
    ctc_ignore_token_ids: list[int] | tuple[int, ...] = ()
    ctc_decoding_weight: float = 0.0
    image_token: str = "<image>"
    image_token_id: int = 151851
    initializer_range: float = 0.02
    tie_word_embeddings: bool = False

    def __post_init__(self, **kwargs):
        # Our own ViT is not in transformers' CONFIG_MAPPING, so build it here; CLIP/SigLIP go through AutoConfig.
        if self.vision_config is None:
            self.vision_config = OcrMllmVisionConfig()
        elif isinstance(self.vision_config, dict):
            vision_type = self.vision_config.get("model_type", OcrMllmVisionConfig.model_type)
            if vision_type == OcrMllmVisionConfig.model_type:
                self.vision_config = OcrMllmVisionConfig(**self.vision_config)
            elif vision_type in CONFIG_MAPPING:
                self.vision_config = CONFIG_MAPPING[vision_type](**self.vision_config)
            else:
                raise ValueError(f"Unknown vision_config.model_type {vision_type!r}")
        if self.text_config is None:
            self.text_config = _qwen14b_text_config()
        # SamVisionConfig's default initializer_range (1e-10) suits loading pretrained SAM weights only: a tower built
        # from scratch with it starts dead (outputs ~1e-20, no gradient). Use ours unless one is given.
        if self.high_res_vision_config is None:
            self.high_res_vision_config = {"initializer_range": self.initializer_range}
        elif isinstance(self.high_res_vision_config, dict):
            self.high_res_vision_config = {"initializer_range": self.initializer_range, **self.high_res_vision_config}
        self.high_res_downsample_channels = list(self.high_res_downsample_channels)
        if self.high_res_downsample_strides is not None:
            self.high_res_downsample_strides = [
                [int(s), int(s)] if isinstance(s, int) else [int(v) for v in s]
                for s in self.high_res_downsample_strides
            ]
        self.ctc_ignore_token_ids = [int(i) for i in self.ctc_ignore_token_ids]
        super().__post_init__(**kwargs)
        auto_map = dict(getattr(self, "auto_map", None) or {})
        for auto_class, reference in AUTO_MAP.items():
            auto_map.setdefault(auto_class, reference)
        self.auto_map = auto_map
        self._validate_ocr_mllm()

    def _validate_ocr_mllm(self):
        grid = int(round(self.resampler_num_queries**0.5))
        if grid * grid != self.resampler_num_queries:
            raise ValueError(f"resampler_num_queries must be a square number, got {self.resampler_num_queries}")
        if not _parse_projector_type(self.high_res_projector_type):
            raise ValueError(
                f"high_res_projector_type must be {HIGH_RES_PROJECTOR_TYPES}, got {self.high_res_projector_type!r}"
            )
        if self.low_res_feature_select_strategy not in ("full", "default"):
            raise ValueError("low_res_feature_select_strategy must be 'full' or 'default'")
        if self.text_config.hidden_size % self.resampler_heads:
            raise ValueError(
                f"text hidden size {self.text_config.hidden_size} is not divisible by resampler_num_heads {self.resampler_heads}"
            )
        if self.high_res_patch_embed not in ("linear", "conv"):
            raise ValueError(f"high_res_patch_embed must be 'linear' or 'conv', got {self.high_res_patch_embed!r}")
        if self.high_res_patch_embed == "conv" and self.high_res_stem_strides is None:
            patch = self.high_res_vision_config.patch_size
            if patch < 2 or patch & (patch - 1):
                raise ValueError(f"the conv stem needs a power-of-two high-res patch_size, got {patch}")
        if self.high_res_stem_strides is not None:
            self.high_res_stem_strides = [[int(v) for v in s] for s in self.high_res_stem_strides]
            if self.high_res_patch_embed != "conv" or any(
                len(s) != 2 or min(s) < 1 for s in self.high_res_stem_strides
            ):
                raise ValueError(
                    "high_res_stem_strides needs high_res_patch_embed='conv' and (height, width) strides >= 1"
                )
        if self.high_res_downsample_strides is not None and (
            len(self.high_res_downsample_strides) != len(self.high_res_downsample_channels)
            or any(len(s) != 2 or min(s) < 1 for s in self.high_res_downsample_strides)
        ):
            raise ValueError(
                "high_res_downsample_strides needs one (height, width) stride >= 1 per downsample conv, got "
                f"{self.high_res_downsample_strides} for {len(self.high_res_downsample_channels)} convs"
            )
        if self.high_res_line_height is not None:
            if self.high_res_patch_embed != "conv":
                raise ValueError("high_res_line_height (line views) needs high_res_patch_embed='conv'")
            if getattr(self.high_res_vision_config, "use_abs_pos", False):
                raise ValueError("high_res_line_height (line views) needs high_res_vision_config.use_abs_pos=False")
        rows, columns = self.high_res_grid_shape
        if rows < 1 or columns < 1:
            raise ValueError("high_res_vision_config is too small for the stride-2 downsampling convs")
        if self.ctc_loss_weight < 0:
            raise ValueError(f"ctc_loss_weight must be >= 0, got {self.ctc_loss_weight}")
        if not 0.0 <= self.ctc_decoding_weight <= 1.0:
            raise ValueError(f"ctc_decoding_weight must be in [0, 1], got {self.ctc_decoding_weight}")
        if self.ctc_loss_weight > 0 and rows != 1:
            raise ValueError(f"the CTC head reads one row of high-res tokens; this geometry gives {rows} rows")

    @property
    def resampler_heads(self) -> int:
        return self.resampler_num_heads or max(1, self.text_config.hidden_size // 128)

    @property
    def high_res_view_size(self) -> tuple[int, int]:
        """(height, width) of a high-res view: a square (1024, 1024) or a line (line height, image_size)."""
        width = self.high_res_vision_config.image_size
        return (self.high_res_line_height or width, width)

    @property
    def high_res_grid_shape(self) -> tuple[int, int]:
        """(rows, columns) of high-res tokens per view: SAM patch grid, divided by each downsample conv's stride
        (1024/16 = 64 → 32 → 16 for Vary; a 32×640 line with patch 8 and [2,1] strides: 4×80 → 2×80 → 1×80)."""
        patch = self.high_res_vision_config.patch_size
        patch_h, patch_w = (patch, patch)
        if self.high_res_stem_strides:
            patch_h = math.prod(s[0] for s in self.high_res_stem_strides)
            patch_w = math.prod(s[1] for s in self.high_res_stem_strides)
        height, width = self.high_res_view_size
        rows, columns = -(-height // patch_h), -(-width // patch_w)
        for stride_h, stride_w in self.high_res_downsample_strides or [[2, 2]] * len(
            self.high_res_downsample_channels
        ):
            rows, columns = -(-rows // stride_h), -(-columns // stride_w)  # ceil: kernel 3, padding 1
        return rows, columns

    @property
    def high_res_grid_size(self) -> int:
        """Side of a square high-res token grid (16 at Vary's 1024 px)."""
        rows, columns = self.high_res_grid_shape
        if rows != columns:
            raise ValueError(f"the high-res token grid is {rows}×{columns}, not square; use high_res_grid_shape")
        return rows

    @property
    def num_high_res_tokens_per_view(self) -> int:
        rows, columns = self.high_res_grid_shape
        return rows * columns

    @property
    def num_low_res_tokens_per_image(self) -> int:
        return self.resampler_num_queries

    @property
    def image_seq_length(self) -> int:
        """Image tokens for one image without tiling (512 at the default config: 256 high-res first, then 256)."""
        return self.num_high_res_tokens_per_view + self.num_low_res_tokens_per_image

    def num_image_tokens(self, num_high_res_views: int = 1) -> int:
        return num_high_res_views * self.num_high_res_tokens_per_view + self.num_low_res_tokens_per_image


def _parse_projector_type(projector_type: str):
    """'linear' → 1 layer, 'mlp<N>x_gelu' → N layers; None for anything else."""
    if projector_type == "linear":
        return 1
    if projector_type.startswith("mlp") and projector_type.endswith("x_gelu"):
        depth = projector_type[len("mlp") : -len("x_gelu")]
        if depth.isdigit() and int(depth) >= 1:
            return int(depth)
    return None


OcrMllmConfig.register_for_auto_class()

__all__ = ["OcrMllmConfig", "OcrMllmVisionConfig"]
