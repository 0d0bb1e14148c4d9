"""Only the playground's own page may use its server.

Rule: every request must name the page in `Host` (`127.0.0.1:PORT` or `localhost:PORT`, PORT the
one served), else DNS rebinding lets any site read and call it; an `Origin`, when sent, must be
the page's own; a POST must carry it (browsers send Origin on every POST, same-origin included)
and be `application/json` (a cross-site page can send text/plain without a CORS preflight); an
API request whose `Sec-Fetch-Site` is another site is refused too. Refusals are 403 with a JSON
`error` that says what to open instead.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Final

from aiohttp import hdrs, web

from agent.log import get_logger

log = get_logger(__name__)

HOST: Final = "127.0.0.1"  # the only interface the playground listens on
_PAGE_HOSTS: Final = ("127.0.0.1", "localhost")
# what a browser's own-page request says (Sec-Fetch-Site "none": typed in the address bar)
_OWN_SITE: Final = frozenset({"same-origin", "none"})


def _shown(value: str) -> str:
    """A request's header in our answer: quoted and short (it is whatever the client sent)."""
    return repr(value if len(value) <= 80 else value[:80] + "...")


def served_port(request: web.Request) -> int | None:
    """The port this request came in on: the one the page is served from."""
    sockname = request.transport.get_extra_info("sockname") if request.transport else None
    return sockname[1] if isinstance(sockname, tuple) and len(sockname) >= 2 else None


def refusal(request: web.Request) -> tuple[str, str] | None:
    """Why `request` is not from the playground's own page (a short reason for the log, the
    text for the answer), or None when it may be. See the module's rule."""
    port = served_port(request)
    if port is None:
        return "host", "the connection's port is unknown"
    own_hosts = {f"{host}:{port}" for host in _PAGE_HOSTS}
    if port == 80:  # a browser leaves out the default port
        own_hosts.update(_PAGE_HOSTS)
    page = f"http://{HOST}:{port}"
    host = request.headers.get(hdrs.HOST, "")
    if host.lower() not in own_hosts:
        return "host", (
            f"Host {_shown(host)} is not this playground: open {page}/ (a page that reaches it "
            "under another name is refused: DNS rebinding)"
        )
    origin = request.headers.get(hdrs.ORIGIN)
    if origin is None:
        if request.method not in ("GET", "HEAD"):
            return "origin_missing", (
                f"{request.method} {request.path} needs the Origin header of the playground's "
                f"own page ({page}); browsers send it on every POST"
            )
    elif origin.lower() not in {f"http://{own}" for own in own_hosts}:
        return "origin", (
            f"Origin {_shown(origin)} may not use this playground: only its own page ({page}) may"
        )
    if request.path.startswith("/api/"):
        site = request.headers.get("Sec-Fetch-Site")
        if site is not None and site.lower() not in _OWN_SITE:
            return "fetch_site", (
                f"Sec-Fetch-Site {_shown(site)}: the API answers the playground's own page only"
            )
    if request.method == "POST" and request.content_type != "application/json":
        sent = request.headers.get(hdrs.CONTENT_TYPE, "")
        return "content_type", (
            f"Content-Type {_shown(sent)} refused: {request.method} {request.path} takes "
            "application/json"
        )
    return None


@web.middleware
async def own_page_only(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    refused = refusal(request)
    if refused is not None:
        reason, text = refused
        log.warning("playground.refused", reason=reason, method=request.method, path=request.path)
        return web.json_response({"error": text}, status=403)
    return await handler(request)
