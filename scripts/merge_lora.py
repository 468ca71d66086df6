#!/usr/bin/env python
"""Merge a LoRA adapter from train_sft.py --use_peft into its base model and write a complete model folder.

The merged folder keeps everything the adapter trained: the LoRA deltas folded into the LLM's linear layers and the
`modules_to_save` copies (Resampler, high-res projector, downsampler / encoders when they were trained). It is a
complete trust_remote_code folder (weights, config, generation config, tokenizer, processor, code files).

  python scripts/merge_lora.py --adapter out/stage2-lora --output out/stage2-merged [--base out/stage1]
"""

import argparse
import json
from pathlib import Path

from ocr_mllm.inference.loading import DTYPE_ALIASES as DTYPES


def merge(adapter: str, output: str, base: str | None = None, dtype: str = "float32") -> Path:
    from peft import PeftModel
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from ocr_mllm.building import save_model_folder

    adapter_path = Path(adapter)
    config_file = adapter_path / "adapter_config.json"
    if not config_file.exists():
        raise SystemExit(f"{adapter}: no adapter_config.json (not a PEFT adapter folder)")
    base = base or json.loads(config_file.read_text())["base_model_name_or_path"]
    if not base:
        raise SystemExit("The adapter does not name its base model: pass --base")
    model = AutoModelForImageTextToText.from_pretrained(base, trust_remote_code=True, dtype=DTYPES[dtype])
    model = PeftModel.from_pretrained(model, str(adapter_path)).merge_and_unload()
    source = adapter_path if (adapter_path / "processor_config.json").exists() else Path(base)
    processor = AutoProcessor.from_pretrained(str(source), trust_remote_code=True)
    if (adapter_path / "generation_config.json").exists():
        from transformers import GenerationConfig

        model.generation_config = GenerationConfig.from_pretrained(str(adapter_path))
    return save_model_folder(model, processor, output)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--adapter", required=True, help="adapter folder written by train_sft.py --use_peft")
    parser.add_argument("--output", required=True, help="folder for the merged model")
    parser.add_argument(
        "--base", default=None, help="base model folder (default: the adapter's base_model_name_or_path)"
    )
    parser.add_argument("--dtype", default="float32", choices=sorted(DTYPES))
    args = parser.parse_args(argv)
    folder = merge(args.adapter, args.output, args.base, args.dtype)
    print(f"wrote {folder}")


if __name__ == "__main__":
    main()
