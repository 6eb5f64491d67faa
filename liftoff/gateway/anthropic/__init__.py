"""The Anthropic Messages API (`/v1/messages`, `count_tokens`) on port 3003: request models, routes, error shape."""
