"""Each benchmark read from a tiny copy in its official layout and scored from a predictions file (no model)."""

import json
import subprocess
import sys
from pathlib import Path

import fixtures_eval as fx
import pandas as pd
import pytest

from eval import mmbench as mmbench_mod
from eval.common import EvalDataError, load_predictions
from eval.run import main, run_task
from eval.tasks import TASKS, get_task


REPO = Path(__file__).resolve().parents[1]


def score(task, data, preds, out, **kw):
    pred_file = fx.write_predictions(Path(out) / "preds_in.jsonl", preds)
    return run_task(task, str(data), out, predictions=str(pred_file), progress=False, **kw)


def results(out, task):
    return json.loads((Path(out) / f"{task}_results.json").read_text())


# ------------------------------------------------------------------------------------------------ TextVQA


def test_textvqa_prompts(tmp_path):
    d = fx.make_textvqa(tmp_path)
    plain = TASKS["textvqa"].module.load_samples(str(d), "plain", {})
    assert [s.question_id for s in plain] == [34602, 34603, 34604]
    assert plain[0].prompt == "what is the brand of this camera?"
    orig = TASKS["textvqa"].module.load_samples(str(d), "original", {})
    assert orig[0].prompt == (
        "what is the brand of this camera?\nReference OCR token: dakota, digital\n"
        "Answer the question using a single word or phrase."
    )
    assert orig[1].prompt == "how many people are there?\nAnswer the question using a single word or phrase."
    assert orig[0].load_image().endswith("train_images/003a8ae2ef43b901.jpg")


def test_textvqa_prompts_from_rosetta_ocr(tmp_path):
    d = fx.make_textvqa(tmp_path, with_llava_file=False)
    (d / "TextVQA_Rosetta_OCR_v0.2_val.json").write_text(
        json.dumps({"data": [{"image_id": "003a8ae2ef43b901", "ocr_tokens": ["DAKOTA"], "ocr_info": []}]})
    )
    orig = TASKS["textvqa"].module.load_samples(str(d / "TextVQA_0.5.1_val.json"), "original", {})
    assert "Reference OCR token: DAKOTA\n" in orig[0].prompt
    assert "Reference OCR token" not in orig[1].prompt


def test_textvqa_score(tmp_path):
    d = fx.make_textvqa(tmp_path)
    r = score("textvqa", d, {34602: "Dakota", 34603: "Two", 34604: "Walk."}, tmp_path / "out")
    assert r.headline["accuracy"] == pytest.approx(100 * (1 + 1 + 0.6) / 3)
    sub = json.loads((tmp_path / "out" / "textvqa_submission.json").read_text())
    assert sub[0] == {"question_id": 34602, "answer": "Dakota"}
    md = (tmp_path / "out" / "textvqa_results.md").read_text()
    assert "| accuracy | 86.67 |" in md


def test_textvqa_missing_prediction_counts_as_wrong(tmp_path):
    d = fx.make_textvqa(tmp_path)
    r = score("textvqa", d, {34602: "dakota"}, tmp_path / "out")
    assert r.headline["accuracy"] == pytest.approx(100 / 3)
    assert any("2 of 3" in n for n in r.notes)


# ------------------------------------------------------------------------------------------------ MME


def test_mme_official_layout_and_scores(tmp_path):
    d = fx.make_mme(tmp_path)
    samples = TASKS["mme"].module.load_samples(str(tmp_path), "plain", {})  # the parent folder works too
    ids = [s.question_id for s in samples]
    assert "artwork/10002.jpg#0" in ids and "count/000000006040.jpg#1" in ids and "code_reasoning/0020.png#1" in ids
    preds = {
        "count/000000006040.jpg#0": "Yes",
        "count/000000006040.jpg#1": "No",  # 200
        "artwork/10002.jpg#0": "Yes, it is.",
        "artwork/10002.jpg#1": "No",  # image 1 both right
        "artwork/10049.jpg#0": "yes",
        "artwork/10049.jpg#1": "Yes",  # image 2 one wrong -> 125
        "code_reasoning/0020.png#0": "No",
        "code_reasoning/0020.png#1": "no idea",  # acc .5, acc+ 0 -> 50
    }
    r = score("mme", d, preds, tmp_path / "out")
    subs = r.details["subtasks"]
    assert subs["count"]["score"] == pytest.approx(200)
    assert subs["artwork"]["acc"] == pytest.approx(0.75) and subs["artwork"]["acc_plus"] == pytest.approx(0.5)
    assert subs["code_reasoning"]["score"] == pytest.approx(50)
    assert r.headline == {
        "perception": pytest.approx(325),
        "cognition": pytest.approx(50),
        "total": pytest.approx(375),
    }
    assert any("perception: 2 of 10 subtasks" in n for n in r.notes)
    # the official eval tool's input format
    lines = (tmp_path / "out" / "mme_results" / "artwork.txt").read_text().splitlines()
    assert lines[0].split("\t") == [
        "10002.jpg",
        "Is this artwork created by painter 10002? Please answer yes or no.",
        "Yes",
        "Yes, it is.",
    ]


def test_mme_limit_counts_images(tmp_path):
    d = fx.make_mme(tmp_path)
    r = score("mme", d, {}, tmp_path / "out", limit=2)
    assert sum(v["questions"] for v in r.details["subtasks"].values()) == 4


def test_mme_original_prompt(tmp_path):
    d = fx.make_mme(tmp_path)
    s = TASKS["mme"].module.load_samples(str(d), "original", {})[0]
    assert s.prompt.endswith("Please answer yes or no.\nAnswer the question using a single word or phrase.")


# ------------------------------------------------------------------------------------------------ MMBench

CIRCULAR_PREDS = {
    0: "A",
    1000000: "D",
    2000000: "C",
    3000000: "The answer is B",  # all four rotations right
    1: "B",
    1000001: "B",  # second rotation wrong -> question wrong
    2: "2",
    1000002: "B.",
    2000002: "(A)",  # "2" matched by option text
}


def test_mmbench_prompt_with_hint_and_missing_options(tmp_path):
    tsv = fx.make_mmbench(tmp_path)
    samples = TASKS["mmbench_en"].module.load_samples(str(tsv), "original", {"lang": "en"})
    s1 = next(s for s in samples if s.question_id == 1)
    assert s1.prompt == (
        "The image is a flat colour.\nWhich option describes the image?\nA. a photo of a cat\n"
        "B. a plain coloured rectangle\nAnswer with the option's letter from the given choices "
        "directly."
    )
    plain = TASKS["mmbench_en"].module.load_samples(str(tsv), "plain", {"lang": "en"})
    assert plain[0].prompt == "What color is the square?\nA. red\nB. green\nC. blue\nD. yellow"
    # rotations generated from the non-circular TSV: 4 + 2 + 3 rows
    assert len(samples) == 9
    rot = next(s for s in samples if s.question_id == 1000000)
    assert rot.meta["choices"] == {"A": "green", "B": "blue", "C": "yellow", "D": "red"}
    assert rot.meta["answer"] == "D"


def test_mmbench_cn_prompt(tmp_path):
    tsv = fx.make_mmbench(tmp_path, "cn")
    s = TASKS["mmbench_cn"].module.load_samples(str(tsv), "original", {"lang": "cn"})[0]
    assert s.prompt.startswith("正方形是什么颜色？\nA. red") and s.prompt.endswith("\n请直接回答选项字母。")


@pytest.mark.parametrize("circular_tsv", [False, True])
def test_mmbench_circular_one_rotation_wrong_is_wrong(tmp_path, circular_tsv):
    tsv = fx.make_mmbench(tmp_path, circular=circular_tsv)
    r = score("mmbench_en", tsv, CIRCULAR_PREDS, tmp_path / "out")
    assert r.headline["circular_accuracy"] == pytest.approx(200 / 3)
    assert r.headline["single_pass_accuracy"] == pytest.approx(100)
    assert r.headline["questions"] == 3
    assert r.details["category"]["image_topic"] == 0.0
    assert r.details["l2_category"]["attribute_reasoning"] == 100.0
    per_row = r.details["per_row"]
    assert per_row["1000001"] == {"extracted": "B", "by": "rule", "answer": "A", "correct": False}
    assert per_row["2"]["extracted"] == "C"


def test_mmbench_circular_tsv_images_by_reference(tmp_path):
    tsv = fx.make_mmbench(tmp_path, circular=True)
    raw = pd.read_csv(tsv, sep="\t", dtype=str)
    assert raw.loc[raw["index"] == "1000000", "image"].item() == "0"  # the copy points at row 0's image
    samples = TASKS["mmbench_en"].module.load_samples(
        str(tsv), "plain", {"lang": "en", "image_cache": str(tmp_path / "img")}
    )
    copy = next(s for s in samples if s.question_id == 1000000)
    orig = next(s for s in samples if s.question_id == 0)
    assert copy.load_image() == orig.load_image()
    from PIL import Image

    with Image.open(copy.load_image()) as im:
        assert im.size == (36, 24)


def test_mmbench_single_pass_mode(tmp_path):
    tsv = fx.make_mmbench(tmp_path, circular=True)
    r = score("mmbench_en", tsv, {0: "A", 1: "A", 2: "C"}, tmp_path / "out", circular=False)
    assert "circular_accuracy" not in r.headline
    assert r.headline["single_pass_accuracy"] == pytest.approx(200 / 3)
    assert r.headline["questions"] == 3


def test_mmbench_unparsed_answers_are_wrong(tmp_path):
    tsv = fx.make_mmbench(tmp_path)
    r = score("mmbench_en", tsv, {0: "purple", 1: "B", 2: "C"}, tmp_path / "out", circular=False)
    assert r.headline["single_pass_accuracy"] == pytest.approx(200 / 3)
    assert r.headline["unparsed"] == 1


def test_mmbench_test_split_submission_xlsx(tmp_path):
    pytest.importorskip("openpyxl")
    tsv = fx.make_mmbench(tmp_path, split="test")
    r = score("mmbench_en", tsv, {0: "A", 1: "B"}, tmp_path / "out")
    assert r.headline == {"questions": 3}
    df = pd.read_excel(tmp_path / "out" / "mmbench_en_submission.xlsx", engine="openpyxl")
    assert list(df.columns) == ["index", "question", "A", "B", "C", "D", "prediction"]
    assert df["index"].tolist() == [0, 1, 2]  # no generated rotations for rows without answers
    assert df["prediction"].fillna("").tolist() == ["A", "B", ""]


def test_mmbench_submission_tsv_without_openpyxl(tmp_path, monkeypatch):
    monkeypatch.setattr(mmbench_mod, "have_openpyxl", lambda: False)
    tsv = fx.make_mmbench(tmp_path, "cn")
    r = score("mmbench_cn", tsv, CIRCULAR_PREDS, tmp_path / "out")
    df = pd.read_csv(tmp_path / "out" / "mmbench_cn_submission.tsv", sep="\t")
    assert df["index"].tolist() == [0, 1, 2]  # source rows only, not the generated rotations
    assert "answer" in df.columns
    assert any("TSV: openpyxl is not installed" in n for n in r.notes)


def test_mmbench_rejects_bad_answer(tmp_path):
    rows = fx.mmbench_rows()
    rows[0]["answer"] = "E"
    path = fx._write_tsv(tmp_path / "bad.tsv", rows, fx.MMBENCH_COLUMNS)
    with pytest.raises(EvalDataError, match="answer 'E'"):
        TASKS["mmbench_en"].module.load_samples(str(path), "plain", {})


# ------------------------------------------------------------------------------------ OCRBench / DocVQA / ChartQA


def test_ocrbench_score(tmp_path):
    d = fx.make_ocrbench(tmp_path)
    preds = {0: "centre", 1: "LUNCH time", 2: "It was sent on 3/3/98.", 3: "$x^{2}+1$", 4: "12.5"}
    r = score("ocrbench", d, preds, tmp_path / "out")
    assert r.headline["final_score"] == 4
    assert r.headline["text_recognition"] == 2
    assert r.headline["Doc-oriented VQA"] == 1
    assert r.headline["Key Information Extraction"] == 0
    assert r.headline["Handwritten Mathematical Expression Recognition"] == 1
    assert any("the full benchmark has 1000" in n for n in r.notes)


def test_docvqa_anls(tmp_path):
    d = fx.make_docvqa(tmp_path)
    r = score("docvqa", d, {49153: "0.28", 24580: "ITC Limite", 57349: "Pa"}, tmp_path / "out")
    assert r.headline["anls"] == pytest.approx(100 * (1 + 10 / 11 + 0.5) / 3)
    sub = json.loads((tmp_path / "out" / "docvqa_submission.json").read_text())
    assert sub[0] == {"questionId": 49153, "answer": "0.28"}
    img = TASKS["docvqa"].module.load_samples(str(d), "plain", {})[0].load_image()
    assert img.endswith("documents/pybv0228_81.png")


def test_docvqa_test_split_submission_only(tmp_path):
    d = fx.make_docvqa(tmp_path, split="test")
    r = score("docvqa", d, {49153: "x"}, tmp_path / "out", split="test")
    assert r.headline["anls"] is None
    assert len(json.loads((tmp_path / "out" / "docvqa_submission.json").read_text())) == 3


def test_chartqa_relaxed_accuracy(tmp_path):
    d = fx.make_chartqa(tmp_path)
    preds = {"human/0": "14", "human/1": "norway", "augmented/0": "21.5", "augmented/1": "50%"}
    r = score("chartqa", d, preds, tmp_path / "out")
    assert r.headline["human"] == 100.0
    assert r.headline["augmented"] == 50.0
    assert r.headline["relaxed_accuracy"] == 75.0
    # a single subset file works as --data too
    r2 = score("chartqa", d / "test" / "test_human.json", preds, tmp_path / "out2")
    assert r2.headline["relaxed_accuracy"] == 100.0


# ------------------------------------------------------------------------------------------------ plumbing


def test_predictions_file_formats(tmp_path):
    p = tmp_path / "p.jsonl"
    p.write_text('{"question_id": 1, "prediction": "a"}\n{"question_id": "2", "text": "b"}\n{"question_id": 3, "pre')
    assert load_predictions(p) == {"1": "a", "2": "b"}  # LLaVA "text" key accepted, truncated last line ignored


def test_task_aliases():
    assert get_task("mmbench").name == "mmbench_en"
    assert get_task("MM-Vet").name == "mmvet"
    with pytest.raises(KeyError):
        get_task("vqav2")


def test_cli_score_only_subprocess(tmp_path):
    d = fx.make_ocrbench(tmp_path)
    pred = fx.write_predictions(tmp_path / "p.jsonl", {0: "centre", 1: "x"})
    out = tmp_path / "out"
    cmd = [
        sys.executable,
        "-m",
        "eval.run",
        "--task",
        "ocrbench",
        "--data",
        str(d),
        "--predictions",
        str(pred),
        "--output",
        str(out),
    ]
    res = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "| final_score | 1 |" in res.stdout
    assert results(out, "ocrbench")["metrics"]["final_score"] == 1
    bad = subprocess.run(
        cmd[:5] + [str(tmp_path / "nope"), "--predictions", str(pred), "--output", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bad.returncode == 2 and "error:" in bad.stderr


def test_cli_without_model_uses_the_built_in_reader_and_says_when_it_is_missing(tmp_path, capsys, monkeypatch):
    """No --model and no predictions: the built-in reader (tests/test_shipped_reader.py runs it); a checkout without
    it gets one line naming --model and the missing folder."""
    import eval.run as run

    monkeypatch.setattr(run, "DEFAULT_MODEL", str(tmp_path / "no-such-reader"))
    d = fx.make_chartqa(tmp_path)
    assert main(["--task", "chartqa", "--data", str(d), "--output", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "--model" in err and "no-such-reader" in err


def test_suite_score_only(tmp_path, capsys):
    paths = {"ocrbench": fx.make_ocrbench(tmp_path), "chartqa": fx.make_chartqa(tmp_path)}
    p1 = fx.write_predictions(tmp_path / "ocr.jsonl", {0: "centre"})
    p2 = fx.write_predictions(tmp_path / "chart.jsonl", {"human/0": "14"})
    cfg = tmp_path / "suite.yaml"
    cfg.write_text(
        f"output: {tmp_path / 'suite_out'}\n"
        "tasks:\n"
        f"  ocrbench: {{data: '{paths['ocrbench']}', predictions: '{p1}'}}\n"
        f"  chartqa: {{data: '{paths['chartqa']}', predictions: '{p2}'}}\n"
        f"  docvqa: {{data: '{tmp_path / 'missing'}', predictions: '{p2}'}}\n"
        f"  mme: {{data: x, enabled: false}}\n"
    )
    rc = main(["--task", "all", "--config", str(cfg), "--no-progress"])
    out = capsys.readouterr().out
    assert rc == 1  # docvqa failed, the others still reported
    assert "| ocrbench | final_score | 1 |" in out
    assert "| chartqa | relaxed_accuracy | 25.00 |" in out
    assert "| docvqa | error |" in out
    assert "mme" not in out
    summary = json.loads((tmp_path / "suite_out" / "suite_results.json").read_text())
    assert summary["ocrbench"]["final_score"] == 1


def test_shipped_suite_config_parses():
    import yaml

    cfg = yaml.safe_load((REPO / "eval" / "suite.yaml").read_text())
    assert set(cfg["tasks"]) == set(TASKS)
