"""What the trained models and the data are worth: scores, metrics, tables and figures.

`predict` scores shards with a detector; `metrics` turns scores into AUC, accuracy and their intervals and
`tables` into the result tables and plots; `gradcam` draws where a model looks. `test_sources` builds the
datasets that only test (an image folder, an FF++-layout tree, the GAN-face set), `crossdataset` scores every
model on them, `shortcuts` measures how far trivial cues separate each test set, and `probes` fits classifiers
on frozen pretrained features.
"""
