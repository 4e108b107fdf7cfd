"""Security limits with clear answers: auth, CORS, body size, SDP, effects, uploads, capacity."""

from __future__ import annotations

import re
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError
from security_helpers import real_offer_sdp
from server_helpers import running_server

from stream.app import create_app
from stream.sdp_check import InvalidSDP, check_offer_sdp
from stream.security import (
    EmptyUpload,
    UnsupportedMediaType,
    auth_required,
    check_signature,
    is_loopback,
)
from stream.settings import Settings

pytestmark = pytest.mark.timeout(120)

TOKEN = "test-token-0123456789abcdef"
ORIGIN = "https://studio.example"


@pytest.fixture
def client_for(tmp_path: Path) -> Iterator[Any]:
    """client_for(**settings) -> a TestClient on a started app with those settings."""
    clients: list[TestClient] = []

    def make(**overrides: Any) -> TestClient:
        client = TestClient(create_app(Settings(data_dir=tmp_path, **overrides)))
        client.__enter__()
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.__exit__(None, None, None)


def offer_body(sdp: str | None = None, effect: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"sdp": sdp or real_offer_sdp(), "type": "offer", "effect": effect or {"name": "none"}}


# --- authentication -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("127.0.0.1", True),
        ("127.0.0.5", True),
        ("::1", True),
        ("localhost", True),
        ("0.0.0.0", False),
        ("192.168.1.20", False),
        ("::", False),
        ("example.com", False),
    ],
)
def test_is_loopback(host: str, expected: bool) -> None:
    assert is_loopback(host) is expected


@pytest.mark.parametrize(
    ("host", "require", "expected"),
    [
        ("127.0.0.1", None, False),
        ("0.0.0.0", None, True),
        ("127.0.0.1", True, True),
        ("0.0.0.0", False, False),
    ],
)
def test_auth_required_by_default_off_loopback(
    host: str, require: bool | None, expected: bool
) -> None:
    settings = Settings(host=host, require_auth=require, api_tokens=[TOKEN])
    assert auth_required(settings) is expected


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"host": "0.0.0.0"}, "requires Bearer tokens"),
        ({"api_tokens": ["short"]}, "at least 16"),
        ({"api_tokens": ["has a space in the token"]}, "without spaces"),
        ({"c2pa_cert": Path("/nonexistent.pem")}, "c2pa_cert and c2pa_key"),
    ],
)
def test_insecure_settings_fail_fast(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        Settings(**overrides)


@pytest.mark.parametrize(
    ("method", "path", "json"),
    [
        ("POST", "/offer", {"sdp": "v=0", "type": "offer"}),
        ("POST", "/faces", None),
        ("POST", "/jobs", None),
        ("POST", "/whip", None),
        ("DELETE", "/sessions/abc", None),
        ("GET", "/jobs/abc", None),
    ],
)
@pytest.mark.parametrize(
    ("header", "status"),
    [
        (None, 401),
        ("Bearer wrong-token-0123456789", 401),
        (f"Basic {TOKEN}", 401),
        (f"Bearer {TOKEN}", None),
    ],
)
def test_protected_endpoints_need_a_bearer_token(
    client_for: Any, method: str, path: str, json: Any, header: str | None, status: int | None
) -> None:
    client = client_for(host="0.0.0.0", api_tokens=[TOKEN])
    headers = {"Authorization": header} if header else {}
    response = client.request(method, path, json=json, headers=headers)
    if status == 401:
        assert response.status_code == 401, response.text
        assert response.headers["www-authenticate"].startswith("Bearer")
        assert "token" in response.json()["detail"]
    else:  # past the guard: whatever the route says, it is not an auth failure
        assert response.status_code != 401
    assert client.get("/healthz").status_code == 200  # unprotected


def test_no_token_needed_on_loopback(client_for: Any) -> None:
    client = client_for()
    response = client.post("/offer", json={"sdp": "v=0", "type": "offer"})
    assert response.status_code == 400


# --- CORS -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("origin", "allowed"), [(ORIGIN, True), ("https://evil.example", False)])
def test_cors_allow_list(client_for: Any, origin: str, allowed: bool) -> None:
    client = client_for(host="0.0.0.0", api_tokens=[TOKEN], cors_origins=[ORIGIN])
    preflight = client.options(
        "/offer",
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type",
        },
    )
    refused = client.post("/offer", json={}, headers={"Origin": origin})
    assert refused.status_code == 401
    if allowed:
        assert preflight.status_code == 200
        assert preflight.headers["access-control-allow-origin"] == origin
        assert refused.headers["access-control-allow-origin"] == origin
    else:
        assert preflight.status_code == 400
        assert preflight.headers["content-type"] == "application/json"
        assert "https://evil.example" in preflight.json()["detail"]
        assert "FACESTREAM_CORS_ORIGINS" in preflight.json()["detail"]
        assert "access-control-allow-origin" not in refused.headers


def test_cors_preflight_for_a_method_not_allowed_is_json(client_for: Any) -> None:
    client = client_for(host="0.0.0.0", api_tokens=[TOKEN], cors_origins=[ORIGIN])
    preflight = client.options(
        "/offer", headers={"Origin": ORIGIN, "Access-Control-Request-Method": "PUT"}
    )
    assert preflight.status_code == 400
    assert preflight.json()["detail"] == "CORS preflight refused: method not allowed (method PUT)"


def test_no_cors_headers_without_allow_list(client_for: Any) -> None:
    response = client_for().get("/healthz", headers={"Origin": ORIGIN})
    assert "access-control-allow-origin" not in response.headers


# --- body size ------------------------------------------------------------------------------


def test_offer_above_64_kib_is_413(client_for: Any) -> None:
    client = client_for()
    big = offer_body(sdp=real_offer_sdp() + "a=x-pad:" + "x" * 70_000 + "\r\n")
    assert client.post("/offer", json=big).status_code == 413

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it streams
        yield b'{"sdp": "'
        for _ in range(100):
            yield b"x" * 1024
        yield b'", "type": "offer"}'

    response = client.post("/offer", content=chunks(), headers={"Content-Type": "application/json"})
    assert response.status_code == 413
    assert "64 KiB" in response.json()["detail"]
    assert client.post("/offer", json=offer_body()).status_code == 200


def _raw_request(url: str, head: str, timeout: float = 30.0) -> tuple[float, bytes]:
    host, port = url.removeprefix("http://").split(":")
    started = time.monotonic()
    with socket.create_connection((host, int(port)), timeout=timeout) as sock:
        sock.sendall(head.encode())
        answer = sock.recv(4096)
    return time.monotonic() - started, answer


@pytest.mark.parametrize(
    ("path", "content_type"),
    [
        ("/offer", "application/json"),
        ("/faces", "multipart/form-data; boundary=x"),
        ("/jobs", "multipart/form-data; boundary=x"),
    ],
)
def test_oversized_upload_is_refused_before_the_body_is_sent(
    tmp_path: Path, path: str, content_type: str
) -> None:
    """A real server answers 413 to the headers alone: not one body byte is sent."""
    # No warm-up: loading the face models right after start would slow this first answer.
    with running_server(Settings(data_dir=tmp_path, warm_up=False)) as server:
        head = (
            f"POST {path} HTTP/1.1\r\nHost: test\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {8 << 30}\r\n\r\n"
        )
        elapsed, answer = _raw_request(server.url, head)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    # A server waiting for the body never answers (the read times out after 30 s).
    assert elapsed < 5.0, elapsed


def test_bad_content_length_is_400(tmp_path: Path) -> None:
    with running_server(Settings(data_dir=tmp_path)) as server:
        head = "POST /offer HTTP/1.1\r\nHost: test\r\nContent-Length: -5\r\n\r\n"
        _, answer = _raw_request(server.url, head)
    assert answer.startswith(b"HTTP/1.1 400")


# --- offers: SDP, effects, capacity -----------------------------------------------------------


def _drop(prefix: str) -> Any:
    return lambda sdp: "\r\n".join(
        line for line in sdp.split("\r\n") if not line.startswith(prefix)
    )


def _sub(pattern: str, replacement: str) -> Any:
    return lambda sdp: re.sub(pattern, replacement, sdp, count=1, flags=re.MULTILINE)


_CANDIDATES = "a=candidate:1 1 udp 1 10.0.0.1 9 typ host\r\n" * 70
_PADDING = ("a=x-pad:" + "y" * 1000 + "\r\n") * 70

# (name, mutation of a real offer, reason in the message, HTTP status with default settings)
_SDP_CASES = [
    ("not an sdp", lambda sdp: "hello", "v=0", 400),
    ("no version", _sub(r"^v=0\r\n", ""), "v=0", 400),
    ("no origin", _drop("o="), "o= line", 400),
    ("no session name", _drop("s="), "s= line", 400),
    ("no timing", _drop("t="), "t= line", 400),
    ("no video", _sub(r"^m=video", "m=audio"), "no video section", 400),
    ("no fingerprint", _drop("a=fingerprint"), "fingerprint", 400),
    ("bad fingerprint", _sub(r"sha-256 ", "sha-256 ZZ"), "fingerprint", 400),
    ("no ice ufrag", _drop("a=ice-ufrag"), "ice-ufrag", 400),
    ("no ice pwd", _drop("a=ice-pwd"), "ice-pwd", 400),
    ("short ice pwd", _sub(r"^a=ice-pwd:", "a=ice-pwd:x\r\na=x-old-pwd:"), "ice-pwd", 400),
    ("NUL byte", _sub(r"^s=-", "s=-\x00"), "control characters", 400),
    ("long line", _sub(r"^s=-", "s=" + "x" * 5000), "limit is 2048", 400),
    ("bad line", _sub(r"^s=-", "s=-\r\nnot a line"), "<letter>=<value>", 400),
    ("bad media line", _sub(r"^m=video ", "m=video x"), "media line", 400),
    ("huge port", _sub(r"^m=video \d+", "m=video 99999"), "media line", 400),
    ("no rtcp-mux", _drop("a=rtcp-mux"), "rtcp-mux", 400),
    ("unknown codecs", lambda sdp: re.sub(r"(VP8|H264)/90000", "XYZ/90000", sdp), "codec", 400),
    ("payload type", _sub(r"SAVPF \d+", "SAVPF 999"), "parsed", 400),
    ("bad setup", _sub(r"a=setup:actpass", "a=setup:sideways"), "setup", 400),
    ("many candidates", _sub(r"^a=end-of-candidates", _CANDIDATES), "candidates", 400),
    ("too big", lambda sdp: sdp + _PADDING, "bytes", 413),
]


@pytest.mark.parametrize(
    ("name", "mutate", "reason", "status"), _SDP_CASES, ids=[case[0] for case in _SDP_CASES]
)
def test_sdp_validation_names_the_reason(
    client_for: Any, name: str, mutate: Any, reason: str, status: int
) -> None:
    sdp = mutate(real_offer_sdp())
    with pytest.raises(InvalidSDP, match=re.escape(reason)):
        check_offer_sdp(sdp)
    response = client_for().post("/offer", json=offer_body(sdp=sdp))
    assert response.status_code == status, (name, response.text)
    if status == 400:
        assert reason.split()[-1].lower() in response.json()["detail"].lower()


@pytest.mark.parametrize("data_channel", [False, True])
def test_real_offers_pass_validation(data_channel: bool) -> None:
    check_offer_sdp(real_offer_sdp(data_channel))


@pytest.mark.parametrize(
    ("body", "status", "fragment"),
    [
        (offer_body(effect={"name": "no-such-effect"}), 422, "no-such-effect"),
        (offer_body(effect={"name": "cartoon", "params": {"levels": "many"}}), 422, "levels"),
        (offer_body(effect={"name": "cartoon", "params": {"levels": 10**9}}), 422, "levels"),
        (
            offer_body(effect={"name": "cartoon", "params": {"colour_me": 1}}),
            422,
            "unknown parameter",
        ),
        ({"sdp": "v=0", "type": "answer"}, 422, "offer"),
        ({"type": "offer"}, 422, "sdp"),
    ],
)
def test_bad_effect_or_body_is_422(
    client_for: Any, body: dict[str, Any], status: int, fragment: str
) -> None:
    response = client_for().post("/offer", json=body)
    assert response.status_code == status, response.text
    assert fragment in str(response.json()["detail"])


@pytest.mark.parametrize(("total", "per_client"), [(2, 8), (8, 2)])
def test_session_caps_answer_429_with_retry_after(
    client_for: Any, total: int, per_client: int
) -> None:
    client = client_for(max_sessions=total, max_sessions_per_client=per_client)
    cap = min(total, per_client)
    ids = []
    for _ in range(cap):
        response = client.post("/offer", json=offer_body())
        assert response.status_code == 200, response.text
        ids.append(response.json()["session_id"])
    refused = client.post("/offer", json=offer_body())
    assert refused.status_code == 429
    assert int(refused.headers["retry-after"]) > 0
    assert "limit" in refused.json()["detail"]
    assert client.delete(f"/sessions/{ids[0]}").status_code == 204
    assert client.post("/offer", json=offer_body()).status_code == 200


def test_behind_a_local_proxy_each_client_has_its_own_session_limit(tmp_path: Path) -> None:
    """A reverse proxy on the same machine (the README's TLS set-up) connects from
    127.0.0.1 for everyone: the per-client limit counts the address the proxy forwards
    (X-Forwarded-For, trusted from FORWARDED_ALLOW_IPS, default the loopback addresses),
    so one user's sessions do not use up everybody's."""
    import httpx

    settings = Settings(data_dir=tmp_path, max_sessions_per_client=1)
    with running_server(settings) as running, httpx.Client(base_url=running.url) as http:

        def offer(client: str) -> httpx.Response:
            headers = {"X-Forwarded-For": client}
            return http.post("/offer", json=offer_body(), headers=headers, timeout=30)

        assert offer("203.0.113.5").status_code == 200
        assert offer("203.0.113.6").status_code == 200
        refused = offer("203.0.113.5")
        assert refused.status_code == 429 and "this client" in refused.json()["detail"]


# --- upload signatures ------------------------------------------------------------------------

_JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + bytes(64)
_PNG = b"\x89PNG\r\n\x1a\n" + bytes(64)
_WEBP = b"RIFF\x10\x00\x00\x00WEBPVP8 " + bytes(64)
_MP4 = b"\x00\x00\x00\x20ftypisom\x00\x00\x02\x00isomiso2avc1mp41" + bytes(64)
_MOV = b"\x00\x00\x00\x14ftypqt  \x00\x00\x00\x00qt  " + bytes(64)
_WEBM = b"\x1a\x45\xdf\xa3\x9f\x42\x86\x81\x01\x42\xf7\x81\x01\x42\x82\x84webm" + bytes(64)
_MKV = b"\x1a\x45\xdf\xa3\xa3\x42\x86\x81\x01\x42\x82\x88matroska" + bytes(64)
_AVI = b"RIFF\x10\x00\x00\x00AVI LIST" + bytes(64)
_HEIC = b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + bytes(64)


@pytest.mark.parametrize(
    ("head", "category", "content_type", "expected"),
    [
        (_JPEG, "image", "image/jpeg", "jpeg"),
        (_PNG, "image", None, "png"),
        (_WEBP, "image", "application/octet-stream", "webp"),
        (_MP4, "video", "video/mp4", "mp4"),
        (_MOV, "video", "video/quicktime", "mov"),
        (_WEBM, "video", "video/webm", "webm"),
        (_MKV, "video", "", "mkv"),
        (_AVI, "video", "video/x-msvideo", "avi"),
        (_MP4, "video", "video/webm", "mp4"),  # same category, the signature decides
        (b"", "video", "video/mp4", EmptyUpload),
        (b"hello, this is text\n" * 4, "video", "video/mp4", UnsupportedMediaType),
        (b"#EXTM3U\n#EXT-X-VERSION:3\nclip0.ts\n", "video", "video/mp4", UnsupportedMediaType),
        (_PNG, "video", "video/mp4", UnsupportedMediaType),
        (_MP4, "image", "image/jpeg", UnsupportedMediaType),
        (_HEIC, "video", None, UnsupportedMediaType),
        (_GIF := b"GIF89a" + bytes(64), "image", None, UnsupportedMediaType),
        (_JPEG, "image", "text/html", UnsupportedMediaType),
        (_MP4, "video", "application/vnd.apple.mpegurl", UnsupportedMediaType),
    ],
)
def test_upload_signature(
    head: bytes, category: Any, content_type: str | None, expected: Any
) -> None:
    if isinstance(expected, str):
        assert check_signature(head, category, content_type, "upload") == expected
    else:
        with pytest.raises(expected):
            check_signature(head, category, content_type, "upload")


def test_playlist_gets_a_specific_reason() -> None:
    with pytest.raises(UnsupportedMediaType, match="HLS playlist"):
        check_signature(
            b"#EXTM3U\n#EXTINF:10,\nhttp://example.com/a.ts\n", "video", None, "clip.mp4"
        )


WHIP_TOKEN = "obs-whip-token-0123456789"


@pytest.mark.parametrize(
    ("path", "token", "refused"),
    [
        ("/whip", WHIP_TOKEN, False),
        ("/whip", TOKEN, False),
        ("/offer", WHIP_TOKEN, True),
        ("/jobs", WHIP_TOKEN, True),
        ("/whip", "nope-nope-nope-nope", True),
    ],
)
def test_whip_token_opens_only_whip(client_for: Any, path: str, token: str, refused: bool) -> None:
    client = client_for(host="0.0.0.0", api_tokens=[TOKEN], whip_token=WHIP_TOKEN)
    response = client.post(path, content=b"v=0", headers={"Authorization": f"Bearer {token}"})
    assert (response.status_code == 401) is refused, response.text
