"""The browser pages in web/: / (webcam filter), /overlay (OBS), /convert (upload)."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, HTTPException
from fastapi.responses import FileResponse

WEB_DIR = Path(__file__).resolve().parents[2] / "web"

router = APIRouter()


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
