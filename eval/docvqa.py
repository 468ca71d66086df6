"""DocVQA (single-page, "SP-DocVQA"): ANLS with threshold 0.5 (reported x100).

Local layout (the official RRC release)::

    DATA/val_v1.0.json or DATA/val_v1.0_withQT.json (also under val/ or spdocvqa_qas/)
        {"data": [{"questionId", "question", "image": "documents/<doc>.png", "answers": [...]}]}
    DATA/documents/<doc>.png (or spdocvqa_images/<doc>.png)

``--split test`` picks ``test_v1.0.json`` (no answers: only the submission is written). ``--data`` may also be the json
file, or a Hub dataset id (default ``lmms-lab/DocVQA``, config ``DocVQA``, split ``validation``).
A submission file for the RRC server is always written: ``docvqa_submission.json`` = ``[{"questionId", "answer"}]``.

Prompts: ``plain`` = the question; ``original`` = question + "\\nAnswer the question using a single word or phrase."
(LLaVA-1.5's short-answer suffix; the original did not evaluate DocVQA).
"""

from __future__ import annotations

from pathlib import Path

from .common import (
    SHORT_ANSWER_SUFFIX,
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
    write_json,
)
from .metrics import anls


NAME = "docvqa"
MAX_NEW_TOKENS = 128
HUB_DEFAULT = ("lmms-lab/DocVQA", "DocVQA", "validation")


def _names(split: str) -> list[str]:
    out = []
    for stem in (f"{split}_v1.0_withQT.json", f"{split}_v1.0.json"):
        out += [stem, f"{split}/{stem}", f"spdocvqa_qas/{stem}"]
    return out


def _prompt(q: str, style: str) -> str:
    return f"{q}\n{SHORT_ANSWER_SUFFIX}" if style == "original" else q


def load_samples(data: str, prompt_style: str = "plain", opts: dict | None = None) -> list[Sample]:
    opts = opts or {}
    if is_hub_dataset_id(data):
        ds = load_hub_dataset(data, opts.get("hub_config") or HUB_DEFAULT[1], opts.get("split") or HUB_DEFAULT[2])
        store = image_store(opts)
        samples = []
        for i, row in hub_rows(ds):
            samples.append(
                Sample(
                    question_id=row["questionId"],
                    prompt=_prompt(row["question"], prompt_style),
                    image=store.from_hub(row["questionId"], ds, i),
                    meta={"answers": row.get("answers")},
                )
            )
        return samples
    root = Path(data)
    split = opts.get("split") or "val"
    ann = find_file(root, _names(split), f"DocVQA {split}")
    base = ann.parent
    search = root if root.is_dir() else base
    bases = [
        base,
        base.parent,
        search,
        search / "spdocvqa_images",
        base.parent / "spdocvqa_images",
        search / "documents",
        base / "documents",
    ]
    obj = read_json(ann)
    entries = obj["data"] if isinstance(obj, dict) else obj
    samples = []
    for e in entries:
        samples.append(
            Sample(
                question_id=e["questionId"],
                prompt=_prompt(e["question"], prompt_style),
                image=(lambda n=e["image"]: str(resolve_image(n, bases))),
                meta={"answers": e.get("answers")},
            )
        )
    return samples


def score(samples: list[Sample], preds: dict[str, str], out_dir: Path, opts: dict | None = None) -> TaskResult:
    write_json(
        Path(out_dir) / "docvqa_submission.json",
        [{"questionId": s.question_id, "answer": preds.get(s.key, "")} for s in samples],
    )
    scored = [s for s in samples if s.meta.get("answers")]
    per_q = {s.key: anls(preds.get(s.key, ""), s.meta["answers"]) if s.key in preds else 0.0 for s in scored}
    notes = missing_note(count_missing(samples, preds), len(samples))
    if not scored:
        notes.append("no answers in the data (test split): only docvqa_submission.json was written")
    value = 100.0 * sum(per_q.values()) / len(scored) if scored else None
    return TaskResult(
        task=NAME,
        headline={"anls": value, "questions": len(scored)},
        details={"per_question": per_q, "submission": "docvqa_submission.json", "threshold": 0.5},
        notes=notes,
    )
