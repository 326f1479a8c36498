"""The console's login page, used instead of the browser's Basic prompt when security is on
(``bayou/gateways/http/sessions.py`` holds the cookie's design).

``GET /console/login`` shows the form (a browser without a login is sent here by the HTTP
door, with ``next`` the page it asked for); ``POST`` checks the password as every door does
— a wrong one waits the growing delay and is explained beside the form (401) — and sets the
session cookie, then goes back to ``next`` (a console path only: never another site).
``POST /console/logout`` ends the session (its cookie is refused from then on, even if
kept) and shows the form again.  Basic and Bearer logins keep working beside it, for
scripts.
"""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request
from starlette.responses import RedirectResponse, Response

from bayou.console.web import DOOR, form, render
from bayou.core import Core
from bayou.gateways.http.sessions import COOKIE, SESSION_S, Sessions


def safe_next(target: str, home: str) -> str:
    """Where to go after the login: a console path, else the console's home."""
    if target.startswith(home) and not target.startswith("//") and "\\" not in target:
        return target
    return home


def add_routes(router: APIRouter, core: Core, sessions: Sessions, home: str) -> None:
    @router.get("/login")
    async def login_page(request: Request) -> Response:
        if not core.security.enabled:
            return RedirectResponse(home, status_code=303)
        target = safe_next(request.query_params.get("next", home), home)
        return render(request, "login.html", {"page": "login", "next": target, "error": ""})

    @router.post("/login")
    async def log_in(request: Request) -> Response:
        if not core.security.enabled:  # nothing to log in to
            return RedirectResponse(home, status_code=303)
        values = await form(request)
        target = safe_next(values.get("next", home), home)
        user = values.get("user", "")
        host = request.client.host if request.client else "?"
        login = core.security.password_login(
            DOOR, host, user, values.get("password", "").encode(), "console"
        )
        if login.principal is None:
            await asyncio.sleep(login.delay_s)
            context = {"page": "login", "next": target, "error": "Wrong user or password."}
            return render(request, "login.html", {**context, "typed": user}, 401)
        response = RedirectResponse(target, status_code=303)
        response.set_cookie(
            COOKIE,
            sessions.issue(user),
            max_age=SESSION_S,
            path=home,
            secure=request.url.scheme == "https",
            httponly=True,
            samesite="strict",
        )
        return response

    @router.post("/logout")
    async def log_out(request: Request) -> Response:
        cookie = request.cookies.get(COOKIE)
        if cookie:
            sessions.revoke(cookie)
        response = RedirectResponse(f"{home}/login", status_code=303)
        response.delete_cookie(COOKIE, path=home, httponly=True, samesite="strict")
        return response
