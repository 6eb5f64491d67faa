"""The chat engine every chat-like protocol runs on (OpenAI chat and completions, Responses, Anthropic Messages):
request models, generation, tool calls, guided decoding, readers by model name, OpenAI-shaped errors."""
