"""The benchmark registry: task name → module + fixed options."""

from __future__ import annotations

from dataclasses import dataclass, field
from types import ModuleType

from . import chartqa, docvqa, mmbench, mme, mmvet, ocrbench, textvqa


@dataclass(frozen=True)
class TaskSpec:
    name: str
    module: ModuleType
    options: dict = field(default_factory=dict)

    @property
    def max_new_tokens(self) -> int:
        return self.module.MAX_NEW_TOKENS


TASKS: dict[str, TaskSpec] = {
    "textvqa": TaskSpec("textvqa", textvqa),
    "mme": TaskSpec("mme", mme),
    "mmbench_en": TaskSpec("mmbench_en", mmbench, {"lang": "en"}),
    "mmbench_cn": TaskSpec("mmbench_cn", mmbench, {"lang": "cn"}),
    "mmvet": TaskSpec("mmvet", mmvet),
    "ocrbench": TaskSpec("ocrbench", ocrbench),
    "docvqa": TaskSpec("docvqa", docvqa),
    "chartqa": TaskSpec("chartqa", chartqa),
}
ALIASES = {"mmbench": "mmbench_en", "mmbench-en": "mmbench_en", "mmbench-cn": "mmbench_cn", "mm-vet": "mmvet"}


def get_task(name: str) -> TaskSpec:
    key = ALIASES.get(name.lower(), name.lower())
    if key not in TASKS:
        raise KeyError(f"unknown task {name!r}; choose from {', '.join(TASKS)} (or 'all' with --config)")
    return TASKS[key]
