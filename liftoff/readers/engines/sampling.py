"""Choosing the next token for every running row at once, with each row's own sampling parameters.

Per-row parameters live in tensors indexed by batch slot (`SlotSampling`), kept aligned with the KV cache slots, so
one decode step applies temperature, top-k, top-p, repetition penalty and the EOS ban of `min_new_tokens` to the
whole batch with a handful of tensor ops. No-repeat n-grams come in as lists of banned ids for the rows that use
them; grammar masks as one bitmask for the constrained rows, applied in one masked_fill (`apply_bitmask`).

Semantics (the reference's): temperature 0 or top-k 1 is greedy; top-k 0 keeps every token; top-p keeps the
smallest set of most likely tokens whose mass reaches p (at least one); repetition penalty divides positive logits
(multiplies negative ones) of tokens already in the prompt or output, as Hugging Face's processor does.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

NEG_INF = float("-inf")

GrammarMask = tuple[torch.Tensor | None, torch.Tensor]  # (rows or None for all, int32 bitmask); see `choose`


@dataclass(slots=True)
class RowSampling:
    temperature: float = 1.0
    top_k: int = 1
    top_p: float = 1.0
    repetition_penalty: float = 1.0
    seed: int | None = None  # None: the process's random generator

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0.0 or self.top_k == 1


class SlotSampling:
    """Sampling parameters of every batch slot, as tensors on the model's device."""

    def __init__(self, slots: int, vocab_size: int, device: torch.device) -> None:
        self.vocab_size = vocab_size
        self.device = device
        self.temperature = torch.ones(slots, device=device)
        self.top_k = torch.zeros(slots, dtype=torch.long, device=device)
        self.top_p = torch.ones(slots, device=device)
        self.greedy = torch.ones(slots, dtype=torch.bool, device=device)
        self.penalty = torch.ones(slots, device=device)
        self.seen: torch.Tensor | None = None  # [slots, vocab] bool, allocated when a row first uses a penalty
        # Python-side mirrors, so that a step can skip work no running row needs.
        self._greedy_host = [True] * slots
        self._penalty_host = [False] * slots
        self._plain_host = [True] * slots  # no top-k / top-p cut
        self._generators: list[torch.Generator | None] = [None] * slots  # rows with a seed draw from their own

    def set_row(self, slot: int, params: RowSampling, prompt_ids: list[int]) -> None:
        greedy = params.greedy
        self.temperature[slot] = params.temperature if not greedy else 1.0
        self.top_k[slot] = params.top_k if params.top_k > 0 else self.vocab_size
        self.top_p[slot] = params.top_p
        self.greedy[slot] = greedy
        self.penalty[slot] = params.repetition_penalty
        self._greedy_host[slot] = greedy
        self._plain_host[slot] = params.top_k <= 0 and params.top_p >= 1.0
        generator = None
        if params.seed is not None and not greedy:
            generator = torch.Generator(device=self.device)
            generator.manual_seed(params.seed % 2**63)
        self._generators[slot] = generator
        uses_penalty = params.repetition_penalty != 1.0
        self._penalty_host[slot] = uses_penalty
        if uses_penalty:
            if self.seen is None:
                self.seen = torch.zeros(len(self._greedy_host), self.vocab_size, dtype=torch.bool, device=self.device)
            self.seen[slot] = False
            if prompt_ids:
                self.seen[slot, torch.tensor(prompt_ids, device=self.device).clamp_(0, self.vocab_size - 1)] = True

    def move_row(self, src: int, dst: int) -> None:
        for tensor in (self.temperature, self.top_k, self.top_p, self.greedy, self.penalty):
            tensor[dst] = tensor[src]
        if self.seen is not None:
            self.seen[dst] = self.seen[src]
        for host in (self._greedy_host, self._penalty_host, self._plain_host, self._generators):
            host[dst] = host[src]  # type: ignore[index]

    def observe(self, start: int, tokens: torch.Tensor) -> None:
        """Record the tokens just chosen for slots start..start+len(tokens) (for the repetition penalty)."""
        end = start + tokens.shape[0]
        if self.seen is not None and any(self._penalty_host[start:end]):
            rows = torch.arange(start, end, device=self.device)
            self.seen[rows, tokens] = True

    def choose(self, logits: torch.Tensor, start: int, ban_eos: torch.Tensor | None,
               eos_ids: torch.Tensor, banned: list[tuple[int, list[int]]],
               grammar: GrammarMask | None = None) -> torch.Tensor:
        """Next token ids for slots start..start+n, from their last-position logits [n, vocab].

        `ban_eos`: bool [n], rows that may not end yet. `banned`: (row, ids) pairs to forbid. `grammar`: (rows,
        bitmask): the rows (None: all n) restricted to the tokens whose bit is set in their row of the int32
        bitmask [len(rows), ceil(vocab / 32)] (grammar masks, applied as one op); a row left with nothing gets EOS.
        """
        n = logits.shape[0]
        end = start + n
        logits = logits.float()
        if self.seen is not None and any(self._penalty_host[start:end]):
            logits = apply_repetition_penalty(logits, self.seen[start:end], self.penalty[start:end])
        if ban_eos is not None and bool(ban_eos.any()):
            logits[:, eos_ids] = logits[:, eos_ids].masked_fill(ban_eos[:, None], NEG_INF)
        if banned:
            rows = [row for row, ids in banned for _ in ids]
            cols = [tok for _, ids in banned for tok in ids]
            logits[torch.tensor(rows, device=logits.device), torch.tensor(cols, device=logits.device)] = NEG_INF
        if grammar:
            apply_bitmask(logits, grammar[0], grammar[1], eos_ids[0])
        best = logits.argmax(dim=-1)
        if all(self._greedy_host[start:end]):
            return best
        sampled = sample(logits, self.temperature[start:end], self.top_k[start:end], self.top_p[start:end],
                         plain=all(self._plain_host[start:end]), generators=self._generators[start:end])
        return torch.where(self.greedy[start:end], best, sampled)


def unpack_bitmask(bitmask: torch.Tensor, vocab_size: int, device: torch.device) -> torch.Tensor:
    """bool [rows, vocab_size] from an int32 bitmask [rows, words] (bit b of word w is token 32 w + b)."""
    words = bitmask.to(device, non_blocking=True)
    shifts = torch.arange(32, dtype=torch.int32, device=device)
    return ((words[:, :, None] >> shifts) & 1).reshape(words.shape[0], -1)[:, :vocab_size].bool()


def apply_bitmask(logits: torch.Tensor, rows: torch.Tensor | None, bitmask: torch.Tensor, eos: torch.Tensor) -> None:
    """Forbid, in place, every token whose bit is clear, in the logits of `rows` (None: every row); a row left
    with nothing allowed (a grammar in an error state) gets EOS. The scheduler ends a row as soon as its grammar is
    complete, so min_new_tokens' EOS ban never meets a grammar that allows only EOS."""
    allowed = unpack_bitmask(bitmask, logits.shape[1], logits.device)
    if rows is None:
        logits.masked_fill_(~allowed, NEG_INF)
        dead = ~allowed.any(dim=-1)
        if bool(dead.any()):
            logits[dead, eos] = 0.0
        return
    part = logits.index_select(0, rows).masked_fill_(~allowed, NEG_INF)
    part[~allowed.any(dim=-1), eos] = 0.0
    logits.index_copy_(0, rows, part)


def apply_repetition_penalty(logits: torch.Tensor, seen: torch.Tensor, penalty: torch.Tensor) -> torch.Tensor:
    p = penalty[:, None]
    penalised = torch.where(logits > 0, logits / p, logits * p)
    return torch.where(seen, penalised, logits)


def sample(logits: torch.Tensor, temperature: torch.Tensor, top_k: torch.Tensor, top_p: torch.Tensor,
           plain: bool = False, generators: list[torch.Generator | None] | None = None) -> torch.Tensor:
    """One token per row from softmax(logits / temperature), cut to each row's top-k and then top-p; a row with a
    generator draws from it alone, so that its tokens do not depend on the rows it shares the batch with."""
    scaled = logits / temperature[:, None]
    if plain:
        probs = torch.softmax(scaled, dim=-1)
        return _multinomial(probs, generators)
    ordered, order = scaled.sort(dim=-1, descending=True)
    ranks = torch.arange(ordered.shape[1], device=ordered.device)
    ordered = ordered.masked_fill(ranks[None, :] >= top_k[:, None], NEG_INF)
    probs = torch.softmax(ordered, dim=-1)
    before = probs.cumsum(dim=-1) - probs  # mass of the more likely tokens; the first token always stays
    probs = probs.masked_fill(before >= top_p[:, None], 0.0)
    if generators and any(g is not None for g in generators):
        # Seeded rows draw over vocabulary order, as in the plain path, so that a row's tokens do not depend on
        # whether a neighbour in the batch made this step take the sorted path.
        return _multinomial(torch.zeros_like(probs).scatter_(1, order, probs), generators)
    choice = _multinomial(probs)
    return order.gather(1, choice[:, None]).squeeze(1)


def _multinomial(probs: torch.Tensor, generators: list[torch.Generator | None] | None = None) -> torch.Tensor:
    probs = torch.nan_to_num(probs, nan=0.0)
    empty = probs.sum(dim=-1) <= 0
    if bool(empty.any()):
        probs[empty, 0] = 1.0
    if not generators or all(g is None for g in generators):
        return torch.multinomial(probs, 1).squeeze(1)
    # argmax(p / E) with E ~ Exp(1) draws index i with probability p_i (the exponential race); each seeded row
    # draws its own E from its generator, the others from the process's.
    race = torch.empty_like(probs).exponential_()
    for row, generator in enumerate(generators):
        if generator is not None:
            race[row].exponential_(generator=generator)
    return (probs / race).argmax(dim=-1)


class NoRepeatNGrams:
    """The tokens a row may not choose next, so that no n-gram of its prompt + output appears twice."""

    def __init__(self, size: int, tokens: list[int]) -> None:
        self.size = size
        self.tokens: list[int] = []
        self.followers: dict[tuple[int, ...], set[int]] = {}
        for token in tokens:
            self.add(token)

    def add(self, token: int) -> None:
        self.tokens.append(token)
        if len(self.tokens) >= self.size:
            gram = self.tokens[-self.size:]
            self.followers.setdefault(tuple(gram[:-1]), set()).add(gram[-1])

    def banned(self) -> list[int]:
        if len(self.tokens) < self.size - 1:
            return []
        prefix = tuple(self.tokens[len(self.tokens) - self.size + 1:]) if self.size > 1 else ()
        return sorted(self.followers.get(prefix, ()))
