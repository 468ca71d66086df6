"""MME: per-subtask accuracy and accuracy+ (both questions of an image right), score = 100 * (acc + acc+), perception
(10 subtasks, max 2000) and cognition (4 subtasks, max 800) totals, yes/no extracted as the official
``eval_tool/calculation.py`` does.

Local layout (the official ``MME_Benchmark_release_version`` folder)::

    DATA/<subtask>/images/<name>.jpg + DATA/<subtask>/questions_answers_YN/<name>.txt   (artwork, celebrity, ...)
    DATA/<subtask>/<name>.jpg|png + DATA/<subtask>/<name>.txt                            (count, OCR, ...)

Each txt has one ``question<TAB>Yes|No`` line per question (two per image). ``--data`` may be that folder or its
parent, or a Hub dataset id (default ``lmms-lab/MME``, split ``test``).

Score-only from the official ``eval_tool`` layout (no images needed): ``--data`` is a folder of ``<subtask>.txt`` files,
one ``image<TAB>question<TAB>Yes|No<TAB>prediction`` line per question, the two questions of an image on consecutive
lines (what ``calculation.py --results_dir`` reads, and what ``mme_results/`` here holds). The predictions come from
the files, so neither ``--model`` nor ``--predictions`` is needed (``--predictions`` replaces them when given). As the
official tool, acc+ pairs consecutive lines; an odd number of lines or a line without four fields is an error naming
the file and line (the official tool asserts, or prints and skips the line). LLaVA's ``llava_mme.jsonl`` layout is not read;
its prompt is available as ``--prompt-style original``.

Prompts: ``plain`` = the official question (it already ends with "Please answer yes or no."); ``original`` = the
question + "\\nAnswer the question using a single word or phrase." (LLaVA-1.5's ``llava_mme.jsonl``, which the
original used).

Besides the JSON/markdown results, ``mme_results/<subtask>.txt`` is written in the official eval tool's input format
(``image<TAB>question<TAB>gt<TAB>prediction``), so the official ``calculation.py --results_dir`` can cross-check.
"""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path

from .common import (
    IMAGE_EXTENSIONS,
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
)
from .metrics import MME_SUBTASKS, mme_subtask_scores


NAME = "mme"
MAX_NEW_TOKENS = 128
HUB_DEFAULT = ("lmms-lab/MME", None, "test")
ALL_SUBTASKS = MME_SUBTASKS["perception"] + MME_SUBTASKS["cognition"]
logger = logging.getLogger("eval.mme")


def _find_root(root: Path) -> Path:
    for cand in (
        root,
        root / "MME_Benchmark_release_version",
        root / "MME_Benchmark_release_version" / "MME_Benchmark",
    ):
        if cand.is_dir() and any((cand / t).is_dir() for t in ALL_SUBTASKS):
            return cand
    raise EvalDataError(f"MME: no subtask folders ({', '.join(ALL_SUBTASKS)}) under {root}")


def _find_image(stem: str, dirs: list[Path]) -> Path:
    for d in dirs:
        for ext in IMAGE_EXTENSIONS:
            p = d / (stem + ext)
            if p.is_file():
                return p
    raise EvalDataError(f"MME: no image for {stem!r} in {', '.join(map(str, dirs))}")


def _prompt(question: str, prompt_style: str) -> str:
    return f"{question}\n{SHORT_ANSWER_SUFFIX}" if prompt_style == "original" else question


def is_eval_tool_dir(root: Path) -> bool:
    """A folder of ``<subtask>.txt`` result files in the official eval_tool layout (not the benchmark release)."""
    return (
        root.is_dir()
        and any((root / f"{t}.txt").is_file() for t in ALL_SUBTASKS)
        and not any((root / t).is_dir() for t in ALL_SUBTASKS)
    )


def _load_eval_tool(root: Path, prompt_style: str) -> list[Sample]:
    samples = []
    for task in ALL_SUBTASKS:
        txt = root / f"{task}.txt"
        if not txt.is_file():
            continue
        numbered = [(n + 1, ln) for n, ln in enumerate(txt.read_text(encoding="utf-8").splitlines()) if ln.strip()]
        if len(numbered) % 2:
            raise EvalDataError(f"MME: {txt}: {len(numbered)} lines; the eval_tool layout has two per image")
        seen: Counter = Counter()
        for pos, (lineno, line) in enumerate(numbered):
            fields = line.split("\t")
            if len(fields) != 4:
                raise EvalDataError(
                    f"MME: {txt}:{lineno}: expected 'image<TAB>question<TAB>Yes|No<TAB>prediction', "
                    f"found {len(fields)} tab-separated fields"
                )
            image, question, answer, prediction = fields
            k = seen[image]
            seen[image] += 1
            samples.append(
                Sample(
                    question_id=f"{task}/{image}#{k}",
                    prompt=_prompt(question.strip(), prompt_style),
                    image=None,
                    group=f"{task}/pair{pos // 2}",
                    meta={
                        "subtask": task,
                        "image": image,
                        "question": question.strip(),
                        "answer": answer.strip(),
                        "pair": f"{task}/{pos // 2}",
                        "prediction": prediction,
                    },
                )
            )
    if not samples:
        raise EvalDataError(f"MME: no result lines under {root}")
    return samples


def embedded_predictions(samples: list[Sample]) -> dict[str, str] | None:
    """The predictions an eval_tool results folder carries (None for the benchmark release layout)."""
    if not samples or "prediction" not in samples[0].meta:
        return None
    return {s.key: s.meta["prediction"] for s in samples}


def load_samples(data: str, prompt_style: str = "plain", opts: dict | None = None) -> list[Sample]:
    opts = opts or {}
    if is_hub_dataset_id(data):
        return _load_hub(data, prompt_style, opts)
    if is_eval_tool_dir(Path(data)):
        return _load_eval_tool(Path(data), prompt_style)
    root = _find_root(Path(data))
    samples = []
    missing = []
    for task in ALL_SUBTASKS:
        tdir = root / task
        if not tdir.is_dir():
            missing.append(task)
            continue
        qa_dir = tdir / "questions_answers_YN"
        if qa_dir.is_dir():
            txt_dir, img_dirs = qa_dir, [tdir / "images", tdir]
        else:
            txt_dir, img_dirs = tdir, [tdir]
        for txt in sorted(txt_dir.glob("*.txt")):
            image = _find_image(txt.stem, img_dirs)
            lines = [ln for ln in txt.read_text(encoding="utf-8").splitlines() if ln.strip()]
            for k, line in enumerate(lines):
                if "\t" not in line:
                    raise EvalDataError(f"MME: {txt}: line {k + 1} is not 'question<TAB>answer'")
                question, answer = line.rsplit("\t", 1)
                samples.append(
                    Sample(
                        question_id=f"{task}/{image.name}#{k}",
                        prompt=_prompt(question.strip(), prompt_style),
                        image=str(image),
                        group=f"{task}/{image.name}",
                        meta={
                            "subtask": task,
                            "image": image.name,
                            "question": question.strip(),
                            "answer": answer.strip(),
                        },
                    )
                )
    if missing:
        logger.warning("MME: subtasks missing under %s: %s", root, ", ".join(missing))
    if not samples:
        raise EvalDataError(f"MME: no questions found under {root}")
    return samples


def _load_hub(data: str, prompt_style: str, opts: dict) -> list[Sample]:
    ds = load_hub_dataset(data, opts.get("hub_config"), opts.get("split") or HUB_DEFAULT[2])
    store = image_store(opts)
    seen: Counter = Counter()
    samples = []
    for i, row in hub_rows(ds):
        base = str(row["question_id"])  # "<subtask>/<image name>", shared by the image's two questions
        k = seen[base]
        seen[base] += 1
        task = row.get("category") or base.split("/")[0]
        samples.append(
            Sample(
                question_id=f"{base}#{k}",
                prompt=_prompt(row["question"], prompt_style),
                image=store.from_hub(base, ds, i),
                group=base,
                meta={
                    "subtask": task,
                    "image": base.split("/", 1)[-1],
                    "question": row["question"],
                    "answer": row["answer"],
                },
            )
        )
    return samples


def score(samples: list[Sample], preds: dict[str, str], out_dir: Path, opts: dict | None = None) -> TaskResult:
    by_task: dict[str, list[Sample]] = {}
    for s in samples:
        by_task.setdefault(s.meta["subtask"], []).append(s)

    official_dir = Path(out_dir) / "mme_results"
    official_dir.mkdir(parents=True, exist_ok=True)
    per_task = {}
    for task, items in by_task.items():
        # acc+ unit: the image (release layout), or the consecutive line pair (eval_tool layout, as the official tool)
        per_task[task] = mme_subtask_scores(
            (s.meta.get("pair", s.meta["image"]), s.meta["answer"], preds.get(s.key, "")) for s in items
        )
        with open(official_dir / f"{task}.txt", "w", encoding="utf-8") as f:
            for s in items:
                pred = " ".join(preds.get(s.key, "").replace("\t", " ").splitlines())
                f.write(f"{s.meta['image']}\t{s.meta['question']}\t{s.meta['answer']}\t{pred}\n")

    totals = {}
    notes = missing_note(count_missing(samples, preds), len(samples))
    for cat, names in MME_SUBTASKS.items():
        present = [t for t in names if t in per_task]
        totals[cat] = sum(per_task[t]["score"] for t in present)
        if len(present) != len(names):
            notes.append(
                f"{cat}: {len(present)} of {len(names)} subtasks present; the total is not comparable "
                f"with the official {cat} score"
            )
    extra = sorted(set(per_task) - set(ALL_SUBTASKS))
    rows = []
    for cat, names in MME_SUBTASKS.items():
        for t in names:
            if t in per_task:
                r = per_task[t]
                rows.append([cat, t, 100 * r["acc"], 100 * r["acc_plus"], r["score"], r["questions"], r["other"]])
    for t in extra:
        r = per_task[t]
        rows.append(["other", t, 100 * r["acc"], 100 * r["acc_plus"], r["score"], r["questions"], r["other"]])
    return TaskResult(
        task=NAME,
        headline={
            "perception": totals["perception"],
            "cognition": totals["cognition"],
            "total": totals["perception"] + totals["cognition"],
        },
        sections=[
            (
                "Subtasks (score = acc + acc+, max 200 each)",
                ["category", "subtask", "acc", "acc+", "score", "questions", "not yes/no"],
                rows,
            )
        ],
        details={"subtasks": per_task, "official_results_dir": "mme_results"},
        notes=notes,
    )
