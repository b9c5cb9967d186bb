"""What the service runs and the container image holds: the vocabulary, the model, the sampler, the bundle, the
user-error type. Nothing here imports the pipeline (sources, corpus, training, export, update, CLI) above it, so
an edit to the pipeline never changes the image (tests/test_layers.py)."""
