# Copyright 2026 The OCR-MLLM authors. Licensed under the Apache License, Version 2.0.
"""Processor of OCR-MLLM: tokenizer + image processor (`image_processing_ocr_mllm.py`) + a ChatML chat template, on
transformers' `ProcessorMixin.__call__` (which validates, runs the image processor, expands each placeholder through
`replace_image_token`, tokenizes and re-checks the image token counts).

Copied next to the weights by `save_pretrained`; loaded with `trust_remote_code=True`.
"""

from collections.abc import Sequence
from typing import Any

from transformers.feature_extraction_utils import BatchFeature
from transformers.processing_utils import MultiModalData, ProcessingKwargs, ProcessorMixin
from transformers.tokenization_utils_base import PreTrainedTokenizerBase


try:  # as a trust_remote_code module (package-relative) ...
    from .image_processing_ocr_mllm import (
        MAX_IMAGE_PIXELS,
        PER_CALL_IMAGE_OPTIONS,
        OcrMllmImageProcessor,
        OcrMllmImagesKwargs,
        load_image,
    )
except ImportError:  # ... or imported from the repository root
    from image_processing_ocr_mllm import (
        MAX_IMAGE_PIXELS,
        PER_CALL_IMAGE_OPTIONS,
        OcrMllmImageProcessor,
        OcrMllmImagesKwargs,
        load_image,
    )


DEFAULT_SYSTEM_PROMPT = "You are a helpful assistant."

# ChatML as the original (Qwen "mpt" template): default system turn, each image block rendered as "<image>\n".
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- if loop.first and message['role'] != 'system' -%}"
    "{{- '<|im_start|>system\\n" + DEFAULT_SYSTEM_PROMPT + "<|im_end|>\\n' -}}"
    "{%- endif -%}"
    "{{- '<|im_start|>' + message['role'] + '\\n' -}}"
    "{%- if message['content'] is string -%}"
    "{{- message['content'] -}}"
    "{%- else -%}"
    "{%- for block in message['content'] -%}"
    "{%- if block['type'] == 'image' -%}{{- '<image>\\n' -}}"
    "{%- elif block['type'] == 'text' -%}{{- block['text'] -}}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- endif -%}"
    "{{- '<|im_end|>\\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"
)


class OcrMllmProcessingKwargs(ProcessingKwargs, total=False):
    images_kwargs: OcrMllmImagesKwargs


class OcrMllmProcessor(ProcessorMixin):
    r"""
    Tokenizer + `OcrMllmImageProcessor` + a ChatML chat template. Each `image_token` in the text is expanded (by
    `replace_image_token`, called from `ProcessorMixin.__call__`) to the exact number of image tokens its image
    produces: `num_high_res_views · num_high_res_tokens_per_view + num_low_res_tokens` (512 at the default config, more
    with tiling). `_get_num_multimodal_tokens` gives the same counts from image sizes alone.
    """

    valid_processor_kwargs = OcrMllmProcessingKwargs
    text_kwargs = {"padding": False}  # defaults as class attributes (transformers' recommended form)

    def __init__(
        self,
        image_processor: OcrMllmImageProcessor | None = None,
        tokenizer: PreTrainedTokenizerBase | None = None,
        chat_template: str | None = None,
        image_token: str = "<image>",
        num_high_res_tokens_per_view: int = 256,
        num_low_res_tokens: int = 256,
        **kwargs,
    ):
        self.image_token = getattr(tokenizer, "image_token", None) or image_token
        self.image_token_id = tokenizer.convert_tokens_to_ids(self.image_token) if tokenizer is not None else None
        if tokenizer is not None and self.image_token_id in (None, getattr(tokenizer, "unk_token_id", None)):
            raise ValueError(f"The tokenizer has no token {self.image_token!r}: add it as a special token first")
        self.num_high_res_tokens_per_view = int(num_high_res_tokens_per_view)
        self.num_low_res_tokens = int(num_low_res_tokens)
        super().__init__(image_processor, tokenizer, chat_template=chat_template or CHAT_TEMPLATE, **kwargs)

    def num_image_tokens(self, num_high_res_views: int) -> int:
        return int(num_high_res_views) * self.num_high_res_tokens_per_view + self.num_low_res_tokens

    def _group_images(self, images: Any, placeholders_per_sample: list[int]) -> list:
        """Flat list of images in placeholder order; checks counts (flat or per-sample nested input)."""
        if images is None:
            images = []
        elif not isinstance(images, (list, tuple)):
            images = [images]
        nested = any(isinstance(item, (list, tuple)) for item in images) or (
            len(images) == len(placeholders_per_sample) and len(images) > 0 and all(item is None for item in images)
        )
        if nested:
            if len(images) != len(placeholders_per_sample):
                raise ValueError(f"Got image lists for {len(images)} samples but {len(placeholders_per_sample)} texts")
            flat = []
            for index, (sample_images, expected) in enumerate(zip(images, placeholders_per_sample)):
                sample_images = [] if sample_images is None else list(sample_images)
                if len(sample_images) != expected:
                    raise ValueError(
                        f"Sample {index} has {expected} `{self.image_token}` placeholder(s) but {len(sample_images)} image(s)"
                    )
                flat.extend(sample_images)
            return flat
        if len(images) != sum(placeholders_per_sample):
            raise ValueError(
                f"The text has {sum(placeholders_per_sample)} `{self.image_token}` placeholder(s) "
                f"(per sample: {placeholders_per_sample}) but {len(images)} image(s) were given"
            )
        return list(images)

    # -----------------------------------------------------------------------------------------------------------------
    # ProcessorMixin.__call__ hooks
    # -----------------------------------------------------------------------------------------------------------------
    def prepare_inputs_layout(
        self,
        images: Any = None,
        text: str | list[str] | None = None,
        videos: Any = None,
        audio: Any = None,
        **kwargs,
    ) -> tuple[list | None, list[str], Any, Any]:
        """Text → a list (an images-only call gets one `image_token` prompt per image); images → one flat list in
        placeholder order, checked against each sample's placeholders (per-sample nested lists accepted). Images are
        decoded by the image processor with the project's loader, not by transformers' `fetch_images` (which turns
        transparency black and loses 16-bit scans)."""
        if text is None and images is None:
            raise ValueError("Give text, images or both")
        if text is None:
            text = [self.image_token] * (len(images) if isinstance(images, (list, tuple)) else 1)
        text = [text] if isinstance(text, str) else list(text)
        if not all(isinstance(sample, str) for sample in text):
            raise ValueError("`text` must be a string or a list of strings")
        flat_images = self._group_images(images, [sample.count(self.image_token) for sample in text])
        return flat_images or None, text, videos, audio

    def validate_inputs(
        self,
        images: Any = None,
        text: str | list[str] | None = None,
        videos: Any = None,
        audio: Any = None,
        **kwargs,
    ) -> None:
        """Nothing left to check: `prepare_inputs_layout` matched the images to the placeholders, sample by sample."""
        if videos is not None or audio is not None:
            raise ValueError("OCR-MLLM takes images and text only")

    def _process_images(self, images: list, **kwargs) -> tuple[BatchFeature, list[str]]:
        options = {key: value for key, value in kwargs.items() if key in PER_CALL_IMAGE_OPTIONS and value is not None}
        image_inputs = self.image_processor(images, **options)
        return image_inputs, [self.replace_image_token(image_inputs, image_idx=i) for i in range(len(images))]

    def replace_image_token(self, image_inputs: dict, image_idx: int, **kwargs) -> str:
        return self.image_token * self.num_image_tokens(image_inputs["num_high_res_views"][image_idx])

    def _get_num_multimodal_tokens(
        self, image_sizes: Sequence[Sequence[int]] | None = None, **kwargs
    ) -> MultiModalData:
        """Image tokens per image from its (height, width) alone, without decoding it (vLLM's Transformers backend
        places image tokens this way). `num_image_patches`: the high-res views of each image."""
        if image_sizes is None:
            return MultiModalData()
        images_kwargs = kwargs.get("images_kwargs", kwargs)
        options = {key: images_kwargs[key] for key in ("do_tiling", "min_tiles", "max_tiles") if key in images_kwargs}
        views = [
            self.image_processor.get_number_of_high_res_views(int(width), int(height), **options)
            for height, width in image_sizes
        ]
        return MultiModalData(num_image_tokens=[self.num_image_tokens(n) for n in views], num_image_patches=views)

    def _check_special_mm_tokens(self, text: list[str], text_inputs: BatchFeature, modalities: list[str]) -> None:
        for index, ids in enumerate(text_inputs["input_ids"]):
            ids = ids.tolist() if hasattr(ids, "tolist") else ids
            found, expected = list(ids).count(self.image_token_id), text[index].count(self.image_token)
            if found != expected:
                raise ValueError(
                    f"Sample {index}: {found} image tokens after tokenization but its images need {expected}. "
                    + (
                        "Truncation (max_length) would cut through an image's tokens: raise max_length or shorten the text."
                        if found < expected
                        else f"The text contains the literal `{self.image_token}` more often than there are images."
                    )
                )

    @property
    def model_input_names(self) -> list[str]:
        return list(dict.fromkeys(self.tokenizer.model_input_names + self.image_processor.model_input_names))

    def post_process_image_text_to_text(
        self, generated_outputs: Any, skip_special_tokens: bool = True, **kwargs
    ) -> list[str]:
        return self.tokenizer.batch_decode(generated_outputs, skip_special_tokens=skip_special_tokens, **kwargs)


OcrMllmProcessor.register_for_auto_class("AutoProcessor")

__all__ = ["OcrMllmImageProcessor", "OcrMllmProcessor", "CHAT_TEMPLATE", "MAX_IMAGE_PIXELS", "load_image"]
