"""The OpenAI API (port 3003): chat and completions routes, embeddings, models, rerank and score, image parts, and
`responses/`."""
