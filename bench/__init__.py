"""Benchmarks: image processing, model speed, OCR quality (ours vs transformers' DeepseekVLHybrid / GotOcr2, Tesseract,
RapidOCR), all measured side by side in one run. `python -m bench.run_all` runs everything; results and charts go to
bench/results/, the summary table to bench/results/summary.md (and docs/bench.md with --update-docs)."""
