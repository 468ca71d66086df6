#!/usr/bin/env python
"""Batched, resumable inference over a JSONL file or a folder of images.

    python infer.py --model DIR --input data.jsonl --output preds.jsonl --batch-size 8
    python infer.py --model DIR --input scans/ --output preds.jsonl --query "Read all the text in the image."

JSONL input: one object per line with "id", "image" (path relative to the JSONL's folder, or absolute; optional for
text-only questions) and "question" (falls back to --query). Any other fields are copied to the output.
Image folder input: the file name is the id and --query (default: an OCR question) the question.
Output: one line per record with the input's fields + "prediction". Ids already in --output are skipped, so a killed
run continues where it stopped. Bad lines, unreadable images and failed generations are logged, counted, skipped.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import os
import sys
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

from ocr_mllm.inference import InferenceSetupError, run_batched_jsonl
from ocr_mllm.inference.batch import WHERE_KEY
from ocr_mllm.inference.chat import sanitize_user_text
from ocr_mllm.inference.images import is_image_file
from ocr_mllm.inference.options import (
    add_generation_args,
    add_model_args,
    generation_kwargs_from_args,
    load_from_args,
    setup_logging,
)


if TYPE_CHECKING:
    from transformers import ProcessorMixin

logger = logging.getLogger("ocr_mllm.infer")

DEFAULT_OCR_QUESTION = "Read all the text in the image."


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_args(parser)
    parser.add_argument("--input", required=True, help="records.jsonl or a folder of images")
    parser.add_argument("--output", required=True, help="predictions .jsonl (appended to; existing ids are skipped)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument(
        "--query",
        default=None,
        help=f"question for image folders and for records without one (default: {DEFAULT_OCR_QUESTION!r})",
    )
    parser.add_argument("--limit", type=int, default=None, help="only the first N input records")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_generation_args(parser)
    parser.add_argument("--verbose", action="store_true")
    return parser.parse_args(argv)


def _bad_line(stats: dict, path: str, lineno: int, reason: str) -> None:
    stats["bad_lines"] += 1
    logger.warning("%s:%d: bad line skipped (%s)", path, lineno, reason)


def read_jsonl_records(path: str, default_question: str, stats: dict) -> Iterator[dict]:
    """Yield records from a JSONL file; image paths are resolved against the file's folder.

    Lines are split on b"\\n" only (U+2028 / U+0085 inside a record stay in it). A line that is not UTF-8, not a JSON
    object, or whose "image" is not a path string is skipped with ``file:line`` and the reason, and counted in
    ``stats["bad_lines"]``; each record keeps its ``file:line`` (``_where``) for later messages.
    """
    base = os.path.dirname(os.path.abspath(path))
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                _bad_line(
                    stats, path, lineno, f"not UTF-8 text: byte 0x{raw[exc.start]:02x} at column {exc.start + 1}"
                )
                continue
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except RecursionError:
                _bad_line(stats, path, lineno, "JSON nested too deeply")
                continue
            except ValueError as exc:
                _bad_line(stats, path, lineno, f"not valid JSON: {exc}")
                continue
            if not isinstance(record, dict):
                _bad_line(stats, path, lineno, f"not a JSON object but a {type(record).__name__}")
                continue
            image = record.get("image")
            if image is not None and not (isinstance(image, str) and image.strip()):
                _bad_line(
                    stats, path, lineno, f"'image' must be a path string, got {type(image).__name__} {image!r:.60}"
                )
                continue
            record.setdefault("question", default_question)
            record[WHERE_KEY] = f"{path}:{lineno}"
            if image:
                record["_image_path"] = image if os.path.isabs(image) else os.path.join(base, image)
            yield record


def read_image_dir(path: str, question: str) -> Iterator[dict]:
    for name in sorted(os.listdir(path)):
        full = os.path.join(path, name)
        if os.path.isfile(full) and is_image_file(name):
            yield {"id": name, "image": name, "question": question, "_image_path": full}


def build_inputs(record: dict, processor: ProcessorMixin | None = None) -> tuple[list[dict], list[str]]:
    """(messages, images) for one record. ``<image>`` and ChatML control tokens typed in the question are defused
    (as in the interactive chat), so they cannot add an image slot or end the turn."""
    question = record.get("question")
    if not isinstance(question, str) or not question.strip():
        raise ValueError("no question")
    image = record.get("_image_path")
    text = sanitize_user_text(question, processor)
    content = ([{"type": "image"}] if image else []) + [{"type": "text", "text": text}]
    return [{"role": "user", "content": content}], ([image] if image else [])


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logging(args.verbose)
    question = args.query or DEFAULT_OCR_QUESTION
    extra = {"bad_lines": 0}
    if os.path.isdir(args.input):
        records = read_image_dir(args.input, question)
    elif os.path.isfile(args.input):
        records = read_jsonl_records(args.input, question, extra)
    else:
        print(f"error: --input {args.input} does not exist", file=sys.stderr)
        return 2
    try:
        model, processor = load_from_args(args)
    except InferenceSetupError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    stats = run_batched_jsonl(
        model,
        processor,
        records,
        args.output,
        functools.partial(build_inputs, processor=processor),
        batch_size=args.batch_size,
        generation_kwargs=generation_kwargs_from_args(args),
        progress=not args.no_progress,
        limit=args.limit,
    )
    # bad lines never reached run_batched_jsonl: count them in the total and as failed, so the counts add up
    stats["total"] += extra["bad_lines"]
    stats["failed"] += extra["bad_lines"]
    stats["bad_lines"] = extra["bad_lines"]
    print(json.dumps({"stats": stats}, ensure_ascii=False), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
