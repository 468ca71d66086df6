"""lmms-eval model plug-in: ``python -m lmms_eval --model ocr_mllm --model_args pretrained=DIR --tasks ...``.

It lives in the installed package (not in ``eval/``, which is only importable from the repo root) because lmms-eval
finds plug-ins through the ``lmms_eval.models`` entry point in setup.cfg, which it loads on every run from any
directory. Generation goes through ``ocr_mllm.inference`` (the same loading, chat template, left-padded batches and
stopping on ``<|im_end|>`` as ``python -m eval.run`` and ``infer.py``), so an lmms-eval number and one of ours differ
only in the task's prompt and scorer, not in how the model is driven.

model_args: ``pretrained`` (folder or Hub id, required), ``device`` (auto), ``dtype`` (auto), ``batch_size`` (1),
``max_new_tokens`` (used when the task sets none), ``trust_remote_code`` (as in ``load_model_and_processor``).
Supported request types: ``generate_until`` (batched) and ``loglikelihood`` (one request at a time, lmms-eval's
loss convention: see :meth:`OcrMllmLmms.loglikelihood`); ``generate_until_multi_round`` raises NotImplementedError.
Images only: a video or audio visual raises ValueError.
See docs/eval.md ("lmms-eval plug-in").
"""

from __future__ import annotations

import logging
import os
from typing import Any, Callable, Iterable, NamedTuple, Sequence


try:
    from lmms_eval.api.model import lmms
except ImportError as exc:  # the module is only useful inside lmms-eval; say how to get it instead of a bare error
    raise ImportError(
        "ocr_mllm.lmms_eval_adapter needs lmms-eval: `make setup` installs the pinned version (docs/eval.md)"
    ) from exc

try:
    from lmms_eval.api.instance import GenerationResult, unwrap_generation_output
except ImportError:  # an lmms-eval without output unwrapping hands our tuples to the task unchanged
    GenerationResult = unwrap_generation_output = None

logger = logging.getLogger("ocr_mllm.lmms_eval")

MODEL_ID = "ocr_mllm"
CLASS_PATH = f"{__name__}.OcrMllmLmms"

# Generation settings lmms-eval task YAMLs use that ``generate_batch`` understands (``max_gen_toks`` is the lm-eval
# spelling of ``max_new_tokens``). Anything else in a task's ``generation_kwargs`` (``image_aspect_ratio``,
# ``use_cache``, ...) is meant for other models' code paths; it is logged and ignored rather than passed to
# ``model.generate``, which would reject it.
_PASSED_OPTIONS = ("temperature", "top_p", "top_k", "repetition_penalty", "no_repeat_ngram_size", "num_beams")
_VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".flv", ".wmv", ".m4v", ".mpg", ".mpeg")
_KNOWN_MODEL_ARGS = (
    "pretrained",
    "device",
    "dtype",
    "batch_size",
    "max_batch_size",
    "max_new_tokens",
    "trust_remote_code",
)


class ContinuationScore(NamedTuple):
    """One scored continuation (:meth:`OcrMllmLmms.score_continuations`)."""

    logprob: float  # summed log-probability of the continuation's tokens
    num_tokens: int
    is_greedy: bool  # greedy decoding would produce exactly these tokens


def alias_filelock_api() -> bool:
    """Make ``import filelock._api`` work under filelock 4; returns whether the alias was added.

    lmms-eval 0.7.1-0.7.3 import filelock 3's private ``filelock._api`` at the start of every evaluation, to patch its
    lock metaclass (``_enable_reentrant_filelocks``); filelock 4, which torch, datasets and huggingface_hub get here,
    keeps the same ``FileLockMeta`` and ``BaseFileLock`` in ``filelock._core``. The alias lets lmms-eval's patch apply
    as written instead of every run failing with ModuleNotFoundError. Nothing changes where ``filelock._api`` exists.
    """
    import importlib.util
    import sys

    try:
        if importlib.util.find_spec("filelock._api") is not None:
            return False
        import filelock._core as core
    except ImportError:
        return False
    if not (hasattr(core, "FileLockMeta") and hasattr(core, "BaseFileLock")):
        return False
    sys.modules["filelock._api"] = core
    return True


def lmms_eval_models() -> list:
    """Entry point of the ``lmms_eval.models`` group (setup.cfg): makes ``--model ocr_mllm`` resolve to
    :class:`OcrMllmLmms` without editing lmms-eval's own model table. lmms-eval loads it while importing its model
    registry, before any evaluation starts, which is when :func:`alias_filelock_api` has to be in place."""
    from lmms_eval.models.registry_v2 import ModelManifest

    alias_filelock_api()
    return [ModelManifest(model_id=MODEL_ID, simple_class_path=CLASS_PATH)]


def _needs_tuple_wrapping() -> bool:
    """lmms-eval 0.7.x's evaluator passes every model output through ``unwrap_generation_output``, which turns a
    ``(logprob, is_greedy)`` tuple into its ``str``; multiple-choice scoring then fails ("too many values to unpack")
    for every model. Inside a ``GenerationResult`` the tuple reaches the task intact. Detected, not assumed, so a
    fixed lmms-eval gets plain tuples again."""
    if unwrap_generation_output is None:
        return False
    return unwrap_generation_output((0.0, True))[0] != (0.0, True)


def _positive_int(value: Any, name: str) -> int:
    """lmms-eval hands model_args and ``--batch_size`` over as strings or numbers; anything but a positive integer
    is a user error worth naming (``--batch_size auto`` included: there is no automatic batch size here)."""
    try:
        number = int(value)
        if float(value) != number:
            raise ValueError
    except (TypeError, ValueError):
        raise ValueError(f"ocr_mllm: {name} must be a positive integer, got {value!r}") from None
    if number < 1:
        raise ValueError(f"ocr_mllm: {name} must be a positive integer, got {value!r}")
    return number


def translate_generation_kwargs(
    gen_kwargs: dict | None, default_max_new_tokens: int, ignored: set[str] | None = None
) -> tuple[dict, tuple[str, ...]]:
    """An lmms-eval task's ``generation_kwargs`` → (``generate_batch`` kwargs, stop strings).

    ``until`` is applied to the decoded text afterwards (lm-eval's rule: cut at the first stop string), because
    ``generate_batch`` already stops on the model's own end tokens and task stop strings are plain text.
    ``do_sample: false`` forces greedy decoding whatever the temperature says. ``ignored`` collects the names of
    settings that were dropped, so the caller can log each once per run instead of once per request.
    """
    if gen_kwargs is None:
        gen_kwargs = {}
    if not isinstance(gen_kwargs, dict):
        raise ValueError(f"ocr_mllm: generation kwargs must be a dict, got {type(gen_kwargs).__name__}")
    kwargs: dict[str, Any] = {}
    until = gen_kwargs.get("until")
    if until is None:
        stops: tuple[str, ...] = ()
    elif isinstance(until, str):
        stops = (until,) if until else ()
    elif isinstance(until, (list, tuple)) and all(isinstance(s, str) for s in until):
        stops = tuple(s for s in until if s)
    else:
        raise ValueError(f"ocr_mllm: generation kwarg 'until' must be a string or a list of strings, got {until!r}")
    max_new = gen_kwargs.get("max_new_tokens", gen_kwargs.get("max_gen_toks"))
    kwargs["max_new_tokens"] = _positive_int(
        max_new if max_new is not None else default_max_new_tokens, "max_new_tokens"
    )
    for name in _PASSED_OPTIONS:
        if gen_kwargs.get(name) is not None:
            kwargs[name] = gen_kwargs[name]
    do_sample = gen_kwargs.get("do_sample")
    if do_sample is False or (do_sample is None and not kwargs.get("temperature")):
        kwargs["temperature"] = 0.0
    elif do_sample and not kwargs.get("temperature"):
        kwargs["temperature"] = 1.0  # sampling asked for without a temperature: HF's default
    kwargs["num_beams"] = _positive_int(kwargs.get("num_beams", 1), "num_beams")
    known = {"until", "max_new_tokens", "max_gen_toks", "do_sample", *_PASSED_OPTIONS}
    if ignored is not None:
        ignored.update(k for k in gen_kwargs if k not in known)
    return kwargs, stops


def cut_at_stop_strings(text: str, stops: Iterable[str]) -> str:
    """The text before the first occurrence of any stop string (stripped, as ``generate_batch``'s answers are)."""
    for stop in stops:
        if stop in text:
            text = text.split(stop, 1)[0]
    return text.strip()


def build_conversation(context: str, n_images: int, image_token: str = "<image>") -> list[dict]:
    """One user turn in the TRL form ``generate_batch`` takes.

    Tasks written for LLaVA-style models sometimes put the image placeholder in the prompt themselves; then the images
    go exactly where it is (the count must match, else the processor would fail with a less telling message).
    Otherwise the images come first, as in our own eval (``<image>\\n`` + question, LLaVA's layout).
    """
    if not isinstance(context, str):
        raise ValueError(f"ocr_mllm: the request context must be a string, got {type(context).__name__}")
    if image_token and image_token in context:
        pieces = context.split(image_token)
        if len(pieces) - 1 != n_images:
            raise ValueError(
                f"ocr_mllm: the prompt has {len(pieces) - 1} {image_token} placeholder(s) but the task "
                f"gave {n_images} image(s)"
            )
        content: list[dict] = []
        for i, piece in enumerate(pieces):
            if i:
                content.append({"type": "image"})
            if piece.strip():
                content.append({"type": "text", "text": piece.strip()})
        return [{"role": "user", "content": content}]
    content = [{"type": "image"} for _ in range(n_images)]
    content.append({"type": "text", "text": context})
    return [{"role": "user", "content": content}]


def check_visuals(visuals: Any, where: str) -> list:
    """``doc_to_visual(doc)`` → a flat list of images. lmms-eval passes images as PIL objects and videos as path
    strings; a video (or an audio dict) cannot go through an image processor, so it is refused by name here."""
    if visuals is None:
        return []
    if not isinstance(visuals, (list, tuple)):
        visuals = [visuals]
    flat: list = []
    for v in visuals:
        flat.extend(v if isinstance(v, (list, tuple)) else [v])
    for v in flat:
        if isinstance(v, (str, os.PathLike)) and str(v).lower().endswith(_VIDEO_EXTENSIONS):
            raise ValueError(f"ocr_mllm: {where}: visual {str(v)!r} is a video; this model reads images only")
        if isinstance(v, dict):
            raise ValueError(f"ocr_mllm: {where}: visual is a {sorted(v)} dict (audio?); this model reads images only")
    return flat


class OcrMllmLmms(lmms):
    """lmms-eval "simple" model over an OCR-MLLM folder (``is_simple``: lmms-eval gives us its prompt text and the
    visuals; our processor's chat template turns them into the model's input)."""

    is_simple = True

    def __init__(
        self,
        pretrained: str | None = None,
        device: str | None = "auto",
        dtype: str = "auto",
        batch_size: int | str = 1,
        max_new_tokens: int | str | None = None,
        trust_remote_code: bool | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__()
        kwargs.pop("max_batch_size", None)  # lmms-eval always offers it; there is no automatic batch size here
        if kwargs:
            raise ValueError(f"ocr_mllm: unknown model_args {sorted(kwargs)}; known: {', '.join(_KNOWN_MODEL_ARGS)}")
        if not pretrained:
            raise ValueError("ocr_mllm: model_args needs pretrained=<model folder or Hub id>")
        from ocr_mllm.inference import DEFAULT_MAX_NEW_TOKENS, load_model_and_processor

        self.batch_size = _positive_int(batch_size, "batch_size")
        self.max_new_tokens = _positive_int(
            max_new_tokens if max_new_tokens is not None else DEFAULT_MAX_NEW_TOKENS, "max_new_tokens"
        )
        device = "auto" if device is None else str(device)
        world = int(os.environ.get("WORLD_SIZE", "1") or 1)
        if world > 1 and device in ("auto", "cuda"):
            import torch

            if torch.cuda.is_available():  # torchrun / accelerate launch: one GPU per process, as eval/run.py does
                device = f"cuda:{int(os.environ.get('LOCAL_RANK', '0') or 0)}"
        self.model, self.processor = load_model_and_processor(
            str(pretrained), device=device, dtype=dtype, trust_remote_code=trust_remote_code
        )
        self._ignored_kwargs: set[str] = set()
        self._logged_ignored: set[str] = set()

    # ----------------------------------------------------------------------------------------------------------------
    # helpers
    # ----------------------------------------------------------------------------------------------------------------
    @property
    def image_token(self) -> str:
        return getattr(self.processor, "image_token", "<image>") or "<image>"

    def _doc(self, task: str, split: str, doc_id: Any) -> Any:
        try:
            return self.task_dict[task][split][doc_id]
        except (KeyError, IndexError, TypeError):
            raise ValueError(
                f"ocr_mllm: no document {doc_id!r} in task {task!r} split {split!r} (lmms-eval fills "
                f"task_dict before calling the model)"
            ) from None

    def _visuals(self, doc_to_visual: Callable | None, task: str, split: str, doc_id: Any) -> list:
        if doc_to_visual is None:
            return []
        return check_visuals(doc_to_visual(self._doc(task, split, doc_id)), f"task {task!r} doc {doc_id!r}")

    def _log_ignored(self) -> None:
        new = self._ignored_kwargs - self._logged_ignored
        if new:
            logger.warning("ocr_mllm: ignoring generation kwargs meant for other models: %s", ", ".join(sorted(new)))
            self._logged_ignored |= new

    # ----------------------------------------------------------------------------------------------------------------
    # lmms-eval API
    # ----------------------------------------------------------------------------------------------------------------
    def generate_until(self, requests: Sequence[Any]) -> list[str]:
        """Answers in request order. Requests are grouped by their generation settings (a batch shares one
        ``generate`` call), sorted by prompt length inside a group (less padding), cut into ``batch_size`` batches;
        each batch's images are read only when it runs."""
        from tqdm import tqdm

        from ocr_mllm.inference import generate_batch

        parsed = []
        for i, req in enumerate(requests):
            args = getattr(req, "args", None)
            if not isinstance(args, tuple) or len(args) != 6:
                raise ValueError(
                    f"ocr_mllm: generate_until request {i} has args {args!r}; expected (context, "
                    f"gen_kwargs, doc_to_visual, doc_id, task, split)"
                )
            context, gen_kwargs, doc_to_visual, doc_id, task, split = args
            kwargs, stops = translate_generation_kwargs(gen_kwargs, self.max_new_tokens, self._ignored_kwargs)
            key = (tuple(sorted((k, repr(v)) for k, v in kwargs.items())), stops)
            parsed.append((i, key, kwargs, stops, context, doc_to_visual, doc_id, task, split))
        self._log_ignored()

        groups: dict[tuple, list] = {}
        for item in parsed:
            groups.setdefault(item[1], []).append(item)
        answers: list[str | None] = [None] * len(requests)
        bar = tqdm(total=len(requests), desc="ocr_mllm generate", disable=self.rank != 0)
        for items in groups.values():
            items.sort(key=lambda it: -len(it[4]) if isinstance(it[4], str) else 0)
            for start in range(0, len(items), self.batch_size):
                batch = items[start : start + self.batch_size]
                conversations, images = [], []
                for _, _, _, _, context, doc_to_visual, doc_id, task, split in batch:
                    visuals = self._visuals(doc_to_visual, task, split, doc_id)
                    conversations.append(build_conversation(context, len(visuals), self.image_token))
                    images.append(visuals)
                texts = generate_batch(self.model, self.processor, conversations, images, **batch[0][2])
                if len(texts) != len(batch):
                    raise ValueError(
                        f"ocr_mllm: generate_batch returned {len(texts)} answers for {len(batch)} conversations"
                    )
                for item, text in zip(batch, texts):
                    answers[item[0]] = cut_at_stop_strings(text, item[3])
                bar.update(len(batch))
        bar.close()
        missing = [i for i, a in enumerate(answers) if a is None]
        if missing:
            raise ValueError(f"ocr_mllm: no answer for requests {missing[:10]}")
        return answers  # type: ignore[return-value]

    def loglikelihood(self, requests: Sequence[Any]) -> list:
        """``(mean negative log-likelihood per continuation token, is_greedy)`` per request, in request order.

        Not lm-eval's summed log-probability: lmms-eval 0.7.x picks a multiple-choice answer with ``argmin`` over these
        values, because its bundled models (``llava_hf``, ...) return the HF ``loss`` of the continuation; we return
        the same quantity so the choice is right and comparable with them. (Its ``perplexity`` aggregation assumes
        the opposite sign, for every model.) Wrapped where lmms-eval's evaluator would stringify tuples
        (:func:`_needs_tuple_wrapping`). The summed log-probabilities are :meth:`score_continuations`.
        """
        pairs = [(-score.logprob / score.num_tokens, score.is_greedy) for score in self.score_continuations(requests)]
        if _needs_tuple_wrapping():
            return [GenerationResult(text=pair) for pair in pairs]
        return pairs

    def score_continuations(self, requests: Sequence[Any]) -> list[ContinuationScore]:
        """log P(continuation | prompt), its token count, and whether greedy decoding would produce exactly it.

        The prompt is the chat-templated user turn plus the assistant header, the same text ``generate_until`` would
        answer after; the continuation's tokens are encoded on their own and appended, so a BPE merge across the
        boundary cannot move tokens between prompt and continuation. One request at a time (multiple-choice tasks
        are small next to the generation tasks, and no padding means no padding mistakes).
        """
        import torch

        from ocr_mllm.inference import prepare_inputs

        tokenizer = getattr(self.processor, "tokenizer", self.processor)
        results: list[ContinuationScore] = []
        for i, req in enumerate(requests):
            args = getattr(req, "args", None)
            if isinstance(args, tuple) and len(args) == 2:
                # multiple_choice's unconditional requests (acc_mutual_info): no visuals, no document
                (context, continuation), visuals, doc = args, [], None
            elif isinstance(args, tuple) and len(args) == 6:
                context, continuation, doc_to_visual, doc_id, task, split = args
                visuals = self._visuals(doc_to_visual, task, split, doc_id)
                doc = self._doc(task, split, doc_id) if callable(continuation) else None
            else:
                raise ValueError(
                    f"ocr_mllm: loglikelihood request {i} has args {args!r}; expected (context, "
                    f"continuation, doc_to_visual, doc_id, task, split) or (context, continuation)"
                )
            if callable(continuation):
                continuation = continuation(doc)
            if not isinstance(continuation, str) or not continuation:
                raise ValueError(
                    f"ocr_mllm: loglikelihood request {i}: the continuation must be a non-empty string, "
                    f"got {continuation!r}"
                )
            conversation = build_conversation(context, len(visuals), self.image_token)
            inputs = prepare_inputs(self.model, self.processor, [conversation], [visuals])
            prompt_ids = inputs["input_ids"]
            cont_ids = torch.tensor(
                [tokenizer(continuation, add_special_tokens=False)["input_ids"]],
                dtype=prompt_ids.dtype,
                device=prompt_ids.device,
            )
            if cont_ids.shape[1] == 0:
                raise ValueError(f"ocr_mllm: loglikelihood request {i}: {continuation!r} encodes to no tokens")
            inputs["input_ids"] = torch.cat([prompt_ids, cont_ids], dim=1)
            inputs["attention_mask"] = torch.ones_like(inputs["input_ids"])
            with torch.inference_mode():
                logits = self.model(**inputs).logits
            n_prompt, n_cont = prompt_ids.shape[1], cont_ids.shape[1]
            logprobs = torch.log_softmax(logits[0, n_prompt - 1 : n_prompt - 1 + n_cont].float(), dim=-1)
            target = cont_ids[0]
            total = logprobs.gather(1, target[:, None]).sum().item()
            greedy = bool((logprobs.argmax(dim=-1) == target).all().item())
            results.append(ContinuationScore(float(total), n_cont, greedy))
        return results

    def generate_until_multi_round(self, requests: Sequence[Any]) -> list[str]:
        """Multi-round tasks feed the model's previous answers back through task code written for chat models; not
        supported here (an explicit error beats a silently wrong protocol)."""
        raise NotImplementedError("ocr_mllm: generate_until_multi_round tasks are not supported by this adapter")
