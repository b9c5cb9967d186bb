"""The workspace's paths, named once: what the stages read and write, and the commands around them use.

The pipelines (dvc.yaml, deploy/dvc.yaml) pass the same paths to the stages; tests/test_workspace.py holds them
equal. The bundle's folder is the runtime's to name (tweetbot.runtime.paths), as the service looks there too.
"""

from pathlib import Path

from tweetbot.runtime.paths import BUNDLE

RAW = Path("data/raw/tweets.jsonl")  # fetch: the posts (and tweets.state.json beside them)
PROCESSED = Path("data/processed")  # preprocess: train.npy, val.npy, vocab.json, stats.json
VOCAB = PROCESSED / "vocab.json"
CHECKPOINTS = Path("models/checkpoints")  # train: best.msgpack, last.msgpack
BEST = CHECKPOINTS / "best.msgpack"
LIVE = Path("dvclive")  # train: metrics and curves
EXPORT = BUNDLE  # export: the bundle
EVALUATION = Path("evaluation")  # evaluate: samples, metrics, lengths
IMAGE = Path("build/image")  # image: the OCI layout ...
IMAGE_RECORD = Path("build/image.json")  # ... and its description
DEPLOY_RECORD = Path("build/deploy.json")  # deploy: the deployment
