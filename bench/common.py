"""Shared benchmark helpers: machine facts, interleaved timing (ours and the peer in the same loop, medians),
peak RSS per case, JSON results and matplotlib charts."""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import json
import os
import platform
import statistics
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from ocr_mllm.machine import busy_cores, usable_cores  # noqa: F401 (busy_cores: re-exported for the benches)


REPO = Path(__file__).resolve().parents[1]
RESULTS_DIR = REPO / "bench" / "results"

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


# --------------------------------------------------------------------------------------------------------------------
# machine
# --------------------------------------------------------------------------------------------------------------------
def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _cpu_flags() -> list[str]:
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    wanted = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_tile")
                    return [flag for flag in wanted if flag in flags]
    except OSError:
        pass
    return []


def _memory_gib() -> float | None:
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemTotal"):
                    return round(int(line.split()[1]) / 1024**2, 1)
    except OSError:
        pass
    return None


def machine_info(device: str = "cpu") -> dict:
    """What the numbers were measured on (including the load average: other jobs make CPU numbers noisy)."""
    info = {
        "cpu": _cpu_model(),
        "cpu_flags": _cpu_flags(),
        "logical_cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "memory_gib": _memory_gib(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None,
    }
    versions = {}
    from importlib import metadata

    for name in ("torch", "transformers", "numpy", "pillow", "torchvision", "onnxruntime", "rapidocr", "matplotlib"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    info["versions"] = versions
    try:
        import torch

        info["torch_threads"] = torch.get_num_threads()
        if device.startswith("cuda") and torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
    except ImportError:
        pass
    return info


def choose_threads(requested: str | int | None) -> tuple[int, str]:
    """torch thread count for a benchmark: an explicit number, or "auto": every usable core on an idle machine, but 1
    when other jobs keep ≥ 0.5 core busy — there a multi-threaded torch waits at every parallel region for a thread
    the other job has descheduled (measured here: decode steps of 1 ms became 15-200 ms), while 1 thread stays
    stable and keeps ours-vs-peer ratios meaningful."""
    cores = usable_cores()
    if requested not in (None, "auto"):
        return int(requested), "requested"
    busy = busy_cores()
    if busy is not None and busy >= 0.5 and cores > 1:
        return 1, f"auto: other jobs kept {busy} of {cores} cores busy at start, so 1 thread"
    return cores, f"auto: machine idle at start ({busy} cores busy), all {cores} cores"


def load_average() -> list[float] | None:
    return [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None


# --------------------------------------------------------------------------------------------------------------------
# timing
# --------------------------------------------------------------------------------------------------------------------
def synchronize(device: str = "cpu") -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def interleaved(
    cases: dict[str, Callable[[], object]], repeats: int, warmup: int = 1, device: str = "cpu"
) -> dict[str, list[float]]:
    """Time every case `repeats` times, round-robin (the order rotates each round), after `warmup` untimed calls each.

    Ours and the peer thus share whatever else the machine is doing at that moment; compare medians / ratios."""
    names = list(cases)
    for _ in range(warmup):
        for name in names:
            cases[name]()
    synchronize(device)
    times: dict[str, list[float]] = {name: [] for name in names}
    for round_index in range(repeats):
        shift = round_index % len(names)
        order = names[shift:] + names[:shift]
        if round_index % 2:
            order = order[::-1]
        for name in order:
            synchronize(device)
            start = time.perf_counter()
            cases[name]()
            synchronize(device)
            times[name].append(time.perf_counter() - start)
    return times


def stats(values: list[float]) -> dict:
    ordered = sorted(values)
    return {
        "median": statistics.median(ordered),
        "min": ordered[0],
        "max": ordered[-1],
        "n": len(ordered),
    }


def ratio(numerator: float, denominator: float) -> float | None:
    return round(numerator / denominator, 3) if denominator else None


def median_ratio(ours: list[float], peer: list[float]) -> float:
    """Speed-up of ours over the peer (> 1: ours faster), median of the per-round ratios — robust to load spikes that
    hit one round (both sides of a round ran back to back)."""
    return statistics.median(p / o for o, p in zip(ours, peer))


# --------------------------------------------------------------------------------------------------------------------
# memory
# --------------------------------------------------------------------------------------------------------------------
def _status_kib(field: str) -> int | None:
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


class PeakRSS:
    """Peak resident memory (MiB) inside a `with` block: resets the kernel's high-water mark (Linux clear_refs 5) and
    reads VmHWM after; elsewhere it samples RSS every 2 ms with psutil. `.peak_mib` (absolute) and `.delta_mib`
    (peak minus RSS at entry)."""

    def __init__(self):
        self.peak_mib = None
        self.delta_mib = None
        self._sampler = None

    def __enter__(self):
        self._start = (_status_kib("VmRSS") or 0) / 1024
        self._exact = False
        try:
            with open("/proc/self/clear_refs", "w") as handle:
                handle.write("5")
            self._exact = _status_kib("VmHWM") is not None
        except OSError:
            pass
        if not self._exact:
            self._stop = threading.Event()
            self._max = self._start
            self._sampler = threading.Thread(target=self._sample, daemon=True)
            self._sampler.start()
        return self

    def _sample(self):
        try:
            import psutil

            process = psutil.Process()
            while not self._stop.is_set():
                self._max = max(self._max, process.memory_info().rss / 1024**2)
                time.sleep(0.002)
        except ImportError:
            pass

    def __exit__(self, *exc):
        if self._exact:
            self.peak_mib = (_status_kib("VmHWM") or 0) / 1024
        else:
            self._stop.set()
            self._sampler.join()
            self.peak_mib = self._max
        self.peak_mib = round(self.peak_mib, 1)
        self.delta_mib = round(self.peak_mib - self._start, 1)
        return False


def process_peak_rss_mib() -> float:
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / 1024 if sys.platform != "darwin" else peak / 1024**2, 1)


# --------------------------------------------------------------------------------------------------------------------
# arguments, results, charts
# --------------------------------------------------------------------------------------------------------------------
def add_common_arguments(parser: argparse.ArgumentParser, default_repeats: int) -> None:
    parser.add_argument("--quick", action="store_true", help="tiny sizes and one repeat (smoke test)")
    parser.add_argument(
        "--repeats", type=int, default=None, help=f"timed rounds per case (default {default_repeats}; 1 with --quick)"
    )
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--output-dir", default=str(RESULTS_DIR), help="where the JSON and PNG go")


def resolve_repeats(args, default_repeats: int) -> int:
    if args.repeats:
        return args.repeats
    return 1 if args.quick else default_repeats


def check_device(device: str) -> str:
    if device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise SystemExit(f"--device {device}: CUDA is not available on this machine")
    elif device != "cpu":
        raise SystemExit(f"--device must be cpu or cuda, got {device!r}")
    return device


def write_results(name: str, payload: dict, output_dir: str | Path) -> Path:
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    payload = {"benchmark": name, "date": _dt.datetime.now().isoformat(timespec="seconds"), **payload}
    payload.setdefault("process_peak_rss_mib", process_peak_rss_mib())
    payload["load_average_at_end"] = load_average()
    path = output_dir / f"{name}.json"
    path.write_text(json.dumps(payload, indent=2, ensure_ascii=False, default=_json_default) + "\n", encoding="utf-8")
    return path


def _json_default(value):
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    return str(value)


def grouped_bars(
    ax,
    groups: list[str],
    series: dict[str, list[float | None]],
    ylabel: str,
    title: str,
    log: bool = False,
    fmt: str = "{:.3g}",
) -> None:
    """One bar per (group, series); missing values (None) are left out."""
    import numpy as np

    count = max(1, len(series))
    width = 0.8 / count
    x = np.arange(len(groups))
    for index, (label, values) in enumerate(series.items()):
        positions = x + (index - (count - 1) / 2) * width
        heights = [v if v is not None else 0 for v in values]
        bars = ax.bar(positions, heights, width, label=label)
        for bar, value in zip(bars, values):
            if value is not None:
                ax.annotate(
                    fmt.format(value),
                    (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                    ha="center",
                    va="bottom",
                    fontsize=6,
                    rotation=90,
                    xytext=(0, 2),
                    textcoords="offset points",
                )
    ax.set_xticks(x)
    ax.set_xticklabels(groups, fontsize=8)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    if log:
        ax.set_yscale("log")
    ax.margins(y=0.25)
    ax.legend(fontsize=7)


@contextlib.contextmanager
def figure(path: str | Path, rows: int = 1, columns: int = 1, size=(11, 4.5), title: str | None = None):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(rows, columns, figsize=size, squeeze=False)
    try:
        yield fig, axes
        if title:
            fig.suptitle(title, fontsize=10)
        fig.tight_layout()
        fig.savefig(path, dpi=110)
    finally:
        plt.close(fig)


def log(message: str) -> None:
    print(message, flush=True)
