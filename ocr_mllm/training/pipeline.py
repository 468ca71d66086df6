"""The two training stages on TRL's `SFTTrainer` with our collator (used by train_pretrain.py / train_sft.py and the
quickstart).

    stage "pretrain": plain template, Resampler + high-res projector trained, everything else frozen
    stage "sft":      chat template, assistant-only loss; full fine-tuning or LoRA / QLoRA

Runs the same under ``python``, ``accelerate launch`` (DDP, DeepSpeed ZeRO-2/3) and ``torchrun``.
"""

from __future__ import annotations

import gc
import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from ocr_mllm.folders import FolderError
from ocr_mllm.inference.loading import DTYPE_ALIASES, InferenceSetupError, load_model_and_processor

from .arguments import DataArguments, ModelArguments, OcrMllmTrainingConfig, PretrainConfig, SftConfig
from .callbacks import TrainableParametersCallback
from .checkpoints import CheckpointError, resolve_resume_checkpoint
from .collator import OcrMllmDataCollator, filter_long_records
from .data import load_datasets
from .freezing import apply_freeze_plan, format_parameter_summary, parameter_summary, stage_plan
from .save import push_folder, save_final_model


if TYPE_CHECKING:
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import PreTrainedModel, TrainerCallback

    from .freezing import FreezePlan


logger = logging.getLogger("ocr_mllm.training")

STAGE_CONFIGS = {"pretrain": PretrainConfig, "sft": SftConfig}
STAGE_TEMPLATES = {"pretrain": "plain", "sft": "chat"}


def parse_stage_args(
    stage: str, argv: list[str] | None = None
) -> tuple[ModelArguments, DataArguments, OcrMllmTrainingConfig]:
    """(ModelArguments, DataArguments, config) from the command line and an optional ``--config recipe.yaml``."""
    from trl import TrlParser

    parser = TrlParser((ModelArguments, DataArguments, STAGE_CONFIGS[stage]))
    return parser.parse_args_and_config(args=argv)


def load_model_for_training(model_args: ModelArguments, training_args: OcrMllmTrainingConfig):
    """The trainers' arguments → ``ocr_mllm.inference.load_model_and_processor(..., for_training=True)``."""
    if not model_args.model_name_or_path:
        raise ValueError("--model_name_or_path is required (a model folder from scripts/build_model.py or stage 1)")
    if (model_args.load_in_4bit or model_args.load_in_8bit) and not model_args.use_peft:
        raise ValueError("--load_in_4bit / --load_in_8bit train adapters only: add --use_peft (QLoRA)")
    dtype = model_args.dtype
    if dtype == "auto":
        dtype = "bfloat16" if training_args.bf16 and not _is_deepspeed(training_args) else "float32"
    load_in = "4bit" if model_args.load_in_4bit else "8bit" if model_args.load_in_8bit else None
    return load_model_and_processor(
        model_args.model_name_or_path,
        device="auto",  # placement is the Trainer's; a quantized model goes to this process's GPU
        dtype=DTYPE_ALIASES[dtype],
        load_in=load_in,
        attn_implementation=model_args.attn_implementation,
        # this project's local folders are trusted; a Hub id or foreign code needs SFTConfig's --trust_remote_code
        trust_remote_code=True if training_args.trust_remote_code else None,
        revision=model_args.model_revision,
        for_training=True,
    )


def _is_deepspeed(training_args: OcrMllmTrainingConfig) -> bool:
    return (
        bool(getattr(training_args, "deepspeed", None)) or getattr(training_args, "deepspeed_plugin", None) is not None
    )


def lora_config(model: PreTrainedModel, model_args: ModelArguments, plan: FreezePlan) -> LoraConfig:
    """LoRA on the LLM's linear layers; the trained vision-side modules go to `modules_to_save`."""
    from peft import LoraConfig

    names = model_args.lora_target_modules
    if not names:
        names = sorted(
            {
                name.rsplit(".", 1)[-1]
                for name, module in model.model.language_model.named_modules()
                if isinstance(module, torch.nn.Linear)
            }
        )
    target = r"model\.language_model\..*\.(" + "|".join(names) + r")"
    modules_to_save = ["resampler", "high_res_projector"]
    if getattr(model, "ctc_head", None) is not None:
        modules_to_save.append("ctc_head")
    if plan.high_res_downsampler:
        modules_to_save.append("high_res_downsampler")
    if plan.vision_tower:
        modules_to_save.append("vision_tower")
    if plan.high_res_vision_tower:
        modules_to_save.append("high_res_vision_tower")
    return LoraConfig(
        r=model_args.lora_r,
        lora_alpha=model_args.lora_alpha,
        lora_dropout=model_args.lora_dropout,
        bias="none",
        task_type="CAUSAL_LM",
        target_modules=target,
        modules_to_save=modules_to_save,
    )


def _trainer_class():
    """TRL's SFTTrainer with the loss left to the model.

    SFTTrainer computes the loss itself from the backbone's hidden states and the LM head (a fused log-prob kernel),
    bypassing the model's `forward(labels=...)`: a model whose loss has more than next-token cross-entropy — our
    line readers add a CTC loss on the image columns — would silently train without it. Here every step calls the
    model with its labels (transformers' `Trainer.compute_loss`), and the CTC part is logged as `ctc_loss`.
    """
    from transformers import Trainer
    from trl import SFTTrainer

    class OcrMllmSFTTrainer(SFTTrainer):
        def compute_loss(
            self,
            model: torch.nn.Module,
            inputs: dict,
            return_outputs: bool = False,
            num_items_in_batch: torch.Tensor | int | None = None,
        ) -> torch.Tensor | tuple:
            inputs["use_cache"] = False
            loss, outputs = Trainer.compute_loss(
                self, model, inputs, return_outputs=True, num_items_in_batch=num_items_in_batch
            )
            ctc_loss = outputs.get("ctc_loss") if isinstance(outputs, dict) else None
            if ctc_loss is not None and model.training:
                self._metrics["train"]["ctc_loss"].append(float(ctc_loss.detach()))
            return (loss, outputs) if return_outputs else loss

    return OcrMllmSFTTrainer


@dataclass
class TrainingResult:
    output_dir: str
    log_history: list
    global_step: int
    parameter_summary: dict
    skipped_records: dict


def run_stage(
    stage: str,
    model_args: ModelArguments,
    data_args: DataArguments,
    training_args: OcrMllmTrainingConfig,
    train_dataset: Dataset | None = None,
    eval_dataset: Dataset | None = None,
    callbacks: list[TrainerCallback] | None = None,
    save_final: bool = True,
) -> TrainingResult:
    """Build the model for `stage`, train it with SFTTrainer + our collator, save a complete folder (or adapter)."""
    if stage not in STAGE_CONFIGS:
        raise ValueError(f"stage must be one of {sorted(STAGE_CONFIGS)}")
    if model_args.use_peft and stage == "pretrain":
        raise ValueError("LoRA is for stage 2 (train_sft.py); stage 1 trains the Resampler and projector in full")
    # before anything is loaded: `last` means the newest complete checkpoint, and there must be one
    checkpoint = resolve_resume_checkpoint(training_args.resume_from_checkpoint, training_args.output_dir)
    push_to_hub, hub_model_id = training_args.push_to_hub, training_args.hub_model_id
    training_args.push_to_hub = False  # we push exactly the final folder ourselves, not the checkpoints
    training_args.remove_unused_columns = False
    training_args.dataset_kwargs = {**(training_args.dataset_kwargs or {}), "skip_prepare_dataset": True}

    model, processor = load_model_for_training(model_args, training_args)
    plan = stage_plan(
        stage,
        train_downsampler=model_args.train_downsampler,
        unfreeze_vision_tower=model_args.unfreeze_vision_tower,
        unfreeze_high_res_vision_tower=model_args.unfreeze_high_res_vision_tower,
        train_language_model=not model_args.use_peft,
    )
    apply_freeze_plan(model, plan)
    peft_config = lora_config(model, model_args, plan) if model_args.use_peft else None
    if model_args.load_in_4bit or model_args.load_in_8bit:
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(
            model, use_gradient_checkpointing=training_args.activation_checkpointing
        )
        apply_freeze_plan(model, plan)

    collator = OcrMllmDataCollator(
        processor,
        template=data_args.template or STAGE_TEMPLATES[stage],
        max_length=training_args.max_length,
        pad_to_multiple_of=training_args.pad_to_multiple_of
        if isinstance(training_args.pad_to_multiple_of, int)
        else None,
    )
    if train_dataset is None:
        train_dataset = load_datasets(
            data_args.dataset_name, data_args.image_root, data_args.dataset_train_split, data_args.dataset_config
        )
    if train_dataset is None:
        raise ValueError("No training data: pass --dataset_name (or --dataset)")
    if eval_dataset is None and data_args.eval_dataset:
        eval_dataset = load_datasets(
            data_args.eval_dataset, data_args.image_root, data_args.dataset_test_split, data_args.dataset_config
        )
    if data_args.max_train_samples:
        train_dataset = train_dataset.select(range(min(data_args.max_train_samples, len(train_dataset))))
    if data_args.filter_long_records:
        train_dataset = filter_long_records(
            train_dataset, collator, num_proc=training_args.dataset_num_proc, log=logger
        )
        if eval_dataset is not None:
            eval_dataset = filter_long_records(eval_dataset, collator, log=logger)

    summary_callback = TrainableParametersCallback(printer=_print_main)
    trainer = _trainer_class()(
        model=model,
        args=training_args,
        data_collator=collator,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        processing_class=processor,
        peft_config=peft_config,
        callbacks=[summary_callback, *(callbacks or [])],
    )
    trainer.train(resume_from_checkpoint=checkpoint)

    if save_final:
        save_final_model(trainer, processor, training_args.output_dir)
        if push_to_hub and trainer.accelerator.is_main_process:
            repo_id = hub_model_id or Path(training_args.output_dir).name
            url = push_folder(
                training_args.output_dir,
                repo_id,
                token=training_args.hub_token,
                private=training_args.hub_private_repo,
            )
            logger.info("Pushed %s to %s", training_args.output_dir, url)
    result = TrainingResult(
        output_dir=str(training_args.output_dir),
        log_history=list(trainer.state.log_history),
        global_step=trainer.state.global_step,
        parameter_summary=summary_callback.summary or parameter_summary(trainer.model),
        skipped_records=dict(collator.skipped),
    )
    del trainer, model
    gc.collect()
    return result


def _print_main(text: str):
    if int(os.environ.get("RANK", "0")) == 0:
        print(text, flush=True)


def finish_distributed():
    """Tear the process group down before interpreter shutdown (avoids gloo's exit-time SIGABRT, environment.md §2)."""
    gc.collect()
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def main(stage: str, argv: list[str] | None = None) -> int:
    logging.basicConfig(
        level=logging.INFO if int(os.environ.get("RANK", "0")) == 0 else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    model_args, data_args, training_args = parse_stage_args(stage, argv)
    try:
        result = run_stage(stage, model_args, data_args, training_args)
        _print_main(f"done: {result.global_step} steps, model in {result.output_dir}")
    except (CheckpointError, FolderError, InferenceSetupError) as exc:  # one line naming the file, not a traceback
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return 2
    finally:
        finish_distributed()
    return 0


__all__ = ["run_stage", "parse_stage_args", "main", "format_parameter_summary", "TrainingResult"]
