"""MM-Vet: grader prompt layout, the grader protocol against a fake OpenAI-compatible server on 127.0.0.1, the cache,
and the no-endpoint path."""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import fixtures_eval as fx
import pytest

from eval.mmvet import GRADER_PREAMBLE, RETRY_SUFFIX, build_grader_prompt, parse_grade
from eval.run import run_task


GRADER_ENV = ("OPENAI_API_KEY", "OPENAI_BASE_URL", "MMVET_GRADER_MODEL")


class FakeGrader(BaseHTTPRequestHandler):
    """Scores by looking at the prediction in the prompt's last line; answers garbage once for "garbage"."""

    requests: list = []

    def do_POST(self):  # noqa: N802 (http.server API)
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        FakeGrader.requests.append({"path": self.path, "auth": self.headers.get("Authorization"), "body": body})
        prompt = body["messages"][0]["content"]
        last = prompt.removesuffix(RETRY_SUFFIX).splitlines()[-1]
        if prompt.endswith(RETRY_SUFFIX):
            content = "0.7"
        elif "garbage" in last:
            content = "great answer"
        elif "x = -1 or x = -5" in last:
            content = "1.0"
        elif "red" in last:
            content = "0.9 because"
        else:
            content = "0.0"
        data = json.dumps(
            {"model": body["model"], "choices": [{"message": {"role": "assistant", "content": content}}]}
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture
def fake_server():
    FakeGrader.requests = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeGrader)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


def test_grader_prompt_layout():
    p = build_grader_prompt("What is x?", "-1<AND>-5", "x = 3")
    assert p.startswith("Compare the ground truth and prediction from AI models, to give a correctness score")
    assert (
        "Just complete the last space of the correctness score.\n\nQuestion | Ground truth | Prediction | "
        "Correctness\n--- | --- | --- | ---\nWhat is x in the equation? | -1 <AND> -5 | x = 3 | 0.0\n" in p
    )
    assert p.count("Can you explain this meme?") == 2
    # the few-shot table, one blank line, then the sample row left open for the grader
    assert p == GRADER_PREAMBLE + "\nWhat is x? | -1 <AND> -5 | x = 3 | "
    assert GRADER_PREAMBLE.endswith("| 1.0\n")


@pytest.mark.parametrize(
    "content, value", [("0.4", 0.4), ("1.0 because", 1.0), ("1.5", None), ("great", None), ("-0.1", None), ("0", 0.0)]
)
def test_parse_grade(content, value):
    assert parse_grade(content) == value


def test_mmvet_grader_protocol_and_cache(tmp_path, fake_server, monkeypatch):
    monkeypatch.setenv("OPENAI_BASE_URL", fake_server)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    monkeypatch.setenv("MMVET_GRADER_MODEL", "fake-grader")
    d = fx.make_mmvet(tmp_path)
    preds = {"v1_0": "x = -1 or x = -5", "v1_1": "It is red.", "v1_2": "garbage"}
    pred_file = fx.write_predictions(tmp_path / "p.jsonl", preds)
    out = tmp_path / "out"
    r = run_task("mmvet", str(d), out, predictions=str(pred_file), progress=False)

    reqs = FakeGrader.requests
    assert len(reqs) == 4  # 3 questions + 1 retry for the unparseable answer
    assert all(q["path"] == "/v1/chat/completions" and q["auth"] == "Bearer sk-test" for q in reqs)
    assert all(q["body"]["model"] == "fake-grader" and q["body"]["max_tokens"] == 3 for q in reqs)
    assert [q["body"]["temperature"] for q in reqs] == [0.0, 0.0, 0.0, 0.0]
    assert reqs[0]["body"]["messages"][0]["content"] == build_grader_prompt(
        "What is x in the equation?", "-1 <AND> -5", "x = -1 or x = -5"
    )
    assert reqs[3]["body"]["messages"][0]["content"].endswith("| garbage | " + RETRY_SUFFIX)

    # v1_0 (ocr, math) 1.0; v1_1 (rec) 0.9; v1_2 (ocr, rec) 0.7 after the retry
    assert r.headline["total"] == pytest.approx(100 * (1.0 + 0.9 + 0.7) / 3)
    assert r.headline["ocr"] == pytest.approx(100 * (1.0 + 0.7) / 2)
    assert r.headline["rec"] == pytest.approx(100 * (0.9 + 0.7) / 2)
    assert r.headline["math"] == pytest.approx(100.0)
    assert list(r.headline)[:3] == ["rec", "ocr", "math"]  # official capability order
    assert r.details["capability_integrations"]["math_ocr"] == pytest.approx(100.0)
    grades = json.loads((out / "mmvet_grades.json").read_text())
    assert grades["v1_2"]["retries"] == 1

    # a second scoring run is served from the cache: no new calls
    r2 = run_task("mmvet", str(d), out, predictions=str(pred_file), progress=False)
    assert len(FakeGrader.requests) == 4
    assert r2.headline["total"] == pytest.approx(r.headline["total"])
    assert json.loads((out / "mmvet_submission.json").read_text()) == preds


def test_mmvet_gives_up_after_five_retries(tmp_path, fake_server, monkeypatch):
    from eval.mmvet import OpenAICompatibleGrader

    class Stubborn(OpenAICompatibleGrader):
        def _chat(self, prompt, temperature):
            self.temps.append(temperature)
            return "hmm"

    g = Stubborn(fake_server, None, "m")
    g.temps = []
    res = g.grade("q", "a", "p")
    assert res["score"] == 0.0 and res["retries"] == 5
    assert g.temps == [0.0, 0.0, 0.5, 1.0, 1.5, 2.0]


def test_mmvet_http_error_is_reported(tmp_path, monkeypatch):
    # nothing listens on this port (bound and closed at once): connection refused, bounded retries, clear error
    import socket

    from eval.mmvet import GraderError, OpenAICompatibleGrader

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    g = OpenAICompatibleGrader(f"http://127.0.0.1:{port}/v1", None, "m", http_retries=2, retry_sleep=0.0, timeout=2)
    with pytest.raises(GraderError, match="failed"):
        g.grade("q", "a", "p")


def test_mmvet_without_endpoint_writes_submission(tmp_path, monkeypatch, capsys):
    for k in GRADER_ENV:
        monkeypatch.delenv(k, raising=False)
    d = fx.make_mmvet(tmp_path)
    pred_file = fx.write_predictions(tmp_path / "p.jsonl", {"v1_0": "x = 3", "v1_1": "blue"})
    out = tmp_path / "out"
    r = run_task("mmvet", str(d), out, predictions=str(pred_file), progress=False)
    assert r.headline["total"] is None
    assert "no grader endpoint configured" in capsys.readouterr().out
    sub = json.loads((out / "mmvet_submission.json").read_text())
    assert sub == {"v1_0": "x = 3", "v1_1": "blue", "v1_2": ""}
    assert not (Path(out) / "mmvet_grader_cache.json").exists()
