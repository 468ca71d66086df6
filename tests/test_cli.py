"""cli.py: one streamed answer with --query (subprocess), and the interactive commands (in-process)."""

import io
import subprocess
import sys

import pytest

import cli  # noqa: E402
from ocr_mllm.inference import ChatSession, generate_batch, load_model_and_processor
from ocr_mllm.inference._testing import REPO_ROOT, single_thread, subprocess_env


IMAGE = str(REPO_ROOT / "examples" / "images" / "receipt_en.png")
OPTS = {"max_new_tokens": 10, "no_repeat_ngram_size": 20}


@pytest.fixture(scope="module", autouse=True)
def _single_thread():
    with single_thread():
        yield


@pytest.fixture(scope="module")
def model_and_processor(tiny_model_dir):
    return load_model_and_processor(tiny_model_dir)


def _expected(model, processor, question, image=IMAGE):
    content = ([{"type": "image"}] if image else []) + [{"type": "text", "text": question}]
    return generate_batch(
        model, processor, [[{"role": "user", "content": content}]], [[image] if image else []], **OPTS
    )[0]


def test_query_streams_one_answer(tiny_model_dir, model_and_processor):
    question = "What text is in the image?"
    proc = subprocess.Popen(
        [
            sys.executable,
            "cli.py",
            "--model",
            str(tiny_model_dir),
            "--image",
            IMAGE,
            "--query",
            question,
            "--max-new-tokens",
            "10",
            "--device",
            "cpu",
            "--dtype",
            "fp32",
        ],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=subprocess_env(),
    )
    # read stdout as it comes: the answer arrives in pieces, not as one block at exit
    reads = []
    while True:
        piece = proc.stdout.read1(4096)
        if not piece:
            break
        reads.append(piece)
    rc = proc.wait(timeout=120)
    err = proc.stderr.read().decode()
    assert rc == 0, err
    out = b"".join(reads).decode()
    assert out.strip() == _expected(*model_and_processor, question)


def test_stream_answer_writes_chunks(model_and_processor):
    model, processor = model_and_processor
    chat = ChatSession(model, processor, image=IMAGE)

    class Recorder(io.StringIO):
        writes = 0

        def write(self, s):
            Recorder.writes += 1
            return super().write(s)

    out = Recorder()
    reply = cli.stream_answer(chat, "What text is in the image?", out=out, **OPTS)
    assert Recorder.writes >= 2  # streamed chunk by chunk (+ the final newline)
    assert out.getvalue().strip() == reply == _expected(model, processor, "What text is in the image?")


def test_interactive_commands(model_and_processor, monkeypatch, capsys):
    model, processor = model_and_processor
    chat = ChatSession(model, processor)  # text-only until /image
    lines = iter(
        [
            "hello",
            "/image " + IMAGE,
            "What text is in the image?",
            "and then?",
            "/history",
            "/reset",
            "/image /no/such/file.png",
            "/bogus",
            "/exit",
            "never read",
        ]
    )
    monkeypatch.setattr("builtins.input", lambda prompt="": next(lines))
    cli.interactive(chat, OPTS)
    out = capsys.readouterr().out
    assert "text-only" in out
    assert "new image" in out and "history cleared" in out
    assert "error: " in out and "unknown command /bogus" in out
    assert chat.history == [] and chat.image is not None
    assert _expected(model, processor, "What text is in the image?") in out
    assert next(lines) == "never read"


def test_bad_quantization_flag_exits_cleanly(tiny_model_dir):
    import torch

    if torch.cuda.is_available():
        pytest.skip("machine has a GPU")
    rc = cli.main(["--model", str(tiny_model_dir), "--load-in", "4bit", "--query", "hi"])
    assert rc == 2
