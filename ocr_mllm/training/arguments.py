"""Command-line / YAML arguments of the two training stages (parsed with `trl.TrlParser`, so ``--config recipe.yaml``
works and command-line flags override the file)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from trl import SFTConfig


@dataclass
class ModelArguments:
    model_name_or_path: str | None = field(
        default=None,
        metadata={
            "help": "Complete OCR-MLLM folder (scripts/build_model.py output, or the stage-1 output for stage 2)."
        },
    )
    model_revision: str | None = field(default=None, metadata={"help": "Hub revision of model_name_or_path."})
    dtype: str = field(
        default="auto",
        metadata={
            "help": "Weights dtype when loading: auto (bf16 if --bf16 else fp32), float32, bfloat16, float16.",
            "choices": ["auto", "float32", "bfloat16", "float16"],
        },
    )
    attn_implementation: str | None = field(default=None, metadata={"help": "eager, sdpa, flash_attention_2, ..."})
    train_downsampler: bool = field(
        default=False,
        metadata={
            "help": "Train the high-res stride-2 convs (Vary's net_2/net_3). Off by default because they come "
            "pretrained with the SAM encoder (Vary / GOT-OCR2); turn it on when the high-res encoder came "
            "without them (plain SAM) or the model starts from random weights."
        },
    )
    unfreeze_vision_tower: bool = field(default=False, metadata={"help": "Also train the low-res ViT."})
    unfreeze_high_res_vision_tower: bool = field(default=False, metadata={"help": "Also train the SAM encoder."})
    # PEFT (stage 2)
    use_peft: bool = field(default=False, metadata={"help": "LoRA on the LLM's linear layers (stage 2)."})
    lora_r: int = field(default=64, metadata={"help": "LoRA rank."})
    lora_alpha: int = field(default=16, metadata={"help": "LoRA alpha."})
    lora_dropout: float = field(default=0.05, metadata={"help": "LoRA dropout."})
    lora_target_modules: list[str] | None = field(
        default=None,
        metadata={"help": "Linear layer names to adapt inside the LLM (default: every linear layer of the LLM)."},
    )
    load_in_4bit: bool = field(
        default=False, metadata={"help": "QLoRA: load the LLM in 4 bit (needs bitsandbytes + CUDA)."}
    )
    load_in_8bit: bool = field(default=False, metadata={"help": "Load the LLM in 8 bit (needs bitsandbytes + CUDA)."})


@dataclass
class DataArguments:
    # TRL's ScriptArguments names (--dataset_name, --dataset_config, --dataset_train_split, --dataset_test_split);
    # --dataset stays as an alias of --dataset_name
    dataset_name: list[str] | None = field(
        default=None,
        metadata={
            "help": "Training data: JSON/JSONL files (TRL messages/images or LLaVA conversations/image form), "
            "datasets saved with save_to_disk, generator folders or Hub dataset ids, read by "
            "ocr_mllm.data.load_training_dataset. Several are concatenated.",
            "aliases": ["--dataset"],
        },
    )
    dataset_config: str | None = field(default=None, metadata={"help": "Configuration name of a Hub dataset."})
    dataset_train_split: str = field(
        default="train", metadata={"help": "Split read from generator folders / DatasetDicts / Hub datasets."}
    )
    eval_dataset: list[str] | None = field(default=None, metadata={"help": "Held-out data (same forms)."})
    dataset_test_split: str = field(
        default="heldout",
        metadata={"help": "Split of --eval_dataset read from generator folders (heldout.json) / Hub datasets."},
    )
    image_root: str | None = field(
        default=None, metadata={"help": "Folder that relative image paths are relative to."}
    )
    template: str | None = field(
        default=None,
        metadata={
            "help": "plain (stage-1 default: <image>+caption) or chat (stage-2 default: ChatML, assistant-only loss)",
            "choices": [None, "plain", "chat"],
        },
    )
    max_train_samples: int | None = field(default=None, metadata={"help": "Use only the first N training records."})
    filter_long_records: bool = field(
        default=True,
        metadata={
            "help": "Check every record before training and drop (with a logged reason) those that cannot fit "
            "max_length without cutting an image, have no answer, or have unreadable images."
        },
    )


def _other_accelerator() -> bool:
    return any(
        getattr(torch, name, None) is not None and getattr(torch, name).is_available()
        for name in ("xpu", "mps", "npu")
        if hasattr(getattr(torch, name, None), "is_available")
    )


def _bf16_default() -> bool:
    return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())


@dataclass
class OcrMllmTrainingConfig(SFTConfig):
    """`trl.SFTConfig` with this repo's defaults: TensorBoard logging, bf16 only where the hardware has it, our collator
    (remove_unused_columns False, skip_prepare_dataset)."""

    report_to: None | str | list[str] = field(default_factory=lambda: ["tensorboard"])
    bf16: bool | None = field(
        default=None, metadata={"help": "bf16 mixed precision (default: on when CUDA supports it)."}
    )
    lr_scheduler_type: str = field(default="cosine")
    warmup_ratio: float = field(default=0.03)
    weight_decay: float = field(default=0.0)
    num_train_epochs: float = field(default=1.0)
    logging_steps: float = field(default=10)
    save_steps: float = field(default=500)
    save_total_limit: int | None = field(default=2)
    remove_unused_columns: bool = field(default=False)
    ddp_find_unused_parameters: bool | None = field(
        default=False,
        metadata={
            "help": "Not needed: the model runs both towers (×0) on text-only batches, so every parameter is used."
        },
    )
    # transformers 5.24's name; TRL's SFTConfig turns the deprecated alias gradient_checkpointing on by default
    activation_checkpointing: bool | None = field(default=False)
    gradient_checkpointing: bool | None = field(default=None)
    dataloader_num_workers: int = field(default=0)

    def __post_init__(self):
        if not self.use_cpu and not torch.cuda.is_available() and not _other_accelerator():
            # transformers only sets up gloo DDP / DeepSpeed-on-CPU (MULTI_CPU) when told it runs on the CPU
            self.use_cpu = True
        if self.bf16 is None and not self.fp16:
            self.bf16 = _bf16_default()
        if self.dataset_kwargs is None:
            self.dataset_kwargs = {}
        if isinstance(self.dataset_kwargs, dict):
            self.dataset_kwargs["skip_prepare_dataset"] = True
        super().__post_init__()


@dataclass
class PretrainConfig(OcrMllmTrainingConfig):
    """Stage 1 defaults (the original's pretraining: lr 1e-3, max length 1024, cosine, warmup 0.03, wd 0)."""

    learning_rate: float = field(default=1e-3)
    max_length: int | None = field(default=1024)


@dataclass
class SftConfig(OcrMllmTrainingConfig):
    """Stage 2 defaults (the original's SFT: lr 2e-5, max length 2048, cosine, warmup 0.03, wd 0)."""

    learning_rate: float = field(default=2e-5)
    max_length: int | None = field(default=2048)
