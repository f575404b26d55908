"""Who may talk to the endpoint: checks on a request's headers that keep web
pages out. Pure functions of the headers, so every transport (this server,
a process group's) applies the same rules. docs/http-endpoint.md
("Security") describes them for users.

A loopback endpoint without a token is reachable by every web page the
developer opens, in two ways:

- **DNS rebinding** reads profiles: a page on ``evil.example`` re-points its
  own name at 127.0.0.1, and its scripts, which the browser lets read
  answers from their own origin, fetch ``http://evil.example:9119/...``.
  The request says ``Host: evil.example:9119``. So a request whose Host is
  not an IP literal, ``localhost`` or a name the user allowed is refused,
  as Node's inspector does since CVE-2018-7160. An endpoint with a token
  skips this check: the page cannot present the token, and a service
  reached over the network (``pysampler top http://prod-host:9119``) is
  addressed by its host name.
- **Cross-site requests** start, stop or cancel profiles: an ``<img>`` or a
  form pointing at ``http://127.0.0.1:9119/profile/cpu/start`` needs no
  answer to do harm. Browsers label such requests: ``Sec-Fetch-Site``
  (Chrome 76, Firefox 90, Safari 16.4 and later, on every request),
  ``Origin`` (scripts' requests, and any non-GET) and, unless the page
  turns it off, ``Referer``. Any of them naming another origin gets the
  request refused on routes that change the profiler's state. A browser
  too old for ``Sec-Fetch-Site`` on a page that suppresses ``Referer`` can
  still trigger one; a token closes that gap. The routes stay GET: Go's
  ``go tool pprof`` and scrapers only GET.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import Protocol
from urllib.parse import urlsplit

#: Sec-Fetch-Site values of requests not made by another site's page:
#: the endpoint's own pages, and the user typing or bookmarking a URL
_OWN_FETCHES = ("same-origin", "none")


def host_name(host: str) -> str:
    """The name or address in a Host header value, without the port or the
    brackets of an IPv6 literal; lower case, without a trailing dot."""
    host = host.strip().lower()
    if host.startswith("["):
        inside, _, after = host[1:].partition("]")
        # "[v6]" or "[v6]:port"; anything else is no address at all
        return inside if after == "" or (after[:1] == ":" and after[1:].isdigit()) else host
    if host.count(":") == 1:
        host = host.partition(":")[0]
    return host.rstrip(".")


def is_ip_literal(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def allowed_names(names: Iterable[str]) -> frozenset[str]:
    """Normalise host names given by the user (``PYSAMPLER_ALLOWED_HOSTS``,
    ``serve(allowed_hosts=...)``); ``*`` allows any Host."""
    return frozenset(host_name(n) if n.strip() != "*" else "*" for n in names if n.strip())


def host_refusal(host: str | None, allowed: frozenset[str]) -> str | None:
    """Why a request with this Host header is refused, or None.

    Allowed: no Host at all (HTTP/1.0 clients; every browser sends one),
    an IP literal, ``localhost``, and the names in ``allowed``.
    """
    if host is None or "*" in allowed:
        return None
    name = host_name(host)
    if is_ip_literal(name) or name == "localhost" or name in allowed:
        return None
    return (
        f"Host {host[:100]!r} is not an IP address or localhost; requests for other "
        "names are refused (DNS rebinding). Allow a name with serve(allowed_hosts=...) "
        "or PYSAMPLER_ALLOWED_HOSTS"
    )


class Headers(Protocol):
    """A request's headers, looked up by name in any case
    (``http.client.HTTPMessage`` is one)."""

    def get(self, name: str) -> str | None: ...


def _origin(url: str) -> tuple[str, str]:
    parts = urlsplit(url.strip())
    return parts.scheme.lower(), parts.netloc.lower()


def cross_origin_refusal(headers: Headers, host: str | None) -> str | None:
    """Why a browser's request from another origin is refused, or None.

    ``host`` is the request's Host header. Requests made outside a browser
    (curl, go tool pprof, scrapers) carry none of the headers looked at
    and pass.
    """
    site = headers.get("Sec-Fetch-Site")
    if site is not None and site.strip().lower() not in _OWN_FETCHES:
        return f"Sec-Fetch-Site: {site.strip()[:40]}"
    ours = ("http", (host or "").strip().lower())
    for header in ("Origin", "Referer"):
        value = headers.get(header)
        if value is not None and (host is None or _origin(value) != ours):
            return f"{header}: {value.strip()[:100]}"
    return None


def is_loopback(address: str) -> bool:
    """Whether a bound address (an IP literal) only accepts local peers."""
    name = host_name(address)
    if name == "localhost":
        return True
    try:
        ip = ipaddress.ip_address(name)
    except ValueError:
        return False
    mapped = getattr(ip, "ipv4_mapped", None)
    return bool(ip.is_loopback or (mapped is not None and mapped.is_loopback))
