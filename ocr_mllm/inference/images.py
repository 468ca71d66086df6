"""Image loading for inference: paths, PIL images, numpy arrays and torch tensors."""

from __future__ import annotations

import os
from typing import Any

from PIL import Image, ImageOps, UnidentifiedImageError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
# Larger images are refused before decoding: a 12000x12000 PNG is 168 KB on disk but 430 MB as RGB, and the
# processor resizes every view to at most 1024 px anyway. 50 M pixels is an A4 page at 600 dpi with room to spare.
MAX_IMAGE_PIXELS = 50_000_000


def check_image_size(width: int, height: int, name: str = "image") -> None:
    """Raise ``ValueError`` when an image has more than :data:`MAX_IMAGE_PIXELS` pixels."""
    if width * height > MAX_IMAGE_PIXELS:
        raise ValueError(
            f"{name} is {width}x{height} = {width * height / 1e6:.0f} M pixels, more than the limit of "
            f"{MAX_IMAGE_PIXELS / 1e6:.0f} M pixels; downscale it (e.g. to 300 dpi) first"
        )


def is_image_file(path: str | os.PathLike) -> bool:
    return str(path).lower().endswith(IMAGE_EXTENSIONS)


def load_image(image: Any) -> Any:
    """Return an RGB ``PIL.Image`` for a path, or pass PIL / numpy / torch images through.

    Paths are opened fully here (not lazily) and EXIF rotation is applied, so a truncated or
    unreadable file fails now with a ``ValueError`` that names the file, not later inside a batch.
    Images above :data:`MAX_IMAGE_PIXELS` are refused with a ``ValueError`` (files: before decoding).
    """
    if isinstance(image, (str, os.PathLike)):
        path = os.fspath(image)
        try:
            with Image.open(path) as img:  # reads the header only
                check_image_size(img.width, img.height, "it")
                img.load()
                img = ImageOps.exif_transpose(img)
                return img.convert("RGB")
        except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError) as exc:
            raise ValueError(f"cannot read image {path!r}: {exc}") from exc
    if isinstance(image, Image.Image):
        check_image_size(image.width, image.height)
        return image if image.mode == "RGB" else image.convert("RGB")
    if image is None:
        raise ValueError("image is None")
    # numpy arrays and torch tensors are handed to the processor unchanged.
    if hasattr(image, "shape"):
        shape = tuple(int(n) for n in image.shape)
        if len(shape) >= 2:
            channels_last = len(shape) == 2 or shape[-1] in (1, 3, 4)
            height, width = shape[:2] if channels_last else shape[-2:]
            check_image_size(width, height)
        return image
    raise ValueError(f"unsupported image type {type(image).__name__}")


def load_images(images: Any) -> list:
    """Load a list of images (``None`` or a single image is accepted too)."""
    if images is None:
        return []
    if not isinstance(images, (list, tuple)):
        images = [images]
    return [load_image(img) for img in images]
