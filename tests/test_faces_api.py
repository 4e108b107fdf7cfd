"""POST /faces, DELETE /faces/{id} and POST /similarity on the real app (real MTCNN, dlib)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import SHARED_DATA, load_rgb, portrait_path
from fastapi.testclient import TestClient
from synthetic import background

from stream.app import create_app
from stream.settings import Settings

MAX_IMAGE_BYTES = 400_000


def jpeg(rgb: np.ndarray, quality: int = 90) -> bytes:
    ok, data = cv2.imencode(
        ".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality]
    )
    assert ok
    return data.tobytes()


def side_by_side(left: np.ndarray, right: np.ndarray, height: int = 360) -> np.ndarray:
    def fit(image: np.ndarray) -> np.ndarray:
        return cv2.resize(image, (round(image.shape[1] * height / image.shape[0]), height))

    return np.ascontiguousarray(np.hstack([fit(left), fit(right)]))


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    data_dir = tmp_path_factory.mktemp("facestream-data")
    settings = Settings(data_dir=data_dir, device="cpu", max_image_bytes=MAX_IMAGE_BYTES)
    with TestClient(create_app(settings)) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def images() -> dict[str, bytes]:
    paul = load_rgb(portrait_path("paul_rudd"), 640)
    shea = load_rgb(portrait_path("shea_whigham"), 640)
    return {
        "paul": jpeg(paul),
        "paul_small_mirrored": jpeg(
            np.ascontiguousarray(cv2.resize(paul, None, fx=0.6, fy=0.6)[:, ::-1])
        ),
        "shea": jpeg(shea),
        "two_faces": jpeg(side_by_side(paul, shea)),
        "group": jpeg(load_rgb(SHARED_DATA / "multiface.jpg", 800)),
        "no_face": jpeg(background(640, 480)),
        "too_large": jpeg(
            np.random.default_rng(0).integers(0, 255, (1200, 1200, 3), dtype=np.uint8), 95
        ),
    }


def test_upload_face_returns_a_usable_face_id(client: TestClient, images: dict[str, bytes]) -> None:
    response = client.post(
        "/faces", files={"file": ("me.jpg", images["paul"], "image/jpeg")}, data={"consent": "true"}
    )
    assert response.status_code == 200, response.text
    face_id = response.json()["face_id"]
    stored = client.app.state.services.faces[face_id]  # type: ignore[attr-defined]
    assert stored.ndim == 3 and stored.dtype == np.uint8 and min(stored.shape[:2]) >= 200
    assert (Path(client.app.state.services.faces.directory) / f"{face_id}.png").is_file()  # type: ignore[attr-defined]

    assert client.delete(f"/faces/{face_id}").status_code == 204
    assert client.delete(f"/faces/{face_id}").status_code == 404
    assert face_id not in client.app.state.services.faces  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("image", "consent", "status", "detail"),
    [
        ("no_face", "true", 422, "no face"),
        ("two_faces", "true", 422, "2 faces"),
        ("group", "true", 422, "exactly one person"),
        ("paul", None, 422, "consent"),
        ("paul", "false", 422, "consent"),
        ("too_large", "true", 413, "limit"),
    ],
)
def test_upload_face_refusals(
    client: TestClient,
    images: dict[str, bytes],
    image: str,
    consent: str | None,
    status: int,
    detail: str,
) -> None:
    data = {} if consent is None else {"consent": consent}
    response = client.post(
        "/faces", files={"file": ("x.jpg", images[image], "image/jpeg")}, data=data
    )
    assert response.status_code == status, response.text
    assert detail in response.json()["detail"]


def test_upload_that_is_not_an_image_is_415(client: TestClient) -> None:
    response = client.post(
        "/faces",
        files={"file": ("face.jpg", b"just some text, not a photo\n" * 4, "image/jpeg")},
        data={"consent": "true"},
    )
    assert response.status_code == 415
    assert "text file" in response.json()["detail"]


@pytest.mark.parametrize(
    ("first", "second", "same"),
    [("paul", "paul_small_mirrored", True), ("paul", "shea", False)],
)
def test_similarity(
    client: TestClient, images: dict[str, bytes], first: str, second: str, same: bool
) -> None:
    response = client.post(
        "/similarity",
        files={
            "image_a": ("a.jpg", images[first], "image/jpeg"),
            "image_b": ("b.jpg", images[second], "image/jpeg"),
        },
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["threshold"] == pytest.approx(0.6)
    assert body["same_person"] is same
    assert (body["distance"] < 0.45) if same else (body["distance"] > 0.7)


def test_similarity_without_a_face_is_422(client: TestClient, images: dict[str, bytes]) -> None:
    response = client.post(
        "/similarity",
        files={
            "image_a": ("a.jpg", images["paul"], "image/jpeg"),
            "image_b": ("b.jpg", images["no_face"], "image/jpeg"),
        },
    )
    assert response.status_code == 422
    assert "image_b" in response.json()["detail"] and "no face" in response.json()["detail"]
