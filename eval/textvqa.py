"""TextVQA (val 0.5.1): official VQA accuracy with the EvalAI/m4c answer normalisation.

Local layout (the official release, as LLaVA-1.5's ``playground/data/eval/textvqa`` has it)::

    DATA/TextVQA_0.5.1_val.json                  annotations: {"data": [{question_id, question, image_id, answers[10]}]}
    DATA/train_images/<image_id>.jpg             the val images ship in the train_images folder
    DATA/llava_textvqa_val_v051_ocr.jsonl        optional: LLaVA's question file with "Reference OCR token: ..." lines
    DATA/TextVQA_Rosetta_OCR_v0.2_val.json       optional: official Rosetta OCR (used when the LLaVA file is absent)

``--data`` may also be the annotation file itself, or a Hub dataset id (default ``lmms-lab/textvqa``, split
``validation``, with ``image``, ``answers`` and ``ocr_tokens`` columns).

Prompts: ``plain`` = the question as released. ``original`` = the original repo's (LLaVA-1.5) prompt:
``question\\nReference OCR token: tok, tok, ...\\nAnswer the question using a single word or phrase.``; the
reference OCR tokens come from an external OCR system, so this is *not* comparable with OCR-free results.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any, Sequence

from .common import (
    SHORT_ANSWER_SUFFIX,
    EvalDataError,
    Sample,
    TaskResult,
    count_missing,
    find_file,
    hub_rows,
    image_store,
    is_hub_dataset_id,
    load_hub_dataset,
    missing_note,
    read_json,
    read_jsonl,
    resolve_image,
    write_json,
)
from .metrics import vqa_accuracy


NAME = "textvqa"
MAX_NEW_TOKENS = 128  # the original's model_vqa_loader setting
HUB_DEFAULT = ("lmms-lab/textvqa", None, "validation")
logger = logging.getLogger("eval.textvqa")

ANNOTATION_NAMES = ["TextVQA_0.5.1_val.json", "textvqa/TextVQA_0.5.1_val.json"]
LLAVA_QUESTION_NAMES = ["llava_textvqa_val_v051_ocr.jsonl", "textvqa/llava_textvqa_val_v051_ocr.jsonl"]
ROSETTA_NAMES = ["TextVQA_Rosetta_OCR_v0.2_val.json", "textvqa/TextVQA_Rosetta_OCR_v0.2_val.json"]
OCR_LINE_PREFIX = "Reference OCR token: "


def question_from_llava_prompt(prompt: str) -> str:
    """The question inside a LLaVA TextVQA prompt (the formats LLaVA's ``eval_textvqa.prompt_processor`` accepts),
    lowercased."""
    if prompt.startswith("OCR tokens: "):
        m = re.search(r"Question: (.*?) Short answer:", prompt, re.DOTALL)
        if not m:
            raise EvalDataError(f"unrecognised TextVQA prompt: {prompt[:80]!r}")
        return m.group(1).lower()
    lines = prompt.split("\n")
    if OCR_LINE_PREFIX in prompt and len(lines) == 3:
        return (lines[1] if prompt.startswith(OCR_LINE_PREFIX.strip()) else lines[0]).lower()
    if len(lines) == 2:
        return lines[0].lower()
    if len(lines) == 1:
        return lines[0].lower()
    raise EvalDataError(f"unrecognised TextVQA prompt: {prompt[:80]!r}")


def build_original_prompt(question: str, ocr_tokens: Sequence[Any] | None) -> str:
    parts = [question]
    if ocr_tokens:
        parts.append(OCR_LINE_PREFIX + ", ".join(str(t) for t in ocr_tokens))
    parts.append(SHORT_ANSWER_SUFFIX)
    return "\n".join(parts)


def _make_sample(entry: dict, prompt: str, image: Any) -> Sample:
    answers = entry.get("answers")
    return Sample(
        question_id=entry["question_id"],
        prompt=prompt,
        image=image,
        meta={"answers": list(answers) if answers is not None else None, "question": entry["question"]},
    )


def load_samples(data: str, prompt_style: str = "plain", opts: dict | None = None) -> list[Sample]:
    opts = opts or {}
    if is_hub_dataset_id(data):
        return _load_hub(data, prompt_style, opts)
    root = Path(data)
    ann_path = find_file(root, ANNOTATION_NAMES, "TextVQA annotations")
    base = ann_path.parent
    search_root = root if root.is_dir() else base
    ann = read_json(ann_path)
    entries = ann["data"] if isinstance(ann, dict) else ann
    image_bases = [
        search_root / "train_images",
        base / "train_images",
        search_root / "train_val_images" / "train_images",
        search_root / "images",
        search_root,
        base,
    ]

    llava_prompts: dict[tuple[str, str], str] = {}
    rosetta: dict[str, list] = {}
    if prompt_style == "original":
        try:
            qfile = find_file(search_root, LLAVA_QUESTION_NAMES, "LLaVA TextVQA questions")
            for row in read_jsonl(qfile):
                image_id = Path(str(row.get("image", row.get("question_id")))).stem
                llava_prompts[(image_id, question_from_llava_prompt(row["text"]))] = row["text"]
        except EvalDataError:
            try:
                rfile = find_file(search_root, ROSETTA_NAMES, "Rosetta OCR")
                r = read_json(rfile)
                for item in r["data"] if isinstance(r, dict) else r:
                    rosetta[str(item["image_id"])] = item.get("ocr_tokens", [])
            except EvalDataError:
                pass

    samples = []
    n_without_ocr = 0
    for e in entries:
        image_id = str(e["image_id"])
        if prompt_style == "original":
            prompt = llava_prompts.get((image_id, e["question"].lower()))
            if prompt is None:
                tokens = e.get("ocr_tokens", rosetta.get(image_id))
                n_without_ocr += tokens is None
                prompt = build_original_prompt(e["question"], tokens)
        else:
            prompt = e["question"]
        name = e.get("image_path") or f"{image_id}.jpg"
        samples.append(_make_sample(e, prompt, _lazy_path(name, image_bases)))
    if prompt_style == "original" and n_without_ocr:
        logger.warning(
            "%d TextVQA questions have no reference OCR tokens (no LLaVA question file, no ocr_tokens "
            "field, no Rosetta file): their prompt has no OCR line",
            n_without_ocr,
        )
    return samples


class _lazy_path:
    """Resolve the image path when the model needs it (so scoring works without the images)."""

    def __init__(self, name: str, bases: Sequence[Path], stem_search: bool = True):
        self.name, self.bases, self.stem_search = name, bases, stem_search

    def __call__(self) -> str:
        return str(resolve_image(self.name, self.bases, stem_search=self.stem_search))


def _load_hub(data: str, prompt_style: str, opts: dict) -> list[Sample]:
    ds = load_hub_dataset(data, opts.get("hub_config"), opts.get("split") or HUB_DEFAULT[2])
    store = image_store(opts)
    samples = []
    for i, row in hub_rows(ds):
        prompt = (
            build_original_prompt(row["question"], row.get("ocr_tokens"))
            if prompt_style == "original"
            else row["question"]
        )
        samples.append(_make_sample(row, prompt, store.from_hub(row.get("image_id", i), ds, i)))
    return samples


def score(samples: list[Sample], preds: dict[str, str], out_dir: Path, opts: dict | None = None) -> TaskResult:
    scored = [s for s in samples if s.meta.get("answers")]
    per_q = {}
    for s in scored:
        per_q[s.key] = vqa_accuracy(preds.get(s.key, ""), s.meta["answers"])
    n_missing = count_missing(samples, preds)
    # EvalAI submission format (val or test): [{"question_id": int, "answer": str}]
    sub = [{"question_id": s.question_id, "answer": preds.get(s.key, "")} for s in samples]
    write_json(Path(out_dir) / "textvqa_submission.json", sub)
    notes = missing_note(n_missing, len(samples))
    if any(len(s.meta["answers"]) != 10 for s in scored):
        notes.append("some questions do not have exactly 10 answers (the official evaluator asserts 10)")
    if not scored:
        notes.append("no ground-truth answers (test split?): only textvqa_submission.json was written")
        acc = None
    else:
        acc = 100.0 * sum(per_q.values()) / len(scored)
    return TaskResult(
        task=NAME,
        headline={"accuracy": acc, "questions": len(scored)},
        details={"per_question": per_q, "missing_predictions": n_missing, "submission": "textvqa_submission.json"},
        notes=notes,
    )
