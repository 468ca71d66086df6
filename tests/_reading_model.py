"""A tiny line reader that really reads its images: trained in the test session (a few seconds on CPU) through our
collator until greedy generation reads every one of its images back. Tests that compare batched with one-by-one
answers use it, so that they fail when images are swapped across rows (a random model ignores its images)."""

from __future__ import annotations

from pathlib import Path

import torch
from PIL import Image, ImageDraw, ImageFont


WORDS = ("cat", "dog", "sun", "map", "red", "box", "pen", "cup")
QUESTION = "Read all the text in the image."


def render_word_images(folder: Path) -> list[Path]:
    """One 96×32 PNG per word, black DejaVu Sans on white."""
    from ocr_mllm.data.fonts import faces_for_language

    face = next(f for f in faces_for_language("en") if f.family == "DejaVu Sans" and not f.bold)
    font = ImageFont.truetype(face.path, 22, index=face.index)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for word in WORDS:
        image = Image.new("RGB", (96, 32), "white")
        ImageDraw.Draw(image).text((6, 3), word, fill="black", font=font)
        path = folder / f"{word}.png"
        image.save(path)
        paths.append(path)
    return paths


def conversation(question: str = QUESTION) -> list[dict]:
    return [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]


def train_reading_model(folder: Path, images: list[Path], max_steps: int = 400) -> Path:
    """Train the `tiny-line` preset on (image, word) pairs until it reads every image; returns the saved folder."""
    from ocr_mllm.building import build_tiny_folder, save_model_folder
    from ocr_mllm.inference import generate_batch, load_model_and_processor
    from ocr_mllm.tokenization import train_bpe_tokenizer
    from ocr_mllm.training.collator import OcrMllmDataCollator
    from processing_ocr_mllm import DEFAULT_SYSTEM_PROMPT

    torch.manual_seed(0)
    tokenizer = train_bpe_tokenizer([*"".join(WORDS), QUESTION, DEFAULT_SYSTEM_PROMPT] * 20, vocab_size=256)
    base = build_tiny_folder(folder / "base", seed=0, tokenizer=tokenizer, preset="tiny-line")
    model, processor = load_model_and_processor(str(base), device="cpu", dtype="float32")
    collator = OcrMllmDataCollator(processor, template="chat", max_length=128)
    records = [
        {
            "messages": [{"role": "user", "content": f"<image>\n{QUESTION}"}, {"role": "assistant", "content": word}],
            "images": [str(path)],
        }
        for word, path in zip(WORDS, images)
    ]
    batch = collator(records)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    for step in range(1, max_steps + 1):
        model.train()
        loss = model(**batch).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % 25 == 0:
            model.eval()
            with torch.inference_mode():
                answers = generate_batch(
                    model, processor, [conversation()] * len(images), [[p] for p in images], max_new_tokens=8
                )
            if answers == list(WORDS):
                break
    else:
        raise RuntimeError(f"the tiny reader did not learn to read its {len(WORDS)} images in {max_steps} steps")
    model.eval()
    return save_model_folder(model, processor, folder / "model")


def write_ocrbench_folder(folder: Path, images: list, answers: list[str]) -> Path:
    """An OCRBench-format folder (OCRBench.json, one recognition question per image) for eval's batch tests."""
    import json

    entries = [
        {
            "id": index,
            "dataset_name": "IIIT5K",
            "question": QUESTION,
            "answers": [answer],
            "type": "Regular Text Recognition",
            "image_path": str(image),
        }
        for index, (image, answer) in enumerate(zip(images, answers))
    ]
    (folder / "OCRBench.json").write_text(json.dumps(entries, ensure_ascii=False), encoding="utf-8")
    return folder
