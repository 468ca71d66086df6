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

Answer extraction: VLMEvalKit's ``can_infer`` (see :func:`eval.metrics.infer_option_letter`). Answers the rules cannot
read are counted as ``unparsed``. Without a judge they count as wrong (VLMEvalKit's ``exact_matching`` policy). With
``--judge-url`` (any OpenAI-compatible endpoint; key from ``OPENAI_API_KEY``; model ``--judge-model``, default
VLMEvalKit's ``gpt-3.5-turbo-0125``) they go to an LLM judge as VLMEvalKit's ``extract_answer_from_item`` does
(open-compass/VLMEvalKit ``vlmeval/dataset/utils/multiple_choice.py``, read at
895762d302b923d9d1f24ac16a7a2cbc461bb1cf): its matching prompt (the Chinese one when the question has a CJK
character), the judge's reply read with ``can_infer``, up to 3 tries, then a random pick among the options and "Z"
(seeded by the row index here, so reruns agree). Circular: as VLMEvalKit's ``prefetch_circular_group``, a question
with a rotation the rules already read wrong is wrong without asking the judge. The report gives how many answers
the rules could not read and what the judge decided (an option, "Z", or a random pick after 3 failed tries).

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
import random
import re
from collections import defaultdict
from pathlib import Path
from typing import Any

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
from .mmvet import OpenAICompatibleGrader


NAME = "mmbench"
DEFAULT_JUDGE_MODEL = "gpt-3.5-turbo-0125"  # VLMEvalKit's default judge for MMBench ("chatgpt-0125")
JUDGE_TRIES = 3
_CJK = re.compile("[\u4e00-\u9fa5]")
MAX_NEW_TOKENS = 128  # the original used 1024 with the single-letter instruction; 128 is plenty for a letter
HUB_DEFAULT = ("lmms-lab/MMBench", "en", "dev")
CIRCULAR_OFFSET = 1_000_000
OPTION_LETTERS = "ABCDEFGHI"
SINGLE_PRED_SUFFIX = {
    "en": "Answer with the option's letter from the given choices directly.",
    "cn": "请直接回答选项字母。",
}
logger = logging.getLogger("eval.mmbench")


def _clean(v: Any) -> str | None:
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


def rows_to_samples(
    rows: list[dict], prompt_style: str, lang: str, circular: bool = True, store: ImageStore | None = None
) -> list[Sample]:
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
        meta = {
            "index": idx,
            "group": group,
            "answer": answer,
            "choices": choices,
            "category": _clean(base.get("category")) or "unknown",
            "l2_category": _clean(base.get("l2-category")) or "unknown",
            "split": _clean(r.get("split")),
            "in_source": True,
            "question": str(r["question"]),
            "hint": _clean(r.get("hint")),
        }
        image = _image_getter(rows_by_index, r, store)
        samples.append(
            Sample(
                question_id=idx,
                prompt=build_prompt(r, choices, prompt_style, lang),
                image=image,
                group=group,
                meta=meta,
            )
        )
        if circular and not is_circular_tsv and idx < CIRCULAR_OFFSET and answer is not None:
            for k in range(1, len(choices)):
                rc, ra = rotate(choices, answer, k)
                new_idx = idx + k * CIRCULAR_OFFSET
                m = dict(meta, index=new_idx, answer=ra, choices=rc, in_source=False)
                samples.append(
                    Sample(
                        question_id=new_idx,
                        prompt=build_prompt(r, rc, prompt_style, lang),
                        image=image,
                        group=group,
                        meta=m,
                    )
                )
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


# The judge's matching prompts (VLMEvalKit ``build_prompt`` / ``build_prompt_cn`` / ``build_option_str``).
JUDGE_PROMPT_EN = (
    "You are an AI assistant who will help me to match an answer with several options of a single-choice question. "
    "You are provided with a question, several options, and an answer, and you need to find which option is most "
    "similar to the answer. If the meaning of all options are significantly different from the answer, output Z. "
    "Your should output a single uppercase character in A, B, C, D (if they are valid options), and Z. \n"
    "Example 1: \nQuestion: What is the main object in image?\nOptions: A. teddy bear B. rabbit C. cat D. dog\n"
    "Answer: a cute teddy bear\nYour output: A\n"
    "Example 2: \nQuestion: What is the main object in image?\nOptions: A. teddy bear B. rabbit C. cat D. dog\n"
    "Answer: Spider\nYour output: Z\n"
    "Example 3: \nQuestion: {}?\nOptions: {}\nAnswer: {}\nYour output: "
)
JUDGE_PROMPT_CN = (
    "你是一个帮助我匹配答案与单选题中多个选项的 AI 助手。你会被提供：一个问题，多个选项，一个答案。你的任务是找到与答案意义最相近的选项。"
    "如果所有选项的意义都与答案显著不同，则输出 Z。你应该输出一个单个的大写字母，例如 A, B, C, D（如果它们是有效选项），或 Z。"
    "例 1:问题: 图中最主要的物体是什么?\n选项: A. 泰迪熊 B. 兔子 C. 猫 D. 狗\n答案: 一只可爱的泰迪熊\n输出: A\n"
    "例 2: \n问题: 图中最主要的物体是什么?\n选项: A. 泰迪熊 B. 兔子 C. 猫 D. 狗\n答案: 蜘蛛\n输出: Z\n"
    "例 3: \n问题: {}?\n选项: {}\n答案: {}\n输出: "
)


def judge_prompt(question: str, choices: dict[str, str], prediction: str) -> str:
    options = "There are several options: \n" + "".join(f"{c}. {t}\n" for c, t in choices.items())
    template = JUDGE_PROMPT_CN if _CJK.search(question) else JUDGE_PROMPT_EN
    return template.format(question, options, prediction)


def ask_judge(
    judge: OpenAICompatibleGrader, question: str, choices: dict[str, str], prediction: str, seed: int
) -> tuple[str, str]:
    """(letter, how): the judge's reply read by ``can_infer`` ("option" or "Z"), retried up to 3 times; after that a
    random pick among the options and "Z" ("random"), as VLMEvalKit does."""
    prompt = judge_prompt(question, choices, prediction)
    for attempt in range(JUDGE_TRIES):
        letter = infer_option_letter(judge.ask(prompt, 0.0, attempt), choices)
        if letter:
            return letter, "Z" if letter == "Z" else "option"
    return random.Random(seed).choice(list(choices) + ["Z"]), "random"


def make_judge(opts: dict, out_dir: Path) -> OpenAICompatibleGrader | None:
    """The judge client: ``opts["judge"]`` (tests), else one for ``opts["judge_url"]``, else None (no judge)."""
    if opts.get("judge") is not None:
        return opts["judge"]
    url = opts.get("judge_url")
    if not url:
        return None
    import os

    return OpenAICompatibleGrader(
        url,
        os.environ.get("OPENAI_API_KEY") or None,
        opts.get("judge_model") or DEFAULT_JUDGE_MODEL,
        cache_path=Path(out_dir) / f"{opts.get('task_name', NAME)}_judge_cache.json",
        max_tokens=16,
    )


def score(samples: list[Sample], preds: dict[str, str], out_dir: Path, opts: dict | None = None) -> TaskResult:
    opts = opts or {}
    task = opts.get("task_name", NAME)
    sub_path = write_submission(samples, preds, Path(out_dir) / f"{task}_submission")
    notes = missing_note(count_missing(samples, preds), len(samples))
    notes.append(
        f"submission written to {sub_path.name}"
        + ("" if sub_path.suffix == ".xlsx" else " (TSV: openpyxl is not installed)")
    )

    judge = make_judge(opts, out_dir)
    scored = [s for s in samples if s.meta["answer"] is not None]
    rule = {}
    for s in scored:
        pred = preds.get(s.key)
        rule[s.key] = infer_option_letter(pred, s.meta["choices"]) if pred is not None else None
    # circular: a question with a rotation the rules read wrong is decided without the judge (prefetch)
    decided_wrong = {s.group for s in scored if rule[s.key] is not None and rule[s.key] != s.meta["answer"]}
    unparsed = sum(1 for s in scored if s.key in preds and rule[s.key] is None)
    decisions: dict[str, int] = {"option": 0, "Z": 0, "random": 0}
    per_row = {}
    group_rows: dict[int, list[bool]] = defaultdict(list)
    group_meta: dict[int, dict] = {}
    single: dict[int, bool] = {}
    for s in scored:
        pred = preds.get(s.key)
        letter, how = rule[s.key], "rule"
        needs_judge = s.group not in decided_wrong or s.meta["index"] < CIRCULAR_OFFSET
        if letter is None and pred is not None and judge is not None and needs_judge:
            letter, how = ask_judge(judge, s.meta["question"], s.meta["choices"], pred, seed=s.meta["index"])
            decisions[how] += 1
        ok = letter == s.meta["answer"]
        per_row[s.key] = {
            "extracted": letter,
            "by": how if letter is not None else None,
            "answer": s.meta["answer"],
            "correct": ok,
        }
        group_rows[s.group].append(ok)
        if s.meta["index"] < CIRCULAR_OFFSET:
            single[s.group] = ok
            group_meta[s.group] = s.meta
        else:
            group_meta.setdefault(s.group, s.meta)
    if not per_row:
        notes.append("no answers in the data (test split): only the submission file was written")
        return TaskResult(
            task=task,
            headline={"questions": len({s.group for s in samples})},
            details={"submission": sub_path.name},
            notes=notes,
        )

    is_circular = any(len(v) > 1 for v in group_rows.values())
    circular_ok = {g: all(v) for g, v in group_rows.items()}
    headline = {}
    if is_circular:
        headline["circular_accuracy"] = 100.0 * sum(circular_ok.values()) / len(circular_ok)
    headline["single_pass_accuracy"] = (100.0 * sum(single.values()) / len(single)) if single else None
    headline["questions"] = len(group_rows)
    headline["unparsed"] = unparsed
    if judge is not None:
        headline["judge_asked"] = sum(decisions.values())
    main_ok = circular_ok if is_circular else single
    label = "circular" if is_circular else "single pass"
    cat_acc, cat_n = _accuracy_table(main_ok, group_meta, "category")
    l2_acc, l2_n = _accuracy_table(main_ok, group_meta, "l2_category")
    sections = [
        (
            f"l2-category ({label})",
            ["l2-category", "accuracy", "questions"],
            [[k, v, l2_n[k]] for k, v in l2_acc.items()],
        ),
        (f"category ({label})", ["category", "accuracy", "questions"], [[k, v, cat_n[k]] for k, v in cat_acc.items()]),
    ]
    judge_info = None
    if judge is not None:
        asked = sum(decisions.values())
        judge_info = {"model": getattr(judge, "model", None), "asked": asked, "decisions": decisions}
        notes.append(
            f"{unparsed} answers matched no option by the rules; the judge ({judge_info['model']}) was asked "
            f"about {asked} of them (the others belong to circular questions the rules already got wrong): "
            f"{decisions['option']} matched to an option, {decisions['Z']} to none (Z, wrong), "
            f"{decisions['random']} random picks after {JUDGE_TRIES} unreadable replies"
        )
    elif unparsed:
        notes.append(
            f"{unparsed} answers matched no option by the rule-based heuristics and count as wrong (no "
            "judge; the official pipeline asks an LLM judge: --judge-url)"
        )
    return TaskResult(
        task=task,
        headline=headline,
        sections=sections,
        details={
            "category": cat_acc,
            "l2_category": l2_acc,
            "per_row": per_row,
            "circular": is_circular,
            "submission": sub_path.name,
            "judge": judge_info,
        },
        notes=notes,
    )
