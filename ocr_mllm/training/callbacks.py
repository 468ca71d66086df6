"""Trainer callbacks: the trainable-parameter table at the start (ZeRO-3-aware), and an optional wall-clock budget."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from .freezing import format_parameter_summary, parameter_summary


if TYPE_CHECKING:
    import torch


logger = logging.getLogger(__name__)


class TrainableParametersCallback(TrainerCallback):
    """Prints which components train, with sizes (ds_numel under ZeRO-3), once the model is wrapped."""

    def __init__(self, printer: Callable[[str], Any] = print):
        self.printer = printer
        self.summary = None

    def on_train_begin(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        model: torch.nn.Module | None = None,
        **kwargs,
    ) -> None:
        if model is None:
            return
        self.summary = parameter_summary(model)
        if state.is_world_process_zero:
            self.printer("Trainable parameters\n" + format_parameter_summary(self.summary))


class TimeBudgetCallback(TrainerCallback):
    """Stops training cleanly (final save and logs as at a normal end) once `seconds` have passed.

    With ``time_schedule=True`` the learning rate follows a linear warm-up over ``warmup_steps`` and then a cosine
    decay over *wall-clock time* that reaches 0 exactly at the budget, so a run fits a time budget with a complete
    schedule whatever the machine's speed (set ``max_steps`` to an upper bound). Single-process runs only: ranks
    would disagree on the clock."""

    def __init__(
        self, seconds: float | None, time_schedule: bool = False, warmup_steps: int = 0, min_ratio: float = 0.0
    ):
        self.seconds = seconds
        self.time_schedule = time_schedule and seconds is not None
        self.warmup_steps = warmup_steps
        self.min_ratio = min_ratio
        self.start = None

    def factor(self, step: int) -> float:
        warmup = min(1.0, (step + 1) / self.warmup_steps) if self.warmup_steps else 1.0
        progress = min(1.0, (time.monotonic() - self.start) / self.seconds)
        return warmup * (self.min_ratio + (1 - self.min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress)))

    def on_train_begin(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        lr_scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
        **kwargs,
    ) -> None:
        self.start = time.monotonic()
        if self.time_schedule:
            if lr_scheduler is None or not hasattr(lr_scheduler, "lr_lambdas"):
                raise ValueError("time_schedule needs a LambdaLR scheduler (the default schedulers are)")
            lr_scheduler.lr_lambdas = [self.factor for _ in lr_scheduler.lr_lambdas]

    def on_log(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        logs: dict[str, Any] | None = None,
        **kwargs,
    ) -> None:
        # runs before the progress printer (the Trainer adds it last), so the printed line shows where the run is in
        # its budget; log_history and the report callbacks have already taken their copy
        if self.seconds is not None and self.start is not None and logs is not None and "loss" in logs:
            logs["time"] = f"{_minutes_seconds(time.monotonic() - self.start)} / {_minutes_seconds(self.seconds)}"

    def on_step_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs
    ) -> TrainerControl:
        if self.seconds is not None and time.monotonic() - self.start > self.seconds:
            logger.info("Time budget of %.0f s reached at step %d", self.seconds, state.global_step)
            control.should_training_stop = True
        return control


def _minutes_seconds(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 60}:{seconds % 60:02d}"


class StopAtStepCallback(TrainerCallback):
    """Stops after `step` optimizer steps (to simulate an interrupted run in tests)."""

    def __init__(self, step: int):
        self.step = step

    def on_step_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs
    ) -> TrainerControl:
        if state.global_step >= self.step:
            control.should_save = True
            control.should_training_stop = True
        return control
