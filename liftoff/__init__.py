"""Liftoff: a multi-process LLM inference server (gateway → Redis Streams → readers)."""

__version__ = "0.1.0"
