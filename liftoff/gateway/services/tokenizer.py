"""Tokenizer work on one reader (tokenize, detokenize, chat-template rendering), through the reader's direct group.

`on_reader` is for a reader a client names (404 listing the known readers when there is none by that id);
`run_on_reader` for one the caller picked from the registry itself. `args` are the work item's tokenizer arguments,
as the reader's engine reads them (`liftoff.readers.engines.base.Engine.tokenizer_op`).
"""

from __future__ import annotations

from typing import Any, Literal

from liftoff.core.errors import NotFound
from liftoff.core.keys import Keys
from liftoff.http.context import Gateway

TokenizerKind = Literal["tokenize", "detokenize", "chat_template"]


async def on_reader(gw: Gateway, reader_id: str, kind: TokenizerKind, args: dict[str, Any]) -> Any:
    """`kind` on the reader `reader_id`: tokenize → {tokens, tokens_count}, detokenize → {text}, chat_template →
    {messages}."""
    await _require_reader(gw, reader_id)
    return await run_on_reader(gw, reader_id, kind, args)


async def run_on_reader(gw: Gateway, reader_id: str, kind: TokenizerKind, args: dict[str, Any]) -> Any:
    ticket = await gw.dispatcher.submit(Keys.direct_group(reader_id), [], kind=kind, args=args)
    return (await gw.dispatcher.outcome(ticket)).result


async def _require_reader(gw: Gateway, reader_id: str) -> None:
    dispatcher = gw.dispatcher
    group = Keys.direct_group(reader_id)
    if group not in dispatcher.groups.view.known:
        await dispatcher.refresh_view()
    if group not in dispatcher.groups.view.known:
        readers = sorted(g[1:] for g in dispatcher.groups.view.known if g.startswith("@"))
        raise NotFound(f"no reader {reader_id!r}; known readers: {readers}", {"known_readers": readers})
