"""Tiny OCR training sets for the training tests: rendered words, TRL records, JSONL files."""

from __future__ import annotations

import json
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont


WORDS = ["cat", "sun", "map", "red", "box", "pen", "cup", "owl"]


def _font(size: int = 44):
    try:
        return ImageFont.truetype("DejaVuSans.ttf", size)
    except OSError:
        return ImageFont.load_default()


def render_word(word: str, size=(128, 128)) -> Image.Image:
    image = Image.new("RGB", size, "white")
    ImageDraw.Draw(image).text((8, 36), word, fill="black", font=_font())
    return image


def record(word: str, image=None, question: str = "Read the text.") -> dict:
    if image is None:
        return {
            "messages": [
                {"role": "user", "content": [{"type": "text", "text": f"Say {word}."}]},
                {"role": "assistant", "content": [{"type": "text", "text": word}]},
            ],
            "images": [],
        }
    return {
        "messages": [
            {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]},
            {"role": "assistant", "content": [{"type": "text", "text": word}]},
        ],
        "images": [image],
    }


def write_jsonl(folder: Path, words=WORDS, text_only_every: int = 0) -> Path:
    """folder/train.jsonl with image paths relative to folder; every `text_only_every`-th record (1-based odd
    positions when 2) has no image."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "images").mkdir(exist_ok=True)
    path = folder / "train.jsonl"
    with open(path, "w", encoding="utf-8") as handle:
        for index, word in enumerate(words):
            if text_only_every and index % text_only_every == text_only_every - 1:
                rec = record(word)
            else:
                name = f"images/{index}.png"
                render_word(word).save(folder / name)
                rec = record(word, name)
            handle.write(json.dumps(rec) + "\n")
    return path


def dataset(words=WORDS):
    import datasets

    rows = [record(word, render_word(word)) for word in words]
    return datasets.Dataset.from_list(rows)
