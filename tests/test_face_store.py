"""FaceStore: consent, one face per upload, a crop that keeps the face, persistence,
the size bound and thread safety (dlib's HOG detector, the store's default)."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import pytest
from conftest import SHARED_DATA, load_rgb, portrait_path

from engines.errors import NoFaceFound, TooManyFaces
from stream.face_store import ConsentRequired, FaceStore


@pytest.fixture(scope="module")
def paul() -> np.ndarray:
    return load_rgb(portrait_path("paul_rudd"), 800)


def test_add_keeps_a_face_crop_and_its_consent(tmp_path: Path, paul: np.ndarray) -> None:
    store = FaceStore(tmp_path)
    face_id = store.add(paul, consent=True)
    crop = store[face_id]
    assert crop.dtype == np.uint8 and crop.shape[2] == 3 and not crop.flags.writeable
    assert 0.3 < crop.shape[0] * crop.shape[1] / (paul.shape[0] * paul.shape[1]) <= 1.0
    note = json.loads((tmp_path / f"{face_id}.json").read_text())
    assert note["consent"] is True
    reopened = FaceStore(tmp_path)  # survives a restart
    assert face_id in reopened and np.array_equal(reopened[face_id], crop)
    assert reopened.remove(face_id) and face_id not in reopened
    assert not (tmp_path / f"{face_id}.png").exists()


@pytest.mark.parametrize(
    ("image", "consent", "error"),
    [
        ("paul", False, ConsentRequired),
        ("wall", True, NoFaceFound),
        ("group", True, TooManyFaces),
    ],
)
def test_add_refuses(
    tmp_path: Path, paul: np.ndarray, image: str, consent: bool, error: type[Exception]
) -> None:
    images = {
        "paul": paul,
        "wall": np.full((400, 400, 3), 120, np.uint8),
        "group": load_rgb(SHARED_DATA / "multiface.jpg"),
    }
    store = FaceStore(tmp_path)
    with pytest.raises(error):
        store.add(images[image], consent=consent)
    assert len(store) == 0 and not list(tmp_path.glob("*"))


@pytest.mark.parametrize("face_id", ["../../etc/passwd", "abc", "", "0" * 31, "G" * 32])
def test_bad_face_ids_are_unknown(tmp_path: Path, face_id: str) -> None:
    store = FaceStore(tmp_path)
    with pytest.raises(KeyError):
        store[face_id]
    assert face_id not in store


def test_store_is_bounded_and_thread_safe(tmp_path: Path, paul: np.ndarray) -> None:
    store = FaceStore(tmp_path, max_faces=3)
    ids: list[str] = []
    lock = threading.Lock()

    def upload() -> None:
        face_id = store.add(paul, consent=True)
        with lock:
            ids.append(face_id)

    threads = [threading.Thread(target=upload) for _ in range(5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(ids)) == 5
    assert len(store) == 3 and len(list(tmp_path.glob("*.png"))) == 3
    assert all(face_id in ids for face_id in store)
