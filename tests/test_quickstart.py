"""scripts/quickstart.py (the `make quickstart` job) runs end to end on a tiny budget: data → tokenizer → line-reader
model → one training stage → held-out tables (generated answers, the LLM alone, the CTC head, Chinese question) →
streamed answer → a model folder that loads in a fresh process; before all that, the built-in reader reads the
bundled sample lines."""

import json
import subprocess
import sys
from pathlib import Path

import pytest


REPO = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_quickstart_end_to_end_on_a_tiny_budget(tmp_path):
    out = tmp_path / "qs"
    command = [
        sys.executable,
        str(REPO / "scripts" / "quickstart.py"),
        "--output",
        str(out),
        "--steps",
        "4",
        "--num-samples",
        "240",
        "--eval-samples",
        "9",
        "--batch-size",
        "4",
        "--threads",
        "1",
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Held-out lines, question" in result.stdout and "answer (streamed):" in result.stdout
    assert "CTC head CER" in result.stdout and "LLM alone CER" in result.stdout
    # the main job first: the built-in reader reads every bundled sample line
    assert "The built-in reader (reader-mini) reads the sample lines" in result.stdout
    assert all(f"{image.name}" in result.stdout for image in (REPO / "examples" / "images").glob("*.png"))

    results = json.loads((out / "results.json").read_text())
    assert results["steps"] == 4
    for table in ("table", "llm_table", "ctc_table", "table_chinese_question"):
        assert set(results[table]) == {"en", "zh-Hans", "zh-Hant", "all"}
        for entry in results[table].values():
            assert entry["n"] > 0 and 0.0 <= entry["exact_match"] <= 1.0 and entry["cer"] >= 0.0
    predictions = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert len(predictions) == results["table"]["all"]["n"]

    # the data really is the quickstart's: English <= 40 characters, Chinese <= 12 from the 300 most frequent
    # characters, one question for every script
    meta = json.loads((out / "data" / "meta.json").read_text())
    assert (meta["config"]["max_chars"], meta["config"]["max_chars_cjk"], meta["config"]["cjk_characters"]) == (
        40,
        12,
        300,
    )
    assert meta["config"]["prompts"] == "blind"

    # the trained folder is complete and loads with trust_remote_code in a fresh process
    check = (
        "import sys; from transformers import AutoModelForImageTextToText, AutoProcessor; "
        "m = AutoModelForImageTextToText.from_pretrained(sys.argv[1], trust_remote_code=True); "
        "AutoProcessor.from_pretrained(sys.argv[1], trust_remote_code=True); "
        "assert m.ctc_head is not None and m.config.high_res_line_height == 32; "
        "print(type(m).__module__)"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", check, results["model_dir"]], capture_output=True, text=True, timeout=300, cwd=tmp_path
    )
    assert loaded.returncode == 0, loaded.stderr[-3000:]
    assert loaded.stdout.strip().startswith("transformers_modules")


@pytest.mark.slow
def test_quickstart_continues_the_shipped_reader(tmp_path):
    """`--init-from models/reader-mini` trains on from the shipped weights and tokenizer: after two tiny steps the model
    still reads held-out lines (a random start would not: CER near 100 %)."""
    out = tmp_path / "qs"
    command = [
        sys.executable,
        str(REPO / "scripts" / "quickstart.py"),
        *("--output", str(out), "--init-from", str(REPO / "models" / "reader-mini"), "--steps", "2"),
        *("--num-samples", "90", "--eval-samples", "9", "--batch-size", "4", "--threads", "1"),
        *("--cjk-characters", "3500", "--fonts", "seen", "--seed", "1"),
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "[model] continuing" in result.stdout
    results = json.loads((out / "results.json").read_text())
    shipped_vocabulary = json.loads((REPO / "models" / "reader-mini" / "config.json").read_text())["text_config"]
    assert results["settings"]["vocab_size_actual"] <= shipped_vocabulary["vocab_size"]
    assert results["table"]["all"]["cer"] < 0.8, results["table"]
