"""Images from users, for image-to-text readers: read from an upload, a `data:` URL or (only when
`allow_remote_images`) an http(s) URL, then decoded and bounded with Pillow before they are queued.

Why here, in the gateway, and not in the reader: a file that is not an image must be a 400 in the request's own
protocol before anything is queued, and a large photo is scaled down once, so that what goes through Redis stays
small. The reader decodes the (checked) file again for its processor, which resizes it to the model's own size.

Remote fetches (`fetch_remote`) are how a server gets used to reach the inside of its own network, so every hop is
checked: only http and https; the host is resolved here and every address it resolves to must be public (not
private, loopback, link-local, reserved or multicast), and the connection goes to the address that was checked (so
a second lookup cannot answer differently); redirects are followed by hand, each one checked the same way; the
response must say it is an image, arrive within REMOTE_TIMEOUT_S and be no larger than body_size_limit_bytes (an
image fetched may be no larger than one a client may upload).

Errors are `ImageError`s naming where the image came from (`param`); each port answers them in its own envelope.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import io
import ipaddress
import socket
from urllib.parse import unquote_to_bytes

import httpx

MAX_SIDE = 2048  # longest side queued; larger images are scaled down (models' processors resize to far less)
MAX_PIXELS = 50_000_000  # a file that declares more is refused before it is decoded (a decompression bomb)
KEPT_FORMATS = frozenset({"PNG", "JPEG", "WEBP", "GIF", "BMP"})  # queued as sent when within MAX_SIDE; others: PNG
REMOTE_TIMEOUT_S = 10.0  # one remote image, every redirect included
REMOTE_REDIRECTS = 3


class ImageError(ValueError):
    """An image that cannot be used; `param` names where it came from (`image_data`, `messages.0.content.1`)."""

    def __init__(self, message: str, param: str) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


def prepare(data: bytes, param: str) -> str:
    """The image in `data` as the work item carries it (base64): decoded in full (a truncated or corrupt file is an
    ImageError), scaled down to MAX_SIDE when larger, re-encoded as PNG when scaled or in a format not kept."""
    from PIL import Image, UnidentifiedImageError

    if not data:
        raise ImageError(f"{param} is empty: send an image file", param)
    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
            if width * height > MAX_PIXELS:
                raise ImageError(f"{param} is {width}x{height} pixels; the limit is {MAX_PIXELS} pixels", param)
            image.load()
            if max(width, height) <= MAX_SIDE and image.format in KEPT_FORMATS:
                return base64.b64encode(data).decode()
            image.thumbnail((MAX_SIDE, MAX_SIDE))
            if image.mode not in ("RGB", "RGBA", "L", "LA"):
                image = image.convert("RGBA" if "A" in image.getbands() or "transparency" in image.info else "RGB")
            out = io.BytesIO()
            image.save(out, format="PNG")
            return base64.b64encode(out.getvalue()).decode()
    except ImageError:
        raise
    except (UnidentifiedImageError, Image.DecompressionBombError) as exc:
        raise ImageError(f"{param} is not an image this server can read ({exc})", param) from None
    except (OSError, ValueError, SyntaxError) as exc:  # Pillow's decoders raise these for broken files
        raise ImageError(f"{param} is not a readable image: {type(exc).__name__}: {exc}", param) from None


def from_data_url(url: str, param: str) -> bytes:
    """The bytes of a `data:image/...;base64,...` URL (or one not base64-encoded, percent-escaped)."""
    head, sep, payload = url.partition(",")
    if not sep:
        raise ImageError(f"{param}: a data: URL needs a comma before its data", param)
    meta = head.removeprefix("data:").split(";")
    media = meta[0].strip().lower()
    if not media.startswith("image/"):
        raise ImageError(f"{param}: the data: URL's media type must be an image type (image/png, image/jpeg, ...); "
                         f"given {media or 'none'!r}", param)
    if "base64" not in (m.strip().lower() for m in meta[1:]):
        return unquote_to_bytes(payload)
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ImageError(f"{param}: the data: URL's base64 is not valid ({exc})", param) from None


async def fetch_remote(url: str, param: str, allowed: bool, max_bytes: int) -> bytes:
    """The bytes of an http(s) image URL, fetched under the checks of the module's docs."""
    if not allowed:
        raise ImageError(f"{param}: remote image URLs are not allowed on this server (allow_remote_images is false); "
                         "send the image inline as a data: URL", param)
    try:
        async with asyncio.timeout(REMOTE_TIMEOUT_S), httpx.AsyncClient(
                follow_redirects=False, trust_env=False, timeout=REMOTE_TIMEOUT_S) as client:
            for _ in range(REMOTE_REDIRECTS + 1):
                target = httpx.URL(url)
                pinned = await _pinned(target, param)
                request = client.build_request("GET", pinned, headers={"Host": _host_header(target)},
                                               extensions={"sni_hostname": target.host})
                response = await client.send(request, stream=True)
                try:
                    if response.is_redirect and "location" in response.headers:
                        url = str(target.join(response.headers["location"]))
                        continue
                    return await _image_body(response, param, max_bytes)
                finally:
                    await response.aclose()
    except TimeoutError:
        raise ImageError(f"{param}: the image did not arrive within {REMOTE_TIMEOUT_S:g} s", param) from None
    except httpx.HTTPError as exc:
        raise ImageError(f"{param}: the image could not be fetched ({type(exc).__name__}: {exc})", param) from None
    raise ImageError(f"{param}: more than {REMOTE_REDIRECTS} redirects", param)


async def _pinned(url: httpx.URL, param: str) -> httpx.URL:
    """`url` with its host replaced by the address it resolves to, once every address it resolves to is public."""
    if url.scheme not in ("http", "https"):
        raise ImageError(f"{param}: image URLs must be http, https or data: URLs; given {url.scheme or 'none'!r}",
                         param)
    host = url.host
    if not host:
        raise ImageError(f"{param}: the image URL names no host", param)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise ImageError(f"{param}: the image URL's host {host!r} does not resolve ({exc})", param) from None
    addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
    for address in addresses:
        if not public_address(address):
            raise ImageError(f"{param}: the image URL's host {host!r} resolves to {address}, which is not a public "
                             "address (private, loopback, link-local or reserved): remote images may only come "
                             "from public addresses", param)
    if not addresses:
        raise ImageError(f"{param}: the image URL's host {host!r} does not resolve", param)
    return url.copy_with(host=addresses[0])


def public_address(address: str) -> bool:
    """Whether `address` is a public unicast address (an IPv4-mapped IPv6 address is judged as its IPv4)."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


def _host_header(url: httpx.URL) -> str:
    host = f"[{url.host}]" if ":" in url.host else url.host
    return host if url.port is None else f"{host}:{url.port}"


async def _image_body(response: httpx.Response, param: str, max_bytes: int) -> bytes:
    if response.status_code != 200:
        raise ImageError(f"{param}: fetching the image answered HTTP {response.status_code}", param)
    media = response.headers.get("content-type", "").split(";")[0].strip().lower()
    if not media.startswith("image/"):
        raise ImageError(f"{param}: the URL's content type is {media or 'none'!r}, not an image type", param)
    declared = response.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise ImageError(f"{param}: the image is {declared} bytes; the limit (body_size_limit_bytes) is {max_bytes}",
                         param)
    body = bytearray()
    async for chunk in response.aiter_bytes():
        body += chunk
        if len(body) > max_bytes:
            raise ImageError(f"{param}: the image is over {max_bytes} bytes, the limit (body_size_limit_bytes)", param)
    return bytes(body)


async def image_from_url(url: str, param: str, allowed: bool, max_bytes: int) -> str:
    """An image URL (`data:` or, when `allowed`, http(s)) as the work item carries it."""
    if url.startswith("data:"):
        data = from_data_url(url, param)
    elif url.split(":", 1)[0].lower() in ("http", "https"):
        data = await fetch_remote(url, param, allowed, max_bytes)
    else:
        raise ImageError(f"{param}: image URLs must be data: URLs (or http(s) where the server allows remote "
                         f"images); given {url[:40]!r}", param)
    return await asyncio.to_thread(prepare, data, param)
