"""MMBench (EN and CN): circular evaluation and single-pass accuracy, VLMEvalKit's rule-based option extraction, and a
submission file for the test split.

Local layout: the official TSV (``--data`` = the .tsv file, or a folder holding exactly one)::

    index  question  hint  A  B  C  D  answer  category  l2-category  split  image(base64)  [source, comment]

e.g. ``mmbench_dev_20230712.tsv`` / ``mmbench_dev_cn_20231003.tsv`` (LLaVA-1.5 eval.zip) or VLMEvalKit's
``MMBench_DEV_EN.tsv`` / ``MMBench_DEV_CN.tsv``. The test TSVs have no ``answer`` column. A Hub dataset id is
accepted too (default ``lmms-lab/MMBench``, config ``en``/``cn``, split ``dev``).

Circular evaluation (the official protocol): a question counts as right only when every rotation of its options is
answered right. A circular TSV already holds the rotated copies, as extra rows whose ``index`` is the original index +
k * 1e6 (grouped by ``index % 1e6``); from a non-circular TSV the rotations are generated here, with the same index
convention. ``--no-circular`` evaluates the original rows only ("single pass"); single-pass accuracy over the original
rows is always reported too. In VLMEvalKit, images of copies may be stored as the index of the row holding the base64
image; that is resolved.

Answer extraction: VLMEvalKit's ``can_infer`` (letter as a word after stripping ``.()[],:;!*#{}``, else a unique option
text match). The official pipeline asks a GPT judge when those heuristics fail; here such answers count as wrong
(reported as ``unparsed``).

Prompts: ``hint\\n`` (if any) + question + ``\\nA. option`` lines. ``original`` appends LLaVA-1.5's single-prediction
instruction ("Answer with the option's letter from the given choices directly." / "请直接回答选项字母。"), as the
original's ``mmbench.sh`` did; ``plain`` adds nothing.

Submission: ``<task>_submission.xlsx`` (pandas + openpyxl) or, when openpyxl is not installed,
``<task>_submission.tsv``: the source rows' ``index, question, A-D, [answer,] prediction`` (raw model text), as LLaVA's
``convert_mmbench_for_submission.py`` writes it for the OpenCompass server.
"""

from __future__ import annotations

import importlib.util
import logging
from collections import defaultdict
from pathlib import Path

from .common import (
    EvalDataError,
    ImageStore,
    Sample,
    TaskResult,
    count_missing,
    hub_rows,
    image_store,
    is_hub_dataset_id,
    is_missing,
    load_hub_dataset,
    missing_note,
)
from .metrics import infer_option_letter

NAME = "mmbench"
MAX_NEW_TOKENS = 128  # the original used 1024 with the single-letter instruction; 128 is plenty for a letter
HUB_DEFAULT = ("lmms-lab/MMBench", "en", "dev")
CIRCULAR_OFFSET = 1_000_000
OPTION_LETTERS = "ABCDEFGHI"
SINGLE_PRED_SUFFIX = {
    "en": "Answer with the option's letter from the given choices directly.",
    "cn": "请直接回答选项字母。",
}
logger = logging.getLogger("eval.mmbench")


def _clean(v):
    return None if is_missing(v) else str(v)


def build_prompt(row: dict, choices: dict[str, str], prompt_style: str, lang: str) -> str:
    question = str(row["question"])
    hint = _clean(row.get("hint"))
    if hint is not None:
        question = hint + "\n" + question
    for letter, text in choices.items():
        question += f"\n{letter}. {text}"
    if prompt_style == "original":
        question += "\n" + SINGLE_PRED_SUFFIX[lang]
    return question


def rotate(choices: dict[str, str], answer: str | None, k: int) -> tuple[dict[str, str], str | None]:
    """Rotation k of the options: letter i gets the text of option (i + k) mod n; the answer letter follows its text."""
    letters = list(choices)
    texts = [choices[c] for c in letters]
    n = len(letters)
    new = {letters[i]: texts[(i + k) % n] for i in range(n)}
    new_answer = None
    if answer is not None:
        old = letters.index(answer)
        new_answer = letters[(old - k) % n]
    return new, new_answer


def _read_tsv(path: Path) -> list[dict]:
    import pandas as pd

    df = pd.read_csv(path, sep="\t", dtype=str)
    if "index" not in df.columns or "question" not in df.columns:
        raise EvalDataError(f"MMBench: {path} lacks the 'index'/'question' columns")
    rows = df.to_dict("records")
    for r in rows:
        r["index"] = int(float(r["index"]))
    return rows


def _find_tsv(data: Path) -> Path:
    if data.is_file():
        return data
    tsvs = sorted(data.glob("*.tsv"))
    if len(tsvs) != 1:
        raise EvalDataError(f"MMBench: expected one .tsv in {data}, found {len(tsvs)}; pass the file itself")
    return tsvs[0]


def load_samples(data: str, prompt_style: str = "plain", opts: dict | None = None) -> list[Sample]:
    opts = opts or {}
    lang = opts.get("lang", "en")
    store = image_store(opts)
    if is_hub_dataset_id(data):
        ds = load_hub_dataset(data, opts.get("hub_config") or lang, opts.get("split") or HUB_DEFAULT[2])
        rows = []
        for i, r in hub_rows(ds):
            r = dict(r)
            r["index"] = int(r["index"])
            r["_image"] = store.from_hub(r["index"], ds, i)
            if "L2-category" in r and "l2-category" not in r:
                r["l2-category"] = r["L2-category"]
            rows.append(r)
    else:
        rows = _read_tsv(_find_tsv(Path(data)))
    return rows_to_samples(rows, prompt_style, lang, circular=opts.get("circular", True), store=store)


def _image_getter(rows_by_index: dict[int, dict], row: dict, store: ImageStore):
    if "_image" in row:
        return row["_image"]  # Hub dataset: already a lazy file writer
    value = row.get("image")
    ref = row["index"]
    # VLMEvalKit dedup: a short cell is the index of the row holding the base64 data; a missing cell in a rotated
    # copy means "same image as the original".
    if is_missing(value):
        ref = row["index"] % CIRCULAR_OFFSET
    elif len(value) <= 64:
        try:
            ref = int(float(value))
        except ValueError:
            raise EvalDataError(f"MMBench: row {row['index']}: image cell {value!r} is neither base64 nor an index")
    if ref != row["index"]:
        target = rows_by_index.get(ref)
        if target is None or is_missing(target.get("image")) or len(str(target["image"])) <= 64:
            raise EvalDataError(f"MMBench: row {row['index']}: image refers to row {ref}, which has no image")
        value = target["image"]
    return store.from_base64(ref, str(value))


def rows_to_samples(rows: list[dict], prompt_style: str, lang: str, circular: bool = True,
                    store: ImageStore | None = None) -> list[Sample]:
    store = store or ImageStore()
    rows_by_index = {r["index"]: r for r in rows}
    is_circular_tsv = any(r["index"] >= CIRCULAR_OFFSET for r in rows)
    originals = {r["index"]: r for r in rows if r["index"] < CIRCULAR_OFFSET}
    ordered = sorted(rows, key=lambda r: (r["index"] % CIRCULAR_OFFSET, r["index"]))
    samples: list[Sample] = []
    for r in ordered:
        idx = r["index"]
        group = idx % CIRCULAR_OFFSET
        if not circular and idx >= CIRCULAR_OFFSET:
            continue
        choices = {c: str(r[c]) for c in OPTION_LETTERS if c in r and not is_missing(r[c])}
        if len(choices) < 2:
            raise EvalDataError(f"MMBench: row {idx} has fewer than 2 options")
        answer = _clean(r.get("answer"))
        if answer is not None and answer not in choices:
            raise EvalDataError(f"MMBench: row {idx}: answer {answer!r} is not one of {list(choices)}")
        base = originals.get(group, r)
        meta = {"index": idx, "group": group, "answer": answer, "choices": choices,
                "category": _clean(base.get("category")) or "unknown",
                "l2_category": _clean(base.get("l2-category")) or "unknown",
                "split": _clean(r.get("split")), "in_source": True, "question": str(r["question"]),
                "hint": _clean(r.get("hint"))}
        image = _image_getter(rows_by_index, r, store)
        samples.append(Sample(question_id=idx, prompt=build_prompt(r, choices, prompt_style, lang), image=image,
                              group=group, meta=meta))
        if circular and not is_circular_tsv and idx < CIRCULAR_OFFSET and answer is not None:
            for k in range(1, len(choices)):
                rc, ra = rotate(choices, answer, k)
                new_idx = idx + k * CIRCULAR_OFFSET
                m = dict(meta, index=new_idx, answer=ra, choices=rc, in_source=False)
                samples.append(Sample(question_id=new_idx, prompt=build_prompt(r, rc, prompt_style, lang),
                                      image=image, group=group, meta=m))
    return samples


def _accuracy_table(groups_ok: dict[int, bool], group_meta: dict[int, dict], key: str):
    acc = defaultdict(list)
    for g, ok in groups_ok.items():
        acc[group_meta[g][key]].append(ok)
    return {k: 100.0 * sum(v) / len(v) for k, v in sorted(acc.items())}, {k: len(v) for k, v in acc.items()}


def have_openpyxl() -> bool:
    return importlib.util.find_spec("openpyxl") is not None


def write_submission(samples: list[Sample], preds: dict[str, str], path_stem: Path) -> Path:
    """The OpenCompass submission (source rows only). xlsx when openpyxl is installed, else TSV."""
    import pandas as pd

    records = []
    letters = sorted({c for s in samples for c in s.meta["choices"]})
    for s in samples:
        if not s.meta["in_source"]:
            continue
        rec = {"index": s.meta["index"], "question": s.meta["question"]}
        for c in letters:
            rec[c] = s.meta["choices"].get(c)
        if s.meta["answer"] is not None:
            rec["answer"] = s.meta["answer"]
        rec["prediction"] = preds.get(s.key, "")
        records.append(rec)
    df = pd.DataFrame(records)
    if have_openpyxl():
        path = path_stem.with_suffix(".xlsx")
        df.to_excel(path, index=False, engine="openpyxl")
    else:
        path = path_stem.with_suffix(".tsv")
        df.to_csv(path, sep="\t", index=False)
    return path


def score(samples: list[Sample], preds: dict[str, str], out_dir: Path, opts: dict | None = None) -> TaskResult:
    opts = opts or {}
    task = opts.get("task_name", NAME)
    sub_path = write_submission(samples, preds, Path(out_dir) / f"{task}_submission")
    notes = missing_note(count_missing(samples, preds), len(samples))
    notes.append(f"submission written to {sub_path.name}"
                 + ("" if sub_path.suffix == ".xlsx" else " (TSV: openpyxl is not installed)"))

    per_row = {}
    unparsed = 0
    group_rows: dict[int, list[bool]] = defaultdict(list)
    group_meta: dict[int, dict] = {}
    single: dict[int, bool] = {}
    for s in samples:
        if s.meta["answer"] is None:
            continue
        pred = preds.get(s.key)
        letter = infer_option_letter(pred, s.meta["choices"]) if pred is not None else None
        if pred is not None and letter is None:
            unparsed += 1
        ok = letter == s.meta["answer"]
        per_row[s.key] = {"extracted": letter, "answer": s.meta["answer"], "correct": ok}
        group_rows[s.group].append(ok)
        if s.meta["index"] < CIRCULAR_OFFSET:
            single[s.group] = ok
            group_meta[s.group] = s.meta
        else:
            group_meta.setdefault(s.group, s.meta)
    if not per_row:
        notes.append("no answers in the data (test split): only the submission file was written")
        return TaskResult(task=task, headline={"questions": len({s.group for s in samples})},
                          details={"submission": sub_path.name}, notes=notes)

    is_circular = any(len(v) > 1 for v in group_rows.values())
    circular_ok = {g: all(v) for g, v in group_rows.items()}
    headline = {}
    if is_circular:
        headline["circular_accuracy"] = 100.0 * sum(circular_ok.values()) / len(circular_ok)
    headline["single_pass_accuracy"] = (100.0 * sum(single.values()) / len(single)) if single else None
    headline["questions"] = len(group_rows)
    headline["unparsed"] = unparsed
    main_ok = circular_ok if is_circular else single
    label = "circular" if is_circular else "single pass"
    cat_acc, cat_n = _accuracy_table(main_ok, group_meta, "category")
    l2_acc, l2_n = _accuracy_table(main_ok, group_meta, "l2_category")
    sections = [
        (f"l2-category ({label})", ["l2-category", "accuracy", "questions"],
         [[k, v, l2_n[k]] for k, v in l2_acc.items()]),
        (f"category ({label})", ["category", "accuracy", "questions"],
         [[k, v, cat_n[k]] for k, v in cat_acc.items()]),
    ]
    if unparsed:
        notes.append(f"{unparsed} answers matched no option by the rule-based heuristics and count as wrong (the "
                     "official pipeline would ask a GPT judge)")
    return TaskResult(task=task, headline=headline, sections=sections,
                      details={"category": cat_acc, "l2_category": l2_acc, "per_row": per_row,
                               "circular": is_circular, "submission": sub_path.name},
                      notes=notes)
