"""Image files for the front-ends. Loading itself has one owner, the processor's `load_image` (shipped with every model
folder): EXIF orientation, transparency on white, 16-bit scaled, palette / LA / CMYK, the pixel cap, errors that name
the file. Re-exported here for `ocr_mllm.inference` users."""

from __future__ import annotations

import os
from typing import Any

from image_processing_ocr_mllm import MAX_IMAGE_PIXELS, load_image


IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")

__all__ = ["IMAGE_EXTENSIONS", "MAX_IMAGE_PIXELS", "is_image_file", "load_image", "load_images"]


def is_image_file(path: str | os.PathLike) -> bool:
    return str(path).lower().endswith(IMAGE_EXTENSIONS)


def load_images(images: Any) -> list:
    """`load_image` over a list (``None`` or a single image is accepted too)."""
    if images is None:
        return []
    if not isinstance(images, (list, tuple)):
        images = [images]
    return [load_image(image) for image in images]
