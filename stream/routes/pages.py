"""The browser pages in web/: / (webcam filter), /overlay (OBS), /convert (upload)."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, HTTPException, Response
from fastapi.responses import FileResponse

WEB_DIR = Path(__file__).resolve().parents[2] / "web"

router = APIRouter()

# A small inline icon (a face on the page's dark background), so no page load logs a 404.
FAVICON_SVG = (
    '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 32 32">'
    '<rect width="32" height="32" rx="6" fill="#1c1c1c"/>'
    '<circle cx="16" cy="16" r="11" fill="#8cf"/>'
    '<circle cx="12" cy="13" r="1.8" fill="#1c1c1c"/><circle cx="20" cy="13" r="1.8" fill="#1c1c1c"/>'
    '<path d="M11 19q5 5 10 0" stroke="#1c1c1c" stroke-width="2" fill="none"/></svg>'
)


def _page(name: str) -> FileResponse:
    path = WEB_DIR / name
    if not path.is_file():
        raise HTTPException(404, detail=f"page {name} is not installed")
    return FileResponse(path, media_type="text/html", headers={"Cache-Control": "no-cache"})


@router.get("/", include_in_schema=False)
async def webcam_page() -> FileResponse:
    return _page("index.html")


@router.get("/overlay", include_in_schema=False)
async def overlay_page() -> FileResponse:
    return _page("overlay.html")


@router.get("/convert", include_in_schema=False)
async def convert_page() -> FileResponse:
    return _page("convert.html")


@router.get("/static/{name}", include_in_schema=False)
async def static_file(name: str) -> FileResponse:
    path = (WEB_DIR / name).resolve()
    if path.parent != WEB_DIR or not path.is_file() or path.suffix not in {".js", ".css"}:
        raise HTTPException(404, detail=f"no static file {name!r}")
    media = "text/javascript" if path.suffix == ".js" else "text/css"
    return FileResponse(path, media_type=media, headers={"Cache-Control": "no-cache"})


@router.get("/favicon.ico", include_in_schema=False)
@router.get("/favicon.svg", include_in_schema=False)
async def favicon() -> Response:
    return Response(
        FAVICON_SVG, media_type="image/svg+xml", headers={"Cache-Control": "max-age=86400"}
    )
