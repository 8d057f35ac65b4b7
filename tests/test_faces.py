import math
import shutil
import subprocess
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from logcapture import dfpipe_lines

from dfpipe import assets
from dfpipe.data.faces import (
    MAX_ALIGNMENT_RESIDUAL,
    STATUSES,
    TEMPLATE,
    _detections,
    _detector,
    alignment_residual,
    crop_batch,
    keypoint_spread,
    pick_face,
    summarize,
)
from dfpipe.data.frames import plan_batch

SETTINGS = {
    "size": 256,
    "margin": 1.3,
    "align": True,
    "min_confidence": 0.5,
    "min_face_size": 32,
    "min_faces_per_video": 8,
}


def ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-v", "error", "-y", *args], check=True)


def h264(dest: Path, *args: str) -> str:
    ffmpeg(*args, "-c:v", "libx264", "-crf", "18", "-pix_fmt", "yuv420p", "-movflags", "+faststart", "-an", str(dest))
    return dest.name


@pytest.fixture(scope="module")
def model() -> Path:
    return assets.face_detector_model()


@pytest.fixture(scope="module")
def root(tmp_path_factory, carphone) -> Path:
    """A flat dataset root of tiny clips, each 1 s (30 frames) unless said."""
    root = tmp_path_factory.mktemp("faces")
    c = str(carphone)
    h264(root / "good.mp4", "-i", c, "-t", "1")
    shutil.copy(root / "good.mp4", root / "good_mask.mp4")  # a "mask" equal to the video: crops must match
    h264(root / "rotated.mp4", "-i", c, "-t", "1", "-vf", "rotate=-25*PI/180")
    h264(root / "grey.mp4", "-f", "lavfi", "-i", "color=c=gray:s=176x144:r=30:d=1")
    # Blurred: raw white noise makes this detector report "faces" at 0.5-0.66 confidence.
    h264(
        root / "noise.mp4",
        "-f",
        "lavfi",
        "-i",
        "color=c=gray:s=176x144:r=30:d=1",
        "-vf",
        "noise=alls=100:allf=t,gblur=sigma=2",
    )
    # A second, larger person appears in frame 15 on the right (the detector then lists that face first).
    h264(
        root / "two.mp4",
        "-i",
        c,
        "-i",
        c,
        "-t",
        "1",
        "-filter_complex",
        "[0]scale=352:288,pad=900:400:0:50[a];[1]scale=458:374[b];[a][b]overlay=440:10:enable='gte(n,15)'",
    )
    # Turned pixels whose display matrix turns them back, and upright pixels with a stray "rotate 90" tag.
    h264(root / "turned_raw.mp4", "-i", c, "-t", "1", "-vf", "transpose=clock")
    ffmpeg("-i", str(root / "turned_raw.mp4"), "-c", "copy", "-metadata:s:v:0", "rotate=90", str(root / "turned.mp4"))
    ffmpeg("-i", str(root / "good.mp4"), "-c", "copy", "-metadata:s:v:0", "rotate=90", str(root / "wrong_tag.mp4"))
    data = (root / "good.mp4").read_bytes()
    (root / "truncated.mp4").write_bytes(data[: len(data) // 2])
    (root / "notes.mp4").write_text("not a video\n" * 100)
    return root


def manifest(*rows: tuple[str, str | None, int, str]) -> pd.DataFrame:
    """Manifest rows (path, mask_path, n_frames, status) with the columns crop_batch reads."""
    return pd.DataFrame(
        [
            {
                "key": f"original/{Path(p).stem}",
                "video_id": Path(p).stem,
                "method": "original",
                "split": "train",
                "label": 0,
                "path": p,
                "mask_path": m,
                "n_frames": n,
                "status": s,
                "error": None if s == "ok" else f"{p}: unreadable",
            }
            for p, m, n, s in rows
        ]
    )


def run(root: Path, model: Path, videos: pd.DataFrame, per_video: int = 8, **overrides) -> pd.DataFrame:
    plan = plan_batch(videos, per_video, {})
    table = crop_batch(plan, videos, root, {**SETTINGS, **overrides}, model, threads=2)
    assert len(table) == len(plan)  # nothing dropped, whatever happened
    assert list(zip(table.key, table.frame_index)) == list(zip(plan.key, plan.frame_index))  # in plan order
    return table


def decode_png(data: bytes) -> np.ndarray:
    return cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)


def eye_angle(keypoints) -> float:
    k = np.asarray(keypoints).reshape(6, 2)
    dx, dy = k[1] - k[0]
    return math.degrees(math.atan2(dy, dx))


def test_good_clip_crops_centred_faces_with_mask(root, model):
    table = run(root, model, manifest(("good.mp4", "good_mask.mp4", 30, "ok")))
    assert (table.status == "ok").all() and table.reason.isna().all()
    with _detector(model, 0.5) as det:
        for row in table.itertuples():
            crop = cv2.cvtColor(decode_png(row.crop_png), cv2.COLOR_BGR2RGB)
            assert crop.shape == (256, 256, 3)
            found = _detections(det, crop)
            assert found, f"no face in the crop of frame {row.frame_index}"
            score, box, kps = max(found, key=lambda f: f[0])
            centre = box[:2] + box[2:] / 2
            assert np.abs(centre - 128).max() < 256 * 0.08  # face centred
            assert 256 / 1.3 * 0.75 < box[2] < 256 / 1.3 * 1.25  # margin 1.3: face spans ~1/1.3 of the crop
            assert abs(eye_angle(row.crop_keypoints)) < 5
            mask = decode_png(row.mask_png)
            assert mask.shape == (256, 256) and mask.ndim == 2
            # The mask is the same video: its crop must be the grey of the face crop (same frame, same warp).
            assert np.abs(mask.astype(int) - cv2.cvtColor(crop, cv2.COLOR_RGB2GRAY)).mean() < 1.5
            assert len(row.box) == 4 and len(row.keypoints) == 12 and 0.5 <= row.score <= 1


def test_alignment_levels_the_eyes_of_a_rotated_face(root, model):
    videos = manifest(("rotated.mp4", None, 30, "ok"))
    aligned = run(root, model, videos, per_video=6)
    boxed = run(root, model, videos, per_video=6, align=False)
    assert (aligned.status == "ok").all() and (boxed.status == "ok").all()
    assert aligned.mask_png.isna().all()
    assert all(abs(eye_angle(k)) > 20 for k in aligned.keypoints)  # the input really is tilted
    # Re-detect on the crops: the detector's eye keypoints wobble by a few degrees, so judge the mean.
    with _detector(model, 0.5) as det:

        def crop_angles(table: pd.DataFrame) -> np.ndarray:
            out = []
            for png in table.crop_png:
                found = _detections(det, cv2.cvtColor(decode_png(png), cv2.COLOR_BGR2RGB))
                out.append(eye_angle(max(found, key=lambda f: f[0])[2]))
            return np.abs(out)

        levelled, tilted = crop_angles(aligned), crop_angles(boxed)
    assert levelled.mean() < 7 and levelled.max() < 12, levelled
    assert tilted.mean() > 20 and tilted.mean() > 3 * levelled.mean(), tilted
    for row in boxed.itertuples():  # a box crop only scales and shifts: keypoint angles are unchanged
        assert eye_angle(row.crop_keypoints) == pytest.approx(eye_angle(row.keypoints), abs=0.01)


def test_faceless_clips_report_every_frame(root, model):
    table = run(root, model, manifest(("grey.mp4", None, 30, "ok"), ("noise.mp4", None, 30, "ok")))
    assert len(table) == 16 and (table.status == "no_face").all()
    assert table.reason.str.contains("no face detected").all()
    assert table.crop_png.isna().all() and table.score.isna().all()


def test_small_faces_are_flagged_not_cropped(root, model):
    table = run(root, model, manifest(("good.mp4", None, 30, "ok")), per_video=4, min_face_size=100)
    assert (table.status == "face_too_small").all()
    assert table.reason.str.contains("below min_face_size 100").all()
    assert table.crop_png.isna().all() and table.box.notna().all()


def test_second_face_never_takes_over(root, model):
    table = run(root, model, manifest(("two.mp4", None, 30, "ok")), per_video=30)
    assert (table.status == "ok").all()
    xs = np.array([b[0] for b in table.box])
    assert (xs < 400).all(), xs  # always the person on the left, who was there first


def test_pick_face_largest_then_nearest():
    def face(x, size):
        return (0.9, np.array([x, 0, size, size], float), np.zeros((6, 2)))

    small, big = face(0, 40), face(300, 80)
    assert pick_face([small, big], None) is big
    assert pick_face([big, face(20, 40)], small[1])[1][0] == 20


def test_mixed_batch_loses_nothing(root, model):
    videos = manifest(
        ("good.mp4", None, 30, "ok"),
        ("truncated.mp4", None, 30, "ok"),
        ("notes.mp4", None, 30, "ok"),
        ("gone.mp4", None, 0, "unreadable"),
    )
    table = run(root, model, videos, per_video=8)
    by = {k: g for k, g in table.groupby("key")}
    assert (by["original/good"].status == "ok").all()
    trunc = by["original/truncated"]
    assert 0 < (trunc.status == "ok").sum() < 8
    assert (trunc.status == "not_decoded").sum() > 0
    assert set(trunc.status) <= {"ok", "decode_error", "not_decoded"}
    assert trunc.loc[trunc.status == "not_decoded", "reason"].str.contains("truncated.mp4: decoding stopped").all()
    assert (by["original/notes"].status == "not_decoded").all()
    assert by["original/notes"].reason.str.contains("notes.mp4: not a readable video").all()
    assert by["original/gone"].frame_index.tolist() == [-1]
    assert by["original/gone"].reason.iloc[0] == "video unreadable: gone.mp4: unreadable"
    assert not table.reason.str.contains(str(root), regex=False).any()  # no absolute paths stored

    summary = summarize(table, min_faces=8).set_index("key")
    assert summary.loc["original/good", ["planned", "ok", "too_few"]].tolist() == [8, 8, False]
    assert summary.loc["original/truncated", "too_few"]
    assert summary.loc["original/notes", ["planned", "not_decoded", "too_few"]].tolist() == [8, 8, True]
    assert summary.loc["original/gone", ["planned", "ok", "not_decoded", "too_few"]].tolist() == [0, 0, 1, True]
    t = summary.loc["original/truncated"]
    # frames output after the cut (garbage decoded from missing data) are decode_error, never ok
    assert t.ok + t.decode_error + t.not_decoded == t.planned == 8


def test_table_round_trips_through_parquet(root, model, tmp_path):
    table = run(root, model, manifest(("good.mp4", None, 30, "ok"), ("grey.mp4", None, 30, "ok")), per_video=2)
    table.to_parquet(tmp_path / "t.parquet", index=False)
    back = pd.read_parquet(tmp_path / "t.parquet")
    schema = pq.read_schema(tmp_path / "t.parquet")
    assert str(schema.field("box").type) == "list<element: double>" and str(schema.field("crop_png").type) == "binary"
    assert np.asarray(back.keypoints.iloc[0]).reshape(6, 2).shape == (6, 2)
    empty = run(root, model, manifest(("grey.mp4", None, 30, "ok")), per_video=2)
    empty.to_parquet(tmp_path / "empty.parquet", index=False)
    assert str(pq.read_schema(tmp_path / "empty.parquet").field("crop_png").type) == "binary"  # even when all null
    assert back.status.tolist() == ["ok", "ok", "no_face", "no_face"]
    assert decode_png(back.crop_png.iloc[0]).shape == (256, 256, 3)


def test_keypoint_sanity_measures():
    box = np.array([0, 0, 100, 100], float)
    frontal = np.vstack([TEMPLATE * 100, [[0, 40], [100, 40]]])  # eyes, nose, mouth, ears
    assert keypoint_spread(box, frontal) == pytest.approx(1.0)
    assert alignment_residual(frontal) == pytest.approx(0, abs=1e-4)
    assert alignment_residual(frontal * 3 + 7) == pytest.approx(0, abs=1e-4)  # a similarity costs nothing
    collapsed = 50 + np.random.default_rng(0).normal(0, 2, (6, 2))
    assert keypoint_spread(box, collapsed) < 0.2
    mirrored = frontal.copy()
    mirrored[[0, 1]] = mirrored[[1, 0]]  # eyes swapped: a mirror image, which no similarity undoes
    assert alignment_residual(mirrored) > MAX_ALIGNMENT_RESIDUAL


def test_rotation_metadata_right_and_wrong(root, model):
    """A display matrix that turns turned pixels upright gives good crops; a stray rotate=90 tag on upright
    pixels turns the face sideways, and its frames are flagged, never stored as ok crops."""
    table = run(
        root,
        model,
        manifest(("turned.mp4", None, 30, "ok"), ("wrong_tag.mp4", None, 30, "ok"), ("good.mp4", None, 30, "ok")),
    )
    turned, wrong, good = (table[table.key == f"original/{k}"] for k in ("turned", "wrong_tag", "good"))
    assert (turned.status == "ok").all()
    # the same head tilt as the upright original, frame by frame: the turned pixels were turned back
    tilt = np.array([eye_angle(k) for k in turned.keypoints]) - [eye_angle(k) for k in good.keypoints]
    assert np.abs(tilt).max() < 4, tilt
    assert not (wrong.status == "ok").any(), wrong.status.tolist()
    flagged = wrong[wrong.status.isin(["collapsed_keypoints", "poor_alignment"])]
    assert len(flagged) >= 6, wrong.status.tolist()
    assert flagged.reason.str.contains("90° rotation metadata").all()
    assert flagged.crop_png.isna().all() and flagged.box.notna().all()
    summary = summarize(table, min_faces=8).set_index("key")
    assert list(summary.columns) == ["planned", *STATUSES, "too_few"]
    assert summary.loc["original/wrong_tag", "too_few"] and not summary.loc["original/turned", "too_few"]
    assert summary.loc["original/wrong_tag", ["collapsed_keypoints", "poor_alignment"]].sum() == len(flagged)


def test_frames_after_a_decoder_error_are_decode_error(root, model, tmp_path):
    """Concealed (smeared) frames after a damaged packet are decode_error with the decoder's complaint,
    named relative to the root; frames before the damage stay ok."""
    from test_frames import corrupt_packet

    shutil.copy(root / "good.mp4", tmp_path / "good.mp4")
    corrupt_packet(root / "good.mp4", tmp_path / "smeared.mp4", 12)
    table = run(tmp_path, model, manifest(("smeared.mp4", None, 30, "ok"), ("good.mp4", None, 30, "ok")), per_video=30)
    smeared, good = table[table.key == "original/smeared"], table[table.key == "original/good"]
    assert (good.status == "ok").all()
    bad = smeared[smeared.status == "decode_error"]
    assert len(bad) > 0 and bad.frame_index.min() > 8, bad.frame_index.tolist()
    assert (smeared[smeared.frame_index < bad.frame_index.min()].status == "ok").all()
    assert bad.reason.str.startswith("smeared.mp4: frame ").all() and bad.crop_png.isna().all()
    assert not table.reason.str.contains(str(tmp_path), regex=False).any()
    assert summarize(table, 8).set_index("key").loc["original/smeared", "decode_error"] == len(bad)


def test_detector_chatter_goes_to_the_log_not_the_terminal(root, model, capfd):
    """mediapipe's native INFO lines (written straight to fd 2) land in the job's log."""
    videos = manifest(("good.mp4", None, 30, "ok"))
    with dfpipe_lines() as lines:
        crop_batch(plan_batch(videos, 2, {}), videos, root, SETTINGS, model, threads=1)
    err = capfd.readouterr().err
    assert "INFO" not in err and "XNNPACK" not in err and "accelerator" not in err.lower(), err
    native = [line for line in lines if line.startswith("native: ")]
    assert any("XNNPACK" in line or "accelerator" in line.lower() for line in native), lines
    print("after", file=__import__("sys").stderr)  # fd 2 works again afterwards
    assert capfd.readouterr().err == "after\n"
