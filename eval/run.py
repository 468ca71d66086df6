"""Benchmark evaluation entry point.

    # generate with a model, then score (predictions are appended as they come; re-running resumes)
    python -m eval.run --model DIR --task textvqa --data playground/data/eval/textvqa --output out/textvqa \\
        [--batch-size 8] [--limit N] [--prompt-style plain|original]
    # score an existing predictions file (JSONL: {"question_id": ..., "prediction": "raw model text"})
    python -m eval.run --task mme --data MME_Benchmark_release_version --predictions preds.jsonl --output out/mme
    # a whole suite, one table at the end
    python -m eval.run --task all --config eval/suite.yaml [--model DIR] [--output DIR]
    # MME from the official eval_tool results folder (<subtask>.txt: image, question, Yes|No, prediction); no images
    python -m eval.run --task mme --data eval_tool/Your_Results --output out/mme
    # MMBench with VLMEvalKit's LLM-judge fallback for answers the rules cannot read (off unless --judge-url is given)
    OPENAI_API_KEY=... python -m eval.run --task mmbench --data MMBench_DEV_EN.tsv --predictions preds.jsonl \\
        --output out/mmbench --judge-url https://api.openai.com/v1 [--judge-model gpt-3.5-turbo-0125]
    # data-parallel: every process takes every N-th question into its own resumable part file, rank 0 merges + scores
    torchrun --nproc_per_node 8 -m eval.run --model DIR --task docvqa --data DocVQA --output out/docvqa
    accelerate launch --num_processes 8 -m eval.run --model DIR --task docvqa --data DocVQA --output out/docvqa

    # any lmms-eval task with our model (the plug-in registers --model ocr_mllm; docs/eval.md)
    python -m lmms_eval --model ocr_mllm --model_args pretrained=DIR --tasks ocrbench --batch_size 8

Tasks: textvqa, mme, mmbench_en (alias mmbench), mmbench_cn, mmvet, ocrbench, docvqa, chartqa. See docs/eval.md.
Files written to OUT: <task>_predictions.jsonl, <task>_results.json, <task>_results.md, <task>_run.json (what
generated the predictions) and the task's own files (submissions, MME's official-format results, MM-Vet grades).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ocr_mllm.inference.loading import DEFAULT_MODEL, InferenceSetupError

from .common import (
    PROMPT_STYLES,
    EvalDataError,
    ImageStore,
    Sample,
    TaskResult,
    apply_limit,
    check_unique_ids,
    load_predictions,
    markdown_table,
    qid_key,
    read_json,
    write_json,
)
from .mmvet import GraderError
from .tasks import TASKS, TaskSpec, get_task


if TYPE_CHECKING:
    from transformers import PreTrainedModel, ProcessorMixin


logger = logging.getLogger("eval")

_MODEL_CACHE: dict[tuple, tuple] = {}


def load_model(path: str, device: str = "auto", dtype: str = "auto") -> tuple[PreTrainedModel, ProcessorMixin]:
    """``ocr_mllm.inference.load_model_and_processor``, cached for the process (a suite loads the model once)."""
    key = (os.path.abspath(path) if os.path.exists(path) else path, device, dtype)
    if key not in _MODEL_CACHE:
        from ocr_mllm.inference import load_model_and_processor

        _MODEL_CACHE.clear()
        _MODEL_CACHE[key] = load_model_and_processor(path, device=device, dtype=dtype)
    return _MODEL_CACHE[key]


def build_messages(prompt: str) -> list[dict]:
    return [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}]


def generate_predictions(
    samples: list[Sample],
    pred_path: Path,
    model_path: str,
    batch_size: int,
    max_new_tokens: int,
    device: str = "auto",
    dtype: str = "auto",
    progress: bool = True,
) -> dict:
    """Run the model on the samples not yet in ``pred_path`` (through ``ocr_mllm.inference.run_batched_jsonl``:
    length-sorted batches, lines appended as each batch finishes, existing ids skipped)."""
    from ocr_mllm.inference import run_batched_jsonl

    model, processor = load_model(model_path, device, dtype)
    by_key = {s.key: s for s in samples}

    def build_inputs(record: dict):
        s = by_key[qid_key(record["question_id"])]
        return build_messages(s.prompt), [s.load_image()]

    records = [{"question_id": s.question_id, "prompt": s.prompt} for s in samples]
    return run_batched_jsonl(
        model,
        processor,
        records,
        str(pred_path),
        build_inputs,
        batch_size=batch_size,
        id_key="question_id",
        generation_kwargs={"max_new_tokens": max_new_tokens},
        progress=progress,
    )


# ---------------------------------------------------------------------------------------------------------------------
# Data-parallel generation (torchrun / accelerate launch)
# ---------------------------------------------------------------------------------------------------------------------


def dist_env() -> tuple[int, int, int]:
    """(rank, world size, local rank) from the variables torchrun and ``accelerate launch`` set; (0, 1, 0) alone."""
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    rank = int(os.environ.get("RANK", "0") or 0)
    return rank, world, int(os.environ.get("LOCAL_RANK", str(rank)) or rank)


def _dist():
    """torch.distributed on gloo (only barriers and small objects go through it), set up once per process."""
    import datetime

    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("gloo", timeout=datetime.timedelta(hours=12))  # ranks wait for the slowest shard
    return dist


def part_files(out: Path, task: str) -> list[Path]:
    return sorted(out.glob(f"{task}_predictions.part*-of-*.jsonl"))


def merge_parts(pred_path: Path, parts: list[Path], samples: list[Sample]) -> int:
    """Fold the per-rank parts into ``pred_path`` (benchmark order, then any other ids), atomically, and delete them.
    Returns the number of lines taken from the parts."""
    from .common import read_jsonl, write_atomically

    rows: dict[str, dict] = {}
    for path in [pred_path] + parts:
        if path.is_file():
            for row in read_jsonl(path):
                if "question_id" in row:
                    rows.setdefault(qid_key(row["question_id"]), row)
    n_main = len(read_jsonl(pred_path)) if pred_path.is_file() else 0
    order = [s.key for s in samples if s.key in rows]
    order += [k for k in rows if k not in set(order)]
    write_atomically(pred_path, "".join(json.dumps(rows[k], ensure_ascii=False) + "\n" for k in order))
    for path in parts:
        path.unlink()
    return len(rows) - n_main


def _generate_sharded(
    spec: TaskSpec,
    samples: list[Sample],
    out: Path,
    pred_file: Path,
    meta: dict,
    overwrite: bool,
    model: str,
    batch_size: int,
    new_tokens: int,
    device: str,
    dtype: str,
    progress: bool,
) -> dict | None:
    """Each rank generates every world-th question not yet in ``pred_file`` into its own resumable part file; rank 0
    merges the parts into ``pred_file`` and returns the summed stats; the other ranks return None."""
    rank, world, local_rank = dist_env()
    dist = _dist()
    error = [None]
    if rank == 0:
        try:
            _check_run_meta(
                out / f"{spec.name}_run.json", pred_file, meta, overwrite, parts=part_files(out, spec.name)
            )
            merge_parts(pred_file, part_files(out, spec.name), samples)  # parts of an earlier, interrupted run
        except EvalDataError as exc:
            error[0] = str(exc)
    dist.broadcast_object_list(error, src=0)
    if error[0] is not None:
        raise EvalDataError(error[0])
    from .common import load_predictions as _load

    done = set(_load(pred_file)) if pred_file.is_file() else set()
    shard = [s for i, s in enumerate(samples) if i % world == rank and s.key not in done]
    if device == "auto":
        import torch

        device = f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu"
    part = out / f"{spec.name}_predictions.part{rank}-of-{world}.jsonl"
    logger.info("rank %d/%d: %d questions -> %s", rank, world, len(shard), part.name)
    stats = (
        generate_predictions(shard, part, model, batch_size, new_tokens, device, dtype, progress and rank == 0)
        if shard
        else {"total": 0, "done": 0, "failed": 0}
    )
    gathered = [None] * world
    dist.all_gather_object(gathered, {k: v for k, v in stats.items() if isinstance(v, (int, float))})
    if rank != 0:
        return None
    merge_parts(pred_file, part_files(out, spec.name), samples)
    summed = {k: sum(g.get(k, 0) for g in gathered) for k in ("total", "done", "failed", "skipped_existing")}
    summed["processes"] = world
    return summed


def _check_run_meta(
    meta_path: Path, pred_path: Path, meta: dict, overwrite: bool, parts: list[Path] | None = None
) -> None:
    """Refuse to mix predictions made with another model / prompt style / token budget into one file."""
    if overwrite:
        for p in [pred_path, meta_path] + list(parts or []):
            if p.exists():
                p.unlink()
    elif meta_path.is_file() and pred_path.is_file():
        old = read_json(meta_path)
        diff = {k: (old.get(k), v) for k, v in meta.items() if old.get(k) != v}
        if diff:
            changes = ", ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in diff.items())
            raise EvalDataError(
                f"{pred_path} was made with different settings ({changes}); use another --output or pass --overwrite"
            )
    write_json(meta_path, meta)


def run_task(
    task: str,
    data: str,
    output: str | os.PathLike,
    model: str | None = None,
    predictions: str | None = None,
    batch_size: int = 8,
    limit: int | None = None,
    prompt_style: str = "plain",
    max_new_tokens: int | None = None,
    device: str = "auto",
    dtype: str = "auto",
    split: str | None = None,
    hub_config: str | None = None,
    circular: bool = True,
    overwrite: bool = False,
    progress: bool = True,
    judge_url: str | None = None,
    judge_model: str | None = None,
) -> TaskResult | None:
    """Load a benchmark, generate (unless ``predictions`` is given), score, write results. Returns the TaskResult.

    Under torchrun / ``accelerate launch`` (WORLD_SIZE > 1) the questions are sharded over the processes, each writes
    ``<task>_predictions.part<rank>-of-<world>.jsonl`` (resumable), and rank 0 merges them into
    ``<task>_predictions.jsonl``, scores and returns the result; the other ranks return None."""
    spec = get_task(task)
    if prompt_style not in PROMPT_STYLES:
        raise EvalDataError(f"--prompt-style must be one of {PROMPT_STYLES}")
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    opts: dict[str, Any] = dict(
        spec.options,
        split=split,
        hub_config=hub_config,
        circular=circular,
        task_name=spec.name,
        progress=progress,
        judge_url=judge_url,
        judge_model=judge_model,
    )
    opts["image_store"] = ImageStore(out / "_images" / spec.name)
    samples = spec.module.load_samples(str(data), prompt_style, opts)
    check_unique_ids(samples, spec.name)
    samples = apply_limit(samples, limit)
    run_info: dict[str, Any] = {
        "task": spec.name,
        "data": str(data),
        "prompt_style": prompt_style,
        "limit": limit,
        "questions": len(samples),
    }
    # result files that carry their own predictions (MME's eval_tool layout)
    embedded_fn = getattr(spec.module, "embedded_predictions", None)
    embedded = embedded_fn(samples) if embedded_fn is not None else None
    if embedded is not None and model is not None and predictions is None:
        raise EvalDataError(f"{data} holds predictions already (a results folder); score it without --model")
    if model is None and predictions is None and embedded is None:
        model = DEFAULT_MODEL  # the built-in reader
        if not os.path.isdir(model):
            raise EvalDataError(
                "give --model (generate) or --predictions (score an existing file); the built-in "
                f"reader {model} is not in this checkout"
            )

    pred_file = None
    if predictions is not None:
        pred_file = Path(predictions)
        run_info["predictions"] = str(pred_file)
    elif embedded is not None:
        run_info["predictions"] = f"embedded in {data}"
    else:
        pred_file = out / f"{spec.name}_predictions.jsonl"
        new_tokens = max_new_tokens or spec.max_new_tokens
        meta = {
            "model": os.path.abspath(model) if os.path.exists(model) else model,
            "prompt_style": prompt_style,
            "max_new_tokens": new_tokens,
            "split": split,
            "circular": circular,
        }
        if dist_env()[1] > 1:
            stats = _generate_sharded(
                spec, samples, out, pred_file, meta, overwrite, model, batch_size, new_tokens, device, dtype, progress
            )
            if stats is None:
                return None  # not rank 0: its part is merged and scored by rank 0
        else:
            _check_run_meta(
                out / f"{spec.name}_run.json", pred_file, meta, overwrite, parts=part_files(out, spec.name)
            )
            merge_parts(pred_file, part_files(out, spec.name), samples)  # a data-parallel run that was killed
            stats = generate_predictions(samples, pred_file, model, batch_size, new_tokens, device, dtype, progress)
        run_info.update(
            model=meta["model"],
            max_new_tokens=new_tokens,
            batch_size=batch_size,
            predictions=str(pred_file),
            generation={k: v for k, v in stats.items() if k != "failed_ids"},
        )
        if stats.get("failed"):
            logger.warning(
                "%s: %d records failed to generate (ids: %s)",
                spec.name,
                stats["failed"],
                stats.get("failed_ids", [])[:10],
            )

    if dist_env()[0] != 0:
        return None  # score-only under a launcher: rank 0 scores
    preds = load_predictions(pred_file) if pred_file is not None else embedded
    keys = {s.key for s in samples}
    unknown = sum(1 for k in preds if k not in keys)
    result = spec.module.score(samples, preds, out, opts)
    if unknown and predictions is not None and limit is None:
        result.notes.append(f"{unknown} predictions have ids that are not in the benchmark (ignored)")
    doc = result.to_json()
    doc["run"] = run_info
    write_json(out / f"{spec.name}_results.json", doc)
    (out / f"{spec.name}_results.md").write_text(result.to_markdown(), encoding="utf-8")
    return result


# ---------------------------------------------------------------------------------------------------------------------
# Suite
# ---------------------------------------------------------------------------------------------------------------------

SUITE_KEYS = {
    "data",
    "predictions",
    "prompt_style",
    "limit",
    "split",
    "hub_config",
    "circular",
    "max_new_tokens",
    "batch_size",
    "enabled",
}


def run_suite(
    config_path: str,
    model: str | None = None,
    output: str | None = None,
    limit: int | None = None,
    batch_size: int | None = None,
    prompt_style: str | None = None,
    device: str = "auto",
    dtype: str = "auto",
    overwrite: bool = False,
    progress: bool = True,
    tasks: list[str] | None = None,
) -> tuple[list[list[Any]], int]:
    """Run every enabled task of a suite YAML; returns (table rows, number of failed tasks)."""
    import yaml

    cfg = yaml.safe_load(Path(config_path).read_text(encoding="utf-8")) or {}
    model = model or cfg.get("model")
    root = Path(output or cfg.get("output") or "eval_results")
    rows: list[list[Any]] = []
    failures = 0
    summary = {}
    for name, tcfg in (cfg.get("tasks") or {}).items():
        tcfg = dict(tcfg or {})
        unknown = set(tcfg) - SUITE_KEYS
        if unknown:
            raise EvalDataError(f"{config_path}: task {name}: unknown keys {sorted(unknown)}")
        spec = get_task(name)
        if tasks and spec.name not in tasks and name not in tasks:
            continue
        if not tcfg.get("enabled", True):
            continue
        try:
            if "data" not in tcfg:
                raise EvalDataError(f"task {name}: no 'data' in the suite config")
            preds = tcfg.get("predictions")
            result = run_task(
                spec.name,
                str(tcfg["data"]),
                root / spec.name,
                model=None if preds else model,
                predictions=preds,
                batch_size=batch_size or tcfg.get("batch_size") or cfg.get("batch_size") or 8,
                limit=limit if limit is not None else tcfg.get("limit", cfg.get("limit")),
                prompt_style=prompt_style or tcfg.get("prompt_style") or cfg.get("prompt_style") or "plain",
                max_new_tokens=tcfg.get("max_new_tokens", cfg.get("max_new_tokens")),
                device=device,
                dtype=dtype,
                split=tcfg.get("split"),
                hub_config=tcfg.get("hub_config"),
                circular=tcfg.get("circular", True),
                overwrite=overwrite,
                progress=progress,
            )
            if result is None:  # a data-parallel rank other than 0
                continue
            summary[spec.name] = result.headline
            for k, v in result.headline.items():
                rows.append([spec.name, k, "n/a" if v is None else v])
        except Exception as exc:  # one broken task must not lose the others' numbers
            failures += 1
            logger.error("task %s failed: %s", name, exc, exc_info=logger.isEnabledFor(logging.DEBUG))
            summary[spec.name] = {"error": str(exc)}
            rows.append([spec.name, "error", str(exc)[:200]])
    if dist_env()[0] != 0:
        return rows, failures
    write_json(root / "suite_results.json", summary)
    (root / "suite_results.md").write_text(markdown_table(["task", "metric", "value"], rows) + "\n", encoding="utf-8")
    return rows, failures


# ---------------------------------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m eval.run", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--task", required=True, help=f"{', '.join(TASKS)}, or 'all' with --config")
    p.add_argument("--data", help="benchmark files (official layout) or a Hub dataset id")
    p.add_argument("--output", help="output folder (suite: root folder, one sub-folder per task)")
    p.add_argument(
        "--model",
        help="model folder or Hub id (default: the built-in reader models/reader-mini, unless "
        "--predictions or a results folder is scored)",
    )
    p.add_argument("--predictions", help="score this JSONL instead of generating (no model is loaded)")
    p.add_argument("--config", help="suite YAML (with --task all), e.g. eval/suite.yaml")
    p.add_argument("--batch-size", type=int, default=None, help="generation batch size (default 8)")
    p.add_argument(
        "--limit",
        type=int,
        default=None,
        help="first N questions (MME: N images; MMBench circular: N questions with all rotations)",
    )
    p.add_argument(
        "--prompt-style",
        choices=PROMPT_STYLES,
        default=None,
        help="plain (default): the benchmark's text; original: the original repo's (LLaVA-1.5) prompts, "
        "incl. TextVQA reference OCR tokens",
    )
    p.add_argument("--max-new-tokens", type=int, default=None, help="default: per task (MM-Vet 1024, others 128)")
    p.add_argument("--device", default="auto")
    p.add_argument("--dtype", default="auto", help="auto (CUDA: bf16, CPU: fp32), bf16, fp16, fp32")
    p.add_argument("--split", default=None, help="DocVQA/ChartQA split (val/test) or the Hub split")
    p.add_argument("--hub-config", default=None, help="Hub dataset config name")
    p.add_argument("--no-circular", action="store_true", help="MMBench: original rows only (single pass)")
    p.add_argument(
        "--judge-url",
        default=None,
        help="MMBench: OpenAI-compatible endpoint (e.g. http://127.0.0.1:8000/v1; key from OPENAI_API_KEY) "
        "of the LLM judge that reads answers the rules cannot (VLMEvalKit's fallback); off by default",
    )
    p.add_argument(
        "--judge-model", default=None, help="MMBench judge model (default gpt-3.5-turbo-0125, VLMEvalKit's)"
    )
    p.add_argument("--overwrite", action="store_true", help="discard existing predictions in the output folder")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    progress = not args.no_progress
    try:
        if args.task.lower() == "all":
            if not args.config:
                raise EvalDataError("--task all needs --config (e.g. eval/suite.yaml)")
            rows, failures = run_suite(
                args.config,
                model=args.model,
                output=args.output,
                limit=args.limit,
                batch_size=args.batch_size,
                prompt_style=args.prompt_style,
                device=args.device,
                dtype=args.dtype,
                overwrite=args.overwrite,
                progress=progress,
            )
            if dist_env()[0] == 0:
                print(markdown_table(["task", "metric", "value"], rows))
            return 1 if failures else 0
        if not args.data or not args.output:
            raise EvalDataError("--data and --output are required (or --task all --config SUITE)")
        result = run_task(
            args.task,
            args.data,
            args.output,
            model=args.model,
            predictions=args.predictions,
            batch_size=args.batch_size or 8,
            limit=args.limit,
            prompt_style=args.prompt_style or "plain",
            max_new_tokens=args.max_new_tokens,
            device=args.device,
            dtype=args.dtype,
            split=args.split,
            hub_config=args.hub_config,
            circular=not args.no_circular,
            overwrite=args.overwrite,
            progress=progress,
            judge_url=args.judge_url,
            judge_model=args.judge_model,
        )
    except (EvalDataError, GraderError, KeyError, FileNotFoundError, InferenceSetupError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if result is None:  # data-parallel rank other than 0: rank 0 merges, scores and prints
        return 0
    print(result.to_markdown())
    print(f"results: {Path(args.output) / (get_task(args.task).name + '_results.json')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
