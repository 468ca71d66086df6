"""scripts/quickstart.py (the `make quickstart` job) runs end to end on a tiny budget: data → tokenizer → model →
stage 1 → stage 2 → held-out table → streamed answer → a model folder that loads in a fresh process."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_quickstart_end_to_end_on_a_tiny_budget(tmp_path):
    out = tmp_path / "qs"
    command = [sys.executable, str(REPO / "scripts" / "quickstart.py"), "--output", str(out), "--steps", "4",
               "--pretrain-steps", "2", "--num-samples", "240", "--eval-samples", "9", "--batch-size", "4",
               "--threads", "1"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Held-out reading (greedy):" in result.stdout and "answer (streamed):" in result.stdout

    results = json.loads((out / "results.json").read_text())
    assert (results["steps"]["stage1"], results["steps"]["stage2"]) == (2, 4)
    assert set(results["table"]) == {"en", "zh-Hans", "zh-Hant", "all"}
    for entry in results["table"].values():
        assert entry["n"] > 0 and 0.0 <= entry["exact_match"] <= 1.0 and entry["cer"] >= 0.0
    predictions = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert len(predictions) == results["table"]["all"]["n"]

    # the data really is the quickstart's: lines of <= 8 characters, Chinese from the 300 most frequent characters
    meta = json.loads((out / "data" / "meta.json").read_text())
    assert meta["config"]["max_chars"] == 8 and meta["config"]["cjk_characters"] == 300

    # the trained folder is complete and loads with trust_remote_code in a fresh process
    check = (
        "import sys; from transformers import AutoModelForImageTextToText, AutoProcessor; "
        "m = AutoModelForImageTextToText.from_pretrained(sys.argv[1], trust_remote_code=True); "
        "AutoProcessor.from_pretrained(sys.argv[1], trust_remote_code=True); "
        "assert m.config.standardize_image_features and m.model.image_feature_norm.num_batches_tracked.item() > 0; "
        "print(type(m).__module__)"
    )
    loaded = subprocess.run([sys.executable, "-c", check, results["model_dir"]], capture_output=True, text=True,
                            timeout=300, cwd=tmp_path)
    assert loaded.returncode == 0, loaded.stderr[-3000:]
    assert loaded.stdout.strip().startswith("transformers_modules")
