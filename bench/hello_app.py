"""The bare baseline for bench/gateway_overhead.py: a Starlette hello world, served like the Liftoff gateway.

One route, ``POST /generate`` (the same path and request bytes as the Liftoff run), answering a small JSON body.
It does not read or parse the request body: it is the floor that gunicorn's native asgi worker and Starlette's
routing cost, nothing more.

    python -m gunicorn -k asgi -w 1 -b 127.0.0.1:8000 --no-control-socket --chdir <checkout> bench.hello_app:app
"""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route


async def generate(request: Request) -> Response:
    return JSONResponse({"text": "hello world"})


app = Starlette(routes=[Route("/generate", generate, methods=["POST"])])
