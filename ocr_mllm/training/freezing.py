"""What each stage trains, and a trainable-parameter summary that also counts ZeRO-3-partitioned parameters.

Components (prefixes of `OcrMllmForConditionalGeneration`'s parameter names, see docs/CONTRACTS.md):

=======================  =====================================  ==========================================
component                parameters                             stage 1 (pretrain)  | stage 2 (SFT)
=======================  =====================================  ==========================================
vision_tower             model.vision_tower.*                   frozen              | frozen (``--unfreeze_vision_tower``)
resampler                model.resampler.*                      trained             | trained
high_res_vision_tower    model.high_res_vision_tower.*          frozen              | frozen (``--unfreeze_high_res_vision_tower``)
high_res_downsampler     model.high_res_downsampler.*           ``--train_downsampler`` (default off: Vary's / GOT-OCR2's convs come
                                                                pretrained with SAM; turn it on when they are fresh)
high_res_projector       model.high_res_projector.*             trained             | trained
language_model, lm_head  model.language_model.*, lm_head.*      frozen              | trained (full) or LoRA
ctc_head                 ctc_head.* (line models only)          trained             | trained
=======================  =====================================  ==========================================
"""

from __future__ import annotations

import logging
import re
from collections import OrderedDict
from dataclasses import dataclass

import torch


logger = logging.getLogger(__name__)

COMPONENTS = OrderedDict(
    [
        ("vision_tower", "model.vision_tower."),
        ("resampler", "model.resampler."),
        ("high_res_vision_tower", "model.high_res_vision_tower."),
        ("high_res_downsampler", "model.high_res_downsampler."),
        ("high_res_projector", "model.high_res_projector."),
        ("language_model", "model.language_model."),
        ("lm_head", "lm_head."),
        ("ctc_head", "ctc_head."),
    ]
)
# PEFT wraps the model: base_model.model.<our names>, LoRA weights carry lora_ in their names
_PEFT_PREFIX = re.compile(r"^(base_model\.model\.)")
_PEFT_WRAPPER_PARTS = re.compile(r"\.(modules_to_save|original_module)\.[^.]+\.|\.base_layer\.")


@dataclass
class FreezePlan:
    """Which components train. Build with :func:`stage_plan`."""

    vision_tower: bool = False
    resampler: bool = True
    high_res_vision_tower: bool = False
    high_res_downsampler: bool = False
    high_res_projector: bool = True
    language_model: bool = False
    lm_head: bool = False
    ctc_head: bool = True  # only line models with config.ctc_loss_weight > 0 have one; it trains whenever they do

    def trainable_components(self) -> list[str]:
        return [name for name in COMPONENTS if getattr(self, name)]


def stage_plan(
    stage: str,
    train_downsampler: bool = False,
    unfreeze_vision_tower: bool = False,
    unfreeze_high_res_vision_tower: bool = False,
    train_language_model: bool = True,
) -> FreezePlan:
    """Stage 1 (``pretrain``): Resampler + high-res projector (+ downsampler convs if asked).
    Stage 2 (``sft``): those plus the LLM and lm_head (``train_language_model=False`` for LoRA, where PEFT decides),
    with either encoder on request."""
    if stage == "pretrain":
        return FreezePlan(
            vision_tower=unfreeze_vision_tower,
            high_res_vision_tower=unfreeze_high_res_vision_tower,
            high_res_downsampler=train_downsampler,
        )
    if stage == "sft":
        return FreezePlan(
            vision_tower=unfreeze_vision_tower,
            high_res_vision_tower=unfreeze_high_res_vision_tower,
            high_res_downsampler=train_downsampler,
            language_model=train_language_model,
            lm_head=train_language_model,
        )
    raise ValueError(f"stage must be 'pretrain' or 'sft', got {stage!r}")


def component_of(name: str) -> str:
    """Component of a parameter name (PEFT prefixes and wrappers stripped); 'lora' for adapter weights."""
    if "lora_" in name:
        return "lora"
    name = _PEFT_WRAPPER_PARTS.sub(".", _PEFT_PREFIX.sub("", name))
    for component, prefix in COMPONENTS.items():
        if name.startswith(prefix):
            return component
    return "other"


def apply_freeze_plan(model: torch.nn.Module, plan: FreezePlan) -> FreezePlan:
    """Set requires_grad on every parameter of `model` (an `OcrMllmForConditionalGeneration`) following `plan`."""
    unknown = []
    for name, param in model.named_parameters():
        component = component_of(name)
        if component not in COMPONENTS:
            unknown.append(name)
            param.requires_grad_(False)
            continue
        param.requires_grad_(getattr(plan, component))
    if unknown:
        logger.warning("Parameters outside the known components were frozen: %s", unknown[:5])
    if not any(p.requires_grad for p in model.parameters()):
        raise ValueError("The freeze plan leaves nothing to train")
    return plan


def numel(param: torch.nn.Parameter) -> int:
    """Full size of a parameter, also under DeepSpeed ZeRO-3 (where `numel()` is 0 on a partitioned parameter)."""
    return int(getattr(param, "ds_numel", 0) or param.numel())


def parameter_summary(model: torch.nn.Module) -> dict[str, dict[str, int]]:
    """{component: {"total": n, "trainable": n}} plus "all"; ZeRO-3-aware (ds_numel)."""
    summary: dict[str, dict[str, int]] = OrderedDict()
    seen = set()
    for name, param in model.named_parameters():
        if id(param) in seen:  # tied / shared
            continue
        seen.add(id(param))
        component = component_of(name)
        entry = summary.setdefault(component, {"total": 0, "trainable": 0})
        count = numel(param)
        entry["total"] += count
        if param.requires_grad:
            entry["trainable"] += count
    order = list(COMPONENTS) + ["lora", "other"]
    summary = OrderedDict((k, summary[k]) for k in order if k in summary)
    summary["all"] = {
        "total": sum(v["total"] for v in summary.values()),
        "trainable": sum(v["trainable"] for v in summary.values()),
    }
    return summary


def format_parameter_summary(summary: dict[str, dict[str, int]]) -> str:
    def human(n: int) -> str:
        for unit, scale in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
            if n >= scale:
                return f"{n / scale:.2f}{unit}"
        return str(n)

    rows = [f"{'component':<24}{'trainable':>12}{'total':>12}{'%':>8}"]
    for component, entry in summary.items():
        share = 100.0 * entry["trainable"] / entry["total"] if entry["total"] else 0.0
        if component == "all":
            rows.append("-" * 56)
        rows.append(f"{component:<24}{human(entry['trainable']):>12}{human(entry['total']):>12}{share:>7.1f}%")
    return "\n".join(rows)
