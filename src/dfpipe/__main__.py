"""`python -m dfpipe predict|export ...` (also the `dfpipe` console script): use a trained model file."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from dfpipe.config import schema_defaults

# the int8 bound, here rather than imported: dfpipe.apps.export loads torch, and `--help` should not wait for it
INT8_MAX_FLIP_RATE = 0.01


def _at_least_one(text: str) -> int:
    """argparse type of a count: a whole number of 1 or more (argparse names the option in its message)."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number of 1 or more, not {text!r}")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dfpipe", description="Use a detector trained by the dfpipe workflow.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser(
        "predict",
        help="score videos, images or folders of them",
        description="Score each file with the model: faces cropped as in training, per-frame scores "
        "averaged to a video score, decided at the model's validation threshold.",
    )
    p.add_argument("paths", nargs="+", type=Path, metavar="PATH", help="a video, an image, or a folder of them")
    p.add_argument("--model", required=True, type=Path, help="model file, e.g. data/models/<detector>/<run>/best.pt")
    p.add_argument("--out", type=Path, default=Path("predictions"), help="output folder (default: ./predictions)")
    frames = schema_defaults("frames")["per_video"]  # the workflow's default; a config may plan fewer (the demo's 16)
    p.add_argument(
        "--frames",
        type=_at_least_one,
        default=frames,
        help=f"frames per video, evenly spaced (default {frames}, the config schema's frames.per_video)",
    )
    p.add_argument(
        "--quality",
        type=int,
        default=None,
        help="re-encode each face crop with MozJPEG at this quality before scoring (default: as decoded)",
    )
    p.add_argument("--heatmap", action="store_true", help="write Grad-CAM overlays (and an MP4 per video)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ... (default auto)")
    p.add_argument("--threads", type=_at_least_one, default=1, help="decoder threads per video (default 1)")

    e = sub.add_parser(
        "export",
        help="export a model file to ONNX or TorchScript",
        description="Write a file that runs without dfpipe, with input size, mean/std and the "
        "threshold in its metadata.",
    )
    e.add_argument("model", type=Path, help="model file, e.g. data/models/<detector>/<run>/best.pt")
    e.add_argument("--format", required=True, choices=["onnx", "torchscript"])
    e.add_argument(
        "--out",
        type=Path,
        default=None,
        help="output file (default: beside the model, MODEL.onnx / MODEL.torchscript.pt); never the model file "
        "itself, and an existing file only if it is an earlier dfpipe export",
    )
    e.add_argument(
        "--int8",
        action="store_true",
        help="ONNX only: also write an int8 dynamic-quantised variant (MODEL.int8.onnx), kept only after it is "
        "checked on validation crops: export reports the largest score change and how many crops change decision "
        "at the model's threshold",
    )
    e.add_argument(
        "--val-shards",
        type=Path,
        nargs="+",
        default=None,
        metavar="PATH",
        help="validation shards (.tar, or a folder holding val-*.tar) for the --int8 check (default: the "
        "workflow's <out>/shards/q<Q>/val-*.tar when MODEL lies in <out>/models/<detector>/q<Q>-<methods>/)",
    )
    e.add_argument(
        "--int8-max-flip-rate",
        type=float,
        default=INT8_MAX_FLIP_RATE,
        metavar="RATE",
        help=f"refuse the int8 file when more than this fraction of validation crops change decision (default "
        f"{INT8_MAX_FLIP_RATE}: int8 rounding moves every score a little, so crops at the threshold may flip, "
        f"but past 1 in 100 the int8 file no longer decides as the model; scores moved by up to 0.36 on one "
        f"trained detector)",
    )
    e.add_argument(
        "--int8-force",
        action="store_true",
        help="write the int8 file even above --int8-max-flip-rate or with no validation crops to check it on",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "predict":
            from dfpipe.apps.predict import run_predict

            _, files = run_predict(
                args.paths,
                args.model,
                args.out,
                frames_per_video=args.frames,
                quality=args.quality,
                heatmap=args.heatmap,
                device=args.device,
                threads=args.threads,
            )
            return int((files["status"] != "ok").any())
        from dfpipe.apps.export import export

        exported = export(
            args.model,
            args.format,
            args.out,
            int8=args.int8,
            val_shards=args.val_shards,
            int8_max_flip_rate=args.int8_max_flip_rate,
            int8_force=args.int8_force,
        )
        for path in exported:
            print(path)
        return 0
    except (OSError, ValueError, RuntimeError) as err:
        print(f"dfpipe {args.command}: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
