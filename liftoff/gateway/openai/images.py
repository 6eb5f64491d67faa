"""Images in OpenAI chat completions: `image_url` content parts of user messages, each a `data:` URL (or an http(s)
URL where the server allows remote images), read and checked by liftoff.gateway.images and queued with the chat, whose
messages then go to the reader's chat template as lists of text and image parts (docs/images.md)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from liftoff.gateway.chat.errors import invalid
from liftoff.gateway.chat.generation import Completion
from liftoff.gateway.chat.protocol import ChatCompletionRequest, ImagePart
from liftoff.gateway.images import ImageError, image_from_url
from liftoff.gateway.services.generate import Generation
from liftoff.http.context import Gateway


async def chat_images(gw: Gateway, req: ChatCompletionRequest) -> list[str]:
    """The request's images in the order they appear (base64, as the work item carries them); a 400 naming the
    content part of the first that cannot be had."""
    images: list[str] = []
    for i, message in enumerate(req.messages):
        if not isinstance(message.content, list):
            continue
        for j, part in enumerate(message.content):
            if not isinstance(part, ImagePart):
                continue
            param = f"messages.{i}.content.{j}.image_url"
            if message.role != "user":
                raise invalid(f"messages[{i}]: image_url content parts belong in user messages, not "
                              f"{message.role} messages", param)
            try:
                images.append(await image_from_url(part.image_url.url, param, gw.settings.allow_remote_images,
                                                   gw.settings.body_size_limit_bytes))
            except ImageError as err:
                raise invalid(err.message, err.param) from None
    return images


@dataclass
class ImageCompletion(Completion):
    """A chat completion with images: the chat's work item carries them (once, whatever `n`)."""

    images: list[str] = field(default_factory=list)

    def generation(self) -> Generation:
        gen = super().generation()
        return replace(gen, work={**(gen.work or {}), "images": self.images}, attached=sum(len(i) for i in self.images))
