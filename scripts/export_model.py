#!/usr/bin/env python
"""Write a trained model folder as a small, complete release folder: fp16 (or bf16) safetensors, config, generation
config, processor and tokenizer, and this repository's current model code files.

    python scripts/export_model.py out/reader-mini/model models/reader-mini --dtype float16 --ctc-decoding-weight 0.5

The weights are loaded with this repository's model code (not the folder's own copy), so the release carries the
current code; `--ctc-decoding-weight` sets the joint CTC/attention decoding λ written into config.json.
"""

import argparse
from pathlib import Path

import torch
from transformers import AutoTokenizer

from image_processing_ocr_mllm import OcrMllmImageProcessor
from modeling_ocr_mllm import OcrMllmForConditionalGeneration
from ocr_mllm.building import save_model_folder
from ocr_mllm.folders import read_json_file
from processing_ocr_mllm import OcrMllmProcessor


def load_with_current_code(source: str) -> tuple[OcrMllmForConditionalGeneration, OcrMllmProcessor]:
    """The folder's weights, tokenizer and processor settings through this repository's classes (its .py files are
    neither run nor copied)."""
    settings = read_json_file(Path(source) / "processor_config.json")
    image_settings = {
        key: value
        for key, value in settings["image_processor"].items()
        if key not in ("image_processor_type", "auto_map", "_processor_class")
    }
    processor = OcrMllmProcessor(
        image_processor=OcrMllmImageProcessor(**image_settings),
        tokenizer=AutoTokenizer.from_pretrained(source),
        num_high_res_tokens_per_view=settings["num_high_res_tokens_per_view"],
        num_low_res_tokens=settings["num_low_res_tokens"],
    )
    model = OcrMllmForConditionalGeneration.from_pretrained(source, dtype=torch.float32)
    return model.eval(), processor


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", help="trained model folder (e.g. out/reader-mini/model)")
    parser.add_argument("output", help="release folder (e.g. models/reader-mini)")
    parser.add_argument("--dtype", default="float16", choices=["float16", "bfloat16", "float32"])
    parser.add_argument("--ctc-decoding-weight", type=float, default=None, help="λ of joint CTC/attention decoding")
    args = parser.parse_args(argv)
    model, processor = load_with_current_code(args.source)
    if args.ctc_decoding_weight is not None:
        model.config.ctc_decoding_weight = args.ctc_decoding_weight
        model.config._validate_ocr_mllm()
    model = model.to(getattr(torch, args.dtype))
    folder = save_model_folder(model, processor, Path(args.output))
    size = sum(p.stat().st_size for p in folder.iterdir() if p.is_file()) / 2**20
    print(f"{folder}: {size:.1f} MiB, {args.dtype}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
