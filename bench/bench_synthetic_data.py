#!/usr/bin/env python
"""Benchmark the synthetic OCR data generator (images per second), and optionally check legibility with tesseract.

    python bench/bench_synthetic_data.py                      # 600 single-line images, 2 workers, each augment level
    python bench/bench_synthetic_data.py --num-samples 2000 --workers 2 --tasks line
    python bench/bench_synthetic_data.py --tesseract 60       # also OCR 60 clean lines with tesseract (if installed)

Start-up (word lists, font coverage) is timed separately from the steady-state rate. Results are printed and written
as JSON to bench/results/synthetic_data.json.
"""

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time

from ocr_mllm.data import synthetic
from ocr_mllm.data.synthetic import GeneratorConfig, generate_dataset
from ocr_mllm.text_metrics import levenshtein


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


TESS_LANG = {"en": "eng", "zh-Hans": "chi_sim", "zh-Hant": "chi_tra"}


def _cer(ref: str, hyp: str) -> float:
    ref, hyp = ref.replace(" ", ""), hyp.replace(" ", "")
    return levenshtein(ref, hyp) / max(1, len(ref))


def tesseract_check(out_dir: str, n: int) -> dict:
    exe = shutil.which("tesseract")
    if exe is None:
        return {
            "skipped": "tesseract binary not installed (apt-get install tesseract-ocr tesseract-ocr-chi-sim tesseract-ocr-chi-tra)"
        }
    with open(os.path.join(out_dir, "train.json"), encoding="utf-8") as f:
        records = json.load(f)[:n]
    per_lang = {}
    for r in records:
        res = subprocess.run(
            [exe, os.path.join(out_dir, r["image"]), "-", "-l", TESS_LANG[r["language"]], "--psm", "7"],
            capture_output=True,
            text=True,
            check=False,
        )
        hyp = res.stdout.strip()
        d = per_lang.setdefault(r["language"], {"n": 0, "cer_sum": 0.0, "exact": 0})
        d["n"] += 1
        d["cer_sum"] += _cer(r["text"], hyp)
        d["exact"] += int(hyp.replace(" ", "") == r["text"].replace(" ", ""))
    return {
        lang: {"n": d["n"], "mean_cer": round(d["cer_sum"] / d["n"], 4), "exact_rate": round(d["exact"] / d["n"], 3)}
        for lang, d in per_lang.items()
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--num-samples", type=int, default=600)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--tasks", default="line")
    p.add_argument("--languages", default="en,zh-Hans,zh-Hant")
    p.add_argument("--augment", default="none,light,full", help="comma-separated augment levels to time")
    p.add_argument("--max-chars", type=int, default=40)
    p.add_argument("--image-size", type=int, default=512)
    p.add_argument("--tesseract", type=int, default=0, help="OCR this many clean (augment none) lines with tesseract")
    p.add_argument("--output", default=os.path.join(ROOT, "bench", "results", "synthetic_data.json"))
    args = p.parse_args()

    languages = tuple(args.languages.split(","))
    tasks = tuple(args.tasks.split(","))
    t0 = time.perf_counter()
    synthetic.check_fonts(languages)
    for lang in languages:  # word lists + font coverage, cached for the timed runs (workers fork after this)
        synthetic._text_source(lang, "train")
        synthetic._text_source(lang, "heldout")
    startup = time.perf_counter() - t0

    results = {
        "benchmark": "synthetic_data",
        "machine": {"cpu_count": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "settings": {
            "num_samples": args.num_samples,
            "workers": args.workers,
            "tasks": tasks,
            "languages": languages,
            "max_chars": args.max_chars,
            "image_size": args.image_size,
        },
        "startup_seconds": round(startup, 3),
        "runs": [],
    }
    print(f"start-up (word lists, font coverage): {startup:.2f} s")
    tmp_root = tempfile.mkdtemp(prefix="bench_synth_")
    try:
        for level in args.augment.split(","):
            cfg = GeneratorConfig(
                num_samples=args.num_samples,
                languages=languages,
                tasks=tasks,
                seed=0,
                heldout_fraction=0.0,
                max_chars=args.max_chars,
                image_size=args.image_size,
                augment=level,
            )
            out = os.path.join(tmp_root, level)
            t = time.perf_counter()
            summary = generate_dataset(out, cfg, workers=args.workers, progress=False, write_hf=False)
            wall = time.perf_counter() - t
            t = time.perf_counter()
            synthetic.write_hf_dataset(out, level)
            hf_s = time.perf_counter() - t
            size = sum(
                os.path.getsize(os.path.join(out, "images", f)) for f in os.listdir(os.path.join(out, "images"))
            )
            run = {
                "augment": level,
                "images_per_second": round(summary["images_per_second"], 1),
                "render_seconds": round(summary["seconds"], 2),
                "wall_seconds_without_hf": round(wall, 2),
                "hf_dataset_seconds": round(hf_s, 2),
                "mean_png_kib": round(size / args.num_samples / 1024, 1),
            }
            if args.tesseract and level == "none":
                run["tesseract"] = tesseract_check(out, args.tesseract)
            results["runs"].append(run)
            print(json.dumps(run, ensure_ascii=False))
    finally:
        shutil.rmtree(tmp_root, ignore_errors=True)
    os.makedirs(os.path.dirname(args.output), exist_ok=True)
    with open(args.output, "w", encoding="utf-8") as f:
        json.dump(results, f, indent=1, ensure_ascii=False)
        f.write("\n")
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
