"""The Takeoff inference API (port 3000): request bodies, `/generate` (and its fast path), streams, tokenizer routes,
`/image_generate`."""
