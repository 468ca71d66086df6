"""Image loading for inference: paths, PIL images, numpy arrays and torch tensors."""

from __future__ import annotations

import os
from typing import Any

from PIL import Image, ImageOps, UnidentifiedImageError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")


def is_image_file(path: str | os.PathLike) -> bool:
    return str(path).lower().endswith(IMAGE_EXTENSIONS)


def load_image(image: Any) -> Any:
    """Return an RGB ``PIL.Image`` for a path, or pass PIL / numpy / torch images through.

    Paths are opened fully here (not lazily) and EXIF rotation is applied, so a truncated or
    unreadable file fails now with a ``ValueError`` that names the file, not later inside a batch.
    """
    if isinstance(image, (str, os.PathLike)):
        path = os.fspath(image)
        try:
            with Image.open(path) as img:
                img.load()
                img = ImageOps.exif_transpose(img)
                return img.convert("RGB")
        except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError) as exc:
            raise ValueError(f"cannot read image {path!r}: {exc}") from exc
    if isinstance(image, Image.Image):
        return image if image.mode == "RGB" else image.convert("RGB")
    if image is None:
        raise ValueError("image is None")
    # numpy arrays and torch tensors are handed to the processor unchanged.
    if hasattr(image, "shape"):
        return image
    raise ValueError(f"unsupported image type {type(image).__name__}")


def load_images(images: Any) -> list:
    """Load a list of images (``None`` or a single image is accepted too)."""
    if images is None:
        return []
    if not isinstance(images, (list, tuple)):
        images = [images]
    return [load_image(img) for img in images]
