"""`facestream extract`: aligned faces from the real crowd video and the portraits."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from faceswap_helpers import PORTRAITS, VIDEO, extract_portrait_faces, extract_video_faces

from engines.alignment import template_points
from engines.faceswap_gan.dataset import FaceDataset, FaceRecord, read_manifest
from stream.cli import main as cli_main
from stream.extract import ExtractError, ExtractOptions, _select, extract_faces


@pytest.fixture(scope="module")
def video_extract(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("video_faces")
    extract_video_faces(out, frames=5, size=96)
    return out


def test_video_faces_are_aligned_and_listed(video_extract: Path) -> None:
    manifest = read_manifest(video_extract)
    assert manifest.size == 96 and len(manifest.faces) >= 10, (
        "the crowd video shows 6-8 faces per frame"
    )
    files = {
        p.relative_to(video_extract).as_posix() for p in (video_extract / "faces").glob("*.png")
    }
    assert files == {face.file for face in manifest.faces}
    template = template_points(96, manifest.padding)
    for face in manifest.faces:
        image = cv2.imread(str(video_extract / face.file))
        assert image is not None and image.shape == (96, 96, 3)
        assert face.source == VIDEO.name and 0 <= face.frame < 5 and face.track_id >= 0
        # Aligned by a similarity fit, so the five points sit close to the template.
        assert np.abs(np.asarray(face.landmarks) - template).max() < 96 * 0.12


def test_tracks_follow_people_across_frames(video_extract: Path) -> None:
    faces = read_manifest(video_extract).faces
    per_track: dict[int, set[int]] = {}
    for face in faces:
        per_track.setdefault(face.track_id, set()).add(face.frame)
        assert sum(1 for f in faces if f.track_id == face.track_id and f.frame == face.frame) == 1
    long_tracks = [track for track, frames in per_track.items() if len(frames) == 5]
    assert len(long_tracks) >= 4, f"tracks broke up: {per_track}"


def _track_areas(records: list[FaceRecord]) -> dict[int, float]:
    areas: dict[int, float] = {}
    for r in records:
        areas[r.track_id] = areas.get(r.track_id, 0.0) + (r.box[2] - r.box[0]) * (
            r.box[3] - r.box[1]
        )
    return areas


@pytest.mark.parametrize("selection", ["all", "largest", "smallest track id", "unknown track id"])
def test_person_selection(video_extract: Path, selection: str) -> None:
    records = list(read_manifest(video_extract).faces)
    areas = _track_areas(records)
    if selection in ("all", "largest"):
        kept = _select(records, ExtractOptions(keep=selection))  # type: ignore[arg-type]
        expected = set(areas) if selection == "all" else {max(areas, key=lambda t: areas[t])}
    else:
        wanted = min(areas) if selection == "smallest track id" else max(areas) + 100
        kept = _select(records, ExtractOptions(track_id=wanted))
        expected = {wanted} if wanted in areas else set()
    assert {r.track_id for r in kept} == expected
    assert all(r in kept for r in records if r.track_id in expected)


def test_portrait_folder_gives_one_face_per_image(tmp_path: Path) -> None:
    summary = extract_portrait_faces(tmp_path, size=64, keep="largest")
    manifest = read_manifest(tmp_path)
    assert summary.frames == 4 and len(manifest.faces) == 4
    assert sorted(Path(f.source).stem for f in manifest.faces) == sorted(
        p.stem for p in PORTRAITS.glob("*.jpg")
    )
    assert all(face.track_id == -1 for face in manifest.faces)
    dataset = FaceDataset(tmp_path, 64)
    assert tuple(dataset.images.shape) == (4, 3, 64, 64) and tuple(dataset.regions.shape) == (
        4,
        2,
        64,
        64,
    )


def test_existing_extract_needs_append(tmp_path: Path) -> None:
    extract_portrait_faces(tmp_path, size=64)
    with pytest.raises(ExtractError, match="--append"):
        extract_portrait_faces(tmp_path, size=64)
    with pytest.raises(ExtractError, match="same --size"):
        extract_portrait_faces(tmp_path, size=128, append=True)
    image = cv2.imread(str(next(PORTRAITS.glob("*.jpg"))))
    assert image is not None
    single = tmp_path / "single.png"
    cv2.imwrite(str(single), cv2.flip(image, 1))
    summary = extract_faces(single, tmp_path, ExtractOptions(size=64, append=True))
    assert summary.kept == 5 and len(read_manifest(tmp_path).faces) == 5


# argv (BROKEN, TEXT and OUT stand for files made in tmp_path), the one line's fragment,
# exit status: 2 for a bad input, as `convert` answers it (its messages), 1 for a failure
EXTRACT_ERRORS = [
    (["/nonexistent/video.mp4", "OUT"], "input /nonexistent/video.mp4 does not exist", 2),
    (
        [str(VIDEO), "OUT", "--track-id", "999", "--max-frames", "1", "--detect-max-side", "320"],
        "no face kept",
        1,
    ),
    (["BROKEN", "OUT"], "broken.mp4 is not a readable video: Invalid data found", 2),
    (["TEXT", "OUT"], "text.mp4 is not a readable video: Invalid data found", 2),
    (["BROKEN", "OUT", "--size", "8"], "--size must be >= 16", 2),
]


@pytest.mark.parametrize(("args", "message", "status"), EXTRACT_ERRORS)
def test_cli_errors_are_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str, status: int
) -> None:
    (tmp_path / "broken.mp4").write_bytes(b"not a video at all" * 100)
    (tmp_path / "text").mkdir()
    (tmp_path / "text" / "text.mp4").write_text("just some words, not a video\n" * 30)
    places = {
        "BROKEN": tmp_path / "broken.mp4",
        "TEXT": tmp_path / "text" / "text.mp4",
        "OUT": tmp_path / "out",
    }
    assert cli_main(["extract", *(str(places.get(a, a)) for a in args)]) == status
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("facestream: ") and message in err[-1], err
    assert "Errno" not in err[-1]


def test_cli_extract_keeps_the_largest_person(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "one_person"
    code = cli_main(
        [
            "extract",
            str(VIDEO),
            str(out),
            "--size",
            "64",
            "--max-frames",
            "3",
            "--detect-max-side",
            "640",
            "--min-face",
            "30",
            "--keep",
            "largest",
        ]
    )
    assert code == 0
    stdout = capsys.readouterr().out
    assert "faces per track id" in stdout
    manifest = json.loads((out / "manifest.json").read_text())
    assert len({face["track_id"] for face in manifest["faces"]}) == 1
    assert len(manifest["faces"]) == 3


def test_a_phone_video_is_extracted_upright(tmp_path: Path) -> None:
    """A clip recorded sideways with a 90-degree display matrix: the detector gets the
    faces as shown, so the saved faces are upright (from the coded pictures they were
    aligned on sideways landmarks, eyes one above the other: useless to train on)."""
    from convert_helpers import phone_clip

    portrait = cv2.cvtColor(cv2.imread(str(next(PORTRAITS.glob("*.jpg")))), cv2.COLOR_BGR2RGB)
    upright = cv2.resize(portrait, (240, 300), interpolation=cv2.INTER_AREA)
    clip = phone_clip(tmp_path / "phone.mp4", upright, 90, frames=3)
    summary = extract_faces(clip, tmp_path / "out", ExtractOptions(size=64))
    assert summary.kept == 3
    manifest = read_manifest(tmp_path / "out")
    eyes = np.array([face.landmarks[:2] for face in manifest.faces])
    # eyes level and side by side in the saved (aligned) faces
    assert np.all(np.abs(eyes[:, 0, 1] - eyes[:, 1, 1]) < 3)
    assert np.all(eyes[:, 1, 0] - eyes[:, 0, 0] > 15)
