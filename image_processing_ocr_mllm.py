# Copyright 2026 The OCR-MLLM authors. Licensed under the Apache License, Version 2.0.
"""Image processor of OCR-MLLM: the project's one image loader (`load_image`) and both views of each image (low-res
square; high-res square with optional tiling, or a text line for line readers), with a fast resize engine.

Copied next to the weights by `save_pretrained`; loaded with `trust_remote_code=True`.
"""

import functools
import math
import os
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError
from transformers.feature_extraction_utils import BatchFeature
from transformers.image_processing_utils import ImageProcessingMixin
from transformers.processing_utils import ImagesKwargs


OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Larger images are refused before decoding: a 12000×12000 PNG is 168 KB on disk but 430 MB as RGB, and every view is
# resized to at most 1024 px anyway. 50 M pixels is an A4 page at 600 dpi with room to spare.
MAX_IMAGE_PIXELS = 50_000_000


def check_image_size(width: int, height: int, name: str) -> None:
    """Raise ``ValueError`` (naming the image) when it has more than :data:`MAX_IMAGE_PIXELS` pixels."""
    if width * height > MAX_IMAGE_PIXELS:
        raise ValueError(
            f"Image {name} is {width}x{height} = {width * height / 1e6:.0f} M pixels, more than the limit of "
            f"{MAX_IMAGE_PIXELS / 1e6:.0f} M pixels; downscale it (e.g. to 300 dpi) first"
        )


def _describe(image: Any) -> str:
    return str(image) if isinstance(image, (str, os.PathLike)) else type(image).__name__


def load_image(image: Any) -> Image.Image:
    """Any supported input → an RGB PIL image, upright per EXIF. Raises ValueError naming the input when unusable.
    The one image loader of the project: the processor, the collator, cli / infer / app, eval and bench all call it.

    Accepts a path, a PIL image, a numpy array or a torch tensor (HWC or CHW; uint8, uint16 or float in [0, 1]).
    Handles grayscale, RGBA / LA / palette with transparency (composited on white), CMYK and 16-bit images,
    animated files (first frame), and refuses images above :data:`MAX_IMAGE_PIXELS` (files: before decoding).
    """
    if isinstance(image, (str, os.PathLike)):
        path = os.fspath(image)
        if not os.path.isfile(path):
            raise ValueError(f"Image file not found: {path}")
        try:
            with Image.open(path) as opened:  # reads the header only
                check_image_size(opened.width, opened.height, path)
                opened.load()  # decode now so truncated / corrupt files fail here, with the file's name
                pil = opened.copy() if opened.mode != "P" else opened.convert("RGBA")
                exif_source = opened
                pil = _exif_upright(pil, exif_source)
        except (UnidentifiedImageError, OSError, SyntaxError, Image.DecompressionBombError) as err:
            raise ValueError(f"Cannot read image file {path}: {err}") from err
    elif isinstance(image, Image.Image):
        check_image_size(image.width, image.height, _describe(image))
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


def _array_to_pil(image: Any) -> Image.Image:
    if hasattr(image, "detach") and hasattr(image, "cpu"):  # torch tensor
        image = image.detach().cpu().float().numpy() if image.is_floating_point() else image.detach().cpu().numpy()
    if not isinstance(image, np.ndarray):
        raise ValueError(
            f"Unsupported image type {type(image).__name__}: pass a path, PIL image, numpy array or torch tensor"
        )
    array = image
    if array.ndim == 3 and array.shape[0] in (1, 3, 4) and array.shape[-1] not in (1, 3, 4):
        array = array.transpose(1, 2, 0)  # CHW → HWC
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[-1] not in (3, 4)):
        raise ValueError(f"Unsupported image array shape {image.shape}: expected HxW, HxWxC or CxHxW with C in 1/3/4")
    if array.size == 0:
        raise ValueError(f"Image array is empty: shape {image.shape}")
    check_image_size(array.shape[1], array.shape[0], f"array {tuple(image.shape)}")
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
        {
            (c, r)
            for n in range(min_tiles, max_tiles + 1)
            for c in range(1, n + 1)
            for r in range(1, n + 1)
            if min_tiles <= c * r <= max_tiles
        },
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


# ---------------------------------------------------------------------------------------------------------------------
# Fast image-processor internals: uint8 resizes (torch's antialiased bicubic/bilinear — the same filters as PIL, SIMD
# and ~5-9x faster — or PIL as the fallback), normalisation fused with the HWC → CHW float32 conversion and written
# straight into the output buffers, and pad-to-square without ever building the padded full-resolution canvas.
# ---------------------------------------------------------------------------------------------------------------------
try:
    import torch as _torch
    import torch.nn.functional as _torch_functional
except ImportError:  # the processor works without torch (PIL resizes, numpy normalisation)
    _torch = None

_TORCH_RESIZE_MODES = {int(Image.Resampling.BICUBIC): "bicubic", int(Image.Resampling.BILINEAR): "bilinear"}
RESIZE_BACKENDS = ("auto", "torch", "pil")


def _fill_colour(mean: Sequence[float]) -> tuple[int, int, int]:
    return tuple(int(round(255 * m)) for m in mean)


def _is_torch_tensor(value: Any) -> bool:
    return _torch is not None and isinstance(value, _torch.Tensor)


def _torch_hwc(pil: Image.Image):
    """RGB PIL image → (H, W, 3) uint8 tensor sharing numpy's single copy of the pixels (read-only: only read)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "non-writable numpy array": the tensor is never written
        return _torch.from_numpy(np.asarray(pil))


def _resize_torch(image: Any, width: int, height: int, mode: str) -> Any:
    """(H, W, 3) uint8 tensor → (height, width, 3) uint8, PIL's antialiased filter (torch's uint8 SIMD kernel)."""
    in_height, in_width = int(image.shape[0]), int(image.shape[1])
    if in_height == height and in_width == width:
        return image
    if in_height > in_width * 100 and height < in_height and width != in_width:
        # Pillow resizes very tall images vertically first (torch always goes horizontal first): same order, same
        # uint8 rounding between the passes
        image = _resize_torch(image, in_width, height, mode)
    nchw = image.permute(2, 0, 1).unsqueeze(0)  # channels-last memory: the kernel's fast path
    out = _torch_functional.interpolate(nchw, size=(height, width), mode=mode, antialias=True, align_corners=False)
    return out[0].permute(1, 2, 0)


def _resize_pil(image: Image.Image | np.ndarray, width: int, height: int, resample: int) -> Image.Image:
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    if image.size == (width, height):
        return image
    return image.resize((width, height), resample)


def _pil_canvas(height: int, width: int, fill: Sequence[int]) -> np.ndarray:
    """(height, width, 3) uint8 array of one colour (one row, then row copies: ~20x faster than a 3-value broadcast)."""
    canvas = np.empty((height, width, 3), np.uint8)
    canvas[:] = np.tile(np.asarray(fill, np.uint8), width).reshape(1, width, 3)
    return canvas


def _torch_canvas(height: int, width: int, fill: Sequence[int]) -> Any:
    return _torch.from_numpy(_pil_canvas(height, width, fill))


def _image_hw(image: Any) -> tuple[int, int]:
    if isinstance(image, Image.Image):
        return image.height, image.width
    return int(image.shape[0]), int(image.shape[1])


def _resize_padded(
    image: Any,
    target: int,
    fill: Sequence[int],
    resize: Callable[..., Any],
    new_canvas: Callable[..., Any],
) -> Any:
    """`resize(pad_to_square(image, fill), target, target)` without a full-resolution square canvas where avoidable.

    Both filters are separable and go horizontally first. Landscape images: the horizontal pass runs on the image
    rows alone, then the vertical one over the padded (long side × target) strip — exactly the canvas result, and a
    20000×20 strip costs a 20000×1024 strip instead of a 20000×20000 canvas (1.2 GB, seconds). Portrait images up to
    4:1 use the canvas itself (exact); taller ones go vertically first over the image alone, which moves the uint8
    rounding between the passes (a few grey levels on sharp edges) but bounds time and memory.
    """
    height, width = _image_hw(image)
    if height == width:
        return resize(image, target, target)
    side = max(height, width)
    if width < height and side * side <= 4 * width * height:
        canvas = new_canvas(side, side, fill)
        left = (side - width) // 2
        canvas[:, left : left + width] = image if _is_torch_tensor(image) else np.asarray(image)
        return resize(canvas, target, target)
    landscape = width > height
    first = resize(image, target, height) if landscape else resize(image, width, target)
    if not _is_torch_tensor(first):
        first = np.asarray(first)
    short = height if landscape else width
    start = (side - short) // 2
    if not landscape:  # work on the transposed strip: the padded axis is always the first one below
        first = first.permute(1, 0, 2) if _is_torch_tensor(first) else first.transpose(1, 0, 2)
    rows = _padded_band(side, target, start, short)
    if rows is None:  # the whole strip: (side, target) with the image band in its middle
        in0, in1, out0, out1 = 0, side, 0, target
    else:
        in0, in1, out0, out1 = rows
    strip = new_canvas(in1 - in0, target, fill)
    strip[start - in0 : start - in0 + short] = first
    if not landscape:
        strip = strip.permute(1, 0, 2) if _is_torch_tensor(strip) else strip.transpose(1, 0, 2)
    band = resize(strip, target, out1 - out0) if landscape else resize(strip, out1 - out0, target)
    if rows is None:
        return band
    out = new_canvas(target, target, fill)  # output rows (columns) far from the image are the fill colour
    if not _is_torch_tensor(band):
        band = np.asarray(band)
    if landscape:
        out[out0:out1] = band
    else:
        out[:, out0:out1] = band
    return out


def _line_view(
    image: Any,
    height: int,
    width: int,
    fill: Sequence[int],
    resize: Callable[..., Any],
    new_canvas: Callable[..., Any],
) -> Any:
    """A text line at `height` px keeping its aspect ratio (squeezed to `width` when longer), left-aligned on a
    (height, width) canvas of `fill`."""
    source_height, source_width = _image_hw(image)
    scaled_width = max(1, min(width, round(source_width * height / max(1, source_height))))
    line = resize(image, scaled_width, height)
    if scaled_width == width:
        return line
    canvas = new_canvas(height, width, fill)
    canvas[:, :scaled_width] = line if _is_torch_tensor(line) or isinstance(line, np.ndarray) else np.asarray(line)
    return canvas


def _padded_band(side: int, target: int, start: int, length: int):
    """Input / output row ranges (in0, in1, out0, out1) of a `side → target` downscale that hold every output row
    the band [start, start + length) reaches, with in0 = out0·side/target exactly, so that resizing only those
    input rows gives exactly those output rows (filter positions are the same; rows cut at the range's ends see
    only the fill colour either way). None when that saves nothing."""
    if side < 4 * target:
        return None
    step_out = target // math.gcd(side, target)  # output rows ↔ input rows in whole steps
    step_in = side // math.gcd(side, target)
    scale = side / target
    first = max(0, int(start / scale) - 8)
    last = min(target, int(math.ceil((start + length) / scale)) + 8)
    out0 = (first // step_out) * step_out
    out1 = min(target, -(-last // step_out) * step_out)
    if out1 - out0 > target // 2:
        return None
    return out0 // step_out * step_in, out1 // step_out * step_in, out0, out1


_NORMALIZE_CACHE: dict = {}


def _normalize_constants(mean: Sequence[float], std: Sequence[float]):
    """(x / 255 - mean) / std as x · scale + offset, in float32 (the exact arithmetic of the original processor)."""
    key = (tuple(float(m) for m in mean), tuple(float(s) for s in std))
    if key not in _NORMALIZE_CACHE:
        std32 = np.asarray(key[1], dtype=np.float32)
        scale = (1.0 / (255.0 * std32)).astype(np.float32)
        offset = (-np.asarray(key[0], dtype=np.float32) / std32).astype(np.float32)
        lut = (np.arange(256, dtype=np.float32)[:, None] * scale + offset).T.copy()  # (3, 256): one entry per byte
        _NORMALIZE_CACHE[key] = (scale, offset, lut)
    return _NORMALIZE_CACHE[key]


def _normalize_into(view: Any, out: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> None:
    """uint8 (H, W, 3) view (tensor, array or PIL) → `out` (3, H, W) float32, written in place.

    Bit-identical to `np.asarray(view, float32) * scale + offset` then a CHW copy, in one or three passes instead of
    five and without temporaries."""
    scale, offset, lut = _normalize_constants(mean, std)
    if _is_torch_tensor(view):
        target = _torch.from_numpy(out)
        target.copy_(view.permute(2, 0, 1))  # uint8 → float32 and HWC → CHW in one pass
        target.mul_(_torch.from_numpy(scale)[:, None, None]).add_(_torch.from_numpy(offset)[:, None, None])
        return
    array = np.asarray(view)
    for channel in range(3):
        np.take(lut[channel], array[..., channel], out=out[channel])


def _concat(blocks: list, empty_shape: tuple) -> np.ndarray:
    if not blocks:
        return np.zeros(empty_shape, np.float32)
    return blocks[0] if len(blocks) == 1 else np.concatenate(blocks)


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

    `high_res_line_height` (line readers): the high-res view is one text line of (high_res_line_height, high_res_size)
    pixels instead of a square — the image resized to that height keeping its aspect ratio (squeezed to the width when
    longer) and placed left-aligned on a canvas of the mean colour. No tiling then.

    `resize_backend`: "auto" (default) resizes bicubic / bilinear with torch's antialiased uint8 kernel — PIL's filter
    (a = -0.5, support scaled with the downscale factor), ±1 grey level from PIL on a few pixels, ~5-9x faster —
    and falls back to PIL when torch is missing or for other filters; "pil" reproduces PIL's resize exactly; "torch"
    requires torch.
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
        resize_backend: str = "auto",
        high_res_line_height: int | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.high_res_line_height = int(high_res_line_height) if high_res_line_height else None
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
        if resize_backend not in RESIZE_BACKENDS:
            raise ValueError(f"resize_backend must be one of {RESIZE_BACKENDS}, got {resize_backend!r}")
        self.resize_backend = resize_backend

    def tile_grid(
        self, width: int, height: int, min_tiles: int | None = None, max_tiles: int | None = None
    ) -> tuple[int, int]:
        return select_tile_grid(
            width, height, min_tiles or self.min_tiles, max_tiles or self.max_tiles, self.high_res_size
        )

    def get_number_of_high_res_views(
        self,
        width: int,
        height: int,
        do_tiling: bool | None = None,
        min_tiles: int | None = None,
        max_tiles: int | None = None,
    ) -> int:
        """Views an image of this size gets: 1 (global) plus columns·rows tiles when tiling picks more than one."""
        if getattr(self, "high_res_line_height", None) or not (self.do_tiling if do_tiling is None else do_tiling):
            return 1
        columns, rows = self.tile_grid(width, height, min_tiles, max_tiles)
        return 1 if columns * rows == 1 else 1 + columns * rows

    def _torch_resize_mode(self):
        """The torch mode that reproduces `self.resample`, or None to use PIL (also when torch is missing)."""
        backend = getattr(self, "resize_backend", "auto")
        if backend == "pil":
            return None
        mode = _TORCH_RESIZE_MODES.get(int(self.resample))
        if _torch is None or mode is None:
            if backend == "torch" and _torch is None:
                raise ImportError("resize_backend='torch' needs PyTorch; use 'auto' or 'pil'")
            return None
        return mode

    def _views(
        self,
        image: Any,
        size: int,
        high_res_size: int,
        pad_to_square: bool,
        do_tiling: bool | None,
        min_tiles: int | None,
        max_tiles: int | None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """One image → (low view (1, 3, s, s), high-res views (n, 3, S, S)), normalised straight into fresh buffers."""
        pil = load_image(image)
        num_views = self.get_number_of_high_res_views(pil.width, pil.height, do_tiling, min_tiles, max_tiles)
        line_height = getattr(self, "high_res_line_height", None)
        low = np.empty((1, 3, size, size), np.float32)
        high = np.empty((num_views, 3, line_height or high_res_size, high_res_size), np.float32)
        mode = self._torch_resize_mode()
        if mode is not None:  # uint8 (H, W, 3) torch tensor; one copy out of PIL, no float image at full size
            source = _torch_hwc(pil)
            resize = functools.partial(_resize_torch, mode=mode)
            fill_canvas = _torch_canvas
        else:
            source = pil
            resize = functools.partial(_resize_pil, resample=self.resample)
            fill_canvas = _pil_canvas
        for target, out, mean, std, is_line in (
            (size, low[0], self.image_mean, self.image_std, False),
            (high_res_size, high[0], self.high_res_image_mean, self.high_res_image_std, bool(line_height)),
        ):
            if is_line:
                view = _line_view(source, line_height, high_res_size, _fill_colour(mean), resize, fill_canvas)
            elif pad_to_square:
                view = _resize_padded(source, target, _fill_colour(mean), resize, fill_canvas)
            else:
                view = resize(source, target, target)
            _normalize_into(view, out, mean, std)
        if num_views > 1:
            columns, rows = self.tile_grid(pil.width, pil.height, min_tiles, max_tiles)
            canvas = resize(source, columns * high_res_size, rows * high_res_size)
            if not isinstance(canvas, np.ndarray) and not _is_torch_tensor(canvas):
                canvas = np.asarray(canvas)
            index = 1
            for row in range(rows):
                for column in range(columns):
                    top, left = row * high_res_size, column * high_res_size
                    tile = canvas[top : top + high_res_size, left : left + high_res_size]
                    _normalize_into(tile, high[index], self.high_res_image_mean, self.high_res_image_std)
                    index += 1
        return low, high

    def _resolve_options(
        self,
        size: int | None = None,
        high_res_size: int | None = None,
        pad_to_square: bool | None = None,
        do_tiling: bool | None = None,
        min_tiles: int | None = None,
        max_tiles: int | None = None,
    ) -> dict[str, Any]:
        return {
            "size": int(size or self.size),
            "high_res_size": int(high_res_size or self.high_res_size),
            "pad_to_square": self.pad_to_square if pad_to_square is None else bool(pad_to_square),
            "do_tiling": do_tiling,
            "min_tiles": min_tiles,
            "max_tiles": max_tiles,
        }

    def preprocess(self, images: Any, return_tensors: str | None = None, **kwargs) -> BatchFeature:
        if images is None:
            raise ValueError("No images given")
        if not isinstance(images, (list, tuple)):
            images = [images]
        images = [image for item in images for image in (item if isinstance(item, (list, tuple)) else [item])]
        unknown = set(kwargs) - set(PER_CALL_IMAGE_OPTIONS)
        if unknown:
            raise ValueError(
                f"Unknown image processor options {sorted(unknown)}; per-call options: {PER_CALL_IMAGE_OPTIONS}"
            )
        options = self._resolve_options(**kwargs)
        low_views, high_views, counts = [], [], []
        for image in images:
            low, high = self._views(image, **options)
            low_views.append(low)
            high_views.append(high)
            counts.append(high.shape[0])
        data = {
            # one image (the usual inference call): its buffers are returned as they are, without a copy
            "pixel_values": _concat(low_views, (0, 3, self.size, self.size)),
            "high_res_pixel_values": _concat(
                high_views,
                (0, 3, getattr(self, "high_res_line_height", None) or self.high_res_size, self.high_res_size),
            ),
            "num_high_res_views": np.asarray(counts, dtype=np.int64),
        }
        return BatchFeature(data=data, tensor_type=return_tensors)

    def __call__(self, images: Any, **kwargs) -> BatchFeature:
        return self.preprocess(images, **kwargs)


OcrMllmImageProcessor.register_for_auto_class("AutoImageProcessor")

__all__ = ["OcrMllmImageProcessor", "load_image", "check_image_size", "select_tile_grid", "MAX_IMAGE_PIXELS"]
