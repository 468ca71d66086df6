"""Two-stage training of OCR-MLLM on TRL's SFTTrainer: collator, freezing plans, arguments, callbacks, saving."""

from .collator import IGNORE_INDEX, OcrMllmDataCollator, filter_long_records, normalize_messages
from .freezing import FreezePlan, apply_freeze_plan, format_parameter_summary, parameter_summary, stage_plan


__all__ = [
    "IGNORE_INDEX",
    "OcrMllmDataCollator",
    "filter_long_records",
    "normalize_messages",
    "FreezePlan",
    "apply_freeze_plan",
    "stage_plan",
    "parameter_summary",
    "format_parameter_summary",
]
