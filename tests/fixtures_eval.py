"""Tiny copies of each benchmark in its official on-disk layout, written into a temporary folder by the eval tests.

Every builder returns the path to pass as ``--data``. The contents are small but keep the real file names, keys and
quirks (TextVQA's 10 answers and LLaVA OCR-token question file, MME's two folder styles, MMBench's base64 TSV with
NaN options / hints / circular copies whose image cell is the original's index, ...).
"""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

from PIL import Image


COLORS = [(220, 30, 30), (30, 160, 40), (40, 60, 200), (240, 200, 20), (120, 120, 120), (10, 10, 10)]


def write_image(path: Path, i: int = 0, size=(40, 28)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.new("RGB", size, COLORS[i % len(COLORS)])
    img.save(path)
    return path


def image_b64(i: int = 0, fmt: str = "JPEG") -> str:
    buf = io.BytesIO()
    Image.new("RGB", (36, 24), COLORS[i % len(COLORS)]).save(buf, format=fmt)
    return base64.b64encode(buf.getvalue()).decode()


def _dump(path: Path, obj) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, ensure_ascii=False, indent=1), encoding="utf-8")
    return path


# ---------------------------------------------------------------------------------------------------------------------
# TextVQA
# ---------------------------------------------------------------------------------------------------------------------

TEXTVQA_ENTRIES = [
    {
        "question_id": 34602,
        "question": "what is the brand of this camera?",
        "image_id": "003a8ae2ef43b901",
        "answers": [
            "nous les gosses",
            "dakota",
            "clos culombu",
            "dakota digital",
            "dakota",
            "dakota",
            "dakota digital",
            "dakota digital",
            "dakota",
            "dakota",
        ],
        "ocr_tokens": ["dakota", "digital"],
    },
    {
        "question_id": 34603,
        "question": "how many people are there?",
        "image_id": "00685bc495504d61",
        "answers": ["2", "2", "two", "2", "3", "2", "2", "2", "2", "2"],
        "ocr_tokens": [],
    },
    {
        "question_id": 34604,
        "question": "what does the sign say?",
        "image_id": "00685bc495504d61",
        "answers": [
            "don't walk",
            "dont walk",
            "don't walk",
            "walk",
            "do not walk",
            "don't walk",
            "stop",
            "don't walk",
            "walk",
            "no",
        ],
        "ocr_tokens": ["DONT", "WALK"],
    },
]


def make_textvqa(root: Path, with_llava_file: bool = True) -> Path:
    d = root / "textvqa"
    data = []
    for e in TEXTVQA_ENTRIES:
        data.append(
            {
                "question": e["question"],
                "image_id": e["image_id"],
                "image_classes": ["Camera"],
                "flickr_original_url": "",
                "flickr_300k_url": "",
                "image_width": 40,
                "image_height": 28,
                "answers": e["answers"],
                "question_tokens": e["question"].split(),
                "question_id": e["question_id"],
                "set_name": "val",
            }
        )
    _dump(
        d / "TextVQA_0.5.1_val.json",
        {"dataset_name": "textvqa", "dataset_type": "val", "dataset_version": "0.5.1", "data": data},
    )
    for i, e in enumerate(TEXTVQA_ENTRIES):
        write_image(d / "train_images" / f"{e['image_id']}.jpg", i)
    if with_llava_file:
        lines = []
        for e in TEXTVQA_ENTRIES:
            text = e["question"]
            if e["ocr_tokens"]:
                text += "\nReference OCR token: " + ", ".join(e["ocr_tokens"])
            text += "\nAnswer the question using a single word or phrase."
            lines.append(
                json.dumps(
                    {
                        "question_id": e["image_id"],
                        "image": f"{e['image_id']}.jpg",
                        "text": text,
                        "category": "default",
                    }
                )
            )
        (d / "llava_textvqa_val_v051_ocr.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return d


# ---------------------------------------------------------------------------------------------------------------------
# MME
# ---------------------------------------------------------------------------------------------------------------------


def make_mme(root: Path) -> Path:
    d = root / "MME_Benchmark_release_version"
    # folder style 1: images/ + questions_answers_YN/
    for i, name in enumerate(["10002", "10049"]):
        write_image(d / "artwork" / "images" / f"{name}.jpg", i)
        (d / "artwork" / "questions_answers_YN").mkdir(parents=True, exist_ok=True)
        (d / "artwork" / "questions_answers_YN" / f"{name}.txt").write_text(
            f"Is this artwork created by painter {name}? Please answer yes or no.\tYes\n"
            f"Is this artwork created by someone else? Please answer yes or no.\tNo\n",
            encoding="utf-8",
        )
    # folder style 2: image and txt side by side
    write_image(d / "count" / "000000006040.jpg", 2)
    (d / "count" / "000000006040.txt").write_text(
        "Are there two trains in the image? Please answer yes or no.\tYes\n"
        "Are there three trains in the image? Please answer yes or no.\tNo\n",
        encoding="utf-8",
    )
    write_image(d / "code_reasoning" / "0020.png", 3)
    (d / "code_reasoning" / "0020.txt").write_text(
        "Will the code print 5? Please answer yes or no.\tNo\nWill the code print 6? Please answer yes or no.\tYes\n",
        encoding="utf-8",
    )
    return d


# ---------------------------------------------------------------------------------------------------------------------
# MMBench
# ---------------------------------------------------------------------------------------------------------------------

MMBENCH_ROWS = [
    {
        "index": 0,
        "question": "What color is the square?",
        "hint": None,
        "A": "red",
        "B": "green",
        "C": "blue",
        "D": "yellow",
        "answer": "A",
        "category": "color_attribute",
        "l2-category": "attribute_reasoning",
    },
    {
        "index": 1,
        "question": "Which option describes the image?",
        "hint": "The image is a flat colour.",
        "A": "a photo of a cat",
        "B": "a plain coloured rectangle",
        "C": None,
        "D": None,
        "answer": "B",
        "category": "image_topic",
        "l2-category": "coarse_perception",
    },
    {
        "index": 2,
        "question": "How many objects are there?",
        "hint": None,
        "A": "0",
        "B": "1",
        "C": "2",
        "D": None,
        "answer": "C",
        "category": "object_localization",
        "l2-category": "fine_grained_perception",
    },
]
MMBENCH_CN_QUESTIONS = ["正方形是什么颜色？", "哪个选项描述了这张图片？", "有多少个物体？"]


def _write_tsv(path: Path, rows: list[dict], columns: list[str]) -> Path:
    import pandas as pd

    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows, columns=columns).to_csv(path, sep="\t", index=False)
    return path


def mmbench_rows(lang: str = "en", split: str = "dev", with_answer: bool = True) -> list[dict]:
    rows = []
    for i, r in enumerate(MMBENCH_ROWS):
        r = dict(r, split=split, image=image_b64(i))
        if lang == "cn":
            r["question"] = MMBENCH_CN_QUESTIONS[i]
        if not with_answer:
            r.pop("answer")
        rows.append(r)
    return rows


MMBENCH_COLUMNS = [
    "index",
    "question",
    "hint",
    "A",
    "B",
    "C",
    "D",
    "answer",
    "category",
    "image",
    "source",
    "l2-category",
    "comment",
    "split",
]


def make_mmbench(root: Path, lang: str = "en", split: str = "dev", circular: bool = False) -> Path:
    """``circular=True`` writes the official circular TSV: rotated copies with index + k*1e6 whose image cell holds
    the original row's index."""
    with_answer = split != "test"
    rows = mmbench_rows(lang, split, with_answer)
    cols = [c for c in MMBENCH_COLUMNS if with_answer or c != "answer"]
    if circular:
        from eval.mmbench import rotate

        extra = []
        for r in rows:
            choices = {c: r[c] for c in "ABCD" if r.get(c) is not None}
            for k in range(1, len(choices)):
                rc, ra = rotate(choices, r.get("answer"), k)
                c = dict(r, index=r["index"] + k * 1_000_000, image=str(r["index"]), **rc)
                if with_answer:
                    c["answer"] = ra
                extra.append(c)
        rows = rows + extra
    name = {
        ("en", "dev"): "mmbench_dev_20230712.tsv",
        ("en", "test"): "mmbench_test_20230712.tsv",
        ("cn", "dev"): "mmbench_dev_cn_20231003.tsv",
        ("cn", "test"): "mmbench_test_cn_20231003.tsv",
    }[(lang, split)]
    if circular:
        name = name.replace(".tsv", "_circular.tsv")
    return _write_tsv(root / f"mmbench_{lang}" / name, rows, cols)


# ---------------------------------------------------------------------------------------------------------------------
# MM-Vet
# ---------------------------------------------------------------------------------------------------------------------

MMVET = {
    "v1_0": {
        "imagename": "v1_0.png",
        "question": "What is x in the equation?",
        "answer": "-1 <AND> -5",
        "capability": ["ocr", "math"],
    },
    "v1_1": {
        "imagename": "v1_1.jpg",
        "question": "What is the colour of the rectangle?",
        "answer": "red",
        "capability": ["rec"],
    },
    "v1_2": {
        "imagename": "v1_2.png",
        "question": "What is written on the sign?",
        "answer": "stop <OR> halt",
        "capability": ["ocr", "rec"],
    },
}


def make_mmvet(root: Path) -> Path:
    d = root / "mm-vet"
    _dump(d / "mm-vet.json", MMVET)
    for i, v in enumerate(MMVET.values()):
        write_image(d / "images" / v["imagename"], i)
    return d


# ---------------------------------------------------------------------------------------------------------------------
# OCRBench
# ---------------------------------------------------------------------------------------------------------------------

# ids repeat, as in the released OCRBench.json (e.g. 211 is both an IIIT5K and an IC13_857 question)
OCRBENCH = [
    {
        "dataset_name": "IIIT5K",
        "id": 211,
        "image_path": "IIIT5K/3_1.png",
        "question": "what is written in the image?",
        "answers": ["CENTRE"],
        "type": "Regular Text Recognition",
    },
    {
        "dataset_name": "WordArt",
        "id": 57,
        "image_path": "WordArt/test_2.png",
        "question": "what is written in the image?",
        "answers": "Lunch",
        "type": "Artistic Text Recognition",
    },
    {
        "dataset_name": "docVQA",
        "id": 211,
        "image_path": "docVQA/page_1.png",
        "question": "What is the date?",
        "answers": ["March 3, 1998", "3/3/98"],
        "type": "Doc-oriented VQA",
    },
    {
        "dataset_name": "HME100k",
        "id": 57,
        "image_path": "HME100k/train_5.jpg",
        "question": "Please write out the expression of the formula in the image using LaTeX format.",
        "answers": ["x ^ { 2 } + 1"],
        "type": "Handwritten Mathematical Expression Recognition",
    },
    {
        "dataset_name": "SROIE",
        "id": 211,
        "image_path": "SROIE/x51.jpg",
        "question": "what is the total?",
        "answers": ["12.50"],
        "type": "Key Information Extraction",
    },
]


def make_ocrbench(root: Path) -> Path:
    d = root / "OCRBench"
    _dump(d / "OCRBench.json", OCRBENCH)
    for i, e in enumerate(OCRBENCH):
        write_image(d / "OCRBench_Images" / e["image_path"], i)
    return d


# ---------------------------------------------------------------------------------------------------------------------
# DocVQA
# ---------------------------------------------------------------------------------------------------------------------

DOCVQA = [
    {
        "questionId": 49153,
        "question": "What is the ‘actual’ value per 1000, during the year 1975?",
        "question_types": ["figure/diagram"],
        "image": "documents/pybv0228_81.png",
        "docId": 14465,
        "ucsf_document_id": "pybv0228",
        "ucsf_document_page_no": "81",
        "answers": ["0.28"],
        "data_split": "val",
    },
    {
        "questionId": 24580,
        "question": "What is the name of the company?",
        "question_types": ["layout"],
        "image": "documents/nkbl0226_1.png",
        "docId": 2,
        "ucsf_document_id": "nkbl0226",
        "ucsf_document_page_no": "1",
        "answers": ["ITC Limited", "itc limited"],
        "data_split": "val",
    },
    {
        "questionId": 57349,
        "question": "To whom is the document sent?",
        "question_types": ["form"],
        "image": "documents/nkbl0226_1.png",
        "docId": 2,
        "ucsf_document_id": "nkbl0226",
        "ucsf_document_page_no": "1",
        "answers": ["Paul"],
        "data_split": "val",
    },
]


def make_docvqa(root: Path, split: str = "val") -> Path:
    d = root / "docvqa"
    entries = [dict(e) for e in DOCVQA]
    if split == "test":
        for e in entries:
            e.pop("answers")
    _dump(
        d / f"{split}_v1.0.json",
        {"dataset_name": "docvqa", "dataset_split": split, "dataset_version": "1.0", "data": entries},
    )
    for i, e in enumerate(entries):
        write_image(d / e["image"], i)
    return d


# ---------------------------------------------------------------------------------------------------------------------
# ChartQA
# ---------------------------------------------------------------------------------------------------------------------

CHARTQA = {
    "human": [
        {"imgname": "41699051005347.png", "query": "How many food items are shown in the bar graph?", "label": "14"},
        {"imgname": "multi_col_1.png", "query": "Which country has the highest value?", "label": "Norway"},
    ],
    "augmented": [
        {"imgname": "two_col_100.png", "query": "What is the value in 2019?", "label": "20.5"},
        {"imgname": "two_col_101.png", "query": "What share of respondents said yes?", "label": "45%"},
    ],
}


def make_chartqa(root: Path) -> Path:
    d = root / "ChartQA Dataset"
    for i, (subset, entries) in enumerate(CHARTQA.items()):
        _dump(d / "test" / f"test_{subset}.json", entries)
        for j, e in enumerate(entries):
            write_image(d / "test" / "png" / e["imgname"], i * 2 + j)
    return d


# ---------------------------------------------------------------------------------------------------------------------


def make_all(root: Path) -> dict[str, Path]:
    root = Path(root)
    return {
        "textvqa": make_textvqa(root),
        "mme": make_mme(root),
        "mmbench_en": make_mmbench(root, "en"),
        "mmbench_cn": make_mmbench(root, "cn"),
        "mmvet": make_mmvet(root),
        "ocrbench": make_ocrbench(root),
        "docvqa": make_docvqa(root),
        "chartqa": make_chartqa(root),
    }


def write_predictions(path: Path, preds: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for qid, text in preds.items():
            f.write(json.dumps({"question_id": qid, "prediction": text}, ensure_ascii=False) + "\n")
    return path
