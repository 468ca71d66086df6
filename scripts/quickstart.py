#!/usr/bin/env python
"""CPU quickstart: train a small OCR-MLLM from scratch on short synthetic text lines and measure how well it reads.

    synthetic lines (en, zh-Hans, zh-Hant; train + held-out words never seen in training)
    → a tokenizer trained on that corpus (ChatML specials, one token per character for the answers)
    → a "quickstart"-preset model with random weights
    → stage 1 (plain template: Resampler + high-res projector + downsampler)
    → stage 2 (chat template; LLM, Resampler, projector, downsampler trained; --train-towers for the encoders too)
    → exact match and CER per language on the held-out split, one streamed answer, results.json

    python scripts/quickstart.py --output out/quickstart                # ~9 minutes on 2 idle CPU cores
    python scripts/quickstart.py --output out/qs-long --minutes 30      # a longer training budget
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import os
import platform
import sys
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("DS_ACCELERATOR", "cpu")

import torch  # noqa: E402

LANGUAGES = ("en", "zh-Hans", "zh-Hant")
print = functools.partial(print, flush=True)  # noqa: A001 (child processes must not re-flush our buffer)
logger = logging.getLogger("quickstart")


# --------------------------------------------------------------------------------------------------------------------
# threads: on a shared machine, more torch threads than idle cores makes every step many times slower
# --------------------------------------------------------------------------------------------------------------------
def idle_cores(seconds: float = 1.0) -> float | None:
    """Cores left idle by other processes over `seconds` (from /proc/stat), None where unknown."""
    def sample():
        with open("/proc/stat") as handle:
            values = [int(v) for v in handle.readline().split()[1:]]
        return values[3] + values[4], sum(values)  # idle + iowait, total

    try:
        idle0, total0 = sample()
        time.sleep(seconds)
        idle1, total1 = sample()
    except (OSError, ValueError, IndexError):
        return None
    cores = os.cpu_count() or 1
    return cores * (idle1 - idle0) / max(1, total1 - total0)


def choose_threads(requested: int | None) -> int:
    if requested:
        return requested
    cores = os.cpu_count() or 1
    idle = idle_cores()
    if idle is None:
        return cores
    return max(1, min(cores, int(idle + 0.5)))


# --------------------------------------------------------------------------------------------------------------------
# data
# --------------------------------------------------------------------------------------------------------------------
def make_data(out: Path, num_samples: int, seed: int, max_chars: int, augment: str, heldout_fraction: float,
              cjk_characters: int | None = None) -> Path:
    """The data engineer's generator (line task) → out/{train,heldout}.json + images/."""
    from dataclasses import asdict

    from ocr_mllm.data import GeneratorConfig, generate_dataset

    config = GeneratorConfig(
        num_samples=num_samples,
        languages=LANGUAGES,
        tasks=("line",),
        seed=seed,
        heldout_fraction=heldout_fraction,
        max_chars=max_chars,
        augment=augment,
        prompts="fixed",
        cjk_characters=cjk_characters,
    )
    if (out / "meta.json").exists() and json.loads((out / "meta.json").read_text()).get("config") == json.loads(
        json.dumps(asdict(config))
    ):
        print(f"[data] reusing {out}")
        return out
    summary = generate_dataset(str(out), config, workers=max(1, min(4, os.cpu_count() or 1)), progress=False,
                               write_hf=False, overwrite=True)
    print(f"[data] {summary['counts']} in {summary['seconds']:.0f} s")
    return out


def load_split(data_dir: Path, split: str):
    from ocr_mllm.data import load_training_dataset

    return load_training_dataset(str(data_dir), split=split, verify_images=False)


def read_records(data_dir: Path, split: str) -> list[dict]:
    return json.loads((data_dir / f"{split}.json").read_text(encoding="utf-8"))


# --------------------------------------------------------------------------------------------------------------------
# tokenizer and model
# --------------------------------------------------------------------------------------------------------------------
def build_tokenizer(train_records: list[dict], vocab_size: int):
    """Byte-level BPE whose merges only build whole characters (CJK characters are 3 bytes) and the fixed prompt
    strings: answers are read character by character, which generalises to words never seen in training."""
    from ocr_mllm.tokenization import train_bpe_tokenizer
    from processing_ocr_mllm import DEFAULT_SYSTEM_PROMPT

    texts = []
    for record in train_records:
        for turn in record["conversations"]:
            if turn["from"] == "gpt":
                texts.extend(turn["value"])  # one text per character
            else:
                texts.append(turn["value"].replace("<image>", "").strip())
    texts += [DEFAULT_SYSTEM_PROMPT, "system", "user", "assistant"] * 50
    return train_bpe_tokenizer(texts, vocab_size=vocab_size)


def build_base_model(out: Path, tokenizer, seed: int) -> Path:
    from ocr_mllm.building import build_tiny_folder

    return build_tiny_folder(out, seed=seed, tokenizer=tokenizer, preset="quickstart")


# --------------------------------------------------------------------------------------------------------------------
# metrics
# --------------------------------------------------------------------------------------------------------------------


def evaluate(model_dir: Path, records: list[dict], data_dir: Path, batch_size: int = 32) -> tuple[dict, list]:
    from ocr_mllm.inference import generate_batch, load_model_and_processor
    from ocr_mllm.text_metrics import levenshtein, reading_scores, rows_by_language

    model, processor = load_model_and_processor(str(model_dir), device="cpu", dtype="float32")
    rows = []
    for start in range(0, len(records), batch_size):
        chunk = records[start : start + batch_size]
        conversations, images = [], []
        for record in chunk:
            question = record["conversations"][0]["value"].replace("<image>", "").strip()
            conversations.append([{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}])
            images.append([str(data_dir / record["image"])])
        with torch.inference_mode():
            predictions = generate_batch(model, processor, conversations, images, max_new_tokens=32)
        for record, prediction in zip(chunk, predictions):
            reference = record["conversations"][1]["value"]
            rows.append({"id": record["id"], "language": record["language"], "reference": reference,
                         "prediction": prediction, "edits": levenshtein(prediction, reference)})
    table = {language: reading_scores((r["prediction"], r["reference"]) for r in group)
             for language, group in rows_by_language(rows, LANGUAGES).items()}
    return table, rows


def format_table(table: dict) -> str:
    lines = [f"| {'language':<8} | {'n':>4} | {'exact match':>11} | {'CER':>6} |", f"|{'-' * 10}|{'-' * 6}|{'-' * 13}|{'-' * 8}|"]
    for language, entry in table.items():
        lines.append(f"| {language:<8} | {entry['n']:>4} | {100 * entry['exact_match']:>10.1f}% | {100 * entry['cer']:>5.1f}% |")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------------------------
# training
# --------------------------------------------------------------------------------------------------------------------
def train_stage(stage: str, model_path: Path, output: Path, dataset, steps: int | None, learning_rate: float,
                batch_size: int, seconds: float | None, seed: int, warmup_steps: int, train_towers: bool = False,
                weight_decay: float = 0.0):
    """Train one stage for `steps` steps (cosine schedule), or — steps None — for `seconds` of wall-clock time with a
    cosine schedule over time (TimeBudgetCallback), so the run fits the budget on any machine."""
    from ocr_mllm.training.arguments import DataArguments, ModelArguments, PretrainConfig, SftConfig
    from ocr_mllm.training.callbacks import TimeBudgetCallback
    from ocr_mllm.training.pipeline import run_stage

    config_class = PretrainConfig if stage == "pretrain" else SftConfig
    training_args = config_class(
        output_dir=str(output),
        max_steps=steps or 1_000_000,
        per_device_train_batch_size=batch_size,
        learning_rate=learning_rate,
        lr_scheduler_type="cosine",
        warmup_steps=warmup_steps,
        weight_decay=weight_decay,
        max_length=256,
        logging_steps=max(1, steps // 20) if steps else 20,
        save_strategy="no",
        report_to=["tensorboard"],
        seed=seed,
        data_seed=seed,
        use_cpu=True,
        bf16=False,
        # a time-budgeted run has no step count for a progress bar: print the log lines instead, each with the time
        # used of the budget (TimeBudgetCallback)
        disable_tqdm=not steps,
        dataloader_num_workers=0,
    )
    model_args = ModelArguments(
        model_name_or_path=str(model_path),
        train_downsampler=True,  # random convs here (no pretrained SAM), so they must learn
        unfreeze_vision_tower=stage == "sft" and train_towers,
        unfreeze_high_res_vision_tower=stage == "sft" and train_towers,
    )
    data_args = DataArguments(filter_long_records=False)
    start = time.perf_counter()
    result = run_stage(stage, model_args, data_args, training_args, train_dataset=dataset,
                       callbacks=[TimeBudgetCallback(None if steps else seconds, time_schedule=not steps,
                                                     warmup_steps=warmup_steps)])
    elapsed = time.perf_counter() - start
    losses = [entry["loss"] for entry in result.log_history if "loss" in entry]
    print(f"[{stage}] {result.global_step} steps in {elapsed:.0f} s; loss {losses[0]:.3f} → {losses[-1]:.3f}")
    return result, elapsed


def stream_one(model_dir: Path, record: dict, data_dir: Path) -> str:
    from ocr_mllm.inference import load_model_and_processor, stream_generate

    model, processor = load_model_and_processor(str(model_dir), device="cpu", dtype="float32")
    question = record["conversations"][0]["value"].replace("<image>", "").strip()
    conversation = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]
    print(f"\nimage: {data_dir / record['image']}\nquestion: {question}\nreference: {record['conversations'][1]['value']}")
    print("answer (streamed): ", end="", flush=True)
    pieces = []
    for piece in stream_generate(model, processor, conversation, [str(data_dir / record["image"])], max_new_tokens=32):
        pieces.append(piece)
        print(piece, end="", flush=True)
    print()
    return "".join(pieces)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", default="out/quickstart", help="output folder")
    parser.add_argument("--minutes", type=float, default=8.5,
                        help="training budget (stage 1 + stage 2) in minutes: 4%% for stage 1, the rest for stage 2, "
                             "each with a cosine schedule over wall-clock time")
    parser.add_argument("--steps", type=int, default=None, help="stage-2 steps (instead of the time budget)")
    parser.add_argument("--pretrain-steps", type=int, default=None, help="stage-1 steps (instead of the time budget)")
    parser.add_argument("--num-samples", type=int, default=None,
                        help="synthetic images, train + held-out (default: scales with the budget, 9000 for 8.5 min)")
    parser.add_argument("--eval-samples", type=int, default=300, help="held-out images to evaluate (balanced over languages)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--train-towers", action="store_true",
                        help="also train both (random) encoders in stage 2; by default they stay frozen: trained from "
                             "scratch in a short run their features wash out, while the Resampler, projector, "
                             "downsampler and LLM learn to read the random features well")
    parser.add_argument("--lr", type=float, default=1e-3, help="stage-2 learning rate")
    parser.add_argument("--weight-decay", type=float, default=0.0, help="stage-2 AdamW weight decay")
    parser.add_argument("--pretrain-lr", type=float, default=1e-4,
                        help="stage-1 learning rate. Lower than the real recipe's 1e-3: with a random LLM there is "
                             "nothing to align to, and a strong stage 1 teaches the projectors a constant that drowns "
                             "the image content")
    parser.add_argument("--vocab-size", type=int, default=4096)
    parser.add_argument("--max-chars", type=int, default=8, help="longest line (characters)")
    parser.add_argument("--augment", default="none", choices=["none", "light", "full"])
    parser.add_argument("--cjk-characters", type=int, default=300,
                        help="Chinese lines use the N most frequent characters (0: every common character; then most of "
                             "the ~2,100 characters in 9,000 samples occur fewer than 5 times, too few to learn)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads (default: the cores idle at start; other jobs on the machine would "
                             "otherwise make every step many times slower)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("transformers", "datasets", "trl"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    threads = choose_threads(args.threads)
    torch.set_num_threads(threads)
    print(f"[machine] {os.cpu_count()} cores, using {threads} torch thread(s)"
          + ("" if args.threads else " (idle cores now; --threads to force)"))
    torch.manual_seed(args.seed)

    t_start = time.perf_counter()
    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    timings = {}

    # 1. data
    num_samples = args.num_samples or int(max(3000, min(60000, 9000 * args.minutes / 8.5)))
    t = time.perf_counter()
    data_dir = make_data(output / "data", num_samples, args.seed, args.max_chars, args.augment, heldout_fraction=0.05,
                         cjk_characters=args.cjk_characters or None)
    train_records = read_records(data_dir, "train")
    heldout_records = read_records(data_dir, "heldout")
    train_dataset = load_split(data_dir, "train")
    timings["data_s"] = time.perf_counter() - t

    # 2. tokenizer + 3. model
    t = time.perf_counter()
    tokenizer = build_tokenizer(train_records, args.vocab_size)
    base_dir = build_base_model(output / "base", tokenizer, args.seed)
    timings["tokenizer_and_model_s"] = time.perf_counter() - t
    print(f"[model] {base_dir}: vocabulary {len(tokenizer)}")

    # 4./5. the two stages: fixed step counts, or (default) a share of the time budget each
    budget = args.minutes * 60
    stage1, timings["stage1_s"] = train_stage(
        "pretrain", base_dir, output / "stage1", train_dataset, args.pretrain_steps, args.pretrain_lr, args.batch_size,
        seconds=0.04 * budget, seed=args.seed, warmup_steps=5)
    stage2, timings["stage2_s"] = train_stage(
        "sft", output / "stage1", output / "stage2", train_dataset, args.steps, args.lr, args.batch_size,
        seconds=budget - timings["stage1_s"], seed=args.seed, warmup_steps=30, train_towers=args.train_towers,
        weight_decay=args.weight_decay)

    # 6. evaluation on the held-out split (words never seen in training)
    t = time.perf_counter()
    per_language = defaultdict(list)
    for record in heldout_records:
        per_language[record["language"]].append(record)
    quota = max(1, args.eval_samples // len(LANGUAGES))
    eval_records = [r for language in LANGUAGES for r in per_language[language][:quota]]
    table, rows = evaluate(output / "stage2", eval_records, data_dir)
    timings["eval_s"] = time.perf_counter() - t
    print("\nHeld-out reading (greedy):\n" + format_table(table))
    for row in rows[:: max(1, len(rows) // 6)][:6]:
        print(f"  [{row['language']}] {row['reference']!r} → {row['prediction']!r}")

    # 7. one streamed answer
    streamed = stream_one(output / "stage2", eval_records[0], data_dir)

    timings["total_s"] = time.perf_counter() - t_start
    results = {
        "table": table,
        "timings_s": {k: round(v, 1) for k, v in timings.items()},
        "steps": {"stage1": stage1.global_step, "stage2": stage2.global_step,
                  "stage2_seconds_per_step": round(timings["stage2_s"] / max(1, stage2.global_step), 3)},
        "settings": {k: v for k, v in vars(args).items()} | {"num_samples": num_samples, "vocab_size_actual": len(tokenizer)},
        "final_loss": {
            "stage1": next((e["train_loss"] for e in reversed(stage1.log_history) if "train_loss" in e), None),
            "stage2": [e["loss"] for e in stage2.log_history if "loss" in e][-1:],
        },
        "machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                    "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(), "torch": torch.__version__},
        "model_dir": str(output / "stage2"),
        "streamed_answer": streamed,
    }
    with open(output / "results.json", "w", encoding="utf-8") as handle:
        json.dump(results, handle, indent=2, ensure_ascii=False)
    with open(output / "predictions.jsonl", "w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    print(f"\nTotal {timings['total_s'] / 60:.1f} min; results in {output / 'results.json'}, model in {output / 'stage2'}")
    return results


if __name__ == "__main__":
    main()
