"""Smoke tests of the benchmarks (bench/): every script runs with tiny sizes and writes its JSON and PNG, the summary
renders, and the image processor's fast path keeps the old outputs (exactly with the PIL backend)."""

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from bench import image_processing, model_speed, ocr_quality, run_all


@pytest.fixture(scope="module")
def results_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("bench_results")


@pytest.fixture(scope="module")
def image_payload(results_dir):
    return image_processing.main(["--quick", "--output-dir", str(results_dir), "--inputs", "a4_scan", "strip"])


def test_image_processing_quick(results_dir, image_payload):
    assert (results_dir / "image_processing.json").exists() and (
        results_dir / "image_processing.png"
    ).stat().st_size > 0
    for name in ("a4_scan", "strip"):
        entry = image_payload["results"][name]
        for case in ("ours", "ours_pad", "ours_tiled", "deepseek", "got", "got_tiled", "before"):
            assert entry["cases"][case]["images_per_second"] > 0
        assert entry["speedups"]["both_views_vs_deepseek"] > 0
        checks = image_payload["output_checks"][name]
        for mode in ("stretch", "pad_to_square", "tiled"):  # the fast path: at most ±2 grey levels from before
            for view in ("low_view", "high_res_views"):
                assert checks[mode][view]["max_grey_levels"] <= 2.0, (name, mode, view, checks[mode][view])
                assert checks[mode][view]["psnr_db"] >= 55
        assert checks["ours_vs_got_1024_view"]["max_grey_levels"] <= 2.0  # equal output to the peer


@pytest.mark.parametrize("kwargs", [{}, {"pad_to_square": True}, {"do_tiling": True, "max_tiles": 4}])
def test_pil_backend_reproduces_the_processor_before_exactly(kwargs):
    from processing_ocr_mllm import OcrMllmImageProcessor

    rng = np.random.default_rng(0)
    images = [
        Image.fromarray(rng.integers(0, 256, (37, 301, 3), dtype=np.uint8)),  # landscape
        Image.fromarray(rng.integers(0, 256, (120, 70, 3), dtype=np.uint8)),  # portrait up to 4:1 (canvas path)
        Image.fromarray(rng.integers(0, 256, (19, 2003, 3), dtype=np.uint8)),  # long strip (band path)
        Image.new("RGB", (1, 1), (9, 99, 199)),
    ]
    processor = OcrMllmImageProcessor(size=28, high_res_size=64, resize_backend="pil", **kwargs)
    before = image_processing.before_processor(
        processor, pad_to_square=kwargs.get("pad_to_square", False), do_tiling=kwargs.get("do_tiling", False)
    )
    for image in images:
        new, old = processor(image), before(image)
        np.testing.assert_array_equal(new["pixel_values"], old["pixel_values"].numpy())
        np.testing.assert_array_equal(new["high_res_pixel_values"], old["high_res_pixel_values"].numpy())


def test_model_speed_quick(results_dir):
    payload = model_speed.main(
        ["--quick", "--output-dir", str(results_dir), "--dtypes", "fp32", "--threads", "1", "--bandwidth-mib", "16"]
    )
    assert (results_dir / "model_speed.png").stat().st_size > 0
    run = payload["runs"][0]
    for name in ("ours", "deepseek"):
        assert run["models"][name]["prefill_seconds"] > 0 and run["models"][name]["decode_tokens_per_second"] > 0
        assert run["models"][name]["roofline_fraction"] > 0
    assert payload["memory_bandwidth"]["read_gb_per_s_median"] > 0
    # the same text model in both
    assert payload["settings"]["llm_parameters"]["ours"] == payload["settings"]["llm_parameters"]["deepseek"]


def test_ocr_quality_quick(results_dir, tiny_model_dir):
    engines = ["reader-mini"] + (["tesseract"] if shutil.which("tesseract") else [])
    payload = ocr_quality.main(
        [
            "--quick",
            "--output-dir",
            str(results_dir),
            "--threads",
            "1",
            "--model",
            f"reader-mini={tiny_model_dir}",
            "--engines",
            *engines,
        ]
    )
    assert (results_dir / "ocr_quality.png").stat().st_size > 0
    assert (results_dir / "ocr_heldout" / "seen" / "heldout.json").exists()  # generated lines, cached with the results
    ours = payload["results_by_fonts"]["reader-mini"]  # a tiny random model: the path runs, quality is not the point
    assert [ours[group]["all"]["n"] for group in ("seen", "unseen", "all")] == [3, 3, 6]
    assert set(ours["all"]) == {"en", "zh-Hans", "zh-Hant", "all"} and ours["all"]["all"]["seconds_per_line_mean"] > 0
    assert payload["results"]["reader-mini"] == ours["all"]  # the shape bench/run_all.py's summary reads
    if "tesseract" in payload["results"]:
        assert payload["results"]["tesseract"]["all"]["cer"] < 0.5  # lightly augmented lines
        assert payload["targets"]["measured"] and set(payload["targets"]["languages"]) == {"en", "zh-Hans", "zh-Hant"}


def test_ocr_quality_targets_and_models(tmp_path):
    def cell(cer):
        return {"n": 1, "failed": 0, "cer": cer, "exact_match": 0.0, "seconds_per_line_mean": 0.1}

    def tables(en, zh, seconds):
        table = {"en": cell(en), "zh-Hans": cell(zh), "zh-Hant": cell(zh), "all": cell(zh)}
        table["all"]["seconds_per_line_mean"] = seconds
        return {"seen": table, "unseen": table, "all": table}

    by_fonts = {"reader-mini": tables(0.015, 0.05, 0.2), "tesseract": tables(0.01, 0.05, 0.3)}
    targets = ocr_quality.check_targets(by_fonts)
    assert targets["languages"]["en"]["met"]  # 0.5 point above: within 1 point
    assert not targets["languages"]["zh-Hans"]["met"]  # equal is not below
    assert targets["speed"]["met"] and targets["speed"]["ours_speedup"] == 1.5
    lines = ocr_quality.target_lines(targets)
    assert len(lines) == 4 and "0.5 points above" in lines[0] and "NOT MET" in lines[1]
    assert "| reader-mini | zh-Hant | 1 | 5.0% | 5.0% | 5.0% |" in ocr_quality.markdown_table(by_fonts)
    assert not ocr_quality.check_targets({"tesseract": by_fonts["tesseract"]})["measured"]

    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "config.json").write_text("{}")
    models = ocr_quality.parse_models([f"reader-mini={tmp_path / 'mine'}", str(tmp_path / "mine"), "x=/nonexistent"])
    assert models["reader-mini"][0] == models["mine"][0] == tmp_path / "mine" and models["x"][0] is None
    with pytest.raises(SystemExit, match="NAME=DIR"):
        ocr_quality.parse_models(["tesseract=/somewhere"])


def test_edit_distance_and_normalisation():
    assert ocr_quality.edit_distance("kitten", "sitting") == 3
    assert ocr_quality.normalize("今 天 天气，好 ok  go") == "今天天气,好ok go"


def test_summary_and_docs_block(results_dir, image_payload, tmp_path):
    steps = [
        {"name": "image_processing", "status": "ok", "seconds": 1.0, "peak_rss_mib": 100.0},
        {"name": "train_throughput", "status": "missing", "message": "bench/train_throughput.py not found"},
    ]
    from bench.common import machine_info

    markdown = run_all.summary_markdown(results_dir, steps, machine_info(), "now", 0.0)
    assert "### Image processing" in markdown and "### Model speed" in markdown and "### OCR quality" in markdown
    assert "train_throughput.py not found" in markdown
    docs = tmp_path / "bench.md"
    docs.write_text("# Benchmarks\n\nhand-written notes\n", encoding="utf-8")
    run_all.update_docs(markdown, docs)
    run_all.update_docs(markdown, docs)  # idempotent: one generated block, notes kept
    text = docs.read_text(encoding="utf-8")
    assert text.count(run_all.BEGIN) == 1 and "hand-written notes" in text and "### Image processing" in text


def test_run_all_runs_steps_as_processes(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.run_all",
            "--quick",
            "--only",
            "image_processing",
            "--output-dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=run_all.REPO,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert [(step["name"], step["status"]) for step in summary["steps"]] == [("image_processing", "ok")]
    assert summary["steps"][0]["peak_rss_mib"] > 0
    assert (tmp_path / "image_processing.png").exists() and (tmp_path / "summary.md").exists()


def test_run_all_tolerates_a_missing_peer_script(monkeypatch, tmp_path):
    monkeypatch.setitem(run_all.PEERS, "train_throughput", ("bench/does_not_exist.py", "training throughput"))
    args = run_all.argparse.Namespace(only=["train_throughput"], skip=[], quick=True, device="cpu")
    steps = run_all.build_steps(args, tmp_path)
    assert steps == [
        {"name": "train_throughput", "missing": "bench/does_not_exist.py not found (training throughput); skipped"}
    ]
    assert run_all.run_step(steps[0], tmp_path, 10)["status"] == "missing"
