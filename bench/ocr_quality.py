#!/usr/bin/env python
"""OCR quality and speed on the held-out synthetic split: the quickstart model (out/quickstart/) against Tesseract 5
(eng / chi_sim / chi_tra, `--psm 7`: one text line) and RapidOCR (PP-OCR ONNX models shipped in the wheel), image by
image in the same loop. CER (character edit distance / reference length, summed over the language) and exact match
per language, seconds per image.

Text is compared after a light normalisation that every engine gets: Unicode NFKC (full-width ↔ ASCII punctuation),
whitespace collapsed, and no spaces next to CJK characters (Tesseract puts spaces between Chinese characters). The
unnormalised CER is reported too.

    python -m bench.ocr_quality                          # quickstart model + held-out split if present
    python -m bench.ocr_quality --model out/quickstart/stage2 --data out/quickstart/data --max-samples 90
    python -m bench.ocr_quality --quick                  # 6 generated lines (smoke test)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import tempfile
import time
import unicodedata
from collections import defaultdict
from pathlib import Path

from bench.common import (
    REPO,
    PeakRSS,
    add_common_arguments,
    check_device,
    choose_threads,
    figure,
    grouped_bars,
    log,
    machine_info,
    write_results,
)

LANGUAGES = ("en", "zh-Hans", "zh-Hant")
TESSERACT_LANGUAGES = {"en": "eng", "zh-Hans": "chi_sim", "zh-Hant": "chi_tra"}
QUICKSTART = REPO / "out" / "quickstart"


# --------------------------------------------------------------------------------------------------------------------
# metrics
# --------------------------------------------------------------------------------------------------------------------
def edit_distance(a: str, b: str) -> int:
    """Levenshtein distance (rapidfuzz's C implementation when installed, else ours)."""
    try:
        from rapidfuzz.distance import Levenshtein
    except ImportError:
        from ocr_mllm.text_metrics import levenshtein

        return levenshtein(a, b)
    return Levenshtein.distance(a, b)


def _is_cjk(char: str) -> bool:
    code = ord(char)
    return (0x3000 <= code <= 0x9FFF) or (0xF900 <= code <= 0xFAFF) or (0xFF00 <= code <= 0xFFEF) or (0x20000 <= code <= 0x2FA1F)


def normalize(text: str) -> str:
    text = " ".join(unicodedata.normalize("NFKC", text).split())
    out = []
    for index, char in enumerate(text):
        if char == " ":
            before = text[index - 1] if index else ""
            after = text[index + 1] if index + 1 < len(text) else ""
            if (before and _is_cjk(before)) or (after and _is_cjk(after)):
                continue
        out.append(char)
    return "".join(out)


def score(rows: list[dict]) -> dict:
    """Per language and overall: CER and exact match after `normalize` (and CER before it), seconds per image;
    rows without a prediction (failed images) are left out."""
    from ocr_mllm.text_metrics import reading_scores, rows_by_language

    table = {}
    for language, group in rows_by_language([r for r in rows if r.get("prediction") is not None], LANGUAGES).items():
        normalised = reading_scores(((normalize(r["prediction"]), normalize(r["reference"])) for r in group), edit_distance)
        raw = reading_scores(((r["prediction"], r["reference"]) for r in group), edit_distance)
        seconds = [r["seconds"] for r in group]
        table[language] = {
            "n": normalised["n"],
            "cer": round(normalised["cer"], 4),
            "exact_match": round(normalised["exact_match"], 4),
            "cer_unnormalised": round(raw["cer"], 4),
            "seconds_per_image_median": round(statistics.median(seconds), 4),
            "seconds_per_image_mean": round(statistics.mean(seconds), 4),
        }
    return table


# --------------------------------------------------------------------------------------------------------------------
# data and model discovery
# --------------------------------------------------------------------------------------------------------------------
def _rss_mib(pid="self", field: str = "VmRSS") -> float | None:
    try:
        with open(f"/proc/{pid}/status") as handle:
            for line in handle:
                if line.startswith(field + ":"):
                    return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return None


def find_model(explicit: str | None) -> tuple[Path | None, str]:
    if explicit:
        path = Path(explicit)
        return (path, "given") if (path / "config.json").exists() else (None, f"{path}: no config.json")
    results = QUICKSTART / "results.json"
    if results.exists():
        try:
            model_dir = Path(json.loads(results.read_text())["model_dir"])
            model_dir = model_dir if model_dir.is_absolute() else REPO / model_dir
            if (model_dir / "config.json").exists():
                return model_dir, f"from {results}"
        except (ValueError, KeyError):
            pass
    for candidate in (QUICKSTART / "stage2", QUICKSTART / "model", QUICKSTART):
        if (candidate / "config.json").exists():
            return candidate, "found under out/quickstart"
    return None, ("no quickstart model: run `make quickstart` (scripts/quickstart.py, 15 min on 2 cores) "
                  "before `make bench`, or pass --model DIR")


def find_data(explicit: str | None, quick: bool, samples: int) -> tuple[Path, str]:
    if explicit:
        return Path(explicit), "given"
    if quick:
        return _render_quick_lines(Path(tempfile.mkdtemp(prefix="ocr_bench_"))), "three lines rendered here (smoke test)"
    if (QUICKSTART / "data" / "heldout.json").exists():
        return QUICKSTART / "data", "the quickstart's held-out split (words never seen in its training)"
    # same generator settings as the quickstart (line task, en ≤ 40 / zh ≤ 12 characters, 300 Chinese characters,
    # light augmentation, one question for every script)
    from ocr_mllm.data import GeneratorConfig, generate_dataset

    out = REPO / "out" / "bench" / "ocr_heldout"
    total = max(6, 2 * samples)
    if not (out / "heldout.json").exists():
        config = GeneratorConfig(num_samples=total, languages=LANGUAGES, tasks=("line",), seed=1234, heldout_fraction=0.5,
                                 max_chars=40, max_chars_cjk=12, augment="light", prompts="blind",
                                 cjk_characters=300)
        generate_dataset(str(out), config, workers=2, progress=False, write_hf=False, overwrite=True)
    return out, "generated here with the quickstart's generator settings (seed 1234; no quickstart data found)"


def _render_quick_lines(out: Path) -> Path:
    """Three clean lines (en / zh-Hans / zh-Hant) in the held-out format, without the generator's start-up cost."""
    from PIL import Image, ImageDraw, ImageFont

    lines = {"en": "Invoice 12345", "zh-Hans": "今天天气很好", "zh-Hant": "今天天氣很好"}
    (out / "images").mkdir(parents=True, exist_ok=True)
    records = []
    for index, (language, text) in enumerate(lines.items()):
        try:  # Noto Sans CJK: face 2 is SC, face 3 is TC
            font = ImageFont.truetype("/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc", 32,
                                      index=3 if language == "zh-Hant" else 2)
        except OSError:
            font = ImageFont.load_default()
        image = Image.new("RGB", (320, 56), "white")
        ImageDraw.Draw(image).text((10, 8), text, fill="black", font=font)
        name = f"images/quick_{index}.png"
        image.save(out / name)
        records.append({"id": f"quick_{index}", "image": name, "language": language, "conversations": [
            {"from": "human", "value": "<image>\nRead the text in the image."}, {"from": "gpt", "value": text}]})
    (out / "heldout.json").write_text(json.dumps(records, ensure_ascii=False), encoding="utf-8")
    return out


def select_records(data_dir: Path, samples: int) -> list[dict]:
    records = json.loads((data_dir / "heldout.json").read_text(encoding="utf-8"))
    per_language = defaultdict(list)
    for record in records:
        per_language[record.get("language", "en")].append(record)
    quota = max(1, samples // len(LANGUAGES))
    return [r for language in LANGUAGES for r in per_language[language][:quota]]


def reference_of(record: dict) -> str:
    return record["conversations"][1]["value"]


def question_of(record: dict) -> str:
    return record["conversations"][0]["value"].replace("<image>", "").strip()


# --------------------------------------------------------------------------------------------------------------------
# engines
# --------------------------------------------------------------------------------------------------------------------
class OursEngine:
    name = "ours"

    def __init__(self, model_dir: Path, device: str, dtype: str, max_new_tokens: int):
        from ocr_mllm.inference import load_model_and_processor

        self.model, self.processor = load_model_and_processor(str(model_dir), device=device, dtype=dtype)
        self.max_new_tokens = max_new_tokens

    def read_batch(self, records: list[dict], data_dir: Path) -> list[str]:
        import torch

        from ocr_mllm.inference import generate_batch

        conversations = [[{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question_of(r)}]}]
                         for r in records]
        images = [[str(data_dir / r["image"])] for r in records]
        with torch.inference_mode():
            return generate_batch(self.model, self.processor, conversations, images, max_new_tokens=self.max_new_tokens)

    def read(self, record: dict, data_dir: Path) -> str:
        return self.read_batch([record], data_dir)[0]


class TesseractEngine:
    name = "tesseract"

    def __init__(self, threads: int):
        self.env = {**os.environ, "OMP_THREAD_LIMIT": str(threads)}
        self.binary = shutil.which("tesseract")
        if self.binary is None:
            raise RuntimeError("tesseract not installed (apt-get install tesseract-ocr tesseract-ocr-eng "
                               "tesseract-ocr-chi-sim tesseract-ocr-chi-tra)")
        listed = subprocess.run([self.binary, "--list-langs"], capture_output=True, text=True, check=False)
        available = set((listed.stdout + listed.stderr).split())
        missing = [lang for lang in TESSERACT_LANGUAGES.values() if lang not in available]
        if missing:
            raise RuntimeError(f"tesseract language data missing: {missing}")
        version = subprocess.run([self.binary, "--version"], capture_output=True, text=True, check=False)
        self.version = (version.stdout or version.stderr).splitlines()[0]

    def read(self, record: dict, data_dir: Path) -> str:
        language = TESSERACT_LANGUAGES[record.get("language", "en")]
        result = subprocess.run([self.binary, str(data_dir / record["image"]), "stdout", "-l", language, "--psm", "7"],
                                capture_output=True, text=True, check=False, env=self.env)
        return result.stdout.strip()


    def peak_rss_mib(self, record: dict, data_dir: Path) -> float | None:
        language = TESSERACT_LANGUAGES[record.get("language", "en")]
        process = subprocess.Popen([self.binary, str(data_dir / record["image"]), "stdout", "-l", language, "--psm", "7"],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=self.env)
        peak = None
        while process.poll() is None:
            value = _rss_mib(process.pid, "VmHWM")
            peak = value if value is not None else peak
            time.sleep(0.001)
        return peak


class RapidOcrEngine:
    name = "rapidocr"

    def __init__(self, threads: int, mode: str = "line"):
        self.mode = mode
        try:
            from rapidocr import RapidOCR
        except ImportError as err:
            raise RuntimeError(f"rapidocr not installed (pip install rapidocr onnxruntime): {err}") from err
        self.engine = RapidOCR(params={"Global.log_level": "warning",
                                       "EngineConfig.onnxruntime.intra_op_num_threads": threads,
                                       "EngineConfig.onnxruntime.inter_op_num_threads": 1})

    def read(self, record: dict, data_dir: Path) -> str:
        # "line": recognition only, the counterpart of tesseract --psm 7 on one-line images; "full": det + cls + rec
        options = {"use_det": False, "use_cls": False, "use_rec": True} if self.mode == "line" else {}
        result = self.engine(str(data_dir / record["image"]), **options)
        texts = getattr(result, "txts", None) or ()
        return " ".join(texts).strip()


# --------------------------------------------------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------------------------------------------------
def run(args) -> dict:
    import torch

    device = check_device(args.device)
    threads, threads_reason = choose_threads(args.threads)
    torch.set_num_threads(threads)
    log(f"[ocr_quality] threads per engine: {threads} ({threads_reason})")
    samples = 3 if args.quick else args.max_samples
    data_dir, data_source = find_data(args.data, args.quick, samples)
    records = select_records(data_dir, samples)
    log(f"[ocr_quality] {len(records)} held-out lines from {data_dir} ({data_source})")

    engines, notes, load_mib = {}, {}, {}
    model_dir, model_note = find_model(args.model)
    if model_dir is None and args.quick:  # smoke test: exercise our path with a tiny random model
        from ocr_mllm.building import build_tiny_folder

        model_dir = build_tiny_folder(Path(tempfile.mkdtemp(prefix="ocr_bench_model_")) / "model")
        model_note = "tiny random-weight model built for the smoke test"
    if "ours" in args.engines:
        if model_dir is None:
            notes["ours"] = model_note
        else:
            try:
                max_new_tokens = 4 if args.quick else args.max_new_tokens
                before = _rss_mib()
                engines["ours"] = OursEngine(model_dir, device, args.dtype, max_new_tokens)
                load_mib["ours"] = round(_rss_mib() - before, 1)
                notes["ours"] = f"{model_dir} ({model_note}), {device}, {args.dtype}, greedy, max_new_tokens {max_new_tokens}"
            except Exception as err:  # a half-written folder (quickstart still training) must not stop the bench
                notes["ours"] = f"could not load {model_dir}: {type(err).__name__}: {err}"
    for name, engine_class in (("tesseract", TesseractEngine), ("rapidocr", RapidOcrEngine)):
        if name in args.engines:
            try:
                before = _rss_mib()
                engines[name] = engine_class(threads, args.rapidocr_mode) if name == "rapidocr" else engine_class(threads)
                load_mib[name] = round(_rss_mib() - before, 1)
                notes[name] = getattr(engines[name], "version", "") or (
                    "models from the wheel (PP-OCRv6 small, ch); "
                    + ("recognition only (one-line images, like tesseract --psm 7)" if args.rapidocr_mode == "line"
                       else "detection + angle classification + recognition"))
            except Exception as err:
                notes[name] = str(err)
    for name, note in notes.items():
        log(f"[ocr_quality] {name}: {note}")

    rows = {name: [] for name in engines}
    memory = {}
    for engine in engines.values():  # warm-up: first call loads models / primitives
        if not args.quick:
            engine.read(records[0], data_dir)
    for record in records:  # interleaved: every engine reads the same image before the next image
        for name, engine in engines.items():
            start = time.perf_counter()
            try:
                prediction = engine.read(record, data_dir)
                error = None
            except Exception as err:
                prediction, error = None, f"{type(err).__name__}: {err}"
            seconds = time.perf_counter() - start
            rows[name].append({"id": record["id"], "language": record.get("language", "en"), "reference": reference_of(record),
                               "prediction": prediction, "seconds": round(seconds, 4), **({"error": error} if error else {})})
    for name, engine in engines.items():
        if name == "tesseract":  # its own process: the child's high-water mark, polled from /proc until it exits
            memory[name] = {"process_peak_mib": max(engine.peak_rss_mib(r, data_dir) for r in records[:3])}
        elif not args.quick:  # in this process: what loading it added + the peak one read adds on top
            with PeakRSS() as tracker:
                engine.read(records[0], data_dir)
            memory[name] = {"load_mib": load_mib.get(name), "read_peak_delta_mib": tracker.delta_mib}
    batched = None
    if "ours" in engines and args.batch_size > 1 and not args.quick:
        start = time.perf_counter()
        for index in range(0, len(records), args.batch_size):
            engines["ours"].read_batch(records[index : index + args.batch_size], data_dir)
        batched = round((time.perf_counter() - start) / len(records), 4)

    tables = {name: score(engine_rows) for name, engine_rows in rows.items()}
    for name, table in tables.items():
        if "all" in table:
            log(f"[ocr_quality] {name}: CER {table['all']['cer']:.3f}, exact {table['all']['exact_match']:.3f}, "
                f"{table['all']['seconds_per_image_median']:.3f} s/image")
    payload = {
        "machine": machine_info(device),
        "settings": {
            "data_dir": str(data_dir), "data_source": data_source, "samples": len(records), "quick": args.quick,
            "languages": LANGUAGES, "tesseract_languages": TESSERACT_LANGUAGES, "tesseract_psm": 7,
            "reference": "the first answer of each record (the line's text)",
            "normalisation": "NFKC, whitespace collapsed, no spaces next to CJK characters",
            "timing": "wall seconds per image, one image at a time, engines interleaved image by image; tesseract "
                      "includes its process start (how it is called)",
            "engines": notes,
            "threads_per_engine": threads, "threads_reason": threads_reason,
            "threads_how": "torch.set_num_threads (ours), OMP_THREAD_LIMIT (tesseract), onnxruntime intra_op_num_threads (rapidocr)",
        },
        "results": tables,
        "ours_batched_seconds_per_image": batched,
        "ours_batch_size": args.batch_size if batched else None,
        "memory_mib": memory,
        "memory_note": "tesseract: peak RSS of its process; in-process engines: RSS added by loading the engine and "
                       "the peak one read adds on top",
        "predictions": rows,
    }
    path = write_results("ocr_quality", payload, args.output_dir)
    chart(payload, path.with_suffix(".png"))
    log(f"[ocr_quality] wrote {path} and {path.with_suffix('.png').name}")
    return payload


def chart(payload: dict, path) -> None:
    results = payload["results"]
    engines = list(results)
    groups = [g for g in (*LANGUAGES, "all") if any(g in results[e] for e in engines)]
    with figure(path, 1, 2, size=(12, 4.5), title=f"OCR on {payload['settings']['samples']} held-out synthetic lines") as (fig, axes):
        if not engines:
            axes[0][0].text(0.5, 0.5, "no engine available", ha="center")
            return
        grouped_bars(axes[0][0], groups, {e: [results[e].get(g, {}).get("cer") for g in groups] for e in engines},
                     "CER (lower is better)", "character error rate", fmt="{:.2f}")
        grouped_bars(axes[0][1], groups,
                     {e: [results[e].get(g, {}).get("seconds_per_image_median") for g in groups] for e in engines},
                     "seconds / image (median)", "speed, one image at a time", fmt="{:.2f}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_arguments(parser, default_repeats=1)
    parser.add_argument("--model", default=None, help="model folder (default: the quickstart's)")
    parser.add_argument("--data", default=None, help="folder with heldout.json + images/ (default: the quickstart's)")
    parser.add_argument("--max-samples", type=int, default=90, help="held-out lines, balanced over the languages")
    parser.add_argument("--engines", nargs="+", default=["ours", "tesseract", "rapidocr"])
    parser.add_argument("--dtype", default="fp32", help="our model's dtype (fp32 / bf16)")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=16, help="also time ours in batches of this size (1: skip)")
    parser.add_argument("--rapidocr-mode", default="line", choices=["line", "full"],
                        help="line: recognition only (one-line images, like tesseract --psm 7); full: detection too")
    parser.add_argument("--threads", default="auto",
                        help="threads for every engine, or 'auto': all cores on an idle machine, 1 when other jobs are running")
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    main()
