"""The base every layer builds on: settings, the wire contract, keys, the broker, shared HTTP pieces.

Nothing in here imports `gateway`, `management`, `readers` or the composition modules of `liftoff`
(docs/architecture.md; the import-linter contracts in pyproject.toml check it).
"""
