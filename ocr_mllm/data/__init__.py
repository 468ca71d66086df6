"""Data for OCR MLLM training: synthetic multilingual OCR data and dataset loading (TRL ``messages``/``images`` form)."""

from .loading import (
    REASONS,
    LoadReport,
    Problem,
    RecordError,
    conversation_to_messages,
    llava_to_messages,
    load_training_dataset,
    text_to_blocks,
)
from .synthetic import (
    LANGUAGES,
    QA_TYPES,
    TASKS,
    GeneratorConfig,
    generate_dataset,
    iter_corpus_texts,
    iter_samples,
)


__all__ = [
    "LANGUAGES",
    "QA_TYPES",
    "REASONS",
    "TASKS",
    "GeneratorConfig",
    "LoadReport",
    "Problem",
    "RecordError",
    "conversation_to_messages",
    "generate_dataset",
    "iter_corpus_texts",
    "iter_samples",
    "llava_to_messages",
    "load_training_dataset",
    "text_to_blocks",
]
