"""argparse flags shared by cli.py, infer.py and app.py."""

from __future__ import annotations

import argparse
import logging
from typing import TYPE_CHECKING

from .loading import DEFAULT_MODEL


if TYPE_CHECKING:
    from transformers import PreTrainedModel, ProcessorMixin


# Defaults for people (CLI, app, infer.py). ``generate_batch`` itself defaults to plain greedy decoding.
DEFAULT_GENERATION = {
    "temperature": 0.0,
    "top_p": 0.8,
    "top_k": 0,
    "repetition_penalty": 1.0,
    # GOT's demo uses 20: blocks exact 20-token loops on dense pages without hurting normal repeats ("000", tables).
    "no_repeat_ngram_size": 20,
    "max_new_tokens": 1024,
}


def add_model_args(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("model")
    g.add_argument(
        "--model",
        default=DEFAULT_MODEL,
        help="model folder (the built-in reader models/reader-mini by default, a checkpoint, "
        "scripts/build_model.py output) or Hub id",
    )
    g.add_argument("--device", default="auto", help="auto (CUDA if available, else CPU), cpu, cuda, cuda:1, ...")
    g.add_argument(
        "--dtype",
        default="auto",
        choices=["auto", "bf16", "fp16", "fp32", "bfloat16", "float16", "float32"],
        help="auto: bf16 on CUDA, fp32 on CPU",
    )
    g.add_argument(
        "--load-in",
        dest="load_in",
        default=None,
        choices=["4bit", "8bit"],
        help="quantize the language model with bitsandbytes (CUDA GPU + bitsandbytes needed)",
    )
    g.add_argument("--attn-implementation", default=None, help="sdpa, eager, flash_attention_2 (GPU only), ...")
    g.add_argument(
        "--trust-remote-code",
        action="store_true",
        help="allow running the Python code of a Hub model or of a folder with code that is not this "
        "project's (off: only local folders holding our own model code load)",
    )


def add_generation_args(parser: argparse.ArgumentParser, defaults: dict | None = None) -> None:
    d = dict(DEFAULT_GENERATION)
    d.update(defaults or {})
    g = parser.add_argument_group("generation")
    g.add_argument("--temperature", type=float, default=d["temperature"], help="0 = greedy (default %(default)s)")
    g.add_argument(
        "--top-p", dest="top_p", type=float, default=d["top_p"], help="nucleus sampling (when temperature > 0)"
    )
    g.add_argument("--top-k", dest="top_k", type=int, default=d["top_k"], help="top-k sampling, 0 = off")
    g.add_argument(
        "--repetition-penalty",
        dest="repetition_penalty",
        type=float,
        default=d["repetition_penalty"],
        help="1.0 = off; >1 discourages repeats (can hurt OCR of repeated digits)",
    )
    g.add_argument(
        "--no-repeat-ngram-size",
        dest="no_repeat_ngram_size",
        type=int,
        default=d["no_repeat_ngram_size"],
        help="forbid repeating any n-gram of this size (anti-loop on dense text); 0 = off (default %(default)s)",
    )
    g.add_argument("--max-new-tokens", dest="max_new_tokens", type=int, default=d["max_new_tokens"])


def generation_kwargs_from_args(args: argparse.Namespace) -> dict:
    return {name: getattr(args, name) for name in DEFAULT_GENERATION if hasattr(args, name)}


def load_from_args(args: argparse.Namespace) -> tuple[PreTrainedModel, ProcessorMixin]:
    from .loading import load_model_and_processor

    return load_model_and_processor(
        args.model,
        device=args.device,
        dtype=args.dtype,
        load_in=args.load_in,
        attn_implementation=args.attn_implementation,
        trust_remote_code=True if getattr(args, "trust_remote_code", False) else None,
    )


def setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
