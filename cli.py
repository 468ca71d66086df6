#!/usr/bin/env python
"""Chat with an OCR MLLM in the terminal (streamed answers).

One question, then exit:
    python cli.py --model DIR --image page.png --query "What text is in the image?"
Interactive multi-turn chat (text-only until an image is given):
    python cli.py --model DIR [--image page.png]
    commands: /image PATH (new image, resets the chat), /reset (clear the history), /history, /help, /exit
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import TextIO

from ocr_mllm.inference import ChatSession, InferenceSetupError
from ocr_mllm.inference.options import (
    add_generation_args,
    add_model_args,
    generation_kwargs_from_args,
    load_from_args,
    setup_logging,
)


HELP = "/image PATH  use a new image (resets the chat)\n/reset       clear the history\n/history     show the history\n/exit        quit"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_args(parser)
    parser.add_argument("--image", default=None, help="image file to talk about (optional)")
    parser.add_argument("--query", default=None, help="ask this one question, stream the answer and exit")
    parser.add_argument("--system", default=None, help="system prompt (default: the chat template's)")
    add_generation_args(parser)
    parser.add_argument("--verbose", action="store_true")
    return parser.parse_args(argv)


def stream_answer(chat: ChatSession, query: str, out: TextIO = sys.stdout, **generation_kwargs) -> str:
    parts = []
    for chunk in chat.stream(query, **generation_kwargs):
        parts.append(chunk)
        out.write(chunk)
        out.flush()
    out.write("\n")
    out.flush()
    return chat.history[-1][1] if chat.history else "".join(parts).strip()


def interactive(chat: ChatSession, gen: dict) -> None:
    where = "with image" if chat.image is not None else "text-only (use /image PATH to add an image)"
    print(f"Chat {where}. Type /help for commands, /exit to quit.", flush=True)
    while True:
        try:
            line = input("\nUSER: ")
        except (EOFError, KeyboardInterrupt):
            print()
            return
        line = line.strip()
        if not line:
            continue
        if line.startswith("/"):
            cmd, _, arg = line.partition(" ")
            cmd = cmd.lower()
            if cmd in ("/exit", "/quit", "/q"):
                return
            if cmd == "/reset":
                chat.reset()
                print("(history cleared)")
            elif cmd == "/image":
                path = arg.strip().strip('"').strip("'")
                if not path:
                    print("usage: /image PATH")
                    continue
                try:
                    chat.set_image(path)
                    print(f"(new image {path}; history cleared)")
                except ValueError as exc:
                    print(f"error: {exc}")
            elif cmd == "/history":
                for user, reply in chat.history:
                    print(f"USER: {user}\nASSISTANT: {reply}")
            elif cmd == "/help":
                print(HELP)
            else:
                print(f"unknown command {cmd}\n{HELP}")
            continue
        print("ASSISTANT: ", end="", flush=True)
        try:
            stream_answer(chat, line, **gen)
        except KeyboardInterrupt:
            print("\n(interrupted)")
        except ValueError as exc:
            print(f"\nerror: {exc}")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logging(args.verbose)
    try:
        model, processor = load_from_args(args)
    except InferenceSetupError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    gen = generation_kwargs_from_args(args)
    try:
        chat = ChatSession(model, processor, image=args.image, system_prompt=args.system)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.query is not None:
        try:
            stream_answer(chat, args.query, **gen)
        except ValueError as exc:  # e.g. a prompt longer than the model's context: a message, not a traceback
            print(f"error: {exc}", file=sys.stderr)
            return 2
        return 0
    interactive(chat, gen)
    return 0


if __name__ == "__main__":
    sys.exit(main())
