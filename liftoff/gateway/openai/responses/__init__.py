"""The OpenAI Responses API (`/v1/responses`): routes, request models, output objects, streams, the Redis store."""
