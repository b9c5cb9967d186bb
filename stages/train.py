"""DVC stage `train`: train the character RNN that params.yaml `train:` describes.

    python stages/train.py data/processed models/checkpoints dvclive

Reads train.npy, val.npy and vocab.json; writes best.msgpack and last.msgpack (see src/tweetbot/checkpoint.py)
and DVCLive's metrics and loss curves. A run killed part-way resumes from last.msgpack when started again.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from tweetbot import params
from tweetbot.runtime.errors import exit_on_user_error


@exit_on_user_error
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path, help="the folder of train.npy, val.npy and vocab.json")
    parser.add_argument("checkpoints", type=Path, help="the folder for best.msgpack and last.msgpack")
    parser.add_argument("live", type=Path, help="DVCLive's folder: metrics.json and plots/")
    args = parser.parse_args()
    train_params = params.load("train")

    from tweetbot import train  # after the params check: a typo fails before JAX loads

    train.run(train_params, args.data, args.checkpoints, args.live)


if __name__ == "__main__":
    main()
