"""HTTP error answers on the real app: what a client is told, and that it can act on it.

Uploads of another image or video format, requests FastAPI cannot validate, photos over
the pixel limit (decompression bombs), effects whose model is not installed, and effect
choices given as a bare name.
"""

from __future__ import annotations

import io
import wave
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest
from conftest import load_rgb, portrait_path
from convert_helpers import cut_clip
from fastapi.testclient import TestClient
from PIL import Image

from stream.app import create_app
from stream.settings import Settings

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("weights")  # no faceswap or style model in it


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory, weights: Path) -> Iterator[TestClient]:
    settings = Settings(
        data_dir=tmp_path_factory.mktemp("data"), weights_dir=weights, device="cpu", warm_up=False
    )
    with TestClient(create_app(settings)) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    return cut_clip(tmp_path_factory.mktemp("clip") / "clip.mp4", frames=5).read_bytes()


def _portrait(image_format: str, **options: Any) -> bytes:
    rgb = load_rgb(portrait_path("paul_rudd"), 320)
    data = io.BytesIO()
    Image.fromarray(rgb).save(data, format=image_format, **options)
    return data.getvalue()


def _video(container: str, codec: str) -> bytes:
    """Five real 64x64 frames in `container` (written by PyAV)."""
    data = io.BytesIO()
    with av.open(data, "w", format=container) as out:
        stream = out.add_stream(codec, rate=25)
        stream.width, stream.height, stream.pix_fmt = 64, 64, "yuv420p"
        for grey in range(0, 250, 50):
            frame = av.VideoFrame.from_ndarray(np.full((64, 64, 3), grey, np.uint8), "rgb24")
            out.mux(stream.encode(frame))
        out.mux(stream.encode())
    return data.getvalue()


def _wav() -> bytes:
    data = io.BytesIO()
    with wave.open(data, "wb") as sound:
        sound.setnchannels(1)
        sound.setsampwidth(2)
        sound.setframerate(8000)
        sound.writeframes(bytes(3200))
    return data.getvalue()


# --- uploads of formats the server does not take --------------------------------------------

CONVERT_PHOTO = "this server takes JPEG, PNG or WebP photos: convert it to one of these"
CONVERT_VIDEO = "this server takes MP4, MOV, WebM, MKV or AVI videos: convert it to one of these"

UPLOAD_CASES = [
    # route, file name, bytes, phrase the 415 must contain
    ("/faces", "p.gif", lambda: _portrait("GIF"), f"'p.gif' is a GIF image; {CONVERT_PHOTO}"),
    ("/faces", "p.bmp", lambda: _portrait("BMP"), f"'p.bmp' is a BMP image; {CONVERT_PHOTO}"),
    ("/faces", "p.tif", lambda: _portrait("TIFF"), f"'p.tif' is a TIFF image; {CONVERT_PHOTO}"),
    ("/faces", "v.wav", _wav, "'v.wav' is a WAV audio file, not an image file; upload the image"),
    ("/jobs", "v.ts", lambda: _video("mpegts", "mpeg2video"), f"an MPEG-TS video; {CONVERT_VIDEO}"),
    ("/jobs", "v.flv", lambda: _video("flv", "flv"), f"'v.flv' is an FLV video; {CONVERT_VIDEO}"),
    ("/jobs", "v.wmv", lambda: _video("asf", "wmv2"), f"a WMV/ASF video; {CONVERT_VIDEO}"),
    ("/jobs", "a.wav", _wav, "'a.wav' is a WAV audio file, not a video file; upload the video"),
    ("/jobs", "p.png", lambda: _portrait("PNG"), "'p.png' is a PNG file, not a video file"),
    ("/jobs", "p.gif", lambda: _portrait("GIF"), "'p.gif' is a GIF image, not a video file"),
]


@pytest.mark.parametrize(
    ("route", "name", "make", "phrase"), UPLOAD_CASES, ids=[c[1] + c[0] for c in UPLOAD_CASES]
)
def test_upload_of_another_format_says_what_it_is_and_what_to_do(
    client: TestClient, route: str, name: str, make: Callable[[], bytes], phrase: str
) -> None:
    fields = {"consent": "true"} if route == "/faces" else {"effect": "sketch"}
    response = client.post(
        route, files={"file": (name, make(), "application/octet-stream")}, data=fields
    )
    assert response.status_code == 415, response.text
    detail = response.json()["detail"]
    assert phrase in detail, detail
    assert "unrecognised" not in detail
