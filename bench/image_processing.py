#!/usr/bin/env python
"""Image processing speed: our OcrMllmImageProcessor against transformers' DeepseekVLHybrid and GotOcr2 image
processors, in one interleaved loop, at equal output sizes (low view 448 px, high-res view 1024 px, tiles ≤ 6).

Inputs are made here (deterministic): an A4 scan at 300 dpi (2480×3508), a phone photo (3024×4032, JPEG), a
1024×1024 screenshot and a 20000×20 strip. Every processor gets the same decoded RGB PIL image and returns torch
tensors. All torch-using code runs with 1 thread (the peers' PIL/NumPy backends are single-threaded); one extra row
shows ours with all cores.

Cases (per input):
  ours          both views (low 448 + high 1024, stretched) — the default processor
  ours_pad      both views, letterboxed to a square (the peer DeepseekVLHybrid's geometry)
  ours_tiled    both views + up to 6 high-res tiles
  ours_pil      both views with resize_backend="pil" (PIL's resize exactly; the old outputs bit for bit)
  before        the processor before this optimisation (PIL canvas + float normalise), for the speed-up and PSNR
  ours_Nthreads ours with torch using every core (timed in a second loop, interleaved with deepseek again)
  deepseek      DeepseekVLHybridImageProcessor: both views (high 1024 resized + padded, low 448 from it)
  got           GotOcr2ImageProcessor: one 1024 view (it has no second view)
  got_tiled     GotOcr2ImageProcessor crop_to_patches, max_patches 6: tiles + thumbnail

    python -m bench.image_processing            # full run, ~2 minutes on 2 cores
    python -m bench.image_processing --quick    # tiny inputs, one round (smoke test)
"""

from __future__ import annotations

import argparse
import importlib.util
import io
import math
import os
import time
import warnings

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from bench.common import (
    PeakRSS,
    add_common_arguments,
    busy_cores,
    figure,
    grouped_bars,
    interleaved,
    log,
    machine_info,
    median_ratio,
    resolve_repeats,
    stats,
    write_results,
)


INPUTS = ("a4_scan", "phone_photo", "screenshot", "strip")
DESCRIPTIONS = {
    "a4_scan": "A4 page scanned at 300 dpi, 2480×3508, grey paper + 60 lines of 42 px text, blur + noise",
    "phone_photo": "phone photo 3024×4032: lit background, a tilted printed page, blur, sensor noise, JPEG q88",
    "screenshot": "UI screenshot 1024×1024, flat colours, 15 px text",
    "strip": "20000×20 text strip (one long line)",
}
WORDS = (
    "Invoice total amount date number quick brown fox jumps over the lazy dog 2026 receipt No. 12345 payment due "
    "account balance tax reference customer address phone order quantity price subtotal shipping"
).split()


# --------------------------------------------------------------------------------------------------------------------
# inputs
# --------------------------------------------------------------------------------------------------------------------
def _font(pixels: int):
    for name in ("DejaVuSans.ttf", "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"):
        try:
            return ImageFont.truetype(name, max(6, pixels))
        except OSError:
            continue
    return ImageFont.load_default()


def _lines(rng, count: int) -> list[str]:
    return [" ".join(rng.choice(WORDS, size=int(rng.integers(4, 12)))) for _ in range(count)]


def _noise(image: Image.Image, rng, amplitude: int) -> Image.Image:
    array = np.asarray(image, dtype=np.int16)
    array = array + rng.integers(-amplitude, amplitude + 1, array.shape, dtype=np.int16)
    return Image.fromarray(np.clip(array, 0, 255).astype(np.uint8))


def make_inputs(scale: float = 1.0, seed: int = 0) -> dict[str, Image.Image]:
    """The four realistic inputs; `scale` < 1 shrinks them (and their text) for smoke tests."""
    rng = np.random.default_rng(seed)

    def px(value):
        return max(8, int(round(value * scale)))

    images = {}
    # A4 scan: grey paper, dark text, slight blur and scanner noise
    width, height = px(2480), px(3508)
    page = Image.new("L", (width, height), 245)
    draw, font = ImageDraw.Draw(page), _font(px(42))
    y = px(200)
    for line in _lines(rng, 60):
        draw.text((px(200), y), line, fill=20, font=font)
        y += px(52)
    images["a4_scan"] = _noise(page.filter(ImageFilter.GaussianBlur(0.8)), rng, 6).convert("RGB")

    # phone photo: lighting gradient, a tilted page with text, blur, noise, JPEG
    width, height = px(3024), px(4032)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    background = np.stack([120 + 60 * xx / width, 110 + 50 * yy / height, 90 + 40 * (xx + yy) / (width + height)], -1)
    photo = Image.fromarray(background.astype(np.uint8))
    sheet = Image.new("RGB", (px(2000), px(2800)), (235, 232, 225))
    draw, font = ImageDraw.Draw(sheet), _font(px(56))
    y = px(150)
    for line in _lines(rng, 38):
        draw.text((px(120), y), line, fill=(30, 30, 35), font=font)
        y += px(70)
    mask = Image.new("L", sheet.size, 255).rotate(4, expand=True)
    photo.paste(sheet.rotate(4, expand=True, resample=Image.Resampling.BICUBIC), (px(400), px(500)), mask)
    photo = _noise(photo.filter(ImageFilter.GaussianBlur(1.2)), rng, 8)
    buffer = io.BytesIO()
    photo.save(buffer, "JPEG", quality=88)
    buffer.seek(0)
    images["phone_photo"] = Image.open(buffer).convert("RGB")

    # screenshot: flat UI, small crisp text
    side = px(1024)
    shot = Image.new("RGB", (side, side), (250, 250, 252))
    draw, font = ImageDraw.Draw(shot), _font(px(15))
    draw.rectangle((0, 0, side, px(48)), fill=(40, 60, 90))
    draw.text((px(16), px(14)), "Settings - Account", fill="white", font=font)
    draw.rectangle((0, px(48), px(220), side), fill=(235, 238, 242))
    y = px(70)
    for line in _lines(rng, 48):
        draw.text((px(240), y), line, fill=(20, 20, 20), font=font)
        y += px(19)
    images["screenshot"] = shot

    # strip: one 20 px high line of text, 20000 px long
    width = max(200, int(20000 * scale))
    strip = Image.new("RGB", (width, 20), "white")
    draw, font = ImageDraw.Draw(strip), _font(14)
    x = 4
    while x < width:
        text = " ".join(rng.choice(WORDS, size=8))
        draw.text((x, 2), text, fill="black", font=font)
        x += int(draw.textlength(text, font=font)) + 20
    images["strip"] = strip
    for image in images.values():
        image.load()
    return images


# --------------------------------------------------------------------------------------------------------------------
# the processor before this optimisation (reference for speed-up and output equality)
# --------------------------------------------------------------------------------------------------------------------
def _before_normalize(image: Image.Image, mean, std) -> np.ndarray:
    scale = (1.0 / (255.0 * np.asarray(std, dtype=np.float32))).astype(np.float32)
    offset = (-np.asarray(mean, dtype=np.float32) / np.asarray(std, dtype=np.float32)).astype(np.float32)
    array = np.asarray(image, dtype=np.float32) * scale + offset
    return np.ascontiguousarray(array.transpose(2, 0, 1))


def _before_square(image: Image.Image, mean) -> Image.Image:
    side = max(image.size)
    if image.width == image.height:
        return image
    canvas = Image.new("RGB", (side, side), tuple(int(round(255 * m)) for m in mean))
    canvas.paste(image, ((side - image.width) // 2, (side - image.height) // 2))
    return canvas


def before_processor(processor, pad_to_square: bool = False, do_tiling: bool = False):
    """The previous OcrMllmImageProcessor.preprocess algorithm (same settings as `processor`) as a callable."""
    import torch

    from image_processing_ocr_mllm import load_image

    def run(image):
        pil = load_image(image)
        low_source = _before_square(pil, processor.image_mean) if pad_to_square else pil
        high_source = _before_square(pil, processor.high_res_image_mean) if pad_to_square else pil
        size, high_size, resample = processor.size, processor.high_res_size, processor.resample
        low = _before_normalize(low_source.resize((size, size), resample), processor.image_mean, processor.image_std)
        views = [high_source.resize((high_size, high_size), resample)]
        if processor.get_number_of_high_res_views(pil.width, pil.height, do_tiling) > 1:
            columns, rows = processor.tile_grid(pil.width, pil.height)
            canvas = pil.resize((columns * high_size, rows * high_size), resample)
            for row in range(rows):
                for column in range(columns):
                    left, top = column * high_size, row * high_size
                    views.append(canvas.crop((left, top, left + high_size, top + high_size)))
        high = [_before_normalize(v, processor.high_res_image_mean, processor.high_res_image_std) for v in views]
        return {
            "pixel_values": torch.from_numpy(np.stack([low])),
            "high_res_pixel_values": torch.from_numpy(np.stack(high)),
            "num_high_res_views": torch.tensor([len(high)]),
        }

    return run


# --------------------------------------------------------------------------------------------------------------------
# processors
# --------------------------------------------------------------------------------------------------------------------
def _peer_classes():
    """The torchvision ("fast") backends when torchvision imports, else the PIL backends (named in the results)."""
    has_torchvision = importlib.util.find_spec("torchvision") is not None
    if has_torchvision:
        try:
            from transformers.models.deepseek_vl_hybrid.image_processing_deepseek_vl_hybrid import (
                DeepseekVLHybridImageProcessor as DeepseekClass,
            )
            from transformers.models.got_ocr2.image_processing_got_ocr2 import GotOcr2ImageProcessor as GotClass

            return DeepseekClass, GotClass
        except Exception:  # torchvision present but broken (e.g. mismatched with torch): use PIL
            pass
    from transformers.models.deepseek_vl_hybrid.image_processing_pil_deepseek_vl_hybrid import (
        DeepseekVLHybridImageProcessorPil as DeepseekClass,
    )
    from transformers.models.got_ocr2.image_processing_pil_got_ocr2 import GotOcr2ImageProcessorPil as GotClass

    return DeepseekClass, GotClass


def build_processors(size: int, high_res_size: int, max_tiles: int = 6) -> tuple[dict, dict]:
    from image_processing_ocr_mllm import OcrMllmImageProcessor

    deepseek_class, got_class = _peer_classes()
    ours = OcrMllmImageProcessor(size=size, high_res_size=high_res_size, max_tiles=max_tiles)
    ours_pad = OcrMllmImageProcessor(size=size, high_res_size=high_res_size, pad_to_square=True)
    ours_tiled = OcrMllmImageProcessor(size=size, high_res_size=high_res_size, do_tiling=True, max_tiles=max_tiles)
    ours_pil = OcrMllmImageProcessor(size=size, high_res_size=high_res_size, resize_backend="pil")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        deepseek = deepseek_class(
            size={"height": size, "width": size}, high_res_size={"height": high_res_size, "width": high_res_size}
        )
        got = got_class(size={"height": high_res_size, "width": high_res_size})
        got_tiled = got_class(
            size={"height": high_res_size, "width": high_res_size},
            crop_to_patches=True,
            min_patches=1,
            max_patches=max_tiles,
        )
    cases = {
        "ours": lambda image: ours(image, return_tensors="pt"),
        "ours_pad": lambda image: ours_pad(image, return_tensors="pt"),
        "ours_tiled": lambda image: ours_tiled(image, return_tensors="pt"),
        "ours_pil": lambda image: ours_pil(image, return_tensors="pt"),
        "before": before_processor(ours),
        "deepseek": lambda image: deepseek(image, return_tensors="pt"),
        "got": lambda image: got(image, return_tensors="pt"),
        "got_tiled": lambda image: got_tiled(image, return_tensors="pt"),
    }
    info = {
        "deepseek_class": type(deepseek).__name__,
        "got_class": type(got).__name__,
        "peer_backend": getattr(deepseek, "backend", "pil"),
        "torchvision_installed": importlib.util.find_spec("torchvision") is not None,
        "ours_resize_backend": "torch" if ours._torch_resize_mode() else "pil",
        "objects": {"ours": ours, "ours_pad": ours_pad, "ours_tiled": ours_tiled, "deepseek": deepseek, "got": got},
    }
    return cases, info


# --------------------------------------------------------------------------------------------------------------------
# output checks
# --------------------------------------------------------------------------------------------------------------------
def _grey_levels(a, b, std) -> np.ndarray:
    """Normalised (N, 3, H, W) arrays → absolute difference in 8-bit grey levels."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    return np.abs(a - b) * (255.0 * np.asarray(std, dtype=np.float64)[None, :, None, None])


def compare(a, b, std) -> dict:
    if tuple(np.shape(a)) != tuple(np.shape(b)):
        return {"shape_mismatch": [list(np.shape(a)), list(np.shape(b))]}
    diff = _grey_levels(a, b, std)
    mse = float((diff**2).mean())
    return {
        "psnr_db": round(99.0 if mse == 0 else 10 * math.log10(255.0**2 / mse), 2),
        "max_grey_levels": round(float(diff.max()), 2),
        "max_abs_normalised": round(float(np.abs(np.asarray(a) - np.asarray(b)).max()), 6),
        "fraction_pixels_differing": round(float((diff > 0.5).mean()), 6),
    }


def output_checks(images: dict, size: int, high_res_size: int, objects: dict) -> dict:
    """PSNR of our outputs against the processor before this change (PIL canvas path), per input and mode, and a
    sanity check that ours and GotOcr2 produce the same 1024 view when given the same mean/std."""
    from image_processing_ocr_mllm import OcrMllmImageProcessor

    ours, ours_pad, ours_tiled = objects["ours"], objects["ours_pad"], objects["ours_tiled"]
    checks = {}
    for name, image in images.items():
        entry = {}
        for mode, processor, kwargs in (
            ("stretch", ours, {}),
            ("pad_to_square", ours_pad, {"pad_to_square": True}),
            ("tiled", ours_tiled, {"do_tiling": True}),
        ):
            new = processor(image)
            start = time.perf_counter()
            with PeakRSS() as memory:
                old = before_processor(processor, **kwargs)(image)
            before_seconds = time.perf_counter() - start
            entry[mode] = {
                "low_view": compare(new["pixel_values"], old["pixel_values"], processor.image_std),
                "high_res_views": compare(
                    new["high_res_pixel_values"], old["high_res_pixel_values"], processor.high_res_image_std
                ),
                "before_seconds_single_call": round(before_seconds, 4),
                "before_peak_rss_delta_mib": memory.delta_mib,
            }
        # equal output: ours with GotOcr2's mean/std vs GotOcr2's single 1024 view
        got = objects["got"]
        same_stats = OcrMllmImageProcessor(
            size=size,
            high_res_size=high_res_size,
            high_res_image_mean=list(got.image_mean),
            high_res_image_std=list(got.image_std),
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            got_view = got(image, return_tensors="np")["pixel_values"]
        entry["ours_vs_got_1024_view"] = compare(same_stats(image)["high_res_pixel_values"], got_view, got.image_std)
        checks[name] = entry
    return checks


# --------------------------------------------------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------------------------------------------------
PAIRS = {
    # (ours case, peer case, what is compared)
    "both_views_vs_deepseek": ("ours", "deepseek", "both views, ours stretched vs DeepseekVLHybrid letterboxed"),
    "both_views_letterbox_vs_deepseek": ("ours_pad", "deepseek", "both views, both letterboxed to a square"),
    "both_views_vs_got_one_view": ("ours", "got", "ours makes both views, GotOcr2 only the 1024 view"),
    "tiled_vs_got_tiled": (
        "ours_tiled",
        "got_tiled",
        "global + tiles (≤ 6) [+ our low view] vs GotOcr2 tiles + thumbnail",
    ),
    "speedup_vs_before": ("ours", "before", "this change: same outputs within ±1-2 grey levels"),
}


def run(args) -> dict:
    import torch

    torch.set_num_threads(args.threads)
    repeats = resolve_repeats(args, default_repeats=7)
    scale = 0.125 if args.quick else args.scale
    size, high_res_size = (112, 256) if args.quick else (args.size, args.high_res_size)
    log(f"[image_processing] making inputs (scale {scale}) ...")
    images = make_inputs(scale=scale)
    cases, info = build_processors(size, high_res_size, args.max_tiles)
    objects = info.pop("objects")
    selected = [name for name in (args.inputs or INPUTS) if name in images]

    all_cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    busy = busy_cores()
    machine_busy = busy is not None and busy >= 0.5
    if all_cores > 1 and machine_busy:
        log(f"[image_processing] other jobs keep {busy} cores busy: skipping the all-cores loop (threads would stall)")
    results = {}
    for name in selected:
        image = images[name]
        log(
            f"[image_processing] {name} {image.width}x{image.height}: {repeats} interleaved rounds of {len(cases)} cases"
        )
        bound = {case: (lambda fn=fn, image=image: fn(image)) for case, fn in cases.items()}
        times = interleaved(bound, repeats=repeats, warmup=1)
        if (
            all_cores > 1 and not machine_busy
        ):  # second loop: ours with every core (switching torch's pool size per call costs ~100 ms)
            torch.set_num_threads(all_cores)
            multi = interleaved(
                {f"ours_{all_cores}threads": bound["ours"], "deepseek_again": bound["deepseek"]},
                repeats=repeats,
                warmup=1,
            )
            torch.set_num_threads(args.threads)
            times.update(multi)
        memory = {}
        for case, fn in bound.items():
            with PeakRSS() as peak:
                fn()
            memory[case] = peak.delta_mib
        for case in times:
            memory.setdefault(case, None)
        entry = {"size": [image.width, image.height], "cases": {}}
        for case, values in times.items():
            summary = stats(values)
            entry["cases"][case] = {
                "seconds": {k: (round(v, 5) if isinstance(v, float) else v) for k, v in summary.items()},
                "images_per_second": round(1.0 / summary["median"], 2),
                "peak_rss_delta_mib": memory[case],
            }
        entry["speedups"] = {
            pair: round(median_ratio(times[ours_case], times[peer_case]), 2)
            for pair, (ours_case, peer_case, _) in PAIRS.items()
        }
        if all_cores > 1 and not machine_busy:
            entry["speedups"][f"ours_{all_cores}threads_vs_deepseek"] = round(
                median_ratio(times[f"ours_{all_cores}threads"], times["deepseek_again"]), 2
            )
        faster_peer = min(("deepseek", "got"), key=lambda case: stats(times[case])["median"])
        entry["vs_faster_peer"] = {
            "peer": faster_peer,
            "speedup": round(median_ratio(times["ours"], times[faster_peer]), 2),
        }
        entry["raw_seconds"] = {case: [round(v, 5) for v in values] for case, values in times.items()}
        results[name] = entry
        log(
            "    "
            + "  ".join(f"{case} {entry['cases'][case]['images_per_second']:.1f}/s" for case in times)
            + "\n    speed-ups: "
            + ", ".join(f"{k} {v}x" for k, v in entry["speedups"].items())
        )

    log("[image_processing] output checks (PSNR against the processor before this change) ...")
    checks = output_checks({name: images[name] for name in selected}, size, high_res_size, objects)
    payload = {
        "machine": machine_info(),
        "settings": {
            "size": size,
            "high_res_size": high_res_size,
            "max_tiles": args.max_tiles,
            "repeats": repeats,
            "warmup": 1,
            "torch_threads": args.threads,
            "input_scale": scale,
            "quick": args.quick,
            "inputs": {
                name: DESCRIPTIONS[name] + f" (here {images[name].width}x{images[name].height})" for name in selected
            },
            "input_type": "decoded RGB PIL images in memory; return_tensors='pt'",
            "multi_thread_loop": "ours_<N>threads and deepseek_again: a second interleaved loop with torch at N threads"
            + (f" — skipped: other jobs kept {busy} cores busy at start" if machine_busy else ""),
            "busy_cores_at_start": busy,
            "cases": {
                "ours": "both views, stretched (default)",
                "ours_pad": "both views, pad_to_square",
                "ours_tiled": "both views + tiles",
                "ours_pil": "resize_backend='pil' (exactly the old outputs)",
                "before": "the processor before this optimisation",
                "deepseek": info["deepseek_class"] + " both views",
                "got": info["got_class"] + " one 1024 view",
                "got_tiled": info["got_class"] + " crop_to_patches",
            },
            "pairs": {pair: description for pair, (_, _, description) in PAIRS.items()},
            **info,
        },
        "results": results,
        "output_checks": checks,
    }
    path = write_results("image_processing", payload, args.output_dir)
    chart(payload, path.with_suffix(".png"))
    log(f"[image_processing] wrote {path} and {path.with_suffix('.png').name}")
    return payload


def chart(payload: dict, path) -> None:
    results = payload["results"]
    groups = list(results)
    labels = [f"{g}\n{results[g]['size'][0]}x{results[g]['size'][1]}" for g in groups]
    both = [
        c
        for c in ("ours", "ours_pad", "ours_pil", "before", "deepseek", "got")
        if c in next(iter(results.values()))["cases"]
    ]
    tiled = ["ours_tiled", "got_tiled"]
    settings = payload["settings"]
    with figure(
        path,
        1,
        2,
        size=(13, 4.8),
        title=(
            f"Image processing, images/s (median of {settings['repeats']}, 1 torch thread; peers: {settings['deepseek_class']}, "
            f"{settings['got_class']})"
        ),
    ) as (fig, axes):
        grouped_bars(
            axes[0][0],
            labels,
            {c: [results[g]["cases"][c]["images_per_second"] for g in groups] for c in both},
            "images / s (log)",
            "both views (got: its single 1024 view)",
            log=True,
        )
        grouped_bars(
            axes[0][1],
            labels,
            {c: [results[g]["cases"][c]["images_per_second"] for g in groups] for c in tiled},
            "images / s (log)",
            "with tiling (≤ 6 tiles)",
            log=True,
        )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_arguments(parser, default_repeats=7)
    parser.add_argument("--size", type=int, default=448, help="low-res view side")
    parser.add_argument("--high-res-size", type=int, default=1024, help="high-res view / tile side")
    parser.add_argument("--max-tiles", type=int, default=6)
    parser.add_argument("--scale", type=float, default=1.0, help="input size factor (1 = the real sizes)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads for every case but ours_<N>threads")
    parser.add_argument("--inputs", nargs="*", choices=INPUTS, help="subset of inputs")
    args = parser.parse_args(argv)
    if args.device != "cpu":
        log("[image_processing] image processors run on the CPU; --device is ignored here")
    return run(args)


if __name__ == "__main__":
    main()
