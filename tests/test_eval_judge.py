"""MMBench LLM-judge fallback (VLMEvalKit's extract_answer_from_item) against a fake OpenAI-compatible endpoint on
127.0.0.1: off by default, on with --judge-url; the report counts rule-unparsed answers and the judge's decisions."""

import json
import random
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import fixtures_eval as fx
import pytest

from eval.mmbench import judge_prompt
from eval.run import main, run_task


class FakeJudge(BaseHTTPRequestHandler):
    """Answers from the "Answer: ..." line of the matching prompt: blood -> "A", "cannot tell" -> "Z", else
    something with no option letter (so the caller retries, then picks at random)."""

    prompts: list = []

    def do_POST(self):  # noqa: N802 (http.server API)
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        prompt = body["messages"][0]["content"]
        FakeJudge.prompts.append(prompt)
        answer = prompt.rsplit("Answer: ", 1)[-1]
        content = "A" if "blood" in answer else "Z" if "cannot tell" in answer else "hmm, hard to say"
        data = json.dumps({"choices": [{"message": {"role": "assistant", "content": content}}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture
def judge_url(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    FakeJudge.prompts = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeJudge)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


# none of these is readable by the rules (no option letter, no option text, or too long for a text match)
UNPARSED = {0: "It looks like the colour of blood to me", 1: "I cannot tell", 2: "several things"}


def _run(tmp_path, name, **kw):
    tsv = fx.make_mmbench(tmp_path)
    preds = fx.write_predictions(tmp_path / f"{name}.jsonl", kw.pop("preds", UNPARSED))
    return run_task("mmbench_en", str(tsv), tmp_path / name, predictions=str(preds), **kw)


def test_no_judge_by_default(tmp_path, judge_url):
    r = _run(tmp_path, "off", circular=False)
    assert r.headline["unparsed"] == 3 and r.headline["single_pass_accuracy"] == 0
    assert "judge_asked" not in r.headline and r.details["judge"] is None
    assert FakeJudge.prompts == []


def test_judge_decides_unparsed_answers(tmp_path, judge_url):
    r = _run(tmp_path, "on", circular=False, judge_url=judge_url, judge_model="fake-judge")
    pick = random.Random(2).choice(["A", "B", "C", "Z"])  # row 2 (answer C): three unreadable replies, then random
    per_row = r.details["per_row"]
    assert per_row["0"] == {"extracted": "A", "by": "option", "answer": "A", "correct": True}
    assert per_row["1"] == {"extracted": "Z", "by": "Z", "answer": "B", "correct": False}
    assert per_row["2"] == {"extracted": pick, "by": "random", "answer": "C", "correct": pick == "C"}
    assert r.headline["unparsed"] == 3 and r.headline["judge_asked"] == 3
    assert r.details["judge"] == {"model": "fake-judge", "asked": 3, "decisions": {"option": 1, "Z": 1, "random": 1}}
    assert r.headline["single_pass_accuracy"] == pytest.approx(100 * (1 + (pick == "C")) / 3)
    assert len(FakeJudge.prompts) == 1 + 1 + 3
    assert any("1 matched to an option, 1 to none (Z, wrong), 1 random" in n for n in r.notes)
    # VLMEvalKit's prompt, with the row's options and the raw answer
    assert FakeJudge.prompts[0] == judge_prompt(
        "What color is the square?", {"A": "red", "B": "green", "C": "blue", "D": "yellow"}, UNPARSED[0]
    )
    assert FakeJudge.prompts[0].endswith(
        "Question: What color is the square??\nOptions: There are several options: "
        "\nA. red\nB. green\nC. blue\nD. yellow\n\nAnswer: It looks like the colour "
        "of blood to me\nYour output: "
    )
    # scoring again costs no calls (cache in the output folder), same numbers
    again = _run(tmp_path, "on", circular=False, judge_url=judge_url, judge_model="fake-judge")
    assert len(FakeJudge.prompts) == 5 and again.headline == r.headline


def test_circular_question_already_wrong_is_not_sent_to_the_judge(tmp_path, judge_url):
    # row 0 rotations (answers A, D, C, B): rotation 1 read wrong by the rules, rotation 2 unparsed
    preds = {0: "A", 1000000: "B", 2000000: UNPARSED[0], 3000000: "B"}
    r = _run(tmp_path, "circ", preds=preds, judge_url=judge_url)
    assert r.headline["unparsed"] == 1 and r.headline["judge_asked"] == 0 and FakeJudge.prompts == []
    preds[1000000] = "D"  # now every other rotation is right: the judge reads rotation 2 (says A; answer C)
    r = _run(tmp_path, "circ2", preds=preds, judge_url=judge_url)
    assert r.headline["judge_asked"] == 1 and r.details["per_row"]["2000000"]["extracted"] == "A"


def test_chinese_questions_get_the_chinese_prompt():
    p = judge_prompt("正方形是什么颜色？", {"A": "红", "B": "绿"}, "红色")
    assert p.startswith("你是一个帮助我匹配答案与单选题中多个选项的 AI 助手。")
    assert p.endswith(
        "问题: 正方形是什么颜色？?\n选项: There are several options: \nA. 红\nB. 绿\n\n答案: 红色\n输出: "
    )


def test_cli_flags(tmp_path, judge_url, capsys):
    tsv = fx.make_mmbench(tmp_path)
    preds = fx.write_predictions(tmp_path / "p.jsonl", UNPARSED)
    assert (
        main(
            [
                "--task",
                "mmbench",
                "--data",
                str(tsv),
                "--predictions",
                str(preds),
                "--output",
                str(tmp_path / "o"),
                "--no-circular",
                "--judge-url",
                judge_url,
                "--judge-model",
                "m",
            ]
        )
        == 0
    )
    res = json.loads((tmp_path / "o" / "mmbench_en_results.json").read_text())
    assert res["details"]["judge"]["asked"] == 3 and res["details"]["judge"]["model"] == "m"


def test_help_shows_judge_and_data_parallel_commands(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert "--judge-url" in out and "--judge-model" in out
    assert "torchrun --nproc_per_node" in out and "accelerate launch --num_processes" in out
    assert "eval_tool" in out
