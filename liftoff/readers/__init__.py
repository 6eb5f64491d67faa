"""The model side: reader processes, their engines, batching and replies."""
