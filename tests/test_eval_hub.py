"""The Hub-dataset code path, offline: ``datasets.load_dataset`` is replaced by an in-memory dataset with the column
names of the lmms-lab / echo840 copies, so the real mapping code (undecoded image columns written to files on demand,
id and answer columns) runs without the network."""

import io

import datasets
import pytest
from PIL import Image

from eval.tasks import TASKS


def _png(color):
    buf = io.BytesIO()
    Image.new("RGB", (20, 10), color).save(buf, format="PNG")
    return {"bytes": buf.getvalue(), "path": None}


ROWS = {
    "textvqa": {
        "image_id": "abc",
        "question_id": 7,
        "question": "what brand?",
        "answers": ["x"] * 10,
        "ocr_tokens": ["nikon"],
    },
    "mme": {
        "question_id": "OCR/1.jpg",
        "question": "Is it A? Please answer yes or no.",
        "answer": "Yes",
        "category": "OCR",
    },
    "mmbench_en": {
        "index": 5,
        "question": "Q?",
        "hint": None,
        "A": "a",
        "B": "b",
        "C": None,
        "D": None,
        "answer": "B",
        "category": "c",
        "source": "s",
        "L2-category": "l2",
        "comment": None,
        "split": "dev",
    },
    "mmvet": {
        "question_id": "v1_3",
        "question": "Q?",
        "answer": "A",
        "image_source": "x",
        "capability": ["ocr", "rec"],
    },
    "ocrbench": {
        "id": 11,
        "dataset_name": "IIIT5K",
        "question": "what is written?",
        "answers": ["HI"],
        "type": "Regular Text Recognition",
    },
    "docvqa": {"questionId": 99, "question": "Q?", "answers": ["a"]},
    "chartqa": {"type": "human_test", "question": "Q?", "answer": "3"},
}


EXPECTED_IDS = {
    "textvqa": 7,
    "mme": "OCR/1.jpg#0",
    "mmbench_en": 5,
    "mmvet": "v1_3",
    "ocrbench": 0,
    "docvqa": 99,
    "chartqa": "human/0",
}


@pytest.mark.parametrize("task", list(ROWS))
def test_hub_loader(task, tmp_path, monkeypatch):
    row = dict(ROWS[task], image=_png((9, 99, 199)))
    ds = datasets.Dataset.from_list([row])
    ds = ds.cast_column("image", datasets.Image())
    calls = {}

    def fake_load_dataset(repo, name=None, split=None, **kw):
        calls.update(repo=repo, name=name, split=split)
        return ds

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    spec = TASKS[task]
    opts = dict(spec.options, image_cache=str(tmp_path / "img"))
    samples = spec.module.load_samples(spec.module.HUB_DEFAULT[0], "original", opts)
    assert calls["repo"] == spec.module.HUB_DEFAULT[0]
    assert calls["split"] == spec.module.HUB_DEFAULT[2]
    assert len(samples) == (2 if task == "mmbench_en" else 1)  # MMBench: one generated rotation of 2 options
    path = samples[0].load_image()
    with Image.open(path) as im:
        assert im.size == (20, 10)
    assert path.startswith(str(tmp_path / "img"))
    assert samples[0].question_id == EXPECTED_IDS[task]
    if task == "textvqa":
        assert "Reference OCR token: nikon" in samples[0].prompt
