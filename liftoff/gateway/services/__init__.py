"""The inference side's services, one per request kind; the port modules only translate protocols around them.

A port parses and validates a request in its own protocol, hands the service plain inputs (texts, parameters in the
wire's terms, the consumer group), and shapes the plain result (or the `ApiError` raised) into its protocol's
answer. A service checks the server's limits, dispatches through `gw.dispatcher` and waits for the outcome:

* `generate`: generation, answered whole (`generate`) or streamed (`stream`, a `ReplyStream`);
* `encode`: `embed` (one vector per text) and `classify` (one result per text or pair);
* `tokenizer`: tokenize, detokenize and chat-template rendering on one reader, by its direct group;
* `limits`: the limits every service checks (`max_user_batch_size`, `max_prompt_string_bytes`).

Ports: the Takeoff inference API (`liftoff.gateway.takeoff`: `routes`, `generate_asgi`, with the Takeoff request
kinds in `requests`), Vertex (`liftoff.gateway.vertex`), OpenAI and Anthropic (`liftoff.gateway.openai`,
`liftoff.gateway.anthropic`, over the chat engine in `liftoff.gateway.chat`), Snowflake (`liftoff.gateway.snowflake`).
"""
