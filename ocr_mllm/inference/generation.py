"""Batched and streamed generation on top of ``model.generate``.

Generation options understood everywhere (CLI flags, Gradio sliders, ``generate_batch`` kwargs):
``temperature`` (0 → greedy), ``top_p``, ``top_k`` (0 → off), ``repetition_penalty`` (1.0 → off),
``no_repeat_ngram_size`` (0 → off), ``max_new_tokens``. Any other keyword goes to ``model.generate`` unchanged.

Stopping: the eos ids of the model's ``generation_config`` plus the tokenizer's ``<|im_end|>`` id, checked on token
ids (not on decoded text, which is what broke stopping in the original). Batches are left-padded.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Sequence

import torch

from .images import load_images


if TYPE_CHECKING:
    from transformers import BatchFeature, PreTrainedModel, PreTrainedTokenizerBase, ProcessorMixin


logger = logging.getLogger("ocr_mllm.inference")

IM_END = "<|im_end|>"
DEFAULT_MAX_NEW_TOKENS = 512
GENERATION_OPTION_NAMES = (
    "temperature",
    "top_p",
    "top_k",
    "repetition_penalty",
    "no_repeat_ngram_size",
    "max_new_tokens",
)


# --------------------------------------------------------------------------------------------------------------------
# small helpers
# --------------------------------------------------------------------------------------------------------------------
def get_tokenizer(processor: ProcessorMixin | PreTrainedTokenizerBase) -> PreTrainedTokenizerBase:
    return getattr(processor, "tokenizer", processor)


def model_device(model: PreTrainedModel) -> torch.device:
    dev = getattr(model, "device", None)
    if dev is not None:
        return torch.device(dev)
    return next(model.parameters()).device


def model_dtype(model: PreTrainedModel) -> torch.dtype:
    dtype = getattr(model, "dtype", None)
    if isinstance(dtype, torch.dtype) and dtype.is_floating_point:
        return dtype
    for p in model.parameters():
        if p.dtype.is_floating_point:
            return p.dtype
    return torch.float32


def max_context_length(model: PreTrainedModel) -> int | None:
    """Largest sequence length the language model accepts (``max_position_embeddings``), or None if unknown."""
    config = getattr(model, "config", None)
    for cfg in (getattr(config, "text_config", None), config):
        value = getattr(cfg, "max_position_embeddings", None) if cfg is not None else None
        if isinstance(value, int) and value > 0:
            return value
    return None


def stop_token_ids(model: PreTrainedModel, processor: ProcessorMixin) -> list[int]:
    """eos ids from the generation config plus ``<|im_end|>`` (deduplicated, order kept)."""
    ids: list[int] = []
    gen_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if gen_eos is not None:
        ids.extend(gen_eos if isinstance(gen_eos, (list, tuple)) else [gen_eos])
    tok = get_tokenizer(processor)
    im_end = tok.convert_tokens_to_ids(IM_END)
    if isinstance(im_end, int) and im_end != getattr(tok, "unk_token_id", None) and im_end >= 0:
        ids.append(im_end)
    if not ids and tok.eos_token_id is not None:
        ids.append(tok.eos_token_id)
    out: list[int] = []
    for i in ids:
        if i is not None and int(i) not in out:
            out.append(int(i))
    return out


def pad_token_id(model: PreTrainedModel, processor: ProcessorMixin, eos_ids: Sequence[int]) -> int | None:
    tok = get_tokenizer(processor)
    if tok.pad_token_id is not None:
        return tok.pad_token_id
    gen_pad = getattr(getattr(model, "generation_config", None), "pad_token_id", None)
    if gen_pad is not None:
        return gen_pad
    return eos_ids[0] if eos_ids else None


def build_generate_kwargs(
    model: PreTrainedModel,
    processor: ProcessorMixin,
    temperature: float | None = 0.0,
    top_p: float | None = None,
    top_k: int | None = None,
    repetition_penalty: float | None = None,
    no_repeat_ngram_size: int | None = None,
    max_new_tokens: int | None = DEFAULT_MAX_NEW_TOKENS,
    **extra: Any,
) -> dict[str, Any]:
    """Turn user-level generation options into ``model.generate`` kwargs (greedy when temperature is 0/None)."""
    kwargs: dict[str, Any] = {}
    sample = temperature is not None and float(temperature) > 0
    kwargs["do_sample"] = sample
    if sample:
        kwargs["temperature"] = float(temperature)
        kwargs["top_p"] = float(top_p) if top_p is not None else 1.0
        kwargs["top_k"] = int(top_k) if top_k is not None else 0  # 0 disables top-k
    else:
        # neutral values so that sampling settings in the folder's generation_config neither apply nor warn
        kwargs.update(temperature=1.0, top_p=1.0, top_k=50)
    if repetition_penalty is not None and float(repetition_penalty) != 1.0:
        kwargs["repetition_penalty"] = float(repetition_penalty)
    if no_repeat_ngram_size:
        kwargs["no_repeat_ngram_size"] = int(no_repeat_ngram_size)
    kwargs["max_new_tokens"] = int(max_new_tokens if max_new_tokens is not None else DEFAULT_MAX_NEW_TOKENS)
    eos = stop_token_ids(model, processor)
    if eos:
        kwargs["eos_token_id"] = eos
    pad = pad_token_id(model, processor, eos)
    if pad is not None:
        kwargs["pad_token_id"] = pad
    kwargs["num_beams"] = extra.pop("num_beams", 1)
    kwargs.update(extra)
    return kwargs


def _normalize_images(conversations: Sequence, images: Sequence | None) -> list[list]:
    if images is None:
        return [[] for _ in conversations]
    if len(images) != len(conversations):
        raise ValueError(f"{len(conversations)} conversations but {len(images)} image lists")
    return [load_images(imgs) for imgs in images]


def prepare_inputs(
    model: PreTrainedModel, processor: ProcessorMixin, conversations: Sequence[list], images: Sequence | None = None
) -> BatchFeature | dict[str, Any]:
    """Chat template + processor for a batch of conversations (left padded), moved to the model's device/dtype."""
    for i, conv in enumerate(conversations):
        if not isinstance(conv, (list, tuple)):
            raise ValueError(f"conversation {i} is a {type(conv).__name__}, not a list of messages")
        if not conv:
            raise ValueError(f"conversation {i} is empty: it needs at least one user message")
    per_conv = _normalize_images(conversations, images)
    prompts = [processor.apply_chat_template(conv, add_generation_prompt=True) for conv in conversations]
    flat = [img for imgs in per_conv for img in imgs]
    inputs = processor(
        images=flat if flat else None,
        text=list(prompts),
        return_tensors="pt",
        padding=True,
        padding_side="left",
    )
    return move_inputs(inputs, model)


def move_inputs(inputs: BatchFeature | dict[str, Any], model: PreTrainedModel) -> BatchFeature | dict[str, Any]:
    device, dtype = model_device(model), model_dtype(model)
    moved = {}
    for key, value in inputs.items():
        if isinstance(value, torch.Tensor):
            value = value.to(device)
            if value.is_floating_point():
                value = value.to(dtype)
        moved[key] = value
    return type(inputs)(moved) if hasattr(inputs, "data") else moved


def _fit_max_new_tokens(model: PreTrainedModel, input_len: int, max_new_tokens: int) -> int:
    ctx = max_context_length(model)
    if ctx is None:
        return max_new_tokens
    room = ctx - input_len
    if room <= 0:
        raise ValueError(f"the prompt is {input_len} tokens, the model's context is {ctx}: nothing left to generate")
    if max_new_tokens > room:
        logger.warning("max_new_tokens %d cut to %d to fit the model's context of %d", max_new_tokens, room, ctx)
        return room
    return max_new_tokens


def clean_text(text: str, processor: ProcessorMixin | PreTrainedTokenizerBase | None = None) -> str:
    """Strip whitespace and any special-token text that survived decoding."""
    if processor is not None:
        tok = get_tokenizer(processor)
        for special in getattr(tok, "all_special_tokens", []) or []:
            if special and special in text:
                text = text.replace(special, "")
    for special in (IM_END, "<|im_start|>", "<|endoftext|>"):
        text = text.replace(special, "")
    return text.strip()


# --------------------------------------------------------------------------------------------------------------------
# batch generation
# --------------------------------------------------------------------------------------------------------------------
@torch.inference_mode()
def generate_from_inputs(
    model: PreTrainedModel, processor: ProcessorMixin, inputs: BatchFeature | dict[str, Any], **generation_kwargs: Any
) -> list[str]:
    gen = build_generate_kwargs(model, processor, **generation_kwargs)
    input_len = inputs["input_ids"].shape[1]
    gen["max_new_tokens"] = _fit_max_new_tokens(model, input_len, gen["max_new_tokens"])
    output = model.generate(**inputs, **gen)
    sequences = output.sequences if hasattr(output, "sequences") else output
    new_tokens = sequences[:, input_len:]
    texts = get_tokenizer(processor).batch_decode(new_tokens, skip_special_tokens=True)
    return [clean_text(t, processor) for t in texts]


def generate_batch(
    model: PreTrainedModel,
    processor: ProcessorMixin,
    conversations: Sequence[list],
    images: Sequence | None = None,
    **generation_kwargs: Any,
) -> list[str]:
    """Generate one answer per conversation.

    Args:
        conversations: list of chat message lists without the answer (TRL form; ``{"type": "image"}`` blocks mark
            where images go).
        images: one list of images (paths / PIL / arrays) per conversation, ``[]`` for text-only; or None.
        generation_kwargs: temperature (default 0 = greedy), top_p, top_k, repetition_penalty, no_repeat_ngram_size,
            max_new_tokens (default 512), or any other ``generate`` kwarg.

    Returns the decoded new text per conversation (special tokens skipped, stripped), in input order.
    """
    if not conversations:
        return []
    inputs = prepare_inputs(model, processor, conversations, images)
    return generate_from_inputs(model, processor, inputs, **generation_kwargs)


# --------------------------------------------------------------------------------------------------------------------
# streaming
# --------------------------------------------------------------------------------------------------------------------
class _EventStoppingCriteria:
    """Stops generation when ``event`` is set (a consumer that went away, a Gradio stop button)."""

    def __init__(self, event: threading.Event):
        self.event = event

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        return torch.full((input_ids.shape[0],), self.event.is_set(), dtype=torch.bool, device=input_ids.device)


def stream_from_inputs(
    model: PreTrainedModel,
    processor: ProcessorMixin,
    inputs: BatchFeature | dict[str, Any],
    stop_event: threading.Event | None = None,
    timeout: float | None = None,
    **generation_kwargs,
) -> Iterator[str]:
    """Yield decoded text chunks while ``model.generate`` runs in a background thread."""
    from transformers import StoppingCriteriaList, TextIteratorStreamer

    if inputs["input_ids"].shape[0] != 1:
        raise ValueError("streaming works on one conversation at a time")
    gen = build_generate_kwargs(model, processor, **generation_kwargs)
    gen["max_new_tokens"] = _fit_max_new_tokens(model, inputs["input_ids"].shape[1], gen["max_new_tokens"])
    stop_event = stop_event or threading.Event()
    criteria = StoppingCriteriaList([_EventStoppingCriteria(stop_event)])
    if "stopping_criteria" in gen:
        criteria.extend(gen.pop("stopping_criteria"))
    streamer = TextIteratorStreamer(
        get_tokenizer(processor), skip_prompt=True, timeout=timeout, skip_special_tokens=True
    )
    errors: list[BaseException] = []

    def _run() -> None:
        try:
            with torch.inference_mode():
                model.generate(**inputs, **gen, streamer=streamer, stopping_criteria=criteria)
        except BaseException as exc:  # forwarded to the consumer below
            errors.append(exc)
            streamer.end()

    thread = threading.Thread(target=_run, name="ocr-mllm-generate", daemon=True)
    thread.start()
    try:
        for chunk in streamer:
            if errors:
                break
            if chunk:
                yield chunk
    finally:
        stop_event.set()  # no-op when generation already finished; stops it when the consumer went away
        thread.join()
    if errors:
        raise errors[0]


def stream_generate(
    model: PreTrainedModel,
    processor: ProcessorMixin,
    messages: list,
    images: Iterable | None = None,
    stop_event: threading.Event | None = None,
    timeout: float | None = None,
    **generation_kwargs,
) -> Iterator[str]:
    """Stream the answer to one conversation as text chunks (``TextIteratorStreamer`` + a generate thread).

    ``"".join(stream_generate(...)).strip()`` equals ``generate_batch(...)[0]`` for greedy decoding.
    Close the generator (or set ``stop_event``) to stop generation early.
    """
    inputs = prepare_inputs(model, processor, [messages], [list(images) if images is not None else []])
    yield from stream_from_inputs(
        model, processor, inputs, stop_event=stop_event, timeout=timeout, **generation_kwargs
    )
