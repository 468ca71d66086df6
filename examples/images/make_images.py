#!/usr/bin/env python
"""Render the demo's example images (one text line each) with PIL and Debian fonts.

    apt-get install fonts-noto-cjk fonts-dejavu
    python examples/images/make_images.py            # writes receipt_en.png, zh_simplified.png, zh_traditional.png

The PNGs are committed; this script documents (and can redo) how they were made.
"""

from __future__ import annotations

import argparse
import os

from PIL import Image, ImageDraw, ImageFont


NOTO_CJK = "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc"
DEJAVU = "/usr/share/fonts/truetype/dejavu/DejaVuSansMono.ttf"

LINES = {
    # name: (text, font file, face name to pick inside a .ttc or None)
    "receipt_en": ("TOTAL  2 x Coffee  $7.80  Cash  $10.00  Change  $2.20", DEJAVU, None),
    "zh_simplified": ("发票号码 12345 金额 ¥678.90 今天天气很好。", NOTO_CJK, "SC"),
    "zh_traditional": ("發票號碼 12345 金額 ¥678.90 今天天氣很好。", NOTO_CJK, "TC"),
}


def load_font(path: str, face: str | None, size: int) -> ImageFont.FreeTypeFont:
    if face is None:
        return ImageFont.truetype(path, size)
    for index in range(32):  # pick the face of the collection whose name says SC / TC
        try:
            font = ImageFont.truetype(path, size, index=index)
        except OSError:
            break
        if f" {face}" in " ".join(font.getname()):
            return font
    raise RuntimeError(f"no {face} face in {path}")


def render(text: str, font: ImageFont.FreeTypeFont, pad: int = 16) -> Image.Image:
    left, top, right, bottom = font.getbbox(text)
    image = Image.new("RGB", (right - left + 2 * pad, bottom - top + 2 * pad), "white")
    ImageDraw.Draw(image).text((pad - left, pad - top), text, font=font, fill="black")
    return image


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default=os.path.dirname(os.path.abspath(__file__)))
    parser.add_argument("--size", type=int, default=28)
    args = parser.parse_args(argv)
    for name, (text, path, face) in LINES.items():
        out = os.path.join(args.out, f"{name}.png")
        render(text, load_font(path, face, args.size)).save(out, optimize=True)
        print(out)


if __name__ == "__main__":
    main()
