"""infer.py: batched == unbatched, resume after --limit and after a kill, bad records skipped, image folders."""

import json
import signal
import subprocess
import sys
import time

import pytest
from PIL import Image, ImageDraw

import infer  # noqa: E402
from ocr_mllm.inference._testing import REPO_ROOT, single_thread, subprocess_env


N = 50
COMMON = ["--max-new-tokens", "12", "--no-progress", "--device", "cpu"]


@pytest.fixture(scope="module", autouse=True)
def _single_thread():
    with single_thread():
        yield


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("infer_data")
    (root / "imgs").mkdir()
    lines = []
    for i in range(N):
        rec = {"id": f"item-{i:02d}", "question": "Read the text." + " Be exact." * (i % 5), "source": "synthetic"}
        if i % 10 != 7:  # a few text-only questions mixed in
            img = Image.new("RGB", (80 + 37 * (i % 6), 30 + 11 * (i % 4)), "white")
            ImageDraw.Draw(img).text((4, 4), f"No. {i} total {i * 3}", fill="black")
            img.save(root / "imgs" / f"{i}.png")
            rec["image"] = f"imgs/{i}.png"  # relative to the JSONL's folder
        lines.append(json.dumps(rec))
    (root / "data.jsonl").write_text("\n".join(lines) + "\n")
    return root


def _run(argv, capsys):
    assert infer.main(argv) == 0
    out = capsys.readouterr().out
    return json.loads(out.strip().splitlines()[-1])["stats"]


def _read(path):
    return [json.loads(line) for line in open(path, encoding="utf-8")]


@pytest.fixture(scope="module")
def reference(tiny_model_dir, dataset, tmp_path_factory):
    """Batch-size-1 predictions (the reference every other run must reproduce)."""
    out = tmp_path_factory.mktemp("ref") / "b1.jsonl"
    assert (
        infer.main(
            [
                "--model",
                str(tiny_model_dir),
                "--input",
                str(dataset / "data.jsonl"),
                "--output",
                str(out),
                "--batch-size",
                "1",
                *COMMON,
            ]
        )
        == 0
    )
    rows = _read(out)
    assert len(rows) == N
    return {r["id"]: r for r in rows}


def test_batch8_equals_batch1(tiny_model_dir, dataset, reference, tmp_path, capsys):
    out = tmp_path / "b8.jsonl"
    stats = _run(
        [
            "--model",
            str(tiny_model_dir),
            "--input",
            str(dataset / "data.jsonl"),
            "--output",
            str(out),
            "--batch-size",
            "8",
            *COMMON,
        ],
        capsys,
    )
    assert stats["done"] == N and stats["failed"] == 0
    rows = _read(out)
    assert sorted(r["id"] for r in rows) == sorted(reference)
    for r in rows:
        ref = reference[r["id"]]
        assert r["prediction"] == ref["prediction"], r["id"]
        assert r["question"] == ref["question"] and r["source"] == "synthetic"
        assert r.get("image") == ref.get("image") and not any(k.startswith("_") for k in r)
    assert sum(1 for r in rows if r["prediction"]) > N // 2


def test_resume_after_limit(tiny_model_dir, dataset, reference, tmp_path, capsys):
    out = tmp_path / "preds.jsonl"
    base = [
        "--model",
        str(tiny_model_dir),
        "--input",
        str(dataset / "data.jsonl"),
        "--output",
        str(out),
        "--batch-size",
        "8",
        *COMMON,
    ]
    first = _run(base + ["--limit", "20"], capsys)
    assert first["done"] == 20
    before = out.read_bytes()
    second = _run(base, capsys)
    assert second["skipped_existing"] == 20 and second["done"] == N - 20
    assert out.read_bytes().startswith(before)  # earlier lines untouched, not recomputed
    rows = _read(out)
    assert len(rows) == N and {r["id"]: r["prediction"] for r in rows} == {
        k: v["prediction"] for k, v in reference.items()
    }
    third = _run(base, capsys)
    assert third["done"] == 0 and third["skipped_existing"] == N


def test_resume_after_kill(tiny_model_dir, dataset, reference, tmp_path, capsys):
    out = tmp_path / "killed.jsonl"
    argv = [
        sys.executable,
        "infer.py",
        "--model",
        str(tiny_model_dir),
        "--input",
        str(dataset / "data.jsonl"),
        "--output",
        str(out),
        "--batch-size",
        "1",
        *COMMON,
    ]
    proc = subprocess.Popen(
        argv, cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=subprocess_env()
    )
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if out.exists() and out.read_text().count("\n") >= 3:
            break
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    with open(out, "a") as f:  # what a kill in the middle of a write leaves behind
        f.write('{"id": "item-49", "pred')
    complete = out.read_text().count("\n")
    assert complete >= 3
    stats = _run(
        [
            "--model",
            str(tiny_model_dir),
            "--input",
            str(dataset / "data.jsonl"),
            "--output",
            str(out),
            "--batch-size",
            "8",
            *COMMON,
        ],
        capsys,
    )
    assert stats["skipped_existing"] == complete and stats["done"] == N - complete
    rows = _read(out)
    assert len(rows) == N
    assert {r["id"]: r["prediction"] for r in rows} == {k: v["prediction"] for k, v in reference.items()}


def test_bad_records_are_counted_and_skipped(tiny_model_dir, tmp_path, capsys):
    Image.new("RGB", (64, 32), "white").save(tmp_path / "ok.png")
    (tmp_path / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    lines = [
        json.dumps({"id": 1, "image": "ok.png", "question": "Read it."}),
        "{not json",
        json.dumps({"id": 2, "image": "missing.png", "question": "Read it."}),
        json.dumps({"id": 3, "image": "corrupt.png"}),  # no question: the default OCR question
        json.dumps({"id": 4, "image": str(tmp_path / "ok.png")}),  # absolute path
        json.dumps({"image": "ok.png"}),  # no id
    ]
    (tmp_path / "in.jsonl").write_text("\n".join(lines) + "\n")
    out = tmp_path / "out.jsonl"
    stats = _run(
        [
            "--model",
            str(tiny_model_dir),
            "--input",
            str(tmp_path / "in.jsonl"),
            "--output",
            str(out),
            "--batch-size",
            "4",
            *COMMON,
        ],
        capsys,
    )
    assert stats["done"] == 2 and stats["bad_lines"] == 1 and stats["failed"] == 4
    rows = {r["id"]: r for r in _read(out)}
    assert set(rows) == {1, 4}
    assert rows[4]["question"] == infer.DEFAULT_OCR_QUESTION


def test_image_folder_input(tiny_model_dir, tmp_path, capsys):
    folder = tmp_path / "scans"
    folder.mkdir()
    for name in ("b.png", "a.jpg", "c.webp"):
        Image.new("RGB", (50, 30), "white").save(folder / name)
    (folder / "notes.txt").write_text("not an image")
    out = tmp_path / "out.jsonl"
    stats = _run(
        [
            "--model",
            str(tiny_model_dir),
            "--input",
            str(folder),
            "--output",
            str(out),
            "--query",
            "OCR this.",
            *COMMON,
        ],
        capsys,
    )
    assert stats["done"] == 3 and stats["failed"] == 0
    rows = _read(out)
    assert sorted(r["id"] for r in rows) == ["a.jpg", "b.png", "c.webp"]
    assert all(r["question"] == "OCR this." for r in rows)


def test_batched_file_answers_follow_their_images(reading_model, tmp_path, capsys):
    """On a model that reads (tests/_reading_model.py) every batched prediction is the word its own image shows:
    a batch that mixed up images between rows would fail here, which the random tiny model cannot show."""
    from tests._reading_model import QUESTION

    folder, images, words = reading_model
    order = [3, 0, 6, 1, 7, 2, 5, 4, 0, 6]  # repeats and a batch of 8 plus a remainder of 2
    records = [{"id": f"w{i}", "image": str(images[k]), "question": QUESTION} for i, k in enumerate(order)]
    data = tmp_path / "words.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in records))
    for batch_size in ("8", "1"):
        out = tmp_path / f"b{batch_size}.jsonl"
        stats = _run(
            ["--model", str(folder), "--input", str(data), "--output", str(out), "--batch-size", batch_size, *COMMON],
            capsys,
        )
        assert stats["done"] == len(records)
        got = {r["id"]: r["prediction"] for r in _read(out)}
        assert [got[f"w{i}"] for i in range(len(order))] == [words[k] for k in order]
