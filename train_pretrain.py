#!/usr/bin/env python
"""Stage 1: align the image features with the LLM (plain template: <image> + caption + "\n", loss on the caption).

Trains the Resampler and the high-res projector (+ the high-res downsampling convs with --train_downsampler); the LLM
and both encoders stay frozen. Defaults are the original's: lr 1e-3, max length 1024, cosine, warmup 0.03, wd 0.

  python train_pretrain.py --model_name_or_path out/base --dataset data/train.jsonl --output_dir out/stage1
  accelerate launch --config_file configs/accelerate/zero2.yaml train_pretrain.py --config configs/recipes/pretrain_qwen2.5-7b.yaml
"""

import sys

from ocr_mllm.training.pipeline import main


if __name__ == "__main__":
    sys.exit(main("pretrain"))
