"""The `ffpp` source: the FaceForensics++ v4 download protocol, made non-interactive and resumable.

Protocol facts (from the official faceforensics_download_v4.py): every file lives under `<server>/v3/`;
`misc/filelist.json` lists [a, b] identity pairs; the originals are the flattened ids and the fakes of a
method are `a_b` and `b_a` for every pair. The DeepFakeDetection sets have their own list,
`misc/deepfake_detection_filenames.json`: {"actors": [originals], "DeepFakesDetection": [fakes]} (the script's
spelling), names without suffix. Videos are at `<dataset_path>/<compression>/videos/<name>.mp4`, masks at
`manipulated_sequences/<Method>/masks/videos/<name>.mp4` (none for FaceShifter).

Unlike the official script this never prompts (terms of use are accepted in config), resumes partial
files with HTTP Range, retries transient failures with exponential back-off, and reports every missing file
at once instead of stopping at the first. A video counts as complete only once verified: its size where the
server announced one, and ffprobe reading every frame the container announces (a server whose
Content-Length is too small, or a dropped connection without one, leaves a short body that looks complete).
Verified files are recorded in `misc/verified.json`, so a rerun re-checks only files it has not verified.
"""

from __future__ import annotations

import http.client
import json
import logging
import os
import re
import ssl
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.error import HTTPError, URLError
from urllib.request import Request, urlopen

from dfpipe.data.layout import (
    DFD,
    DFD_ORIGINAL,
    EXTRA_METHODS,
    FACESHIFTER,
    METHODS,
    ORIGINAL,
    SAFE_ID,
    mask_dir,
    video_dir,
)
from dfpipe.io import write_json

logger = logging.getLogger(__name__)

SERVERS = {
    "EU2": "http://kaldir.vc.in.tum.de/faceforensics/",
    "CA": "http://falas.cmpt.sfu.ca:8100/",
    "EU": "http://canis.vc.in.tum.de:8100/",
}
COMPRESSIONS = ("raw", "c23", "c40")
FILELIST = "misc/filelist.json"
DFD_FILELIST = "misc/deepfake_detection_filenames.json"
DFD_KEYS = {DFD_ORIGINAL: "actors", DFD: "DeepFakesDetection"}  # set -> its key in DFD_FILELIST
# DFD names join actors, scene and a code with underscores (01_02__walking_down_street__YVGY8LOK).
SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,127}")
VERIFIED = "misc/verified.json"  # rel path -> [size, mtime_ns] of every video that passed verify_video
TOS_URL = SERVERS["EU2"] + "webpage/FaceForensics_TOS.pdf"
USER_AGENT = "dfpipe-ffpp/1"
CHUNK = 1 << 16
MAX_DELAY_S = 60.0


class DownloadError(RuntimeError):
    """Some files could not be downloaded; `failures` holds (relative path, url, reason) for each."""

    def __init__(self, message: str, failures: list[tuple[str, str, str]]):
        super().__init__(message)
        self.failures = failures


class _Transient(Exception):
    """A failure worth retrying (connection trouble, timeout, 5xx, short body)."""


class RefusedError(Exception):
    """The server answered with an error that a retry will not change (404, 403, ...)."""


class IncompleteError(Exception):
    """Every attempt gave a file that fails verification (the server's copy or every transfer is bad)."""


class _Untrusted(Exception):
    """The server's TLS certificate was rejected: no retry can change that."""


class _Invalid(Exception):
    """The bytes arrived but the video does not verify."""


@dataclass(frozen=True)
class Item:
    rel: str  # path under the dataset root, FF++ layout
    url: str


def base_url(settings: dict[str, Any]) -> str:
    """URL that every FF++ file path is relative to: `<server or base_url>/v3/`."""
    root = settings.get("base_url") or SERVERS.get(settings.get("server", "EU2"))
    if root is None:
        raise ValueError(f"ffpp.server: {settings.get('server')!r} is unknown; use one of {', '.join(SERVERS)}")
    if not root.startswith(("http://", "https://")):
        raise ValueError(f"ffpp.base_url: {root!r} is not an http(s) URL")
    return root.rstrip("/") + "/v3/"


def parse_filelist(data: bytes, source: str) -> list[tuple[str, str]]:
    """Validate FF++'s filelist.json (a list of [a, b] id pairs); `source` names it in errors."""
    try:
        pairs = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{source}: not valid JSON ({exc})") from exc
    if not isinstance(pairs, list) or not pairs:
        raise ValueError(f"{source}: expected a non-empty list of [a, b] id pairs")
    out = []
    for i, pair in enumerate(pairs):
        if not (isinstance(pair, list) and len(pair) == 2 and all(isinstance(x, str) for x in pair)):
            raise ValueError(f"{source}: entry {i} {pair!r} is not a pair of id strings")
        for ident in pair:
            if not SAFE_ID.fullmatch(ident):
                raise ValueError(
                    f"{source}: entry {i} {pair!r} has an unsafe id {ident!r} (ids must match {SAFE_ID.pattern})"
                )
        out.append((pair[0], pair[1]))
    return out


def parse_dfd_filelist(data: bytes, source: str) -> dict[str, list[str]]:
    """Validate the DeepFakeDetection file list: {"actors": [names], "DeepFakesDetection": [names]}."""
    try:
        lists = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{source}: not valid JSON ({exc})") from exc
    if not isinstance(lists, dict):
        raise ValueError(f"{source}: expected an object with the lists {sorted(DFD_KEYS.values())}")
    for key in DFD_KEYS.values():
        names = lists.get(key)
        if not isinstance(names, list) or not names:
            raise ValueError(f"{source}: {key!r} is not a non-empty list of video names")
        for i, name in enumerate(names):
            # Names become file names: nothing that could leave a folder is accepted.
            if not (isinstance(name, str) and SAFE_NAME.fullmatch(name)):
                raise ValueError(
                    f"{source}: {key}[{i}] {name!r} is not a safe video name (must match {SAFE_NAME.pattern})"
                )
    return {key: lists[key] for key in DFD_KEYS.values()}


def video_names(
    pairs: Sequence[tuple[str, str]],
    method: str,
    num_videos: int | None = None,
    dfd: dict[str, list[str]] | None = None,
) -> list[str]:
    """Names (no suffix) of the videos of `method`, in the official script's order, cut to `num_videos`;
    the DeepFakeDetection sets come from `dfd` (the parsed DFD_FILELIST)."""
    if method in DFD_KEYS:
        if dfd is None:
            raise ValueError(f"ffpp: the {method} names come from {DFD_FILELIST}, which was not given")
        names = list(dfd[DFD_KEYS[method]])
    elif method == ORIGINAL:
        names = [ident for pair in pairs for ident in pair]
    else:
        names = [name for a, b in pairs for name in (f"{a}_{b}", f"{b}_{a}")]
    return names[:num_videos] if num_videos else names


def plan(
    pairs: Sequence[tuple[str, str]],
    base: str,
    methods: Sequence[str],
    compression: str,
    masks: bool = False,
    num_videos: int | None = None,
    dfd: dict[str, list[str]] | None = None,
) -> list[Item]:
    """Every file to fetch: originals first (the actors' too when DeepFakeDetection is asked for), then each
    method's videos and (if `masks`) its masks."""
    items = []
    originals = (ORIGINAL, DFD_ORIGINAL) if DFD in methods else (ORIGINAL,)
    for method in (*originals, *methods):
        names = video_names(pairs, method, num_videos, dfd)
        folders = [video_dir(method, compression)]
        # The server has no masks of originals or of FaceShifter (the official script refuses them).
        if masks and method not in (*originals, FACESHIFTER):
            folders.append(mask_dir(method))
        for folder in folders:
            # FF++ layout folders coincide with the server's paths under v3/.
            items += [Item(f"{folder}/{n}.mp4", f"{base}{folder}/{n}.mp4") for n in names]
    return items


def _content_range(value: str | None) -> tuple[int | None, int | None]:
    """(start, total) from `bytes start-end/total` or `bytes */total`; None where absent or `*`."""
    m = re.fullmatch(r"\s*bytes\s+(?:(\d+)-\d+|\*)/(\d+|\*)\s*", value or "")
    if not m:
        return None, None
    start, total = m.groups()
    return (int(start) if start else None), (int(total) if total != "*" else None)


def verify_video(path: Path) -> str | None:
    """None if ffprobe reads every frame of the first video stream that the container announces, else why not.

    Demuxing every packet reads the whole file without decoding it, so a body cut short anywhere (moov atom
    missing, or packets pointing past the end) shows up at a fraction of a decode's cost.
    """
    cmd = [
        "ffprobe",
        "-v",
        "error",
        "-select_streams",
        "v:0",
        "-count_packets",
        "-show_entries",
        "stream=nb_frames,nb_read_packets:format=duration",
        "-of",
        "json",
        str(path),
    ]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    except FileNotFoundError as exc:
        raise RuntimeError("ffprobe not found: install ffmpeg (scripts/setup.sh does) to verify downloads") from exc
    errors = [
        re.sub(r"^\[[^]]*\] ", "", line).replace(str(path), path.name)
        for line in proc.stderr.splitlines()
        if line.strip()
    ]
    if proc.returncode or errors:
        return f"ffprobe: {errors[-1] if errors else f'exit status {proc.returncode}'}"
    info = json.loads(proc.stdout or "{}")
    streams = info.get("streams") or []
    if not streams:
        return "ffprobe: no video stream"
    if not float(info.get("format", {}).get("duration") or 0) > 0:
        return "ffprobe: no duration"
    read, announced = int(streams[0].get("nb_read_packets") or 0), str(streams[0].get("nb_frames") or "")
    if read == 0 or (announced.isdigit() and read < int(announced)):
        return f"ffprobe: read {read} of {announced or 'an unknown number of'} frames"
    return None


def _attempt(url: str, part: Path, timeout_s: float) -> None:
    """One request for `url`, appending to `part` (resuming from its size); complete means size-verified."""
    have = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": USER_AGENT}
    if have:
        headers["Range"] = f"bytes={have}-"
    try:
        resp = urlopen(Request(url, headers=headers), timeout=timeout_s)
    except HTTPError as exc:
        exc.close()
        if exc.code == 416 and have:
            _, total = _content_range(exc.headers.get("Content-Range"))
            if total == have:
                return  # the previous run got every byte but stopped before renaming
            part.unlink()
            raise _Transient(f"server refused to resume at byte {have}; restarting") from exc
        if exc.code >= 500 or exc.code in (408, 429):
            raise _Transient(f"HTTP {exc.code} {exc.reason}") from exc
        raise RefusedError(f"HTTP {exc.code} {exc.reason}") from exc
    except (OSError, http.client.HTTPException) as exc:
        reason = exc.reason if isinstance(exc, URLError) else exc
        if isinstance(reason, ssl.SSLCertVerificationError):
            raise _Untrusted(f"TLS certificate rejected: {reason.verify_message or reason}") from exc
        raise _Transient(f"{type(exc).__name__}: {exc}") from exc

    with resp:
        if resp.status == 206:
            start, total = _content_range(resp.headers.get("Content-Range"))
            if start != have:
                part.unlink()
                raise _Transient(f"server resumed at byte {start}, not {have}; restarting")
            mode = "ab"
        else:
            # A 200 is the whole file (a server that ignores Range): start over rather than append.
            length = resp.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            have, mode = 0, "wb"
        with part.open(mode) as fh:
            while True:
                try:
                    chunk = resp.read(CHUNK)
                except (OSError, http.client.HTTPException) as exc:
                    raise _Transient(f"{type(exc).__name__} after {have} bytes: {exc}") from exc
                if not chunk:
                    break
                fh.write(chunk)
                have += len(chunk)
    # urllib returns a short body silently when the connection drops, so the size is the only proof.
    if total is not None and have < total:
        raise _Transient(f"connection closed after {have} of {total} bytes")
    if total is not None and have > total:
        part.unlink()
        raise _Transient(f"got {have} bytes but the server announced {total}; restarting")


def fetch(
    url: str,
    path: Path,
    retries: int,
    timeout_s: float,
    backoff_s: float,
    verify: Callable[[Path], str | None] | None = None,
) -> None:
    """Download `url` to `path` via `<path>.part`, resuming and retrying; `path` appears only when complete.

    Complete means: as many bytes as announced and, with `verify`, nothing wrong found by `verify(part)`. Raises
    RefusedError on a non-retryable HTTP error (404, ...), IncompleteError when every attempt fails
    verification, and DownloadError once retries of transient failures are spent.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    part = path.with_name(path.name + ".part")
    failures = invalid = 0
    while True:
        before = part.stat().st_size if part.exists() else 0
        if before:
            logger.info(f"ffpp: resuming {path.name} at byte {before}")
        try:
            _attempt(url, part, timeout_s)
            problem = verify(part) if verify else None
            if problem:
                raise _Invalid(problem)
        except _Invalid as exc:
            invalid += 1
            size = part.stat().st_size
            grew = size > before
            if invalid > retries:
                part.unlink()
                raise IncompleteError(
                    f"still fails verification after {retries + 1} attempts ({exc}); the server's copy may be "
                    "damaged — try another ffpp.server"
                ) from exc
            # A body that grew may just be cut short (no Content-Length, or a wrong one): ask for the rest.
            # One that did not grow is all the server has, so start again from byte 0.
            if not grew:
                part.unlink()
            logger.info(
                f"ffpp: {path.name}: {size} bytes fail verification ({exc}); "
                f"fetching {'the rest' if grew else 'it again'}"
            )
            continue
        except _Transient as exc:
            # Progress resets the count: a slow, flaky link still finishes a large file.
            grew = part.exists() and part.stat().st_size > before
            failures = 0 if grew else failures + 1
            if failures > retries:
                raise DownloadError(
                    f"{url}: giving up after {retries + 1} attempts ({exc}); the server may be down — "
                    f"try another ffpp.server; rerunning resumes from {part}",
                    [(str(path), url, str(exc))],
                ) from exc
            delay = min(backoff_s * 2 ** max(failures - 1, 0), MAX_DELAY_S)
            logger.warning(f"ffpp: {path.name}: {exc}; retrying in {delay:.2g} s")
            time.sleep(delay)
            continue
        except _Untrusted as exc:
            raise DownloadError(
                f"{url}: {exc}; not retried, as a certificate does not heal — check the host of ffpp.base_url "
                "(its certificate must be valid for its name and signed by a trusted authority) or use another "
                "ffpp.server",
                [(str(path), url, str(exc))],
            ) from exc
        os.replace(part, path)
        return


def _load_filelist(
    rel: str,
    parse: Callable[[bytes, str], Any],
    base: str,
    dest: Path,
    retries: int,
    timeout_s: float,
    backoff_s: float,
) -> Any:
    """The server's file list `rel` parsed by `parse`, fetched once and kept under `dest` (so reruns need no
    request)."""
    path = dest / rel
    url = base + rel
    if not path.is_file():
        try:
            fetch(url, path, retries, timeout_s, backoff_s)
        except RefusedError as exc:
            raise DownloadError(
                f"{url}: {exc}; the file list is missing — check ffpp.server / ffpp.base_url",
                [(rel, url, str(exc))],
            ) from exc
        try:
            return parse(path.read_bytes(), url)
        except ValueError:
            path.unlink()  # never keep a bad list as if it were the server's
            raise
    return parse(path.read_bytes(), str(path))


def download(
    settings: dict[str, Any],
    dest: Path,
    methods: Sequence[str],
    compression: str,
    *,
    backoff_s: float = 1.0,
) -> list[Path]:
    """Fetch the FF++ originals and `methods` (any of METHODS and EXTRA_METHODS; DeepFakeDetection brings its
    actors' originals) at `compression` into `dest` (FF++ layout).

    `settings` is config["ffpp"]. Files already complete and verified are skipped without a request. Returns
    the video (and mask) paths relative to `dest`. Missing files (404, or failing verification on every
    attempt) do not stop the others; they are listed together in one DownloadError at the end. `backoff_s`
    is the first retry delay.
    """
    if not settings.get("accept_tos"):
        raise ValueError(
            "ffpp.accept_tos is false: FaceForensics++ may only be downloaded after accepting its terms of use "
            f"({TOS_URL}); set ffpp.accept_tos: true in config.yaml once you have"
        )
    unknown = [m for m in methods if m not in (*METHODS, *EXTRA_METHODS)]
    if unknown:
        raise ValueError(f"ffpp: unknown methods {unknown}; allowed: {', '.join((*METHODS, *EXTRA_METHODS))}")
    if compression not in COMPRESSIONS:
        raise ValueError(f"ffpp: compression {compression!r} is not one of {', '.join(COMPRESSIONS)}")
    dest = Path(dest)
    base = base_url(settings)
    retries, timeout_s = settings.get("retries", 5), settings.get("timeout_s", 60)

    lists = (base, dest, retries, timeout_s, backoff_s)
    pairs = _load_filelist(FILELIST, parse_filelist, *lists)
    dfd = _load_filelist(DFD_FILELIST, parse_dfd_filelist, *lists) if DFD in methods else None
    items = plan(pairs, base, methods, compression, settings.get("masks", False), settings.get("num_videos"), dfd)
    logger.info(f"ffpp: {len(items)} files from {base} into {dest}")
    verified = _Verified(dest / VERIFIED)
    done: list[Path] = []
    failures: list[tuple[str, str, str]] = []
    fetched, stopped = 0, ""
    try:
        for i, item in enumerate(items, 1):
            path = dest / item.rel
            if path.is_file():
                # Files from before verification existed (or from a killed run) are checked once.
                problem = None if verified.has(item.rel, path) else verify_video(path)
                if problem is None:
                    verified.add(item.rel, path)
                    done.append(Path(item.rel))
                    continue
                logger.info(f"ffpp: [{i}/{len(items)}] {item.rel} on disk is incomplete ({problem}); fetching it again")
                path.unlink()
            try:
                fetch(item.url, path, retries, timeout_s, backoff_s, verify=verify_video)
            except (RefusedError, IncompleteError) as exc:
                logger.warning(f"ffpp: [{i}/{len(items)}] MISSING {item.rel}: {exc} ({item.url})")
                failures.append((item.rel, item.url, str(exc)))
                continue
            except DownloadError as exc:
                # Retries spent: the server is likely down, so trying every other file would only wait longer.
                failures += [(item.rel, item.url, reason) for _, _, reason in exc.failures]
                stopped = f"stopped at file {i} of {len(items)}: {exc}\n"
                break
            verified.add(item.rel, path)
            fetched += 1
            done.append(Path(item.rel))
            logger.info(f"ffpp: [{i}/{len(items)}] {item.rel} ({path.stat().st_size} bytes, verified)")
    finally:
        verified.save()
    logger.info(f"ffpp: {fetched} downloaded, {len(done) - fetched} already present, {len(failures)} missing")
    if failures:
        lines = "\n".join(f"  {rel}: {reason} ({url})" for rel, url, reason in failures)
        raise DownloadError(
            f"ffpp: {len(failures)} of {len(items)} files could not be downloaded complete from {base} "
            f"({len(done)} verified files are in {dest}; rerunning fetches only what is missing):\n{stopped}{lines}",
            failures,
        )
    return done


class _Verified:
    """Record of verified videos (size and mtime), so a rerun skips ffprobe on files it already checked."""

    def __init__(self, path: Path):
        self.path = path
        try:
            self.entries: dict[str, list[int]] = json.loads(path.read_text()) if path.is_file() else {}
        except json.JSONDecodeError:
            self.entries = {}  # a damaged record only costs a re-check
        self.changed = False

    @staticmethod
    def _stamp(path: Path) -> list[int]:
        st = path.stat()
        return [st.st_size, st.st_mtime_ns]

    def has(self, rel: str, path: Path) -> bool:
        return self.entries.get(rel) == self._stamp(path)

    def add(self, rel: str, path: Path) -> None:
        stamp = self._stamp(path)
        if self.entries.get(rel) != stamp:
            self.entries[rel] = stamp
            self.changed = True

    def save(self) -> None:
        if self.changed:
            write_json(self.path, self.entries)
            self.changed = False
