"""The web page at / and its assets under /static (static/: index.html, app.js, style.css)."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

STATIC_DIR = Path(__file__).parent / "static"
# Content-Security-Policy of the page: scripts and styles from this server only, so even a review that slipped
# into the DOM as HTML could not run a script (the page also renders every string with textContent).
PAGE_CSP = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; frame-ancestors 'none'"
PAGE_HEADERS = {"Content-Security-Policy": PAGE_CSP, "X-Content-Type-Options": "nosniff"}


async def page() -> FileResponse:
    """The page: type a review, see its label, confidence and word highlights."""
    return FileResponse(STATIC_DIR / "index.html", headers=PAGE_HEADERS)


def add_page(app: FastAPI) -> None:
    """Serve the page at / (outside the API schema) and its assets under /static."""
    app.add_api_route("/", page, methods=["GET"], include_in_schema=False)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
