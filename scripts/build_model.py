#!/usr/bin/env python
"""Write a complete OCR-MLLM model folder (safetensors, config with auto_map, generation config, tokenizer, processor,
code files) that loads with `AutoModelForImageTextToText.from_pretrained(DIR, trust_remote_code=True)`.

  python scripts/build_model.py --preset tiny --output DIR                       # random weights, small vocabulary
  python scripts/build_model.py --output DIR --text-model Qwen/Qwen2.5-7B-Instruct \\
      --vision-model google/siglip-so400m-patch14-384 --high-res-model stepfun-ai/GOT-OCR-2.0-hf
"""

import argparse
import logging

from ocr_mllm.building import PRESETS, build_from_parts, build_tiny_folder
from ocr_mllm.inference.loading import DTYPE_ALIASES as DTYPES


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", required=True, help="folder to write")
    parser.add_argument("--preset", default=None, choices=sorted(PRESETS), help="size preset (random weights)")
    parser.add_argument(
        "--tokenizer", default=None, help="tokenizer folder to use with --preset (default: a small BPE)"
    )
    parser.add_argument("--text-model", help="causal LM (Hub id or folder), e.g. Qwen/Qwen2.5-7B-Instruct")
    parser.add_argument("--vision-model", help="CLIP / SigLIP vision checkpoint for the low-res view")
    parser.add_argument("--high-res-model", help="SAM or GOT-OCR2 checkpoint for the high-res view")
    parser.add_argument("--high-res-projector-type", default="mlp2x_gelu")
    parser.add_argument("--dtype", default="fp32", choices=sorted(DTYPES))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")

    if args.text_model:
        folder = build_from_parts(
            args.output,
            text_model=args.text_model,
            vision_model=args.vision_model,
            high_res_model=args.high_res_model,
            preset=args.preset or "original",
            high_res_projector_type=args.high_res_projector_type,
            dtype=DTYPES[args.dtype],
            seed=args.seed,
        )
    elif args.preset:
        tokenizer = None
        if args.tokenizer:
            from transformers import AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(args.tokenizer)
        folder = build_tiny_folder(args.output, seed=args.seed, tokenizer=tokenizer, preset=args.preset)
    else:
        parser.error("give --preset (random weights) or --text-model (pretrained parts)")
    print(f"wrote {folder}")


if __name__ == "__main__":
    main()
