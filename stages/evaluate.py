"""DVC stage `evaluate`: samples of the exported model, scored against the account's posts (DVC metrics).

    python stages/evaluate.py models/export data/processed evaluation

Reads the `evaluate:` section of params.yaml; writes evaluation/metrics.json (real-word rate against the
held-out posts' rate, copy rate, end-of-post rate, length median and distance), evaluation/lengths.csv (the
length plot) and evaluation/samples.txt (src/tweetbot/evaluate.py says what each figure means).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from tweetbot import params
from tweetbot.runtime.errors import exit_on_user_error


@exit_on_user_error
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundle", type=Path, help="the exported bundle (models/export)")
    parser.add_argument("processed", type=Path, help="the folder of train.npy, val.npy and vocab.json")
    parser.add_argument("out", type=Path, help="the folder for metrics.json, lengths.csv and samples.txt")
    args = parser.parse_args()
    evaluate_params = params.load("evaluate")

    from tweetbot import evaluate  # after the params check: a typo fails before JAX loads

    m = evaluate.run(evaluate_params, args.bundle, args.processed, args.out)
    print(
        f"evaluate: {m['samples']} samples at temperature {evaluate_params.temperature}: real words "
        f"{m['real_words']:.1%} (held-out posts {m['real_words_heldout']:.1%}), copies {m['copy_rate']:.1%}, "
        f"ended by themselves {m['eos_rate']:.0%}, median length {m['length_median']:.0f} "
        f"(account {m['length_median_account']:.0f})"
    )


if __name__ == "__main__":
    main()
