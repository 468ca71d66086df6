"""The built-in reader `models/reader-mini` (committed; the default of cli.py, infer.py, app.py and eval): it loads in a
fresh process, reads freshly generated held-out lines within a documented margin of its measured CER, and its batched
answers follow their own images (the same comparison fails with the images rotated across the rows)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ocr_mllm.inference.loading import DEFAULT_MODEL
from tests._reading_model import QUESTION, conversation, write_ocrbench_folder


# Measured on these 30 lines (seed 1234, seen fonts, models/reader-mini/README.md) and the margin this test allows
# above it; a regression of the reader, its processor or the joint CTC/attention decoding shows up here.
MEASURED_CER = 0.409
MARGIN = 0.10


@pytest.fixture(scope="module")
def reader():
    from ocr_mllm.inference import load_model_and_processor

    assert Path(DEFAULT_MODEL, "config.json").is_file(), f"the built-in reader {DEFAULT_MODEL} is missing"
    return load_model_and_processor(DEFAULT_MODEL, device="cpu", dtype="float32")


@pytest.fixture(scope="module")
def heldout_lines(tmp_path_factory):
    """30 held-out lines (words never seen in training) as the reader's recipe renders them: 10 per language."""
    from ocr_mllm.data import GeneratorConfig, generate_dataset

    out = tmp_path_factory.mktemp("heldout_lines")
    config = GeneratorConfig(
        num_samples=300,
        languages=("en", "zh-Hans", "zh-Hant"),
        tasks=("line",),
        seed=1234,
        heldout_fraction=0.2,
        max_chars=60,
        max_chars_cjk=20,
        augment="light",
        prompts="blind",
        cjk_characters=3500,
        fonts="seen",
    )
    generate_dataset(str(out), config, workers=1, progress=False, write_hf=False, overwrite=True)
    records = json.loads((out / "heldout.json").read_text(encoding="utf-8"))
    chosen = [r for language in config.languages for r in [r for r in records if r["language"] == language][:10]]
    return [str(out / r["image"]) for r in chosen], [r["text"] for r in chosen]


def _read(model, processor, images: list[str], batch_size: int) -> list[str]:
    from ocr_mllm.inference import generate_batch

    answers = []
    with torch.inference_mode():
        for start in range(0, len(images), batch_size):
            chunk = images[start : start + batch_size]
            answers += generate_batch(
                model, processor, [conversation()] * len(chunk), [[p] for p in chunk], max_new_tokens=96
            )
    return answers


def test_reads_heldout_lines(reader, heldout_lines):
    from ocr_mllm.text_metrics import reading_scores

    images, references = heldout_lines
    answers = _read(*reader, images, batch_size=16)
    cer = reading_scores(zip(answers, references))["cer"]
    assert cer <= MEASURED_CER + MARGIN, (
        f"CER {cer:.3f} > {MEASURED_CER} + {MARGIN}: {list(zip(answers, references))[:5]}"
    )


def test_batch_of_8_equals_one_by_one_and_follows_its_images(reader, heldout_lines):
    images = heldout_lines[0][:8]
    one_by_one = _read(*reader, images, batch_size=1)
    assert len(set(one_by_one)) == len(one_by_one), "identical answers: this test could not see a swap"
    assert _read(*reader, images, batch_size=8) == one_by_one
    rotated = _read(*reader, images[1:] + images[:1], batch_size=8)
    assert rotated != one_by_one and rotated == one_by_one[1:] + one_by_one[:1]


def test_loads_in_a_fresh_process_through_auto_classes_and_pipeline(heldout_lines):
    image = heldout_lines[0][0]
    code = f"""
import torch
from transformers import AutoModelForImageTextToText, AutoProcessor, pipeline
model = AutoModelForImageTextToText.from_pretrained({DEFAULT_MODEL!r}, trust_remote_code=True)
processor = AutoProcessor.from_pretrained({DEFAULT_MODEL!r}, trust_remote_code=True)
messages = [{{"role": "user", "content": [{{"type": "image"}}, {{"type": "text", "text": {QUESTION!r}}}]}}]
prompt = processor.apply_chat_template(messages, add_generation_prompt=True)
inputs = processor(images=[{image!r}], text=[prompt], return_tensors="pt")
out = model.generate(**inputs, max_new_tokens=96)
print("AUTO:" + processor.batch_decode(out[:, inputs["input_ids"].shape[1]:], skip_special_tokens=True)[0].strip())
reader = pipeline("image-text-to-text", model={DEFAULT_MODEL!r}, trust_remote_code=True)
messages[0]["content"][0]["image"] = {image!r}
result = reader(text=messages, max_new_tokens=96, return_full_text=False)
print("PIPELINE:" + result[0]["generated_text"].strip())
"""
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd="/")
    assert run.returncode == 0, run.stderr[-2000:]
    lines = dict(line.split(":", 1) for line in run.stdout.splitlines() if line.startswith(("AUTO:", "PIPELINE:")))
    assert lines["AUTO"] and lines["AUTO"] == lines["PIPELINE"]


def test_infer_py_batches_follow_their_images_with_the_default_model(heldout_lines, tmp_path):
    """infer.py without --model: the built-in reader; batch 8 == batch 1, and the answers are the per-image ones."""
    import infer

    images = heldout_lines[0][:8]
    records = tmp_path / "lines.jsonl"
    records.write_text(
        "".join(json.dumps({"id": f"line{i}", "image": p, "question": QUESTION}) + "\n" for i, p in enumerate(images))
    )
    answers = {}
    for batch_size in (8, 1):
        out = tmp_path / f"pred{batch_size}.jsonl"
        assert (
            infer.main(
                [
                    "--input",
                    str(records),
                    "--output",
                    str(out),
                    "--batch-size",
                    str(batch_size),
                    "--device",
                    "cpu",
                    "--max-new-tokens",
                    "96",
                ]
            )
            == 0
        )
        rows = [json.loads(line) for line in out.read_text().splitlines()]
        answers[batch_size] = {row["id"]: row["prediction"] for row in rows}
    assert answers[8] == answers[1] and len(set(answers[1].values())) == len(images)


def test_eval_batches_follow_their_images_with_the_default_model(heldout_lines, tmp_path):
    """python -m eval.run without --model on an OCRBench-format folder: batch 8 == batch 1."""
    from eval.run import run_task

    images, references = heldout_lines
    write_ocrbench_folder(tmp_path, images[:8], references[:8])
    predictions = {}
    for batch_size in (8, 1):
        out = tmp_path / f"out{batch_size}"
        run_task("ocrbench", str(tmp_path), out, batch_size=batch_size, device="cpu", dtype="float32", progress=False)
        rows = [json.loads(line) for line in (out / "ocrbench_predictions.jsonl").read_text().splitlines()]
        predictions[batch_size] = {row["question_id"]: row["prediction"] for row in rows}
    assert predictions[8] == predictions[1] and len(set(predictions[1].values())) == 8


def test_the_folder_carries_the_current_model_code():
    """The shipped folder's code files are copies (trust_remote_code needs them next to the weights); the repository's
    files stay their one owner: a change to them must be re-exported (scripts/export_model.py) or this fails."""
    from ocr_mllm.folders import MODEL_CODE_FILES

    repo = Path(DEFAULT_MODEL).parents[1]
    stale = [name for name in MODEL_CODE_FILES if (repo / name).read_bytes() != Path(DEFAULT_MODEL, name).read_bytes()]
    assert not stale, f"models/reader-mini holds old copies of {stale}: run scripts/export_model.py"
