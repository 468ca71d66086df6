#!/usr/bin/env python
"""Model speed: prefill latency and decode throughput of OcrMllmForConditionalGeneration against transformers'
DeepseekVLHybridForConditionalGeneration with the same text model (same config and the same random weights), matched
encoders (same SAM config; low-res towers of the same width/depth at each model's own geometry), same dtype and
attention kernel, measured interleaved in one run. Also decode bytes moved per second (weights + KV cache read per
step) against a memory bandwidth measured in the same run → roofline fraction.

Both models run through `generate` (greedy, min_new_tokens = max_new_tokens so neither stops early); a stopping
criterion stamps the time of every new token: prefill = start → first token (vision towers + LLM prefill + first
sampling step), decode = mean time per later token.

    python -m bench.model_speed                 # fp32 + bf16, batch 1 and 8, ~4 minutes on 2 cores
    python -m bench.model_speed --quick         # tiny models (smoke test)
    python -m bench.model_speed --device cuda   # on a GPU
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time
import warnings

from bench.common import (
    PeakRSS,
    add_common_arguments,
    check_device,
    choose_threads,
    figure,
    grouped_bars,
    log,
    machine_info,
    resolve_repeats,
    synchronize,
    write_results,
)


VOCAB = 32000
DTYPES = {"fp32": "float32", "bf16": "bfloat16"}


def sizes(quick: bool) -> dict:
    """Model dimensions: a small Qwen2-style LLM (untied, GQA) and thin but full-resolution encoders."""
    if quick:
        return {
            "text": dict(
                model_type="qwen2",
                vocab_size=512,
                hidden_size=64,
                intermediate_size=128,
                num_hidden_layers=2,
                num_attention_heads=4,
                num_key_value_heads=2,
                max_position_embeddings=1024,
                tie_word_embeddings=False,
                rms_norm_eps=1e-6,
            ),
            "sam": dict(
                model_type="sam_vision_model",
                hidden_size=32,
                output_channels=32,
                num_hidden_layers=2,
                num_attention_heads=2,
                mlp_dim=64,
                image_size=128,
                patch_size=16,
                window_size=4,
                global_attn_indexes=[1],
            ),
            "low": dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2),
            "ours_low_geometry": (56, 14),  # (image size, patch): 4x4 patches
            "deepseek_low_geometry": (64, 16),  # 4x4 patches
            "resampler_queries": 4,
            "ours_downsample": [64, 128],
            "text_tokens": 8,
        }
    return {
        "text": dict(
            model_type="qwen2",
            vocab_size=VOCAB,
            hidden_size=512,
            intermediate_size=1536,
            num_hidden_layers=8,
            num_attention_heads=8,
            num_key_value_heads=2,
            max_position_embeddings=4096,
            tie_word_embeddings=False,
            rms_norm_eps=1e-6,
        ),
        # SAM at its real resolution (1024 px, patch 16: 4096 tokens, windows 14, global blocks), thinner and shallower
        "sam": dict(
            model_type="sam_vision_model",
            hidden_size=192,
            output_channels=256,
            num_hidden_layers=4,
            num_attention_heads=3,
            mlp_dim=768,
            image_size=1024,
            patch_size=16,
            window_size=14,
            global_attn_indexes=[1, 3],
        ),
        "low": dict(hidden_size=256, intermediate_size=1024, num_hidden_layers=4, num_attention_heads=4),
        "ours_low_geometry": (448, 14),  # ours: 32x32 patches → 256 Resampler queries
        "deepseek_low_geometry": (384, 16),  # DeepseekVLHybrid's SigLIP: 24x24 patches → 576 fused tokens
        "resampler_queries": 256,
        "ours_downsample": [512, 1024],
        "text_tokens": 32,
    }


def build_models(dims: dict, attn: str, seed: int = 0):
    import torch
    from transformers import DeepseekVLHybridConfig, DeepseekVLHybridForConditionalGeneration

    from configuration_ocr_mllm import OcrMllmConfig
    from modeling_ocr_mllm import OcrMllmForConditionalGeneration

    vocab = dims["text"]["vocab_size"]
    image_token = vocab - 1
    ours_size, ours_patch = dims["ours_low_geometry"]
    ours_config = OcrMllmConfig(
        text_config=dict(dims["text"]),
        vision_config=dict(
            dims["low"],
            image_size=ours_size,
            patch_size=ours_patch,
            position_embedding_grid_size=max(2, ours_size // ours_patch // 2),
        ),
        high_res_vision_config=dict(dims["sam"]),
        high_res_downsample_channels=dims["ours_downsample"],
        resampler_num_queries=dims["resampler_queries"],
        image_token_id=image_token,
    )
    ds_size, ds_patch = dims["deepseek_low_geometry"]
    deepseek_config = DeepseekVLHybridConfig(
        text_config=dict(dims["text"]),
        vision_config=dict(dims["low"], model_type="siglip_vision_model", image_size=ds_size, patch_size=ds_patch),
        high_res_vision_config=dict(dims["sam"]),
        image_token_id=image_token,
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ours = OcrMllmForConditionalGeneration._from_config(ours_config, attn_implementation=attn).eval()
        deepseek = DeepseekVLHybridForConditionalGeneration._from_config(
            deepseek_config, attn_implementation=attn
        ).eval()
    # the same text model: same weights in both
    deepseek.model.language_model.load_state_dict(ours.model.language_model.state_dict())
    deepseek.lm_head.load_state_dict(ours.lm_head.state_dict())
    for model in (ours, deepseek):
        model.generation_config.pad_token_id = 0
        model.generation_config.eos_token_id = 1
        model.generation_config.do_sample = False
    return {"ours": ours, "deepseek": deepseek}, image_token


def image_tokens(name: str, model) -> int:
    if name == "ours":
        return model.config.image_seq_length
    config = model.config.vision_config
    return (config.image_size // config.patch_size) ** 2


def make_inputs(name: str, model, batch: int, text_tokens: int, image_token: int, dtype, device: str) -> dict:
    import torch

    generator = torch.Generator().manual_seed(1)
    vocab = model.config.text_config.vocab_size
    half = text_tokens // 2
    count = image_tokens(name, model)
    ids = torch.cat(
        [
            torch.randint(10, vocab - 10, (batch, half), generator=generator),
            torch.full((batch, count), image_token),
            torch.randint(10, vocab - 10, (batch, text_tokens - half), generator=generator),
        ],
        dim=1,
    )
    if name == "ours":
        low = model.config.vision_config.image_size
        extra = {"num_high_res_views": torch.ones(batch, dtype=torch.long)}
    else:
        low = model.config.vision_config.image_size
        extra = {}
    high = model.config.high_res_vision_config.image_size
    inputs = {
        "input_ids": ids,
        "attention_mask": torch.ones_like(ids),
        "pixel_values": torch.randn(batch, 3, low, low, generator=generator, dtype=torch.float32).to(dtype),
        "high_res_pixel_values": torch.randn(batch, 3, high, high, generator=generator, dtype=torch.float32).to(dtype),
        **extra,
    }
    return {k: v.to(device) for k, v in inputs.items()}


def timed_generate(model, inputs: dict, new_tokens: int, device: str) -> tuple[float, list[float]]:
    """(prefill seconds, per-token decode seconds) from one greedy generate."""
    import torch
    from transformers import StoppingCriteria, StoppingCriteriaList

    stamps = []

    class Clock(StoppingCriteria):
        def __call__(self, input_ids, scores, **kwargs):
            synchronize(device)
            stamps.append(time.perf_counter())
            return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)

    synchronize(device)
    start = time.perf_counter()
    with torch.inference_mode():
        model.generate(
            **inputs,
            max_new_tokens=new_tokens,
            min_new_tokens=new_tokens,
            do_sample=False,
            stopping_criteria=StoppingCriteriaList([Clock()]),
        )
    prefill = stamps[0] - start
    steps = [b - a for a, b in zip(stamps, stamps[1:])]
    return prefill, steps


def measure_bandwidth(device: str, mib: int, repeats: int = 5) -> dict:
    """Large-array read (sum) and copy bandwidth in GB/s with torch's current thread count (median of repeats)."""
    import torch

    elements = mib * 1024 * 1024 // 4
    source = torch.ones(elements, dtype=torch.float32, device=device)
    target = torch.empty_like(source)
    reads, copies = [], []
    for _ in range(repeats + 1):
        synchronize(device)
        start = time.perf_counter()
        source.sum()
        synchronize(device)
        reads.append(time.perf_counter() - start)
        start = time.perf_counter()
        target.copy_(source)
        synchronize(device)
        copies.append(time.perf_counter() - start)
    size = source.numel() * 4
    read = size / statistics.median(reads[1:]) / 1e9
    copy = 2 * size / statistics.median(copies[1:]) / 1e9
    del source, target
    return {
        "read_gb_per_s": round(read, 2),
        "copy_gb_per_s": round(copy, 2),
        "array_mib": mib,
        "note": "read: sum over the array; copy: bytes read + bytes written",
    }


def measure_gemv(model, device: str, repeats: int = 7) -> dict:
    """The LLM's own weight matrices streamed through F.linear at batch 1 (no attention, norms or Python around
    them): how fast this torch build turns weight bytes into a decode step on this machine."""
    import torch
    import torch.nn.functional as F

    weights = [p for n, p in model.model.language_model.named_parameters() if p.dim() == 2 and "embed_tokens" not in n]
    weights.append(model.lm_head.weight)
    inputs = [torch.randn(1, w.shape[1], dtype=w.dtype, device=device) for w in weights]
    size = sum(w.numel() * w.element_size() for w in weights)
    times = []
    with torch.inference_mode():
        for _ in range(repeats + 1):
            synchronize(device)
            start = time.perf_counter()
            for x, w in zip(inputs, weights):
                F.linear(x, w)
            synchronize(device)
            times.append(time.perf_counter() - start)
    seconds = statistics.median(times[1:])
    return {"weight_bytes": size, "ms": round(1000 * seconds, 2), "gb_per_s": round(size / seconds / 1e9, 2)}


def decode_bytes_per_step(model, batch: int, context: float, element_bytes: int) -> dict:
    """Bytes one decode step must read: every LLM weight but the embedding table (one row per sequence is gathered)
    plus the lm_head, and the KV cache of the current context."""
    text = model.config.text_config
    language = model.model.language_model
    weights = sum(p.numel() for n, p in language.named_parameters() if "embed_tokens" not in n)
    weights += model.lm_head.weight.numel()
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
    kv = 2 * text.num_hidden_layers * batch * text.num_key_value_heads * head_dim * context
    return {
        "weight_bytes": int(weights * element_bytes),
        "kv_bytes": int(kv * element_bytes),
        "total_bytes": int((weights + kv) * element_bytes),
    }


def run(args) -> dict:
    import torch

    device = check_device(args.device)
    threads, threads_reason = (
        choose_threads(args.threads) if device == "cpu" else (torch.get_num_threads(), "cuda run")
    )
    torch.set_num_threads(threads)
    log(f"[model_speed] torch threads: {threads} ({threads_reason})")
    repeats = resolve_repeats(args, default_repeats=3)
    dims = sizes(args.quick)
    new_tokens = 4 if args.quick else args.new_tokens
    batches = [1, 2] if args.quick else args.batch_sizes
    dtypes = args.dtypes
    log(f"[model_speed] building models (attn {args.attn}) ...")
    models, image_token = build_models(dims, args.attn)
    for model in models.values():
        model.to(device)
    bandwidth_mib = 64 if args.quick else args.bandwidth_mib
    bandwidth = [measure_bandwidth(device, bandwidth_mib)]
    log(f"[model_speed] memory bandwidth: {bandwidth[0]}")

    runs, gemv = [], {}
    for dtype_name in dtypes:
        dtype = getattr(torch, DTYPES[dtype_name])
        for model in models.values():
            model.to(dtype)
        gemv[dtype_name] = measure_gemv(models["ours"], device)
        log(f"[model_speed] {dtype_name} weight GEMV alone (batch 1): {gemv[dtype_name]}")
        for batch in batches:
            inputs = {
                name: make_inputs(name, model, batch, dims["text_tokens"], image_token, dtype, device)
                for name, model in models.items()
            }
            if batch == batches[0]:  # warm-up once per dtype (oneDNN primitives, allocator); later batch sizes
                for name, model in models.items():  # rely on the median to drop a slow first round
                    timed_generate(model, inputs[name], 2, device)
            measurements = {name: {"prefill": [], "decode_step": []} for name in models}
            memory = {}
            order = list(models)
            for round_index in range(repeats):
                for name in order if round_index % 2 == 0 else order[::-1]:
                    gc.collect()
                    if device.startswith("cuda"):
                        torch.cuda.reset_peak_memory_stats()
                    with PeakRSS() as peak:  # every round; the first round's peak is reported
                        prefill, steps = timed_generate(models[name], inputs[name], new_tokens, device)
                    if device.startswith("cuda"):
                        peak.gpu_mib = round(torch.cuda.max_memory_allocated() / 2**20, 1)
                    memory.setdefault(name, peak)
                    measurements[name]["prefill"].append(prefill)
                    measurements[name]["decode_step"].append(statistics.mean(steps) if steps else float("nan"))
            entry = {"dtype": dtype_name, "batch": batch, "models": {}}
            for name, model in models.items():
                prompt = inputs[name]["input_ids"].shape[1]
                step = statistics.median(measurements[name]["decode_step"])
                moved = decode_bytes_per_step(model, batch, prompt + new_tokens / 2, torch.finfo(dtype).bits // 8)
                entry["models"][name] = {
                    "prompt_tokens": prompt,
                    "image_tokens": image_tokens(name, model),
                    "prefill_seconds": round(statistics.median(measurements[name]["prefill"]), 4),
                    "decode_ms_per_step": round(1000 * step, 2),
                    "decode_tokens_per_second": round(batch / step, 2),
                    "decode_bytes_per_step": moved,
                    "decode_gb_per_second": round(moved["total_bytes"] / step / 1e9, 2),
                    "peak_rss_delta_mib": memory[name].delta_mib,
                    "peak_rss_mib": memory[name].peak_mib,
                    "peak_gpu_mib": getattr(memory[name], "gpu_mib", None),
                    "raw": {k: [round(v, 5) for v in values] for k, values in measurements[name].items()},
                }
            ours, peer = measurements["ours"], measurements["deepseek"]
            entry["ratios"] = {
                # > 1: ours faster; median of per-round ratios (both models of a round ran back to back)
                "prefill_speedup_vs_deepseek": round(
                    statistics.median(p / o for o, p in zip(ours["prefill"], peer["prefill"])), 3
                ),
                "decode_speedup_vs_deepseek": round(
                    statistics.median(p / o for o, p in zip(ours["decode_step"], peer["decode_step"])), 3
                ),
            }
            runs.append(entry)
            o, d = entry["models"]["ours"], entry["models"]["deepseek"]
            log(
                f"[model_speed] {dtype_name} batch {batch}: prefill ours {o['prefill_seconds']:.3f}s vs deepseek "
                f"{d['prefill_seconds']:.3f}s ({entry['ratios']['prefill_speedup_vs_deepseek']}x); decode ours "
                f"{o['decode_tokens_per_second']:.1f} tok/s vs {d['decode_tokens_per_second']:.1f} "
                f"({entry['ratios']['decode_speedup_vs_deepseek']}x)"
            )
    bandwidth.append(measure_bandwidth(device, bandwidth_mib))
    read_bandwidth = round(statistics.median(b["read_gb_per_s"] for b in bandwidth), 2)
    for entry in runs:
        for model_entry in entry["models"].values():
            model_entry["roofline_fraction"] = round(model_entry["decode_gb_per_second"] / read_bandwidth, 3)
            model_entry["fraction_of_gemv_rate"] = round(
                model_entry["decode_gb_per_second"] / gemv[entry["dtype"]]["gb_per_s"], 3
            )
    scaling = {}
    for dtype_name in dtypes:
        for name in models:
            per_batch = {
                e["batch"]: e["models"][name]["decode_tokens_per_second"] for e in runs if e["dtype"] == dtype_name
            }
            if 1 in per_batch and len(per_batch) > 1:
                largest = max(per_batch)
                scaling[f"{name}_{dtype_name}_batch{largest}_over_batch1"] = round(
                    per_batch[largest] / per_batch[1], 2
                )

    def count(model):
        return sum(p.numel() for p in model.parameters())

    payload = {
        "machine": machine_info(device),
        "settings": {
            "device": device,
            "dtypes": dtypes,
            "batch_sizes": batches,
            "new_tokens": new_tokens,
            "repeats": repeats,
            "attn_implementation": args.attn,
            "torch_threads": torch.get_num_threads(),
            "threads_reason": threads_reason,
            "quick": args.quick,
            "text_config": dims["text"],
            "sam_config": dims["sam"],
            "low_res_tower": dims["low"],
            "ours_low_res_geometry": dims["ours_low_geometry"],
            "deepseek_low_res_geometry": dims["deepseek_low_geometry"],
            "text_tokens_per_prompt": dims["text_tokens"],
            "parameters": {name: count(model) for name, model in models.items()},
            "llm_parameters": {
                name: count(model.model.language_model) + model.lm_head.weight.numel()
                for name, model in models.items()
            },
            "method": "generate() with a stopping criterion that stamps every token; rounds alternate the model order",
        },
        "memory_bandwidth": {"measurements": bandwidth, "read_gb_per_s_median": read_bandwidth},
        "weight_gemv_batch1": gemv,
        "runs": runs,
        "decode_batch_scaling": scaling,
    }
    path = write_results("model_speed", payload, args.output_dir)
    chart(payload, path.with_suffix(".png"))
    log(f"[model_speed] wrote {path} and {path.with_suffix('.png').name}")
    return payload


def chart(payload: dict, path) -> None:
    runs = payload["runs"]
    labels = [f"{r['dtype']} b{r['batch']}" for r in runs]
    names = ("ours", "deepseek")
    with figure(
        path,
        1,
        3,
        size=(14, 4.5),
        title=(
            f"OcrMllm vs DeepseekVLHybrid, same Qwen2 LLM ({payload['settings']['device']}, "
            f"{payload['settings']['attn_implementation']}); memory read bandwidth "
            f"{payload['memory_bandwidth']['read_gb_per_s_median']} GB/s"
        ),
    ) as (fig, axes):
        grouped_bars(
            axes[0][0],
            labels,
            {n: [r["models"][n]["prefill_seconds"] for r in runs] for n in names},
            "seconds (lower is better)",
            "prefill latency (vision + LLM prefill)",
        )
        grouped_bars(
            axes[0][1],
            labels,
            {n: [r["models"][n]["decode_tokens_per_second"] for r in runs] for n in names},
            "tokens / s",
            "decode throughput",
        )
        grouped_bars(
            axes[0][2],
            labels,
            {n: [r["models"][n]["roofline_fraction"] for r in runs] for n in names},
            "fraction of measured read bandwidth",
            "decode bytes moved / s ÷ bandwidth",
            fmt="{:.2f}",
        )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_arguments(parser, default_repeats=3)
    parser.add_argument("--dtypes", nargs="+", default=["fp32", "bf16"], choices=list(DTYPES))
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=[1, 8])
    parser.add_argument("--new-tokens", type=int, default=32, help="generated tokens per run")
    parser.add_argument("--attn", default="sdpa", choices=["sdpa", "eager"], help="attention kernel for both models")
    parser.add_argument(
        "--threads",
        default="auto",
        help="torch threads, or 'auto': all cores on an idle machine, 1 when other jobs are running",
    )
    parser.add_argument("--bandwidth-mib", type=int, default=1024, help="array size for the bandwidth measurement")
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    main()
