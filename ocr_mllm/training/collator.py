"""Training collator: TRL-form records → model inputs with labels on the answer tokens only.

Two templates (the original's two stages):

- ``plain`` (stage 1, image–caption alignment): ``<image>`` + caption + ``"\\n"``; the loss is on the caption and the
  newline only. No system turn, no chat markup (LLaVA's / the original's ``plain`` template).
- ``chat`` (stage 2, SFT): the processor's ChatML chat template; the loss is on the assistant turns (answer text +
  ``<|im_end|>``); system and user turns, image tokens, the assistant headers and padding are -100. Unlike the original
  (bug list §8.14) the user/system turns' ``<|im_start|>``/``<|im_end|>`` are not supervised.

Each text segment is tokenized on its own (the prompt exactly as the processor tokenizes it at inference, the answer as
the model has to produce it); each ``<image>`` is replaced by ``processor.replace_image_token`` first, the processor's
own expansion hook, so training and inference expand images in one place.

Unusable records raise :class:`ocr_mllm.data.loading.RecordError` (the one record error, with its reason code).

``max_length`` never cuts through an image: a record longer than ``max_length`` loses only the text tail after its last
image token (and keeps at least one supervised token); a record whose prompt alone does not fit is skipped with a
logged reason. Use :func:`filter_long_records` before training to drop such records up front.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch


if TYPE_CHECKING:
    from datasets import Dataset

from ..data.loading import (
    CORRUPT_IMAGE,
    EMPTY_TURN,
    IMAGE_COUNT_MISMATCH,
    MALFORMED_RECORD,
    NO_ANSWER,
    TOO_LONG,
    UNKNOWN_ROLE,
    RecordError,
)


logger = logging.getLogger(__name__)

IGNORE_INDEX = -100
TEMPLATES = ("plain", "chat")


def _block_text(block: Any) -> str | None:
    return block.get("text") if isinstance(block, dict) else None


def normalize_messages(messages: list[dict], num_images: int, image_token: str = "<image>") -> list[dict]:
    """TRL-form messages with block contents; string contents become text blocks.

    When no message holds an image block nor a literal ``image_token`` and the record has images, the images are placed
    before the text of the first user turn (TRL's ``prepare_multimodal_messages`` rule)."""
    if not messages:
        raise RecordError(MALFORMED_RECORD, "record has no messages")
    has_image_slot = False
    out = []
    for message in messages:
        role = message.get("role")
        if role not in ("system", "user", "assistant"):
            raise RecordError(UNKNOWN_ROLE, f"unsupported role {role!r}")
        content = message.get("content")
        if content is None:
            content = ""
        if isinstance(content, str):
            if image_token in content:
                has_image_slot = True
            blocks = [{"type": "text", "text": content}]
        else:
            blocks = []
            for block in content:
                kind = block.get("type")
                if kind == "image":
                    has_image_slot = True
                    blocks.append({"type": "image"})
                elif kind == "text":
                    text = _block_text(block) or ""
                    has_image_slot |= image_token in text
                    blocks.append({"type": "text", "text": text})
                else:
                    raise RecordError(MALFORMED_RECORD, f"unsupported content block type {kind!r}")
        out.append({"role": role, "content": blocks})
    if num_images and not has_image_slot:
        for message in out:
            if message["role"] == "user":
                message["content"] = [{"type": "image"} for _ in range(num_images)] + message["content"]
                break
        else:
            raise RecordError(MALFORMED_RECORD, "record has images but no user turn to put them in")
    return out


def _message_text(message: dict) -> str:
    return "".join(block.get("text", "") for block in message["content"] if block["type"] == "text")


@dataclass
class EncodedExample:
    input_ids: list[int]
    labels: list[int]
    images: list  # in placeholder order
    num_views: list[int]


@dataclass
class OcrMllmDataCollator:
    """Collates TRL-form records (``{"messages": [...], "images": [...]}``) for `OcrMllmForConditionalGeneration`.

    Args:
        processor: the model's `OcrMllmProcessor`.
        template: ``"plain"`` (stage 1) or ``"chat"`` (stage 2).
        max_length: longest sequence (image tokens included); ``None`` for no limit.
        pad_to_multiple_of: pad the batch length to a multiple of this.
        train_on_eos: supervise the ``<|im_end|>`` closing each assistant turn (needed to learn to stop).

    Returns batches with ``input_ids``, ``attention_mask``, ``labels`` (right-padded) and, when the batch has images,
    ``pixel_values``, ``high_res_pixel_values``, ``num_high_res_views``.
    """

    processor: Any
    template: str = "chat"
    max_length: int | None = None
    pad_to_multiple_of: int | None = None
    train_on_eos: bool = True
    return_tensors: str = "pt"
    skipped: Counter = field(default_factory=Counter, init=False, repr=False)

    def __post_init__(self):
        if self.template not in TEMPLATES:
            raise ValueError(f"template must be one of {TEMPLATES}, got {self.template!r}")
        self.tokenizer = self.processor.tokenizer
        self.image_token = self.processor.image_token
        self.image_token_id = self.processor.image_token_id
        self.pad_token_id = self.tokenizer.pad_token_id
        if self.pad_token_id is None:
            raise ValueError("The tokenizer has no pad token")
        self.eos_text = self.tokenizer.eos_token or "<|im_end|>"

    # ---------------------------------------------------------------------------------------------------------------
    # Segments: (text, supervised) pairs whose concatenation is the training text
    # ---------------------------------------------------------------------------------------------------------------
    def _render(self, messages: list[dict], add_generation_prompt: bool = False) -> str:
        if not messages:
            return ""
        return self.processor.apply_chat_template(
            messages, add_generation_prompt=add_generation_prompt, tokenize=False
        )

    def chat_segments(self, messages: list[dict]) -> list[tuple[str, bool]]:
        """Render with the processor's chat template turn by turn; assistant bodies are supervised."""
        segments, previous = [], ""
        if not any(message["role"] == "assistant" for message in messages):
            raise RecordError(NO_ANSWER, "record has no assistant turn to learn from")
        for index, message in enumerate(messages):
            full = self._render(messages[: index + 1])
            if not full.startswith(previous):
                raise RecordError(MALFORMED_RECORD, "the chat template does not render turn by turn (prefix mismatch)")
            if message["role"] != "assistant":
                segments.append((full[len(previous) :], False))
            else:
                header_end = self._render(messages[:index], add_generation_prompt=True)
                if not (header_end.startswith(previous) and full.startswith(header_end)):
                    raise RecordError(
                        MALFORMED_RECORD, "the chat template's generation prompt is not a prefix of the assistant turn"
                    )
                body = full[len(header_end) :]
                cut = body.rfind(self.eos_text)
                if cut < 0:  # a template without an end-of-turn token: everything is the answer
                    trained, tail = body, ""
                else:
                    end = cut + (len(self.eos_text) if self.train_on_eos else 0)
                    trained, tail = body[:end], body[end:]
                segments += [(header_end[len(previous) :], False), (trained, True), (tail, False)]
            previous = full
        return [(text, supervised) for text, supervised in segments if text]

    def plain_segments(self, messages: list[dict]) -> list[tuple[str, bool]]:
        """``<image>…`` + first answer + ``\\n`` (the original's pretraining format); later turns are ignored."""
        user = next((m for m in messages if m["role"] == "user"), None)
        answer = next((m for m in messages if m["role"] == "assistant"), None)
        if answer is None:
            raise RecordError(NO_ANSWER, "record has no assistant turn (caption) to learn from")
        num_images = 0
        if user is not None:
            num_images = sum(block["type"] == "image" for block in user["content"])
            num_images += _message_text(user).count(self.image_token)
        caption = _message_text(answer).strip()
        if not caption:
            raise RecordError(EMPTY_TURN, "empty caption")
        return [(self.image_token * num_images, False), (caption + "\n", True)]

    # ---------------------------------------------------------------------------------------------------------------
    # One record
    # ---------------------------------------------------------------------------------------------------------------
    def _num_views(self, image: Any) -> int:
        image_processor = self.processor.image_processor
        if not getattr(image_processor, "do_tiling", False):
            return 1
        from PIL import Image

        if isinstance(image, Image.Image):
            width, height = image.size
        else:
            from image_processing_ocr_mllm import load_image

            width, height = load_image(image).size
        return image_processor.get_number_of_high_res_views(width, height)

    def encode(self, example: dict) -> EncodedExample:
        """Token ids and labels of one record (images are not preprocessed here). Raises RecordError when unusable."""
        images = example.get("images")
        if images is None and example.get("image") is not None:
            images = [example["image"]]
        images = [image for image in (images or []) if image is not None]
        messages = normalize_messages(example["messages"], len(images), self.image_token)
        segments = self.plain_segments(messages) if self.template == "plain" else self.chat_segments(messages)

        n_placeholders = sum(text.count(self.image_token) for text, _ in segments)
        if n_placeholders != len(images):
            raise RecordError(
                IMAGE_COUNT_MISMATCH, f"{n_placeholders} image placeholder(s) but {len(images)} image(s)"
            )
        num_views = [self._num_views(image) for image in images]

        image_inputs = {"num_high_res_views": num_views}
        input_ids, labels, cursor = [], [], 0
        for text, supervised in segments:
            pieces = text.split(self.image_token)
            expanded = pieces[0]
            for piece in pieces[1:]:  # the processor's hook, as ProcessorMixin.__call__ uses it at inference
                expanded += self.processor.replace_image_token(image_inputs, image_idx=cursor) + piece
                cursor += 1
            ids = self.tokenizer(expanded, add_special_tokens=False)["input_ids"]
            input_ids += ids
            labels += ids if supervised else [IGNORE_INDEX] * len(ids)
        if self.image_token_id in [label for label in labels if label != IGNORE_INDEX]:
            raise RecordError(MALFORMED_RECORD, "a supervised turn contains the image token")
        if all(label == IGNORE_INDEX for label in labels):
            raise RecordError(NO_ANSWER, "no supervised tokens")
        return self._fit(EncodedExample(input_ids, labels, images, num_views))

    def _fit(self, encoded: EncodedExample) -> EncodedExample:
        """Apply max_length: cut only the text tail after the last image token, keeping ≥ 1 supervised token."""
        if self.max_length is None or len(encoded.input_ids) <= self.max_length:
            return encoded
        ids, labels = encoded.input_ids, encoded.labels
        image_positions = [i for i, token in enumerate(ids) if token == self.image_token_id]
        last_image = image_positions[-1] if image_positions else -1
        if last_image >= self.max_length:
            raise RecordError(
                TOO_LONG,
                f"{len(ids)} tokens > max_length {self.max_length} and its image tokens end at {last_image + 1}: "
                "cutting would split an image",
            )
        # labels[i] is predicted from position i-1, so a supervised label at i < max_length survives the cut
        if all(label == IGNORE_INDEX for label in labels[: self.max_length]):
            raise RecordError(
                TOO_LONG,
                f"{len(ids)} tokens > max_length {self.max_length} and the prompt alone fills it (no answer token left)",
            )
        return EncodedExample(ids[: self.max_length], labels[: self.max_length], encoded.images, encoded.num_views)

    # ---------------------------------------------------------------------------------------------------------------
    # Batch
    # ---------------------------------------------------------------------------------------------------------------
    def __call__(self, examples: list[dict]) -> dict[str, torch.Tensor]:
        encoded = []
        for example in examples:
            try:
                encoded.append(self.encode(example))
            except RecordError as err:
                self.skipped[err.reason] += 1
                logger.warning("Skipping a training record: %s", err)
        if not encoded:
            raise RuntimeError(
                "Every record of a batch was skipped (see the warnings); filter the dataset first with "
                "ocr_mllm.training.filter_long_records or raise max_length"
            )
        length = max(len(e.input_ids) for e in encoded)
        if self.pad_to_multiple_of:
            length = -(-length // self.pad_to_multiple_of) * self.pad_to_multiple_of
        batch_ids = torch.full((len(encoded), length), self.pad_token_id, dtype=torch.long)
        batch_labels = torch.full((len(encoded), length), IGNORE_INDEX, dtype=torch.long)
        attention = torch.zeros((len(encoded), length), dtype=torch.long)
        for row, e in enumerate(encoded):  # right padding, as in training everywhere
            n = len(e.input_ids)
            batch_ids[row, :n] = torch.tensor(e.input_ids)
            batch_labels[row, :n] = torch.tensor(e.labels)
            attention[row, :n] = 1
        batch = {"input_ids": batch_ids, "attention_mask": attention, "labels": batch_labels}
        images = [image for e in encoded for image in e.images]
        if images:
            pixels = self.processor.image_processor(images, return_tensors="pt")
            views = pixels["num_high_res_views"].tolist()
            expected = [v for e in encoded for v in e.num_views]
            if views != expected:
                raise RuntimeError(f"high-res views {views} differ from the token expansion's {expected}")
            batch["pixel_values"] = pixels["pixel_values"]
            batch["high_res_pixel_values"] = pixels["high_res_pixel_values"]
            batch["num_high_res_views"] = pixels["num_high_res_views"]
        return batch


def record_problem(collator: OcrMllmDataCollator, example: dict) -> RecordError | None:
    """Why a record cannot be trained on (None when it can)."""
    try:
        collator.encode(example)
    except RecordError as err:
        return err
    except (OSError, ValueError) as err:  # an unreadable image
        return RecordError(CORRUPT_IMAGE, str(err))
    return None


def filter_long_records(
    dataset: Dataset | list[dict],
    collator: OcrMllmDataCollator,
    num_proc: int | None = None,
    log: logging.Logger = logger,
) -> Dataset | list[dict]:
    """Drop the records the collator would skip (too long even without their answer, no answer, bad images…),
    logging how many for each reason. Works on `datasets.Dataset` (or any list of dicts)."""
    reasons: Counter = Counter()
    if isinstance(dataset, list):
        kept = []
        for index, example in enumerate(dataset):
            problem = record_problem(collator, example)
            if problem is None:
                kept.append(example)
            else:
                reasons[problem.reason] += 1
                log.warning("Skipping record %d: %s", index, problem)
        _log_reasons(reasons, len(dataset), log)
        return kept

    def check(example: dict) -> dict:
        problem = record_problem(collator, example)
        return {"_reason": problem.reason if problem else "", "_problem": str(problem) if problem else ""}

    checked = dataset.map(
        check, remove_columns=dataset.column_names, num_proc=num_proc, desc="Checking record lengths"
    )
    problems = checked["_problem"]
    keep = [i for i, problem in enumerate(problems) if not problem]
    for index, (reason, problem) in enumerate(zip(checked["_reason"], problems)):
        if problem:
            reasons[reason] += 1
            if reasons[reason] <= 5:
                log.warning("Skipping record %d: %s", index, problem)
    _log_reasons(reasons, len(problems), log)
    return dataset.select(keep) if len(keep) != len(problems) else dataset


def _log_reasons(reasons: Counter, total: int, log: logging.Logger) -> None:
    if reasons:
        log.warning(
            "Skipped %d of %d records: %s",
            sum(reasons.values()),
            total,
            "; ".join(f"{n}× {r}" for r, n in reasons.items()),
        )
