"""The detectors and their training.

`detectors` registers the architectures (Meso4, MesoInception4, timm backbones, multi-attention) and `weights`
finds pretrained weights (hub, packaged file or none); `ela` is the error-level input some detectors add.
`experiments` turns a config entry into a detector and a training job, `train` runs it (resumable, one GPU,
several, or the CPU) with `checkpoint` keeping its resume point, and `modelfile` writes and reads the deployable
`best.pt`. The names a config may use are checked without torch by `dfpipe.model_names`.
"""
