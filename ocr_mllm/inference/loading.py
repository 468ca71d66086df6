"""Load an OCR MLLM folder (trust_remote_code) with sensible device / dtype / quantization defaults.

``device="auto"``: CUDA when available, else CPU. ``dtype="auto"``: bfloat16 on CUDA (float16 on GPUs without bf16),
float32 elsewhere. 4/8-bit loading goes through bitsandbytes and only works with a CUDA GPU; bitsandbytes is imported
lazily (by transformers, when the model is quantized), never when this module is imported.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch


if TYPE_CHECKING:
    from transformers import BitsAndBytesConfig, PreTrainedModel, ProcessorMixin


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


# The built-in reader the front-ends use when no --model is given: trained by scripts/quickstart.py's recipe and
# committed with the repository (models/reader-mini/README.md: recipe, data, measured table).
DEFAULT_MODEL = str(Path(__file__).resolve().parents[2] / "models" / "reader-mini")


class InferenceSetupError(RuntimeError):
    """A user-facing configuration problem (no GPU for 4-bit, unknown dtype, a damaged model folder, ...).
    The message is one line that names the folder or file and what is wrong."""


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")


def _looks_like_a_path(path: str) -> bool:
    """A local path rather than a Hub id ("org/name"): absolute, ./ ~ prefixes, several slashes, or its first part
    exists here (``models/reader-mini`` when ``models/`` does)."""
    if os.path.isabs(path) or path.startswith((".", "~")) or path.count("/") > 1 or os.sep != "/" and os.sep in path:
        return True
    return "/" in path and os.path.isdir(path.split("/", 1)[0])


def resolve_model_source(path: str | os.PathLike, trust_remote_code: bool | None = None) -> tuple[str, bool]:
    """Check ``path`` before anything is loaded and decide ``trust_remote_code``; returns ``(path, trust)``.

    * a local folder: ``config.json`` and the weights must be whole (:func:`ocr_mllm.folders.check_model_folder`);
      code is trusted without asking when the only Python files in it are this project's model code;
    * anything else (a Hub id, a folder with other Python files) runs foreign code: only with
      ``trust_remote_code=True`` (``--trust-remote-code``). ``None`` (the default) means "our folders only".
    Raises :class:`InferenceSetupError` naming the folder or file.
    """
    from ocr_mllm.folders import MODEL_CODE_FILES, FolderError, check_model_folder, foreign_code_files

    path = os.fspath(path)
    local = os.path.expanduser(path)
    if os.path.isdir(local):
        try:
            check_model_folder(local)
        except FolderError as exc:
            raise InferenceSetupError(str(exc)) from None
        if trust_remote_code is not None:
            return local, bool(trust_remote_code)
        foreign = foreign_code_files(local)
        if foreign:
            raise InferenceSetupError(
                f"{local} holds Python files that are not this project's model code ({', '.join(foreign)}); loading "
                "it runs them: pass --trust-remote-code (trust_remote_code=True) if you trust this folder"
            )
        return local, any(os.path.isfile(os.path.join(local, name)) for name in MODEL_CODE_FILES)
    if os.path.exists(local):
        raise InferenceSetupError(f"--model {path} is a file, not a model folder")
    if _looks_like_a_path(path):
        raise InferenceSetupError(f"model folder {path} does not exist (check the path)")
    if not trust_remote_code:
        raise InferenceSetupError(
            f"{path} does not exist as a local folder; as a Hugging Face Hub id, loading it downloads and runs that "
            "repository's Python code: pass --trust-remote-code (trust_remote_code=True) if you trust it"
        )
    return path, True


def check_tokenizer_matches(model: PreTrainedModel, processor: ProcessorMixin, path: str) -> None:
    """The tokenizer must know the model's image token under the model's id, and fit its embedding matrix."""
    tokenizer = getattr(processor, "tokenizer", processor)
    config = getattr(model, "config", None)
    image_token = getattr(config, "image_token", None) or getattr(processor, "image_token", None) or "<image>"
    expected = getattr(config, "image_token_id", None)
    if expected is not None:
        got = tokenizer.convert_tokens_to_ids(image_token)
        if got != expected:
            raise InferenceSetupError(
                f"the tokenizer in {path} maps {image_token!r} to id {got}, but config.json has image_token_id "
                f"{expected}: the tokenizer files do not belong to this model (use the tokenizer it was built or "
                "trained with)"
            )
    embeddings = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    weight = getattr(embeddings, "weight", None)
    # under DeepSpeed ZeRO-3 the local tensor is an empty partition; ds_shape is the full one
    rows = getattr(weight, "ds_shape", getattr(weight, "shape", [None]))[0]
    if rows is not None and len(tokenizer) > rows:
        raise InferenceSetupError(
            f"the tokenizer in {path} has {len(tokenizer)} tokens, but the model's embedding has {rows} rows: ids "
            f"from {rows} on would fail in generation (the tokenizer files do not belong to this model)"
        )


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InferenceSetupError(
            f"--device {device} was asked for, but CUDA is not available on this machine; use --device cpu"
        )
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
        raise InferenceSetupError(
            f"unknown dtype {dtype!r}; choose one of auto, {', '.join(sorted(DTYPE_ALIASES))}"
        ) from None


def quantization_config(
    load_in: str,
    compute_dtype: torch.dtype,
    device: torch.device,
    skip_modules: tuple[str, ...] | list[str] = DEFAULT_QUANT_SKIP_MODULES,
) -> BitsAndBytesConfig:
    """bitsandbytes 4-bit (NF4, double quantization) or 8-bit for the LLM; the vision side and lm_head stay in full
    precision. For inference and QLoRA training alike; raises InferenceSetupError without a CUDA GPU or bitsandbytes."""
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
    trust_remote_code: bool | None = None,
    quant_skip_modules: tuple[str, ...] | list[str] | None = None,
    revision: str | None = None,
    for_training: bool = False,
    **model_kwargs: Any,
) -> tuple[PreTrainedModel, ProcessorMixin]:
    """Load ``(model, processor)`` from a model folder or Hub id, ready for ``generate`` (eval mode, left padding),
    or with ``for_training=True`` for the trainers (train mode, no KV cache, placement left to the Trainer /
    DeepSpeed; a quantized model goes to this process's ``LOCAL_RANK`` GPU). The one model loader of the project.

    Args:
        path: model folder written by ``scripts/build_model.py`` / ``save_pretrained`` (or a Hub id).
        device: ``"auto"`` (CUDA if present, else CPU), ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ...
        dtype: ``"auto"`` (CUDA → bf16, else fp32), ``"bf16"``, ``"fp16"``, ``"fp32"`` or a ``torch.dtype``.
        load_in: ``None``, ``"4bit"`` or ``"8bit"`` (bitsandbytes, CUDA only; raises ``InferenceSetupError`` otherwise).
        attn_implementation: passed to ``from_pretrained`` (e.g. ``"sdpa"``, ``"eager"``).
        trust_remote_code: ``None`` (default): only for local folders whose Python files are this project's model
            code; ``True``: also Hub ids and other folders (runs their code); ``False``: never.
        revision: the Hub revision (branch, tag or commit) of a Hub id.

    A missing folder, a broken ``config.json``, missing or truncated weights, a tokenizer that does not match the
    model, or foreign code without ``trust_remote_code=True`` raise :class:`InferenceSetupError` (one line naming
    the folder or file).
    """
    from transformers import AutoModelForImageTextToText, AutoProcessor

    path, trust_remote_code = resolve_model_source(path, trust_remote_code)
    dev = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, dev)
    kwargs: dict[str, Any] = dict(trust_remote_code=trust_remote_code, dtype=torch_dtype, revision=revision)
    kwargs.update(model_kwargs)
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    if load_in:
        skip = quant_skip_modules if quant_skip_modules is not None else DEFAULT_QUANT_SKIP_MODULES
        kwargs["quantization_config"] = quantization_config(load_in, torch_dtype, dev, skip)
        if for_training:  # one GPU per process under accelerate / torchrun
            kwargs["device_map"] = {"": int(os.environ.get("LOCAL_RANK", 0))}
        else:
            kwargs["device_map"] = {"": dev.index if dev.index is not None else torch.cuda.current_device()}

    try:
        processor = AutoProcessor.from_pretrained(path, trust_remote_code=trust_remote_code, revision=revision)
    except Exception as exc:  # one line naming the folder instead of a traceback deep in transformers
        raise InferenceSetupError(f"cannot load the processor / tokenizer of {path}: {_first_line(exc)}") from exc
    try:
        model = AutoModelForImageTextToText.from_pretrained(path, **kwargs)
    except Exception as exc:
        raise InferenceSetupError(f"cannot load the model from {path}: {_first_line(exc)}") from exc
    check_tokenizer_matches(model, processor, path)
    if for_training:
        model.config.use_cache = False
        if hasattr(model.config, "text_config"):
            model.config.text_config.use_cache = False
        logger.info("loaded %s for training (%s%s)", path, torch_dtype, f", {load_in}" if load_in else "")
        return model, processor
    if not load_in:
        model.to(dev)
    model.eval()

    tokenizer = getattr(processor, "tokenizer", processor)
    tokenizer.padding_side = "left"
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    logger.info("loaded %s on %s (%s%s)", path, dev, torch_dtype, f", {load_in}" if load_in else "")
    return model, processor
