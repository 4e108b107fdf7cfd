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
from security_helpers import real_offer_sdp

from engines.effects.registry import describe_effects
from stream.app import create_app
from stream.security.image_size import pixel_size
from stream.services import effect_resources
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


# --- requests FastAPI cannot validate: 422 with a sentence -----------------------------------

VALIDATION_CASES = [
    # method, path, request options, phrases the detail must contain
    (
        "POST",
        "/faces",
        {"data": {"consent": "true"}},
        ["the form field 'file' is missing: send the photo", "as multipart form field 'file'"],
    ),
    (
        "POST",
        "/faces",
        {"data": {"consent": "true", "file": "face.jpg"}},
        ["the form field 'file' must be a file, not text"],
    ),
    (
        "POST",
        "/similarity",
        {"files": {"image_a": ("a.jpg", b"\xff\xd8\xff", "image/jpeg")}},
        ["the form field 'image_b' is missing: send the second photo"],
    ),
    (
        "POST",
        "/offer",
        {"json": {}},
        ["the JSON field 'sdp' is missing: it holds the browser's SDP offer", "'type' is missing"],
    ),
    ("POST", "/offer", {"json": {"sdp": "v=0", "type": "answer"}}, ["'type' should be 'offer'"]),
    ("POST", "/offer", {"content": b"{sdp: v=0", "headers": {"content-type": "application/json"}},
     ["the body is not valid JSON"]),
    ("POST", "/offer", {"content": b"v=0\r\n", "headers": {"content-type": "application/sdp"}},
     ["the body is not a JSON object: send a JSON object with Content-Type: application/json"]),
    ("POST", "/offer", {"json": {"sdp": "v=0", "type": "offer", "effect": 5}},
     ["the JSON field 'effect' must be a JSON object"]),
    ("POST", "/offer", {"json": {"sdp": "v=0", "type": "offer", "effect": {"params": {}}}},
     ["the JSON field 'effect.name' is missing"]),
    ("PATCH", "/sessions/0123", {"json": {}}, ["the JSON field 'effect' is missing: it holds"]),
]  # fmt: skip


@pytest.mark.parametrize(
    ("method", "path", "options", "phrases"),
    VALIDATION_CASES,
    ids=[f"{c[0]} {c[1]} {i}" for i, c in enumerate(VALIDATION_CASES)],
)
def test_invalid_request_gets_a_sentence_naming_the_field(
    client: TestClient, method: str, path: str, options: dict[str, Any], phrases: list[str]
) -> None:
    response = client.request(method, path, **options)
    assert response.status_code == 422, response.text
    body = response.json()
    assert isinstance(body["detail"], str), body
    assert all(phrase in body["detail"] for phrase in phrases), body["detail"]
    assert body["errors"] and all({"loc", "msg", "type"} <= set(e) for e in body["errors"])


# --- photos over the pixel limit -------------------------------------------------------------


def _png_of(width: int, height: int) -> bytes:
    data = io.BytesIO()
    Image.new("1", (width, height)).save(data, format="PNG")  # one colour: a small file
    return data.getvalue()


def _jpeg_claiming(width: int, height: int) -> bytes:
    """A real JPEG whose frame header says width x height (a decompression bomb's header)."""
    data = bytearray(_portrait("JPEG", quality=80))
    frame = data.index(b"\xff\xc0\x00\x11")  # baseline SOF0, three components
    data[frame + 5 : frame + 9] = height.to_bytes(2, "big") + width.to_bytes(2, "big")
    return bytes(data)


def _webp_claiming(width: int, height: int) -> bytes:
    """A real lossless WebP whose VP8L header says width x height."""
    data = bytearray(_portrait("WEBP", lossless=True))
    assert data[12:16] == b"VP8L" and data[20] == 0x2F
    flags = int.from_bytes(data[21:25], "little") & ~((1 << 28) - 1)
    data[21:25] = (flags | (width - 1) | (height - 1) << 14).to_bytes(4, "little")
    return bytes(data)


@pytest.mark.parametrize(
    ("image_format", "options"),
    [
        ("JPEG", {}),
        ("JPEG", {"progressive": True}),
        ("JPEG", {"exif": Image.Exif()}),
        ("PNG", {}),
        ("WEBP", {}),
        ("WEBP", {"lossless": True}),
        ("WEBP", {"exif": Image.Exif()}),  # extended (VP8X) header
    ],
)
def test_header_size_is_the_size_pillow_decodes(image_format: str, options: dict[str, Any]) -> None:
    data = _portrait(image_format, **options)
    with Image.open(io.BytesIO(data)) as image:
        assert pixel_size(data) == image.size
    assert pixel_size(data[:20]) is None and pixel_size(b"GIF89a" + bytes(64)) is None


BOMBS = [
    ("/faces", "file", "big.png", lambda: _png_of(20000, 20000), "20000x20000"),
    ("/faces", "file", "big.jpg", lambda: _jpeg_claiming(20000, 20000), "20000x20000"),
    ("/faces", "file", "big.webp", lambda: _webp_claiming(16383, 16383), "16383x16383"),
    ("/similarity", "image_a", "big.png", lambda: _png_of(20000, 20000), "20000x20000"),
]


@pytest.mark.parametrize(
    ("route", "field", "name", "make", "size"), BOMBS, ids=[b[0] + "-" + b[2] for b in BOMBS]
)
def test_photo_over_the_pixel_limit_is_refused_with_its_size(
    client: TestClient, route: str, field: str, name: str, make: Callable[[], bytes], size: str
) -> None:
    files = {field: (name, make(), "application/octet-stream")}
    if route == "/similarity":
        files["image_b"] = ("b.jpg", _portrait("JPEG"), "image/jpeg")
    response = client.post(route, files=files, data={"consent": "true"})
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert f"{field}: the photo is {size} pixels, more than the limit of 40 megapixels" in detail
    assert "make it smaller" in detail and "bomb" not in detail


# --- effects whose model is not installed ----------------------------------------------------


def _check_remote_advice(text: str, weights: Path) -> None:
    assert "installed on this server" in text and "server's operator" in text, text
    assert "--model" not in text and str(weights) not in text and "/" not in text, text


def test_unavailable_effects_give_http_clients_advice_without_server_paths(
    client: TestClient, weights: Path, clip: bytes
) -> None:
    listed = {e["name"]: e for e in client.get("/effects").json()}
    for name in ("gan_swap", "neural_style"):
        assert listed[name]["available"] is False
        _check_remote_advice(listed[name]["reason"], weights)

    job = client.post(
        "/jobs", files={"file": ("clip.mp4", clip, "video/mp4")}, data={"effect": "gan_swap"}
    )
    assert job.status_code == 422, job.text
    _check_remote_advice(job.json()["detail"], weights)

    offer = {"sdp": real_offer_sdp(), "type": "offer", "effect": {"name": "neural_style"}}
    refused = client.post("/offer", json=offer)
    assert refused.status_code == 422, refused.text
    _check_remote_advice(refused.json()["detail"], weights)

    session = client.post("/offer", json={**offer, "effect": {"name": "none"}}).json()
    patched = client.patch(f"/sessions/{session['session_id']}", json={"effect": "gan_swap"})
    assert patched.status_code == 422, patched.text
    _check_remote_advice(patched.json()["detail"], weights)
    assert client.delete(f"/sessions/{session['session_id']}").status_code == 204


def test_a_broken_installed_model_is_reported_without_its_path(tmp_path: Path) -> None:
    broken = [tmp_path / "weights" / "faceswap" / "mine" / "model.pt"]
    broken.append(tmp_path / "weights" / "style" / "mine.pth")
    for path in broken:
        path.parent.mkdir(parents=True)
        path.write_bytes(b"\x00not a model" * 64)
    settings = Settings(
        data_dir=tmp_path / "data", weights_dir=tmp_path / "weights", device="cpu", warm_up=False
    )
    with TestClient(create_app(settings)) as client:
        for name in ("gan_swap", "neural_style"):
            offer = {"sdp": real_offer_sdp(), "type": "offer", "effect": name}
            refused = client.post("/offer", json=offer)
            assert refused.status_code == 422, refused.text
            detail = refused.json()["detail"]
            assert "cannot load the model installed on this server" in detail, detail
            assert "server's operator" in detail and "/" not in detail, detail


def test_the_command_line_keeps_its_own_advice(weights: Path) -> None:
    resources = effect_resources(Settings(weights_dir=weights), "cpu", {})
    reasons = {e["name"]: e["reason"] for e in describe_effects(resources)}
    for name in ("gan_swap", "neural_style"):
        assert "--model PATH" in reasons[name] and str(weights) in reasons[name]


# --- an effect given by its name alone -------------------------------------------------------


def test_offer_and_patch_take_a_bare_effect_name(client: TestClient) -> None:
    answer = client.post(
        "/offer", json={"sdp": real_offer_sdp(), "type": "offer", "effect": "blur"}
    )
    assert answer.status_code == 200, answer.text
    session_id = answer.json()["session_id"]
    assert client.get(f"/sessions/{session_id}").json()["effect"] == {"name": "blur", "params": {}}

    patched = client.patch(f"/sessions/{session_id}", json={"effect": "sketch"})
    assert patched.status_code == 200, patched.text
    assert patched.json()["effect"]["name"] == "sketch"
    unknown = client.patch(f"/sessions/{session_id}", json={"effect": "no-such"})
    assert unknown.status_code == 422 and "no-such" in unknown.json()["detail"]
    assert client.delete(f"/sessions/{session_id}").status_code == 204
