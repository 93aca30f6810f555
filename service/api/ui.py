"""The web UI: its page at ``/`` and its files under ``/ui/``, shipped inside the package.

The page and its scripts hold no data and are public; everything they show comes from the REST
API, which they call with the token the user gives (``Authorization: Bearer``) and the tenant
(``X-Scope-OrgID``), so the UI sees exactly what that token may.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse
from starlette.staticfiles import StaticFiles

__all__ = ["STATIC", "files", "router"]

STATIC = Path(__file__).resolve().parent.parent / "ui" / "static"

router = APIRouter()


@router.get("/", include_in_schema=False)
def index() -> FileResponse:
    """The UI's page (a browser pointed at the server, the first thing a new user tries)."""
    return FileResponse(STATIC / "index.html", media_type="text/html", headers={"Cache-Control": "no-cache"})


def files() -> StaticFiles:
    """The UI's scripts, styles and vendored libraries, for ``/ui``."""
    return StaticFiles(directory=STATIC)
