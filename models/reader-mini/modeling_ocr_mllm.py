# Copyright 2026 The OCR-MLLM authors. Licensed under the Apache License, Version 2.0.
"""OCR-MLLM: one image goes two ways —

    high_res_pixel_values (views, 3, 1024, 1024) → SAM ViT-B + neck → 2 stride-2 convs → (views, 256, 1024) → MLP → (views, 256, D)
    pixel_values          (images, 3, 448, 448)  → Qwen-VL ViT (1024 patches) → Resampler (256 queries) → (images, 256, D)

and per image the LLM sees [high-res tokens of every view ; low-res tokens] in place of the image placeholders.
Copied next to the weights by `save_pretrained`; loaded with `trust_remote_code=True`.
"""

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoModel, GenerationMixin, LogitsProcessor, LogitsProcessorList, PreTrainedModel
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.cache_utils import Cache
from transformers.generation.utils import GenerateOutput
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import BaseModelOutputWithPast, BaseModelOutputWithPooling, CausalLMOutputWithPast
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.models.sam.modeling_sam import SamVisionAttention, SamVisionEncoder
from transformers.utils import torch_compilable_check


try:  # as a trust_remote_code module (package-relative) ...
    from .configuration_ocr_mllm import OcrMllmConfig, OcrMllmVisionConfig, _parse_projector_type
except ImportError:  # ... or imported from the repository root
    from configuration_ocr_mllm import OcrMllmConfig, OcrMllmVisionConfig, _parse_projector_type


@dataclass
class OcrMllmModelOutputWithPast(BaseModelOutputWithPast):
    r"""
    image_hidden_states (`torch.FloatTensor` of shape `(num_image_tokens, hidden_size)`, *optional*):
        The image features that replaced the image placeholders.
    image_outputs (`BaseModelOutputWithPooling`, *optional*):
        `get_image_features`' output: `pooler_output` holds each image's `(tokens_i, hidden_size)` features.
    """

    image_hidden_states: torch.FloatTensor | None = None
    image_outputs: BaseModelOutputWithPooling | None = None


@dataclass
class OcrMllmCausalLMOutputWithPast(CausalLMOutputWithPast):
    r"""
    image_hidden_states (`torch.FloatTensor` of shape `(num_image_tokens, hidden_size)`, *optional*):
        The image features that replaced the image placeholders.
    image_outputs (`BaseModelOutputWithPooling`, *optional*):
        `get_image_features`' output: `pooler_output` holds each image's `(tokens_i, hidden_size)` features.
    ctc_loss (`torch.FloatTensor`, *optional*):
        The auxiliary CTC loss (unweighted; already added to `loss` with `config.ctc_loss_weight`).
    """

    image_hidden_states: torch.FloatTensor | None = None
    image_outputs: BaseModelOutputWithPooling | None = None
    ctc_loss: torch.FloatTensor | None = None


def eager_attention_forward(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float,
    dropout: float = 0.0,
    **kwargs,
) -> tuple[torch.Tensor, torch.Tensor]:
    attn_weights = torch.matmul(query, key.transpose(-1, -2)) * scaling
    if attention_mask is not None:
        attn_weights = attn_weights + attention_mask
    attn_weights = F.softmax(attn_weights, dim=-1, dtype=torch.float32).to(query.dtype)
    attn_weights = F.dropout(attn_weights, p=dropout, training=module.training)
    attn_output = torch.matmul(attn_weights, value).transpose(1, 2).contiguous()
    return attn_output, attn_weights


def interpolate_grid_embedding(pos: torch.Tensor, num_tokens: int) -> torch.Tensor:
    """Bicubically resize a (grid*grid, dim) position table to (num_tokens, dim), num_tokens a square (Qwen-VL's get_abs_pos)."""
    src, tgt = int(math.isqrt(pos.shape[0])), int(math.isqrt(num_tokens))
    if tgt * tgt != num_tokens:
        raise ValueError(f"Cannot place {num_tokens} tokens on a square grid")
    if src == tgt:
        return pos
    grid = pos.float().reshape(1, src, src, -1).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, size=(tgt, tgt), mode="bicubic", align_corners=False)
    return grid.permute(0, 2, 3, 1).reshape(tgt * tgt, -1).to(pos.dtype)


def sincos_2d_position_embedding(dim: int, grid_size: int) -> torch.Tensor:
    """MAE-style fixed 2-D sin-cos table of shape (grid_size², dim): half the channels encode the row, half the column."""
    if dim % 4:
        raise ValueError(f"sin-cos position embedding needs a dim divisible by 4, got {dim}")
    omega = 1.0 / 10000 ** (torch.arange(dim // 4, dtype=torch.float64) / (dim / 4.0))
    rows, cols = torch.meshgrid(
        torch.arange(grid_size, dtype=torch.float64), torch.arange(grid_size, dtype=torch.float64), indexing="ij"
    )

    def encode(positions: torch.Tensor) -> torch.Tensor:  # (grid²,) → (grid², dim/2)
        angles = positions.reshape(-1)[:, None] * omega[None, :]
        return torch.cat([angles.sin(), angles.cos()], dim=1)

    # MAE's grid is built as meshgrid(w, h), so the first half encodes the column index.
    return torch.cat([encode(cols), encode(rows)], dim=1).float()


# --------------------------------------------------------------------------------------------------------------------
# Low-res tower: Qwen-VL-style ViT
# --------------------------------------------------------------------------------------------------------------------
class OcrMllmVisionAttention(nn.Module):
    def __init__(self, config: OcrMllmVisionConfig):
        super().__init__()
        self.config = config
        self.num_heads = config.num_attention_heads
        self.head_dim = config.hidden_size // config.num_attention_heads
        self.scale = self.head_dim**-0.5
        self.is_causal = False
        self.qkv = nn.Linear(config.hidden_size, 3 * config.hidden_size)
        self.out_proj = nn.Linear(config.hidden_size, config.hidden_size)

    def forward(self, hidden_states: torch.Tensor, **kwargs) -> torch.Tensor:
        batch, seq, _ = hidden_states.shape
        # (batch, seq, 3 * hidden) → 3 × (batch, heads, seq, head_dim)
        qkv = self.qkv(hidden_states).view(batch, seq, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        query, key, value = qkv.unbind(0)
        attention_interface: Callable = ALL_ATTENTION_FUNCTIONS.get_interface(
            self.config._attn_implementation, eager_attention_forward
        )
        attn_output, _ = attention_interface(
            self,
            query,
            key,
            value,
            None,
            is_causal=False,
            scaling=self.scale,
            dropout=self.config.attention_dropout if self.training else 0.0,
        )
        return self.out_proj(attn_output.reshape(batch, seq, -1))


class OcrMllmVisionMLP(nn.Module):
    def __init__(self, config: OcrMllmVisionConfig):
        super().__init__()
        self.fc1 = nn.Linear(config.hidden_size, config.intermediate_size)
        self.act = ACT2FN[config.hidden_act]
        self.fc2 = nn.Linear(config.intermediate_size, config.hidden_size)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(hidden_states)))


class OcrMllmVisionEncoderLayer(GradientCheckpointingLayer):
    def __init__(self, config: OcrMllmVisionConfig):
        super().__init__()
        self.layer_norm1 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.self_attn = OcrMllmVisionAttention(config)
        self.layer_norm2 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.mlp = OcrMllmVisionMLP(config)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        hidden_states = hidden_states + self.self_attn(self.layer_norm1(hidden_states))
        return hidden_states + self.mlp(self.layer_norm2(hidden_states))


class OcrMllmVisionModel(nn.Module):
    """Qwen-VL's visual encoder without its attention pool / post-LN / projection: returns the last layer's patches."""

    def __init__(self, config: OcrMllmVisionConfig):
        super().__init__()
        self.config = config
        self.patch_embedding = nn.Conv2d(
            config.num_channels,
            config.hidden_size,
            kernel_size=config.patch_size,
            stride=config.patch_size,
            bias=False,
        )
        self.position_embedding = nn.Parameter(torch.zeros(config.position_embedding_grid_size**2, config.hidden_size))
        self.pre_layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.layers = nn.ModuleList([OcrMllmVisionEncoderLayer(config) for _ in range(config.num_hidden_layers)])

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        dtype = self.patch_embedding.weight.dtype
        patches = self.patch_embedding(pixel_values.to(dtype))  # (batch, width, grid, grid)
        hidden_states = patches.flatten(2).transpose(1, 2)  # (batch, grid², width)
        hidden_states = hidden_states + interpolate_grid_embedding(self.position_embedding, hidden_states.shape[1])
        hidden_states = self.pre_layernorm(hidden_states)
        for layer in self.layers:
            hidden_states = layer(hidden_states)
        return hidden_states  # (batch, grid², width)


# --------------------------------------------------------------------------------------------------------------------
# Resampler: 256 learned queries cross-attend to the low-res patches
# --------------------------------------------------------------------------------------------------------------------
class OcrMllmResamplerAttention(nn.Module):
    def __init__(self, config: OcrMllmConfig, embed_dim: int):
        super().__init__()
        self.config = config
        self.num_heads = config.resampler_heads
        self.head_dim = embed_dim // self.num_heads
        self.scale = self.head_dim**-0.5
        self.is_causal = False
        self.q_proj = nn.Linear(embed_dim, embed_dim)
        self.k_proj = nn.Linear(embed_dim, embed_dim)
        self.v_proj = nn.Linear(embed_dim, embed_dim)
        self.out_proj = nn.Linear(embed_dim, embed_dim)

    def forward(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
        batch, num_queries, _ = query.shape
        # (batch, len, dim) → (batch, heads, len, head_dim)
        query = self.q_proj(query).view(batch, num_queries, self.num_heads, self.head_dim).transpose(1, 2)
        key = self.k_proj(key).view(batch, key.shape[1], self.num_heads, self.head_dim).transpose(1, 2)
        value = self.v_proj(value).view(batch, value.shape[1], self.num_heads, self.head_dim).transpose(1, 2)
        attention_interface: Callable = ALL_ATTENTION_FUNCTIONS.get_interface(
            self.config._attn_implementation, eager_attention_forward
        )
        attn_output, _ = attention_interface(self, query, key, value, None, is_causal=False, scaling=self.scale)
        return self.out_proj(attn_output.reshape(batch, num_queries, -1))


class OcrMllmResampler(nn.Module):
    """Qwen-VL's Resampler (one cross-attention layer, no residual, no MLP) plus the output LayerNorm."""

    def __init__(self, config: OcrMllmConfig, kv_dim: int):
        super().__init__()
        embed_dim = config.text_config.hidden_size
        num_queries = config.resampler_num_queries
        eps = config.resampler_layer_norm_eps
        self.query = nn.Parameter(torch.zeros(num_queries, embed_dim))
        # Fixed 2-D sin-cos table: a buffer (never trained, as intended by Qwen-VL), but kept in the state dict so
        # converted checkpoints — whose pretraining did update it — load exactly.
        self.register_buffer("pos_embed", torch.zeros(num_queries, embed_dim), persistent=True)
        self.kv_proj = nn.Linear(kv_dim, embed_dim, bias=False) if kv_dim != embed_dim else nn.Identity()
        self.attn = OcrMllmResamplerAttention(config, embed_dim)
        self.ln_q = nn.LayerNorm(embed_dim, eps=eps)
        self.ln_kv = nn.LayerNorm(embed_dim, eps=eps)
        self.ln_post = nn.LayerNorm(embed_dim, eps=eps)

    def forward(self, image_embeds: torch.Tensor) -> torch.Tensor:
        kv = self.ln_kv(self.kv_proj(image_embeds))  # (batch, patches, D)
        key_pos = interpolate_grid_embedding(self.pos_embed, kv.shape[1]).to(kv.dtype)  # (patches, D)
        query = (self.ln_q(self.query) + self.pos_embed).unsqueeze(0).expand(kv.shape[0], -1, -1)  # (batch, Q, D)
        return self.ln_post(self.attn(query, kv + key_pos, kv))  # (batch, Q, D)


# --------------------------------------------------------------------------------------------------------------------
# High-res path after the SAM tower: Vary's two stride-2 convs, then the projector
# --------------------------------------------------------------------------------------------------------------------
class OcrMllmConvStem(nn.Module):
    """A convolutional patch embedding for SAM towers trained from scratch: 3×3 convs (BatchNorm + GELU between) of
    `strides` (default log2(patch_size) convs of 2×2), (views, 3, H, W) → (views, rows, columns, hidden) as SAM's
    patch embedding returns. Channels grow to `hidden_size` in the last conv (hidden/4 → hidden/2 → hidden)."""

    def __init__(self, num_channels: int, hidden_size: int, patch_size: int, strides: list[list[int]] | None = None):
        super().__init__()
        strides = strides or [[2, 2]] * int(math.log2(patch_size))
        num_convs = len(strides)
        widths = [max(16, hidden_size // 2 ** (num_convs - 1 - index)) for index in range(num_convs)]
        widths[-1] = hidden_size
        layers, previous = [], num_channels
        for index, (width, stride) in enumerate(zip(widths, strides)):
            layers.append(nn.Conv2d(previous, width, kernel_size=3, stride=tuple(stride), padding=1, bias=False))
            layers.append(nn.BatchNorm2d(width))
            if index < num_convs - 1:
                layers.append(nn.GELU())
            previous = width
        self.layers = nn.Sequential(*layers)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.layers(pixel_values).permute(0, 2, 3, 1)  # (views, H/patch, W/patch, hidden)


class OcrMllmHighResDownsampler(nn.Module):
    """Vary's net_2 / net_3: (views, 256, 64, 64) → (views, 512, 32, 32) → (views, 1024, 16, 16), no norm in between.
    `strides` ((height, width) per conv, default 2×2) lets a line view merge its rows and keep its columns."""

    def __init__(self, in_channels: int, channels: list[int], strides: list[list[int]] | None = None):
        super().__init__()
        strides = strides or [[2, 2]] * len(channels)
        convs, previous = [], in_channels
        for out_channels, stride in zip(channels, strides):
            convs.append(nn.Conv2d(previous, out_channels, kernel_size=3, stride=tuple(stride), padding=1, bias=False))
            previous = out_channels
        # conv1, conv2, ... as named attributes for readable state-dict keys
        for index, conv in enumerate(convs, start=1):
            self.add_module(f"conv{index}", conv)
        self.num_convs = len(convs)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        for index in range(1, self.num_convs + 1):
            hidden_states = getattr(self, f"conv{index}")(hidden_states)
        return hidden_states


class OcrMllmHighResProjector(nn.Module):
    """LLaVA's `linear` / `mlp<N>x_gelu` projector from the last conv's channels to the LLM width."""

    def __init__(self, projector_type: str, in_dim: int, out_dim: int):
        super().__init__()
        depth = _parse_projector_type(projector_type)
        modules = [nn.Linear(in_dim, out_dim)]
        for _ in range(depth - 1):
            modules += [nn.GELU(), nn.Linear(out_dim, out_dim)]
        self.layers = nn.Sequential(*modules)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.layers(hidden_states)


# --------------------------------------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------------------------------------
class OcrMllmPreTrainedModel(PreTrainedModel):
    config: OcrMllmConfig
    config_class = OcrMllmConfig
    base_model_prefix = "model"
    input_modalities = ("image", "text")
    supports_gradient_checkpointing = True
    _no_split_modules = ["OcrMllmVisionEncoderLayer", "OcrMllmResampler", "SamVisionLayer"]
    _skip_keys_device_placement = "cache"
    _supports_flash_attn = True
    _supports_sdpa = True
    _supports_flex_attn = True
    _supports_attention_backend = True
    _can_compile_fullgraph = False

    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        std = self.config.initializer_range
        if isinstance(module, OcrMllmVisionModel):
            init.normal_(module.position_embedding, std=std)
        elif isinstance(module, OcrMllmResampler):
            init.trunc_normal_(module.query, std=0.02)
            grid = int(math.isqrt(module.pos_embed.shape[0]))
            init.copy_(module.pos_embed, sincos_2d_position_embedding(module.pos_embed.shape[1], grid))
        elif isinstance(module, SamVisionAttention) and module.use_rel_pos:
            init.zeros_(module.rel_pos_h)
            init.zeros_(module.rel_pos_w)
        elif isinstance(module, SamVisionEncoder) and module.pos_embed is not None:
            init.zeros_(module.pos_embed)


class OcrMllmModel(OcrMllmPreTrainedModel):
    def __init__(self, config: OcrMllmConfig):
        super().__init__(config)
        text_hidden = config.text_config.hidden_size

        # compare model_type, not classes: trust_remote_code may load the config and this file from different module copies
        if config.vision_config.model_type == OcrMllmVisionConfig.model_type:
            # a plain module: it reads the attention kernel from its config, which PreTrainedModel sets only on the top
            if config.vision_config._attn_implementation is None:
                config.vision_config._attn_implementation = config._attn_implementation
            self.vision_tower = OcrMllmVisionModel(config.vision_config)
        else:
            self.vision_tower = AutoModel.from_config(config.vision_config)
        self.resampler = OcrMllmResampler(config, kv_dim=config.vision_config.hidden_size)

        # SAM's attention has only eager/sdpa kernels (its relative positions are an additive bias).
        high_res_config = config.high_res_vision_config
        if high_res_config._attn_implementation not in ("eager", "sdpa"):
            high_res_config._attn_implementation = "sdpa"
        self.high_res_vision_tower = SamVisionEncoder(high_res_config)
        if config.high_res_patch_embed == "conv":
            self.high_res_vision_tower.patch_embed = OcrMllmConvStem(
                high_res_config.num_channels,
                high_res_config.hidden_size,
                high_res_config.patch_size,
                config.high_res_stem_strides,
            )
        self.high_res_downsampler = OcrMllmHighResDownsampler(
            high_res_config.output_channels, config.high_res_downsample_channels, config.high_res_downsample_strides
        )
        self.high_res_projector = OcrMllmHighResProjector(
            config.high_res_projector_type, config.high_res_downsample_channels[-1], text_hidden
        )
        self.image_feature_norm = (
            nn.BatchNorm1d(text_hidden, affine=False) if config.standardize_image_features else None
        )

        self.language_model = AutoModel.from_config(config.text_config)
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.language_model.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.language_model.set_input_embeddings(value)

    def get_low_res_image_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(images, 3, 448, 448) → (images, 256, D)."""
        if isinstance(self.vision_tower, OcrMllmVisionModel):
            patches = self.vision_tower(pixel_values)  # (images, 1024, width)
        else:
            dtype = next(self.vision_tower.parameters()).dtype
            patches = self.vision_tower(pixel_values=pixel_values.to(dtype)).last_hidden_state
            if self.config.low_res_feature_select_strategy == "default":
                patches = patches[:, 1:]  # drop CLIP's CLS token
        return self.resampler(patches)  # (images, 256, D)

    def get_high_res_image_features(self, high_res_pixel_values: torch.Tensor) -> torch.Tensor:
        """(views, 3, 1024, 1024) → (views, 256, D); a line view (views, 3, 32, 640) → (views, 80, D), left to right."""
        dtype = self.high_res_downsampler.conv1.weight.dtype
        neck = self.high_res_vision_tower(
            pixel_values=high_res_pixel_values.to(dtype)
        ).last_hidden_state  # (views, 256, 64, 64)
        grid = self.high_res_downsampler(neck)  # (views, 1024, 16, 16)
        tokens = grid.flatten(2).transpose(1, 2)  # (views, 256, 1024), row-major over the grid
        return self.high_res_projector(tokens)  # (views, 256, D)

    def get_image_features(
        self,
        pixel_values: torch.Tensor,
        high_res_pixel_values: torch.Tensor,
        num_high_res_views: torch.Tensor | list[int] | None = None,
    ) -> BaseModelOutputWithPooling:
        """Per image: [high-res tokens of each of its views (global view first, then tiles) ; low-res tokens].

        Returns `BaseModelOutputWithPooling` (as transformers' VLMs): `pooler_output` is a tuple with one
        `(num_image_tokens_i, D)` tensor per image, `last_hidden_state` their concatenation `(image tokens, D)`.
        """
        num_images = pixel_values.shape[0]
        if num_high_res_views is None:
            num_high_res_views = [1] * num_images
        num_high_res_views = [int(n) for n in num_high_res_views]  # split sizes: needed on the host anyway
        if len(num_high_res_views) != num_images or sum(num_high_res_views) != high_res_pixel_values.shape[0]:
            raise ValueError(
                f"num_high_res_views {num_high_res_views} does not match {num_images} low-res images and "
                f"{high_res_pixel_values.shape[0]} high-res views"
            )
        low = self.get_low_res_image_features(pixel_values)  # (images, 256, D)
        high = self.get_high_res_image_features(high_res_pixel_values)  # (views, 256, D)
        if self.image_feature_norm is not None:
            low, high = self.standardize_image_features(low, high)
        high_per_image = torch.split(high, num_high_res_views, dim=0)
        per_image = tuple(torch.cat([views.flatten(0, 1), low[i]], dim=0) for i, views in enumerate(high_per_image))
        return BaseModelOutputWithPooling(last_hidden_state=torch.cat(per_image, dim=0), pooler_output=per_image)

    def standardize_image_features(self, low: torch.Tensor, high: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Zero mean, unit variance per channel over every image token of the batch (running statistics in eval)."""
        tokens = torch.cat([high.flatten(0, 1), low.flatten(0, 1)])  # (views × 256 + images × 256, D)
        statistics_dtype = self.image_feature_norm.running_mean.dtype  # float32 unless the model was cast
        tokens = self.image_feature_norm(tokens.to(statistics_dtype)).to(tokens.dtype)
        high_tokens, low_tokens = tokens.split([high.shape[0] * high.shape[1], low.shape[0] * low.shape[1]])
        return low_tokens.view_as(low), high_tokens.view_as(high)

    def get_placeholder_mask(
        self, input_ids: torch.LongTensor | None, inputs_embeds: torch.Tensor, image_features: torch.Tensor
    ) -> torch.BoolTensor:
        """Boolean mask (batch, seq, hidden) of the image placeholder positions; checks their count against the features."""
        if input_ids is None:
            image_embed = self.get_input_embeddings()(
                torch.tensor(self.config.image_token_id, dtype=torch.long, device=inputs_embeds.device)
            )
            special_image_mask = (inputs_embeds == image_embed).all(-1)
        else:
            special_image_mask = input_ids == self.config.image_token_id
        n_image_tokens = special_image_mask.sum()
        torch_compilable_check(  # no host synchronisation unless the check fails
            n_image_tokens == image_features.shape[0],
            lambda: (
                f"Image features and image tokens do not match: {int(n_image_tokens)} image placeholder tokens in the "
                f"text but {image_features.shape[0]} image features. Each image needs exactly "
                f"config.num_image_tokens(views) placeholders (use the processor to expand `{self.config.image_token}`)."
            ),
        )
        return special_image_mask.unsqueeze(-1).expand_as(inputs_embeds).to(inputs_embeds.device)

    def _zero_image_contribution(self, inputs_embeds: torch.Tensor) -> torch.Tensor:
        """Run both towers on one blank image and add 0 × the result.

        In training a text-only batch would leave the vision parameters out of the graph: DeepSpeed ZeRO-3 then hangs
        (ranks gather different parameters) and DDP complains about unused parameters.
        """
        vision_size = self.config.vision_config.image_size
        blank = inputs_embeds.new_zeros(1, 3, vision_size, vision_size)
        blank_high_res = inputs_embeds.new_zeros(1, 3, *self.config.high_res_view_size)
        # the stages directly, not get_image_features: a blank image must not move the running feature statistics
        features = (
            self.get_low_res_image_features(blank).sum() + self.get_high_res_image_features(blank_high_res).sum()
        )
        return inputs_embeds + 0.0 * features.to(inputs_embeds.dtype)

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        pixel_values: torch.FloatTensor | None = None,
        high_res_pixel_values: torch.FloatTensor | None = None,
        num_high_res_views: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.FloatTensor | None = None,
        use_cache: bool | None = None,
        **kwargs,
    ) -> OcrMllmModelOutputWithPast:
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("You must specify exactly one of input_ids or inputs_embeds")
        if (pixel_values is None) != (high_res_pixel_values is None):
            raise ValueError(
                "pixel_values and high_res_pixel_values must be given together (the processor returns both views)"
            )
        cache = kwargs.pop("past_key_values", cache)  # the pre-5.24 name

        if inputs_embeds is None:
            inputs_embeds = self.get_input_embeddings()(input_ids)  # (batch, seq, D)

        image_features = image_outputs = None
        if pixel_values is not None:
            image_outputs = self.get_image_features(pixel_values, high_res_pixel_values, num_high_res_views)
            image_features = image_outputs.last_hidden_state.to(
                inputs_embeds.device, inputs_embeds.dtype
            )  # (tokens, D)
            image_mask = self.get_placeholder_mask(input_ids, inputs_embeds, image_features)
            inputs_embeds = inputs_embeds.masked_scatter(image_mask, image_features)
        elif self.training and torch.is_grad_enabled():
            inputs_embeds = self._zero_image_contribution(inputs_embeds)
        elif (
            input_ids is not None
            and (cache is None or cache.get_seq_length() == 0)  # a prompt, not a decoding step
            and (input_ids == self.config.image_token_id).any()
        ):
            raise ValueError(
                "The text contains image placeholder tokens but no pixel_values were given: pass the images to the "
                "processor together with the text"
            )

        outputs = self.language_model(
            inputs_embeds=inputs_embeds,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=cache,
            use_cache=use_cache,
            **kwargs,
        )
        return OcrMllmModelOutputWithPast(
            last_hidden_state=outputs.last_hidden_state,
            cache=outputs.cache,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
            image_hidden_states=image_features,
            image_outputs=image_outputs,
        )


class OcrMllmCtcPrefixScorer(LogitsProcessor):
    """Joint CTC/attention decoding (Watanabe et al. 2017, "Hybrid CTC/Attention Architecture for End-to-End Speech
    Recognition"; ESPnet's `CTCPrefixScore`): every candidate token `c` of a row is scored

        (1 - λ) · log p_LLM(c | prefix) + λ · (log p_CTC(prefix + c ...) - log p_CTC(prefix ...))

    where p_CTC(g ...) is the CTC head's probability that the line's reading starts with `g`, and for an end-of-answer
    token the probability that it is exactly `g`. Rows without an image keep the LLM's scores.

    ctc_log_probs: (images, columns, vocab + 1) log-probabilities of the CTC head, blank last; image_rows: the batch
    row of each image; prompt_length: the prompt's length (left-padded batch).
    """

    def __init__(
        self,
        ctc_log_probs: torch.Tensor,
        image_rows: torch.Tensor,
        weight: float,
        eos_token_ids: list[int],
        ignore_token_ids: list[int],
        prompt_length: int,
    ):
        self.log_probs = ctc_log_probs.float()  # (R, T, V + 1)
        self.rows, self.weight, self.prompt_length = image_rows, weight, prompt_length
        self.vocab = ctc_log_probs.shape[-1] - 1
        self.eos = torch.tensor(eos_token_ids, dtype=torch.long, device=ctc_log_probs.device)
        self.ignore = torch.tensor(ignore_token_ids, dtype=torch.long, device=ctc_log_probs.device)
        num_rows, num_columns = ctc_log_probs.shape[:2]
        # the empty prefix: all blanks so far (r_b), never ended on a symbol (r_n)
        self.r_blank = ctc_log_probs[..., self.vocab].float().cumsum(1)  # (R, T)
        self.r_symbol = torch.full_like(self.r_blank, self._NEG)
        self.last = torch.full((num_rows,), -1, dtype=torch.long, device=ctc_log_probs.device)
        self.prefix_score = torch.zeros(num_rows, device=ctc_log_probs.device)
        self.empty = True
        # candidates per row: the symbols the head gives more than 1e-3 somewhere in the line (the others cannot make a
        # prefix any likelier than that); a trained head keeps tens of a vocabulary of thousands, so a step costs K, not V
        peak = self.log_probs[..., : self.vocab].amax(dim=1)  # (R, V)
        count = int((peak > math.log(self.MIN_SYMBOL_PROBABILITY)).sum(dim=1).max()) if num_rows else 0
        self.candidates = peak.topk(max(1, count), dim=1).indices  # (R, K)

    _NEG = -1e30  # log 0, finite so that differences stay defined
    MIN_SYMBOL_PROBABILITY = 1e-3

    def _extend(self, candidates: torch.Tensor, with_blank_paths: bool = False):
        """Prefix + each candidate (R, K) → (log p_CTC(prefix + c ...) (R, K), and with_blank_paths the new r_symbol,
        r_blank (R, T, K))."""
        x, blank_column = self.log_probs, self.log_probs[..., self.vocab]  # (R, T, V + 1), (R, T)
        ended = torch.logaddexp(self.r_symbol, self.r_blank)  # (R, T)
        repeat = candidates == self.last[:, None]  # (R, K): a repeated symbol must be separated by a blank
        r_symbol = torch.full(candidates.shape, self._NEG, device=x.device)
        if self.empty:
            r_symbol = x[:, 0].gather(1, candidates)
        score = r_symbol.clone()
        symbols, blanks = [r_symbol], [torch.full(candidates.shape, self._NEG, device=x.device)]
        for t in range(1, x.shape[1]):
            phi = torch.where(repeat, self.r_blank[:, t - 1, None], ended[:, t - 1, None])  # (R, K)
            emit = x[:, t].gather(1, candidates)  # (R, K)
            score = torch.logaddexp(score, phi + emit)
            r_symbol = torch.logaddexp(r_symbol, phi) + emit
            if with_blank_paths:
                blanks.append(torch.logaddexp(blanks[-1], symbols[-1]) + blank_column[:, t, None])
                symbols.append(r_symbol)
        if not with_blank_paths:
            return score, None, None
        return score, torch.stack(symbols, 1), torch.stack(blanks, 1)

    def _advance(self, chosen: torch.Tensor):
        """The prefix grew by `chosen` (R,): carry its paths forward (finished rows keep theirs)."""
        active = ~torch.isin(chosen, self.eos) & (chosen < self.vocab) & ~torch.isin(chosen, self.ignore)
        score, r_symbol, r_blank = self._extend(chosen.clamp(max=self.vocab - 1)[:, None], with_blank_paths=True)
        keep = active[:, None]
        self.r_symbol = torch.where(keep, r_symbol[..., 0], self.r_symbol)
        self.r_blank = torch.where(keep, r_blank[..., 0], self.r_blank)
        self.prefix_score = torch.where(active, score[:, 0], self.prefix_score)
        self.last = torch.where(active, chosen, self.last)
        self.empty = False if bool(active.any()) else self.empty

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if input_ids.shape[1] > self.prompt_length:
            self._advance(input_ids[self.rows, -1])
        num_rows, vocab = len(self.rows), scores.shape[-1]
        prefix_scores, _, _ = self._extend(self.candidates)  # (R, K)
        ctc = torch.full((num_rows, vocab), self._NEG, device=scores.device)
        ctc.scatter_(1, self.candidates, prefix_scores - self.prefix_score[:, None])
        finished = torch.logaddexp(self.r_symbol[:, -1], self.r_blank[:, -1]) - self.prefix_score  # (R,)
        ctc[:, self.eos] = finished[:, None]
        ctc[:, self.ignore[~torch.isin(self.ignore, self.eos)]] = self._NEG
        joint = (1 - self.weight) * scores[self.rows].float().log_softmax(-1) + self.weight * ctc
        scores = scores.clone()
        scores[self.rows] = joint.to(scores.dtype).clamp(min=torch.finfo(scores.dtype).min)
        return scores


class OcrMllmForConditionalGeneration(OcrMllmPreTrainedModel, GenerationMixin):
    _tied_weights_keys = {"lm_head.weight": "model.language_model.embed_tokens.weight"}

    def __init__(self, config: OcrMllmConfig):
        super().__init__(config)
        self.model = OcrMllmModel(config)
        self.lm_head = nn.Linear(config.text_config.hidden_size, config.text_config.vocab_size, bias=False)
        # auxiliary CTC head on the high-res column tokens: the vocabulary plus a blank (id vocab_size)
        self.ctc_head = (
            nn.Linear(config.text_config.hidden_size, config.text_config.vocab_size + 1)
            if config.ctc_loss_weight > 0
            else None
        )
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.model.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.model.set_input_embeddings(value)

    def get_output_embeddings(self) -> nn.Module:
        return self.lm_head

    def set_output_embeddings(self, new_embeddings: nn.Module) -> None:
        self.lm_head = new_embeddings

    # Short-cuts to the stages (as Llava exposes them)
    @property
    def language_model(self) -> nn.Module:
        return self.model.language_model

    @property
    def vision_tower(self) -> nn.Module:
        return self.model.vision_tower

    @property
    def high_res_vision_tower(self) -> SamVisionEncoder:
        return self.model.high_res_vision_tower

    def get_image_features(
        self,
        pixel_values: torch.Tensor,
        high_res_pixel_values: torch.Tensor,
        num_high_res_views: torch.Tensor | list[int] | None = None,
    ) -> BaseModelOutputWithPooling:
        return self.model.get_image_features(pixel_values, high_res_pixel_values, num_high_res_views)

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        pixel_values: torch.FloatTensor | None = None,
        high_res_pixel_values: torch.FloatTensor | None = None,
        num_high_res_views: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.FloatTensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        **kwargs,
    ) -> OcrMllmCausalLMOutputWithPast:
        r"""
        high_res_pixel_values (`torch.FloatTensor` of shape `(num_views, 3, 1024, 1024)`):
            The high-resolution views (global view of each image first, then its tiles) from the processor.
        num_high_res_views (`torch.LongTensor` of shape `(num_images,)`):
            How many high-resolution views each image has (1 without tiling).
        labels (`torch.LongTensor` of shape `(batch, seq)`):
            Token ids to predict, -100 where no loss is taken (prompt, image tokens, padding). Shifted inside.

        Example:
        ```python
        >>> from transformers import AutoModelForImageTextToText, AutoProcessor
        >>> model = AutoModelForImageTextToText.from_pretrained(path, trust_remote_code=True)
        >>> processor = AutoProcessor.from_pretrained(path, trust_remote_code=True)
        >>> messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Read all the text in the image."}]}]
        >>> prompt = processor.apply_chat_template(messages, add_generation_prompt=True)
        >>> inputs = processor(images=[image], text=[prompt], return_tensors="pt")
        >>> out = model.generate(**inputs, max_new_tokens=256)
        ```"""
        num_items_in_batch = kwargs.pop("num_items_in_batch", None)
        outputs = self.model(
            input_ids=input_ids,
            pixel_values=pixel_values,
            high_res_pixel_values=high_res_pixel_values,
            num_high_res_views=num_high_res_views,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=cache,
            inputs_embeds=inputs_embeds,
            use_cache=use_cache,
            **kwargs,
        )
        hidden_states = outputs.last_hidden_state
        loss = ctc_loss = logits = None
        if labels is not None and self.training:
            # training: logits only where a token is supervised (the answer), as fused-loss kernels do; the full
            # (batch, seq, vocab) tensor costs more than the LLM itself for small models with long image sequences
            loss = self.supervised_token_loss(hidden_states, labels, num_items_in_batch)
        else:
            slice_indices = slice(-logits_to_keep, None) if isinstance(logits_to_keep, int) else logits_to_keep
            logits = self.lm_head(hidden_states[:, slice_indices, :])
        if labels is not None and loss is None:
            loss = self.loss_function(
                logits=logits,
                labels=labels,
                vocab_size=self.config.text_config.vocab_size,
                num_items_in_batch=num_items_in_batch,
            )
        if labels is not None:
            if self.ctc_head is not None and outputs.image_hidden_states is not None:
                ctc_loss = self.ctc_loss(outputs.image_hidden_states, input_ids, labels, num_high_res_views)
                loss = loss + self.config.ctc_loss_weight * ctc_loss
        return OcrMllmCausalLMOutputWithPast(
            loss=loss,
            ctc_loss=ctc_loss,
            logits=logits,
            cache=outputs.cache,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
            image_hidden_states=outputs.image_hidden_states,
            image_outputs=outputs.image_outputs,
        )

    def generate(
        self, inputs: torch.Tensor | None = None, ctc_decoding_weight: float | None = None, **kwargs
    ) -> GenerateOutput | torch.LongTensor:
        """`GenerationMixin.generate`, with joint CTC/attention decoding for models with a CTC head and
        `ctc_decoding_weight` (default `config.ctc_decoding_weight`) > 0: see `OcrMllmCtcPrefixScorer`."""
        weight = self.config.ctc_decoding_weight if ctc_decoding_weight is None else ctc_decoding_weight
        input_ids = inputs if inputs is not None else kwargs.get("input_ids")
        scorer = self._ctc_prefix_scorer(input_ids, kwargs, weight)
        if scorer is not None:
            kwargs["logits_processor"] = LogitsProcessorList([*(kwargs.get("logits_processor") or []), scorer])
        return super().generate(inputs, **kwargs)

    def _ctc_prefix_scorer(
        self, input_ids: torch.Tensor | None, kwargs: dict, weight: float
    ) -> "OcrMllmCtcPrefixScorer | None":
        if weight <= 0 or self.ctc_head is None or input_ids is None or kwargs.get("high_res_pixel_values") is None:
            return None
        image_rows = (input_ids == self.config.image_token_id).any(dim=1).nonzero().flatten()  # (images,)
        num_views = kwargs.get("num_high_res_views")
        num_images = kwargs["pixel_values"].shape[0]
        if num_images != len(image_rows) or (num_views is not None and any(int(n) != 1 for n in num_views)):
            return None  # CTC scores one line view per row: several images in a row, or tiles, get the LLM alone
        with torch.no_grad():
            features = self.model.get_image_features(kwargs["pixel_values"], kwargs["high_res_pixel_values"])
            features = features.last_hidden_state
            log_probs = self.ctc_head(self._column_tokens(features, num_images)).float().log_softmax(-1)
        config = kwargs.get("generation_config") or self.generation_config
        eos = kwargs.get("eos_token_id", config.eos_token_id)
        eos = [int(e) for e in (eos if isinstance(eos, (list, tuple)) else [eos]) if e is not None]
        return OcrMllmCtcPrefixScorer(
            log_probs, image_rows, weight, eos, self.config.ctc_ignore_token_ids, prompt_length=input_ids.shape[1]
        )

    def supervised_token_loss(
        self,
        hidden_states: torch.Tensor,
        labels: torch.Tensor,
        num_items_in_batch: torch.Tensor | int | None = None,
    ) -> torch.Tensor:
        """The causal LM loss of `self.loss_function` (next-token cross-entropy, -100 ignored, summed over
        `num_items_in_batch` when given, else averaged), from the LM head applied to the supervised positions only."""
        targets = labels[:, 1:].to(hidden_states.device)  # (batch, seq - 1): position i predicts token i + 1
        supervised = targets != -100
        logits = self.lm_head(hidden_states[:, :-1][supervised]).float()  # (supervised tokens, vocab)
        loss = F.cross_entropy(logits, targets[supervised], reduction="sum")
        if num_items_in_batch is None:
            return loss / supervised.sum().clamp(min=1)
        if torch.is_tensor(num_items_in_batch):
            num_items_in_batch = num_items_in_batch.to(loss.device)
        return loss / num_items_in_batch

    # ---------------------------------------------------------------------------------------------------------------
    # CTC head (line models): training signal per column, and a reading of its own
    # ---------------------------------------------------------------------------------------------------------------
    def _column_tokens(self, image_features: torch.Tensor, num_images: int) -> torch.Tensor:
        """(image tokens of the batch, D) → (images, columns, D): the high-res row of each image's line view."""
        per_image = image_features.view(num_images, self.config.image_seq_length, -1)
        return per_image[:, : self.config.num_high_res_tokens_per_view]

    def ctc_loss(
        self,
        image_features: torch.Tensor,
        input_ids: torch.Tensor,
        labels: torch.Tensor,
        num_high_res_views: torch.Tensor | list[int] | None = None,
    ) -> torch.Tensor:
        """CTC between the column tokens of each row's image and that row's supervised answer tokens (minus
        `config.ctc_ignore_token_ids`). Rows without an image or without answer tokens are left out."""
        if num_high_res_views is not None and any(int(n) != 1 for n in num_high_res_views):
            raise ValueError("the CTC head reads one line view per image; tiling is not supported with it")
        image_rows = (input_ids == self.config.image_token_id).any(dim=1)  # (batch,)
        num_images = image_features.shape[0] // self.config.image_seq_length
        if num_images != int(image_rows.sum()):
            raise ValueError(
                f"the CTC loss needs one image per row; got {num_images} images in {int(image_rows.sum())} rows"
            )
        log_probs = self.ctc_head(self._column_tokens(image_features, num_images)).float().log_softmax(-1)
        ignore = torch.tensor([-100, *self.config.ctc_ignore_token_ids], device=labels.device)
        targets, target_lengths, keep = [], [], []
        for image_index, row in enumerate(image_rows.nonzero().flatten().tolist()):
            target = labels[row][~torch.isin(labels[row], ignore)]
            if target.numel():
                targets.append(target)
                target_lengths.append(target.numel())
                keep.append(image_index)
        if not keep:
            return log_probs.sum() * 0.0
        log_probs = log_probs[keep].transpose(0, 1)  # (columns, images, vocab + 1)
        input_lengths = torch.full((len(keep),), log_probs.shape[0], dtype=torch.long)
        return F.ctc_loss(
            log_probs,
            torch.cat(targets),
            input_lengths,
            torch.tensor(target_lengths, dtype=torch.long),
            blank=self.config.text_config.vocab_size,
            zero_infinity=True,
        )

    @torch.no_grad()
    def ctc_read(self, pixel_values: torch.Tensor, high_res_pixel_values: torch.Tensor) -> list[list[int]]:
        """Greedy CTC reading of each image's line view (best class per column, repeats merged, blanks dropped):
        token ids per image, decoded with the tokenizer. The LLM's answer is what `generate` returns; this is the
        auxiliary head's own reading, for comparison."""
        if self.ctc_head is None:
            raise ValueError("this model has no CTC head (config.ctc_loss_weight is 0)")
        features = self.model.get_image_features(pixel_values, high_res_pixel_values).last_hidden_state
        best = self.ctc_head(self._column_tokens(features, pixel_values.shape[0])).argmax(-1)  # (images, columns)
        blank, readings = self.config.text_config.vocab_size, []
        for row in best.tolist():
            tokens, previous = [], None
            for token in row:
                if token != previous and token != blank:
                    tokens.append(token)
                previous = token
            readings.append(tokens)
        return readings


OcrMllmModel.register_for_auto_class("AutoModel")
OcrMllmForConditionalGeneration.register_for_auto_class("AutoModelForImageTextToText")

__all__ = ["OcrMllmPreTrainedModel", "OcrMllmModel", "OcrMllmForConditionalGeneration"]
