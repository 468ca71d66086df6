"""app.py: the Gradio demo in a real headless Chromium (upload, ask, streamed answer) and 20 concurrent API calls.

Needs Debian's `chromium` (/usr/bin/chromium) and the `playwright` Python package; never `playwright install`.
"""

import os
import re
import shutil
import socket
import time

import pytest


os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import app  # noqa: E402
from ocr_mllm.inference import generate_batch, load_model_and_processor  # noqa: E402
from ocr_mllm.inference._testing import REPO_ROOT, single_thread  # noqa: E402


CHROMIUM = os.environ.get("CHROMIUM_PATH") or shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
IMAGE = str(REPO_ROOT / "examples" / "images" / "receipt_en.png")
QUESTION = "What text is in the image?"
MAX_NEW = 24
# greedy, as the app's defaults: temperature, top_p, top_k, repetition_penalty, no_repeat_ngram_size, max_new_tokens
API_OPTS = (0.0, 0.8, 0, 1.0, 20, MAX_NEW)


@pytest.fixture(scope="module", autouse=True)
def _single_thread():
    with single_thread():
        yield


@pytest.fixture(scope="module")
def model_and_processor(tiny_model_dir):
    return load_model_and_processor(tiny_model_dir)


@pytest.fixture(scope="module")
def expected(model_and_processor):
    model, processor = model_and_processor
    msgs = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": QUESTION}]}]
    text = generate_batch(model, processor, [msgs], [[IMAGE]], max_new_tokens=MAX_NEW, no_repeat_ngram_size=20)[0]
    assert text, "the tiny model answered nothing; the app tests need a non-empty answer"
    return text


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(model_and_processor):
    model, processor = model_and_processor
    demo = app.build_demo(model, processor, defaults={"max_new_tokens": MAX_NEW}, concurrency_limit=2)
    demo.launch(
        server_name="127.0.0.1", server_port=_free_port(), prevent_thread_lock=True, ssr_mode=False, quiet=True
    )
    try:
        yield demo.local_url
    finally:
        demo.close()


def _norm(text):
    return re.sub(r"[\W_]+", "", text or "")  # compare letters/digits only (markdown rendering, cursor, spaces)


def test_build_demo_defaults(model_and_processor):
    model, processor = model_and_processor
    demo = app.build_demo(model, processor)
    names = {d.api_name for d in demo.fns.values() if getattr(d, "api_name", None)}
    assert {"chat", "ask"} <= names
    assert len(app.find_examples()) == 3
    args = app.parse_args(["--model", "x"])
    assert args.host == "127.0.0.1" and args.share is False  # local only unless told


def test_browser_upload_ask_streams(server, expected):
    sync_api = pytest.importorskip("playwright.sync_api")
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"no chromium at {CHROMIUM} (apt-get install chromium)")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page()
            page.goto(server, wait_until="domcontentloaded")
            page.locator("#image-input input[type=file]").set_input_files(IMAGE)
            page.locator("#image-input img").first.wait_for(state="visible", timeout=30_000)
            time.sleep(0.5)  # let the image's change event (resets the chat) run first
            # record every text the chatbot shows, to see the answer grow
            page.evaluate(
                """() => {
                    window.__snapshots = [];
                    const box = document.querySelector('#chatbot');
                    new MutationObserver(() => window.__snapshots.push(box.innerText))
                        .observe(box, {subtree: true, childList: true, characterData: true});
                }"""
            )
            box = page.locator("#question textarea")
            box.fill(QUESTION)
            box.press("Enter")
            want = _norm(expected)
            page.wait_for_function(
                """([want]) => {
                    const t = (document.querySelector('#chatbot').innerText || '').replace(/[^\\p{L}\\p{N}]+/gu, '');
                    return t.includes(want) && !t.includes('▌');
                }""",
                arg=[want],
                timeout=60_000,
            )
            text = page.locator("#chatbot").inner_text()
            assert QUESTION in text
            assert want in _norm(text)
            snapshots = page.evaluate("window.__snapshots")
            # streaming: the chat showed a strict, non-empty prefix of the answer before the whole answer
            shown = [_norm(s.split(QUESTION, 1)[1]) for s in snapshots if QUESTION in s]
            partial = [t for t in shown if t and t != want and want.startswith(t)]
            assert partial, f"the answer should appear progressively, saw only {shown!r}"
        finally:
            browser.close()


def test_twenty_concurrent_api_requests(server, expected):
    from gradio_client import Client, handle_file

    client = Client(server, verbose=False)
    start = time.perf_counter()
    jobs = [client.submit(handle_file(IMAGE), QUESTION, *API_OPTS, api_name="/ask") for _ in range(20)]
    answers = [job.result(timeout=120) for job in jobs]
    assert len(answers) == 20
    assert all(a == expected for a in answers)
    assert time.perf_counter() - start < 120


def test_chat_endpoint_keeps_history(server, expected):
    from gradio_client import Client, handle_file

    client = Client(server, verbose=False)  # one client = one session: the history State persists between calls
    chat, box = client.predict(handle_file(IMAGE), QUESTION, *API_OPTS, api_name="/chat")
    assert box == "" and [m["role"] for m in chat] == ["user", "assistant"]
    assert _norm(expected) in _norm(str(chat[1]["content"]))
    chat2, _ = client.predict(handle_file(IMAGE), "And the total?", *API_OPTS, api_name="/chat")
    assert [m["role"] for m in chat2] == ["user", "assistant"] * 2
    assert "And the total?" in str(chat2[2]["content"])
