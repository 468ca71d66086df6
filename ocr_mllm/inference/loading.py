"""Load an OCR MLLM folder (trust_remote_code) with sensible device / dtype / quantization defaults.

``device="auto"``: CUDA when available, else CPU. ``dtype="auto"``: bfloat16 on CUDA (float16 on GPUs without bf16),
float32 elsewhere. 4/8-bit loading goes through bitsandbytes and only works with a CUDA GPU; bitsandbytes is imported
lazily (by transformers, when the model is quantized), never when this module is imported.
"""

from __future__ import annotations

import importlib.util
import logging
from typing import Any

import torch

logger = logging.getLogger("ocr_mllm.inference")

DTYPE_ALIASES = {
    "fp32": torch.float32,
    "float32": torch.float32,
    "float": torch.float32,
    "bf16": torch.bfloat16,
    "bfloat16": torch.bfloat16,
    "fp16": torch.float16,
    "float16": torch.float16,
    "half": torch.float16,
}

# Modules that stay in full precision when the LLM is quantized: the vision encoders, resampler and projectors are small
# and sensitive (the original never quantized them either), and the lm_head. transformers matches these patterns
# against full module names from the start (as regexes) or as suffixes, hence the leading ".*".
DEFAULT_QUANT_SKIP_MODULES = [
    "lm_head",
    r".*vision_tower",
    r".*vision_model",
    r".*visual",
    r".*resampler",
    r".*high_res_\w+",
    r".*projector",
]


class InferenceSetupError(RuntimeError):
    """A user-facing configuration problem (no GPU for 4-bit, unknown dtype, ...)."""


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InferenceSetupError(f"--device {device} was asked for, but CUDA is not available on this machine; use --device cpu")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise InferenceSetupError(f"--device {device}: only {torch.cuda.device_count()} CUDA device(s) visible")
    if dev.type == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise InferenceSetupError(f"--device {device}: MPS is not available")
    return dev


def resolve_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype is None or dtype == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    try:
        return DTYPE_ALIASES[str(dtype).lower()]
    except KeyError:
        raise InferenceSetupError(f"unknown dtype {dtype!r}; choose one of auto, {', '.join(sorted(DTYPE_ALIASES))}") from None


def _quantization_config(load_in: str, compute_dtype: torch.dtype, device: torch.device, skip_modules):
    mode = str(load_in).lower().replace("-", "").replace("_", "")
    if mode in ("4", "4bit", "int4", "nf4"):
        bits = 4
    elif mode in ("8", "8bit", "int8"):
        bits = 8
    else:
        raise InferenceSetupError(f"--load-in must be 4bit or 8bit, got {load_in!r}")
    if device.type != "cuda":
        raise InferenceSetupError(
            f"--load-in {bits}bit needs a CUDA GPU (bitsandbytes); the model would run on {device}. "
            "Drop --load-in to run in full precision on CPU."
        )
    if importlib.util.find_spec("bitsandbytes") is None:
        raise InferenceSetupError(
            f"--load-in {bits}bit needs the bitsandbytes package: pip install bitsandbytes (or drop --load-in)."
        )
    from transformers import BitsAndBytesConfig  # does not import bitsandbytes itself

    if bits == 4:
        return BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=compute_dtype,
            llm_int8_skip_modules=list(skip_modules),
        )
    return BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=list(skip_modules))


def load_model_and_processor(
    path: str,
    device: str | torch.device | None = "auto",
    dtype: str | torch.dtype | None = "auto",
    load_in: str | None = None,
    attn_implementation: str | None = None,
    trust_remote_code: bool = True,
    quant_skip_modules=None,
    **model_kwargs: Any,
):
    """Load ``(model, processor)`` from a model folder or Hub id, ready for ``generate`` (eval mode, left padding).

    Args:
        path: model folder written by ``scripts/build_model.py`` / ``save_pretrained`` (or a Hub id).
        device: ``"auto"`` (CUDA if present, else CPU), ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ...
        dtype: ``"auto"`` (CUDA → bf16, else fp32), ``"bf16"``, ``"fp16"``, ``"fp32"`` or a ``torch.dtype``.
        load_in: ``None``, ``"4bit"`` or ``"8bit"`` (bitsandbytes, CUDA only; raises ``InferenceSetupError`` otherwise).
        attn_implementation: passed to ``from_pretrained`` (e.g. ``"sdpa"``, ``"eager"``).
    """
    from transformers import AutoModelForImageTextToText, AutoProcessor

    dev = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, dev)
    kwargs: dict[str, Any] = dict(trust_remote_code=trust_remote_code, dtype=torch_dtype, **model_kwargs)
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    if load_in:
        skip = quant_skip_modules if quant_skip_modules is not None else DEFAULT_QUANT_SKIP_MODULES
        kwargs["quantization_config"] = _quantization_config(load_in, torch_dtype, dev, skip)
        kwargs["device_map"] = {"": dev.index if dev.index is not None else torch.cuda.current_device()}

    processor = AutoProcessor.from_pretrained(path, trust_remote_code=trust_remote_code)
    model = AutoModelForImageTextToText.from_pretrained(path, **kwargs)
    if not load_in:
        model.to(dev)
    model.eval()

    tokenizer = getattr(processor, "tokenizer", processor)
    tokenizer.padding_side = "left"
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    logger.info("loaded %s on %s (%s%s)", path, dev, torch_dtype, f", {load_in}" if load_in else "")
    return model, processor
