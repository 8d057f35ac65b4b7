"""The data path: a source's videos to WebDataset shards.

`sources` fetch or build the videos (the embedded demo, a local FF++-layout tree, the FF++ download) and `manifest` lists them with their split and batch; `frames` plans and decodes frames, `faces` (with
`landmarks`) detects, aligns and crops the faces; `compress` encodes each crop with MozJPEG at every quality and
`fidelity` measures what that costs (PSNR, SSIM, bits per pixel); `shards` packs the crops into shards that
`loader` streams, through `augment`, to training and scoring. `layout` holds FF++'s names and folders and
`manipulations` the demo's face swaps and re-enactments.
"""
