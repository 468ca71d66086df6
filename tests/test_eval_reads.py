"""eval's batched generation keeps each image with its own question: on a model that reads (tests/_reading_model.py)
an OCRBench-format folder of its word images scores every question at batch 8, the same as at batch 1."""

import json

from tests._reading_model import write_ocrbench_folder


def test_batched_eval_reads_every_image(reading_model, tmp_path):
    from eval.run import run_task

    folder, images, words = reading_model
    order = [5, 2, 7, 0, 3, 6, 1, 4, 2, 5]
    write_ocrbench_folder(tmp_path, [images[k] for k in order], [words[k] for k in order])
    predictions = {}
    for batch_size in (8, 1):
        out = tmp_path / f"out{batch_size}"
        result = run_task(
            "ocrbench",
            str(tmp_path),
            out,
            model=str(folder),
            batch_size=batch_size,
            device="cpu",
            dtype="float32",
            progress=False,
        )
        assert result.headline["final_score"] == len(order)
        rows = [json.loads(line) for line in (out / "ocrbench_predictions.jsonl").read_text().splitlines()]
        predictions[batch_size] = {row["question_id"]: row["prediction"] for row in rows}
    assert predictions[8] == predictions[1]
    assert [predictions[8][i] for i in range(len(order))] == [words[k] for k in order]
