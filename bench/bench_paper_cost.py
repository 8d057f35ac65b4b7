"""What a paper-size FF++ run costs: CPU-hours of the data path, disk per quality, CPU-hours per model.

    PYTHONPATH=src .venv/bin/python bench/bench_paper_cost.py [--config configs/ffpp-paper.yaml] [--videos 2]
        [--seconds 4] [--ffpp-frames 510] [--steps 2] [--max-batch 32] [--detectors NAME ...] [--md cost.md]

Everything is measured here, in this process, and scaled to FF++ (1,000 originals + 1,000 videos per
method, split 720/140/140 videos per method, `--ffpp-frames` frames per video on average: the FF++ paper
counts ≈510k frames in its 1,000 originals) at the config's frame counts, qualities, crop size and detectors.
Times are CPU seconds (this process's threads plus its finished children: ffmpeg, cjpeg): unlike wall
seconds, they barely move when other jobs share the machine.
- data path, on `--videos` FF++-like clips (bench_faces.make_clips: 1280×720 H.264 CRF 23, a real face):
  decoding (the faces stage's own iter_frames pass, which decodes every frame up to the last planned one)
  per decoded frame; the rest of dfpipe.data.faces.crop_batch (detection, alignment, crop, PNG) per planned
  frame; then on the crops it produced, per quality: dfpipe.data.compress.compress_batch per crop,
  dfpipe.data.fidelity.measure_batch per measured crop, dfpipe.data.shards.write_split per sample;
- disk: the faces and jpeg tables written with dfpipe.io.write_parquet (file bytes per row) and one shard per
  quality written with write_split (bytes up to its last member: tar headers included, the end-of-archive
  padding, once per shard, left out);
- training: each detector built by dfpipe.models.experiments.build_detector (pretrained: none) at its input size,
  with its optimizer, batch size and epochs from the config, channels_last as the trainer, on random input:
  one warm-up step, then `--steps` forward+backward steps, then one eval forward (validation after every
  epoch, test scoring once), on `--train-threads` torch threads (1: core time without threads waiting on
  each other, which on busy cores burns CPU too). Batches above `--max-batch` (the ResNets' 128) are timed
  at that size and scaled per image. An epoch is the trainer's: 2 × the larger class's training images.
  Loader work (JPEG decoding, augmentation, ELA) is left out: small next to a CNN step on a CPU.
No GPU is used: the training figures are CPU figures. The one GPU measurement on record is printed beside
EfficientNet-B4's. Prints one table (markdown with --md); never asserts. About 4 CPU-minutes, most of it the
ResNet-50, B4, multi-attention and Xception steps: 4.6 minutes on 2 shared cores.
"""

from __future__ import annotations

import argparse
import io
import tarfile
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import yaml
from bench_faces import clip_videos, cpu_seconds, decode_to_pipe, make_clips

from dfpipe import assets
from dfpipe.data.compress import compress_batch
from dfpipe.data.faces import crop_batch
from dfpipe.data.fidelity import measure_batch
from dfpipe.data.frames import plan_batch
from dfpipe.data.layout import METHODS, ORIGINAL
from dfpipe.data.shards import write_split
from dfpipe.io import write_parquet
from dfpipe.models.experiments import ABLATION_SUFFIX, ALL, build_detector, detector_spec, runs, training_settings
from dfpipe.tools import find_cjpeg

REPO = Path(__file__).resolve().parents[1]
VIDEOS_PER_METHOD = 1000  # FF++: 1,000 originals and 1,000 videos per manipulation method
SPLIT_VIDEOS = {"train": 720, "val": 140, "test": 140}  # per method: the official split's videos
# The one GPU figure on record (/work/shared/ENVIRONMENT.md, "The GPU machine (H200)").
H200 = {
    "detector": "efficientnet_b4",
    "text": "H200, 2026-11-30: EfficientNet-B4@380 batch 32 AMP + channels_last, trainer steady state 449 img/s",
    "images_per_s": 449.0,
}

Row = tuple[str, str, str, str]  # what, measured here, paper run, arithmetic


def merged_config(path: Path) -> dict:
    """`path` merged over config.yaml, as Snakemake merges a --configfile."""

    def merge(base: dict, over: dict) -> dict:
        out = dict(base)
        for k, v in over.items():
            out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
        return out

    return merge(yaml.safe_load((REPO / "config.yaml").read_text()), yaml.safe_load(path.read_text()))


def frames_of(config: dict, method: str, per_method: dict | None = None) -> int:
    per = (config["frames"]["per_method"] or {}) if per_method is None else per_method
    return int(per.get(method, config["frames"]["per_video"]))


def methods(config: dict) -> list[str]:
    return [ORIGINAL, *(m for m in config["dataset"]["methods"] if m in METHODS)]


def cpu_timed(work: Callable[[], object]) -> tuple[object, float]:
    """(result, CPU seconds) of one call."""
    start = cpu_seconds()
    result = work()
    return result, cpu_seconds() - start


def file_bytes(write: Callable[[Path], object]) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "out"
        write(path)
        return sum(p.stat().st_size for p in ([path] if path.is_file() else path.rglob("*")) if p.is_file())


def tar_content_bytes(path: Path) -> int:
    """Bytes of a tar up to its last member's (512-padded) data: headers included, end-of-archive padding not."""
    with tarfile.open(path) as tar:
        return max(m.offset_data + -(-m.size // 512) * 512 for m in tar.getmembers())


# -- data path -----------------------------------------------------------------------------------------------
def measure_data_path(args: argparse.Namespace, config: dict) -> dict:
    clips = make_clips(args.workdir, args.videos, args.seconds)
    videos = clip_videos(clips, "train")
    settings, model = config["faces"], assets.face_detector_model()
    plan = plan_batch(videos, config["frames"]["per_video"], {})
    crop_batch(plan.iloc[:2], videos, args.workdir, settings, model)  # warm-up: imports, model load
    faces, faces_cpu = cpu_timed(lambda: crop_batch(plan, videos, args.workdir, settings, model, args.threads))
    by_video = [(args.workdir / v.path, list(plan[plan.key == v.key].frame_index)) for v in videos.itertuples()]
    _, decode_cpu = cpu_timed(lambda: [decode_to_pipe(path, idx, 1) for path, idx in by_video])
    decoded = sum(max(idx) + 1 for _, idx in by_video)  # the pass stops at the last planned frame
    ok = faces[faces.status == "ok"]
    out = {
        "clips": f"{len(clips)} × {args.seconds:g} s 1280×720 H.264 clips, {len(plan)} planned frames, {len(ok)} faces",
        "decode_s_per_frame": decode_cpu / decoded,
        "faces_s_per_frame": max(faces_cpu - decode_cpu, 0.0) / len(plan),
        "faces_bytes_per_crop": file_bytes(lambda p: write_parquet(p, faces)) / len(faces),
        "png_bytes_per_crop": ok.crop_png.map(len).mean(),
        "qualities": {},
    }
    cjpeg, flags = find_cjpeg(), config["compress"]["cjpeg_flags"]
    compress_batch(ok.iloc[:2], 90, flags, cjpeg, 1)  # warm-up: version probe
    for q in config["compress"]["qualities"]:
        jpeg, compress_cpu = cpu_timed(lambda q=q: compress_batch(faces, q, flags, cjpeg, args.threads))
        _, quality_cpu = cpu_timed(lambda jpeg=jpeg: measure_batch(faces, jpeg))
        with tempfile.TemporaryDirectory() as tmp:
            _, shard_cpu = cpu_timed(lambda jpeg=jpeg, q=q, tmp=tmp: write_split([jpeg], q, "train", 1, Path(tmp)))
            shard_bytes = tar_content_bytes(next(Path(tmp).glob("train-*.tar")))
        out["qualities"][q] = {
            "compress_s": compress_cpu / len(jpeg),
            "quality_s": quality_cpu / len(jpeg),
            "shards_s": shard_cpu / len(jpeg),
            "jpeg_bytes": jpeg["bytes"].mean(),
            "table_bytes": file_bytes(lambda p, jpeg=jpeg: write_parquet(p, jpeg)) / len(jpeg),
            "shard_bytes": shard_bytes / len(jpeg),
        }
    return out


def data_rows(args: argparse.Namespace, config: dict, m: dict) -> tuple[list[Row], float]:
    n_videos = VIDEOS_PER_METHOD * len(methods(config))
    crops = VIDEOS_PER_METHOD * sum(frames_of(config, k) for k in methods(config))
    per_video, sampled = config["frames"]["per_video"], config["fidelity"]["frames_per_video"]
    measured = n_videos * (min(sampled, per_video) if sampled else per_video)
    qualities = config["compress"]["qualities"]
    hours: dict[str, float] = {}
    rows: list[Row] = []

    def cpu_row(what: str, seconds: float, unit: str, count: int, count_text: str) -> None:
        hours[what] = seconds * count / 3600
        rows.append(
            (what, f"{seconds * 1000:.1f} CPU ms / {unit}", f"{hours[what]:.1f} CPU-h", f"× {count_text} {unit}s")
        )

    decoded = n_videos * args.ffpp_frames
    cpu_row(
        "faces: decoding",
        m["decode_s_per_frame"],
        "decoded frame",
        decoded,
        f"{n_videos:,} videos × {args.ffpp_frames}",
    )
    cpu_row("faces: detect, align, crop, PNG", m["faces_s_per_frame"], "planned frame", crops, f"{crops:,}")
    for q in qualities:
        cpu_row(f"compress q{q}", m["qualities"][q]["compress_s"], "crop", crops, f"{crops:,}")
    for q in qualities:
        cpu_row(f"quality (PSNR/SSIM) q{q}", m["qualities"][q]["quality_s"], "measured crop", measured, f"{measured:,}")
    for q in qualities:
        cpu_row(f"shards q{q}", m["qualities"][q]["shards_s"], "sample", crops, f"{crops:,}")
    total = sum(hours.values())
    rows.append(("data path, total", "", f"**{total:.1f} CPU-h**", "sum of the rows above"))

    per_1000 = 1000 * per_video

    def disk_row(what: str, per_crop: float, note: str, image: float | None = None) -> None:
        of_which = f" (image {image / 1e3:.1f} kB)" if image else ""
        rows.append(
            (
                what,
                f"{per_crop / 1e3:.1f} kB / crop{of_which}; {per_crop * per_1000 / 1e9:.2f} GB / 1,000 videos",
                f"{per_crop * crops / 1e9:.1f} GB",
                f"× {per_1000:,} crops (1,000 videos × {per_video}); × {crops:,} crops{note}",
            )
        )

    disk_row(
        "disk: lossless crops (faces tables, PNG)",
        m["faces_bytes_per_crop"],
        ", once for all qualities",
        m["png_bytes_per_crop"],
    )
    for q in qualities:
        mq = m["qualities"][q]
        disk_row(f"disk: crops q{q} (jpeg tables)", mq["table_bytes"], "", mq["jpeg_bytes"])
    for q in qualities:
        disk_row(f"disk: shards q{q}", m["qualities"][q]["shard_bytes"], "")
    all_q = crops * sum(m["qualities"][q]["table_bytes"] + m["qualities"][q]["shard_bytes"] for q in qualities)
    disk = all_q + crops * m["faces_bytes_per_crop"]
    rows.append(
        (
            "disk, total",
            "",
            f"**{disk / 1e9:.0f} GB**",
            f"lossless crops + crops and shards at {len(qualities)} qualities",
        )
    )
    return rows, total


# -- training ------------------------------------------------------------------------------------------------
def epoch_images(config: dict, spec: dict, methods_trained: str) -> int:
    """Images per epoch as the trainer draws them: labels alternate and the smaller class is cycled, so an
    epoch is 2 × the larger class (dfpipe.data.loader.ShardStream)."""
    per_method = spec.get("frames_per_method") or config["frames"]["per_method"] or {}
    fakes = [k for k in methods(config)[1:] if methods_trained in (ALL, k)]
    real = SPLIT_VIDEOS["train"] * frames_of(config, ORIGINAL)
    # frames_per_method subsamples training frames, never adds any
    fake = SPLIT_VIDEOS["train"] * sum(min(frames_of(config, k), frames_of(config, k, per_method)) for k in fakes)
    return 2 * max(real, fake)


def eval_images(config: dict) -> int:
    return sum(SPLIT_VIDEOS["val"] * frames_of(config, k) for k in methods(config))


def time_steps(spec: dict, settings: dict, batch: int, steps: int, threads: int) -> dict:
    """CPU and wall seconds per training step, and per image of an eval forward, of one detector."""
    import torch

    # With one thread, CPU time is compute alone: on shared cores, threads waiting on each other also burn
    # CPU (ResNet-18 here: 0.12 CPU s/image on 1 thread, 0.17-0.21 on 2 busy cores)
    torch.set_num_threads(threads)

    from dfpipe.models.train import create_optimizer, resolve_settings

    s = resolve_settings(settings)
    detector = build_detector({**spec, "pretrained": "none"})
    model = detector.to(memory_format=torch.channels_last) if s["channels_last"] else detector
    size = detector.input_size
    x = torch.randn(batch, 3, size, size).contiguous(memory_format=torch.channels_last)
    y = torch.arange(batch).remainder(2).float()
    optimizer = create_optimizer(model, s)
    model.train()

    def step() -> None:
        loss = detector.loss(model(x), y)["loss"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    step()  # warm-up: allocations, kernel choices, optimizer state
    cpu, wall = time.process_time(), time.perf_counter()
    for _ in range(steps):
        step()
    cpu, wall = (time.process_time() - cpu) / steps, (time.perf_counter() - wall) / steps
    model.eval()
    with torch.no_grad():
        eval_cpu = time.process_time()
        model(x)
        eval_cpu = (time.process_time() - eval_cpu) / batch
    weights = sum(t.nbytes for t in model.state_dict().values())
    buf = io.BytesIO()
    torch.save(optimizer.state_dict(), buf)
    # best.pt holds the weights; last.pt the weights, the optimizer state and the best weights again
    return {"size": size, "cpu": cpu, "wall": wall, "eval_cpu": eval_cpu, "ckpt": 3 * weights + buf.tell()}


def model_cost(args: argparse.Namespace, config: dict, name: str) -> dict:
    """One detector's figures: CPU seconds per step, and CPU-hours of training it on FF++ at the config's
    settings plus its evaluation (validation after each epoch, test scoring once: FF++'s val and test splits
    are the same size)."""
    spec = detector_spec(config, name)
    settings = training_settings(config, spec)
    batch, epochs = int(settings["batch_size"]), int(settings["epochs"])
    timed_batch = min(batch, args.max_batch) if args.max_batch else batch
    t = time_steps(spec, settings, timed_batch, args.steps, args.train_threads)
    step_cpu = t["cpu"] / timed_batch * batch
    images = epoch_images(config, spec, ALL)
    steps, evals = images // batch, eval_images(config) * (epochs + 1)
    hours = (step_cpu * steps * epochs + t["eval_cpu"] * evals) / 3600
    at = f"timed at batch {timed_batch}: {t['wall']:.1f} s wall" + (
        ", scaled per image" if timed_batch != batch else ""
    )
    print(f"  timed {name}: {step_cpu:.1f} CPU s / step ({at})", flush=True)
    return {
        **t,
        **{"name": name, "batch": batch, "at": at, "epochs": epochs, "step_cpu": step_cpu},
        **{"images": images, "steps": steps, "evals": evals, "hours": hours},
    }


def train_rows(costs: list[dict]) -> list[Row]:
    rows: list[Row] = []
    for c in costs:
        rows.append(
            (
                f"train {c['name']} ({c['size']} px, batch {c['batch']}, {c['epochs']} epochs)",
                f"{c['step_cpu']:.1f} CPU s / step ({c['at']}); checkpoints {c['ckpt'] / 1e6:.0f} MB",
                f"{c['hours']:,.0f} CPU-h",
                f"× {c['steps']:,} steps/epoch ({c['images']:,} images ÷ {c['batch']}) × {c['epochs']} epochs "
                f"+ {c['eval_cpu'] * 1000:.0f} CPU ms/image × {c['evals']:,} eval images",
            )
        )
        if c["name"] == H200["detector"]:
            gpu_h = c["images"] * c["epochs"] / H200["images_per_s"] / 3600
            rows.append(
                (
                    f"  GPU on record for {c['name']}",
                    H200["text"],
                    f"≈ {gpu_h:.1f} GPU-h at 380 px",
                    f"{c['images']:,} images × {c['epochs']} epochs ÷ {H200['images_per_s']:.0f} img/s (training "
                    f"steps only; not measured at the paper's {c['size']} px)",
                ),
            )
    return rows


def grid_row(config: dict, costs: list[dict]) -> Row | None:
    """CPU-hours and checkpoint bytes of every model the config trains (experiments.runs), from the
    per-detector figures; None unless every detector of the grid was timed."""
    by_name = {c["name"]: c for c in costs}
    grid = runs(config)
    hours = disk = 0.0
    for run in grid:
        base = by_name.get(run.detector.removesuffix(ABLATION_SUFFIX))
        if base is None:
            return None
        size = epoch_images(config, detector_spec(config, run.detector), run.methods)
        hours += base["hours"] * size / base["images"]
        disk += base["ckpt"]
    return (
        "train, every model of the grid",
        f"{len(grid)} models; checkpoints {disk / 1e9:.0f} GB",
        f"**{hours:,.0f} CPU-h**",
        "per-detector figures × each run's epoch size (single-method and fewer-frames runs are smaller)",
    )


# -- output --------------------------------------------------------------------------------------------------
def render(rows: list[Row], markdown: bool) -> str:
    head: Row = ("what", "measured here", "paper run (FF++)", "arithmetic")
    if markdown:
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])
    widths = [max(len(r[i].replace("**", "")) for r in [head, *rows]) for i in range(3)]
    return "\n".join(
        "  ".join(c.replace("**", "").ljust(w) for c, w in zip(r[:3], widths, strict=True)) + "  " + r[3]
        for r in [head, *rows]
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", type=Path, default=REPO / "configs/ffpp-paper.yaml")
    ap.add_argument("--videos", type=int, default=2, help="clips for the data path")
    ap.add_argument("--seconds", type=float, default=4.0, help="length of each clip")
    ap.add_argument("--threads", type=int, default=2, help="threads of the faces and compress calls")
    ap.add_argument("--ffpp-frames", type=int, default=510, help="mean frames per FF++ video (decoded each)")
    ap.add_argument("--steps", type=int, default=2, help="timed training steps per detector, after one warm-up")
    ap.add_argument(
        "--max-batch",
        type=int,
        default=32,
        help="time larger config batches at this size, scaled per image (0: no cap)",
    )
    ap.add_argument("--train-threads", type=int, default=1, help="torch threads of the training steps")
    ap.add_argument("--detectors", nargs="+", help="config detector names (default: all)")
    ap.add_argument("--skip-train", action="store_true", help="data path and disk only")
    ap.add_argument("--md", type=Path, help="also write the table as markdown here")
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/dfpipe-bench-faces"))
    args = ap.parse_args()
    config = merged_config(args.config)

    start = time.perf_counter()
    data = measure_data_path(args, config)
    print(f"data path measured on {data['clips']} ({time.perf_counter() - start:.0f} s)", flush=True)
    rows, _ = data_rows(args, config, data)
    if not args.skip_train:
        costs = [model_cost(args, config, name) for name in args.detectors or [d["name"] for d in config["detectors"]]]
        rows += train_rows(costs)
        grid = grid_row(config, costs)
        rows += [grid] if grid else []
    n_videos = VIDEOS_PER_METHOD * len(methods(config))
    extra = "".join(f", {k} {v}" for k, v in (config["frames"]["per_method"] or {}).items())
    print(
        f"\nPaper run: {args.config.name}, {n_videos:,} FF++ videos ({', '.join(methods(config))}), "
        f"{config['frames']['per_video']} frames per video{extra}, "
        f"qualities {config['compress']['qualities']}, {config['faces']['size']}-px crops. CPU figures from this "
        f"machine's CPU time (own threads + ffmpeg/cjpeg children); no GPU was used.\n"
    )
    table = render(rows, markdown=False)
    print(table)
    print(f"\n({time.perf_counter() - start:.0f} s in all)")
    if args.md:
        args.md.write_text(render(rows, markdown=True) + "\n")
        print(f"markdown table written to {args.md}")


if __name__ == "__main__":
    main()
