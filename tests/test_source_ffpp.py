"""The ffpp source against a loopback FF++-shaped mirror (of real mp4 files) that can drop, stall, fail, lie
about lengths and ignore Range."""

from __future__ import annotations

import json
import re
import shutil
import ssl
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from logcapture import dfpipe_lines

from dfpipe.data.sources import ffpp

PREFIX = "/faceforensics/v3/"  # served like the EU2 server, whose root is not the host's root
PAIRS = [["000", "001"], ["002", "003"]]
METHODS = ["Deepfakes", "Face2Face"]


class Mirror:
    """Files under `root` served at PREFIX; `faults[path]` is a queue of misbehaviours for the next requests."""

    def __init__(self, root: Path):
        self.root = root
        self.requests: list[tuple[str, str | None]] = []  # (path, Range header)
        self.statuses: list[tuple[str, int]] = []
        self.faults: dict[str, list[str]] = {}
        self.ignore_range: set[str] = set()
        self.lock = threading.Lock()
        self.url = ""

    def file(self, rel: str) -> Path:
        return self.root / rel

    def path(self, rel: str) -> str:
        return PREFIX + rel


def _handler(mirror: Mirror) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:  # keep test output clean
            pass

        def _status(
            self, code: int, headers: dict[str, str] | None = None, body: bytes = b"", drop_length: bool = False
        ) -> None:
            with mirror.lock:
                mirror.statuses.append((urlsplit(self.path).path, code))
            self.send_response(code)
            for k, v in {"Content-Length": str(len(body)), **(headers or {})}.items():
                if not (drop_length and k == "Content-Length"):
                    self.send_header(k, v)
            self.end_headers()

        def do_GET(self) -> None:
            path = urlsplit(self.path).path
            with mirror.lock:
                mirror.requests.append((path, self.headers.get("Range")))
                queue = mirror.faults.get(path, [])
                fault = queue.pop(0) if queue else None
            if fault == "503":
                self._status(503)
                return
            if fault == "stall":
                time.sleep(1.0)  # longer than the client's timeout
                return
            target = (mirror.root / path.removeprefix(PREFIX)).resolve()
            if not path.startswith(PREFIX) or mirror.root not in target.parents or not target.is_file():
                self._status(404)
                return
            data = target.read_bytes()
            m = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
            if m and path not in mirror.ignore_range:
                start = int(m.group(1))
                if start >= len(data):
                    self._status(416, {"Content-Range": f"bytes */{len(data)}"})
                    return
                body = data[start:]
                code, headers = 206, {"Content-Range": f"bytes {start}-{len(data) - 1}/{len(data)}"}
            else:
                body, code, headers = data, 200, {}
            if fault == "short":
                # Content-Length (and Content-Range) smaller than the file: the client sees a complete-looking half.
                body = body[: len(body) // 2]
                if code == 206:
                    headers["Content-Range"] = f"bytes {start}-{start + len(body) - 1}/{start + len(body)}"
            length = {"long": len(body) + 1000, "unsized": None}.get(fault, len(body))
            self._status(code, {**headers, "Content-Length": str(length)}, drop_length=length is None)
            if fault == "unsized":
                # No Content-Length and the connection drops halfway: the body just ends early.
                self.wfile.write(body[: len(body) // 2])
                self.close_connection = True
                return
            if fault == "long":
                self.wfile.write(body)  # then hang up, 1000 bytes short of what was announced
                self.close_connection = True
                return
            if fault == "hang":
                # Half the body, then silence longer than the client's timeout.
                self.wfile.write(body[: len(body) // 2])
                self.wfile.flush()
                time.sleep(1.0)
                return
            if fault == "drop":
                # Announce the whole body, send half, hang up: what a flaky server does mid-download.
                self.wfile.write(body[: len(body) // 2])
                self.close_connection = True
                return
            self.wfile.write(body)

    return Handler


class QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address) -> None:  # a stalled handler writes to a closed socket
        pass


@pytest.fixture(scope="session")
def clips(tmp_path_factory) -> list[bytes]:
    """Distinct real mp4 files (faststart: a cut one still has its index, the harder case to detect); the
    last spans several read chunks."""
    folder = tmp_path_factory.mktemp("clips")
    base = folder / "base.mp4"
    subprocess.run(
        [
            "ffmpeg",
            "-v",
            "error",
            "-f",
            "lavfi",
            "-i",
            "testsrc=size=64x48:rate=10:duration=1",
            "-c:v",
            "libx264",
            "-pix_fmt",
            "yuv420p",
            "-movflags",
            "+faststart",
            str(base),
        ],
        check=True,
    )
    # Remuxed with comments of growing length: distinct sizes, so a mixed-up file cannot match.
    outs = [folder / f"{i}.mp4" for i in range(40)]
    cmd = ["ffmpeg", "-v", "error", "-i", str(base)]
    for i, out in enumerate(outs):
        cmd += ["-c", "copy", "-metadata", f"comment={'x' * 37 * i}", "-movflags", "+faststart", str(out)]
    subprocess.run(cmd, check=True)
    big = folder / "big.mp4"
    subprocess.run(
        [
            "ffmpeg",
            "-v",
            "error",
            "-f",
            "lavfi",
            "-i",
            "nullsrc=size=128x128:rate=10:duration=1",
            "-vf",
            "geq=random(1)*255:128:128",
            "-c:v",
            "libx264",
            "-qp",
            "0",
            "-pix_fmt",
            "yuv420p",
            "-movflags",
            "+faststart",
            str(big),
        ],
        check=True,
    )
    return [out.read_bytes() for out in outs] + [big.read_bytes()]


@pytest.fixture
def mirror(tmp_path, clips):
    root = (tmp_path / "mirror").resolve()
    files = iter(clips[:-1])
    names = {"original": [i for p in PAIRS for i in p], "fake": [n for a, b in PAIRS for n in (f"{a}_{b}", f"{b}_{a}")]}
    folders = [("original_sequences/youtube/c23/videos", names["original"])]
    for method in [*METHODS, "FaceSwap"]:
        folders += [
            (f"manipulated_sequences/{method}/c23/videos", names["fake"]),
            (f"manipulated_sequences/{method}/masks/videos", names["fake"]),
        ]
    for folder, ids in folders:
        for ident in ids:
            f = root / folder / f"{ident}.mp4"
            f.parent.mkdir(parents=True, exist_ok=True)
            f.write_bytes(next(files))
    big = root / "original_sequences/youtube/c23/videos/001.mp4"
    big.write_bytes(clips[-1])
    assert len(clips[-1]) > 3 * ffpp.CHUNK
    (root / "misc").mkdir()
    (root / "misc/filelist.json").write_text(json.dumps(PAIRS))

    m = Mirror(root)
    server = QuietServer(("127.0.0.1", 0), _handler(m))
    thread = _serve(server)
    m.url = f"http://127.0.0.1:{server.server_address[1]}/faceforensics"  # no trailing slash on purpose
    try:
        yield m
    finally:
        _stop(server, thread)


def settings(mirror: Mirror, **kw) -> dict:
    return {
        "accept_tos": True,
        "server": "EU2",
        "base_url": mirror.url,
        "masks": False,
        "num_videos": None,
        "retries": 3,
        "timeout_s": 0.5,
        **kw,
    }


def run(mirror: Mirror, dest: Path, methods=METHODS, **kw) -> tuple[list[Path], list[str]]:
    with dfpipe_lines() as lines:
        got = ffpp.download(settings(mirror, **kw), dest, methods, "c23", backoff_s=0.01)
    return got, lines


def video_requests(mirror: Mirror) -> list[tuple[str, str | None]]:
    return [r for r in mirror.requests if r[0].endswith(".mp4")]


def assert_same(mirror: Mirror, dest: Path, rels) -> None:
    for rel in rels:
        assert (dest / rel).read_bytes() == mirror.file(str(rel)).read_bytes(), rel
    assert not list(dest.rglob("*.part"))


def test_full_download_with_masks_resumes_a_dropped_file_and_reruns_silently(mirror, tmp_path):
    dest = tmp_path / "ffpp"
    dropped = "original_sequences/youtube/c23/videos/001.mp4"
    mirror.faults[mirror.path(dropped)] = ["drop"]

    got, lines = run(mirror, dest, masks=True)

    fakes = ["000_001", "001_000", "002_003", "003_002"]
    expected = [Path(f"original_sequences/youtube/c23/videos/{i}.mp4") for i in ["000", "001", "002", "003"]]
    for m in METHODS:
        expected += [Path(f"manipulated_sequences/{m}/c23/videos/{n}.mp4") for n in fakes]
        expected += [Path(f"manipulated_sequences/{m}/masks/videos/{n}.mp4") for n in fakes]
    assert got == expected
    assert_same(mirror, dest, got)
    assert not (dest / "manipulated_sequences/FaceSwap").exists()  # only the methods asked for

    # The drop was resumed from where the body stopped, not restarted.
    size = mirror.file(dropped).stat().st_size
    assert [r for r in mirror.requests if r[0] == mirror.path(dropped)] == [
        (mirror.path(dropped), None),
        (mirror.path(dropped), f"bytes={size // 2}-"),
    ]
    assert (mirror.path(dropped), 206) in mirror.statuses
    assert any("001.mp4" in line and f"{size // 2} of {size}" in line for line in lines)
    assert json.loads((dest / "misc/filelist.json").read_text()) == PAIRS

    n_requests = len(mirror.requests)
    again, lines = run(mirror, dest, masks=True)
    assert again == expected
    assert len(mirror.requests) == n_requests  # complete files (and the cached list) need no request
    assert lines[-1] == f"ffpp: 0 downloaded, {len(expected)} already present, 0 missing"


def test_server_that_ignores_range_restarts_cleanly(mirror, tmp_path):
    dest = tmp_path / "ffpp"
    rel = "original_sequences/youtube/c23/videos/001.mp4"
    mirror.faults[mirror.path(rel)] = ["drop"]
    mirror.ignore_range.add(mirror.path(rel))

    got, _ = run(mirror, dest, methods=[])

    assert got == [Path(f"original_sequences/youtube/c23/videos/{i}.mp4") for i in ["000", "001", "002", "003"]]
    assert_same(mirror, dest, got)  # a naive append of the 200 body would be 1.5× the size
    reqs = [r for r in mirror.requests if r[0] == mirror.path(rel)]
    assert len(reqs) == 2 and reqs[1][1] is not None
    assert [s for p, s in mirror.statuses if p == mirror.path(rel)] == [200, 200]


def test_missing_file_is_named_with_its_url_and_the_others_are_kept(mirror, tmp_path):
    dest = tmp_path / "ffpp"
    gone = "manipulated_sequences/Deepfakes/c23/videos/001_000.mp4"
    kept = mirror.file(gone).read_bytes()
    mirror.file(gone).unlink()

    with pytest.raises(ffpp.DownloadError) as info:
        run(mirror, dest)

    msg = str(info.value)
    assert "1 of 12 files" in msg and "HTTP 404" in msg
    assert f"{gone}: HTTP 404 Not Found ({mirror.url}/v3/{gone})" in msg
    assert info.value.failures == [(gone, f"{mirror.url}/v3/{gone}", "HTTP 404 Not Found")]
    assert not (dest / gone).exists() and not list(dest.rglob("*.part"))
    done = [p.relative_to(dest) for p in dest.rglob("*.mp4")]
    assert len(done) == 11
    assert_same(mirror, dest, done)
    assert len([r for r in mirror.requests if r[0] == mirror.path(gone)]) == 1  # a 404 is not retried

    # Once the mirror has it, a rerun fetches that file and nothing else.
    mirror.file(gone).write_bytes(kept)
    before = len(mirror.requests)
    got, _ = run(mirror, dest)
    assert mirror.requests[before:] == [(mirror.path(gone), None)]
    assert (dest / gone).read_bytes() == kept and len(got) == 12


@pytest.mark.parametrize(
    "entry", [["..", "001"], ["000", "/etc/passwd"], ["000", "a/b"], ["00\\1", "002"], ["000", ""], ["000", 1], ["000"]]
)
def test_unsafe_file_list_entries_are_refused(mirror, tmp_path, entry):
    (mirror.root / "misc/filelist.json").write_text(json.dumps([["004", "005"], entry]))
    dest = tmp_path / "ffpp"

    with pytest.raises(ValueError) as info:
        run(mirror, dest)

    msg = str(info.value)
    assert "filelist.json" in msg and "entry 1" in msg and repr(entry) in msg
    assert video_requests(mirror) == []
    assert not (dest / "misc/filelist.json").exists()  # a bad list is not kept as if it were the server's


def test_missing_file_list_points_at_the_server_setting(mirror, tmp_path):
    (mirror.root / "misc/filelist.json").unlink()
    with pytest.raises(ffpp.DownloadError, match=r"/faceforensics/v3/misc/filelist.json: HTTP 404.*ffpp.base_url"):
        run(mirror, tmp_path / "ffpp")
    assert video_requests(mirror) == []


def test_terms_of_use_must_be_accepted(mirror, tmp_path):
    with pytest.raises(ValueError, match=r"accept_tos.*terms of use"):
        run(mirror, tmp_path / "ffpp", accept_tos=False)
    assert mirror.requests == [] and not (tmp_path / "ffpp").exists()


def test_num_videos_takes_the_first_n_of_each_set_in_the_scripts_order(mirror, tmp_path):
    got, _ = run(mirror, tmp_path / "ffpp", num_videos=3, masks=True, methods=["Face2Face"])
    assert [p.as_posix() for p in got] == [
        "original_sequences/youtube/c23/videos/000.mp4",
        "original_sequences/youtube/c23/videos/001.mp4",
        "original_sequences/youtube/c23/videos/002.mp4",
        "manipulated_sequences/Face2Face/c23/videos/000_001.mp4",
        "manipulated_sequences/Face2Face/c23/videos/001_000.mp4",
        "manipulated_sequences/Face2Face/c23/videos/002_003.mp4",
        "manipulated_sequences/Face2Face/masks/videos/000_001.mp4",
        "manipulated_sequences/Face2Face/masks/videos/001_000.mp4",
        "manipulated_sequences/Face2Face/masks/videos/002_003.mp4",
    ]
    assert_same(mirror, tmp_path / "ffpp", got)
    assert len(video_requests(mirror)) == 9


def test_5xx_and_timeouts_are_retried_with_backoff(mirror, tmp_path):
    rel = "original_sequences/youtube/c23/videos/002.mp4"
    mirror.faults[mirror.path(rel)] = ["503", "stall", "503"]
    mirror.faults[mirror.path("misc/filelist.json")] = ["503"]

    got, lines = run(mirror, tmp_path / "ffpp", methods=[], retries=3)

    assert_same(mirror, tmp_path / "ffpp", got)
    assert len([r for r in mirror.requests if r[0] == mirror.path(rel)]) == 4
    retry_lines = [line for line in lines if "002.mp4" in line and "retrying" in line]
    assert len(retry_lines) == 3 and "HTTP 503" in retry_lines[0]
    assert "timed out" in retry_lines[1].lower()


def test_retries_spent_stops_with_an_error_and_keeps_finished_files(mirror, tmp_path):
    rel = "original_sequences/youtube/c23/videos/002.mp4"
    mirror.faults[mirror.path(rel)] = ["503"] * 10
    dest = tmp_path / "ffpp"

    t0 = time.monotonic()
    with pytest.raises(ffpp.DownloadError, match=r"giving up after 3 attempts \(HTTP 503") as info:
        run(mirror, dest, methods=[], retries=2)
    assert time.monotonic() - t0 < 5

    assert "stopped at file 3 of 4" in str(info.value) and rel in str(info.value)
    assert len([r for r in mirror.requests if r[0] == mirror.path(rel)]) == 3
    assert not (dest / rel).exists()
    assert_same(mirror, dest, [f"original_sequences/youtube/c23/videos/{i}.mp4" for i in ["000", "001"]])
    assert mirror.path("original_sequences/youtube/c23/videos/003.mp4") not in dict(mirror.requests)


def test_complete_part_left_by_an_interrupted_run_is_finished_without_a_body(mirror, tmp_path):
    dest = tmp_path / "ffpp"
    rel = "original_sequences/youtube/c23/videos/000.mp4"
    part = dest / (rel + ".part")
    part.parent.mkdir(parents=True)
    part.write_bytes(mirror.file(rel).read_bytes())

    run(mirror, dest, methods=[], num_videos=1)

    assert (dest / rel).read_bytes() == mirror.file(rel).read_bytes() and not part.exists()
    assert mirror.statuses[-1] == (mirror.path(rel), 416)


def test_base_url_and_plan():
    assert ffpp.base_url({"server": "CA"}) == "http://falas.cmpt.sfu.ca:8100/v3/"
    assert ffpp.base_url({"server": "EU2"}) == "http://kaldir.vc.in.tum.de/faceforensics/v3/"
    assert ffpp.base_url({"server": "EU", "base_url": "https://m.example/ff/"}) == "https://m.example/ff/v3/"
    with pytest.raises(ValueError, match="ftp://x"):
        ffpp.base_url({"base_url": "ftp://x"})
    items = ffpp.plan([("010", "020")], "B/", ["NeuralTextures"], "c40", masks=True)
    assert [(i.rel, i.url) for i in items][-1] == (
        "manipulated_sequences/NeuralTextures/masks/videos/020_010.mp4",
        "B/manipulated_sequences/NeuralTextures/masks/videos/020_010.mp4",
    )
    assert [i.rel for i in items][:2] == [
        "original_sequences/youtube/c40/videos/010.mp4",
        "original_sequences/youtube/c40/videos/020.mp4",
    ]


ORIG = "original_sequences/youtube/c23/videos/{}.mp4"


@pytest.mark.parametrize("fault", ["short", "unsized"])
def test_body_that_only_looks_complete_fails_verification_and_the_rest_is_fetched(mirror, tmp_path, fault):
    """A Content-Length smaller than the file (or none, and a dropped connection) gives a short body that
    matches every announced size: only ffprobe's check shows that frames are missing."""
    dest = tmp_path / "ffpp"
    rel = ORIG.format("001")
    mirror.faults[mirror.path(rel)] = [fault]

    got, lines = run(mirror, dest, methods=[])

    assert_same(mirror, dest, got)
    size = mirror.file(rel).stat().st_size
    assert [r for r in mirror.requests if r[0] == mirror.path(rel)] == [
        (mirror.path(rel), None),
        (mirror.path(rel), f"bytes={size // 2}-"),
    ]
    assert any(
        f"001.mp4: {size // 2} bytes fail verification (ffprobe:" in line and "fetching the rest" in line
        for line in lines
    ), lines
    assert rel in json.loads((dest / ffpp.VERIFIED).read_text())


def test_content_length_longer_than_the_file_ends_complete_after_the_server_says_so(mirror, tmp_path):
    dest = tmp_path / "ffpp"
    rel = ORIG.format("002")
    mirror.faults[mirror.path(rel)] = ["long"]

    got, lines = run(mirror, dest, methods=[])

    assert_same(mirror, dest, got)
    assert [s for p, s in mirror.statuses if p == mirror.path(rel)] == [200, 416]
    assert any("002.mp4" in line and "connection closed after" in line for line in lines)


def test_file_that_never_verifies_is_reported_missing_and_a_clean_rerun_fetches_only_it(mirror, tmp_path):
    dest = tmp_path / "ffpp"
    rel = ORIG.format("001")
    mirror.faults[mirror.path(rel)] = ["short"] * 4

    with pytest.raises(ffpp.DownloadError) as info:
        run(mirror, dest, methods=[], retries=3)

    msg = str(info.value)
    assert "1 of 4 files could not be downloaded complete" in msg
    assert f"{rel}: still fails verification after 4 attempts (ffprobe:" in msg and "ffpp.server" in msg
    assert not (dest / rel).exists() and not list(dest.rglob("*.part"))
    assert_same(mirror, dest, [ORIG.format(i) for i in ("000", "002", "003")])

    before = len(mirror.requests)
    got, _ = run(mirror, dest, methods=[])
    assert mirror.requests[before:] == [(mirror.path(rel), None)]
    assert_same(mirror, dest, got)


def test_damaged_copy_on_the_server_is_refetched_from_zero_then_reported(mirror, tmp_path):
    """The server's own file is cut: a resume brings nothing (416), so each retry starts from byte 0."""
    dest = tmp_path / "ffpp"
    rel = ORIG.format("002")
    data = mirror.file(rel).read_bytes()
    mirror.file(rel).write_bytes(data[: len(data) // 2])

    with pytest.raises(ffpp.DownloadError, match=f"{rel}: still fails verification after 4 attempts"):
        run(mirror, dest, methods=[], retries=3)

    assert [s for p, s in mirror.statuses if p == mirror.path(rel)] == [200, 416, 200, 416]
    assert not (dest / rel).exists() and not list(dest.rglob("*.part"))
    assert_same(mirror, dest, [ORIG.format(i) for i in ("000", "001", "003")])


def test_truncated_video_kept_by_an_older_run_is_fetched_again_and_checks_are_remembered(mirror, tmp_path, monkeypatch):
    """Files at their final name that were never verified (an older version, or a killed run) are checked once."""
    dest = tmp_path / "ffpp"
    cut, whole = ORIG.format("001"), ORIG.format("000")
    for rel in (cut, whole):
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        data = mirror.file(rel).read_bytes()
        (dest / rel).write_bytes(data[: len(data) // 2] if rel == cut else data)
    (dest / ffpp.FILELIST).parent.mkdir(parents=True, exist_ok=True)
    (dest / ffpp.FILELIST).write_text(json.dumps(PAIRS))

    got, lines = run(mirror, dest, methods=[])

    assert_same(mirror, dest, got)
    assert [p for p, _ in video_requests(mirror)] == [mirror.path(ORIG.format(i)) for i in ("001", "002", "003")]
    assert any(f"{cut} on disk is incomplete (ffprobe:" in line for line in lines)

    checked = []
    monkeypatch.setattr(ffpp, "verify_video", lambda path: checked.append(path) or None)
    run(mirror, dest, methods=[])
    assert checked == []  # every file is in misc/verified.json with its size and mtime
    (dest / whole).write_bytes(mirror.file(whole).read_bytes())  # rewritten: new mtime, checked again
    run(mirror, dest, methods=[])
    assert checked == [dest / whole]


def test_verify_video_names_what_is_wrong(clips, tmp_path):
    path = tmp_path / "v.mp4"
    path.write_bytes(clips[0])
    assert ffpp.verify_video(path) is None
    path.write_bytes(clips[0][: len(clips[0]) * 2 // 3])
    assert ffpp.verify_video(path).startswith("ffprobe:")
    assert str(tmp_path) not in ffpp.verify_video(path)
    path.write_bytes(b"not a video")
    assert "Invalid data" in ffpp.verify_video(path)


DFD_LIST = {
    "actors": ["01__walking_down_street", "02__outside_talking"],
    "DeepFakesDetection": ["01_02__walking_down_street__YVGY8LOK", "02_01__outside_talking__ZK95PQDE"],
}
FSH = "manipulated_sequences/FaceShifter/c23/videos/{}.mp4"


def add_extra_sets(mirror: Mirror, clips: list[bytes]) -> None:
    """FaceShifter videos (no masks, as on the server) and the DeepFakeDetection sets with their file list, from
    clips the mirror fixture left unused (distinct bytes)."""
    files = iter(clips[28:-1])
    rels = [FSH.format(n) for n in ["000_001", "001_000", "002_003", "003_002"]]
    rels += [f"original_sequences/actors/c23/videos/{n}.mp4" for n in DFD_LIST["actors"]]
    for folder in ("c23/videos", "masks/videos"):
        rels += [f"manipulated_sequences/DeepFakeDetection/{folder}/{n}.mp4" for n in DFD_LIST["DeepFakesDetection"]]
    for rel in rels:
        mirror.file(rel).parent.mkdir(parents=True, exist_ok=True)
        mirror.file(rel).write_bytes(next(files))
    mirror.file(ffpp.DFD_FILELIST).write_text(json.dumps(DFD_LIST))


def test_faceshifter_and_deepfakedetection_follow_the_scripts_layout(mirror, clips, tmp_path):
    """FaceShifter: youtube pairs, no masks. DeepFakeDetection: names from its own file list (fetched only when it
    is asked for), originals from original_sequences/actors, masks beside its videos."""
    add_extra_sets(mirror, clips)
    dest = tmp_path / "ffpp"

    got, _ = run(mirror, dest, methods=["FaceShifter"], masks=True)
    youtube = [ORIG.format(i) for i in ["000", "001", "002", "003"]]
    faceshifter = [FSH.format(n) for n in ["000_001", "001_000", "002_003", "003_002"]]
    assert [p.as_posix() for p in got] == youtube + faceshifter
    assert mirror.path(ffpp.DFD_FILELIST) not in dict(mirror.requests)
    assert not any("FaceShifter/masks" in path for path, _ in mirror.requests)

    before = len(mirror.requests)
    got, _ = run(mirror, dest, methods=["FaceShifter", "DeepFakeDetection"], masks=True)
    actors = [f"original_sequences/actors/c23/videos/{n}.mp4" for n in DFD_LIST["actors"]]
    dfd = [f"manipulated_sequences/DeepFakeDetection/c23/videos/{n}.mp4" for n in DFD_LIST["DeepFakesDetection"]]
    dfd_masks = [
        f"manipulated_sequences/DeepFakeDetection/masks/videos/{n}.mp4" for n in DFD_LIST["DeepFakesDetection"]
    ]
    assert [p.as_posix() for p in got] == youtube + actors + faceshifter + dfd + dfd_masks
    assert_same(mirror, dest, got)
    # only the new list and files were asked for; the list is kept, so a rerun asks nothing
    assert [path for path, _ in mirror.requests[before:]] == [
        mirror.path(rel) for rel in [ffpp.DFD_FILELIST, *actors, *dfd, *dfd_masks]
    ]
    assert json.loads((dest / ffpp.DFD_FILELIST).read_text()) == DFD_LIST
    before = len(mirror.requests)
    run(mirror, dest, methods=["DeepFakeDetection"], masks=True)
    assert len(mirror.requests) == before


@pytest.mark.parametrize(
    "lists, problem",
    [
        (
            {**DFD_LIST, "actors": ["01__ok", "../../etc/passwd"]},
            "actors[1] '../../etc/passwd' is not a safe video name",
        ),
        ({"actors": DFD_LIST["actors"]}, "'DeepFakesDetection' is not a non-empty list"),
        (DFD_LIST["actors"], "expected an object with the lists"),
    ],
)
def test_bad_deepfakedetection_file_list_is_refused_and_not_kept(mirror, clips, tmp_path, lists, problem):
    add_extra_sets(mirror, clips)
    mirror.file(ffpp.DFD_FILELIST).write_text(json.dumps(lists))
    dest = tmp_path / "ffpp"

    with pytest.raises(ValueError) as info:
        run(mirror, dest, methods=["DeepFakeDetection"])

    assert ffpp.DFD_FILELIST in str(info.value) and problem in str(info.value)
    assert video_requests(mirror) == [] and not (dest / ffpp.DFD_FILELIST).exists()


def test_missing_deepfakedetection_file_list_names_its_url(mirror, tmp_path):
    with pytest.raises(ffpp.DownloadError, match=r"v3/misc/deepfake_detection_filenames.json: HTTP 404.*ffpp.base_url"):
        run(mirror, tmp_path / "ffpp", methods=["DeepFakeDetection"])
    assert video_requests(mirror) == []


def test_plan_of_the_extra_sets_cuts_each_to_num_videos():
    items = ffpp.plan([("010", "020")], "B/", ["DeepFakeDetection"], "c40", masks=True, num_videos=1, dfd=DFD_LIST)
    assert [i.rel for i in items] == [
        "original_sequences/youtube/c40/videos/010.mp4",
        "original_sequences/actors/c40/videos/01__walking_down_street.mp4",
        "manipulated_sequences/DeepFakeDetection/c40/videos/01_02__walking_down_street__YVGY8LOK.mp4",
        "manipulated_sequences/DeepFakeDetection/masks/videos/01_02__walking_down_street__YVGY8LOK.mp4",
    ]
    assert items[1].url == "B/original_sequences/actors/c40/videos/01__walking_down_street.mp4"
    with pytest.raises(ValueError, match="unknown methods.*FaceShifter, DeepFakeDetection"):
        ffpp.download({"accept_tos": True}, Path("unused"), ["DeepfakeDetection"], "c23")


def _serve(server: ThreadingHTTPServer):
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    return thread


def _stop(server: ThreadingHTTPServer, thread: threading.Thread) -> None:
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


@pytest.fixture(scope="session")
def tls_cert(tmp_path_factory) -> Path:
    """A self-signed certificate (and key, in the same file) for 127.0.0.1, made for this test run."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    pem = tmp_path_factory.mktemp("tls") / "loopback.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            str(pem),
            "-out",
            str(pem.with_suffix(".crt")),
            "-days",
            "2",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )
    pem.write_bytes(pem.with_suffix(".crt").read_bytes() + pem.read_bytes())
    return pem


@pytest.fixture
def https_mirror(mirror, tls_cert):
    """The same mirror over HTTPS (its requests land in the same log); yields its URL."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(tls_cert)
    server = QuietServer(("127.0.0.1", 0), _handler(mirror))
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    thread = _serve(server)
    try:
        yield f"https://127.0.0.1:{server.server_address[1]}/faceforensics"
    finally:
        _stop(server, thread)


@pytest.fixture
def redirect_to(https_mirror):
    """A plain-HTTP server that answers every request with a 301 to the same path on the HTTPS mirror."""
    target = https_mirror.removesuffix("/faceforensics")
    seen: list[str] = []

    class Redirect(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

        def do_GET(self) -> None:
            seen.append(self.path)
            self.send_response(301)
            self.send_header("Location", target + self.path)
            self.send_header("Content-Length", "0")
            self.end_headers()

    server = QuietServer(("127.0.0.1", 0), Redirect)
    thread = _serve(server)
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/faceforensics", seen
    finally:
        _stop(server, thread)


def test_http_to_https_redirect_is_followed_including_resumed_ranges(
    mirror, redirect_to, tls_cert, tmp_path, monkeypatch
):
    monkeypatch.setenv("SSL_CERT_FILE", str(tls_cert))  # trust the test's own certificate, nothing else
    url, seen = redirect_to
    dropped = ORIG.format("001")
    mirror.faults[mirror.path(dropped)] = ["drop"]
    dest = tmp_path / "ffpp"

    got = ffpp.download(settings(mirror, base_url=url), dest, [], "c23", backoff_s=0.01)

    assert_same(mirror, dest, got)
    assert len(got) == 4 and PREFIX + "misc/filelist.json" in seen and PREFIX + dropped in seen
    size = mirror.file(dropped).stat().st_size
    # The Range header survives the redirect: the second request resumed at the cut.
    assert [r for r in mirror.requests if r[0] == mirror.path(dropped)] == [
        (mirror.path(dropped), None),
        (mirror.path(dropped), f"bytes={size // 2}-"),
    ]


def test_untrusted_certificate_fails_at_once_with_the_reason(mirror, https_mirror, tmp_path, monkeypatch):
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    t0 = time.monotonic()
    with dfpipe_lines() as lines, pytest.raises(ffpp.DownloadError) as info:
        ffpp.download(
            settings(mirror, base_url=https_mirror, retries=5),
            tmp_path / "ffpp",
            [],
            "c23",
            backoff_s=10,
        )
    assert time.monotonic() - t0 < 5  # one back-off of 10 s would show a retry
    msg = str(info.value)
    assert "misc/filelist.json: TLS certificate rejected: self-signed certificate" in msg
    assert "not retried" in msg and "ffpp.base_url" in msg
    assert not any("retrying" in line for line in lines) and mirror.requests == []
