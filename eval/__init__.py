"""Benchmark evaluation with the official metrics: ``python -m eval.run`` (see eval/run.py and docs/eval.md).

Modules: one per benchmark (textvqa, mme, mmbench, mmvet, ocrbench, docvqa, chartqa), each with
``load_samples(data, prompt_style, opts) -> [Sample]`` and ``score(samples, predictions, out_dir, opts) -> TaskResult``;
the metric functions themselves live in :mod:`eval.metrics`. Generation goes through ``ocr_mllm.inference``.
"""
