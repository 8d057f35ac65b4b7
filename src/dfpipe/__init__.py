"""dfpipe: FaceForensics++ videos to WebDataset shards under MozJPEG compression, and detectors on them."""

__version__ = "0.1.0"
