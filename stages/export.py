"""DVC stage `export`: the best checkpoint -> the bundle the service loads, if it beats the baseline.

    python stages/export.py models/checkpoints/best.msgpack data/processed models/export

Reads the `export:` section of params.yaml; a model not better than the unigram baseline of the training text
by `export.min_improvement_bpc` bits per character, or one whose samples copy training posts more often than
`export.max_copy_rate`, is refused with one line and exit status 2.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from tweetbot import params
from tweetbot.runtime.errors import exit_on_user_error


@exit_on_user_error
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", type=Path, help="the best checkpoint (best.msgpack)")
    parser.add_argument("processed", type=Path, help="the folder of vocab.json and train.npy")
    parser.add_argument("out", type=Path, help="the bundle folder to write")
    args = parser.parse_args()
    export_params = params.load("export")

    from tweetbot import export  # after the params check: a typo fails before JAX loads

    manifest = export.run(export_params, args.checkpoint, args.processed, args.out)
    metrics = manifest["metrics"]
    print(
        f"exported model {manifest['version']} to {args.out}: {metrics['val_bpc']:.3f} bits/char, "
        f"{metrics['improvement_bpc']:.3f} better than the unigram baseline, {metrics['copy_rate']:.1%} of samples "
        "copy a training post"
    )


if __name__ == "__main__":
    main()
