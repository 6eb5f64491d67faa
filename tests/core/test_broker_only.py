"""Only the broker (liftoff/core/broker/) speaks Redis Streams: no other product module issues a stream command.

The scan reads the product's source (liftoff, gateway, readers, management) with `ast` and flags calls of the
redis-py stream, pub/sub and script methods (`.xadd(`, `.xreadgroup(`, `.pubsub(`, ...), `.eval(`/`.publish(` on
something named like a Redis client or pipeline (a torch module's `.eval()` is not one), `execute_command` with a
stream command, and Lua that calls a stream command.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PRODUCT = ("liftoff", "gateway", "readers", "management")
BROKER = REPO / "liftoff" / "core" / "broker"

STREAM_METHODS = frozenset({
    "xadd", "xread", "xreadgroup", "xack", "xdel", "xclaim", "xautoclaim", "xpending", "xpending_range",
    "xgroup_create", "xgroup_createconsumer", "xgroup_delconsumer", "xgroup_destroy", "xgroup_setid",
    "xinfo_consumers", "xinfo_groups", "xinfo_stream", "xlen", "xrange", "xrevrange", "xtrim", "xsetid",
    "pubsub", "spublish", "ssubscribe", "register_script", "evalsha", "eval_ro", "evalsha_ro", "script_load",
})
ON_REDIS_ONLY = frozenset({"eval", "publish"})  # names other libraries use too (torch's Module.eval)
REDISH = re.compile(r"redis|pipe", re.IGNORECASE)
RAW_COMMAND = re.compile(r"^\s*(X[A-Z]+|PUBLISH|SPUBLISH|SUBSCRIBE|EVAL|EVALSHA|FCALL)\b", re.IGNORECASE)
LUA_STREAM_CALL = re.compile(r"redis\.(p?call)\(\s*['\"]X[A-Z]+", re.IGNORECASE)


def _receiver_name(node: ast.expr) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return ""


def stream_commands(source: str) -> list[tuple[int, str]]:
    """(line, what) of every stream command `source` issues."""
    found = [(source.count("\n", 0, m.start()) + 1, m.group(0)) for m in LUA_STREAM_CALL.finditer(source)]
    for node in ast.walk(ast.parse(source)):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
            continue
        name = node.func.attr
        if name in STREAM_METHODS:
            found.append((node.lineno, f".{name}("))
        elif name in ON_REDIS_ONLY and REDISH.search(_receiver_name(node.func.value)):
            found.append((node.lineno, f"{_receiver_name(node.func.value)}.{name}("))
        elif name == "execute_command" and node.args:
            first = node.args[0]
            if isinstance(first, ast.Constant) and isinstance(first.value, str) and RAW_COMMAND.match(first.value):
                found.append((node.lineno, f"execute_command({first.value!r})"))
    return sorted(found)


def product_files() -> list[Path]:
    return sorted(p for top in PRODUCT for p in (REPO / top).rglob("*.py") if ".venv" not in p.parts)


def test_no_stream_command_outside_the_broker() -> None:
    outside = {
        str(path.relative_to(REPO)): hits
        for path in product_files()
        if BROKER not in path.parents and (hits := stream_commands(path.read_text(encoding="utf-8")))
    }
    assert not outside, f"stream commands outside liftoff/core/broker/ (move them into the broker): {outside}"


def test_the_scan_sees_the_brokers_own_commands() -> None:
    inside = " ".join(what for path in BROKER.glob("*.py") for _, what in stream_commands(path.read_text()))
    for command in (".xadd(", ".xreadgroup(", ".xclaim(", ".xpending_range(", "pipe.publish(", "pipe.eval(",
                    ".pubsub(", "redis.call('XADD"):
        assert command in inside, f"the scan no longer recognises {command}"


def test_the_scan_tells_redis_from_other_eval_and_publish() -> None:
    quiet = "model = model.to(device).eval()\nself.blocks.publish(row)\nfacts.publish(redis, keys)\n"
    assert stream_commands(quiet) == []
    loud = 'await self.redis.publish(ch, x)\npipe.eval(S, 1, k)\nawait r.execute_command("XADD", k, "*")\n'
    assert [line for line, _ in stream_commands(loud)] == [1, 2, 3]
