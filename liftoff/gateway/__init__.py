"""The HTTP side: one ASGI app per port, request models, dispatch to Redis, reply routing."""
