"""`python -m liftoff.entry.keys hash` reads a key on stdin and prints its SHA-256 digest (the form
`management_api_keys`
and `inference_api_keys` hold); `python -m liftoff.entry.keys new` makes a random key and prints it with its digest.
Checking keys is liftoff.http.auth."""

from __future__ import annotations

import secrets
import sys

from liftoff.core.api_keys import hash_key


def main(argv: list[str]) -> int:
    if argv[:1] == ["hash"]:
        key = sys.stdin.readline().strip()
        if not key:
            print("usage: echo -n KEY | python -m liftoff.entry.keys hash", file=sys.stderr)
            return 2
        print(hash_key(key))
        return 0
    if argv[:1] == ["new"]:
        key = secrets.token_urlsafe(32)
        print(f"key:    {key}\nsha256: {hash_key(key)}")
        return 0
    print("usage: python -m liftoff.entry.keys hash|new", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
