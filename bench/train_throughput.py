#!/usr/bin/env python
"""Training throughput of OCR-MLLM: tokens/s and model FLOPs utilisation (MFU) of a full training step (forward,
backward, AdamW) against a matmul peak measured in the same run.

    python bench/train_throughput.py                  # quickstart + small configs (~2 min on 2 idle cores)
    python bench/train_throughput.py --quick          # tiny sizes, smoke test
    python bench/train_throughput.py --device cuda --dtype bf16

FLOPs per step are counted by `torch.utils.flop_counter.FlopCounterMode` on one real step (matmuls, convolutions,
attention), so the MFU covers both towers, the Resampler and the LLM. The peak is the best of several large fp32 (or
bf16) matmuls on the same device and threads. Writes bench/results/train_throughput.{json,png}.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from pathlib import Path

import torch

from bench.common import RESULTS_DIR, figure, grouped_bars, log, machine_info, write_results


DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}

# "small": a 512-wide, 8-layer LLM and larger towers than "quickstart", same image sizes
SMALL_OVERRIDES = {
    "text_config": {
        "hidden_size": 512,
        "intermediate_size": 1536,
        "num_hidden_layers": 8,
        "num_attention_heads": 8,
        "num_key_value_heads": 4,
    },
    "vision_config": {"hidden_size": 256, "intermediate_size": 1024, "num_hidden_layers": 4, "num_attention_heads": 4},
    "high_res_vision_config": {
        "hidden_size": 256,
        "mlp_dim": 1024,
        "num_hidden_layers": 4,
        "num_attention_heads": 4,
        "global_attn_indexes": [3],
    },
    "resampler_num_queries": 64,
}


def preset_settings(name: str) -> tuple[str, dict]:
    from ocr_mllm.building import PRESETS

    if name == "small":
        settings = copy.deepcopy(PRESETS["quickstart"])
        for key, value in SMALL_OVERRIDES.items():
            if isinstance(value, dict):
                settings[key] = {**settings[key], **value}
            else:
                settings[key] = value
        return "quickstart", {k: v for k, v in settings.items() if k != "tokenizer_vocab_size"}
    return name, {}


def build_model(name: str, vocab_size: int, device: str, dtype):
    from modeling_ocr_mllm import OcrMllmForConditionalGeneration
    from ocr_mllm.building import build_config

    preset, overrides = preset_settings(name)
    config = build_config(preset, vocab_size=vocab_size, image_token_id=vocab_size - 1, **overrides)
    torch.manual_seed(0)
    model = OcrMllmForConditionalGeneration(config).to(device=device, dtype=dtype).train()
    return model, config


def make_batch(config, batch_size: int, text_tokens: int, device: str, dtype):
    """One image per sample: [image tokens][text tokens], labels on the text."""
    n_image = config.num_image_tokens(1)
    vocab = config.text_config.vocab_size
    text = torch.randint(0, vocab - 1, (batch_size, text_tokens))
    image = torch.full((batch_size, n_image), config.image_token_id)
    input_ids = torch.cat([image, text], dim=1)
    labels = torch.cat([torch.full_like(image, -100), text], dim=1)
    vision, high = config.vision_config.image_size, config.high_res_vision_config.image_size
    return {
        "input_ids": input_ids.to(device),
        "attention_mask": torch.ones_like(input_ids).to(device),
        "labels": labels.to(device),
        "pixel_values": torch.randn(batch_size, 3, vision, vision, device=device, dtype=dtype),
        "high_res_pixel_values": torch.randn(batch_size, 3, high, high, device=device, dtype=dtype),
        "num_high_res_views": torch.ones(batch_size, dtype=torch.long, device=device),
    }


def sync(device: str):
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def matmul_peak(device: str, dtype, size: int, repeats: int) -> float:
    """Best FLOP/s of a size×size matmul."""
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    best = 0.0
    for _ in range(repeats + 1):
        sync(device)
        start = time.perf_counter()
        for _ in range(4):
            a @ b
        sync(device)
        best = max(best, 4 * 2 * size**3 / (time.perf_counter() - start))
    return best


def step_flops(model, batch) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        model(**batch).loss.backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops()


def bench_config(name, args, device, dtype, peak):
    model, config = build_model(name, args.vocab_size, device, dtype)
    batch = make_batch(config, args.batch_size, args.text_tokens, device, dtype)
    flops = step_flops(model, batch)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    times = []
    for step in range(args.warmup + args.steps):
        sync(device)
        start = time.perf_counter()
        model(**batch).loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        sync(device)
        if step >= args.warmup:
            times.append(time.perf_counter() - start)
    seconds = statistics.median(times)
    tokens = batch["input_ids"].numel()
    result = {
        "config": name,
        "parameters_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 2),
        "batch_size": args.batch_size,
        "sequence_length": batch["input_ids"].shape[1],
        "image_tokens_per_sample": config.num_image_tokens(1),
        "step_seconds_median": round(seconds, 4),
        "step_seconds_all": [round(t, 4) for t in times],
        "tokens_per_second": round(tokens / seconds, 1),
        "samples_per_second": round(args.batch_size / seconds, 2),
        "flops_per_step": flops,
        "achieved_tflops": round(flops / seconds / 1e12, 4),
        "mfu": round(flops / seconds / peak, 4),
    }
    log(
        f"{name}: {result['parameters_m']} M params, {result['tokens_per_second']} tokens/s, "
        f"{result['achieved_tflops'] * 1000:.1f} GFLOP/s, MFU {100 * result['mfu']:.1f}%"
    )
    del model, optimizer
    return result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", default="quickstart,small", help="comma-separated: tiny, quickstart, small")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--text-tokens", type=int, default=48, help="text tokens per sample after the image tokens")
    parser.add_argument("--vocab-size", type=int, default=4096)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--dtype", default="fp32", choices=sorted(DTYPES))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--quick", action="store_true", help="tiny config, 1 step (smoke test)")
    parser.add_argument("--output-dir", default=str(RESULTS_DIR))
    args = parser.parse_args(argv)
    if args.quick:
        args.configs, args.batch_size, args.text_tokens, args.vocab_size = "tiny", 2, 8, 512
        args.steps, args.warmup = 1, 1
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("--device cuda: CUDA is not available")
    dtype = DTYPES[args.dtype]
    peak = matmul_peak(args.device, dtype, 512 if args.quick else 2048, 2 if args.quick else 5)
    log(f"matmul peak ({args.dtype}, {args.device}, {torch.get_num_threads()} threads): {peak / 1e9:.1f} GFLOP/s")
    results = [
        bench_config(name.strip(), args, args.device, dtype, peak) for name in args.configs.split(",") if name.strip()
    ]

    output = Path(args.output_dir)
    payload = {
        "machine": machine_info(args.device),
        "device": args.device,
        "dtype": args.dtype,
        "threads": torch.get_num_threads(),
        "matmul_peak_gflops": round(peak / 1e9, 2),
        "results": results,
        "notes": "tokens/s counts every position (image + text tokens) of a full step: forward, backward, AdamW. "
        "FLOPs from torch FlopCounterMode on one step; MFU = achieved FLOP/s / measured matmul peak.",
    }
    path = write_results("train_throughput", payload, output)
    with figure(output / "train_throughput.png", 1, 2, size=(10, 4), title="Training throughput") as (_, axes):
        names = [r["config"] for r in results]
        grouped_bars(
            axes[0][0],
            names,
            {"tokens/s": [r["tokens_per_second"] for r in results]},
            "tokens / s",
            f"full training step ({args.device}, {args.dtype}, batch {args.batch_size})",
        )
        grouped_bars(
            axes[0][1],
            names,
            {"MFU %": [100 * r["mfu"] for r in results]},
            "% of matmul peak",
            f"MFU (peak {peak / 1e9:.0f} GFLOP/s)",
        )
    log(f"wrote {path} and {output / 'train_throughput.png'}")
    return payload


if __name__ == "__main__":
    main()
