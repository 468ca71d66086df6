#!/usr/bin/env python
"""Generate multilingual synthetic OCR data (en, zh-Hans, zh-Hant).

Writes OUTPUT/train.json and OUTPUT/heldout.json (LLaVA format), the images under OUTPUT/images/, and the same data as
a Hugging Face DatasetDict (TRL messages/images form) under OUTPUT/hf/. See docs/data.md.

Example (easy data for the CPU quickstart):
    python scripts/make_synthetic_data.py --output out/synth_easy --num-samples 20000 --tasks line \\
        --max-chars 12 --augment none --image-size 384 --seed 0
"""

import sys

from ocr_mllm.data.synthetic import main


if __name__ == "__main__":
    sys.exit(main())
