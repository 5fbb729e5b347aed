"""The operator's dashboard: its static pages under /ui/ and its login (see xsc.ui.core.session, docs/dashboard.md).

    POST /v1/ui/login-link    a one-time login link (API token only)
    GET  /ui/login?link=...   turns the link into a session cookie, then redirects to /ui/
    GET  /v1/ui/session       the node's id and the header the session's key goes in
    POST /v1/ui/logout        ends the session in this browser
    GET  /ui/, /ui/{file}     the pages: static files that read the user API with the session cookie

The pages hold no data of their own: every figure they show comes from the /v1/ user API."""

from __future__ import annotations

import functools
import hashlib
import html
import time
from importlib import resources

from aiohttp import web

from ...errors import Forbidden, Unauthorized
from ...ui.core.session import CSRF_HEADER, SESSION_SECONDS
from ..appkeys import IDENTITY, UI_SESSIONS
from ..auth import guarded
from .common import json_response

routes = web.RouteTableDef()

STATIC_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
                ".css": "text/css; charset=utf-8", ".svg": "image/svg+xml", ".png": "image/png"}
# Nothing but this node: no external requests, no framing, no inline script.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
                               "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}


@functools.cache
def static_files() -> dict[str, tuple[bytes, str, str]]:
    """The pages, read once: name -> (body, content type, etag)."""
    files = {}
    for item in resources.files("xsc.ui").joinpath("static").iterdir():
        suffix = "." + item.name.rsplit(".", 1)[-1]
        if item.is_file() and suffix in STATIC_TYPES:
            body = item.read_bytes()
            files[item.name] = (body, STATIC_TYPES[suffix], '"' + hashlib.sha256(body).hexdigest()[:16] + '"')
    return files


@routes.post("/v1/ui/login-link")
async def login_link(request: web.Request) -> web.Response:
    # An empty Authorization header is a session's way in (the middleware checked any other): it mints no sessions.
    if not request.headers.get("Authorization", "").strip():
        with guarded(request):  # counted as a wrong token is: a session's try at more is no free guess
            raise Forbidden("login links are given for the node's API token only", hint="run `xsc ui`")
    value, expires = request.app[UI_SESSIONS].link(time.time())
    path = f"/ui/login?link={value}"
    return json_response({"path": path, "url": f"{request.scheme}://{request.host}{path}", "expires": expires})


def _page(status: int, title: str, text: str) -> web.Response:
    body = (f"<!doctype html><html lang=en><meta charset=utf-8><meta name=viewport content='width=device-width'>"
            f"<title>{html.escape(title)}</title><link rel=stylesheet href='/ui/app.css'>"
            f"<main class=message><h1>{html.escape(title)}</h1><p>{html.escape(text)}</p></main></html>")
    return web.Response(status=status, text=body, content_type="text/html", headers=SECURITY_HEADERS)


@routes.get("/ui/login")
async def login(request: web.Request) -> web.Response:
    if request.method == "HEAD":  # a link preview or a checker: it must not use up the link
        return web.Response(status=200, content_type="text/html", headers=SECURITY_HEADERS)
    sessions, why = request.app[UI_SESSIONS], "It has expired, was used already, or is not from this node."
    try:
        with guarded(request):  # a link that does not work counts against its address, as a wrong token does
            if (session := sessions.login(request.query.get("link", ""), time.time())) is None:
                raise Unauthorized(f"this login link does not work: {why[0].lower()}{why[1:-1]}",
                                   hint="run `xsc ui --print-url` for a new one")
    except Unauthorized:
        if "text/html" not in request.headers.get("Accept", ""):  # a script: the API's problem body
            raise
        return _page(401, "This login link does not work",
                     f"{why} Run `xsc ui` (or `xsc ui --print-url`) for a new one.")
    # The session's key goes to the page in the fragment (never sent to a server): the page keeps it in its
    # origin's storage, which a service on another port of this host cannot read, though it gets the cookie.
    response = web.HTTPSeeOther(f"/ui/#key={sessions.csrf(session)}",
                                headers={**SECURITY_HEADERS, "Cache-Control": "no-store"})
    response.set_cookie(sessions.cookie, session, max_age=SESSION_SECONDS, path="/", httponly=True,
                        samesite="Strict", secure=request.secure)
    raise response


@routes.get("/v1/ui/session")
async def session_info(request: web.Request) -> web.Response:
    return json_response({"node": request.app[IDENTITY].id, "csrf_header": CSRF_HEADER},
                         headers={"Cache-Control": "no-store"})


@routes.post("/v1/ui/logout")
async def logout(request: web.Request) -> web.Response:
    response = json_response({"logged_out": True})
    response.del_cookie(request.app[UI_SESSIONS].cookie, path="/")
    return response


@routes.get("/")  # the node's URL opened in a browser: its dashboard, which says how to log in
@routes.get("/ui")
async def ui_root(request: web.Request) -> web.Response:
    raise web.HTTPFound("/ui/")


@routes.get("/ui/")
@routes.get("/ui/{name}")
async def static(request: web.Request) -> web.Response:
    name = request.match_info.get("name", "index.html")
    found = static_files().get(name)
    if found is None:
        raise web.HTTPNotFound()
    body, content_type, etag = found
    headers = {**SECURITY_HEADERS, "ETag": etag, "Cache-Control": "no-cache"}
    if request.headers.get("If-None-Match") == etag:
        return web.Response(status=304, headers=headers)
    return web.Response(body=body, headers={**headers, "Content-Type": content_type})
