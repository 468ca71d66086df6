"""Rendering of synthetic OCR images: a declarative :class:`Scene` (background, text and drawing ops, augmentation
parameters) is turned into a PIL image.

All random choices are made when the scene is built (see ``synthetic.py``); rendering is a pure function of the scene
(the pixel noise uses ``Scene.noise_seed``), so the same scene gives the same bytes in any process.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from .fonts import FontFace, get_font


RGB = Tuple[int, int, int]
Box = Tuple[float, float, float, float]


@dataclass
class TextOp:
    text: str
    face: FontFace
    size: int
    x: float  # anchor "la": left, ascender
    y: float
    fill: RGB
    key: Optional[str] = None  # name under which the text's box is reported
    box: Box = (0.0, 0.0, 0.0, 0.0)  # ink box in layer coordinates, filled by the layout


@dataclass
class LineOp:
    xy: Tuple[float, float, float, float]
    fill: RGB
    width: int = 1


@dataclass
class ShapeOp:
    shape: str  # circle | square | rectangle | triangle
    box: Box
    fill: RGB
    outline: Optional[RGB] = None


@dataclass
class Background:
    kind: str  # solid | gradient | paper
    color: RGB
    color2: RGB = (255, 255, 255)
    vertical: bool = True


@dataclass
class Augment:
    coeffs: Optional[Tuple[float, ...]] = None  # PIL perspective coefficients (output → input); None = identity
    forward: Optional[Tuple[float, ...]] = None  # 3x3 homography (row-major) input → output, for boxes
    border: RGB = (255, 255, 255)  # colour shown outside the warped page
    blur: float = 0.0
    noise: float = 0.0
    jpeg_quality: int = 0  # 0 = no JPEG round trip


@dataclass
class Scene:
    width: int
    height: int
    background: Background
    ops: List[object] = field(default_factory=list)
    augment: Augment = field(default_factory=Augment)
    noise_seed: int = 0


def luminance(c: Sequence[int]) -> float:
    return (0.299 * c[0] + 0.587 * c[1] + 0.114 * c[2]) / 255.0


def text_box(face: FontFace, size: int, x: float, y: float, text: str) -> Box:
    l, t, r, b = get_font(face, size).getbbox(text, anchor="la")
    return (x + l, y + t, x + r, y + b)


def _background(bg: Background, w: int, h: int, noise_seed: int) -> Image.Image:
    if bg.kind == "solid":
        return Image.new("RGB", (w, h), bg.color)
    if bg.kind == "gradient":
        n = h if bg.vertical else w
        t = np.linspace(0.0, 1.0, n, dtype=np.float32)[:, None]
        ramp = np.asarray(bg.color, np.float32)[None] * (1 - t) + np.asarray(bg.color2, np.float32)[None] * t
        ramp = ramp.round().astype(np.uint8)
        arr = (
            np.broadcast_to(ramp[:, None, :], (h, w, 3))
            if bg.vertical
            else np.broadcast_to(ramp[None, :, :], (h, w, 3))
        )
        return Image.fromarray(np.ascontiguousarray(arr), "RGB")
    if bg.kind == "paper":
        rng = np.random.default_rng([noise_seed, 7])
        small = rng.normal(0.0, 1.0, (6, 6)).astype(np.float32)
        lo = Image.fromarray(((small - small.min()) / (np.ptp(small) + 1e-6) * 255).astype(np.uint8), "L")
        blot = np.asarray(lo.resize((w, h), Image.BICUBIC), np.float32) / 255.0 - 0.5  # in [-0.5, 0.5]
        base = np.asarray(bg.color, np.float32)[None, None, :]
        arr = np.clip(base + blot[:, :, None] * 24.0, 0, 255).astype(np.uint8)
        return Image.fromarray(arr, "RGB")
    raise ValueError(f"unknown background kind {bg.kind!r}")


def _draw_ops(img: Image.Image, ops: Sequence[object]) -> None:
    draw = ImageDraw.Draw(img)
    for op in ops:
        if isinstance(op, TextOp):
            draw.text((op.x, op.y), op.text, font=get_font(op.face, op.size), fill=op.fill, anchor="la")
        elif isinstance(op, LineOp):
            draw.line(op.xy, fill=op.fill, width=op.width)
        elif isinstance(op, ShapeOp):
            x0, y0, x1, y1 = op.box
            if op.shape == "circle":
                draw.ellipse(op.box, fill=op.fill, outline=op.outline)
            elif op.shape in ("square", "rectangle"):
                draw.rectangle(op.box, fill=op.fill, outline=op.outline)
            elif op.shape == "triangle":
                draw.polygon([((x0 + x1) / 2, y0), (x1, y1), (x0, y1)], fill=op.fill, outline=op.outline)
            else:
                raise ValueError(f"unknown shape {op.shape!r}")
        else:
            raise TypeError(f"unknown op {type(op).__name__}")


def apply_homography(h: Sequence[float], x: float, y: float) -> Tuple[float, float]:
    d = h[6] * x + h[7] * y + h[8]
    return ((h[0] * x + h[1] * y + h[2]) / d, (h[3] * x + h[4] * y + h[5]) / d)


def map_box(h: Optional[Sequence[float]], box: Box) -> Box:
    """Axis-aligned box around the image of ``box`` under homography ``h`` (identity when None)."""
    if h is None:
        return box
    x0, y0, x1, y1 = box
    pts = [apply_homography(h, x, y) for x, y in ((x0, y0), (x1, y0), (x1, y1), (x0, y1))]
    xs, ys = [p[0] for p in pts], [p[1] for p in pts]
    return (min(xs), min(ys), max(xs), max(ys))


def homography(src: Sequence[Tuple[float, float]], dst: Sequence[Tuple[float, float]]) -> Tuple[float, ...]:
    """3x3 homography (9 numbers, h[8] = 1) mapping the 4 ``src`` points onto the 4 ``dst`` points."""
    a, b = [], []
    for (x, y), (u, v) in zip(src, dst):
        a.append([x, y, 1, 0, 0, 0, -u * x, -u * y])
        b.append(u)
        a.append([0, 0, 0, x, y, 1, -v * x, -v * y])
        b.append(v)
    sol = np.linalg.solve(np.asarray(a, np.float64), np.asarray(b, np.float64))
    return tuple(float(v) for v in sol) + (1.0,)


def warp_params(
    width: int, height: int, angle_deg: float, jitter: Sequence[Tuple[float, float]]
) -> Tuple[Tuple[float, ...], Tuple[float, ...]]:
    """(PIL coefficients output→input, forward homography input→output) for a rotation about the centre plus a
    perspective jitter of the four corners (``jitter`` in pixels, one (dx, dy) per corner)."""
    cx, cy = width / 2.0, height / 2.0
    th = math.radians(angle_deg)
    c, s = math.cos(th), math.sin(th)
    src = [(0.0, 0.0), (float(width), 0.0), (float(width), float(height)), (0.0, float(height))]
    dst = []
    for (x, y), (jx, jy) in zip(src, jitter):
        dx, dy = x - cx, y - cy
        dst.append((cx + c * dx - s * dy + jx, cy + s * dx + c * dy + jy))
    forward = homography(src, dst)
    inverse = homography(dst, src)
    return inverse[:8], forward


def render(scene: Scene) -> Image.Image:
    """Draw the scene and apply its augmentation; returns an RGB image of size (width, height)."""
    img = _background(scene.background, scene.width, scene.height, scene.noise_seed)
    _draw_ops(img, scene.ops)
    aug = scene.augment
    if aug.coeffs is not None:
        img = img.transform(
            (scene.width, scene.height), Image.PERSPECTIVE, aug.coeffs, resample=Image.BICUBIC, fillcolor=aug.border
        )
    if aug.blur > 0:
        img = img.filter(ImageFilter.GaussianBlur(aug.blur))
    if aug.noise > 0:
        rng = np.random.default_rng([scene.noise_seed, 11])
        arr = np.asarray(img, np.int16)
        noise = rng.normal(0.0, aug.noise, arr.shape[:2]).round().astype(np.int16)
        img = Image.fromarray(np.clip(arr + noise[:, :, None], 0, 255).astype(np.uint8), "RGB")
    if aug.jpeg_quality:
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=int(aug.jpeg_quality))
        buf.seek(0)
        img = Image.open(buf).convert("RGB")
    return img


def scene_boxes(scene: Scene) -> Dict[str, Box]:
    """Boxes (output pixel coordinates) of the keyed text ops after the geometric augmentation."""
    return {op.key: map_box(scene.augment.forward, op.box) for op in scene.ops if isinstance(op, TextOp) and op.key}


def encode_png(img: Image.Image, compress_level: int = 3) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "PNG", compress_level=compress_level)
    return buf.getvalue()
