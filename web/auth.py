"""Access control: the token, the session cookie, the same-origin rule."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import os
import secrets
from collections.abc import Awaitable, Callable
from pathlib import Path

from aiohttp import web

from supervisor.config import WardenSettings
from web.keys import ACCESS, Access

COOKIE = "warden_session"
MIN_TOKEN = 16
_MUTATING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_PUBLIC = ("/", "/login", "/api/login", "/static/")


class AccessError(Exception):
    """Warden must not start with these settings (e.g. a public address without a token)."""


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_address(settings: WardenSettings) -> None:
    """Raise AccessError for an address other than loopback without a configured token."""
    server = settings.server
    if server.token is None and not is_loopback(server.host):
        raise AccessError(
            f"refusing to listen on {server.host} without a token: set WARDEN_SERVER__TOKEN (or server.host: 127.0.0.1)"
        )


def load_access(settings: WardenSettings) -> tuple[Access, bool]:
    """The token from settings, or the one kept in the data folder (made on first run).

    Returns the access and whether the token was just generated.
    """
    check_address(settings)
    server = settings.server
    generated = False
    if server.token is not None:
        token = server.token.get_secret_value()
    else:
        token, generated = _stored_token(settings.paths.data_dir / "token")
    session = hmac.new(token.encode(), b"warden-session", hashlib.sha256).hexdigest()
    return Access(token, session, server.base_path), generated


def _stored_token(path: Path) -> tuple[str, bool]:
    try:
        token = path.read_text().strip()
    except FileNotFoundError:
        token = ""
    if len(token) >= MIN_TOKEN:
        return token, False
    path.unlink(missing_ok=True)  # missing, empty or too short: never accept a guessable token
    path.parent.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(32)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as file:
        file.write(token + "\n")
    return token, True


def _same(given: str, expected: str) -> bool:
    """Constant-time comparison that also takes text that is not ASCII (compare_digest on str does not)."""
    return hmac.compare_digest(given.encode(), expected.encode())


def same_origin(request: web.Request) -> bool:
    """A browser's request from this server's own page (requests without Origin are not from a page)."""
    origin = request.headers.get("Origin")
    if origin is None:
        return request.headers.get("Sec-Fetch-Site", "same-origin") in ("same-origin", "none")
    return origin.split("://", 1)[-1] == request.host


def _bearer(request: web.Request) -> str | None:
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    return value.strip() if scheme.lower() == "bearer" else None


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def require_token(request: web.Request, handler: Handler) -> web.StreamResponse:
    access = request.app[ACCESS]
    path = request.path.removeprefix(access.base_path) or "/"
    if path in _PUBLIC or path.startswith("/static/"):
        return await handler(request)
    bearer = _bearer(request)
    if bearer is not None:
        if not _same(bearer, access.token):
            raise web.HTTPUnauthorized(text='{"error": "wrong token"}', content_type="application/json")
        return await handler(request)
    cookie = request.cookies.get(COOKIE)
    if cookie is None or not _same(cookie, access.session):
        raise web.HTTPUnauthorized(text='{"error": "a token is required"}', content_type="application/json")
    if request.method in _MUTATING and not same_origin(request):
        raise web.HTTPForbidden(text='{"error": "cross-origin request refused"}', content_type="application/json")
    return await handler(request)


def set_session(response: web.StreamResponse, access: Access) -> None:
    response.set_cookie(
        COOKIE, access.session, path=access.base_path or "/", httponly=True, samesite="Strict", max_age=30 * 86_400
    )


async def login_page(request: web.Request) -> web.StreamResponse:
    """GET /login?token=...: the link Warden prints; sets the session cookie and opens the page."""
    access = request.app[ACCESS]
    if not _same(request.query.get("token", ""), access.token):
        raise web.HTTPUnauthorized(text="wrong or missing token")
    response = web.HTTPFound(f"{access.base_path}/")
    set_session(response, access)
    raise response


async def login(request: web.Request) -> web.StreamResponse:
    access = request.app[ACCESS]
    try:
        token = (await request.json())["token"]
    except (ValueError, KeyError, TypeError, RecursionError, LookupError):
        raise web.HTTPBadRequest(text='{"error": "send {\\"token\\": ...}"}', content_type="application/json") from None
    if not isinstance(token, str) or not _same(token, access.token):
        raise web.HTTPUnauthorized(text='{"error": "wrong token"}', content_type="application/json")
    response = web.json_response({"ok": True})
    set_session(response, access)
    return response


async def logout(request: web.Request) -> web.StreamResponse:
    access = request.app[ACCESS]
    response = web.json_response({"ok": True})
    response.del_cookie(COOKIE, path=access.base_path or "/")
    return response
