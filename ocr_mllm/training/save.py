"""Final saves: a complete trust_remote_code folder (full fine-tuning, also under ZeRO-3), or a LoRA adapter folder
that `scripts/merge_lora.py` turns into one; and pushing exactly that folder to the Hub."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ocr_mllm.building import save_model_folder
from ocr_mllm.folders import MODEL_CODE_FILES


if TYPE_CHECKING:
    from transformers import ProcessorMixin, Trainer


logger = logging.getLogger(__name__)

CODE_FILES = MODEL_CODE_FILES
# What a complete model folder holds besides weights (the files `push_folder` uploads)
FOLDER_PATTERNS = [
    "*.safetensors",
    "*.safetensors.index.json",
    "config.json",
    "generation_config.json",
    "tokenizer*",
    "special_tokens_map.json",
    "chat_template.*",
    "preprocessor_config.json",
    "processor_config.json",
    "*_ocr_mllm.py",
    "adapter_config.json",
    "README.md",
]


def _repo_root() -> Path:
    return Path(__file__).resolve().parents[2]


def copy_code_files(output_dir: str | Path) -> None:
    for name in CODE_FILES:
        source = _repo_root() / name
        if source.exists():
            shutil.copy2(source, Path(output_dir) / name)


def save_final_model(trainer: Trainer, processor: ProcessorMixin, output_dir: str | Path) -> Path:
    """Write the trained model to `output_dir` (every rank must call this; only the main process writes).

    - full / partial fine-tuning: a complete folder via `ocr_mllm.building.save_model_folder` (ZeRO-3 weights are
      gathered to the main process first);
    - PEFT: the adapter (LoRA weights + `modules_to_save`: Resampler, projector …), the processor and the code files,
      with `base_model_name_or_path` pointing at the stage-1 folder; merge with `scripts/merge_lora.py`.
    """
    from accelerate.utils import is_peft_model

    output_dir = Path(output_dir)
    accelerator = trainer.accelerator
    model = accelerator.unwrap_model(trainer.model)
    is_zero3 = trainer.is_deepspeed_enabled and accelerator.deepspeed_config["zero_optimization"]["stage"] == 3
    state_dict = accelerator.get_state_dict(trainer.model_wrapped) if is_zero3 else None  # collective

    if accelerator.is_main_process:
        output_dir.mkdir(parents=True, exist_ok=True)
        if is_peft_model(model):
            model.save_pretrained(output_dir, state_dict=state_dict, safe_serialization=True)
            processor.save_pretrained(output_dir)
            copy_code_files(output_dir)
            base = model.get_base_model()
            base.config.save_pretrained(output_dir / "base_config")  # for reference; merge loads the real base
            if base.generation_config is not None:
                base.generation_config.save_pretrained(output_dir)
        else:
            if state_dict is not None:
                expected = set(model.state_dict())
                if set(state_dict) != expected:
                    logger.warning(
                        "Gathered ZeRO-3 weights differ from the model's keys: missing %s, extra %s",
                        sorted(expected - set(state_dict))[:5],
                        sorted(set(state_dict) - expected)[:5],
                    )
                original = model.save_pretrained

                def save_with_gathered_weights(directory: str | Path, *args, **kwargs) -> Any:
                    kwargs.setdefault("state_dict", state_dict)
                    # the gathered keys are already our module names: no load-time key conversion to revert
                    kwargs.setdefault("save_original_format", False)
                    return original(directory, *args, **kwargs)

                model.save_pretrained = save_with_gathered_weights
                try:
                    save_model_folder(model, processor, output_dir)
                finally:
                    del model.save_pretrained
            else:
                save_model_folder(model, processor, output_dir)
        logger.info("Saved the final model to %s", output_dir)
    accelerator.wait_for_everyone()
    return output_dir


def push_folder(
    folder: str | Path,
    repo_id: str,
    token: str | None = None,
    private: bool | None = None,
    commit_message: str = "Upload OCR-MLLM model",
) -> str:
    """Create `repo_id` if needed and upload the model files of `folder` (no checkpoints, logs or trainer state)."""
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    api.create_repo(repo_id, private=private, exist_ok=True)
    info = api.upload_folder(
        repo_id=repo_id, folder_path=str(folder), allow_patterns=FOLDER_PATTERNS, commit_message=commit_message
    )
    return getattr(info, "commit_url", str(info))


def write_json(path: str | Path, data: Any) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(data, handle, indent=2, ensure_ascii=False)
