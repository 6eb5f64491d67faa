"""The batched sampling functions, with known distributions."""

from __future__ import annotations

import torch

from liftoff.readers.engines.sampling import NoRepeatNGrams, RowSampling, SlotSampling, sample
from liftoff.readers.engines.tokenizer_tools import IncrementalDetokenizer


def test_top_k_and_top_p_cut_per_row() -> None:
    torch.manual_seed(0)
    logits = torch.log(torch.tensor([[0.4, 0.3, 0.2, 0.1]] * 3))
    picks = [sample(logits, torch.ones(3), torch.tensor([2, 4, 4]), torch.tensor([1.0, 0.5, 1.0])).tolist()
             for _ in range(300)]
    assert {p[0] for p in picks} == {0, 1}  # top-k 2
    assert {p[1] for p in picks} == {0, 1}  # top-p 0.5: 0.4 then 0.3 reaches it
    assert {p[2] for p in picks} == {0, 1, 2, 3}


def test_low_temperature_sharpens() -> None:
    torch.manual_seed(0)
    logits = torch.log(torch.tensor([[0.4, 0.3, 0.2, 0.1]] * 2))
    picks = [sample(logits, torch.tensor([0.05, 5.0]), torch.tensor([4, 4]), torch.ones(2)).tolist()
             for _ in range(300)]
    assert sum(p[0] == 0 for p in picks) > 290
    assert sum(p[1] == 0 for p in picks) < 200


def test_a_seeded_row_draws_from_its_own_generator_with_the_right_distribution() -> None:
    logits = torch.log(torch.tensor([[0.4, 0.3, 0.2, 0.1]] * 2))
    ones, ks = torch.ones(2), torch.tensor([4, 4])

    def draws(seed: int, plain: bool) -> list[int]:
        g = torch.Generator()
        g.manual_seed(seed)
        torch.manual_seed(seed + 1000)  # the unseeded row's draws differ between the calls below
        return [int(sample(logits, ones, ks, ones, plain=plain, generators=[g, None])[0]) for _ in range(2000)]

    for plain in (True, False):
        first = draws(3, plain)
        assert draws(3, plain) == first and draws(4, plain) != first
        freq = [first.count(i) / len(first) for i in range(4)]
        assert all(abs(f - p) < 0.04 for f, p in zip(freq, [0.4, 0.3, 0.2, 0.1], strict=True)), freq


def test_a_seeded_rows_tokens_do_not_depend_on_its_neighbours_cut() -> None:
    """A neighbour's top-p sends the step down the sorted path; the seeded row must pick as on the plain path."""
    logits = torch.randn(2, 50)

    def picks(neighbour_top_p: float) -> list[int]:
        g = torch.Generator()
        g.manual_seed(11)
        top_p = torch.tensor([1.0, neighbour_top_p])
        plain = neighbour_top_p >= 1.0
        return [int(sample(logits, torch.ones(2), torch.tensor([50, 50]), top_p, plain=plain,
                           generators=[g, None])[0]) for _ in range(200)]

    assert picks(1.0) == picks(0.5)


def test_greedy_rows_and_repetition_penalty_in_one_batch() -> None:
    state = SlotSampling(2, 4, torch.device("cpu"))
    state.set_row(0, RowSampling(temperature=0.0), [])
    state.set_row(1, RowSampling(repetition_penalty=100.0, top_k=1), [0])
    logits = torch.tensor([[3.0, 2.0, 1.0, 0.0]] * 2)
    chosen = state.choose(logits, 0, None, torch.tensor([3]), [], [])
    assert chosen.tolist() == [0, 1]
    banned = state.choose(logits, 0, torch.tensor([False, False]), torch.tensor([3]), [(0, [0, 1])], [])
    assert banned.tolist() == [2, 1]
    eos_banned = state.choose(torch.tensor([[0.0, 0.0, 0.0, 9.0]] * 2), 0, torch.tensor([True, False]),
                              torch.tensor([3]), [], [])
    assert eos_banned[0].item() != 3 and eos_banned[1].item() == 3


def test_no_repeat_ngrams() -> None:
    grams = NoRepeatNGrams(2, [5, 6, 5])
    assert grams.banned() == [6]
    grams.add(7)
    assert grams.banned() == []


def test_incremental_detokenizer_waits_for_whole_characters() -> None:
    class Bytes:
        def decode(self, ids, **_):
            return bytes(ids).decode("utf-8", errors="replace")

    detok = IncrementalDetokenizer(Bytes())
    pieces = [detok.add(b) for b in "a日b".encode()]
    assert pieces == ["a", "", "", "日", "b"]
    assert detok.flush() == ""
