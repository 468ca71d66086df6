# Copyright 2026 The OCR-MLLM authors. Licensed under the Apache License, Version 2.0.
"""Image processor (both views, optional tiling) and processor (chat template, placeholder expansion) of OCR-MLLM.

Copied next to the weights by `save_pretrained`; loaded with `trust_remote_code=True`.
"""

import os
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError
from transformers.feature_extraction_utils import BatchFeature
from transformers.image_processing_utils import ImageProcessingMixin
from transformers.processing_utils import ImagesKwargs, ProcessingKwargs, ProcessorMixin

OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
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

# Images bigger than this are refused by PIL as decompression bombs; pages at 600 dpi are well below it.
MAX_IMAGE_PIXELS = 40000 * 40000


def _describe(image) -> str:
    return str(image) if isinstance(image, (str, os.PathLike)) else type(image).__name__


def load_image(image) -> Image.Image:
    """Any supported input → an RGB PIL image, upright per EXIF. Raises ValueError naming the input when unusable.

    Accepts a path, a PIL image, a numpy array or a torch tensor (HWC or CHW; uint8, uint16 or float in [0, 1]).
    Handles grayscale, RGBA / LA / palette with transparency (composited on white), CMYK and 16-bit images.
    """
    if isinstance(image, (str, os.PathLike)):
        path = os.fspath(image)
        if not os.path.isfile(path):
            raise ValueError(f"Image file not found: {path}")
        try:
            with Image.open(path) as opened:
                opened.load()  # decode now so truncated / corrupt files fail here, with the file's name
                pil = opened.copy() if opened.mode != "P" else opened.convert("RGBA")
                exif_source = opened
                pil = _exif_upright(pil, exif_source)
        except (UnidentifiedImageError, OSError, SyntaxError, Image.DecompressionBombError) as err:
            raise ValueError(f"Cannot read image file {path}: {err}") from err
    elif isinstance(image, Image.Image):
        pil = _exif_upright(image, image)
    else:
        pil = _array_to_pil(image)
    if pil.width < 1 or pil.height < 1:
        raise ValueError(f"Image {_describe(image)} is empty ({pil.width}x{pil.height})")
    return _to_rgb(pil, _describe(image))


def _exif_upright(pil: Image.Image, source: Image.Image) -> Image.Image:
    try:
        orientation = source.getexif().get(0x0112, 1)
    except Exception:  # malformed EXIF must not make a readable image unusable
        return pil
    return ImageOps.exif_transpose(pil) if orientation not in (None, 1) else pil


def _array_to_pil(image) -> Image.Image:
    if hasattr(image, "detach") and hasattr(image, "cpu"):  # torch tensor
        image = image.detach().cpu().float().numpy() if image.is_floating_point() else image.detach().cpu().numpy()
    if not isinstance(image, np.ndarray):
        raise ValueError(f"Unsupported image type {type(image).__name__}: pass a path, PIL image, numpy array or torch tensor")
    array = image
    if array.ndim == 3 and array.shape[0] in (1, 3, 4) and array.shape[-1] not in (1, 3, 4):
        array = array.transpose(1, 2, 0)  # CHW → HWC
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[-1] not in (3, 4)):
        raise ValueError(f"Unsupported image array shape {image.shape}: expected HxW, HxWxC or CxHxW with C in 1/3/4")
    if array.size == 0:
        raise ValueError(f"Image array is empty: shape {image.shape}")
    if np.issubdtype(array.dtype, np.floating):
        if not np.isfinite(array).all():
            raise ValueError("Image array contains NaN or infinite values")
        scale = 255.0 if array.max() <= 1.0 else 1.0
        array = np.clip(array * scale, 0, 255).astype(np.uint8)
    elif array.dtype == np.uint16 or (np.issubdtype(array.dtype, np.integer) and array.max() > 255):
        array = (array.astype(np.float64) / 65535.0 * 255.0 + 0.5).clip(0, 255).astype(np.uint8)
    else:
        array = array.astype(np.uint8)
    return Image.fromarray(array)


def _to_rgb(pil: Image.Image, name: str) -> Image.Image:
    if pil.mode == "RGB":
        return pil
    if pil.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        array = np.asarray(pil, dtype=np.float64)
        peak = 65535.0 if array.max() > 255 else 255.0
        pil = Image.fromarray((array / peak * 255.0 + 0.5).clip(0, 255).astype(np.uint8))
    if pil.mode == "P":
        pil = pil.convert("RGBA")
    if pil.mode in ("RGBA", "LA", "PA"):
        rgba = pil.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    try:
        return pil.convert("RGB")
    except (ValueError, OSError) as err:
        raise ValueError(f"Cannot convert image {name} (mode {pil.mode}) to RGB: {err}") from err


def select_tile_grid(width: int, height: int, min_tiles: int, max_tiles: int, tile_size: int) -> tuple[int, int]:
    """(columns, rows) whose aspect ratio is closest to the image's, with min_tiles ≤ columns·rows ≤ max_tiles.

    Among equally close grids the larger one wins only if the image has the pixels to fill it (InternVL's rule)."""
    aspect = width / height
    candidates = sorted(
        {(c, r) for n in range(min_tiles, max_tiles + 1) for c in range(1, n + 1) for r in range(1, n + 1) if min_tiles <= c * r <= max_tiles},
        key=lambda grid: grid[0] * grid[1],
    )
    best, best_diff = (1, 1), float("inf")
    for columns, rows in candidates:
        diff = abs(aspect - columns / rows)
        if diff < best_diff - 1e-9:
            best, best_diff = (columns, rows), diff
        elif abs(diff - best_diff) <= 1e-9 and width * height > 0.5 * tile_size * tile_size * columns * rows:
            best = (columns, rows)
    return best


PER_CALL_IMAGE_OPTIONS = ("size", "high_res_size", "pad_to_square", "do_tiling", "min_tiles", "max_tiles")


class OcrMllmImagesKwargs(ImagesKwargs, total=False):
    size: int
    high_res_size: int
    pad_to_square: bool
    do_tiling: bool
    min_tiles: int
    max_tiles: int


class OcrMllmImageProcessor(ImageProcessingMixin):
    r"""
    Makes both views of each image in one pass:
      - `pixel_values` (images, 3, size, size): the low-res view (448 px, OpenAI-CLIP mean/std, bicubic);
      - `high_res_pixel_values` (views, 3, high_res_size, high_res_size): the high-res global view (1024 px, ImageNet
        mean/std) followed, when `do_tiling` and the page warrants it, by a grid of tiles cut from the image resized to
        (columns·1024, rows·1024);
      - `num_high_res_views` (images,): how many high-res views each image has.
    Deterministic: no training augmentations. `pad_to_square` pads with the mean colour before resizing instead of
    stretching.
    """

    model_input_names = ["pixel_values", "high_res_pixel_values", "num_high_res_views"]
    valid_kwargs = OcrMllmImagesKwargs

    def __init__(
        self,
        size: int = 448,
        high_res_size: int = 1024,
        image_mean: Sequence[float] = OPENAI_CLIP_MEAN,
        image_std: Sequence[float] = OPENAI_CLIP_STD,
        high_res_image_mean: Sequence[float] = IMAGENET_MEAN,
        high_res_image_std: Sequence[float] = IMAGENET_STD,
        resample: int = Image.Resampling.BICUBIC,
        pad_to_square: bool = False,
        do_tiling: bool = False,
        min_tiles: int = 1,
        max_tiles: int = 6,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.size = int(size)
        self.high_res_size = int(high_res_size)
        self.image_mean = list(image_mean)
        self.image_std = list(image_std)
        self.high_res_image_mean = list(high_res_image_mean)
        self.high_res_image_std = list(high_res_image_std)
        self.resample = int(resample)
        self.pad_to_square = bool(pad_to_square)
        self.do_tiling = bool(do_tiling)
        self.min_tiles = int(min_tiles)
        self.max_tiles = int(max_tiles)
        if not 1 <= self.min_tiles <= self.max_tiles:
            raise ValueError(f"Need 1 <= min_tiles <= max_tiles, got {self.min_tiles}, {self.max_tiles}")

    def tile_grid(self, width: int, height: int, min_tiles=None, max_tiles=None) -> tuple[int, int]:
        return select_tile_grid(
            width, height, min_tiles or self.min_tiles, max_tiles or self.max_tiles, self.high_res_size
        )

    def get_number_of_high_res_views(self, width: int, height: int, do_tiling=None, min_tiles=None, max_tiles=None) -> int:
        """Views an image of this size gets: 1 (global) plus columns·rows tiles when tiling picks more than one."""
        if not (self.do_tiling if do_tiling is None else do_tiling):
            return 1
        columns, rows = self.tile_grid(width, height, min_tiles, max_tiles)
        return 1 if columns * rows == 1 else 1 + columns * rows

    @staticmethod
    def _normalize(image: Image.Image, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
        # (x / 255 - mean) / std as one multiply-add per pixel
        scale = (1.0 / (255.0 * np.asarray(std, dtype=np.float32))).astype(np.float32)
        offset = (-np.asarray(mean, dtype=np.float32) / np.asarray(std, dtype=np.float32)).astype(np.float32)
        array = np.asarray(image, dtype=np.float32) * scale + offset  # (H, W, 3)
        return np.ascontiguousarray(array.transpose(2, 0, 1))  # (3, H, W)

    def _square(self, image: Image.Image, mean: Sequence[float]) -> Image.Image:
        side = max(image.size)
        if image.width == image.height:
            return image
        canvas = Image.new("RGB", (side, side), tuple(int(round(255 * m)) for m in mean))
        canvas.paste(image, ((side - image.width) // 2, (side - image.height) // 2))
        return canvas

    def preprocess_one(self, image, size=None, high_res_size=None, pad_to_square=None, do_tiling=None, min_tiles=None, max_tiles=None):
        """One image → (low-res view (3, s, s), [high-res views (3, S, S)])."""
        size = size or self.size
        high_res_size = high_res_size or self.high_res_size
        pad_to_square = self.pad_to_square if pad_to_square is None else pad_to_square
        pil = load_image(image)
        low_source = self._square(pil, self.image_mean) if pad_to_square else pil
        high_source = self._square(pil, self.high_res_image_mean) if pad_to_square else pil
        low = self._normalize(low_source.resize((size, size), self.resample), self.image_mean, self.image_std)
        high_views = [high_source.resize((high_res_size, high_res_size), self.resample)]
        if self.get_number_of_high_res_views(pil.width, pil.height, do_tiling, min_tiles, max_tiles) > 1:
            columns, rows = self.tile_grid(pil.width, pil.height, min_tiles, max_tiles)
            canvas = pil.resize((columns * high_res_size, rows * high_res_size), self.resample)
            for row in range(rows):
                for column in range(columns):
                    left, top = column * high_res_size, row * high_res_size
                    high_views.append(canvas.crop((left, top, left + high_res_size, top + high_res_size)))
        high = [self._normalize(view, self.high_res_image_mean, self.high_res_image_std) for view in high_views]
        return low, high

    def preprocess(self, images, return_tensors=None, **kwargs) -> BatchFeature:
        if images is None:
            raise ValueError("No images given")
        if not isinstance(images, (list, tuple)):
            images = [images]
        images = [image for item in images for image in (item if isinstance(item, (list, tuple)) else [item])]
        unknown = set(kwargs) - set(PER_CALL_IMAGE_OPTIONS)
        if unknown:
            raise ValueError(f"Unknown image processor options {sorted(unknown)}; per-call options: {PER_CALL_IMAGE_OPTIONS}")
        low_views, high_views, counts = [], [], []
        for image in images:
            low, high = self.preprocess_one(image, **kwargs)
            low_views.append(low)
            high_views.extend(high)
            counts.append(len(high))
        data = {
            "pixel_values": np.stack(low_views) if low_views else np.zeros((0, 3, self.size, self.size), np.float32),
            "high_res_pixel_values": np.stack(high_views)
            if high_views
            else np.zeros((0, 3, self.high_res_size, self.high_res_size), np.float32),
            "num_high_res_views": np.asarray(counts, dtype=np.int64),
        }
        return BatchFeature(data=data, tensor_type=return_tensors)

    def __call__(self, images, **kwargs) -> BatchFeature:
        return self.preprocess(images, **kwargs)


class OcrMllmProcessingKwargs(ProcessingKwargs, total=False):
    images_kwargs: OcrMllmImagesKwargs
    _defaults = {"text_kwargs": {"padding": False, "return_mm_token_type_ids": False}}


class OcrMllmProcessor(ProcessorMixin):
    r"""
    Tokenizer + `OcrMllmImageProcessor` + a ChatML chat template. Each `image_token` in the text is expanded to the
    exact number of image tokens its image produces: `num_high_res_views · num_high_res_tokens_per_view +
    num_low_res_tokens` (512 at the default config, more with tiling).
    """

    def __init__(
        self,
        image_processor=None,
        tokenizer=None,
        chat_template=None,
        image_token="<image>",
        num_high_res_tokens_per_view=256,
        num_low_res_tokens=256,
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

    def _group_images(self, images, placeholders_per_sample: list[int]) -> list:
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
                raise ValueError(
                    f"Got image lists for {len(images)} samples but {len(placeholders_per_sample)} texts"
                )
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

    def __call__(self, images=None, text=None, videos=None, audio=None, **kwargs) -> BatchFeature:
        if text is None and images is None:
            raise ValueError("Give text, images or both")
        output_kwargs = self._merge_kwargs(
            OcrMllmProcessingKwargs, tokenizer_init_kwargs=self.tokenizer.init_kwargs, **kwargs
        )
        text_kwargs = output_kwargs["text_kwargs"]
        images_kwargs = {k: v for k, v in output_kwargs["images_kwargs"].items() if k in PER_CALL_IMAGE_OPTIONS and v is not None}
        return_tensors = text_kwargs.pop("return_tensors", None)
        for unused in ("return_mm_token_type_ids", "return_text_replacement_offsets"):
            text_kwargs.pop(unused, None)

        if text is None:  # images only: an image-only prompt per image
            text = [self.image_token] * (len(images) if isinstance(images, (list, tuple)) else 1)
        if isinstance(text, str):
            text = [text]
        text = list(text)
        placeholders = [sample.count(self.image_token) for sample in text]
        flat_images = self._group_images(images, placeholders)

        data = {}
        token_counts = []
        if flat_images:
            image_inputs = self.image_processor(flat_images, **images_kwargs)
            data.update(image_inputs.data)
            token_counts = [self.num_image_tokens(n) for n in image_inputs["num_high_res_views"]]

        expanded, expected_per_sample, cursor = [], [], 0
        for sample, count in zip(text, placeholders):
            pieces = sample.split(self.image_token)
            out = [pieces[0]]
            expected = 0
            for piece in pieces[1:]:
                out.append(self.image_token * token_counts[cursor] + piece)
                expected += token_counts[cursor]
                cursor += 1
            expanded.append("".join(out))
            expected_per_sample.append(expected)

        text_inputs = self.tokenizer(expanded, **text_kwargs)
        for index, (ids, expected) in enumerate(zip(text_inputs["input_ids"], expected_per_sample)):
            found = sum(1 for token in ids if token == self.image_token_id)
            if found != expected:
                raise ValueError(
                    f"Sample {index}: {found} image tokens after tokenization but its images need {expected}. "
                    + (
                        "Truncation (max_length) would cut through an image's tokens: raise max_length or shorten the text."
                        if found < expected
                        else f"The text contains the literal `{self.image_token}` more often than there are images."
                    )
                )
        data.update(text_inputs.data)
        return BatchFeature(data=data, tensor_type=return_tensors)

    @property
    def model_input_names(self):
        return list(dict.fromkeys(self.tokenizer.model_input_names + self.image_processor.model_input_names))

    def post_process_image_text_to_text(self, generated_outputs, skip_special_tokens=True, **kwargs):
        return self.tokenizer.batch_decode(generated_outputs, skip_special_tokens=skip_special_tokens, **kwargs)


OcrMllmImageProcessor.register_for_auto_class("AutoImageProcessor")
OcrMllmProcessor.register_for_auto_class("AutoProcessor")

__all__ = ["OcrMllmImageProcessor", "OcrMllmProcessor", "CHAT_TEMPLATE", "load_image"]
