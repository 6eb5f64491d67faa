"""What an image-to-text reader makes of a request before it runs: its images decoded, its prompts rendered with
one image placeholder per image, each processed by the model's processor, and generate's sampling arguments.

Prompts: a chat is rendered by the processor's chat template with an `{"type": "image"}` part where each image goes;
a text with `use_chat_template` becomes one user message with the images before its text; a raw text gets the
processor's image token in front for each image its text does not place itself. `tokenizer` is the reader's locked
tokenizer (its `lock` is held while the processor runs).
"""

from __future__ import annotations

import base64
import io
from typing import Any

from liftoff.core.wire import GenerationParams
from liftoff.readers.engines.base import EngineRequestError


def refuse_unsupported(tools: bool, params: GenerationParams) -> None:
    """A 422 naming what an image-to-text reader does not do."""
    given = [name for name, on in (
        ("lora_id", params.lora_id is not None),
        ("regex_string", params.regex_string is not None),
        ("json_schema", params.json_schema is not None),
        ("lark_grammar", params.lark_grammar is not None),
        ("logprobs", params.logprobs is not None),
        ("prompt_max_tokens", params.prompt_max_tokens is not None),
        ("tools", tools),
    ) if on]
    if given:
        raise EngineRequestError(422, f"{', '.join(given)}: not supported by image-to-text readers")


def render_prompts(processor: Any, tokenizer: Any, texts: list[str], chats: list[list[dict[str, Any]]] | None,
                   add_generation_prompt: bool, use_chat_template: bool, images: int) -> list[str]:
    """The item's prompts as text, with one image placeholder per image (see the module's docs)."""
    token = getattr(processor, "image_token", None)
    if chats is not None or use_chat_template:
        if not getattr(processor, "chat_template", None):
            raise EngineRequestError(422, "use_chat_template: this model's processor has no chat template")
        if chats is None:
            chats = [[{"role": "user", "content": [*({"type": "image"} for _ in range(images)),
                                                 {"type": "text", "text": text}]}] for text in texts]
        try:
            with tokenizer.lock:
                return [str(processor.apply_chat_template(chat, add_generation_prompt=add_generation_prompt,
                                                          tokenize=False)) for chat in chats]
        except Exception as exc:  # jinja's errors are the conversation's
            raise EngineRequestError(422, f"messages: the chat template could not render them "
                                     f"({type(exc).__name__}: {exc})") from exc
    if not images:
        return list(texts)
    if not token:
        raise EngineRequestError(422, "this model's processor names no image token: send the prompt with "
                                 "use_chat_template")
    return [token * max(0, images - text.count(token)) + text for text in texts]


def process_prompt(processor: Any, tokenizer: Any, prompt: str, images: list[Any], templated: bool,
                   where: str) -> dict[str, Any]:
    """The processor's tensors for one prompt and its images."""
    token = getattr(processor, "image_token", None)
    placed = prompt.count(token) if token else len(images)
    if placed != len(images):
        raise EngineRequestError(422, f"{where}: the prompt places {placed} images but {len(images)} came with "
                                 "the request")
    try:
        with tokenizer.lock:
            return dict(processor(images=images or None, text=[prompt], return_tensors="pt",
                                  add_special_tokens=not templated))
    except (ValueError, TypeError) as exc:
        raise EngineRequestError(422, f"{where}: the model's processor refused the request: {exc}") from exc


def sampling_settings(params: GenerationParams) -> tuple[dict[str, Any], tuple[Any, ...]]:
    """generate's sampling arguments for `params`, and the key of the rows that may share a batch with them."""
    settings: dict[str, Any] = {"repetition_penalty": params.repetition_penalty}
    if params.sampling_topk == 1 or params.sampling_temperature == 0:
        settings["do_sample"] = False
    else:
        settings.update(do_sample=True, temperature=params.sampling_temperature, top_p=params.sampling_topp,
                        top_k=params.sampling_topk or None)
    if params.no_repeat_ngram_size > 0:
        settings["no_repeat_ngram_size"] = params.no_repeat_ngram_size
    if params.min_new_tokens > 0:
        settings["min_new_tokens"] = params.min_new_tokens
    return settings, tuple(sorted(settings.items()))


def decode_image(data: str, index: int) -> Any:
    """The request's `index`th image (base64, checked and bounded by the gateway) as an RGB Pillow image."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(base64.b64decode(data, validate=True))) as image:
            return image.convert("RGB")
    except (ValueError, OSError, UnidentifiedImageError) as exc:
        raise EngineRequestError(400, f"images[{index}] is not an image Pillow can read: {exc}") from exc
