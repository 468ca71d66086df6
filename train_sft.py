#!/usr/bin/env python
"""Stage 2: supervised fine-tuning on chat data (ChatML, loss on the assistant turns only), from a stage-1 folder.

Full fine-tuning of the LLM + Resampler + projector (both encoders frozen unless --unfreeze_vision_tower /
--unfreeze_high_res_vision_tower), or LoRA (--use_peft) / QLoRA (--use_peft --load_in_4bit, CUDA + bitsandbytes) with
the Resampler and projector in modules_to_save. Defaults: lr 2e-5, max length 2048, cosine, warmup 0.03, wd 0.

  python train_sft.py --model_name_or_path out/stage1 --dataset data/sft.jsonl --output_dir out/stage2
  accelerate launch --config_file configs/accelerate/zero3.yaml train_sft.py --config configs/recipes/sft_qwen2.5-7b.yaml
"""

import sys

from ocr_mllm.training.pipeline import main


if __name__ == "__main__":
    sys.exit(main("sft"))
