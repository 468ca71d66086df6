#!/usr/bin/env python
"""Quickstart on CPU: build a tiny OCR-MLLM folder, render an image with text, and stream an answer."""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402
from PIL import Image, ImageDraw, ImageFont  # noqa: E402
from transformers import AutoModelForImageTextToText, AutoProcessor, TextStreamer  # noqa: E402

from ocr_mllm.building import build_tiny_folder  # noqa: E402


def render(text: str, path: Path) -> Path:
    image = Image.new("RGB", (480, 96), "white")
    try:
        font = ImageFont.truetype("DejaVuSans.ttf", 40)
    except OSError:
        font = ImageFont.load_default()
    ImageDraw.Draw(image).text((16, 24), text, fill="black", font=font)
    image.save(path)
    return path


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--output", default="out/quickstart")
    args = parser.parse_args(argv)
    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    model_dir = build_tiny_folder(output / "model")
    image_path = render("Invoice No. 12345", output / "sample.png")

    model = AutoModelForImageTextToText.from_pretrained(model_dir, trust_remote_code=True).eval()
    processor = AutoProcessor.from_pretrained(model_dir, trust_remote_code=True)
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Read all the text in the image."}]}]
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True)
    inputs = processor(images=[str(image_path)], text=[prompt], return_tensors="pt")
    print(f"model: {model_dir}  image: {image_path}\nanswer (random weights): ", end="", flush=True)
    with torch.inference_mode():
        model.generate(**inputs, max_new_tokens=16, streamer=TextStreamer(processor.tokenizer, skip_prompt=True, skip_special_tokens=True))


if __name__ == "__main__":
    main()
