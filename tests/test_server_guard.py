"""The endpoint keeps web pages out: a foreign Host (DNS rebinding) is
refused on every path, a browser's cross-origin request on every path
that starts, stops or cancels a profile, and binding beyond loopback
without a token warns. Requests are sent raw, so every header is exactly
what a browser (or an attacker's page) would send."""

from __future__ import annotations

import json
import socket
import warnings
from collections.abc import Iterator

import pytest

import pysampler
from pysampler.errors import EndpointExposedWarning
from pysampler.server import ROUTES, Server, guard


@pytest.fixture
def server() -> Iterator[Server]:
    srv = pysampler.serve(0)
    try:
        yield srv
    finally:
        srv.close()


def request(server: Server, path: str, headers: dict[str, str]) -> tuple[int, dict[str, object]]:
    """(status, JSON body or {}) of a GET with exactly these headers."""
    head = f"GET {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    with socket.create_connection((server.host, server.port), timeout=30) as sock:
        sock.sendall(head.encode() + b"\r\n")
        data = sock.makefile("rb").read()
    status_line, _, rest = data.partition(b"\r\n")
    _, _, body = rest.partition(b"\r\n\r\n")
    status = int(status_line.split()[1])
    try:
        return status, json.loads(body)
    except ValueError:
        return status, {}


FOREIGN_HOSTS = [
    "evil.example",
    "evil.example:9119",
    "127.0.0.1.evil.example",
    "localhost.evil.example:80",
    "sub.localhost",
    "[::1].evil.example",
]


@pytest.mark.parametrize("host", FOREIGN_HOSTS)
@pytest.mark.parametrize("path", ["/profile/cpu/start", "/debug/pprof/", "/nope"])
def test_foreign_host_is_refused_on_every_path(server: Server, host: str, path: str) -> None:
    status, body = request(server, path, {"Host": host})
    assert status == 403
    assert "DNS rebinding" in str(body["error"])
    assert not pysampler.is_running()


@pytest.mark.parametrize(
    "host", ["127.0.0.1", "127.0.0.1:{port}", "localhost", "LOCALHOST:{port}", "[::1]:{port}"]
)
def test_ip_literal_and_localhost_hosts_are_served(server: Server, host: str) -> None:
    status, body = request(server, "/profile/cpu/start", {"Host": host.format(port=server.port)})
    assert status == 200, body
    assert request(server, "/profile/cancel", {"Host": "127.0.0.1"})[0] == 200


def test_no_host_header_is_served(server: Server) -> None:
    # HTTP/1.0 clients may send none; browsers always send one
    assert request(server, "/debug/pprof/", {})[0] == 200


def test_allowed_hosts_admit_a_name() -> None:
    with pysampler.serve(0, allowed_hosts=["Profiler.Internal."]) as srv:
        assert request(srv, "/debug/pprof/", {"Host": "profiler.internal:80"})[0] == 200
        assert request(srv, "/debug/pprof/", {"Host": "other.internal"})[0] == 403
    with pysampler.serve(0, allowed_hosts=["*"]) as srv:
        assert request(srv, "/debug/pprof/", {"Host": "anything.example"})[0] == 200


CROSS_SITE = [
    {"Sec-Fetch-Site": "cross-site"},
    {"Sec-Fetch-Site": "same-site"},  # another port of localhost
    {"Origin": "http://evil.example"},
    {"Origin": "null"},
    {"Origin": "http://127.0.0.1:1"},
    {"Referer": "http://evil.example/page.html"},
    # an <img> tag in a current browser
    {"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "no-cors", "Sec-Fetch-Dest": "image"},
]
STATEFUL = sorted(path for path, route in ROUTES.items() if route.changes_state)


@pytest.mark.parametrize(
    "headers", CROSS_SITE, ids=lambda h: ",".join(f"{k}={v}" for k, v in h.items())
)
@pytest.mark.parametrize("path", STATEFUL)
def test_cross_origin_browser_request_cannot_change_state(
    server: Server, headers: dict[str, str], path: str
) -> None:
    status, body = request(server, path + "?duration=1&seconds=1", {"Host": "127.0.0.1", **headers})
    assert status == 403, (path, body)
    assert "another site" in str(body["error"])
    assert not pysampler.is_running()
    assert not pysampler.heap.is_running()


def test_every_route_but_the_index_is_guarded() -> None:
    assert {p for p, r in ROUTES.items() if not r.changes_state} == {
        "/debug/pprof/",
        "/debug/pprof",
    }


def test_same_origin_and_typed_urls_are_served(server: Server) -> None:
    own = f"127.0.0.1:{server.port}"
    for headers in (
        {"Sec-Fetch-Site": "none"},  # typed in the address bar
        {"Sec-Fetch-Site": "same-origin", "Referer": f"http://{own}/debug/pprof/"},
        {"Origin": f"http://{own}"},
    ):
        status, body = request(server, "/profile/cpu/start", {"Host": own, **headers})
        assert status == 200, (headers, body)
        assert request(server, "/profile/cancel", {"Host": own, **headers})[0] == 200
    # the index, which changes nothing, is served to any page
    assert request(server, "/debug/pprof/", {"Host": own, "Sec-Fetch-Site": "cross-site"})[0] == 200


@pytest.mark.parametrize("host", ["evil.example:9119", "prod-host:9119"])
def test_with_a_token_any_host_name_is_served_but_only_with_the_token(host: str) -> None:
    # a rebinding page cannot present the token; a remote client names the host
    with pysampler.serve(0, token="s3cret") as srv:
        assert request(srv, "/debug/pprof/", {"Host": host})[0] == 401
        status, _ = request(srv, "/debug/pprof/", {"Host": host, "Authorization": "Bearer s3cret"})
        assert status == 200


def test_binding_beyond_loopback_without_token_warns() -> None:
    with pytest.warns(EndpointExposedWarning, match="without a token"):
        srv = pysampler.serve(0, host="0.0.0.0")
    srv.close()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pysampler.serve(0, host="0.0.0.0", token="s3cret").close()
        pysampler.serve(0, host="127.0.0.1").close()
        pysampler.serve(0, host="localhost").close()


@pytest.mark.parametrize(
    ("address", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.1.2.3", True),
        ("::1", True),
        ("::ffff:127.0.0.1", True),
        ("localhost", True),
        ("0.0.0.0", False),
        ("::", False),
        ("10.0.0.1", False),
    ],
)
def test_loopback_addresses(address: str, loopback: bool) -> None:
    assert guard.is_loopback(address) is loopback
