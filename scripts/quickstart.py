#!/usr/bin/env python
"""Train a line reader from random weights on synthetic text lines, on the CPU, and measure how well it reads.

synthetic lines (en ≤ 40 characters with numbers, prices, dates and codes; zh-Hans / zh-Hant ≤ 12 characters;
    held-out words never seen in training; one question for every script, English or Chinese at random)
→ a character-level tokenizer trained on that corpus (one token per character)
→ a line-reader preset with random weights (conv stem → SAM blocks → [2, 1] convs → one row of column tokens →
  projector, with an auxiliary CTC head on the columns; ViT → Resampler → 4 tokens; a small Qwen2 LLM)
→ one stage, everything trainable, TRL SFTTrainer + our collator, warm-up then cosine decay over wall-clock time
→ exact match and CER per language on held-out lines, read from the LLM's generated answers (what users get),
  the CTC head's own reading beside them, and the same with the question in Chinese; one streamed answer

python scripts/quickstart.py --output out/quickstart                  # 15 minutes on 2 idle CPU cores, all included
python scripts/quickstart.py --output out/qs-60 --minutes 60          # the curve keeps falling
python scripts/quickstart.py --preset reader-mini --device cuda ...   # the recipe of models/reader-mini
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import os
import platform
import time
from collections import defaultdict
from pathlib import Path


os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402


LANGUAGES = ("en", "zh-Hans", "zh-Hant")
DEV_SAMPLES = 60  # held-out lines (unseen words) kept apart from the test lines to choose the decoding weight
CTC_DECODING_WEIGHTS = (0.0, 0.3, 0.5, 0.8)
QUESTIONS = {"en": "Read all the text in the image.", "zh": "请读出图中的所有文字。"}
print = functools.partial(print, flush=True)  # noqa: A001
logger = logging.getLogger("quickstart")


def choose_threads(requested: int | None) -> int:
    """More torch threads than idle cores makes every step many times slower on a shared machine."""
    if requested:
        return requested
    from ocr_mllm.machine import busy_cores, usable_cores

    cores, busy = usable_cores(), busy_cores()
    return cores if busy is None else max(1, min(cores, int(cores - busy + 0.5)))


# --------------------------------------------------------------------------------------------------------------------
# the main job first: the built-in reader reads the bundled sample lines
# --------------------------------------------------------------------------------------------------------------------
SAMPLES = Path(__file__).resolve().parents[1] / "examples" / "images"


def read_samples(device: str) -> list[dict]:
    """models/reader-mini (the built-in default of cli.py, infer.py, app.py and eval) reads examples/images/*.png."""
    from ocr_mllm.inference import generate_batch, load_model_and_processor
    from ocr_mllm.inference.loading import DEFAULT_MODEL

    if not Path(DEFAULT_MODEL).is_dir():
        print(f"[samples] the built-in reader {DEFAULT_MODEL} is not in this checkout; skipping the sample reading")
        return []
    start = time.perf_counter()
    model, processor = load_model_and_processor(DEFAULT_MODEL, device=device, dtype="float32")
    images = sorted(SAMPLES.glob("*.png"))
    conversation = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": QUESTIONS["en"]}]}]
    with torch.inference_mode():
        answers = generate_batch(
            model, processor, [conversation] * len(images), [[str(p)] for p in images], max_new_tokens=96
        )
    print(
        f"\nThe built-in reader ({Path(DEFAULT_MODEL).name}) reads the sample lines in {SAMPLES} "
        f"({time.perf_counter() - start:.1f} s, loading included):"
    )
    for image, answer in zip(images, answers):
        print(f"  {image.name:<24} → {answer}")
    print("Your own images: python cli.py --image IMAGE   (or infer.py for a folder, app.py for a browser demo)\n")
    return [{"image": image.name, "answer": answer} for image, answer in zip(images, answers)]


# --------------------------------------------------------------------------------------------------------------------
# data, tokenizer, model
# --------------------------------------------------------------------------------------------------------------------
def make_data(out: Path, args, num_samples: int) -> Path:
    """The synthetic generator's line task → out/{train,heldout}.json + images/ (reused when the settings match)."""
    from dataclasses import asdict

    from ocr_mllm.data import GeneratorConfig, generate_dataset

    config = GeneratorConfig(
        num_samples=num_samples,
        languages=LANGUAGES,
        tasks=("line",),
        seed=args.seed,
        heldout_fraction=(args.eval_samples + DEV_SAMPLES) / num_samples,
        max_chars=args.max_chars,
        max_chars_cjk=args.max_chars_cjk,
        augment=args.augment,
        prompts="blind",
        fonts=args.fonts,
        cjk_characters=args.cjk_characters or None,
    )
    meta = out / "meta.json"
    if meta.exists() and json.loads(meta.read_text()).get("config") == json.loads(json.dumps(asdict(config))):
        print(f"[data] reusing {out}")
        return out
    workers = max(1, os.cpu_count() or 1)
    summary = generate_dataset(str(out), config, workers=workers, progress=False, write_hf=False, overwrite=True)
    print(f"[data] {summary['counts']} in {summary['seconds']:.0f} s")
    return out


def build_tokenizer(train_records: list[dict], vocab_size: int):
    """Byte-level BPE whose merges only build whole characters (each answer character is its own text) and the
    prompt strings: one token per answer character, which generalises to words never seen in training."""
    from ocr_mllm.tokenization import train_bpe_tokenizer
    from processing_ocr_mllm import DEFAULT_SYSTEM_PROMPT

    texts = []
    for record in train_records:
        texts.extend(record["conversations"][1]["value"])
    texts += [*QUESTIONS.values(), DEFAULT_SYSTEM_PROMPT, "system", "user", "assistant"] * 50
    return train_bpe_tokenizer(texts, vocab_size=vocab_size)


# --------------------------------------------------------------------------------------------------------------------
# evaluation: the LLM's generated answers, and the CTC head's reading
# --------------------------------------------------------------------------------------------------------------------
def evaluate(model_dir: Path, records: list[dict], data_dir: Path, question: str, device: str, batch_size: int = 32):
    """Held-out reading per language: the generated answers (joint CTC/attention decoding when the model's config
    asks for it), the LLM alone (`ctc_decoding_weight=0`) and the CTC head's own greedy reading."""
    from ocr_mllm.inference import generate_batch, load_model_and_processor
    from ocr_mllm.text_metrics import reading_scores, rows_by_language

    model, processor = load_model_and_processor(str(model_dir), device=device, dtype="float32")
    joint = getattr(model.config, "ctc_decoding_weight", 0) > 0
    rows = []
    for start in range(0, len(records), batch_size):
        chunk = records[start : start + batch_size]
        images = [[str(data_dir / record["image"])] for record in chunk]
        conversation = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]
        with torch.inference_mode():
            predictions = generate_batch(model, processor, [conversation] * len(chunk), images, max_new_tokens=96)
            llm_alone = (
                generate_batch(
                    model, processor, [conversation] * len(chunk), images, max_new_tokens=96, ctc_decoding_weight=0.0
                )
                if joint
                else predictions
            )
            ctc = ctc_readings(model, processor, [image[0] for image in images])
        for record, prediction, llm, ctc_prediction in zip(chunk, predictions, llm_alone, ctc):
            rows.append(
                {
                    "id": record["id"],
                    "language": record["language"],
                    "reference": record["text"],
                    "prediction": prediction,
                    "llm_prediction": llm,
                    "ctc_prediction": ctc_prediction,
                }
            )
    groups = rows_by_language(rows, LANGUAGES)
    tables = {
        name: {language: reading_scores((r[key], r["reference"]) for r in group) for language, group in groups.items()}
        for name, key in (("generated", "prediction"), ("llm", "llm_prediction"), ("ctc", "ctc_prediction"))
    }
    return tables, rows


def choose_ctc_decoding_weight(model_dir: Path, records: list[dict], data_dir: Path, device: str) -> float:
    """The joint CTC/attention decoding λ with the lowest CER on `records` (dev lines: held-out words, not the test
    lines), written into the model folder's config.json. 0 for a model without a CTC head. Which λ wins depends on
    how far each path has come: a CTC head still on its blank plateau would make every answer empty."""
    from ocr_mllm.inference import generate_batch, load_model_and_processor
    from ocr_mllm.text_metrics import reading_scores

    model, processor = load_model_and_processor(str(model_dir), device=device, dtype="float32")
    if getattr(model, "ctc_head", None) is None or not records:
        return float(getattr(model.config, "ctc_decoding_weight", 0.0))
    conversation = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": QUESTIONS["en"]}]}]
    images = [[str(data_dir / record["image"])] for record in records]
    cer = {}
    for weight in CTC_DECODING_WEIGHTS:
        with torch.inference_mode():
            answers = generate_batch(
                model, processor, [conversation] * len(records), images, max_new_tokens=96, ctc_decoding_weight=weight
            )
        cer[weight] = reading_scores(zip(answers, [record["text"] for record in records]))["cer"]
    best = min(CTC_DECODING_WEIGHTS, key=lambda weight: (cer[weight], weight))
    config_path = Path(model_dir) / "config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    config["ctc_decoding_weight"] = best
    config_path.write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(
        "[decoding] dev CER by joint CTC/attention weight λ: "
        + ", ".join(f"{w:g}: {100 * c:.1f} %" for w, c in cer.items())
        + f" → λ = {best:g}"
    )
    return best


def ctc_readings(model, processor, images: list) -> list[str]:
    if getattr(model, "ctc_head", None) is None:
        return [""] * len(images)
    pixels = processor.image_processor(images, return_tensors="pt").to(model.device)
    ids = model.ctc_read(pixels["pixel_values"], pixels["high_res_pixel_values"])
    return [text.strip() for text in processor.tokenizer.batch_decode(ids, skip_special_tokens=True)]


def format_table(tables: dict) -> str:
    """Generated answers (exact match, CER), and beside them the LLM alone and the CTC head alone (CER)."""
    generated = tables["generated"]
    header = f"| {'language':<8} | {'n':>4} | {'exact match':>11} | {'CER':>6} | {'LLM alone CER':>13} | {'CTC head CER':>12} |"
    rule = f"|{'-' * 10}|{'-' * 6}|{'-' * 13}|{'-' * 8}|{'-' * 15}|{'-' * 14}|"
    lines = [header, rule]
    for language, entry in generated.items():
        lines.append(
            f"| {language:<8} | {entry['n']:>4} | {100 * entry['exact_match']:>10.1f}% | {100 * entry['cer']:>5.1f}% "
            f"| {100 * tables['llm'][language]['cer']:>12.1f}% | {100 * tables['ctc'][language]['cer']:>11.1f}% |"
        )
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------------------------
# training: one stage, everything trainable, a wall-clock budget
# --------------------------------------------------------------------------------------------------------------------
def train(model_path: Path, output: Path, dataset, args, seconds: float):
    from ocr_mllm.training.arguments import DataArguments, ModelArguments, SftConfig
    from ocr_mllm.training.callbacks import TimeBudgetCallback
    from ocr_mllm.training.pipeline import run_stage

    on_gpu = args.device == "cuda"
    training_args = SftConfig(
        output_dir=str(output),
        max_steps=args.steps or 1_000_000,
        per_device_train_batch_size=args.batch_size,
        learning_rate=args.lr,
        lr_scheduler_type="cosine",
        warmup_steps=args.warmup_steps,
        weight_decay=0.01,
        max_length=256,
        logging_steps=50,
        report_to=["tensorboard"],
        seed=args.seed,
        data_seed=args.seed,
        use_cpu=not on_gpu,
        bf16=on_gpu,
        disable_tqdm=True,
        dataloader_num_workers=args.dataloader_workers,
        dataloader_persistent_workers=args.dataloader_workers > 0,
        # resumable: an interrupted run continues with --resume (checkpoints every --save-minutes)
        save_strategy="steps" if args.save_steps else "no",
        save_steps=args.save_steps or 500,
        save_total_limit=2,
        resume_from_checkpoint="last" if args.resume else None,
    )
    # float32 weights (bf16 autocast on a GPU): a model trained from scratch at lr 1e-3 loses too much in bf16 weights
    model_args = ModelArguments(
        model_name_or_path=str(model_path),
        dtype="float32",
        train_downsampler=True,
        unfreeze_vision_tower=True,
        unfreeze_high_res_vision_tower=True,
    )
    budget = TimeBudgetCallback(
        None if args.steps else seconds, time_schedule=not args.steps, warmup_steps=args.warmup_steps
    )
    start = time.perf_counter()
    result = run_stage(
        "sft",
        model_args,
        DataArguments(filter_long_records=False),
        training_args,
        train_dataset=dataset,
        callbacks=[budget],
    )
    elapsed = time.perf_counter() - start
    losses = [entry["loss"] for entry in result.log_history if "loss" in entry]
    if losses:
        print(f"[train] {result.global_step} steps in {elapsed:.0f} s; loss {losses[0]:.3f} → {losses[-1]:.3f}")
    return result, elapsed


def stream_one(model_dir: Path, record: dict, data_dir: Path, device: str) -> str:
    from ocr_mllm.inference import load_model_and_processor, stream_generate

    model, processor = load_model_and_processor(str(model_dir), device=device, dtype="float32")
    conversation = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": QUESTIONS["en"]}]}]
    print(f"\nimage: {data_dir / record['image']}\nreference: {record['text']}\nanswer (streamed): ", end="")
    pieces = []
    for piece in stream_generate(model, processor, conversation, [str(data_dir / record["image"])], max_new_tokens=64):
        pieces.append(piece)
        print(piece, end="")
    print()
    return "".join(pieces)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", default="out/quickstart", help="output folder")
    parser.add_argument(
        "--minutes",
        type=float,
        default=15.0,
        help="wall-clock budget for everything (data, training, evaluation); training gets what the "
        "data and a reserve for evaluation leave",
    )
    parser.add_argument("--preset", default="quickstart", choices=["quickstart", "reader-mini"])
    parser.add_argument("--steps", type=int, default=None, help="train this many steps instead of a time budget")
    parser.add_argument(
        "--num-samples",
        type=int,
        default=None,
        help="synthetic lines, train + held-out (default: 850 per budget minute, at most 60,000)",
    )
    parser.add_argument("--eval-samples", type=int, default=300, help="held-out lines (balanced over languages)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--warmup-steps", type=int, default=200)
    parser.add_argument("--vocab-size", type=int, default=None, help="tokenizer size (default: the preset's)")
    parser.add_argument("--max-chars", type=int, default=40, help="longest English line (characters)")
    parser.add_argument("--max-chars-cjk", type=int, default=12, help="longest Chinese line (characters)")
    parser.add_argument("--augment", default="light", choices=["none", "light", "full"])
    parser.add_argument(
        "--cjk-characters",
        type=int,
        default=300,
        help="Chinese lines use the N most frequent characters (0: every common character)",
    )
    parser.add_argument(
        "--fonts",
        default="all",
        choices=["all", "seen", "unseen"],
        help="font families to render with (seen: leave the benchmark's unseen families out)",
    )
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--dataloader-workers", type=int, default=0)
    parser.add_argument("--save-steps", type=int, default=0, help="checkpoint every N steps (0: no checkpoints)")
    parser.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in --output/model")
    parser.add_argument(
        "--init-from",
        default=None,
        help="start from this trained model folder (e.g. models/reader-mini) instead of random weights",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: the cores idle at start)")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("transformers", "datasets", "trl"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    threads = choose_threads(args.threads)
    torch.set_num_threads(threads)
    print(f"[machine] {os.cpu_count()} cores, {threads} torch thread(s), device {args.device}")
    torch.manual_seed(args.seed)
    samples = read_samples(args.device)
    print(
        "Now a reader trained from random weights, by the same recipe, in a budget of "
        f"{args.minutes:g} minutes (data, training and evaluation):"
    )
    t_start = time.perf_counter()
    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    timings = {}

    num_samples = args.num_samples or int(min(60000, 850 * args.minutes))
    data_dir = make_data(output / "data", args, num_samples)
    train_records = json.loads((data_dir / "train.json").read_text(encoding="utf-8"))
    heldout_records = json.loads((data_dir / "heldout.json").read_text(encoding="utf-8"))
    from ocr_mllm.data import load_training_dataset

    train_dataset = load_training_dataset(str(data_dir), split="train", verify_images=False)
    timings["data_s"] = time.perf_counter() - t_start

    t = time.perf_counter()
    if args.init_from:
        # continue a trained reader (its weights and its tokenizer) instead of random weights
        from transformers import AutoTokenizer

        base_dir = Path(args.init_from)
        tokenizer = AutoTokenizer.from_pretrained(str(base_dir), trust_remote_code=True)
        print(f"[model] continuing {base_dir}: vocabulary {len(tokenizer)}")
    else:
        from ocr_mllm.building import PRESETS, build_tiny_folder

        tokenizer = build_tokenizer(train_records, args.vocab_size or PRESETS[args.preset]["tokenizer_vocab_size"])
        base_dir = build_tiny_folder(output / "base", seed=args.seed, tokenizer=tokenizer, preset=args.preset)
        print(f"[model] {args.preset}: vocabulary {len(tokenizer)}")
    timings["tokenizer_and_model_s"] = time.perf_counter() - t

    eval_reserve = 150 if args.device == "cpu" else 45  # λ choice on dev lines + the tables + the streamed answer
    seconds = max(30.0, args.minutes * 60 - (time.perf_counter() - t_start) - eval_reserve)
    result, timings["train_s"] = train(base_dir, output / "model", train_dataset, args, seconds)

    t = time.perf_counter()
    per_language = defaultdict(list)
    for record in heldout_records:
        per_language[record["language"]].append(record)
    quota = max(1, args.eval_samples // len(LANGUAGES))
    eval_records = [r for language in LANGUAGES for r in per_language[language][:quota]]
    dev_records = [r for language in LANGUAGES for r in per_language[language][quota:]][:DEV_SAMPLES]
    weight = choose_ctc_decoding_weight(output / "model", dev_records, data_dir, args.device)
    tables, rows = evaluate(output / "model", eval_records, data_dir, QUESTIONS["en"], args.device)
    print(
        f"\nHeld-out lines, question {QUESTIONS['en']!r} (generated answers; the LLM alone and the CTC head "
        "alone beside):\n" + format_table(tables)
    )
    zh_tables, _ = evaluate(output / "model", eval_records, data_dir, QUESTIONS["zh"], args.device)
    print(f"\nThe same lines, question {QUESTIONS['zh']!r}:\n" + format_table(zh_tables))
    for row in rows[:: max(1, len(rows) // 6)][:6]:
        print(f"  [{row['language']}] {row['reference']!r} → {row['prediction']!r}")
    timings["eval_s"] = time.perf_counter() - t
    streamed = stream_one(output / "model", eval_records[0], data_dir, args.device)

    timings["total_s"] = time.perf_counter() - t_start
    results = {
        "ctc_decoding_weight": weight,
        "table": tables["generated"],
        "llm_table": tables["llm"],
        "ctc_table": tables["ctc"],
        "table_chinese_question": zh_tables["generated"],
        "timings_s": {k: round(v, 1) for k, v in timings.items()},
        "steps": result.global_step,
        "samples_per_second": round(result.global_step * args.batch_size / max(1e-9, timings["train_s"]), 1),
        "settings": vars(args) | {"num_samples": num_samples, "vocab_size_actual": len(tokenizer)},
        "final_loss": [e["loss"] for e in result.log_history if "loss" in e][-1:],
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "device": torch.cuda.get_device_name() if args.device == "cuda" else "cpu",
        },
        "model_dir": str(output / "model"),
        "streamed_answer": streamed,
        "built_in_reader_on_samples": samples,
    }
    (output / "results.json").write_text(json.dumps(results, indent=2, ensure_ascii=False), encoding="utf-8")
    with open(output / "predictions.jsonl", "w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    print(
        f"\nTotal {timings['total_s'] / 60:.1f} min ({results['samples_per_second']} samples/s in training); "
        f"results in {output / 'results.json'}, model in {output / 'model'}"
    )
    return results


if __name__ == "__main__":
    main()
