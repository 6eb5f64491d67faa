"""Tiny random-weight Hugging Face models, built offline, for engine tests and in-process benchmarks.

The tokenizer is a real byte-level BPE trained on a few sentences (so multi-byte characters and leading spaces
behave as in real models), wrapped as a fast tokenizer with BOS/EOS/PAD and a chat template.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "A reader holds a model and answers requests from a stream.",
    "Continuous batching lets new requests join between decode steps.",
    "Hello world! How are you today? I am fine, thank you.",
    "Le café est très bon. Über straße, naïve façade, 日本語 テキスト, emoji 🙂.",
    "Numbers 0 1 2 3 4 5 6 7 8 9 and symbols { } [ ] : , \" ' - _ .",
] * 4

CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}{{ eos_token }}{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def build_tokenizer(path: Path, vocab_size: int = 400):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = ["<s>", "</s>", "<pad>", "<|user|>", "<|assistant|>", "<|system|>"]
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(CORPUS, trainer=trainer)
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B",
                                                       special_tokens=[("<s>", tok.token_to_id("<s>"))])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                                   additional_special_tokens=["<|user|>", "<|assistant|>", "<|system|>"])
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(path)
    return fast


def build_llama(path: Path, hidden: int = 64, layers: int = 2, heads: int = 4, kv_heads: int = 2,
                max_positions: int = 512, seed: int = 0, intermediate: int | None = None) -> Path:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    path.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer(path)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=intermediate or hidden * 2,
        num_hidden_layers=layers,
        num_attention_heads=heads, num_key_value_heads=kv_heads, max_position_embeddings=max_positions,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    save_sharpened(LlamaForCausalLM(config), tokenizer, path)
    return path


def save_sharpened(model, tokenizer, path: Path) -> None:
    """Save a random-weight generating model with larger logits than the default init, so that greedy choices are
    clear-cut, and the tokenizer's BOS, EOS and PAD as its generation config."""
    import torch
    from transformers import GenerationConfig

    with torch.no_grad():
        model.lm_head.weight.mul_(8.0)
    model.generation_config = GenerationConfig(bos_token_id=tokenizer.bos_token_id,
                                               eos_token_id=tokenizer.eos_token_id,
                                               pad_token_id=tokenizer.pad_token_id)
    model.save_pretrained(path)


def build_bert_classifier(path: Path, labels: tuple[str, ...] = ("negative", "positive"), seed: int = 0) -> Path:
    import torch
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import BertConfig, BertForSequenceClassification, PreTrainedTokenizerFast

    path.mkdir(parents=True, exist_ok=True)
    words = sorted({w.strip(".,!?").lower() for line in CORPUS for w in line.split()} - {""})
    vocab = {t: i for i, t in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words])}
    tok = Tokenizer(models.WordPiece(vocab=vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                                   sep_token="[SEP]", mask_token="[MASK]")
    fast.save_pretrained(path)
    config = BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=128, num_labels=len(labels),
                        id2label=dict(enumerate(labels)), label2id={lab: i for i, lab in enumerate(labels)})
    torch.manual_seed(seed)
    BertForSequenceClassification(config).save_pretrained(path)
    return path


# --- driving engines in-process -------------------------------------------------------------------------------------
class CollectingSink:
    """Records what an engine replies, in order, like the reader's ReplySink would send it."""

    def __init__(self) -> None:
        self.events: list[tuple] = []
        self.tokens: dict[tuple[str, int], list[str]] = {}
        self.finals: dict[str, tuple] = {}
        self.logprobs: dict[tuple[str, int], list[dict]] = {}  # (request id, index) -> entries, streamed or not

    def token(self, job, index: int, text: str, logprobs=None) -> None:
        self.events.append(("token", job.item.id, index, text))
        self.tokens.setdefault((job.item.id, index), []).append(text)
        if logprobs:
            self.logprobs.setdefault((job.item.id, index), []).extend(logprobs)

    def done(self, job, texts, metadata=None, result=None, logprobs=None) -> None:
        assert job.item.id not in self.finals, f"second terminal reply for {job.item.id}"
        job.finished = True
        self.events.append(("done", job.item.id))
        self.finals[job.item.id] = ("done", texts, metadata, result)
        for index, entries in enumerate(logprobs or []):
            self.logprobs[(job.item.id, index)] = entries

    def error(self, job, status: int, message: str) -> None:
        assert job.item.id not in self.finals, f"second terminal reply for {job.item.id}"
        job.finished = True
        self.events.append(("error", job.item.id))
        self.finals[job.item.id] = ("error", status, message)

    def streamed(self, request_id: str, index: int = 0) -> str:
        return "".join(self.tokens.get((request_id, index), []))


def run_jobs(engine, *jobs) -> CollectingSink:
    """Run `jobs` on a loaded engine to the end; what it sent, by request id."""
    sink = CollectingSink()
    asyncio.run(engine.run(list(jobs), sink))
    return sink


def make_job(request_id: str, texts, kind: str = "generate", stream: bool = False, pairs=None, timeout_s: float = 60,
             **params):
    from liftoff.core.wire import GenerationParams, WorkItem, now_ms
    from liftoff.readers.jobs import Job

    if isinstance(texts, str):
        texts = [texts]
    item = WorkItem(id=request_id, kind=kind, reply_to="replies", stream=stream, texts=texts, pairs=pairs,
                    params=GenerationParams(**params), enqueued_ms=now_ms(),
                    deadline_ms=now_ms() + int(timeout_s * 1000))
    return Job(group="primary", stream="requests", entry_id=b"0-1", item=item)


def build_small_llama(path: Path, seed: int = 0) -> Path:
    """A random Llama of a real small shape (12 layers, hidden 768, ~100M parameters): big enough that a
    2,000-token prefill takes seconds on a CPU, which is what engine behaviour under load must be tested with.

    Its output head only ever prefers tokens that decode to text on their own (the rows of the others are zero,
    so their logits are 0 while the best of the rest is well above): random weights otherwise emit runs of partial
    UTF-8 bytes that a stream holds back until a character is complete, which would make the time between a
    stream's events measure the random output rather than the engine."""
    build_llama(path, hidden=768, layers=12, heads=12, kv_heads=4, intermediate=3072, max_positions=4096, seed=seed)
    restrict_head_to_text(path)
    return path


def restrict_head_to_text(path: Path) -> None:
    import torch
    from transformers import AutoTokenizer, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(path)
    model = LlamaForCausalLM.from_pretrained(path)
    silent = [i for i in range(len(tokenizer))
              if "\ufffd" in (text := tokenizer.decode([i], skip_special_tokens=True)) or not text]
    with torch.no_grad():
        model.lm_head.weight[silent] = 0.0
    model.save_pretrained(path)


def long_text(tokens: int, tokenizer) -> str:
    """Corpus text of about `tokens` tokens for `tokenizer`."""
    text, words = "", " ".join(CORPUS).split()
    i = 0
    while len(tokenizer(text).input_ids) < tokens:
        text += " ".join(words[i % len(words):i % len(words) + 50]) + " "
        i += 50
    return text


def wordpiece_tokenizer(texts: list[str], extra_chars: str = ""):
    """A WordPiece tokenizer (BERT-style: `##` continuation pieces) over the characters and words of `texts`."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    chars = sorted({c for line in texts for c in line.lower() if not c.isspace()} | set("{}[]:,\"." + extra_chars))
    words = sorted({w.strip('.,!?:{}[]"').lower() for line in texts for w in line.split()} - {""})
    pieces = ["[PAD]", "[UNK]", "<s>", "</s>", *chars, *(f"##{c}" for c in chars), *words, "true", "false", "null"]
    vocab = {t: i for i, t in enumerate(dict.fromkeys(pieces))}
    tok = Tokenizer(models.WordPiece(vocab=vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", bos_token="<s>",
                                   eos_token="</s>")


def llama_over(path: Path, tokenizer) -> Path:
    """A tiny random Llama (hidden 64, 2 layers) saved in `path` with `tokenizer`."""
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    path.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(path)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=False)
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    model.generation_config = GenerationConfig(bos_token_id=tokenizer.bos_token_id,
                                               eos_token_id=tokenizer.eos_token_id)
    model.save_pretrained(path)
    return path


def build_lora(base: Path, path: Path, seed: int, rank: int = 8,
               targets: tuple[str, ...] = ("q_proj", "v_proj", "down_proj")) -> Path:
    """A random LoRA adapter of the model in `base`, saved by peft: A and B both random (peft's non-default init) and
    scaled up, so that its greedy outputs differ from the base model's and from another seed's."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(base),
                           LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=list(targets),
                                      init_lora_weights=False))
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.mul_(4.0)
    model.save_pretrained(path)
    return path


def peft_greedy(base: Path, adapter: Path | None, prompt: str, new_tokens: int) -> str:
    """What peft's own model generates greedily (exactly `new_tokens`) with the adapter in `adapter` (None: the
    base model alone), decoded as the readers decode."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base)
    model = AutoModelForCausalLM.from_pretrained(base).eval()
    if adapter is not None:
        model = PeftModel.from_pretrained(model, str(adapter)).eval()
    ids = tokenizer(prompt, return_tensors="pt")
    out = model.generate(**ids, do_sample=False, max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                         pad_token_id=tokenizer.pad_token_id)
    return tokenizer.decode(out[0, ids.input_ids.shape[1]:], skip_special_tokens=True,
                            clean_up_tokenization_spaces=False)
