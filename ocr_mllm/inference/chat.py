"""Multi-turn chat about (at most) one image.

* One image per session; the image block goes into the first user turn that is still in the prompt, so trimming old
  turns to fit the context never cuts the image off (the original truncated ids and could lose the placeholder).
* A new image resets the history. ``reset()`` clears the history but keeps the image.
* The history stores the clean reply text (special tokens skipped), never ``<|im_end|>`` and friends.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING, Any, Iterable, Iterator

from .generation import (
    clean_text,
    generate_from_inputs,
    max_context_length,
    prepare_inputs,
    stream_from_inputs,
)
from .images import load_image


if TYPE_CHECKING:
    from transformers import BatchFeature, PreTrainedModel, ProcessorMixin


logger = logging.getLogger("ocr_mllm.inference")


def sanitize_user_text(text: str, processor: ProcessorMixin | None = None) -> str:
    """Keep typed text from being read as an image slot or a ChatML control token."""
    image_token = getattr(processor, "image_token", None) or "<image>"
    text = text.replace(image_token, image_token.replace("<", "< "))
    for special in ("<|im_start|>", "<|im_end|>", "<|endoftext|>"):
        text = text.replace(special, special.replace("<|", "< |"))
    return text


def build_messages(
    history: Iterable[tuple[str, str | None]], query: str, has_image: bool, system_prompt: str | None = None
) -> list[dict]:
    """Chat messages (TRL form) for ``history`` [(user, reply), ...] + ``query``; the image goes in the first user turn."""
    messages: list[dict] = []
    if system_prompt:
        messages.append({"role": "system", "content": [{"type": "text", "text": system_prompt}]})
    turns = list(history) + [(query, None)]
    for i, (user, reply) in enumerate(turns):
        content: list[dict[str, Any]] = []
        if i == 0 and has_image:
            content.append({"type": "image"})
        content.append({"type": "text", "text": user})
        messages.append({"role": "user", "content": content})
        if reply is not None:
            messages.append({"role": "assistant", "content": [{"type": "text", "text": reply}]})
    return messages


class ChatSession:
    """Chat history + one image, on top of the shared generation helpers.

    >>> chat = ChatSession(model, processor, image="page.png", max_new_tokens=256)
    >>> print(chat.ask("What text is in the image?"))
    >>> for chunk in chat.stream("Which page is 'draw rectangle' on?"):
    ...     print(chunk, end="", flush=True)
    """

    def __init__(
        self,
        model: PreTrainedModel,
        processor: ProcessorMixin,
        image: Any = None,
        system_prompt: str | None = None,
        max_context_tokens: int | None = None,
        **generation_kwargs,
    ):
        self.model = model
        self.processor = processor
        self.system_prompt = system_prompt
        self.max_context_tokens = max_context_tokens
        self.generation_kwargs = dict(generation_kwargs)
        self.history: list[tuple[str, str]] = []
        self.image = None
        if image is not None:
            self.set_image(image)

    # -- state -----------------------------------------------------------------------------------------------------
    def set_image(self, image: Any) -> None:
        """Use ``image`` (path / PIL / array) from now on; the history is cleared."""
        self.image = load_image(image) if image is not None else None
        self.history = []

    def reset(self) -> None:
        """Forget the conversation, keep the image."""
        self.history = []

    def clear(self) -> None:
        """Forget the conversation and the image."""
        self.image = None
        self.history = []

    # -- prompting -------------------------------------------------------------------------------------------------
    def _context_limit(self) -> int | None:
        return self.max_context_tokens or max_context_length(self.model)

    def _prepare(self, query: str, max_new_tokens: int) -> tuple[str, BatchFeature | dict[str, Any]]:
        """Build inputs, dropping the oldest turns until prompt + max_new_tokens fits the context."""
        query = sanitize_user_text(query, self.processor)
        limit = self._context_limit()
        history = list(self.history)
        images = [[self.image]] if self.image is not None else [[]]
        while True:
            messages = build_messages(history, query, self.image is not None, self.system_prompt)
            inputs = prepare_inputs(self.model, self.processor, [messages], images)
            length = inputs["input_ids"].shape[1]
            if limit is None or length + max_new_tokens <= limit or not history:
                if history != self.history:
                    logger.info("dropped %d old turn(s) to fit the context", len(self.history) - len(history))
                return query, inputs
            history = history[1:]

    def _options(self, overrides: dict) -> dict:
        options = dict(self.generation_kwargs)
        options.update({k: v for k, v in overrides.items() if v is not None})
        options.setdefault("max_new_tokens", 512)
        return options

    # -- generation ------------------------------------------------------------------------------------------------
    def ask(self, query: str, **generation_kwargs) -> str:
        """Answer ``query`` (blocking) and append the turn to the history."""
        options = self._options(generation_kwargs)
        query, inputs = self._prepare(query, options["max_new_tokens"])
        reply = generate_from_inputs(self.model, self.processor, inputs, **options)[0]
        self.history.append((query, reply))
        return reply

    def stream(self, query: str, stop_event: threading.Event | None = None, **generation_kwargs) -> Iterator[str]:
        """Yield the answer as text chunks; the (clean) reply is appended to the history when the stream ends,
        also when the consumer stops early (the partial reply is kept)."""
        options = self._options(generation_kwargs)
        query, inputs = self._prepare(query, options["max_new_tokens"])
        parts: list[str] = []
        failed = False
        try:
            for chunk in stream_from_inputs(self.model, self.processor, inputs, stop_event=stop_event, **options):
                parts.append(chunk)
                yield chunk
        except Exception:
            failed = True
            raise
        finally:
            if not failed:
                self.history.append((query, clean_text("".join(parts), self.processor)))

    def messages(self) -> list[dict]:
        """The conversation so far as chat messages (TRL form)."""
        msgs: list[dict] = []
        for i, (user, reply) in enumerate(self.history):
            content: list[dict[str, Any]] = [{"type": "image"}] if i == 0 and self.image is not None else []
            content.append({"type": "text", "text": user})
            msgs.append({"role": "user", "content": content})
            msgs.append({"role": "assistant", "content": [{"type": "text", "text": reply}]})
        return msgs
