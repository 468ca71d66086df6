"""Multilingual (en, zh-Hans, zh-Hant) synthetic OCR data.

Image kinds ("tasks"): ``line`` (one text line), ``page`` (a paragraph page), ``receipt``, ``form`` (key–value),
``table`` and ``scene`` (coloured shapes with labels, for captions). Each image comes with one or more question/answer
turns: full OCR, read line N, read the text in a region, key–value questions, table cells, captions and scene
questions, phrased in the image's language.

Generation is two-phase: a *spec* (all random choices: text, fonts, layout, augmentation parameters) is built
sequentially in the main process from ``random.Random(f"{seed}:{split}:{index}:{attempt}")``; rendering, encoding and
writing happen in worker processes and depend only on the spec. The output is therefore byte-identical for the same
arguments whatever ``--workers`` is. Held-out samples draw words from a held-out word pool and are re-drawn until none
of their text lines / transcripts occurs in the training split.

Output (``generate_dataset``)::

    DIR/train.json, DIR/heldout.json   LLaVA format + "language", "task", "qa_types", "text", "width", "height"
    DIR/images/<id>.png
    DIR/hf/                            DatasetDict(train, heldout) with messages/images/id/language/task/qa_types/text
    DIR/meta.json                      arguments, counts, fonts used
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import multiprocessing
import os
import random
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Dict, Iterator, List, Optional, Sequence, Set, Tuple

from .fonts import FontFace, check_fonts, face_codepoints, get_font
from .render import (
    Augment,
    Background,
    LineOp,
    Scene,
    ShapeOp,
    TextOp,
    encode_png,
    luminance,
    map_box,
    render,
    scene_boxes,
    text_box,
    warp_params,
)
from .text_sources import LANGUAGES, TextSource, localize


if TYPE_CHECKING:
    import datasets
    import PIL.Image


TASKS = ("line", "page", "receipt", "form", "table", "scene")
AUGMENT_LEVELS = ("none", "light", "full")
QA_TYPES = ("full_ocr", "read_line", "read_region", "kv", "table_cell", "caption", "scene_attr")
ENGLISH_QUESTION_RATE = 0.2
SPLITS = ("train", "heldout")
# varied: several phrasings in the image's language; fixed: the first phrasing in the image's language; blind: the
# first phrasing, in English or Chinese at random whatever the image's script (no language hint in the question)
PROMPT_STYLES = ("varied", "fixed", "blind")
# Families kept out of the shipped reader's training data, so benchmarks can measure reading in unseen fonts
# (one Latin serif, the Ming faces of both Chinese scripts)
UNSEEN_FONT_FAMILIES = ("Liberation Serif", "AR PL UMing CN", "AR PL UMing TW")
FONT_SPLITS = ("all", "seen", "unseen")
FORMAT_VERSION = 1

# ----------------------------------------------------------------------------------------------------------------------
# Question templates ("zh" templates are Simplified and converted with OpenCC for zh-Hant). Index 0 is used with
# --prompts fixed.

QUESTIONS: Dict[str, Dict[str, Tuple[str, ...]]] = {
    "full_ocr": {
        "en": (
            "Read all the text in the image.",
            "What text is in this image?",
            "Transcribe the text in this image.",
            "Please read the text in the image.",
        ),
        "zh": ("请读出图中的所有文字。", "图片里写了什么？", "识别图中的文字。", "请转写这张图片中的文字。"),
    },
    "read_line": {
        "en": ("What is written on line {n}?", "Read line {n} of the text.", "What does line {n} say?"),
        "zh": ("第{n}行写的是什么？", "请读出第{n}行的文字。", "第{n}行的内容是什么？"),
    },
    "read_region": {
        "en": ("Read the text in the region {box}.", "What text is inside the box {box}?"),
        "zh": ("请读出区域{box}内的文字。", "框{box}里写的是什么？"),
    },
    "total": {
        "en": ("What is the total amount?", "How much is the total?"),
        "zh": ("总金额是多少？", "合计金额是多少？"),
    },
    "date": {
        "en": ("What is the date on the receipt?", "When was this receipt issued?"),
        "zh": ("收据上的日期是什么？", "这张收据是哪天开的？"),
    },
    "receipt_no": {
        "en": ("What is the receipt number?", 'What number is printed after "{key}"?'),
        "zh": ("单号是多少？", "“{key}”后面的号码是什么？"),
    },
    "item_price": {
        "en": ("How much does {item} cost?", "What is the price of {item}?"),
        "zh": ("{item}的价格是多少？", "{item}多少钱？"),
    },
    "store": {
        "en": ("What is the name of the store?", "Which store issued this receipt?"),
        "zh": ("这家店叫什么名字？", "商店名称是什么？"),
    },
    "field": {
        "en": ("What is the {key}?", "What is written in the {key} field?"),
        "zh": ("{key}是什么？", "“{key}”一栏填写的是什么？"),
    },
    "table_cell": {
        "en": ("What is the {col} of {row}?", 'In the table, what is in row "{row}", column "{col}"?'),
        "zh": ("表格中{row}的{col}是多少？", "表格里“{row}”这一行“{col}”列的内容是什么？"),
    },
    "caption": {
        "en": ("Describe the image briefly.", "Write a short caption for this image.", "What is shown in this image?"),
        "zh": ("简要描述这张图片。", "用一句话描述这张图片。", "图中有什么？"),
    },
    "scene_colour": {
        "en": ('What colour is the shape labeled "{label}"?',),
        "zh": ("标着“{label}”的图形是什么颜色？",),
    },
    "scene_word": {
        "en": ("What word is written under the {colour} {shape}?",),
        "zh": ("{colour}{shape}下面写的是什么字？",),
    },
}

RECEIPT_KEYS = {
    "date": ("Date", "日期"),
    "receipt_no": ("Receipt No.", "单号"),
    "subtotal": ("Subtotal", "小计"),
    "tax": ("Tax", "税额"),
    "total": ("Total", "合计"),
}
RECEIPT_THANKS = ("Thank you!", "谢谢惠顾")
STORE_SUFFIX = (
    ("Market", "Store", "Cafe", "Books", "Pharmacy", "Bakery"),
    ("超市", "商店", "便利店", "餐厅", "书店", "药房"),
)
FORM_TITLES = (
    ("Registration Form", "Application Form", "Order Form", "Delivery Note", "Customer Information"),
    ("登记表", "申请表", "订货单", "送货单", "客户信息"),
)
FORM_FIELDS = (  # (English key, Chinese key, value kind)
    ("Name", "姓名", "name"),
    ("Date", "日期", "date"),
    ("Phone", "电话", "phone"),
    ("Invoice No.", "发票号码", "code"),
    ("Order No.", "订单号", "code"),
    ("Amount", "金额", "price"),
    ("Address", "地址", "address"),
    ("Email", "邮箱", "email"),
    ("Department", "部门", "word"),
    ("ID No.", "编号", "code"),
)
TABLE_COLUMN_KINDS = ("integer", "price", "date", "code", "number", "word")
COLOURS = (
    ("red", "红色", (215, 40, 40)),
    ("green", "绿色", (40, 150, 60)),
    ("blue", "蓝色", (40, 80, 210)),
    ("yellow", "黄色", (235, 195, 30)),
    ("orange", "橙色", (245, 135, 30)),
    ("purple", "紫色", (135, 60, 180)),
)
SHAPES = (("circle", "圆形"), ("square", "正方形"), ("triangle", "三角形"), ("rectangle", "长方形"))


# ----------------------------------------------------------------------------------------------------------------------
# Config and specs


@dataclass
class GeneratorConfig:
    num_samples: int = 1000
    languages: Tuple[str, ...] = LANGUAGES
    tasks: Tuple[str, ...] = TASKS
    seed: int = 0
    heldout_fraction: float = 0.1
    max_chars: int = 40
    image_size: int = 512
    augment: str = "full"
    prompts: str = "varied"
    cjk_characters: Optional[int] = None  # Chinese text from the N most frequent characters only (None: all common)
    max_chars_cjk: Optional[int] = None  # longest Chinese line of the line task (None: max_chars)
    fonts: str = "all"  # all | seen (UNSEEN_FONT_FAMILIES left out: training data) | unseen (only those)

    def validate(self) -> "GeneratorConfig":
        self.languages = tuple(self.languages)
        self.tasks = tuple(self.tasks)
        if self.num_samples < 1:
            raise ValueError("num_samples must be >= 1")
        bad = [l for l in self.languages if l not in LANGUAGES]
        if bad or not self.languages:
            raise ValueError(f"unknown language(s) {bad}; choose from {', '.join(LANGUAGES)}")
        bad = [t for t in self.tasks if t not in TASKS]
        if bad or not self.tasks:
            raise ValueError(f"unknown task(s) {bad}; choose from {', '.join(TASKS)}")
        if len(set(self.languages)) != len(self.languages) or len(set(self.tasks)) != len(self.tasks):
            raise ValueError("languages and tasks must not repeat")
        if not 0.0 <= self.heldout_fraction < 1.0:
            raise ValueError("heldout_fraction must be in [0, 1)")
        if self.max_chars < 4:
            raise ValueError("max_chars must be >= 4")
        if not 128 <= self.image_size <= 4096:
            raise ValueError("image_size must be in [128, 4096]")
        if self.augment not in AUGMENT_LEVELS:
            raise ValueError(f"augment must be one of {AUGMENT_LEVELS}")
        if self.prompts not in PROMPT_STYLES:
            raise ValueError(f"prompts must be one of {PROMPT_STYLES}")
        if self.fonts not in FONT_SPLITS:
            raise ValueError(f"fonts must be one of {FONT_SPLITS}")
        if self.max_chars_cjk is not None and self.max_chars_cjk < 4:
            raise ValueError("max_chars_cjk must be >= 4")
        if self.cjk_characters is not None and self.cjk_characters < 100:
            raise ValueError("cjk_characters must be >= 100 (fewer leave too few words to draw from)")
        return self

    def split_sizes(self) -> Dict[str, int]:
        n_heldout = int(round(self.num_samples * self.heldout_fraction))
        return {"train": self.num_samples - n_heldout, "heldout": n_heldout}


@dataclass
class QA:
    qa_type: str
    question: str  # may contain "{box}", filled in after rendering
    answer: str
    box_key: Optional[str] = None


@dataclass
class SampleSpec:
    id: str
    split: str
    index: int
    language: str
    task: str
    scene: Scene
    qas: List[QA]
    text: str  # full transcript (lines joined with "\n"; tables in Markdown)
    content_lines: List[str] = field(default_factory=list)  # rendered lines that are not fixed template text
    attempt: int = 0  # how many times a held-out sample was re-drawn to avoid training texts

    def units(self) -> Set[str]:
        """Strings that must not be shared between the held-out and training splits."""
        out = set(self.content_lines)
        out.update(qa.answer for qa in self.qas if qa.qa_type in ("full_ocr", "read_line", "read_region", "caption"))
        return out


class _Retry(Exception):
    """The layout did not work out (text too wide, no face for a character...); draw again."""


# ----------------------------------------------------------------------------------------------------------------------
# Layout context


@functools.lru_cache(maxsize=None)
def _language_faces(language: str, fonts: str = "all") -> Tuple[FontFace, ...]:
    """The faces of `language`: all of them, or only the families kept out of training (`unseen`) or the others."""
    faces = check_fonts([language])[language]
    if fonts == "all":
        return faces
    unseen = tuple(f for f in faces if f.family in UNSEEN_FONT_FAMILIES)
    chosen = unseen if fonts == "unseen" else tuple(f for f in faces if f.family not in UNSEEN_FONT_FAMILIES)
    if not chosen:
        raise ValueError(f"no {fonts} font for {language}: install the font packages of `make setup`")
    return chosen


@functools.lru_cache(maxsize=None)
def _text_source(language: str, pool: str, cjk_characters: Optional[int] = None) -> TextSource:
    # Chinese text uses the characters some face has (every line is then drawn with a face that has all of its
    # characters); independent of the font split, so seen- and unseen-font lines come from the same text distribution
    cps = frozenset().union(*(face_codepoints(f) for f in _language_faces(language))) if language != "en" else None
    return TextSource(language, pool, codepoints=cps, cjk_characters=cjk_characters)


class _Ctx:
    def __init__(self, cfg: GeneratorConfig, rng: random.Random, language: str, split: str):
        self.cfg = cfg
        self.rng = rng
        self.lang = language
        self.zh = language != "en"
        self.src = _text_source(language, "train" if split == "train" else "heldout", cfg.cjk_characters)
        self.faces = _language_faces(language, cfg.fonts)
        self.min_size = 14 if self.zh else 12
        # Questions are asked in the image's language; Chinese images get an English question 20% of the time
        # (never with --prompts fixed).
        if cfg.prompts == "blind":
            self.qzh = rng.random() < 0.5
        else:
            self.qzh = self.zh and (cfg.prompts == "fixed" or rng.random() >= ENGLISH_QUESTION_RATE)

    # text helpers
    def loc(self, pair: Tuple[str, str]) -> str:
        """Pick the English or Chinese template of a pair and localise it."""
        return localize(pair[1], self.lang) if self.zh else pair[0]

    def question(self, kind: str, **kw) -> str:
        bank = QUESTIONS[kind]["zh" if self.qzh else "en"]
        template = bank[0] if self.cfg.prompts in ("fixed", "blind") else self.rng.choice(bank)
        kw.setdefault("box", "{box}")
        if self.cfg.prompts == "blind":  # Simplified for every script: the question must not name the script
            return template.format(**kw)
        return (localize(template, self.lang) if self.qzh else template).format(**kw)

    def qloc(self, pair: Tuple[str, str]) -> str:
        """Like :meth:`loc`, but in the language of the questions."""
        return localize(pair[1], self.lang) if self.qzh else pair[0]

    def colon(self) -> str:
        return "：" if self.zh else ": "

    # fonts
    def pick_face(self, texts: Sequence[str] = (), mono: Optional[bool] = None) -> FontFace:
        faces = [f for f in self.faces if not f.bold and (mono is None or f.monospace == mono)]
        faces = faces or [f for f in self.faces if not f.bold] or list(self.faces)
        faces = [f for f in faces if all(f.supports(t) for t in texts)]
        if not faces:
            raise _Retry()
        return self.rng.choice(faces)

    def bold_of(self, face: FontFace) -> FontFace:
        for f in self.faces:
            if f.family == face.family and f.bold:
                return f
        return face

    def size(self, lo_frac: float, hi_frac: float) -> int:
        s = self.cfg.image_size
        lo = max(self.min_size, int(round(lo_frac * s)))
        hi = max(lo, int(round(hi_frac * s)))
        return self.rng.randint(lo, hi)

    def text_op(
        self, text: str, face: FontFace, size: int, x: float, y: float, fill: Sequence[int], key: Optional[str] = None
    ) -> TextOp:
        if not face.supports(text):
            raise _Retry()
        op = TextOp(text, face, size, x, y, tuple(fill), key)
        op.box = text_box(face, size, x, y, text)
        return op

    # colours
    def colours(self, allow_dark: bool = True) -> Tuple[Background, Tuple[int, int, int]]:
        rng, level = self.rng, self.cfg.augment
        if level == "none":
            v = rng.randint(238, 255)
            bg = Background("solid", (v, v, v))
            c = rng.randint(0, 40)
            return bg, (c, c, c)
        for _ in range(100):
            dark = level == "full" and allow_dark and rng.random() < 0.15
            if dark:
                base = tuple(rng.randint(0, 70) for _ in range(3))
                text = tuple(rng.randint(200, 255) for _ in range(3))
            else:
                lo = 215 if level == "light" else 170
                base = tuple(rng.randint(lo, 255) for _ in range(3))
                text = tuple(rng.randint(0, 90 if level == "light" else 110) for _ in range(3))
            r = rng.random()
            if level == "light":
                kind = "solid" if r < 0.7 else "paper"
            else:
                kind = "solid" if r < 0.4 else ("gradient" if r < 0.7 else "paper")
            color2 = base
            if kind == "gradient":
                color2 = tuple(min(255, max(0, c + rng.randint(-60, 60))) for c in base)
            bg = Background(kind, base, color2, rng.random() < 0.5)
            if min(abs(luminance(text) - luminance(base)), abs(luminance(text) - luminance(color2))) >= 0.45:
                return bg, text
        return Background("solid", (255, 255, 255)), (0, 0, 0)

    def augment(self, scene: Scene, font_size: int) -> None:
        """Choose the augmentation of ``scene``; geometric warps are shrunk until all content stays inside."""
        rng, level = self.rng, self.cfg.augment
        aug = Augment()
        if level == "none":
            scene.augment = aug
            return
        w, h = scene.width, scene.height
        full = level == "full"
        angle, jitter = 0.0, [(0.0, 0.0)] * 4
        if rng.random() < (0.7 if full else 0.5):
            angle = rng.uniform(-1, 1) * (3.5 if full else 1.0)
        if full and rng.random() < 0.4:
            jitter = [(rng.uniform(-1, 1) * 0.025 * w, rng.uniform(-1, 1) * 0.025 * h) for _ in range(4)]
        content = _content_box(scene.ops)
        for scale in (1.0, 0.5, 0.25, 0.125):
            if angle == 0.0 and all(j == (0.0, 0.0) for j in jitter):
                break
            coeffs, forward = warp_params(w, h, angle * scale, [(jx * scale, jy * scale) for jx, jy in jitter])
            x0, y0, x1, y1 = map_box(forward, content)
            if x0 >= 1 and y0 >= 1 and x1 <= w - 1 and y1 <= h - 1:
                aug.coeffs, aug.forward = coeffs, forward
                break
        if aug.coeffs is not None:
            if full and rng.random() < 0.5:
                aug.border = tuple(rng.randint(0, 255) for _ in range(3))
            else:
                aug.border = scene.background.color
        blur_cap = min(1.0, font_size / 24.0)
        if rng.random() < (0.4 if full else 0.25):
            aug.blur = round(rng.uniform(0.3, 1.1 if full else 0.6) * blur_cap, 3)
        if rng.random() < (0.5 if full else 0.3):
            aug.noise = round(rng.uniform(2.0, 10.0) if full else rng.uniform(1.0, 4.0), 3)
        if rng.random() < (0.4 if full else 0.2):
            aug.jpeg_quality = rng.randint(35, 90) if full else rng.randint(70, 95)
        scene.augment = aug


def _content_box(ops: Sequence[object]) -> Tuple[float, float, float, float]:
    boxes = []
    for op in ops:
        if isinstance(op, TextOp):
            boxes.append(op.box)
        elif isinstance(op, LineOp):
            x0, y0, x1, y1 = op.xy
            boxes.append((min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)))
        elif isinstance(op, ShapeOp):
            boxes.append(op.box)
    if not boxes:
        return (0.0, 0.0, 0.0, 0.0)
    return (min(b[0] for b in boxes), min(b[1] for b in boxes), max(b[2] for b in boxes), max(b[3] for b in boxes))


def _line_height(face: FontFace, size: int) -> int:
    asc, desc = get_font(face, size).getmetrics()
    return asc + desc


def _width(face: FontFace, size: int, text: str) -> float:
    return get_font(face, size).getlength(text)


# ----------------------------------------------------------------------------------------------------------------------
# Layouts. Each returns (scene, qas, transcript, content_lines).


def _layout_line(ctx: _Ctx):
    rng, cfg = ctx.rng, ctx.cfg
    text = ctx.src.line(rng, cfg.max_chars_cjk if ctx.zh and cfg.max_chars_cjk else cfg.max_chars)
    face = ctx.pick_face([text])
    size = ctx.size(0.045, 0.085)
    l, t, r, b = get_font(face, size).getbbox(text, anchor="la")
    mx = rng.uniform(0.2, 1.0) * size
    my = rng.uniform(0.3, 0.9 if cfg.augment == "full" else 0.5) * size
    ink_w = r - min(l, 0)
    if ink_w + 2 * mx > cfg.image_size:
        size = int(size * (cfg.image_size - 2 * mx) / ink_w)
        if size < ctx.min_size:
            raise _Retry()
        l, t, r, b = get_font(face, size).getbbox(text, anchor="la")
        ink_w = r - min(l, 0)
    width = int(math.ceil(ink_w + 2 * mx))
    height = int(math.ceil(_line_height(face, size) + 2 * my))
    bg, fill = ctx.colours()
    scene = Scene(width, height, bg)
    scene.ops.append(ctx.text_op(text, face, size, mx - min(l, 0), my, fill, key="line1"))
    ctx.augment(scene, size)
    qas = [QA("full_ocr", ctx.question("full_ocr"), text)]
    return scene, qas, text, [text]


def _wrap(ctx: _Ctx, face: FontFace, size: int, avail: float, n_lines: int) -> List[str]:
    """Greedy wrap of generated sentences into ``n_lines`` lines (words for English, characters for Chinese).

    A paragraph sometimes ends after a sentence (short last line); the last line is cut where the page ends.
    """
    rng, src = ctx.rng, ctx.src
    sep = "" if ctx.zh else " "

    font = get_font(face, size)
    widths: Dict[str, float] = {}

    def width(t: str) -> float:
        if t not in widths:
            widths[t] = font.getlength(t)
        return widths[t]

    def fits(t: str, w: float) -> bool:
        return len(t) <= ctx.cfg.max_chars and w <= avail * 0.98  # 2% slack for kerning across token joins

    lines: List[str] = []
    cur, cur_w = "", 0.0
    tokens: List[str] = []
    for _ in range(20000):
        if len(lines) >= n_lines:
            break
        if not tokens:
            if cur and rng.random() < 0.25:  # end of paragraph
                lines.append(cur)
                cur, cur_w = "", 0.0
                continue
            if rng.random() < 0.08:
                sentence = src.value(rng, rng.choice(("date", "price", "number", "code")))
            else:
                sentence = src.phrase(rng, 40 if ctx.zh else 80, min_chars=12 if ctx.zh else 24)
                if sentence[-1] not in ".!?:。！？":
                    sentence += "。" if ctx.zh else "."
            tokens = list(sentence) if ctx.zh else sentence.split(" ")
        tok = tokens.pop(0)
        piece = (sep if cur else "") + tok
        cand, cand_w = cur + piece, cur_w + width(piece)
        if fits(cand, cand_w):
            cur, cur_w = cand, cand_w
        elif cur:
            lines.append(cur)
            cur, cur_w = (tok, width(tok)) if fits(tok, width(tok)) else ("", 0.0)
    else:
        raise _Retry()
    lines = [ln.strip() for ln in lines if ln.strip()]
    if not lines:
        raise _Retry()
    return lines


def _layout_page(ctx: _Ctx):
    rng, cfg = ctx.rng, ctx.cfg
    w = cfg.image_size
    h = int(round(w * rng.uniform(0.7, 1.3)))
    face = ctx.pick_face()
    size = ctx.size(0.028, 0.05)
    mx, my = rng.uniform(0.05, 0.1) * w, rng.uniform(0.05, 0.1) * h
    spacing = rng.uniform(1.1, 1.5)
    lh = _line_height(face, size) * spacing
    avail = w - 2 * mx
    max_lines = int((h - 2 * my) // lh)
    if max_lines < 3:
        raise _Retry()
    lines: List[Tuple[str, FontFace, int, str]] = []  # text, face, size, align
    n_body = rng.randint(2, min(max_lines, 14))
    if rng.random() < 0.5 and n_body >= 3:
        tsize = int(size * rng.uniform(1.15, 1.4))
        tface = ctx.bold_of(face)
        title = ctx.src.phrase(rng, min(cfg.max_chars, 24 if not ctx.zh else 14), punctuation=False)
        if _width(tface, tsize, title) <= avail:
            lines.append((title, tface, tsize, rng.choice(("left", "center"))))
            n_body -= 1 if tsize * 1.2 < lh * 1.5 else 2
    for text in _wrap(ctx, face, size, avail, max(1, n_body)):
        lines.append((text, face, size, "left"))
    bg, fill = ctx.colours()
    scene = Scene(w, h, bg)
    y = my
    content = []
    for i, (text, f, s, align) in enumerate(lines):
        tw = _width(f, s, text)
        x = mx if align == "left" else (w - tw) / 2
        if y + _line_height(f, s) > h - my + 1:
            break
        scene.ops.append(ctx.text_op(text, f, s, x, y, fill, key=f"line{i + 1}"))
        content.append(text)
        y += _line_height(f, s) * spacing
    if not content:
        raise _Retry()
    transcript = "\n".join(content)
    ctx.augment(scene, size)
    qas = [QA("full_ocr", ctx.question("full_ocr"), transcript)]
    if len(content) >= 2 and rng.random() < 0.7:
        n = rng.randrange(len(content))
        if rng.random() < 0.5:
            qas.append(QA("read_line", ctx.question("read_line", n=n + 1), content[n]))
        else:
            qas.append(QA("read_region", ctx.question("read_region"), content[n], box_key=f"line{n + 1}"))
    rng.shuffle(qas)
    return scene, qas, transcript, content


def _store_name(ctx: _Ctx) -> str:
    rng = ctx.rng
    if ctx.zh:
        return ctx.src.word(rng) + localize(rng.choice(STORE_SUFFIX[1]), ctx.lang)
    (w,) = ctx.src.distinct_words(rng, 1, max_chars=10)
    return f"{w} {rng.choice(STORE_SUFFIX[0])}"


def _kv_key(ctx: _Ctx, pair: Tuple[str, str]) -> str:
    key = ctx.loc(pair)
    if ctx.zh and ctx.rng.random() < 0.3:
        key = f"{key} {pair[0]}"  # bilingual key, e.g. "合计 Total"
    return key


def _layout_receipt(ctx: _Ctx):
    rng, cfg = ctx.rng, ctx.cfg
    s_img = cfg.image_size
    w = int(round(s_img * rng.uniform(0.5, 0.72)))
    face = ctx.pick_face(mono=rng.random() < 0.5)
    bold = ctx.bold_of(face)
    size = ctx.size(0.026, 0.04)
    mx, my = rng.uniform(0.05, 0.09) * w, rng.uniform(0.04, 0.08) * w
    lh = _line_height(face, size) * rng.uniform(1.05, 1.3)
    avail = w - 2 * mx
    cur = ctx.src.currency(rng)
    colon = ctx.colon()

    keys = {k: _kv_key(ctx, v) for k, v in RECEIPT_KEYS.items()}
    store = _store_name(ctx)
    date = ctx.src.date(rng)
    time_s = ctx.src.time(rng)
    number = ctx.src.code(rng)
    n_items = rng.randint(2, 6)
    item_names = ctx.src.distinct_words(rng, n_items, max_chars=8 if ctx.zh else 14)
    item_cents = [ctx.src.price_cents(rng, 0.5, 300.0) for _ in item_names]
    subtotal = sum(item_cents)
    tax = int(round(subtotal * rng.choice((0.0, 0.05, 0.06, 0.08, 0.1))))
    total = subtotal + tax

    def price(c: int) -> str:
        return ctx.src.format_price(c, cur)

    # rows: (left, right, align, bold, content, key)
    rows: List[Tuple[str, Optional[str], str, bool, bool, Optional[str]]] = []
    rows.append((store, None, "center", True, True, "store"))
    rows.append((f"{keys['date']}{colon}{date} {time_s}", None, "left", False, True, "date"))
    rows.append((f"{keys['receipt_no']}{colon}{number}", None, "left", False, True, "receipt_no"))
    rows.append(("-", None, "rule", False, False, None))
    for name, c in zip(item_names, item_cents):
        rows.append((name, price(c), "split", False, True, None))
    rows.append(("-", None, "rule", False, False, None))
    if tax:
        rows.append((keys["subtotal"], price(subtotal), "split", False, True, None))
        rows.append((keys["tax"], price(tax), "split", False, True, None))
    rows.append((keys["total"], price(total), "split", True, True, "total"))
    if rng.random() < 0.5:
        rows.append((ctx.loc(RECEIPT_THANKS), None, "center", False, False, None))

    h = int(math.ceil(2 * my + lh * len(rows)))
    bg, fill = ctx.colours(allow_dark=False)
    scene = Scene(w, h, bg)
    y = my
    transcript, content = [], []
    for i, (left, right, align, is_bold, is_content, key) in enumerate(rows):
        f = bold if is_bold else face
        if align == "rule":
            yy = y + lh / 2
            scene.ops.append(LineOp((mx, yy, w - mx, yy), fill, 1))
            y += lh
            continue
        lw = _width(f, size, left)
        if align == "center":
            if lw > avail:
                raise _Retry()
            scene.ops.append(ctx.text_op(left, f, size, (w - lw) / 2, y, fill, key=f"row{i}"))
            line = left
        elif align == "left":
            if lw > avail:
                raise _Retry()
            scene.ops.append(ctx.text_op(left, f, size, mx, y, fill, key=f"row{i}"))
            line = left
        else:
            rw = _width(f, size, right)
            if lw + rw + size > avail:
                raise _Retry()
            scene.ops.append(ctx.text_op(left, f, size, mx, y, fill))
            scene.ops.append(ctx.text_op(right, f, size, w - mx - rw, y, fill))
            line = f"{left} {right}"
        transcript.append(line)
        if is_content:
            content.append(line)
        y += lh
    ctx.augment(scene, size)

    candidates = [
        QA("kv", ctx.question("total"), price(total)),
        QA("kv", ctx.question("date"), date),
        QA(
            "kv",
            ctx.question("receipt_no", key=keys["receipt_no"] if ctx.qzh else RECEIPT_KEYS["receipt_no"][0]),
            number,
        ),
        QA("kv", ctx.question("store"), store),
    ]
    k = rng.randrange(len(item_names))
    candidates.append(QA("kv", ctx.question("item_price", item=item_names[k]), price(item_cents[k])))
    row = rng.choice([1, 2])  # the date or the receipt number row
    candidates.append(QA("read_region", ctx.question("read_region"), transcript[row], box_key=f"row{row}"))
    qas = rng.sample(candidates, rng.randint(1, 2))
    if rng.random() < 0.3:
        qas.insert(0, QA("full_ocr", ctx.question("full_ocr"), "\n".join(transcript)))
    return scene, qas, "\n".join(transcript), content


def _field_value(ctx: _Ctx, kind: str) -> str:
    rng, src = ctx.rng, ctx.src
    if kind == "name":
        return src.person_name(rng)
    if kind == "address":
        return src.address(rng)
    if kind == "email":
        return src.email(rng)
    if kind == "word":
        (w,) = src.distinct_words(rng, 1, max_chars=12)
        return w
    return src.value(rng, kind)


def _layout_form(ctx: _Ctx):
    rng, cfg = ctx.rng, ctx.cfg
    w = cfg.image_size
    face = ctx.pick_face()
    bold = ctx.bold_of(face)
    size = ctx.size(0.028, 0.045)
    mx, my = rng.uniform(0.05, 0.09) * w, rng.uniform(0.05, 0.09) * w
    lh = _line_height(face, size)
    gap = lh * rng.uniform(1.3, 1.8)
    style = rng.choice(("inline", "columns", "boxes"))
    fields = rng.sample(FORM_FIELDS, rng.randint(3, 6))
    keys = [_kv_key(ctx, (en, zh)) for en, zh, _ in fields]
    values = [_field_value(ctx, kind) for _, _, kind in fields]
    title = ctx.loc((rng.choice(FORM_TITLES[0]), rng.choice(FORM_TITLES[1])))
    tsize = int(size * 1.3)
    h = int(math.ceil(2 * my + _line_height(bold, tsize) * 1.6 + gap * len(fields)))
    bg, fill = ctx.colours(allow_dark=False)
    scene = Scene(w, h, bg)
    tw = _width(bold, tsize, title)
    if tw > w - 2 * mx:
        raise _Retry()
    scene.ops.append(ctx.text_op(title, bold, tsize, (w - tw) / 2, my, fill))
    y = my + _line_height(bold, tsize) * 1.6
    labels = [k + ctx.colon().strip() for k in keys]
    key_w = max(_width(face, size, lab) for lab in labels)
    transcript, content = [title], []
    for i, (label, value) in enumerate(zip(labels, values)):
        vw = _width(face, size, value)
        if style == "inline":
            line = f"{label} {value}" if not ctx.zh or label.endswith(" ") else f"{label}{value}"
            if _width(face, size, line) > w - 2 * mx:
                raise _Retry()
            scene.ops.append(ctx.text_op(line, face, size, mx, y, fill, key=f"field{i}"))
        else:
            vx = mx + key_w + size
            if vx + vw > w - mx:
                raise _Retry()
            scene.ops.append(ctx.text_op(label, face, size, mx, y, fill))
            scene.ops.append(ctx.text_op(value, face, size, vx, y, fill, key=f"field{i}"))
            if style == "columns":
                yy = y + lh + 2
                scene.ops.append(LineOp((vx, yy, w - mx, yy), fill, 1))
            else:
                top, bot = y - (gap - lh) / 2, y + lh + (gap - lh) / 2
                scene.ops.append(LineOp((mx - size / 3, top, w - mx + size / 3, top), fill, 1))
                scene.ops.append(LineOp((mx - size / 3, bot, w - mx + size / 3, bot), fill, 1))
                scene.ops.append(LineOp((vx - size / 2, top, vx - size / 2, bot), fill, 1))
            line = f"{label} {value}"
        transcript.append(line)
        content.append(line)
        y += gap
    ctx.augment(scene, size)
    qas = []
    for j in rng.sample(range(len(fields)), rng.randint(1, 2)):
        en_key, zh_key, _ = fields[j]
        if ctx.qzh:
            key = localize(zh_key, ctx.lang)
        else:
            key = en_key.lower() if " " not in en_key else en_key
        qas.append(QA("kv", ctx.question("field", key=key), values[j]))
    if rng.random() < 0.3:
        qas.insert(0, QA("full_ocr", ctx.question("full_ocr"), "\n".join(transcript)))
    return scene, qas, "\n".join(transcript), content


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    out = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out)


def _layout_table(ctx: _Ctx):
    rng, cfg = ctx.rng, ctx.cfg
    n_cols, n_rows = rng.randint(2, 4), rng.randint(2, 5)
    words = ctx.src.distinct_words(rng, n_cols + n_rows, max_chars=6 if ctx.zh else 12)
    header, row_keys = words[:n_cols], words[n_cols:]
    kinds = [rng.choice(TABLE_COLUMN_KINDS) for _ in range(n_cols - 1)]
    cells = [
        [rk] + [ctx.src.value(rng, k) if k != "word" else ctx.src.distinct_words(rng, 1, 10)[0] for k in kinds]
        for rk in row_keys
    ]
    face = ctx.pick_face()
    bold = ctx.bold_of(face)
    size = ctx.size(0.026, 0.042)
    pad = size * rng.uniform(0.35, 0.7)
    lh = _line_height(face, size)
    col_w = [
        max(_width(bold, size, header[c]), *(_width(face, size, r[c]) for r in cells)) + 2 * pad for c in range(n_cols)
    ]
    margin = rng.uniform(0.03, 0.08) * cfg.image_size
    w = int(math.ceil(sum(col_w) + 2 * margin))
    if w > cfg.image_size:
        raise _Retry()
    row_h = lh + 2 * pad
    h = int(math.ceil((n_rows + 1) * row_h + 2 * margin))
    bg, fill = ctx.colours(allow_dark=False)
    scene = Scene(w, h, bg)
    grid = rng.choice(("full", "rules"))
    xs = [margin]
    for cw in col_w:
        xs.append(xs[-1] + cw)
    ys = [margin + i * row_h for i in range(n_rows + 2)]
    for i, y in enumerate(ys):
        if grid == "full" or i in (0, 1, len(ys) - 1):
            scene.ops.append(
                LineOp((xs[0], y, xs[-1], y), fill, 2 if i in (0, len(ys) - 1) and grid == "rules" else 1)
            )
    if grid == "full":
        for x in xs:
            scene.ops.append(LineOp((x, ys[0], x, ys[-1]), fill, 1))
    for c in range(n_cols):
        scene.ops.append(ctx.text_op(header[c], bold, size, xs[c] + pad, ys[0] + pad, fill))
        for r in range(n_rows):
            scene.ops.append(ctx.text_op(cells[r][c], face, size, xs[c] + pad, ys[r + 1] + pad, fill))
    ctx.augment(scene, size)
    md = markdown_table(header, cells)
    content = ["| " + " | ".join(r) + " |" for r in cells]
    qas = []
    if rng.random() < 0.6:
        qas.append(QA("full_ocr", ctx.question("full_ocr"), md))
    if not qas or rng.random() < 0.6:
        r, c = rng.randrange(n_rows), rng.randint(1, n_cols - 1)
        qas.append(QA("table_cell", ctx.question("table_cell", row=row_keys[r], col=header[c]), cells[r][c]))
    return scene, qas, md, content


def _layout_scene(ctx: _Ctx):
    rng, cfg = ctx.rng, ctx.cfg
    w = cfg.image_size
    h = int(round(w * rng.uniform(0.6, 0.9)))
    n = rng.randint(1, 3)
    colours = rng.sample(COLOURS, n)
    shapes = [rng.choice(SHAPES) for _ in range(n)]
    labels = ctx.src.distinct_words(rng, n, max_chars=4 if ctx.zh else 9)
    face = ctx.pick_face()
    size = ctx.size(0.045, 0.07)
    level = cfg.augment
    bg_colour = (255, 255, 255) if level == "none" else tuple(rng.randint(200, 255) for _ in range(3))
    bg = Background(
        "solid" if level != "full" or rng.random() < 0.6 else "gradient",
        bg_colour,
        tuple(min(255, c + rng.randint(-30, 30)) if c < 255 else c for c in bg_colour),
        rng.random() < 0.5,
    )
    scene = Scene(w, h, bg)
    slot = w / n
    text_fill = (rng.randint(0, 50),) * 3
    described = []
    for i in range(n):
        d = min(slot, h) * rng.uniform(0.32, 0.5)
        cx = slot * (i + 0.5) + rng.uniform(-0.1, 0.1) * slot
        cy = h * rng.uniform(0.35, 0.45)
        shape_name = shapes[i][0]
        dw = d * (1.5 if shape_name == "rectangle" else 1.0)
        dw = min(dw, slot * 0.9)
        box = (cx - dw / 2, cy - d / 2, cx + dw / 2, cy + d / 2)
        scene.ops.append(ShapeOp(shape_name, box, colours[i][2], outline=(30, 30, 30) if rng.random() < 0.5 else None))
        lw = _width(face, size, labels[i])
        if lw > slot * 0.95:
            raise _Retry()
        scene.ops.append(
            ctx.text_op(labels[i], face, size, cx - lw / 2, box[3] + 0.15 * d, text_fill, key=f"label{i}")
        )
        if scene.ops[-1].box[3] > h - 2:
            raise _Retry()
        described.append((colours[i], shapes[i], labels[i]))
    ctx.augment(scene, size)
    if ctx.qzh:

        def loc(t: str) -> str:
            return localize(t, ctx.lang)

        items = [loc("标有“") + lab + loc("”的" + col[1] + shp[1]) for col, shp, lab in described]
        if n == 1:
            caption = loc("图中有一个") + items[0] + "。"
        else:
            caption = loc("图中从左到右依次是：") + "、".join(items[:-1]) + loc("和") + items[-1] + "。"
    else:
        items = [
            f'{"an" if col[0][0] in "aeiou" else "a"} {col[0]} {shp[0]} labeled "{lab}"' for col, shp, lab in described
        ]
        if n == 1:
            caption = items[0][0].upper() + items[0][1:] + "."
        else:
            caption = "From left to right: " + ", ".join(items[:-1]) + " and " + items[-1] + "."
    qas = [QA("caption", ctx.question("caption"), caption)]
    if rng.random() < 0.6:
        col, shp, lab = rng.choice(described)
        if rng.random() < 0.5:
            q = ctx.question("scene_colour", label=lab)
            a = (
                localize("标着“", ctx.lang) + lab + localize(f"”的图形是{col[1]}的。", ctx.lang)
                if ctx.qzh
                else f'The shape labeled "{lab}" is {col[0]}.'
            )
        else:
            q = ctx.question("scene_word", colour=ctx.qloc(col[:2]), shape=ctx.qloc(shp))
            a = lab
        qas.append(QA("scene_attr", q, a))
    return scene, qas, "\n".join(labels), list(labels)


LAYOUTS = {
    "line": _layout_line,
    "page": _layout_page,
    "receipt": _layout_receipt,
    "form": _layout_form,
    "table": _layout_table,
    "scene": _layout_scene,
}


# ----------------------------------------------------------------------------------------------------------------------
# Specs


def sample_id(cfg: GeneratorConfig, split: str, index: int) -> str:
    return f"synth_s{cfg.seed}_{split}_{index:07d}"


def build_spec(cfg: GeneratorConfig, split: str, index: int, language: str, task: str, attempt: int = 0) -> SampleSpec:
    """All random choices for one sample (deterministic in its arguments)."""
    rng = random.Random(f"{cfg.seed}:{split}:{index}:{attempt}")
    ctx = _Ctx(cfg, rng, language, split)
    for _ in range(200):
        try:
            scene, qas, text, content = LAYOUTS[task](ctx)
        except _Retry:
            continue
        scene.noise_seed = rng.getrandbits(63)
        return SampleSpec(
            sample_id(cfg, split, index), split, index, language, task, scene, qas, text, content, attempt
        )
    raise RuntimeError(f"could not lay out sample {sample_id(cfg, split, index)} ({task}, {language}) after 200 tries")


def assignments(cfg: GeneratorConfig, split: str, n: int) -> List[Tuple[str, str]]:
    """(task, language) per sample of a split: shuffled blocks of all combinations, so every combination occurs
    once per block (and a split smaller than one block still gets a random mix)."""
    rng = random.Random(f"{cfg.seed}:{split}:assign")
    combos = [(t, l) for t in cfg.tasks for l in cfg.languages]
    order: List[Tuple[str, str]] = []
    while len(order) < n:
        block = list(combos)
        rng.shuffle(block)
        order.extend(block)
    return order[:n]


def iter_specs(cfg: GeneratorConfig, max_attempts: int = 200) -> Iterator[SampleSpec]:
    """Train specs, then held-out specs re-drawn until they share no text unit with the training split."""
    cfg.validate()
    sizes = cfg.split_sizes()
    train_units: Set[str] = set()
    for i, (task, lang) in enumerate(assignments(cfg, "train", sizes["train"])):
        spec = build_spec(cfg, "train", i, lang, task)
        train_units |= spec.units()
        yield spec
    for i, (task, lang) in enumerate(assignments(cfg, "heldout", sizes["heldout"])):
        for attempt in range(max_attempts):
            spec = build_spec(cfg, "heldout", i, lang, task, attempt)
            if not (spec.units() & train_units):
                break
        else:
            raise RuntimeError(
                f"held-out sample {i} ({task}, {lang}) kept colliding with training texts "
                f"after {max_attempts} tries; use more varied settings (e.g. larger --max-chars)"
            )
        yield spec


# ----------------------------------------------------------------------------------------------------------------------
# Rendering a spec into a record


def _norm_box(box: Sequence[float], w: int, h: int) -> str:
    x0, y0, x1, y1 = box
    vals = [x0 / w, y0 / h, x1 / w, y1 / h]
    vals = [min(1000, max(0, int(round(v * 1000)))) for v in vals]
    return "[" + ", ".join(str(v) for v in vals) + "]"


def render_spec(spec: SampleSpec) -> tuple[PIL.Image.Image, dict]:
    """(PIL image, LLaVA record) for a spec."""
    img = render(spec.scene)
    boxes = scene_boxes(spec.scene) if any(qa.box_key for qa in spec.qas) else {}
    conversations = []
    for i, qa in enumerate(spec.qas):
        q = qa.question
        if qa.box_key:
            q = q.replace("{box}", _norm_box(boxes[qa.box_key], spec.scene.width, spec.scene.height))
        if i == 0:
            q = "<image>\n" + q
        conversations.append({"from": "human", "value": q})
        conversations.append({"from": "gpt", "value": qa.answer})
    record = {
        "id": spec.id,
        "image": f"images/{spec.id}.png",
        "conversations": conversations,
        "language": spec.language,
        "task": spec.task,
        "qa_types": [qa.qa_type for qa in spec.qas],
        "text": spec.text,
        "width": spec.scene.width,
        "height": spec.scene.height,
    }
    return img, record


def _render_and_write(spec: SampleSpec, out_dir: str) -> Tuple[str, dict]:
    img, record = render_spec(spec)
    data = encode_png(img)
    with open(os.path.join(out_dir, record["image"]), "wb") as f:
        f.write(data)
    return spec.split, record


def iter_samples(cfg: GeneratorConfig) -> Iterator[Tuple[object, dict]]:
    """(PIL image, record) pairs in memory (no files), in order."""
    for spec in iter_specs(cfg):
        yield render_spec(spec)


# ----------------------------------------------------------------------------------------------------------------------
# Writing a dataset folder

_OWNED = ("images", "hf", "train.json", "heldout.json", "meta.json")


def _prepare_dir(out_dir: str, overwrite: bool) -> None:
    os.makedirs(out_dir, exist_ok=True)
    present = [p for p in _OWNED if os.path.exists(os.path.join(out_dir, p))]
    if present:
        if not (overwrite or os.path.isfile(os.path.join(out_dir, "meta.json"))):
            raise FileExistsError(
                f"{out_dir} already holds {present} that this generator did not write; pass --overwrite to replace them"
            )
        for p in present:
            path = os.path.join(out_dir, p)
            shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)
    os.makedirs(os.path.join(out_dir, "images"))


def hf_features() -> datasets.Features:
    from datasets import Features, Image, List, Value

    return Features(
        {
            "id": Value("string"),
            "messages": List(
                {"role": Value("string"), "content": List({"type": Value("string"), "text": Value("string")})}
            ),
            "images": List(Image()),
            "language": Value("string"),
            "task": Value("string"),
            "qa_types": List(Value("string")),
            "text": Value("string"),
        }
    )


def _hf_rows(json_path: str, root: str):
    from .loading import llava_to_messages

    with open(json_path, encoding="utf-8") as f:
        records = json.load(f)
    for r in records:
        with open(os.path.join(root, r["image"]), "rb") as f:
            data = f.read()
        yield {
            "id": r["id"],
            "messages": llava_to_messages(r["conversations"], 1),
            "images": [{"bytes": data, "path": os.path.basename(r["image"])}],
            "language": r["language"],
            "task": r["task"],
            "qa_types": r["qa_types"],
            "text": r["text"],
        }


def write_hf_dataset(out_dir: str, fingerprint_seed: str) -> None:
    """``DIR/hf``: a DatasetDict(train, heldout) built from the JSON files, with the PNG bytes embedded."""
    import datasets
    from datasets import Dataset, DatasetDict

    features = hf_features()
    tmp = tempfile.mkdtemp(prefix=".hf_build_", dir=out_dir)
    was_enabled = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    try:
        splits = {}
        for split in SPLITS:
            json_path = os.path.join(out_dir, f"{split}.json")
            with open(json_path, encoding="utf-8") as f:
                n_records = len(json.load(f))
            if n_records == 0:
                splits[split] = Dataset.from_dict({k: [] for k in features}, features=features)
                continue
            fp = f"ocr_mllm_synth_{split}_{hash_str(fingerprint_seed + split):016x}"
            splits[split] = Dataset.from_generator(
                _hf_rows,
                features=features,
                cache_dir=tmp,
                gen_kwargs={"json_path": json_path, "root": out_dir},
                fingerprint=fp,
            )
        DatasetDict(splits).save_to_disk(os.path.join(out_dir, "hf"))
    finally:
        if was_enabled:
            datasets.enable_progress_bars()
        shutil.rmtree(tmp, ignore_errors=True)


def hash_str(s: str) -> int:
    import hashlib

    return int.from_bytes(hashlib.sha256(s.encode("utf-8")).digest()[:8], "big")


def generate_dataset(
    out_dir: str,
    cfg: GeneratorConfig,
    workers: int = 1,
    progress: bool = True,
    write_hf: bool = True,
    overwrite: bool = False,
) -> Dict[str, object]:
    """Generate ``cfg.num_samples`` samples into ``out_dir`` (see the module docstring); returns a summary."""
    cfg.validate()
    faces = check_fonts(cfg.languages)  # fail early, naming the Debian package
    _prepare_dir(out_dir, overwrite)
    records: Dict[str, List[dict]] = {s: [] for s in SPLITS}
    work = functools.partial(_render_and_write, out_dir=out_dir)
    t0 = time.perf_counter()
    from tqdm.auto import tqdm

    bar = tqdm(total=cfg.num_samples, desc="synthetic OCR", unit="img", disable=not progress)
    try:
        if workers <= 1:
            for spec in iter_specs(cfg):
                split, rec = work(spec)
                records[split].append(rec)
                bar.update(1)
        else:
            methods = multiprocessing.get_all_start_methods()
            mp = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
            with mp.Pool(workers) as pool:
                for split, rec in pool.imap(work, iter_specs(cfg), chunksize=8):
                    records[split].append(rec)
                    bar.update(1)
    finally:
        bar.close()
    elapsed = time.perf_counter() - t0
    for split in SPLITS:
        with open(os.path.join(out_dir, f"{split}.json"), "w", encoding="utf-8") as f:
            json.dump(records[split], f, ensure_ascii=False, indent=1)
            f.write("\n")
    meta = {
        "generator": "ocr_mllm.data.synthetic",
        "format_version": FORMAT_VERSION,
        "config": asdict(cfg),
        "counts": {s: len(records[s]) for s in SPLITS},
        "fonts": {  # the faces lines were drawn with (the font split applied)
            lang: [f"{f.name} ({os.path.basename(f.path)}#{f.index})" for f in _language_faces(lang, cfg.fonts)]
            for lang in faces
        },
    }
    with open(os.path.join(out_dir, "meta.json"), "w", encoding="utf-8") as f:
        json.dump(meta, f, ensure_ascii=False, indent=1)
        f.write("\n")
    if write_hf:
        write_hf_dataset(out_dir, json.dumps(asdict(cfg), sort_keys=True))
    return {"counts": meta["counts"], "seconds": elapsed, "images_per_second": cfg.num_samples / max(elapsed, 1e-9)}


# ----------------------------------------------------------------------------------------------------------------------
# Corpus


def iter_corpus_texts(
    source: str, splits: Sequence[str] = ("train",), include_questions: bool = False
) -> Iterator[str]:
    """All answer texts (assistant turns) of a generated dataset, e.g. to train a tokenizer.

    ``source`` is the generator's output folder (reads ``{split}.json`` for each split) or one LLaVA JSON file.
    With ``include_questions`` the user turns are yielded too (without the ``<image>`` placeholder).
    """
    paths = [source] if os.path.isfile(source) else [os.path.join(source, f"{s}.json") for s in splits]
    for path in paths:
        with open(path, encoding="utf-8") as f:
            records = json.load(f)
        for r in records:
            for turn in r.get("conversations", []):
                if turn.get("from") == "gpt":
                    yield turn["value"]
                elif include_questions and turn.get("from") == "human":
                    q = turn["value"].replace("<image>\n", "").replace("<image>", "").strip()
                    if q:
                        yield q


# ----------------------------------------------------------------------------------------------------------------------
# CLI


def _csv(value: str) -> Tuple[str, ...]:
    return tuple(v.strip() for v in value.split(",") if v.strip())


def build_arg_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description="Generate multilingual synthetic OCR data (LLaVA JSON + images + HF dataset).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--output", required=True, help="output folder")
    p.add_argument("--num-samples", type=int, default=1000, help="number of images (train + held-out)")
    p.add_argument("--languages", type=_csv, default=LANGUAGES, help="comma-separated: " + ",".join(LANGUAGES))
    p.add_argument("--tasks", type=_csv, default=TASKS, help="comma-separated image kinds: " + ",".join(TASKS))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--heldout-fraction", type=float, default=0.1, help="fraction of samples in heldout.json")
    p.add_argument(
        "--workers",
        type=int,
        default=min(4, os.cpu_count() or 1),
        help="render processes (output does not depend on it)",
    )
    p.add_argument("--max-chars", type=int, default=40, help="maximum characters per text line (line and page tasks)")
    p.add_argument(
        "--image-size", type=int, default=512, help="base image size in pixels (page width; maximum line width)"
    )
    p.add_argument("--augment", choices=AUGMENT_LEVELS, default="full", help="augmentation strength")
    p.add_argument(
        "--prompts",
        choices=PROMPT_STYLES,
        default="varied",
        help="question phrasing (blind: one question, English or Chinese at random, for every script)",
    )
    p.add_argument(
        "--max-chars-cjk", type=int, default=None, help="longest Chinese line of the line task (default: --max-chars)"
    )
    p.add_argument(
        "--fonts",
        choices=FONT_SPLITS,
        default="all",
        help="font families: all, seen (without UNSEEN_FONT_FAMILIES) or unseen (only those)",
    )
    p.add_argument(
        "--cjk-characters",
        type=int,
        default=None,
        help="Chinese words from the N most frequent characters only (default: all common characters)",
    )
    p.add_argument("--no-hf", action="store_true", help="do not write the HF dataset under OUTPUT/hf")
    p.add_argument("--overwrite", action="store_true", help="replace outputs in OUTPUT not written by this generator")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_arg_parser().parse_args(argv)
    if "all" in args.tasks:
        args.tasks = TASKS
    cfg = GeneratorConfig(
        num_samples=args.num_samples,
        languages=args.languages,
        tasks=args.tasks,
        seed=args.seed,
        heldout_fraction=args.heldout_fraction,
        max_chars=args.max_chars,
        image_size=args.image_size,
        augment=args.augment,
        prompts=args.prompts,
        cjk_characters=args.cjk_characters,
        max_chars_cjk=args.max_chars_cjk,
        fonts=args.fonts,
    )
    try:
        cfg.validate()
        summary = generate_dataset(
            args.output,
            cfg,
            workers=args.workers,
            progress=not args.no_progress,
            write_hf=not args.no_hf,
            overwrite=args.overwrite,
        )
    except (ValueError, FileExistsError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    c = summary["counts"]
    print(
        f"wrote {c['train']} train + {c['heldout']} held-out samples to {args.output} "
        f"({summary['images_per_second']:.1f} images/s)"
    )
    return 0
