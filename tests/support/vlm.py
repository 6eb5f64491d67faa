"""A tiny random vision-language model, built offline: Llava over a 2-layer CLIP vision tower and a 2-layer Llama,
with a slow (Pillow) CLIP image processor and the byte-level BPE tokenizer of `support.models` plus the `<image>`
token, saved with a LlavaProcessor and a chat template that places image parts."""

from __future__ import annotations

import io
from pathlib import Path

from .models import build_tokenizer, save_sharpened

IMAGE_TOKEN = "<image>"
IMAGE_SIZE = 32
PATCH = 8
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|>"
    "{% if m['content'] is string %}{{ m['content'] }}{% else %}{% for c in m['content'] %}"
    "{% if c['type'] == 'image' %}<image>{% elif c['type'] == 'text' %}{{ c['text'] }}{% endif %}"
    "{% endfor %}{% endif %}{{ eos_token }}{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def build_llava(path: Path, seed: int = 0) -> Path:
    import torch
    from transformers import (
        CLIPImageProcessor,
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
    )

    path.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer(path)
    tokenizer.add_special_tokens({"additional_special_tokens": ["<|user|>", "<|assistant|>", "<|system|>",
                                                                IMAGE_TOKEN]})
    vision = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                              image_size=IMAGE_SIZE, patch_size=PATCH, projection_dim=32)
    text = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                       bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                       pad_token_id=tokenizer.pad_token_id)
    config = LlavaConfig(vision_config=vision, text_config=text,
                         image_token_index=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
                         vision_feature_layer=-1, vision_feature_select_strategy="default",
                         image_seq_length=(IMAGE_SIZE // PATCH) ** 2)
    torch.manual_seed(seed)
    save_sharpened(LlavaForConditionalGeneration(config), tokenizer, path)
    images = CLIPImageProcessor(size={"shortest_edge": IMAGE_SIZE},
                                crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE})
    processor = LlavaProcessor(image_processor=images, tokenizer=tokenizer, patch_size=PATCH,
                               vision_feature_select_strategy="default", image_token=IMAGE_TOKEN,
                               num_additional_image_tokens=1, chat_template=CHAT_TEMPLATE)
    processor.save_pretrained(path)
    return path


def png_bytes(size: tuple[int, int] = (48, 40), color: tuple[int, int, int] = (200, 30, 30)) -> bytes:
    """A PNG made with Pillow: a plain square of `color` with a lighter band, so two colours give two images."""
    from PIL import Image, ImageDraw

    image = Image.new("RGB", size, color)
    ImageDraw.Draw(image).rectangle((0, 0, size[0] // 2, size[1] // 3), fill=(255, 255 - color[1], 128))
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def hf_greedy(model_dir: Path, prompt: str, images: list[bytes], max_new: int, templated: bool = False) -> str:
    """transformers' own greedy answer for `prompt` and `images` (PNG/JPEG bytes), in-process: what a reader must
    give for the same request."""
    import torch
    from PIL import Image
    from transformers import AutoModelForImageTextToText, AutoProcessor

    processor = AutoProcessor.from_pretrained(model_dir, backend="pil")
    model = AutoModelForImageTextToText.from_pretrained(model_dir).eval()
    pil = [Image.open(io.BytesIO(i)).convert("RGB") for i in images]
    inputs = processor(images=pil or None, text=[prompt], return_tensors="pt", add_special_tokens=not templated)
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=max_new, do_sample=False)
    return str(processor.tokenizer.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True))
