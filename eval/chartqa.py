"""ChartQA: relaxed accuracy (numbers within 5 % relative error of the target; non-numeric answers need an exact,
case-insensitive match), per subset (human, augmented) and their mean, the number papers report as "ChartQA".

Local layout (the official ``ChartQA Dataset`` release)::

    DATA/test/test_human.json, DATA/test/test_augmented.json   [{"imgname": "x.png", "query": ..., "label": ...}]
    DATA/test/png/x.png

``--data`` may be the dataset root, its ``test`` folder, one of the json files, or a Hub dataset id (default
``lmms-lab/ChartQA``, split ``test``). ``--split val`` reads ``val/val_*.json``. Question ids: ``<subset>/<position>``
(e.g. ``human/0``), since the release has none.

Prompts: ``plain`` = the query; ``original`` = query + "\\nAnswer the question using a single word or phrase."
(LLaVA-1.5's short-answer suffix; the original did not evaluate ChartQA).
"""

from __future__ import annotations

from pathlib import Path

from .common import (
    SHORT_ANSWER_SUFFIX,
    EvalDataError,
    Sample,
    TaskResult,
    count_missing,
    hub_rows,
    image_store,
    is_hub_dataset_id,
    load_hub_dataset,
    missing_note,
    read_json,
    resolve_image,
)
from .metrics import relaxed_correctness


NAME = "chartqa"
MAX_NEW_TOKENS = 128
HUB_DEFAULT = ("lmms-lab/ChartQA", None, "test")
SUBSETS = ("human", "augmented")


def _prompt(q: str, style: str) -> str:
    return f"{q}\n{SHORT_ANSWER_SUFFIX}" if style == "original" else q


def _files(root: Path, split: str) -> list[tuple[str, Path]]:
    if root.is_file():
        subset = root.stem.split("_")[-1]
        return [(subset, root)]
    for d in (root / split, root):
        found = [(sub, d / f"{split}_{sub}.json") for sub in SUBSETS if (d / f"{split}_{sub}.json").is_file()]
        if found:
            return found
    raise EvalDataError(f"ChartQA: no {split}_human.json / {split}_augmented.json under {root} or {root / split}")


def load_samples(data: str, prompt_style: str = "plain", opts: dict | None = None) -> list[Sample]:
    opts = opts or {}
    if is_hub_dataset_id(data):
        ds = load_hub_dataset(data, opts.get("hub_config"), opts.get("split") or HUB_DEFAULT[2])
        store = image_store(opts)
        samples = []
        counters: dict[str, int] = {}
        for i, row in hub_rows(ds):
            subset = str(row.get("type", "test")).replace("_test", "")
            k = counters.get(subset, 0)
            counters[subset] = k + 1
            samples.append(
                Sample(
                    question_id=f"{subset}/{k}",
                    prompt=_prompt(row["question"], prompt_style),
                    image=store.from_hub(f"{subset}_{k}", ds, i),
                    meta={"label": str(row["answer"]), "subset": subset},
                )
            )
        return samples
    root = Path(data)
    split = opts.get("split") or "test"
    samples = []
    for subset, path in _files(root, split):
        bases = [path.parent / "png", path.parent]
        for i, e in enumerate(read_json(path)):
            samples.append(
                Sample(
                    question_id=f"{subset}/{i}",
                    prompt=_prompt(e["query"], prompt_style),
                    image=(lambda n=e["imgname"]: str(resolve_image(n, bases))),
                    meta={"label": str(e["label"]), "subset": subset},
                )
            )
    return samples


def score(samples: list[Sample], preds: dict[str, str], out_dir: Path, opts: dict | None = None) -> TaskResult:
    per_subset: dict[str, list[bool]] = {}
    per_q = {}
    for s in samples:
        ok = s.key in preds and relaxed_correctness(preds[s.key], s.meta["label"])
        per_q[s.key] = ok
        per_subset.setdefault(s.meta["subset"], []).append(ok)
    acc = {k: 100.0 * sum(v) / len(v) for k, v in per_subset.items()}
    headline = {"relaxed_accuracy": sum(acc.values()) / len(acc) if acc else None}
    for k in sorted(acc, key=lambda k: (k not in SUBSETS, SUBSETS.index(k) if k in SUBSETS else 0, k)):
        headline[k] = acc[k]
    headline["questions"] = len(samples)
    notes = missing_note(count_missing(samples, preds), len(samples))
    notes.append("relaxed_accuracy is the mean of the subset accuracies (human, augmented), as usually reported")
    return TaskResult(
        task=NAME,
        headline=headline,
        details={
            "subsets": acc,
            "per_question": per_q,
            "overall_question_accuracy": 100.0 * sum(per_q.values()) / len(per_q) if per_q else None,
        },
        notes=notes,
    )
