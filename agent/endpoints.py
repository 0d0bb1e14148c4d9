"""The rules for every URL we dial, every key we send in a header and every other text setting.

Rule: one function per kind of value, used by the Settings validators (agent.config) AND by the
clients that send them (agent.backend.http.HttpBackend), so a value that passes boot is never
refused on the first call. Each raises ValueError("NAME: problem; fix") (or, for the settings'
own types, returns "problem; fix"), never quoting the value (a URL may carry a password).
"""

from __future__ import annotations

import ipaddress
from urllib.parse import SplitResult, urlsplit

_URL_SCHEMES = frozenset({"https", "http"})
_LIVEKIT_SCHEMES = frozenset({"wss", "ws", "https", "http"})


def is_loopback_host(host: str) -> bool:
    """A literal loopback host: `localhost`, 127.0.0.0/8 or ::1 (DESIGN: the only hosts plain
    http may carry a key to). `foo.localhost` is a name some resolver answers, not a literal."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _check_url_shape(url: str, name: str, schemes: frozenset[str], example: str) -> SplitResult:
    """The structure every URL we dial must have: a scheme we speak, a host, no credentials,
    query, fragment, backslash or whitespace (httpx and browsers disagree on what those mean,
    and a userinfo would be sent as a second credential or leak in logs)."""

    def bad(problem: str) -> ValueError:
        return ValueError(f"{name}: {problem}; write it as {example}")

    if any(char.isspace() or not char.isprintable() for char in url):
        # urlsplit silently drops tabs and newlines: check the raw text first
        raise bad("contains whitespace or a control character (a trailing newline?)")
    if "\\" in url:
        raise bad("contains a backslash (clients disagree on whether it is a /)")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number in range
    except ValueError:
        raise bad(
            "is not a valid URL (check the brackets around an IPv6 host and the port)"
        ) from None
    if parts.scheme not in schemes:
        raise bad(f"must start with {' or '.join(s + '://' for s in sorted(schemes))}")
    if "@" in parts.netloc:
        raise bad("must not contain credentials (user:password@); keys go in their own variable")
    if "?" in url:
        raise bad("must not have a query (?...)")
    if "#" in url:
        raise bad("must not have a fragment (#...)")
    if not parts.hostname:
        raise bad("has no host")
    return parts


def check_backend_url(url: str, name: str = "BACKEND_URL") -> str:
    """The URL an API key is sent to (BACKEND_URL, OPENAI_BASE_URL): https://, or plain http://
    only to a literal loopback host. Returns it without a trailing slash."""
    example = "https://host[:port][/base] (plain http:// only to localhost, 127.x.x.x or [::1])"
    parts = _check_url_shape(url, name, _URL_SCHEMES, example)
    if parts.scheme == "http" and not is_loopback_host(parts.hostname or ""):
        raise ValueError(
            f"{name}: plain http:// is allowed only to a literal loopback host (localhost, "
            "127.0.0.0/8, [::1]): the key would cross the network in clear text; use https://"
        )
    return url.rstrip("/")


def check_livekit_url(url: str, name: str = "LIVEKIT_URL") -> str:
    """The LiveKit server URL: ws(s):// or http(s):// with a host (the library appends its own
    path and query, so it must have neither credentials nor a query)."""
    _check_url_shape(url, name, _LIVEKIT_SCHEMES, "wss://my-project.livekit.cloud")
    return url


def _padding_problem(value: str) -> str | None:
    """Empty, blank, or with whitespace around it. Refused, not stripped: a `.env` value pasted
    with its line break, or a secret manager that adds one, would otherwise reach the server as
    another key than the one configured (a 401 loop), and stripping would hide that the source
    holds it."""
    if not value.strip():
        return "is empty" if not value else "is empty (only whitespace or a line break)"
    if value != value.strip():
        return (
            "starts or ends with whitespace or a line break (a .env file or a secret manager "
            "often adds a trailing newline); remove the trailing newline/whitespace"
        )
    return None


def text_problem(value: str) -> str | None:
    """The rule for a setting's text (a key, a secret, a name, a model, a path): something, on
    one line, with nothing around it. Returns the problem and its fix, or None when it is
    good; never the value."""
    problem = _padding_problem(value)
    if problem is None and not value.isprintable():
        problem = (
            "contains a line break, tab or other control character; it must be one line of "
            "printable text"
        )
    return problem


def header_secret_problem(value: str) -> str | None:
    """A key sent in an HTTP header: the text rule, in printable ASCII. httpx refuses non-ASCII
    header values, a line break would be header injection, and HTTP strips surrounding
    whitespace, so the server would see another key than the one configured."""
    problem = _padding_problem(value)
    if problem is None and not (value.isascii() and value.isprintable()):
        problem = (
            "must be printable ASCII (no accented letters, line breaks or control "
            "characters); copy the key again"
        )
    return problem


def check_header_secret(value: str, name: str = "INTERNAL_SERVICE_KEY") -> str:
    """header_secret_problem, raised as ValueError("NAME: problem") for the clients."""
    problem = header_secret_problem(value)
    if problem is not None:
        raise ValueError(f"{name}: {problem}")
    return value
