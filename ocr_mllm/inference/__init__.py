"""Shared inference helpers (used by eval, cli.py, infer.py and app.py).

```python
from ocr_mllm.inference import load_model_and_processor, generate_batch, run_batched_jsonl
model, processor = load_model_and_processor(path, device="auto", dtype="auto")
texts = generate_batch(model, processor, conversations, images, max_new_tokens=256)
```
See docs/inference.md.
"""

from .batch import read_done_ids, run_batched_jsonl
from .chat import ChatSession, build_messages
from .generation import (
    DEFAULT_MAX_NEW_TOKENS,
    GENERATION_OPTION_NAMES,
    build_generate_kwargs,
    generate_batch,
    prepare_inputs,
    stop_token_ids,
    stream_generate,
)
from .images import load_image
from .loading import InferenceSetupError, load_model_and_processor, resolve_device, resolve_dtype


__all__ = [
    "ChatSession",
    "DEFAULT_MAX_NEW_TOKENS",
    "GENERATION_OPTION_NAMES",
    "InferenceSetupError",
    "build_generate_kwargs",
    "build_messages",
    "generate_batch",
    "load_image",
    "load_model_and_processor",
    "prepare_inputs",
    "read_done_ids",
    "resolve_device",
    "resolve_dtype",
    "run_batched_jsonl",
    "stop_token_ids",
    "stream_generate",
]
