"""An independent re-implementation of the ORIGINAL OCR_MLLM_TOY forward pass, in the original key layout, plus a
builder for tiny random checkpoints written exactly the way the original repository lays its weights out.

It is the yardstick for `ocr_mllm.conversion` (tests and `scripts/convert_original_checkpoint.py --verify`), so it
deliberately imports nothing from this repository: every module below is written from the original math
(see /work/shared/docs/original-system.md §1):

- QWen v1 (`language_model/qwen14b/modeling_qwen.py`): fused `c_attn` split as [Q; K; V], QWen's own rotary embedding
  (rotate-half, `rotary_emb_base`), dynamic NTK (`get_ntk_alpha`) and logn attention scaling at inference,
  RMSNorm, MLP `c_proj(w1(x) * silu(w2(x)))`, untied `lm_head`.
- Qwen-VL's ViT (`qwen_clip.py::VisionTransformer`): `conv1`, bicubic `get_abs_pos`, `ln_pre`, blocks whose
  `in_proj` rows are interleaved per head ([q_h, k_h, v_h] for each head h), GELU MLP, activations in (L, B, D).
- Qwen-VL's `Resampler` with `nn.MultiheadAttention`, followed by the `mm_projector.1` LayerNorm.
- Vary's SAM ViT-B (`sam.py::ImageEncoderViT`): windowed / global blocks with decomposed relative positions,
  the neck with `LayerNorm2d`, `net_2` / `net_3`.
- `mm_projector_high` (`linear` / `mlp<N>x_gelu`).
- The LLaVA token splice: every single placeholder id (150000 in the original) is replaced by
  cat([SAM tokens, ViT tokens]) of the next image.
"""

from __future__ import annotations

import base64
import json
import math
import os
import re
from collections import OrderedDict
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


ORIGINAL_IMAGE_TOKEN_INDEX = 150000  # ocr_mllm_toy/constants.py

VIT_PREFIX = "transformer.vision_tower.vision_tower."
SAM_PREFIX = "transformer.vision_tower_high."


# ----------------------------------------------------------------------------------------------------------------------
# Hyper-parameters
# ----------------------------------------------------------------------------------------------------------------------
@dataclass
class ReferenceConfig:
    # QWen v1 (names as in its config.json)
    vocab_size: int = 152064
    hidden_size: int = 5120
    num_hidden_layers: int = 40
    num_attention_heads: int = 40
    kv_channels: int = 128
    intermediate_size: int = 27392  # QWen stores 2x the MLP width; w1/w2 have intermediate_size // 2 rows
    layer_norm_epsilon: float = 1e-6
    rotary_emb_base: float = 10000.0
    rotary_pct: float = 1.0
    seq_length: int = 2048
    use_dynamic_ntk: bool = True
    use_logn_attn: bool = True
    # Qwen-VL ViT
    vit_width: int = 1664
    vit_layers: int = 48
    vit_heads: int = 16
    vit_mlp_size: int = 8192
    vit_patch_size: int = 14
    vit_image_size: int = 448
    vit_pos_grid: int = 16
    # Resampler
    resampler_grid: int = 16
    resampler_heads: int = 40
    # SAM (Vary)
    sam_width: int = 768
    sam_depth: int = 12
    sam_heads: int = 12
    sam_mlp_dim: int = 3072
    sam_patch_size: int = 16
    sam_image_size: int = 1024
    sam_window_size: int = 14
    sam_global_attn_indexes: list = field(default_factory=lambda: [2, 5, 8, 11])
    sam_out_chans: int = 256
    sam_net2_chans: int = 512
    sam_net3_chans: int = 1024
    # mm_projector_high
    projector_type: str = "mlp2x_gelu"

    @classmethod
    def from_original(
        cls,
        qwen_config: dict,
        state_dict: dict,
        vit_heads: int,
        resampler_heads: int,
        projector_type: str | None = None,
    ) -> "ReferenceConfig":
        """Read the hyper-parameters of an original checkpoint: QWen fields from its config.json, the rest from the
        tensor shapes (the original hard-codes most of them). `vit_heads` comes from the ViT's config.json and
        `resampler_heads` is hard-coded in the original (40 = 5120 // 128): neither is visible in the weights."""
        sd = state_dict
        cfg = cls()
        for name in (
            "vocab_size",
            "hidden_size",
            "num_hidden_layers",
            "num_attention_heads",
            "kv_channels",
            "intermediate_size",
            "layer_norm_epsilon",
            "rotary_emb_base",
            "rotary_pct",
            "seq_length",
            "use_dynamic_ntk",
            "use_logn_attn",
        ):
            if name in qwen_config:
                setattr(cfg, name, type(getattr(cfg, name))(qwen_config[name]))
        cfg.intermediate_size = 2 * sd["transformer.h.0.mlp.w1.weight"].shape[0]
        conv1 = sd[VIT_PREFIX + "conv1.weight"]
        cfg.vit_width, cfg.vit_patch_size = conv1.shape[0], conv1.shape[-1]
        cfg.vit_layers = 1 + max(
            int(m.group(1))
            for k in sd
            if (m := re.match(re.escape(VIT_PREFIX) + r"transformer\.resblocks\.(\d+)\.", k))
        )
        cfg.vit_heads = vit_heads
        cfg.vit_mlp_size = sd[VIT_PREFIX + "transformer.resblocks.0.mlp.c_fc.weight"].shape[0]
        cfg.vit_pos_grid = math.isqrt(sd[VIT_PREFIX + "positional_embedding"].shape[0])
        cfg.resampler_grid = math.isqrt(sd["transformer.mm_projector.0.query"].shape[0])
        cfg.resampler_heads = resampler_heads
        pe = sd[SAM_PREFIX + "patch_embed.proj.weight"]
        cfg.sam_width, cfg.sam_patch_size = pe.shape[0], pe.shape[-1]
        grid = sd[SAM_PREFIX + "pos_embed"].shape[1]
        cfg.sam_image_size = grid * cfg.sam_patch_size
        cfg.sam_depth = 1 + max(
            int(m.group(1)) for k in sd if (m := re.match(re.escape(SAM_PREFIX) + r"blocks\.(\d+)\.", k))
        )
        head_dim = sd[SAM_PREFIX + "blocks.0.attn.rel_pos_h"].shape[1]
        cfg.sam_heads = cfg.sam_width // head_dim
        cfg.sam_mlp_dim = sd[SAM_PREFIX + "blocks.0.mlp.lin1.weight"].shape[0]
        rel_rows = [sd[SAM_PREFIX + f"blocks.{i}.attn.rel_pos_h"].shape[0] for i in range(cfg.sam_depth)]
        cfg.sam_global_attn_indexes = [i for i, r in enumerate(rel_rows) if r == 2 * grid - 1]
        windowed = [r for r in rel_rows if r != 2 * grid - 1]
        cfg.sam_window_size = (windowed[0] + 1) // 2 if windowed else 0
        cfg.sam_out_chans = sd[SAM_PREFIX + "neck.0.weight"].shape[0]
        cfg.sam_net2_chans = sd[SAM_PREFIX + "net_2.weight"].shape[0]
        cfg.sam_net3_chans = sd[SAM_PREFIX + "net_3.weight"].shape[0]
        if projector_type is None:
            n = len([k for k in sd if re.match(r"transformer\.mm_projector_high\.\d+\.weight$", k)])
            projector_type = "linear" if n == 0 else f"mlp{n}x_gelu"
        cfg.projector_type = projector_type
        return cfg

    @property
    def head_dim(self) -> int:
        return self.kv_channels


# ----------------------------------------------------------------------------------------------------------------------
# QWen v1
# ----------------------------------------------------------------------------------------------------------------------
class QWenRMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x.float() * torch.rsqrt(x.float().pow(2).mean(-1, keepdim=True) + self.eps)
        return out.type_as(x) * self.weight


def qwen_rotary_cos_sin(
    dim: int, base: float, seqlen: int, ntk_alpha: float = 1.0, device: torch.device | str | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """QWen's RotaryEmbedding.update_rotary_pos_emb_cache: NTK-scaled base, emb = cat(freqs, freqs) → (1, L, 1, dim)."""
    base = base * ntk_alpha ** (dim / (dim - 2))
    inv_freq = 1.0 / (base ** (torch.arange(0, dim, 2, device=device).float() / dim))
    seq = torch.arange(seqlen, device=device).float()
    freqs = torch.outer(seq, inv_freq)
    emb = torch.cat((freqs, freqs), dim=-1)[None, :, None, :]
    return emb.cos(), emb.sin()


def qwen_rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.reshape(*x.shape[:-1], 2, x.shape[-1] // 2).unbind(dim=-2)
    return torch.cat((-x2, x1), dim=-1)


def qwen_apply_rotary(t: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    rot_dim = cos.shape[-1]
    t_, t_pass = t[..., :rot_dim].float(), t[..., rot_dim:].float()
    t_ = t_ * cos + qwen_rotate_half(t_) * sin
    return torch.cat((t_, t_pass), dim=-1).type_as(t)


class QWenAttention(nn.Module):
    def __init__(self, cfg: ReferenceConfig):
        super().__init__()
        self.num_heads = cfg.num_attention_heads
        self.head_dim = cfg.kv_channels
        self.projection_size = cfg.kv_channels * cfg.num_attention_heads
        self.seq_length = cfg.seq_length
        self.use_logn_attn = cfg.use_logn_attn
        self.c_attn = nn.Linear(cfg.hidden_size, 3 * self.projection_size)
        self.c_proj = nn.Linear(self.projection_size, cfg.hidden_size, bias=False)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        b, L, _ = x.shape
        query, key, value = self.c_attn(x).split(self.projection_size, dim=2)
        query = query.view(b, L, self.num_heads, self.head_dim)  # (B, L, H, D): QWen's layout
        key = key.view(b, L, self.num_heads, self.head_dim)
        value = value.view(b, L, self.num_heads, self.head_dim)
        query = qwen_apply_rotary(query, cos[:, -L:], sin[:, -L:])
        key = qwen_apply_rotary(key, cos[:, -L:], sin[:, -L:])
        if self.use_logn_attn and not self.training and key.size(1) > self.seq_length:
            # logn_list = [log(i, seq_length) if i > seq_length else 1 for i in 1..]; position p uses entry p+1
            pos = torch.arange(1, key.size(1) + 1, dtype=torch.float64)
            logn = torch.where(pos > self.seq_length, torch.log(pos) / math.log(self.seq_length), torch.ones_like(pos))
            query = query * logn[None, -L:, None, None].to(query.dtype)
        q, k, v = (t.permute(0, 2, 1, 3) for t in (query, key, value))
        w = torch.matmul(q, k.transpose(-1, -2)) / (v.size(-1) ** 0.5)
        causal = torch.ones(L, L, dtype=torch.bool, device=x.device).tril()
        w = torch.where(causal, w, torch.finfo(w.dtype).min)
        w = F.softmax(w.float(), dim=-1).type(v.dtype)
        out = torch.matmul(w, v).permute(0, 2, 1, 3).reshape(b, L, self.projection_size)
        return self.c_proj(out)


class QWenMLP(nn.Module):
    def __init__(self, cfg: ReferenceConfig):
        super().__init__()
        ff = cfg.intermediate_size // 2
        self.w1 = nn.Linear(cfg.hidden_size, ff, bias=False)
        self.w2 = nn.Linear(cfg.hidden_size, ff, bias=False)
        self.c_proj = nn.Linear(ff, cfg.hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c_proj(self.w1(x) * F.silu(self.w2(x)))


class QWenBlock(nn.Module):
    def __init__(self, cfg: ReferenceConfig):
        super().__init__()
        self.ln_1 = QWenRMSNorm(cfg.hidden_size, cfg.layer_norm_epsilon)
        self.attn = QWenAttention(cfg)
        self.ln_2 = QWenRMSNorm(cfg.hidden_size, cfg.layer_norm_epsilon)
        self.mlp = QWenMLP(cfg)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), cos, sin)
        return x + self.mlp(self.ln_2(x))


# ----------------------------------------------------------------------------------------------------------------------
# Qwen-VL ViT (qwen_clip.py::VisionTransformer, attn_pool / ln_post / proj removed as in OCR_MLLM_TOY)
# ----------------------------------------------------------------------------------------------------------------------
def get_abs_pos(abs_pos: torch.Tensor, tgt_size: int) -> torch.Tensor:
    src_size = int(math.sqrt(abs_pos.size(0)))
    tgt_size = int(math.sqrt(tgt_size))
    dtype = abs_pos.dtype
    if src_size != tgt_size:
        return (
            F.interpolate(
                abs_pos.float().reshape(1, src_size, src_size, -1).permute(0, 3, 1, 2),
                size=(tgt_size, tgt_size),
                mode="bicubic",
                align_corners=False,
            )
            .permute(0, 2, 3, 1)
            .flatten(0, 2)
            .to(dtype=dtype)
        )
    return abs_pos


class VisualAttention(nn.Module):
    def __init__(self, embed_dim: int, num_heads: int):
        super().__init__()
        self.embed_dim = embed_dim
        self.num_heads = num_heads
        self.head_dim = embed_dim // num_heads
        self.in_proj = nn.Linear(embed_dim, 3 * embed_dim)
        self.out_proj = nn.Linear(embed_dim, embed_dim)
        self.norm_factor = math.sqrt(self.head_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (sq, b, d)
        sq, b, _ = x.shape
        mixed = self.in_proj(x).view(sq, b, self.num_heads, 3 * self.head_dim)  # per-head [q, k, v]
        q, k, v = mixed.split(self.head_dim, dim=-1)
        q = q.reshape(sq, b * self.num_heads, self.head_dim).transpose(0, 1)
        k = k.reshape(sq, b * self.num_heads, self.head_dim).transpose(0, 1)
        v = v.reshape(sq, b * self.num_heads, self.head_dim).transpose(0, 1)
        probs = torch.bmm(q / self.norm_factor, k.transpose(-2, -1)).softmax(dim=-1)
        ctx = torch.bmm(probs, v).view(b, self.num_heads, sq, self.head_dim).permute(2, 0, 1, 3)
        return self.out_proj(ctx.reshape(sq, b, self.embed_dim))


class VisualAttentionBlock(nn.Module):
    def __init__(self, d_model: int, n_head: int, mlp_width: int):
        super().__init__()
        self.ln_1 = nn.LayerNorm(d_model, eps=1e-6)
        self.ln_2 = nn.LayerNorm(d_model, eps=1e-6)
        self.attn = VisualAttention(d_model, n_head)
        self.mlp = nn.Sequential(
            OrderedDict(
                [
                    ("c_fc", nn.Linear(d_model, mlp_width)),
                    ("gelu", nn.GELU()),
                    ("c_proj", nn.Linear(mlp_width, d_model)),
                ]
            )
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class _Resblocks(nn.Module):
    def __init__(self, width: int, layers: int, heads: int, mlp_width: int):
        super().__init__()
        self.resblocks = nn.ModuleList([VisualAttentionBlock(width, heads, mlp_width) for _ in range(layers)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for blk in self.resblocks:
            x = blk(x)
        return x


class QwenVisionTransformer(nn.Module):
    def __init__(self, cfg: ReferenceConfig):
        super().__init__()
        self.conv1 = nn.Conv2d(3, cfg.vit_width, kernel_size=cfg.vit_patch_size, stride=cfg.vit_patch_size, bias=False)
        self.positional_embedding = nn.Parameter(torch.zeros(cfg.vit_pos_grid**2, cfg.vit_width))
        self.ln_pre = nn.LayerNorm(cfg.vit_width, eps=1e-6)
        self.transformer = _Resblocks(cfg.vit_width, cfg.vit_layers, cfg.vit_heads, cfg.vit_mlp_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x)
        x = x.reshape(x.shape[0], x.shape[1], -1).permute(0, 2, 1)
        x = x + get_abs_pos(self.positional_embedding, x.size(1))
        x = self.ln_pre(x).permute(1, 0, 2)
        x = self.transformer(x)
        return x.permute(1, 0, 2)


class QwenCLIPVisionTowerWrapper(nn.Module):  # clip_encoder.py::Qwen_CLIPVisionTower (attribute `vision_tower`)
    def __init__(self, cfg: ReferenceConfig):
        super().__init__()
        self.vision_tower = QwenVisionTransformer(cfg)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.vision_tower(images)


# ----------------------------------------------------------------------------------------------------------------------
# Resampler (qwen_clip.py::Resampler) — mm_projector = Sequential(Resampler, LayerNorm)
# ----------------------------------------------------------------------------------------------------------------------
def get_2d_sincos_pos_embed(embed_dim: int, grid_size: int) -> np.ndarray:
    grid_h = np.arange(grid_size, dtype=np.float32)
    grid_w = np.arange(grid_size, dtype=np.float32)
    grid = np.stack(np.meshgrid(grid_w, grid_h), axis=0).reshape([2, 1, grid_size, grid_size])

    def one_d(d: int, pos: np.ndarray) -> np.ndarray:
        omega = 1.0 / 10000 ** (np.arange(d // 2, dtype=np.float32) / (d / 2.0))
        out = np.einsum("m,d->md", pos.reshape(-1), omega)
        return np.concatenate([np.sin(out), np.cos(out)], axis=1)

    return np.concatenate([one_d(embed_dim // 2, grid[0]), one_d(embed_dim // 2, grid[1])], axis=1)


class Resampler(nn.Module):
    def __init__(self, grid_size: int, embed_dim: int, num_heads: int, kv_dim: int):
        super().__init__()
        self.num_queries = grid_size**2
        self.pos_embed = nn.Parameter(torch.from_numpy(get_2d_sincos_pos_embed(embed_dim, grid_size)).float())
        self.query = nn.Parameter(torch.zeros(self.num_queries, embed_dim))
        self.kv_proj = nn.Linear(kv_dim, embed_dim, bias=False) if kv_dim != embed_dim else nn.Identity()
        self.attn = nn.MultiheadAttention(embed_dim, num_heads)
        self.ln_q = nn.LayerNorm(embed_dim, eps=1e-6)
        self.ln_kv = nn.LayerNorm(embed_dim, eps=1e-6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pos_embed = get_abs_pos(self.pos_embed, x.size(1))
        x = self.ln_kv(self.kv_proj(x)).permute(1, 0, 2)
        n = x.shape[1]
        q = self.ln_q(self.query)
        out = self.attn(q.unsqueeze(1).repeat(1, n, 1) + self.pos_embed.unsqueeze(1), x + pos_embed.unsqueeze(1), x)[0]
        return out.permute(1, 0, 2)


# ----------------------------------------------------------------------------------------------------------------------
# Vary SAM ViT-B (sam.py::ImageEncoderViT with net_2 / net_3)
# ----------------------------------------------------------------------------------------------------------------------
class LayerNorm2d(nn.Module):
    def __init__(self, num_channels: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(num_channels))
        self.bias = nn.Parameter(torch.zeros(num_channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        u = x.mean(1, keepdim=True)
        s = (x - u).pow(2).mean(1, keepdim=True)
        x = (x - u) / torch.sqrt(s + self.eps)
        return self.weight[:, None, None] * x + self.bias[:, None, None]


def window_partition(x: torch.Tensor, window_size: int) -> tuple[torch.Tensor, tuple[int, int]]:
    b, h, w, c = x.shape
    pad_h = (window_size - h % window_size) % window_size
    pad_w = (window_size - w % window_size) % window_size
    if pad_h > 0 or pad_w > 0:
        x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))
    hp, wp = h + pad_h, w + pad_w
    x = x.view(b, hp // window_size, window_size, wp // window_size, window_size, c)
    return x.permute(0, 1, 3, 2, 4, 5).contiguous().view(-1, window_size, window_size, c), (hp, wp)


def window_unpartition(
    windows: torch.Tensor, window_size: int, pad_hw: tuple[int, int], hw: tuple[int, int]
) -> torch.Tensor:
    hp, wp = pad_hw
    h, w = hw
    b = windows.shape[0] // (hp * wp // window_size // window_size)
    x = windows.view(b, hp // window_size, wp // window_size, window_size, window_size, -1)
    x = x.permute(0, 1, 3, 2, 4, 5).contiguous().view(b, hp, wp, -1)
    return x[:, :h, :w, :].contiguous() if (hp > h or wp > w) else x


def get_rel_pos(q_size: int, k_size: int, rel_pos: torch.Tensor) -> torch.Tensor:
    max_rel_dist = int(2 * max(q_size, k_size) - 1)
    if rel_pos.shape[0] != max_rel_dist:
        resized = F.interpolate(
            rel_pos.reshape(1, rel_pos.shape[0], -1).permute(0, 2, 1), size=max_rel_dist, mode="linear"
        )
        resized = resized.reshape(-1, max_rel_dist).permute(1, 0)
    else:
        resized = rel_pos
    q_coords = torch.arange(q_size)[:, None] * max(k_size / q_size, 1.0)
    k_coords = torch.arange(k_size)[None, :] * max(q_size / k_size, 1.0)
    rel = (q_coords - k_coords) + (k_size - 1) * max(q_size / k_size, 1.0)
    return resized[rel.long()]


def add_decomposed_rel_pos(
    attn: torch.Tensor,
    q: torch.Tensor,
    rel_pos_h: torch.Tensor,
    rel_pos_w: torch.Tensor,
    q_size: tuple[int, int],
    k_size: tuple[int, int],
) -> torch.Tensor:
    q_h, q_w = q_size
    k_h, k_w = k_size
    rh = get_rel_pos(q_h, k_h, rel_pos_h)
    rw = get_rel_pos(q_w, k_w, rel_pos_w)
    b, _, dim = q.shape
    r_q = q.reshape(b, q_h, q_w, dim)
    rel_h = torch.einsum("bhwc,hkc->bhwk", r_q, rh)
    rel_w = torch.einsum("bhwc,wkc->bhwk", r_q, rw)
    attn = attn.view(b, q_h, q_w, k_h, k_w) + rel_h[:, :, :, :, None] + rel_w[:, :, :, None, :]
    return attn.view(b, q_h * q_w, k_h * k_w)


class SamAttention(nn.Module):
    def __init__(self, dim: int, num_heads: int, input_size: tuple[int, int]):
        super().__init__()
        self.num_heads = num_heads
        head_dim = dim // num_heads
        self.scale = head_dim**-0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=True)
        self.proj = nn.Linear(dim, dim)
        self.rel_pos_h = nn.Parameter(torch.zeros(2 * input_size[0] - 1, head_dim))
        self.rel_pos_w = nn.Parameter(torch.zeros(2 * input_size[1] - 1, head_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, h, w, _ = x.shape
        qkv = self.qkv(x).reshape(b, h * w, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.reshape(3, b * self.num_heads, h * w, -1).unbind(0)
        attn = (q * self.scale) @ k.transpose(-2, -1)
        attn = add_decomposed_rel_pos(attn, q, self.rel_pos_h, self.rel_pos_w, (h, w), (h, w))
        attn = attn.softmax(dim=-1)
        x = (attn @ v).view(b, self.num_heads, h, w, -1).permute(0, 2, 3, 1, 4).reshape(b, h, w, -1)
        return self.proj(x)


class SamMLPBlock(nn.Module):
    def __init__(self, dim: int, mlp_dim: int):
        super().__init__()
        self.lin1 = nn.Linear(dim, mlp_dim)
        self.lin2 = nn.Linear(mlp_dim, dim)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin2(self.act(self.lin1(x)))


class SamBlock(nn.Module):
    def __init__(self, dim: int, num_heads: int, mlp_dim: int, window_size: int, input_size: tuple[int, int]):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = SamAttention(dim, num_heads, input_size if window_size == 0 else (window_size, window_size))
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = SamMLPBlock(dim, mlp_dim)
        self.window_size = window_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        x = self.norm1(x)
        if self.window_size > 0:
            h, w = x.shape[1], x.shape[2]
            x, pad_hw = window_partition(x, self.window_size)
        x = self.attn(x)
        if self.window_size > 0:
            x = window_unpartition(x, self.window_size, pad_hw, (h, w))
        x = shortcut + x
        return x + self.mlp(self.norm2(x))


class _PatchEmbed(nn.Module):
    def __init__(self, patch: int, in_chans: int, dim: int):
        super().__init__()
        self.proj = nn.Conv2d(in_chans, dim, kernel_size=patch, stride=patch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).permute(0, 2, 3, 1)


class SamImageEncoderViT(nn.Module):
    def __init__(self, cfg: ReferenceConfig):
        super().__init__()
        grid = cfg.sam_image_size // cfg.sam_patch_size
        self.patch_embed = _PatchEmbed(cfg.sam_patch_size, 3, cfg.sam_width)
        self.pos_embed = nn.Parameter(torch.zeros(1, grid, grid, cfg.sam_width))
        self.blocks = nn.ModuleList(
            [
                SamBlock(
                    cfg.sam_width,
                    cfg.sam_heads,
                    cfg.sam_mlp_dim,
                    0 if i in cfg.sam_global_attn_indexes else cfg.sam_window_size,
                    (grid, grid),
                )
                for i in range(cfg.sam_depth)
            ]
        )
        self.neck = nn.Sequential(
            nn.Conv2d(cfg.sam_width, cfg.sam_out_chans, kernel_size=1, bias=False),
            LayerNorm2d(cfg.sam_out_chans),
            nn.Conv2d(cfg.sam_out_chans, cfg.sam_out_chans, kernel_size=3, padding=1, bias=False),
            LayerNorm2d(cfg.sam_out_chans),
        )
        self.net_2 = nn.Conv2d(cfg.sam_out_chans, cfg.sam_net2_chans, kernel_size=3, stride=2, padding=1, bias=False)
        self.net_3 = nn.Conv2d(cfg.sam_net2_chans, cfg.sam_net3_chans, kernel_size=3, stride=2, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x) + self.pos_embed
        for blk in self.blocks:
            x = blk(x)
        x = self.neck(x.permute(0, 3, 1, 2))
        return self.net_3(self.net_2(x))


def build_mm_projector_high(projector_type: str, in_dim: int, out_dim: int) -> nn.Module:
    if projector_type == "linear":
        return nn.Linear(in_dim, out_dim)
    depth = int(re.match(r"^mlp(\d+)x_gelu$", projector_type).group(1))
    layers = [nn.Linear(in_dim, out_dim)]
    for _ in range(1, depth):
        layers += [nn.GELU(), nn.Linear(out_dim, out_dim)]
    return nn.Sequential(*layers)


# ----------------------------------------------------------------------------------------------------------------------
# The whole model, attribute paths = the original state-dict keys
# ----------------------------------------------------------------------------------------------------------------------
class _Transformer(nn.Module):
    def __init__(self, cfg: ReferenceConfig):
        super().__init__()
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.h = nn.ModuleList([QWenBlock(cfg) for _ in range(cfg.num_hidden_layers)])
        self.ln_f = QWenRMSNorm(cfg.hidden_size, cfg.layer_norm_epsilon)
        self.vision_tower = QwenCLIPVisionTowerWrapper(cfg)
        self.mm_projector = nn.Sequential(
            Resampler(cfg.resampler_grid, cfg.hidden_size, cfg.resampler_heads, cfg.vit_width),
            nn.LayerNorm(cfg.hidden_size, eps=1e-6),
        )
        self.vision_tower_high = SamImageEncoderViT(cfg)
        self.mm_projector_high = build_mm_projector_high(cfg.projector_type, cfg.sam_net3_chans, cfg.hidden_size)


class OriginalOcrMllmToy(nn.Module):
    """OCR_MLLM_TOYQWenForCausalLM at inference (eval mode), reduced to what the logits depend on."""

    def __init__(self, cfg: ReferenceConfig):
        super().__init__()
        self.cfg = cfg
        self.transformer = _Transformer(cfg)
        self.lm_head = nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)

    # --- images → features (encode_images_high / encode_images, then cat(high, low)) ---
    def encode_images(self, images: torch.Tensor, images_high: torch.Tensor) -> torch.Tensor:
        t = self.transformer
        high = t.vision_tower_high(images_high)  # (B, C, g, g)
        high = t.mm_projector_high(high.flatten(2).permute(0, 2, 1))
        low = t.mm_projector(t.vision_tower(images))
        return torch.cat((high, low), dim=1)

    def _ntk_alpha(self, true_seq_len: int) -> float:
        context_value = math.log(true_seq_len / self.cfg.seq_length, 2) + 1
        return max(2 ** math.ceil(context_value) - 1, 1)

    def forward(
        self,
        input_ids: torch.Tensor,
        images: torch.Tensor | None = None,
        images_high: torch.Tensor | None = None,
        image_token_index: int = ORIGINAL_IMAGE_TOKEN_INDEX,
        ntk_alpha: float | None = None,
    ) -> torch.Tensor:
        """input_ids: (B, L) with one `image_token_index` per image (LLaVA style); images (N, 3, H, W) and
        images_high (N, 3, H', W') in order of appearance. The expanded sequences must all have the same length
        (no padding). Returns logits (B, L', vocab)."""
        t = self.transformer
        features = self.encode_images(images, images_high) if images is not None else None
        embeds, cur = [], 0
        for ids in input_ids:
            pos = torch.where(ids == image_token_index)[0].tolist()
            pieces, start = [], 0
            for p in pos:
                pieces.append(t.embed_tokens(ids[start:p]))
                pieces.append(features[cur].to(pieces[-1].dtype))
                cur += 1
                start = p + 1
            pieces.append(t.embed_tokens(ids[start:]))
            embeds.append(torch.cat(pieces, dim=0))
        if features is not None and cur != features.shape[0]:
            raise ValueError(f"{features.shape[0]} images for {cur} placeholders")
        x = torch.stack(embeds, dim=0)
        L = x.shape[1]
        if ntk_alpha is None:
            ntk_alpha = self._ntk_alpha(L) if (self.cfg.use_dynamic_ntk and not self.training) else 1.0
        rot_dim = (
            self.cfg.kv_channels if self.cfg.rotary_pct == 1.0 else int(self.cfg.kv_channels * self.cfg.rotary_pct)
        )
        cos, sin = qwen_rotary_cos_sin(rot_dim, self.cfg.rotary_emb_base, L, ntk_alpha, device=x.device)
        for blk in t.h:
            x = blk(x, cos, sin)
        return self.lm_head(t.ln_f(x))

    @torch.no_grad()
    def greedy(
        self,
        input_ids: torch.Tensor,
        images: torch.Tensor | None = None,
        images_high: torch.Tensor | None = None,
        image_token_index: int = ORIGINAL_IMAGE_TOKEN_INDEX,
        max_new_tokens: int = 5,
    ) -> torch.Tensor:
        """Greedy decoding by full recomputation. Like the original, the NTK alpha of the prompt is kept during
        decoding (QWen caches `ntk_alpha_list` at prefill)."""
        ids = input_ids
        alpha = None
        out = []
        for step in range(max_new_tokens):
            logits = self.forward(ids, images, images_high, image_token_index, ntk_alpha=alpha)
            if step == 0 and self.cfg.use_dynamic_ntk:
                alpha = self._ntk_alpha(logits.shape[1])
            nxt = logits[:, -1].argmax(-1, keepdim=True)
            out.append(nxt)
            ids = torch.cat([ids, nxt], dim=1)
        return torch.cat(out, dim=1)


# ----------------------------------------------------------------------------------------------------------------------
# Tiny original-layout checkpoint builder
# ----------------------------------------------------------------------------------------------------------------------
def tiny_reference_config(**overrides) -> ReferenceConfig:
    cfg = ReferenceConfig(
        vocab_size=512,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        kv_channels=16,
        intermediate_size=2 * 96,
        seq_length=2048,
        vit_width=32,
        vit_layers=2,
        vit_heads=4,
        vit_mlp_size=80,
        vit_patch_size=14,
        vit_image_size=56,
        vit_pos_grid=2,
        resampler_grid=2,
        resampler_heads=4,
        sam_width=32,
        sam_depth=2,
        sam_heads=2,
        sam_mlp_dim=64,
        sam_patch_size=16,
        sam_image_size=128,
        sam_window_size=4,
        sam_global_attn_indexes=[1],
        sam_out_chans=16,
        sam_net2_chans=32,
        sam_net3_chans=64,
        projector_type="mlp2x_gelu",
    )
    for k, v in overrides.items():
        setattr(cfg, k, v)
    return cfg


def randomize_(model: nn.Module, seed: int = 0, std: float = 0.08) -> nn.Module:
    """Trained-looking random weights: nothing left at its trivial init (LayerNorm weights ≠ 1, biases ≠ 0, rel-pos
    and position tables ≠ 0), so that a swapped or mis-permuted tensor changes the output."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=g)
            if p.dim() == 1 and name.endswith("weight"):  # RMSNorm / LayerNorm / LayerNorm2d scales
                p.copy_(1.0 + 0.2 * noise)
            elif name.endswith("embed_tokens.weight"):
                p.copy_(0.5 * noise)
            else:
                p.copy_(std * noise if p.dim() > 1 else 0.1 * noise)
    return model


# 256 single bytes + a few merges (each merge = two existing tokens, the way tiktoken ranks are built)
TINY_MERGES = [b"th", b"he", b"in", b"er", b" t", b"the", b" the", b"ing", b"ex", b"ext"]


def write_tiny_tiktoken(path: str | os.PathLike) -> int:
    tokens = [bytes([i]) for i in range(256)] + TINY_MERGES
    with open(path, "w") as f:
        for rank, tok in enumerate(tokens):
            f.write(f"{base64.b64encode(tok).decode()} {rank}\n")
    return len(tokens)


def _save_bin_shards(
    state_dict: dict[str, torch.Tensor], out_dir: str, num_shards: int, prefix: str = "pytorch_model"
) -> None:
    keys = list(state_dict)
    if num_shards <= 1:
        torch.save(state_dict, os.path.join(out_dir, f"{prefix}.bin"))
        return
    chunks = [keys[i::num_shards] for i in range(num_shards)]
    weight_map, total = {}, 0
    for i, chunk in enumerate(chunks):
        name = f"{prefix}-{i + 1:05d}-of-{num_shards:05d}.bin"
        torch.save({k: state_dict[k] for k in chunk}, os.path.join(out_dir, name))
        for k in chunk:
            weight_map[k] = name
            total += state_dict[k].numel() * state_dict[k].element_size()
    with open(os.path.join(out_dir, f"{prefix}.bin.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)


def _save_safetensors_shards(state_dict: dict[str, torch.Tensor], out_dir: str, num_shards: int) -> None:
    from safetensors.torch import save_file

    keys = list(state_dict)
    chunks = [keys[i::num_shards] for i in range(num_shards)]
    weight_map = {}
    for i, chunk in enumerate(chunks):
        name = f"model-{i + 1:05d}-of-{num_shards:05d}.safetensors"
        save_file(
            {k: state_dict[k].contiguous() for k in chunk}, os.path.join(out_dir, name), metadata={"format": "pt"}
        )
        weight_map.update(dict.fromkeys(chunk, name))
    with open(os.path.join(out_dir, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {}, "weight_map": weight_map}, f, indent=2)


def qwen_config_json(cfg: ReferenceConfig) -> dict:
    """config.json of an OCR_MLLM_TOY Qwen checkpoint (QWen fields + the LLaVA-style mm fields)."""
    return {
        "architectures": ["OCR_MLLM_TOYQWenForCausalLM"],
        "model_type": "OCR_MLLM_TOY_Qwen",
        "auto_map": {
            "AutoConfig": "configuration_qwen.QWenConfig",
            "AutoModelForCausalLM": "modeling_qwen.QWenLMHeadModel",
        },
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.hidden_size,
        "num_hidden_layers": cfg.num_hidden_layers,
        "num_attention_heads": cfg.num_attention_heads,
        "kv_channels": cfg.kv_channels,
        "intermediate_size": cfg.intermediate_size,
        "layer_norm_epsilon": cfg.layer_norm_epsilon,
        "rotary_emb_base": cfg.rotary_emb_base,
        "rotary_pct": cfg.rotary_pct,
        "seq_length": cfg.seq_length,
        "max_position_embeddings": 4 * cfg.seq_length,
        "use_dynamic_ntk": cfg.use_dynamic_ntk,
        "use_logn_attn": cfg.use_logn_attn,
        "use_flash_attn": "auto",
        "no_bias": True,
        "tie_word_embeddings": False,
        "scale_attn_weights": True,
        "emb_dropout_prob": 0.0,
        "attn_dropout_prob": 0.0,
        "initializer_range": 0.02,
        "bf16": False,
        "fp16": True,
        "fp32": False,
        "tokenizer_class": "QWenTokenizer",
        "torch_dtype": "float16",
        "use_cache": True,
        # LLaVA-style multimodal fields written by the original training code
        "mm_vision_tower": "./ocr_mllm_toy/pretrain_weight/qwen_vit_448",
        "mm_projector_type": cfg.projector_type,
        "mm_hidden_size": cfg.sam_net3_chans,
        "mm_vision_select_layer": -1,
        "mm_vision_select_feature": "patch",
        "mm_use_im_start_end": False,
        "mm_use_im_patch_token": False,
        "image_aspect_ratio": "pad",
        "tokenizer_model_max_length": cfg.seq_length,
        "tokenizer_padding_side": "right",
        "tune_mm_mlp_adapter": False,
    }


def build_tiny_original_checkpoint(
    root: str | os.PathLike,
    cfg: ReferenceConfig | None = None,
    seed: int = 0,
    layout: str = "split",
    weight_format: str = "bin",
    embed_key: str = "embed_tokens",
) -> tuple[OriginalOcrMllmToy, dict]:
    """Write a tiny random checkpoint in the original layout under `root` and return (model, paths).

    layout "split" (the released form): `root/ckpt/` holds the LLM shards + index, config.json, qwen.tiktoken,
        generation_config.json and `mm_projector.bin` (both projectors); `root/qwen_vit_448/` the stripped ViT
        (`pytorch_model.bin`, config.json with `vision_config`, preprocessor_config.json); `root/vision_tower_high.bin`
        the stripped SAM.
    layout "full": every key (LLM, ViT, SAM, projectors) in the shards of `root/ckpt/`, as a full training
        checkpoint saves them, and no separate files.
    weight_format "bin" (`pytorch_model-0000x-of-0000y.bin`) or "safetensors" (`model-0000x-of-0000y.safetensors`).
    embed_key "embed_tokens" (OCR_MLLM_TOY's rename) or "wte" (stock Qwen).
    """
    cfg = cfg or tiny_reference_config()
    torch.manual_seed(seed)
    model = randomize_(OriginalOcrMllmToy(cfg), seed=seed).eval()
    sd = {k: v.detach().clone() for k, v in model.state_dict().items()}
    ckpt = os.path.join(root, "ckpt")
    os.makedirs(ckpt, exist_ok=True)
    n_ranks = write_tiny_tiktoken(os.path.join(ckpt, "qwen.tiktoken"))
    with open(os.path.join(ckpt, "config.json"), "w") as f:
        json.dump(qwen_config_json(cfg), f, indent=2)
    with open(os.path.join(ckpt, "generation_config.json"), "w") as f:
        json.dump(
            {
                "chat_format": "chatml",
                "eos_token_id": n_ranks,
                "pad_token_id": n_ranks,
                "stop_words_ids": [[n_ranks]],
                "max_new_tokens": 512,
                "do_sample": False,
            },
            f,
        )

    vit_keys = {k for k in sd if k.startswith(VIT_PREFIX)}
    sam_keys = {k for k in sd if k.startswith(SAM_PREFIX)}
    proj_keys = {k for k in sd if k.startswith("transformer.mm_projector")}
    llm = {k: v for k, v in sd.items() if k not in vit_keys | sam_keys | proj_keys}
    if embed_key == "wte":
        llm = {("transformer.wte.weight" if k == "transformer.embed_tokens.weight" else k): v for k, v in llm.items()}
    paths = {"input": ckpt, "vit": None, "sam": None, "projector": None}

    if layout == "full":
        full = dict(llm)
        full.update({k: sd[k] for k in vit_keys | sam_keys | proj_keys})
        main = full
    else:
        main = llm
        torch.save({k: sd[k] for k in proj_keys}, os.path.join(ckpt, "mm_projector.bin"))
        vit_dir = os.path.join(root, "qwen_vit_448")
        os.makedirs(vit_dir, exist_ok=True)
        torch.save({k[len(VIT_PREFIX) :]: sd[k] for k in vit_keys}, os.path.join(vit_dir, "pytorch_model.bin"))
        with open(os.path.join(vit_dir, "config.json"), "w") as f:
            json.dump(
                {
                    "vision_config": {
                        "hidden_size": cfg.vit_width,
                        "num_hidden_layers": cfg.vit_layers,
                        "num_attention_heads": cfg.vit_heads,
                        "intermediate_size": cfg.vit_mlp_size,
                        "patch_size": cfg.vit_patch_size,
                        "image_size": cfg.vit_image_size,
                    }
                },
                f,
            )
        with open(os.path.join(vit_dir, "preprocessor_config.json"), "w") as f:
            json.dump(
                {
                    "image_processor_type": "CLIPImageProcessor",
                    "size": {"shortest_edge": cfg.vit_image_size},
                    "crop_size": {"height": cfg.vit_image_size, "width": cfg.vit_image_size},
                    "do_resize": True,
                    "do_center_crop": True,
                    "resample": 3,
                    "image_mean": [0.48145466, 0.4578275, 0.40821073],
                    "image_std": [0.26862954, 0.26130258, 0.27577711],
                },
                f,
            )
        sam_path = os.path.join(root, "vision_tower_high.bin")
        torch.save({k[len(SAM_PREFIX) :]: sd[k] for k in sam_keys}, sam_path)
        paths.update(vit=vit_dir, sam=sam_path, projector=os.path.join(ckpt, "mm_projector.bin"))

    if weight_format == "safetensors":
        _save_safetensors_shards(main, ckpt, num_shards=2)
    else:
        _save_bin_shards(main, ckpt, num_shards=2)
    paths["num_ranks"] = n_ranks
    paths["config"] = asdict(cfg)
    return model, paths
