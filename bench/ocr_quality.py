#!/usr/bin/env python
"""OCR quality and speed on held-out synthetic lines: our line readers (the shipped models/reader-mini, the
quickstart's, any `--model NAME=DIR`) against Tesseract 5 (eng / chi_sim / chi_tra, `--psm 7`: one text line) and
RapidOCR (PP-OCR ONNX models shipped in the wheel, recognition only), all on the same lines.

The lines come from the project's generator with the settings the shipped reader is trained with
(scripts/quickstart.py --preset reader-mini: line task, blind prompts, en ≤ 60 / zh ≤ 20 characters, the 3,500 most
frequent Chinese characters, light augmentation), a fixed seed, and words from the generator's held-out pool (never in
any training split). They come in two halves: fonts the reader was trained with ("seen") and the families in
`UNSEEN_FONT_FAMILIES` that training leaves out ("unseen"); both halves use the same seed, so they mostly hold the same
texts and the seen/unseen gap is the fonts' (settings.paired_texts says how many match). The set is generated once
into OUTPUT_DIR/ocr_heldout/ and reused while its settings match.

Metrics per engine × language (en, zh-Hans, zh-Hant) × font group (seen, unseen, all): CER (character edits /
reference characters, pooled over the lines) and exact match, after a light normalisation every engine gets: Unicode
NFKC (full-width ↔ ASCII punctuation), whitespace collapsed, no spaces next to CJK characters (Tesseract puts spaces
between Chinese characters); the unnormalised CER is kept too. Seconds per line: our readers in batches of
--batch-size through `ocr_mllm.inference.generate_batch` (greedy; the model's config decides joint CTC/attention
decoding), Tesseract one process per line (how it is called), RapidOCR one line at a time — interleaved batch by
batch, so a load spike on this shared machine hits every engine.

Prints a markdown table and one line per language saying whether the shipped reader meets its targets against
Tesseract (CER below it in zh-Hans and zh-Hant, within 1 point in English, batched seconds per line no slower).

    python -m bench.ocr_quality                                   # shipped + quickstart readers, Tesseract, RapidOCR
    python -m bench.ocr_quality --model reader-mini=out/reader-mini/model/checkpoint-900 --max-samples 60
    python -m bench.ocr_quality --model mine=DIR --engines mine tesseract
    python -m bench.ocr_quality --quick                           # 6 generated lines (smoke test)
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
from dataclasses import asdict
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
FONT_GROUPS = ("seen", "unseen")
GROUPS = (*FONT_GROUPS, "all")
TESSERACT_LANGUAGES = {"en": "eng", "zh-Hans": "chi_sim", "zh-Hant": "chi_tra"}
PEERS = ("tesseract", "rapidocr")
QUICKSTART = REPO / "out" / "quickstart"
SHIPPED = "reader-mini"  # the engine name the targets are checked for
# How far the shipped reader's CER may sit above Tesseract's (strictly less than this): below it in Chinese, within 1
# point in English (the Latin model Tesseract ships is strong on clean lines).
TARGET_MARGINS = {"en": 0.01, "zh-Hans": 0.0, "zh-Hant": 0.0}
# The shipped reader's training data (scripts/quickstart.py make_data with `--preset reader-mini`'s flags); a different
# line length or character set would measure something the reader was not trained for.
GENERATOR_SETTINGS = {
    "languages": LANGUAGES,
    "tasks": ("line",),
    "prompts": "blind",
    "max_chars": 60,
    "max_chars_cjk": 20,
    "cjk_characters": 3500,
    "augment": "light",
}
DATA_SEED = 1234  # not the training seed (0): other numbers, dates and codes next to the held-out words


# --------------------------------------------------------------------------------------------------------------------
# metrics
# --------------------------------------------------------------------------------------------------------------------
def edit_distance(a: str, b: str) -> int:
    """Levenshtein distance (rapidfuzz's C implementation when installed, else ocr_mllm.text_metrics')."""
    try:
        from rapidfuzz.distance import Levenshtein
    except ImportError:
        from ocr_mllm.text_metrics import levenshtein

        return levenshtein(a, b)
    return Levenshtein.distance(a, b)


def _is_cjk(char: str) -> bool:
    code = ord(char)
    return (
        (0x3000 <= code <= 0x9FFF)
        or (0xF900 <= code <= 0xFAFF)
        or (0xFF00 <= code <= 0xFFEF)
        or (0x20000 <= code <= 0x2FA1F)
    )


def normalize(text: str) -> str:
    """NFKC, whitespace collapsed, no spaces next to CJK characters: the same for every engine, so conventions
    (full-width commas, Tesseract's spaced-out Chinese) do not count as reading errors."""
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
    """Per language and "all": CER and exact match after `normalize` (and CER before it), seconds per line; rows
    without a prediction (a failed read) are left out, and `failed` counts them: a crash must not pass for a score."""
    from ocr_mllm.text_metrics import reading_scores, rows_by_language

    table = {}
    read = [r for r in rows if r.get("prediction") is not None]
    failed = defaultdict(int)
    for row in rows:
        if row.get("prediction") is None:
            failed[row["language"]] += 1
            failed["all"] += 1
    for language, group in rows_by_language(read, LANGUAGES).items():
        normalised = reading_scores(
            ((normalize(r["prediction"]), normalize(r["reference"])) for r in group), edit_distance
        )
        raw = reading_scores(((r["prediction"], r["reference"]) for r in group), edit_distance)
        seconds = [r["seconds"] for r in group]
        table[language] = {
            "n": normalised["n"],
            "failed": failed[language],
            "cer": round(normalised["cer"], 4),
            "exact_match": round(normalised["exact_match"], 4),
            "cer_unnormalised": round(raw["cer"], 4),
            "seconds_per_line_mean": round(statistics.mean(seconds), 4),
            "seconds_per_image_median": round(statistics.median(seconds), 4),
        }
    return table


def score_by_fonts(rows: list[dict]) -> dict:
    """{font group: score(...)} for seen, unseen and all fonts (groups without a read line left out)."""
    tables = {}
    for group in GROUPS:
        table = score(rows if group == "all" else [r for r in rows if r["fonts"] == group])
        if table:
            tables[group] = table
    return tables


# --------------------------------------------------------------------------------------------------------------------
# data: the generator's held-out lines, seen and unseen fonts
# --------------------------------------------------------------------------------------------------------------------
def heldout_config(fonts: str, lines: int, seed: int = DATA_SEED):
    """A generator config whose every sample is held out (words from the held-out pool): the training split is empty,
    since `heldout_fraction` rounds `lines` to all of them (it must stay below 1)."""
    from ocr_mllm.data import GeneratorConfig

    return GeneratorConfig(
        num_samples=lines, heldout_fraction=1 - 0.4 / lines, seed=seed, fonts=fonts, **GENERATOR_SETTINGS
    ).validate()


def _comparable(config: dict) -> dict:
    """The settings that decide what a line looks like; the size does not (sample i is the same for any size)."""
    return {k: v for k, v in config.items() if k not in ("num_samples", "heldout_fraction")}


def prepare_data(root: Path, per_group: int, workers: int) -> tuple[dict[str, Path], str]:
    """ROOT/seen and ROOT/unseen with at least `per_group` held-out lines each (generated, or reused when a folder
    there has the same settings and enough lines). ROOT gets a .gitignore of its own: bench/results/ is committed,
    the cached images are not."""
    from ocr_mllm.data import generate_dataset

    root.mkdir(parents=True, exist_ok=True)
    if not (root / ".gitignore").exists():
        (root / ".gitignore").write_text("# generated by bench/ocr_quality.py; not committed\n*\n", encoding="utf-8")
    folders, notes = {}, []
    for fonts in FONT_GROUPS:
        folder = root / fonts
        config = heldout_config(fonts, per_group)
        wanted = json.loads(json.dumps(asdict(config)))
        meta_path = folder / "meta.json"
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8")) if meta_path.exists() else None
        except ValueError as err:
            raise SystemExit(f"{meta_path}: not JSON ({err}); delete {folder} to regenerate it") from err
        if (
            meta
            and _comparable(meta.get("config", {})) == _comparable(wanted)
            and meta.get("counts", {}).get("heldout", 0) >= per_group
            and (folder / "heldout.json").exists()
        ):
            notes.append(f"{fonts}: reused {folder}")
        else:
            start = time.perf_counter()
            generate_dataset(str(folder), config, workers=workers, progress=False, write_hf=False, overwrite=True)
            notes.append(f"{fonts}: generated {per_group} lines into {folder} in {time.perf_counter() - start:.0f} s")
        folders[fonts] = folder
    return folders, "; ".join(notes)


def select_records(folders: dict[str, Path], per_language: int) -> list[dict]:
    """The first `per_language` lines of each language in each font group, each with its image's path and group;
    ordered as generated (languages mixed, so every batch mixes them as real input would)."""
    selected = []
    for fonts, folder in folders.items():
        path = folder / "heldout.json"
        try:
            records = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            raise SystemExit(f"{path}: cannot read the held-out lines ({err}); delete {folder} to regenerate") from err
        taken = defaultdict(int)
        for record in records:
            language = record.get("language")
            if language not in LANGUAGES or taken[language] >= per_language:
                continue
            if not record.get("conversations") or len(record["conversations"]) < 2:
                raise SystemExit(f"{path}: record {record.get('id')!r} has no question/answer pair")
            taken[language] += 1
            selected.append({**record, "fonts": fonts, "path": str(folder / record["image"])})
        short = {language: taken[language] for language in LANGUAGES if taken[language] < per_language}
        if short:
            raise SystemExit(f"{path}: too few lines for {short} (wanted {per_language} each); delete {folder}")
    return selected


def paired_fraction(records: list[dict]) -> float | None:
    """Share of seen-font lines whose unseen-font twin (same generated index) has the same text."""
    by_group = {group: {r["id"]: r["text"] for r in records if r["fonts"] == group} for group in FONT_GROUPS}
    shared = set(by_group["seen"]) & set(by_group["unseen"])
    if not shared:
        return None
    return round(sum(by_group["seen"][i] == by_group["unseen"][i] for i in shared) / len(shared), 3)


def reference_of(record: dict) -> str:
    return record["conversations"][1]["value"]


def question_of(record: dict) -> str:
    return record["conversations"][0]["value"].replace("<image>", "").strip()


# --------------------------------------------------------------------------------------------------------------------
# model discovery
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
    """The quickstart's reader (bench.run_all also asks, to offer training one): (folder or None, how it was found
    or why not)."""
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
    for candidate in (QUICKSTART / "model", QUICKSTART / "stage2", QUICKSTART):
        if (candidate / "config.json").exists():
            return candidate, "found under out/quickstart"
    return None, "no quickstart reader under out/quickstart (`make quickstart` trains one in 15 min)"


def shipped_model() -> tuple[Path | None, str]:
    from ocr_mllm.inference.loading import DEFAULT_MODEL

    path = Path(DEFAULT_MODEL)
    if (path / "config.json").exists():
        return path, "the shipped reader (ocr_mllm.inference.loading.DEFAULT_MODEL)"
    return None, f"{path}: no config.json (the shipped reader is not in this checkout)"


def parse_models(specs: list[str] | None) -> dict[str, tuple[Path | None, str]]:
    """{name: (folder or None, note)}: the shipped and the quickstart readers, then each --model NAME=DIR (a bare DIR
    is named after its folder); a given name replaces a default of that name, so `--model reader-mini=CHECKPOINT`
    measures a checkpoint against the targets."""
    models = {SHIPPED: shipped_model(), "quickstart": find_model(None)}
    for spec in specs or ():
        name, separator, folder = spec.partition("=")
        if not separator:
            name, folder = Path(spec).name, spec
        if not name or not folder or name in PEERS or name == "ours":
            raise SystemExit(f"--model {spec!r}: expected NAME=DIR with a NAME other than ours/{'/'.join(PEERS)}")
        path = Path(folder)
        models[name] = (path, "given") if (path / "config.json").exists() else (None, f"{path}: no config.json")
    return models


# --------------------------------------------------------------------------------------------------------------------
# engines
# --------------------------------------------------------------------------------------------------------------------
class OursEngine:
    """One of our readers, batched through the project's inference path (images loaded by its processor)."""

    batched = True

    def __init__(
        self, model_dir: Path, device: str, dtype: str, max_new_tokens: int, ctc_decoding_weight: float | None = None
    ):
        from ocr_mllm.inference import load_model_and_processor

        self.model, self.processor = load_model_and_processor(str(model_dir), device=device, dtype=dtype)
        self.max_new_tokens = max_new_tokens
        # None: the model's config decides (what users get); a number overrides it, to weigh accuracy against speed
        self.override = {} if ctc_decoding_weight is None else {"ctc_decoding_weight": ctc_decoding_weight}
        self.ctc_decoding_weight = self.override.get(
            "ctc_decoding_weight", getattr(self.model.config, "ctc_decoding_weight", 0.0)
        )

    def read_batch(self, records: list[dict]) -> list[str]:
        import torch

        from ocr_mllm.inference import generate_batch

        conversations = [
            [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question_of(r)}]}]
            for r in records
        ]
        with torch.inference_mode():
            return generate_batch(
                self.model,
                self.processor,
                conversations,
                [[r["path"]] for r in records],
                max_new_tokens=self.max_new_tokens,
                temperature=0.0,
                **self.override,
            )


class TesseractEngine:
    batched = False

    def __init__(self, threads: int):
        self.env = {**os.environ, "OMP_THREAD_LIMIT": str(threads)}
        self.binary = shutil.which("tesseract")
        if self.binary is None:
            raise RuntimeError(
                "tesseract not installed (apt-get install tesseract-ocr tesseract-ocr-eng "
                "tesseract-ocr-chi-sim tesseract-ocr-chi-tra)"
            )
        listed = subprocess.run([self.binary, "--list-langs"], capture_output=True, text=True, check=False)
        available = set((listed.stdout + listed.stderr).split())
        missing = [lang for lang in TESSERACT_LANGUAGES.values() if lang not in available]
        if missing:
            raise RuntimeError(f"tesseract language data missing: {missing}")
        version = subprocess.run([self.binary, "--version"], capture_output=True, text=True, check=False)
        self.version = (version.stdout or version.stderr).splitlines()[0]

    def _command(self, record: dict) -> list[str]:
        return [self.binary, record["path"], "stdout", "-l", TESSERACT_LANGUAGES[record["language"]], "--psm", "7"]

    def read(self, record: dict) -> str:
        result = subprocess.run(self._command(record), capture_output=True, text=True, check=False, env=self.env)
        if result.returncode:
            raise RuntimeError(f"tesseract failed on {record['path']}: {result.stderr.strip()[-200:]}")
        return result.stdout.strip()

    def peak_rss_mib(self, record: dict) -> float | None:
        process = subprocess.Popen(
            self._command(record), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=self.env
        )
        peak = None
        while process.poll() is None:
            value = _rss_mib(process.pid, "VmHWM")
            peak = value if value is not None else peak
            time.sleep(0.001)
        return peak


class RapidOcrEngine:
    batched = False

    def __init__(self, threads: int, mode: str = "line"):
        self.mode = mode
        try:
            from rapidocr import RapidOCR
        except ImportError as err:
            raise RuntimeError(f"rapidocr not installed (pip install rapidocr onnxruntime): {err}") from err
        self.engine = RapidOCR(
            params={
                "Global.log_level": "warning",
                "EngineConfig.onnxruntime.intra_op_num_threads": threads,
                "EngineConfig.onnxruntime.inter_op_num_threads": 1,
            }
        )

    def read(self, record: dict) -> str:
        # "line": recognition only, the counterpart of tesseract --psm 7 on one-line images; "full": det + cls + rec
        options = {"use_det": False, "use_cls": False, "use_rec": True} if self.mode == "line" else {}
        result = self.engine(record["path"], **options)
        texts = getattr(result, "txts", None) or ()
        return " ".join(texts).strip()


def read_chunk(engine, chunk: list[dict]) -> list[tuple[str | None, float, str | None]]:
    """(prediction or None, seconds, error or None) per record: a batched engine's time is shared evenly by the
    batch's lines; one failure costs only its record (or its batch) a prediction, not the run."""
    if engine.batched:
        start = time.perf_counter()
        try:
            predictions, error = engine.read_batch(chunk), None
        except Exception as err:
            predictions, error = [None] * len(chunk), f"{type(err).__name__}: {err}"
        seconds = (time.perf_counter() - start) / len(chunk)
        return [(prediction, seconds, error) for prediction in predictions]
    out = []
    for record in chunk:
        start = time.perf_counter()
        try:
            prediction, error = engine.read(record), None
        except Exception as err:
            prediction, error = None, f"{type(err).__name__}: {err}"
        out.append((prediction, time.perf_counter() - start, error))
    return out


def load_engines(args, models: dict, threads: int, device: str) -> tuple[dict, dict, dict]:
    """(engines, a note per engine, MiB loading each added); an engine that is missing or fails to load is left out
    with its note (one logged line), since a half-written folder must not stop the other engines."""
    wanted = args.engines or [*models, *PEERS]
    wanted = [name for item in wanted for name in (list(models) if item == "ours" else [item])]
    unknown = [name for name in wanted if name not in models and name not in PEERS]
    if unknown:
        raise SystemExit(f"--engines {unknown}: unknown; known: ours, {', '.join([*models, *PEERS])}")
    engines, notes, load_mib = {}, {}, {}
    max_new_tokens = 4 if args.quick else args.max_new_tokens
    for name in dict.fromkeys(wanted):
        before = _rss_mib()
        try:
            if name in models:
                model_dir, how = models[name]
                if model_dir is None:
                    notes[name] = f"skipped: {how}"
                    continue
                engine = OursEngine(model_dir, device, args.dtype, max_new_tokens, args.ctc_decoding_weight)
                source = "its config" if args.ctc_decoding_weight is None else "--ctc-decoding-weight"
                notes[name] = (
                    f"{model_dir} ({how}); {device}, {args.dtype}, greedy, batches of {args.batch_size}, "
                    f"max_new_tokens {max_new_tokens}, ctc_decoding_weight {engine.ctc_decoding_weight} "
                    f"({source})"
                )
            elif name == "tesseract":
                engine = TesseractEngine(threads)
                notes[name] = f"{engine.version}, --psm 7, one process per line"
            else:
                engine = RapidOcrEngine(threads, args.rapidocr_mode)
                notes[name] = "models from the wheel (PP-OCR, ch); " + (
                    "recognition only (one-line images, like tesseract --psm 7)"
                    if args.rapidocr_mode == "line"
                    else "detection + angle classification + recognition"
                )
        except Exception as err:
            notes[name] = f"skipped: {type(err).__name__}: {err}"
            continue
        engines[name] = engine
        load_mib[name] = round((_rss_mib() or 0) - (before or 0), 1)
    for name, note in notes.items():
        log(f"[ocr_quality] {name}: {note}")
    return engines, notes, load_mib


# --------------------------------------------------------------------------------------------------------------------
# report: markdown table, targets, chart
# --------------------------------------------------------------------------------------------------------------------
def _pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f}%"


def markdown_table(by_fonts: dict) -> str:
    """engine × language rows; CER and exact match per font group (seen / unseen / all), mean seconds per line."""
    header = (
        "| engine | language | n | CER seen | CER unseen | CER all | exact seen | exact unseen | exact all "
        "| s / line |"
    )
    lines = [header, "|---|---|---|---|---|---|---|---|---|---|"]
    for engine, tables in by_fonts.items():
        for language in (*LANGUAGES, "all"):
            cells = {group: tables.get(group, {}).get(language) for group in GROUPS}
            if cells["all"] is None:
                continue
            n = str(cells["all"]["n"]) + (f" ({cells['all']['failed']} failed)" if cells["all"]["failed"] else "")
            lines.append(
                f"| {engine} | {language} | {n} | "
                + " | ".join(_pct(cells[g]["cer"] if cells[g] else None) for g in GROUPS)
                + " | "
                + " | ".join(_pct(cells[g]["exact_match"] if cells[g] else None) for g in GROUPS)
                + f" | {cells['all']['seconds_per_line_mean']:.3f} |"
            )
    return "\n".join(lines)


def check_targets(by_fonts: dict, shipped: str = SHIPPED) -> dict:
    """The shipped reader against Tesseract on the same lines: per language the CER gap (ours − Tesseract, all fonts,
    with the seen / unseen gaps beside) and whether it is under the margin; then batched seconds per line."""
    ours, peer = by_fonts.get(shipped), by_fonts.get("tesseract")
    if not ours or not peer:
        return {"measured": False, "why": f"needs both {shipped} and tesseract (got {', '.join(by_fonts) or 'none'})"}
    out = {"measured": True, "engine": shipped, "languages": {}}
    for language, margin in TARGET_MARGINS.items():
        entry = {"margin": margin}
        for group in GROUPS:
            a, b = ours.get(group, {}).get(language), peer.get(group, {}).get(language)
            if a and b:
                entry[group] = {"ours_cer": a["cer"], "tesseract_cer": b["cer"], "gap": round(a["cer"] - b["cer"], 4)}
        if "all" in entry:  # lines the reader failed on are out of its CER, so any failure fails the target
            entry["failed_lines"] = ours["all"][language]["failed"]
            entry["met"] = entry["all"]["gap"] < margin and not entry["failed_lines"]
            out["languages"][language] = entry
    a, b = ours["all"]["all"]["seconds_per_line_mean"], peer["all"]["all"]["seconds_per_line_mean"]
    out["speed"] = {
        "ours_seconds_per_line": a,
        "tesseract_seconds_per_line": b,
        "ours_speedup": round(b / a, 2) if a else None,
        "met": a <= b,
    }
    return out


def target_lines(targets: dict) -> list[str]:
    if not targets.get("measured"):
        return [f"targets not checked: {targets.get('why')}"]
    lines = []
    for language, entry in targets["languages"].items():
        gap, margin = entry["all"]["gap"], entry["margin"]
        goal = "below Tesseract" if margin == 0 else f"within {100 * margin:.0f} point of Tesseract"
        side = "below" if gap < 0 else "above" if gap > 0 else "equal to"
        by_group = ", ".join(f"{g} {100 * entry[g]['gap']:+.1f}" for g in FONT_GROUPS if g in entry)
        lines.append(
            f"{language}: {targets['engine']} CER {_pct(entry['all']['ours_cer'])} vs Tesseract "
            f"{_pct(entry['all']['tesseract_cer'])}: {100 * abs(gap):.1f} points {side} "
            f"({by_group} by font group); target {goal}: {'MET' if entry['met'] else 'NOT MET'}"
            + (f" ({entry['failed_lines']} line(s) failed to read)" if entry["failed_lines"] else "")
        )
    speed = targets["speed"]
    lines.append(
        f"speed: {targets['engine']} {speed['ours_seconds_per_line']:.3f} s / line batched vs Tesseract "
        f"{speed['tesseract_seconds_per_line']:.3f} s / line ({speed['ours_speedup']}x); target no slower: "
        f"{'MET' if speed['met'] else 'NOT MET'}"
    )
    return lines


def chart(payload: dict, path) -> None:
    by_fonts = payload["results_by_fonts"]
    engines = list(by_fonts)
    cells = [(language, group) for language in LANGUAGES for group in GROUPS]
    cells = [c for c in cells if any(by_fonts[e].get(c[1], {}).get(c[0]) for e in engines)]
    title = f"OCR on {payload['settings']['samples']} held-out synthetic lines (seen / unseen fonts)"
    with figure(path, 1, 2, size=(15, 4.8), title=title) as (fig, axes):
        if not engines:
            axes[0][0].text(0.5, 0.5, "no engine available", ha="center")
            return
        labels = [f"{language}\n{group}" for language, group in cells]
        grouped_bars(
            axes[0][0],
            labels,
            {e: [by_fonts[e].get(g, {}).get(lang, {}).get("cer") for lang, g in cells] for e in engines},
            "CER (lower is better)",
            "character error rate by language and font group",
            fmt="{:.2f}",
        )
        groups = [g for g in (*LANGUAGES, "all") if any(by_fonts[e]["all"].get(g) for e in engines)]
        speeds = {e: [by_fonts[e]["all"].get(g, {}).get("seconds_per_line_mean") for g in groups] for e in engines}
        grouped_bars(
            axes[0][1],
            groups,
            speeds,
            "seconds / line (mean)",
            "speed (ours batched, peers line by line)",
            fmt="{:.3f}",
        )


# --------------------------------------------------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------------------------------------------------
def run(args) -> dict:
    import torch

    started = time.perf_counter()
    device = check_device(args.device)
    threads, threads_reason = choose_threads(args.threads)
    torch.set_num_threads(threads)
    log(f"[ocr_quality] threads per engine: {threads} ({threads_reason})")
    per_language = 1 if args.quick else max(1, args.max_samples // (len(LANGUAGES) * len(FONT_GROUPS)))
    data_root = Path(args.data) if args.data else Path(args.output_dir) / "ocr_heldout"
    folders, data_source = prepare_data(data_root, per_language * len(LANGUAGES), workers=threads)
    records = select_records(folders, per_language)
    log(f"[ocr_quality] {len(records)} held-out lines ({per_language} per language and font group): {data_source}")

    models = parse_models(args.model)
    wants_ours = not args.engines or "ours" in args.engines or any(name in models for name in args.engines)
    if args.quick and not args.model and wants_ours and all(path is None for path, _ in models.values()):
        from ocr_mllm.building import build_tiny_folder  # smoke test on a fresh checkout: our path runs, untrained

        for name, (_, why) in models.items():
            log(f"[ocr_quality] {name}: skipped: {why}")
        folder = build_tiny_folder(Path(tempfile.mkdtemp(prefix="ocr_bench_model_")) / "model", preset="tiny-line")
        models = {"tiny-random": (folder, "random weights, built for the smoke test (no trained reader found)")}
    engines, notes, load_mib = load_engines(args, models, threads, device)

    batch_size = max(1, args.batch_size)
    chunks = [records[i : i + batch_size] for i in range(0, len(records), batch_size)]
    if not args.quick:  # warm-up: the first call loads models / primitives
        for engine in engines.values():
            read_chunk(engine, chunks[0][: batch_size if engine.batched else 1])
    rows = {name: [] for name in engines}
    for chunk in chunks:  # interleaved batch by batch: every engine reads these lines before the next batch
        for name, engine in engines.items():
            for record, (prediction, seconds, error) in zip(chunk, read_chunk(engine, chunk)):
                rows[name].append(
                    {
                        "id": f"{record['fonts']}/{record['id']}",
                        "fonts": record["fonts"],
                        "language": record["language"],
                        "reference": reference_of(record),
                        "prediction": prediction,
                        "seconds": round(seconds, 4),
                        **({"error": error} if error else {}),
                    }
                )
    for name, engine_rows in rows.items():
        errors = [r for r in engine_rows if "error" in r]
        if errors:
            log(f"[ocr_quality] {name}: {len(errors)} line(s) failed, first {errors[0]['id']}: {errors[0]['error']}")

    memory = {}
    for name, engine in engines.items():
        if name == "tesseract":  # its own process: the child's high-water mark, polled from /proc until it exits
            peaks = [engine.peak_rss_mib(r) for r in records[:3]]
            memory[name] = {"process_peak_mib": max((p for p in peaks if p is not None), default=None)}
        elif not args.quick:  # in this process: what loading it added + the peak one read (one batch) adds on top
            with PeakRSS() as tracker:
                read_chunk(engine, chunks[0][: batch_size if engine.batched else 1])
            memory[name] = {"load_mib": load_mib.get(name), "read_peak_delta_mib": tracker.delta_mib}

    by_fonts = {name: score_by_fonts(engine_rows) for name, engine_rows in rows.items()}
    by_fonts = {name: tables for name, tables in by_fonts.items() if tables}
    targets = check_targets(by_fonts)
    shipped_speed = by_fonts.get(SHIPPED, {}).get("all", {}).get("all", {}).get("seconds_per_line_mean")
    payload = {
        "machine": machine_info(device),
        "settings": {
            "data_dir": str(data_root),
            "data_source": data_source,
            "samples": len(records),
            "quick": args.quick,
            "lines_per_language_and_font_group": per_language,
            "languages": LANGUAGES,
            "font_groups": FONT_GROUPS,
            "generator": {**GENERATOR_SETTINGS, "seed": DATA_SEED, "split": "held-out word pool"},
            "paired_texts": paired_fraction(records),
            "tesseract_languages": TESSERACT_LANGUAGES,
            "tesseract_psm": 7,
            "reference": "the answer of each record (the line's text)",
            "normalisation": "NFKC, whitespace collapsed, no spaces next to CJK characters",
            "timing": f"wall seconds per line: ours in batches of {batch_size} (batch time / lines), tesseract one "
            "process per line (its start included: how it is called), rapidocr one line at a time; engines "
            "interleaved batch by batch",
            "engines": notes,
            "batch_size": batch_size,
            "threads_per_engine": threads,
            "threads_reason": threads_reason,
            "threads_how": "torch.set_num_threads (ours), OMP_THREAD_LIMIT (tesseract), "
            "onnxruntime intra_op_num_threads (rapidocr)",
        },
        # results[engine][language]: all fonts (the shape bench/run_all.py's summary reads); by font group below
        "results": {name: tables["all"] for name, tables in by_fonts.items()},
        "results_by_fonts": by_fonts,
        "targets": targets,
        "ours_batched_seconds_per_image": shipped_speed,
        "ours_batch_size": batch_size if shipped_speed else None,
        "memory_mib": memory,
        "memory_note": "tesseract: peak RSS of its process; in-process engines: RSS added by loading the engine and "
        "the peak one read (ours: one batch) adds on top",
        "seconds_total": round(time.perf_counter() - started, 1),
        "predictions": rows,
    }
    path = write_results("ocr_quality", payload, args.output_dir)
    chart(payload, path.with_suffix(".png"))
    log("\n" + markdown_table(by_fonts) + "\n")
    for line in target_lines(targets):
        log(f"[ocr_quality] {line}")
    log(f"[ocr_quality] wrote {path} and {path.with_suffix('.png').name} ({payload['seconds_total']:.0f} s)")
    return payload


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_arguments(parser, default_repeats=1)
    parser.add_argument(
        "--model",
        action="append",
        metavar="NAME=DIR",
        help=f"a reader to measure (repeatable); defaults: {SHIPPED} (models/reader-mini) and "
        "quickstart (out/quickstart); a given NAME replaces the default of that name",
    )
    parser.add_argument(
        "--engines",
        nargs="+",
        default=None,
        help="engines to run (default: every model, tesseract, rapidocr; 'ours': every model)",
    )
    parser.add_argument(
        "--data",
        default=None,
        help="folder for the generated held-out lines (default: OUTPUT_DIR/ocr_heldout; reused)",
    )
    parser.add_argument(
        "--max-samples",
        type=int,
        default=300,
        help="held-out lines in all, split evenly over 3 languages × 2 font groups",
    )
    parser.add_argument("--dtype", default="fp32", help="our models' dtype (fp32 / bf16)")
    parser.add_argument("--max-new-tokens", type=int, default=96, help="longest answer (lines are ≤ 60 characters)")
    parser.add_argument("--batch-size", type=int, default=16, help="lines per batch for our readers")
    parser.add_argument(
        "--ctc-decoding-weight",
        type=float,
        default=None,
        help="override joint CTC/attention decoding for our readers (default: each model's config)",
    )
    parser.add_argument(
        "--rapidocr-mode",
        default="line",
        choices=["line", "full"],
        help="line: recognition only (one-line images, like tesseract --psm 7); full: detection too",
    )
    parser.add_argument(
        "--threads",
        default="auto",
        help="threads for every engine, or 'auto': all cores on an idle machine, 1 when other jobs are running",
    )
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    main()
