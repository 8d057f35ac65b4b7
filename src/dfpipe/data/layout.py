"""The FaceForensics++ folder layout and split files, shared by every source and stage."""

from __future__ import annotations

import json
import re
from pathlib import Path

from dfpipe.io import write_json

METHODS = ("Deepfakes", "Face2Face", "FaceSwap", "NeuralTextures")  # the paper's four: training grid and tables
ORIGINAL = "original"
# FF++'s later sets, test sources only (dfpipe.evaluation.test_sources.ffpp_tree): FaceShifter pairs youtube identities like the four;
# DeepFakeDetection (DFD) fakes paid actors, whose originals are a set of their own, and has no FF++ split.
FACESHIFTER = "FaceShifter"
DFD = "DeepFakeDetection"
DFD_ORIGINAL = "DeepFakeDetection_original"  # the official download script's name for the actors' originals
EXTRA_METHODS = (FACESHIFTER, DFD)
SPLITS = ("train", "val", "test")
# FF++ ids are three digits; anything else that could leave a folder (.., /, \, NUL) is refused.
SAFE_ID = re.compile(r"[A-Za-z0-9]{1,32}")
SPLITS_URL = "https://github.com/ondyari/FaceForensics/tree/master/dataset/splits"


def video_dir(method: str, compression: str) -> str:
    """Folder (relative to the dataset root) holding the videos of `method` at `compression`."""
    if method == ORIGINAL:
        return f"original_sequences/youtube/{compression}/videos"
    if method == DFD_ORIGINAL:
        return f"original_sequences/actors/{compression}/videos"
    return f"manipulated_sequences/{method}/{compression}/videos"


def originals_of(method: str) -> str:
    """The set of original videos that `method`'s fakes were made from."""
    return DFD_ORIGINAL if method == DFD else ORIGINAL


def mask_dir(method: str) -> str:
    return f"manipulated_sequences/{method}/masks/videos"


def identities(video_id: str) -> tuple[str, ...]:
    """Identities shown in a video: `000` for an original, (target, source) for a fake `000_003`."""
    return tuple(video_id.split("_"))


def read_splits(folder: str | Path) -> dict[str, str]:
    """Map every identity id to its split, from FF++-format train/val/test.json (lists of [a, b] pairs)."""
    folder = Path(folder)
    owner: dict[str, str] = {}
    for split in SPLITS:
        path = folder / f"{split}.json"
        if not path.is_file():
            raise FileNotFoundError(
                f"{path}: split file missing. FF++ ships train/val/test.json in its repository's dataset/splits/ "
                f"({SPLITS_URL}); copy them there or set splits.dir in config.yaml"
            )
        try:
            pairs = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ValueError(f"{path}: not valid JSON ({exc}); fix it or take FF++'s own from {SPLITS_URL}") from exc
        if not isinstance(pairs, list):
            raise ValueError(f"{path}: expected a list of [target, source] id pairs, got {type(pairs).__name__}")
        for i, pair in enumerate(pairs):
            if not (isinstance(pair, list) and len(pair) == 2 and all(isinstance(x, str) for x in pair)):
                raise ValueError(f"{path}: entry {i} {pair!r} is not a [target, source] pair of id strings")
            for ident in pair:
                # Ids become file names (`000_003.mp4`): nothing that could leave a folder is accepted.
                if not SAFE_ID.fullmatch(ident):
                    raise ValueError(
                        f"{path}: entry {i} has an unsafe id {ident!r}; ids are 1-32 letters or digits, like FF++'s 000"
                    )
                if owner.setdefault(ident, split) != split:
                    raise ValueError(
                        f"{path}: identity {ident} is also in the {owner[ident]} split; an identity must stay in "
                        "one split (else test faces leak into training): remove it from one of the files"
                    )
    return owner


def split_of(video_id: str, owner: dict[str, str]) -> str | None:
    """Split of a video: that of its identities (all of which must agree), or None if unlisted."""
    found = {owner.get(i) for i in identities(video_id)}
    if len(found) != 1:
        return None
    return found.pop()


def write_splits(folder: str | Path, pairs_by_split: dict[str, list[list[str]]]) -> None:
    for split in SPLITS:
        write_json(Path(folder) / f"{split}.json", pairs_by_split.get(split, []))
