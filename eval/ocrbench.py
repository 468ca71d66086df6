"""OCRBench (v1): 1000 questions, one point each when an answer is contained in the prediction (the official
``example.py`` rules: lowercase contains-match; HME100k keeps case and drops all whitespace). Reports the 10 official
categories, "Text Recognition" (the first six summed) and the final score out of 1000.

Local layout (the official release)::

    DATA/OCRBench.json        [{"id", "dataset_name", "question", "answers" (str or list), "type", "image_path"}]
    DATA/OCRBench_Images/<image_path>

``--data`` may be the folder, the json file, or a Hub dataset id (default ``echo840/OCRBench``, split ``test``).

Question ids are positions: the n-th entry of ``OCRBench.json`` (or the n-th Hub row) is ``question_id`` n, counting
from 0. The file's own ``id`` repeats across its source datasets (the same number appears under IIIT5K and IC13_857,
for instance), and the official ``example.py`` keys nothing by it either: it walks the list in order. The released
``id`` is kept in the per-question details as ``source_id``.
Prompts: the question as released in both styles (the original did not evaluate OCRBench).
"""

from __future__ import annotations

from pathlib import Path

from .common import (
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
    resolve_image,
)
from .metrics import OCRBENCH_CATEGORIES, OCRBENCH_TEXT_RECOGNITION, ocrbench_match


NAME = "ocrbench"
MAX_NEW_TOKENS = 128
HUB_DEFAULT = ("echo840/OCRBench", None, "test")


def load_samples(data: str, prompt_style: str = "plain", opts: dict | None = None) -> list[Sample]:
    opts = opts or {}
    if is_hub_dataset_id(data):
        ds = load_hub_dataset(data, opts.get("hub_config"), opts.get("split") or HUB_DEFAULT[2])
        store = image_store(opts)
        samples = []
        for i, row in hub_rows(ds):
            samples.append(
                Sample(
                    question_id=i,
                    prompt=row["question"],
                    image=store.from_hub(i, ds, i),
                    meta={
                        "answers": row.get("answers", row.get("answer")),
                        "source_id": row.get("id"),
                        "dataset_name": row.get("dataset_name", row.get("dataset")),
                        "type": row.get("type", row.get("question_type")),
                    },
                )
            )
        return samples
    root = Path(data)
    ann = find_file(root, ["OCRBench.json", "OCRBench/OCRBench.json"], "OCRBench")
    base = ann.parent
    bases = [base / "OCRBench_Images", base.parent / "OCRBench_Images", base]
    samples = []
    for i, e in enumerate(read_json(ann)):
        samples.append(
            Sample(
                question_id=i,
                prompt=e["question"],
                image=(lambda n=e["image_path"]: str(resolve_image(n, bases))),
                meta={
                    "answers": e["answers"],
                    "dataset_name": e["dataset_name"],
                    "type": e["type"],
                    "source_id": e.get("id"),
                },
            )
        )
    return samples


def score(samples: list[Sample], preds: dict[str, str], out_dir: Path, opts: dict | None = None) -> TaskResult:
    per_cat = dict.fromkeys(OCRBENCH_CATEGORIES, 0)
    n_cat = dict.fromkeys(OCRBENCH_CATEGORIES, 0)
    per_q = {}
    for s in samples:
        ok = ocrbench_match(preds.get(s.key, ""), s.meta["answers"], s.meta["dataset_name"]) if s.key in preds else 0
        per_q[s.key] = ok
        cat = s.meta["type"]
        per_cat[cat] = per_cat.get(cat, 0) + ok
        n_cat[cat] = n_cat.get(cat, 0) + 1
    text_rec = sum(per_cat[c] for c in OCRBENCH_TEXT_RECOGNITION)
    final = sum(per_cat.values())
    headline = {"final_score": final, "text_recognition": text_rec}
    for c in OCRBENCH_CATEGORIES[6:]:
        headline[c] = per_cat[c]
    notes = missing_note(count_missing(samples, preds), len(samples))
    if len(samples) != 1000:
        notes.append(f"{len(samples)} questions (the full benchmark has 1000): the final score is a raw count")
    return TaskResult(
        task=NAME,
        headline=headline,
        sections=[("Categories", ["category", "correct", "questions"], [[c, per_cat[c], n_cat[c]] for c in per_cat])],
        details={"categories": per_cat, "per_question": per_q},
        notes=notes,
    )
