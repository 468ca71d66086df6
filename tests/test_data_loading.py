"""Tests for ocr_mllm/data/loading.py: LLaVA JSON / JSONL / save_to_disk / generator folders → TRL messages+images."""

import json
import logging
import os

import numpy as np
import pytest
from PIL import Image

from ocr_mllm.data import loading as L
from ocr_mllm.data.loading import load_training_dataset


def _png(path, colour=(200, 30, 30), size=(24, 16)):
    Image.new("RGB", size, colour).save(path)
    return path


@pytest.fixture()
def data_dir(tmp_path):
    img_dir = tmp_path / "imgs"
    img_dir.mkdir()
    _png(img_dir / "a.png")
    _png(img_dir / "b.png", (10, 200, 10))
    (img_dir / "corrupt.png").write_bytes(b"this is not an image")
    good = img_dir / "a.png"
    (img_dir / "truncated.png").write_bytes(good.read_bytes()[:40])
    return tmp_path


GOOD = [
    {
        "id": "single",
        "image": "imgs/a.png",
        "conversations": [
            {"from": "human", "value": "<image>\nRead all the text in the image."},
            {"from": "gpt", "value": "HELLO"},
        ],
    },
    {
        "id": "llava_suffix_multiturn",
        "image": "imgs/b.png",
        "conversations": [
            {"from": "human", "value": "Examine the image closely and share its details<image>\n"},
            {"from": "gpt", "value": "A green square."},
            {"from": "human", "value": "What colour is it?"},
            {"from": "gpt", "value": "Green."},
        ],
    },
    {
        "id": "text_only_with_system",
        "conversations": [
            {"from": "system", "value": "You are terse."},
            {"from": "human", "value": "Say hi."},
            {"from": "gpt", "value": "hi"},
        ],
    },
    {
        "id": "two_images",
        "image": ["imgs/a.png", "imgs/b.png"],
        "conversations": [
            {"from": "human", "value": "<image>\n<image>\nCompare them."},
            {"from": "gpt", "value": "Red vs green."},
        ],
    },
]

EXPECTED_MESSAGES = {
    "single": [
        {
            "role": "user",
            "content": [{"type": "image", "text": None}, {"type": "text", "text": "Read all the text in the image."}],
        },
        {"role": "assistant", "content": [{"type": "text", "text": "HELLO"}]},
    ],
    "llava_suffix_multiturn": [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "Examine the image closely and share its details"},
                {"type": "image", "text": None},
            ],
        },
        {"role": "assistant", "content": [{"type": "text", "text": "A green square."}]},
        {"role": "user", "content": [{"type": "text", "text": "What colour is it?"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "Green."}]},
    ],
    "text_only_with_system": [
        {"role": "system", "content": [{"type": "text", "text": "You are terse."}]},
        {"role": "user", "content": [{"type": "text", "text": "Say hi."}]},
        {"role": "assistant", "content": [{"type": "text", "text": "hi"}]},
    ],
    "two_images": [
        {
            "role": "user",
            "content": [
                {"type": "image", "text": None},
                {"type": "image", "text": None},
                {"type": "text", "text": "Compare them."},
            ],
        },
        {"role": "assistant", "content": [{"type": "text", "text": "Red vs green."}]},
    ],
}

# (record, expected reason)
BAD = [
    ({"id": "no_file", "image": "imgs/missing.png", "conversations": GOOD[0]["conversations"]}, L.MISSING_IMAGE),
    ({"id": "corrupt", "image": "imgs/corrupt.png", "conversations": GOOD[0]["conversations"]}, L.CORRUPT_IMAGE),
    ({"id": "truncated", "image": "imgs/truncated.png", "conversations": GOOD[0]["conversations"]}, L.CORRUPT_IMAGE),
    (
        {
            "id": "two_tokens_one_image",
            "image": "imgs/a.png",
            "conversations": [{"from": "human", "value": "<image>\n<image>\nRead."}, {"from": "gpt", "value": "x"}],
        },
        L.IMAGE_COUNT_MISMATCH,
    ),
    (
        {
            "id": "image_no_token",
            "image": "imgs/a.png",
            "conversations": [{"from": "human", "value": "Read."}, {"from": "gpt", "value": "x"}],
        },
        L.IMAGE_COUNT_MISMATCH,
    ),
    (
        {
            "id": "token_no_image",
            "conversations": [{"from": "human", "value": "<image>\nRead."}, {"from": "gpt", "value": "x"}],
        },
        L.IMAGE_COUNT_MISMATCH,
    ),
    (
        {
            "id": "token_in_answer",
            "image": "imgs/a.png",
            "conversations": [{"from": "human", "value": "<image>\nRead."}, {"from": "gpt", "value": "<image>"}],
        },
        L.IMAGE_COUNT_MISMATCH,
    ),
    (
        {
            "id": "empty_answer",
            "image": "imgs/a.png",
            "conversations": [{"from": "human", "value": "<image>\nRead."}, {"from": "gpt", "value": "   "}],
        },
        L.EMPTY_TURN,
    ),
    (
        {
            "id": "gpt_first",
            "image": "imgs/a.png",
            "conversations": [{"from": "gpt", "value": "x"}, {"from": "human", "value": "<image>\nRead."}],
        },
        L.WRONG_ROLE_ORDER,
    ),
    (
        {
            "id": "two_humans",
            "image": "imgs/a.png",
            "conversations": [
                {"from": "human", "value": "<image>\nRead."},
                {"from": "human", "value": "Now!"},
                {"from": "gpt", "value": "x"},
            ],
        },
        L.WRONG_ROLE_ORDER,
    ),
    (
        {
            "id": "ends_with_human",
            "image": "imgs/a.png",
            "conversations": [
                {"from": "human", "value": "<image>\nRead."},
                {"from": "gpt", "value": "x"},
                {"from": "human", "value": "More?"},
            ],
        },
        L.WRONG_ROLE_ORDER,
    ),
    (
        {
            "id": "late_system",
            "image": "imgs/a.png",
            "conversations": [
                {"from": "human", "value": "<image>\nRead."},
                {"from": "system", "value": "Be nice."},
                {"from": "gpt", "value": "x"},
            ],
        },
        L.WRONG_ROLE_ORDER,
    ),
    (
        {
            "id": "alien",
            "image": "imgs/a.png",
            "conversations": [{"from": "alien", "value": "<image>\nRead."}, {"from": "gpt", "value": "x"}],
        },
        L.UNKNOWN_ROLE,
    ),
    ({"id": "no_conversations", "image": "imgs/a.png"}, L.MALFORMED_RECORD),
    ({"id": "bad_image_field", "image": 42, "conversations": GOOD[0]["conversations"]}, L.MALFORMED_RECORD),
]


def _write(path, obj):
    path.write_text(json.dumps(obj, ensure_ascii=False), encoding="utf-8")
    return str(path)


def _by_id(ds, records):
    # rows come back in input order
    return dict(zip([r["id"] for r in records], ds))


def test_good_records_convert_exactly(data_dir):
    src = _write(data_dir / "data.json", GOOD)
    ds, report = load_training_dataset(src, return_report=True)
    assert ds.column_names == ["messages", "images"]
    assert report.num_records == report.num_loaded == len(GOOD) and report.num_skipped == 0
    rows = _by_id(ds, GOOD)
    for rid, expected in EXPECTED_MESSAGES.items():
        assert rows[rid]["messages"] == expected, rid
    assert rows["text_only_with_system"]["images"] == []
    assert [im.size for im in rows["two_images"]["images"]] == [(24, 16), (24, 16)]
    red = np.asarray(rows["single"]["images"][0].convert("RGB"))
    assert tuple(red[0, 0]) == (200, 30, 30)


def test_each_bad_record_is_reported_with_its_reason(data_dir, caplog):
    records = GOOD + [r for r, _ in BAD] + ["not json {", 7]
    src = _write(data_dir / "mixed.json", records)
    with caplog.at_level(logging.WARNING, logger="ocr_mllm.data.loading"):
        ds, report = load_training_dataset(src, return_report=True)
    assert len(ds) == len(GOOD)
    assert report.num_records == len(records)
    got = {p.record_id: p.reason for p in report.problems}
    for record, reason in BAD:
        assert got.get(record["id"]) == reason, (record["id"], got.get(record["id"]), reason)
    assert got[f"#{len(GOOD) + len(BAD)}"] == L.BAD_JSON  # a record stored as an invalid JSON string
    assert got[f"#{len(GOOD) + len(BAD) + 1}"] == L.MALFORMED_RECORD  # a number instead of an object
    expected_counts = {}
    for _, reason in BAD:
        expected_counts[reason] = expected_counts.get(reason, 0) + 1
    expected_counts[L.BAD_JSON] = 1
    expected_counts[L.MALFORMED_RECORD] += 1
    assert dict(report.skipped) == expected_counts
    assert all(p.source == src for p in report.problems)
    # every skipped record is logged by id, and a summary names the counts
    for record, reason in BAD:
        assert any(record["id"] in m and reason in m for m in caplog.messages), record["id"]
    summary = report.summary()
    assert f"loaded {len(GOOD)} of {len(records)}" in summary
    assert all(f"{reason}={n}" in summary for reason, n in expected_counts.items())
    assert any(summary in m for m in caplog.messages)
    assert "missing.png" in next(p.detail for p in report.problems if p.record_id == "no_file")
    assert report.to_dict()["num_skipped"] == len(BAD) + 2


def test_strict_raises_on_first_bad_record(data_dir):
    for record, reason in BAD:
        src = _write(data_dir / "one_bad.json", GOOD[:1] + [record])
        with pytest.raises(ValueError) as e:
            load_training_dataset(src, strict=True)
        assert reason in str(e.value) and record["id"] in str(e.value) and "one_bad.json" in str(e.value)
        # non-strict: skipped, the rest loads
        assert len(load_training_dataset(src)) == 1


def test_whole_file_bad_json(data_dir):
    bad = data_dir / "broken.json"
    bad.write_text('[{"id": "x", "conversations": [}', encoding="utf-8")
    with pytest.raises(ValueError, match="bad_json") as e:
        load_training_dataset(str(bad))
    assert "broken.json" in str(e.value)
    with pytest.raises(ValueError, match="bad_json"):
        load_training_dataset(str(bad), strict=True)
    with pytest.raises(FileNotFoundError):
        load_training_dataset(str(data_dir / "nope.json"))


def test_jsonl_with_a_bad_line(data_dir):
    path = data_dir / "data.jsonl"
    lines = [json.dumps(r) for r in GOOD[:2]] + ["{not json"] + [json.dumps(GOOD[2])]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    ds, report = load_training_dataset(str(path), return_report=True)
    assert len(ds) == 3 and dict(report.skipped) == {L.BAD_JSON: 1}
    assert report.problems[0].record_id == "line 3"
    with pytest.raises(ValueError, match="line 3"):
        load_training_dataset(str(path), strict=True)


def test_image_folder_argument(data_dir, tmp_path_factory):
    other = tmp_path_factory.mktemp("elsewhere")
    src = _write(other / "data.json", GOOD[:1])
    with pytest.raises(ValueError, match="missing_image"):  # relative to the JSON's folder by default
        load_training_dataset(src)
    assert len(load_training_dataset(src, image_folder=str(data_dir))) == 1


def test_saved_hf_dataset_and_splits(data_dir):
    from datasets import Dataset, DatasetDict, Features, List, Value
    from datasets import Image as HFImage

    good_bytes = (data_dir / "imgs" / "a.png").read_bytes()
    features = Features(
        {
            "id": Value("string"),
            "messages": List({"role": Value("string"), "content": Value("string")}),
            "images": List(HFImage()),
        }
    )
    rows = {
        "id": ["ok", "mismatch", "corrupt", "text_only"],
        "messages": [
            [{"role": "user", "content": "<image>\nRead."}, {"role": "assistant", "content": "HELLO"}],
            [{"role": "user", "content": "Read."}, {"role": "assistant", "content": "x"}],
            [{"role": "user", "content": "<image>Read."}, {"role": "assistant", "content": "x"}],
            [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}],
        ],
        "images": [
            [{"bytes": good_bytes, "path": "a.png"}],
            [{"bytes": good_bytes, "path": "a.png"}],
            [{"bytes": b"garbage", "path": "bad.png"}],
            [],
        ],
    }
    ds = Dataset.from_dict(rows, features=features)
    path = str(data_dir / "saved")
    DatasetDict({"train": ds, "validation": ds.select([0])}).save_to_disk(path)
    out, report = load_training_dataset(path, return_report=True)
    assert len(out) == 2 and dict(report.skipped) == {L.IMAGE_COUNT_MISMATCH: 1, L.CORRUPT_IMAGE: 1}
    assert {p.record_id for p in report.problems} == {"mismatch", "corrupt"}
    assert out[0]["messages"] == [
        {"role": "user", "content": [{"type": "image", "text": None}, {"type": "text", "text": "Read."}]},
        {"role": "assistant", "content": [{"type": "text", "text": "HELLO"}]},
    ]
    assert out[0]["images"][0].size == (24, 16) and out[1]["images"] == []
    assert len(load_training_dataset(path, split="validation")) == 1
    with pytest.raises(ValueError, match="no split 'test'"):
        load_training_dataset(path, split="test")
    with pytest.raises(ValueError, match="record mismatch: image_count_mismatch"):  # the first bad record
        load_training_dataset(path, strict=True)
    # a single Dataset saved to disk (TRL form) round-trips unchanged
    single = str(data_dir / "single")
    out.save_to_disk(single)
    again = load_training_dataset(single)
    assert again[0]["messages"] == out[0]["messages"] and again.column_names == ["messages", "images"]


def test_generator_output_round_trips(tmp_path):
    from ocr_mllm.data.synthetic import GeneratorConfig, generate_dataset

    out = str(tmp_path / "synth")
    generate_dataset(
        out,
        GeneratorConfig(num_samples=8, seed=2, tasks=("line", "receipt"), heldout_fraction=0.25),
        workers=1,
        progress=False,
    )
    for split in ("train", "heldout"):
        records = json.load(open(os.path.join(out, f"{split}.json"), encoding="utf-8"))
        for source in (out, os.path.join(out, f"{split}.json"), os.path.join(out, "hf")):
            ds, report = load_training_dataset(source, split=split, return_report=True)
            assert report.num_skipped == 0 and len(ds) == len(records), source
            for r, row in zip(records, ds):
                msgs = row["messages"]
                assert [m["role"] for m in msgs] == ["user", "assistant"] * (len(r["conversations"]) // 2)
                assert msgs[0]["content"][0] == {"type": "image", "text": None}
                assert msgs[0]["content"][1]["text"] == r["conversations"][0]["value"][len("<image>\n") :]
                assert [m["content"][-1]["text"] for m in msgs[1::2]] == [t["value"] for t in r["conversations"][1::2]]
                with Image.open(os.path.join(out, r["image"])) as im:
                    assert np.array_equal(np.asarray(row["images"][0].convert("RGB")), np.asarray(im.convert("RGB")))


def test_text_to_blocks_placement():
    assert L.text_to_blocks("a<image>\nb") == [
        {"type": "text", "text": "a"},
        {"type": "image", "text": None},
        {"type": "text", "text": "b"},
    ]
    assert L.text_to_blocks("Describe\n<image>") == [
        {"type": "text", "text": "Describe"},
        {"type": "image", "text": None},
    ]
    assert L.text_to_blocks("<image>") == [{"type": "image", "text": None}]
    assert L.text_to_blocks("line1\nline2") == [{"type": "text", "text": "line1\nline2"}]


def test_unknown_source_is_an_error(tmp_path):
    (tmp_path / "junk.txt").write_text("hi")
    with pytest.raises(ValueError, match="not a LLaVA JSON file"):
        load_training_dataset(str(tmp_path))
