"""What the tests (and `bench/`) share: real servers and readers (`servers`), a local Redis Cluster (`cluster`), tiny
random-weight models (`models`, `vlm`, `tools`), the fit engine on fixed facts (`fit`).

Tests import it as `support.<module>` (pytest puts `tests/` on the path, `pyproject.toml`); benches as
`tests.support.<module>` from the repository root. Modules of this package import each other relatively, so both work.
"""
