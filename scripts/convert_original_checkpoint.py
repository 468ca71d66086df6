#!/usr/bin/env python
"""Convert a released OCR_MLLM_TOY checkpoint (original key layout) into a complete OCR-MLLM folder
(trust_remote_code, sharded safetensors, fast tokenizer, processor), optionally verifying logits against a
reference forward of the original layout.

  python scripts/convert_original_checkpoint.py --input ckpt/ --output ocr-mllm-14b/ \\
      --vit ocr_mllm_toy/pretrain_weight/qwen_vit_448 \\
      --sam ocr_mllm_toy/pretrain_weight/vary_pretrain/vision_tower_high.bin \\
      [--projector ckpt/mm_projector.bin] [--dtype bf16] [--verify]

Keys in --input's weight files win; `mm_projector.bin`, `vision_tower_high.bin` and `qwen_vit_448/` found inside
--input (or the `mm_vision_tower` folder of its config.json) only fill missing parts; a file passed explicitly with
--vit / --sam / --projector replaces that part. See docs/convert.md.
"""

import argparse
import json
import logging
import sys

from ocr_mllm.conversion import ConversionError, convert_checkpoint, verify_conversion


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--input", required=True, help="original checkpoint folder (weights, config.json, qwen.tiktoken)"
    )
    parser.add_argument("--output", required=True, help="folder to write")
    parser.add_argument("--vit", help="Qwen-VL ViT folder (qwen_vit_448/: pytorch_model.bin + config.json)")
    parser.add_argument("--sam", help="Vary SAM weights (vision_tower_high.bin)")
    parser.add_argument("--projector", help="mm_projector.bin (Resampler + high-res projector)")
    parser.add_argument(
        "--dtype",
        default="auto",
        choices=["auto", "bf16", "fp16", "fp32"],
        help="weight dtype of the output (auto: that of the original LLM weights)",
    )
    parser.add_argument("--vit-heads", type=int, help="ViT attention heads when no ViT config.json says (Qwen-VL: 16)")
    parser.add_argument(
        "--resampler-heads",
        type=int,
        help="Resampler heads (hard-coded in the original: hidden // 128 = 40 for Qwen-14B)",
    )
    parser.add_argument("--tiktoken", help="qwen.tiktoken when it is not in --input")
    parser.add_argument("--max-shard-size", default="5GB")
    parser.add_argument(
        "--verify",
        action="store_true",
        help="reload the output and compare logits with the reference forward of the original layout",
    )
    parser.add_argument("--verify-dtype", default="fp32", choices=["bf16", "fp16", "fp32"])
    parser.add_argument(
        "--verify-atol",
        type=float,
        default=None,
        help="max |logit difference| allowed (default: 1e-4·max|logit| + 1e-4 in fp32, 5e-2·max|logit| else)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    try:
        report = convert_checkpoint(
            args.input,
            args.output,
            vit=args.vit,
            sam=args.sam,
            projector=args.projector,
            dtype=args.dtype,
            vit_heads=args.vit_heads,
            resampler_heads=args.resampler_heads,
            tiktoken_path=args.tiktoken,
            max_shard_size=args.max_shard_size,
        )
    except ConversionError as err:
        print(f"conversion failed:\n{err}", file=sys.stderr)
        return 1
    sources = report.pop("sources")
    hparams = report.pop("hparams")
    print(
        f"wrote {report['output']} ({report['num_original']} original tensors → {report['num_converted']}, "
        f"{report['dtype']}, <image> = id {report['image_token_id']})"
    )
    for component, origin in report["origins"].items():
        print(f"  {component:<20} from {origin}")
    for note in report["notes"]:
        print(f"  note: {note}")
    if report["ignored"]:
        print(f"  dropped {len(report['ignored'])} key(s) the original never uses: {report['ignored'][:6]}")

    if args.verify:
        results = verify_conversion(args.output, sources, hparams, verify_dtype=args.verify_dtype)
        print(json.dumps(results, indent=2))
        failed = []
        for name in ("image_prompt", "text_prompt"):
            r = results[name]
            if args.verify_atol is not None:
                limit = args.verify_atol
            elif args.verify_dtype == "fp32":
                limit = 1e-4 + 1e-4 * r["max_abs_logit"]
            else:
                limit = 5e-2 * r["max_abs_logit"]
            if r["max_abs_diff"] > limit:
                failed.append(f"{name}: max |Δlogit| {r['max_abs_diff']:.3g} > {limit:.3g}")
        if (
            args.verify_dtype == "fp32"
            and results["image_prompt"]["greedy_ours"] != results["image_prompt"]["greedy_original"]
        ):
            failed.append("image_prompt: greedy tokens differ")
        if failed:
            print("verification FAILED: " + "; ".join(failed), file=sys.stderr)
            return 2
        print("verification passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
