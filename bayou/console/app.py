"""The console's routes, mounted by ``bayou.app`` on the HTTP door."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.routing import BaseRoute, Mount
from starlette.staticfiles import StaticFiles

from bayou.console import dashboards, groups, login, messages, overview, topics, views
from bayou.core import Core
from bayou.gateways.http.sessions import Sessions

PREFIX = "/console"


class Console:
    """The console over one broker's core (see the package docstring)."""

    def __init__(self, core: Core, sessions: Sessions | None = None) -> None:
        self.core = core
        self.sessions = sessions  # the HTTP door's: a login page instead of Basic

    def routes(self) -> list[BaseRoute]:
        router = APIRouter(prefix=PREFIX, include_in_schema=False)
        core = self.core
        overview.add_routes(router, core)
        topics.add_routes(router, core)
        messages.add_routes(router, core)
        groups.add_routes(router, core)
        dashboards.add_routes(router, core)
        views.add_routes(router, core)
        if self.sessions is not None:
            login_page = f"{PREFIX}/login"
            self.sessions.protect(PREFIX, login_page, (login_page, f"{PREFIX}/static/"))
            login.add_routes(router, core, self.sessions, PREFIX)
        static = StaticFiles(packages=[("bayou.console", "static")])
        return [*router.routes, Mount(f"{PREFIX}/static", app=static, name="console-static")]
