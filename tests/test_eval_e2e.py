"""End to end with the tiny random model (built once per session by conftest's ``tiny_model_dir``): every task generates
through ``ocr_mllm.inference`` on its tiny official-layout copy, writes predictions / results, and resumes after a
"kill"."""

import json
from pathlib import Path

import fixtures_eval as fx
import pytest

from eval.common import EvalDataError, read_jsonl
from eval.run import main, run_task
from eval.tasks import TASKS


GEN = dict(max_new_tokens=3, batch_size=4, progress=False)


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    return fx.make_all(tmp_path_factory.mktemp("bench"))


@pytest.fixture(autouse=True)
def no_grader(monkeypatch):
    for k in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "MMVET_GRADER_MODEL"):
        monkeypatch.delenv(k, raising=False)


EXPECTED_ROWS = {  # predictions written with --limit 2
    "textvqa": 2,
    "mme": 4,
    "mmbench_en": 6,
    "mmbench_cn": 6,
    "mmvet": 2,
    "ocrbench": 2,
    "docvqa": 2,
    "chartqa": 2,
}


@pytest.mark.parametrize("task", list(TASKS))
def test_each_task_generates_and_scores(task, bench, tiny_model_dir, tmp_path):
    out = tmp_path / task
    r = run_task(task, str(bench[task]), out, model=str(tiny_model_dir), limit=2, prompt_style="original", **GEN)
    rows = read_jsonl(out / f"{task}_predictions.jsonl")
    assert len(rows) == EXPECTED_ROWS[task]
    assert all(isinstance(row["prediction"], str) and "question_id" in row and "prompt" in row for row in rows)
    doc = json.loads((out / f"{task}_results.json").read_text())
    assert doc["run"]["generation"]["done"] == EXPECTED_ROWS[task]
    assert doc["run"]["generation"]["failed"] == 0
    assert doc["metrics"] == json.loads(json.dumps(r.headline))
    assert (out / f"{task}_results.md").read_text().startswith(f"## {task}")


def test_resume_reuses_existing_predictions(bench, tiny_model_dir, tmp_path):
    out = tmp_path / "tv"
    run_task("textvqa", str(bench["textvqa"]), out, model=str(tiny_model_dir), limit=2, **GEN)
    pred_file = out / "textvqa_predictions.jsonl"
    first = read_jsonl(pred_file)
    assert [r["question_id"] for r in sorted(first, key=lambda r: r["question_id"])] == [34602, 34603]
    # mark the existing answers, and leave a half-written line as a kill in the middle of a write would
    with open(pred_file, "w") as f:
        for row in first:
            f.write(json.dumps(dict(row, prediction="SENTINEL " + row["prediction"])) + "\n")
        f.write('{"question_id": 34604, "prompt": "what does the si')
    r = run_task("textvqa", str(bench["textvqa"]), out, model=str(tiny_model_dir), **GEN)
    rows = read_jsonl(pred_file)
    assert len(rows) == 3
    by_id = {row["question_id"]: row["prediction"] for row in rows}
    assert by_id[34602].startswith("SENTINEL") and by_id[34603].startswith("SENTINEL")  # reused, not regenerated
    assert not by_id[34604].startswith("SENTINEL")
    doc = json.loads((out / "textvqa_results.json").read_text())
    assert doc["run"]["generation"]["skipped_existing"] == 2
    assert doc["run"]["generation"]["done"] == 1
    assert r.headline["questions"] == 3


def test_changed_settings_refuse_to_mix(bench, tiny_model_dir, tmp_path):
    out = tmp_path / "ocr"
    run_task("ocrbench", str(bench["ocrbench"]), out, model=str(tiny_model_dir), limit=1, **GEN)
    with pytest.raises(EvalDataError, match="prompt_style"):
        run_task(
            "ocrbench", str(bench["ocrbench"]), out, model=str(tiny_model_dir), limit=1, prompt_style="original", **GEN
        )
    run_task(
        "ocrbench",
        str(bench["ocrbench"]),
        out,
        model=str(tiny_model_dir),
        limit=1,
        prompt_style="original",
        overwrite=True,
        **GEN,
    )
    assert len(read_jsonl(out / "ocrbench_predictions.jsonl")) == 1


def test_cli_and_suite_with_model(bench, tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "cli"
    rc = main(
        [
            "--model",
            str(tiny_model_dir),
            "--task",
            "mmbench",
            "--data",
            str(bench["mmbench_en"]),
            "--output",
            str(out),
            "--limit",
            "1",
            "--max-new-tokens",
            "2",
            "--no-progress",
            "--no-circular",
        ]
    )
    assert rc == 0
    assert "single_pass_accuracy" in capsys.readouterr().out
    assert len(read_jsonl(out / "mmbench_en_predictions.jsonl")) == 1

    cfg = tmp_path / "suite.yaml"
    cfg.write_text(
        "output: unused\nbatch_size: 2\nmax_new_tokens: 2\ntasks:\n"
        f"  docvqa: {{data: '{bench['docvqa']}'}}\n"
        f"  chartqa: {{data: '{bench['chartqa']}', prompt_style: original}}\n"
    )
    rc = main(
        [
            "--task",
            "all",
            "--config",
            str(cfg),
            "--model",
            str(tiny_model_dir),
            "--output",
            str(tmp_path / "suite"),
            "--limit",
            "1",
            "--no-progress",
        ]
    )
    printed = capsys.readouterr().out
    assert rc == 0
    assert "| docvqa | anls |" in printed and "| chartqa | relaxed_accuracy |" in printed
    assert Path(tmp_path / "suite" / "chartqa" / "chartqa_predictions.jsonl").is_file()
    assert json.loads((tmp_path / "suite" / "chartqa" / "chartqa_run.json").read_text())["prompt_style"] == "original"
