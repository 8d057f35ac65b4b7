"""Command-line tools for a trained model outside the workflow: `predict` scores a user's videos or images with a
model file, `export` writes it as TorchScript or ONNX (`python -m dfpipe predict|export`)."""
