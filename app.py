#!/usr/bin/env python
"""Gradio demo: upload an image, chat about it, answers stream in.

    python app.py --model DIR                      # http://127.0.0.1:7860
    python app.py --model DIR --host 0.0.0.0 --port 8080 --concurrency 2

Binds 127.0.0.1 unless --host says otherwise; --share opens a public gradio.live link (off by default).
Besides the UI there is a stateless API endpoint "/ask" (image, question, generation options → answer), e.g.
    from gradio_client import Client, handle_file
    Client("http://127.0.0.1:7860/").predict(handle_file("page.png"), "What text is in the image?", api_name="/ask")
"""

from __future__ import annotations

import argparse
import glob
import logging
import os
import sys
import threading
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any


os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

from ocr_mllm.inference import ChatSession, InferenceSetupError  # noqa: E402
from ocr_mllm.inference.options import (  # noqa: E402
    DEFAULT_GENERATION,
    add_generation_args,
    add_model_args,
    generation_kwargs_from_args,
    load_from_args,
    setup_logging,
)


if TYPE_CHECKING:
    from types import ModuleType

    import gradio
    from transformers import PreTrainedModel, ProcessorMixin

logger = logging.getLogger("ocr_mllm.app")

HERE = os.path.dirname(os.path.abspath(__file__))
EXAMPLES_DIR = os.path.join(HERE, "examples", "images")
EXAMPLE_QUESTIONS = {
    "receipt_en": "What text is in the image?",
    "zh_simplified": "图中有哪些文字？",
    "zh_traditional": "圖中有哪些文字？",
}
DEFAULT_QUESTION = "What text is in the image?"
MAX_QUESTION_CHARS = 4000
DEFAULT_MAX_UPLOAD_MB = 20


def find_examples(examples_dir: str | None = EXAMPLES_DIR) -> list[list[str]]:
    """[[image_path, question], ...] for the PNG/JPG files in ``examples_dir``."""
    if not examples_dir or not os.path.isdir(examples_dir):
        return []
    out = []
    for path in sorted(glob.glob(os.path.join(examples_dir, "*"))):
        stem, ext = os.path.splitext(os.path.basename(path))
        if ext.lower() in (".png", ".jpg", ".jpeg", ".webp"):
            out.append([path, EXAMPLE_QUESTIONS.get(stem, DEFAULT_QUESTION)])
    return out


def _chat_messages(
    history: Sequence[Sequence[str]], pending_user: str | None = None, pending_reply: str | None = None
) -> list[dict]:
    msgs = []
    for user, reply in history:
        msgs.append({"role": "user", "content": user})
        msgs.append({"role": "assistant", "content": reply})
    if pending_user is not None:
        msgs.append({"role": "user", "content": pending_user})
        msgs.append({"role": "assistant", "content": pending_reply or "▌"})
    return msgs


def upload_image(gr: ModuleType, **kwargs: Any) -> gradio.Image:
    """A ``gr.Image`` whose event gets the uploaded file's path without the file being opened. ``gr.Image`` runs
    ``PIL.Image.open`` on every upload, even with ``type="filepath"``, and an undecodable file then fails with
    Gradio's generic "upstream app has raised an exception". ``ocr_mllm``'s ``load_image`` decodes it instead: pixel
    cap, EXIF rotation, and a message that names the file and says why it cannot be read. (The instance's
    ``preprocess`` is replaced rather than subclassing: Gradio writes a ``.pyi`` stub for every component subclass.)"""
    image = gr.Image(type="filepath", **kwargs)
    gradio_preprocess = image.preprocess

    def preprocess(payload: Any) -> Any:
        path = getattr(payload, "path", None)
        if path and not getattr(payload, "is_stream", False):
            return str(path)
        return gradio_preprocess(payload)

    image.preprocess = preprocess
    return image


def build_demo(
    model: PreTrainedModel,
    processor: ProcessorMixin,
    examples_dir: str | None = EXAMPLES_DIR,
    defaults: dict | None = None,
    concurrency_limit: int = 1,
    max_queue_size: int = 64,
    title: str = "OCR MLLM",
) -> gradio.Blocks:
    """Build (and queue) the Gradio Blocks. Call ``.launch(...)`` on the result."""
    import gradio as gr

    gen_defaults = dict(DEFAULT_GENERATION)
    gen_defaults.update(defaults or {})

    def options(
        temperature: float,
        top_p: float,
        top_k: int,
        repetition_penalty: float,
        no_repeat_ngram_size: int,
        max_new_tokens: int,
    ) -> dict:
        return {
            "temperature": float(temperature),
            "top_p": float(top_p),
            "top_k": int(top_k),
            "repetition_penalty": float(repetition_penalty),
            "no_repeat_ngram_size": int(no_repeat_ngram_size),
            "max_new_tokens": int(max_new_tokens),
        }

    def _session(image: str | None, history: list | None) -> ChatSession:
        chat = ChatSession(model, processor, image=image)
        chat.history = [tuple(turn) for turn in (history or [])]
        return chat

    def respond(
        image: str | None, message: str | None, history: list | None, *opts: float
    ) -> Iterator[tuple[list[dict], list, str]]:
        message = (message or "").strip()[:MAX_QUESTION_CHARS]
        history = list(history or [])
        if not message:
            yield _chat_messages(history), history, ""
            return
        try:  # the upload is a file path; our loader decodes it and says why it cannot
            chat = _session(image, history)
        except ValueError as exc:
            raise gr.Error(str(exc))
        reply = ""
        yield _chat_messages(history, message, ""), history, ""
        stop = threading.Event()
        try:
            for chunk in chat.stream(message, stop_event=stop, **options(*opts)):
                reply += chunk
                yield _chat_messages(history, message, reply + "▌"), history, ""
        except ValueError as exc:
            raise gr.Error(str(exc))
        finally:
            stop.set()
        history = [list(turn) for turn in chat.history]
        yield _chat_messages(history), history, ""

    def ask(image: str | None, question: str | None, *opts: float) -> Iterator[str]:
        """Stateless single question (API endpoint /ask); streams the growing answer."""
        question = (question or "").strip()[:MAX_QUESTION_CHARS] or DEFAULT_QUESTION
        reply = ""
        try:
            chat = _session(image, [])
            for chunk in chat.stream(question, **options(*opts)):
                reply += chunk
                yield reply
        except ValueError as exc:
            raise gr.Error(str(exc))
        yield chat.history[-1][1] if chat.history else reply.strip()

    def new_image(_image: str | None) -> tuple[list, list]:
        return [], []

    def clear() -> tuple[list, list, str]:
        return [], [], ""

    with gr.Blocks(title=title) as demo:
        gr.Markdown(
            f"# {title}\nUpload an image (or pick an example) and ask about it. Answers stream in; "
            "a new image starts a new conversation. Without an image the model chats text-only."
        )
        history = gr.State([])
        with gr.Row():
            with gr.Column(scale=2):
                # the upload's path; ocr_mllm's load_image decodes it (see upload_image)
                image = upload_image(
                    gr, label="Image", sources=["upload", "clipboard"], height=360, elem_id="image-input"
                )
                with gr.Accordion("Generation options", open=False):
                    temperature = gr.Slider(
                        0.0, 1.5, value=gen_defaults["temperature"], step=0.05, label="Temperature (0 = greedy)"
                    )
                    top_p = gr.Slider(0.05, 1.0, value=gen_defaults["top_p"], step=0.05, label="Top p")
                    top_k = gr.Slider(0, 100, value=gen_defaults["top_k"], step=1, label="Top k (0 = off)")
                    repetition_penalty = gr.Slider(
                        1.0,
                        2.0,
                        value=gen_defaults["repetition_penalty"],
                        step=0.05,
                        label="Repetition penalty (1 = off)",
                    )
                    no_repeat = gr.Slider(
                        0,
                        64,
                        value=gen_defaults["no_repeat_ngram_size"],
                        step=1,
                        label="No-repeat n-gram size (0 = off; stops loops on dense text)",
                    )
                    max_new_tokens = gr.Slider(
                        1, 4096, value=gen_defaults["max_new_tokens"], step=1, label="Max new tokens"
                    )
            with gr.Column(scale=3):
                chatbot = gr.Chatbot(label="Chat", height=480, elem_id="chatbot")
                textbox = gr.Textbox(
                    placeholder="Ask about the image, then press Enter",
                    label="Question",
                    show_label=False,
                    elem_id="question",
                    lines=1,
                    max_lines=6,
                )
                with gr.Row():
                    send = gr.Button("Send", variant="primary", elem_id="send")
                    stop_btn = gr.Button("Stop", elem_id="stop")
                    clear_btn = gr.Button("Clear chat", elem_id="clear")
        examples = find_examples(examples_dir)
        if examples:
            gr.Examples(examples=examples, inputs=[image, textbox], label="Examples")

        # API-only endpoint (hidden components): stateless question → streamed answer
        api_question = gr.Textbox(visible=False)
        api_answer = gr.Textbox(visible=False)
        api_button = gr.Button(visible=False)

        opts = [temperature, top_p, top_k, repetition_penalty, no_repeat, max_new_tokens]
        run_kwargs = dict(concurrency_limit=concurrency_limit, concurrency_id="generate")
        submit_event = textbox.submit(
            respond, [image, textbox, history, *opts], [chatbot, history, textbox], api_name="chat", **run_kwargs
        )
        click_event = send.click(
            respond,
            [image, textbox, history, *opts],
            [chatbot, history, textbox],
            api_visibility="private",
            **run_kwargs,
        )
        stop_btn.click(None, None, None, cancels=[submit_event, click_event], api_visibility="private")
        clear_btn.click(clear, None, [chatbot, history, textbox], api_visibility="private")
        image.change(new_image, [image], [chatbot, history], api_visibility="private")
        api_button.click(ask, [image, api_question, *opts], [api_answer], api_name="ask", **run_kwargs)

    demo.queue(max_size=max_queue_size, default_concurrency_limit=concurrency_limit)
    return demo


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_args(parser)
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default %(default)s: this machine only)")
    parser.add_argument("--port", type=int, default=7860)
    parser.add_argument("--share", action="store_true", help="also open a public gradio.live link")
    parser.add_argument(
        "--concurrency", type=int, default=1, help="generations running at the same time (others wait in the queue)"
    )
    parser.add_argument("--max-queue", type=int, default=64, help="queued requests beyond this are refused")
    parser.add_argument("--examples-dir", default=EXAMPLES_DIR)
    parser.add_argument(
        "--max-upload-mb",
        type=int,
        default=DEFAULT_MAX_UPLOAD_MB,
        help="larger uploads are refused (default %(default)s MB)",
    )
    add_generation_args(parser)
    parser.add_argument("--verbose", action="store_true")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logging(args.verbose)
    try:
        model, processor = load_from_args(args)
    except InferenceSetupError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    demo = build_demo(
        model,
        processor,
        examples_dir=args.examples_dir,
        defaults=generation_kwargs_from_args(args),
        concurrency_limit=args.concurrency,
        max_queue_size=args.max_queue,
    )
    demo.launch(
        server_name=args.host,
        server_port=args.port,
        share=args.share,
        ssr_mode=False,
        max_file_size=f"{args.max_upload_mb}mb",
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
