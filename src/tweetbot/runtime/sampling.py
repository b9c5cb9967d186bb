"""The default sampling: what the service, `tweetbot sample` and export's copy gate draw with unless asked
otherwise, and what the evaluate stage scores (params.yaml `evaluate:` holds the same values; a test holds them
equal).

The nucleus cut (top-p) leaves out the unlikely tail of characters that made-up words come from. On the demo
default, at temperature 0.8, the real-word rate is 82.6% without it, 95.1% at top-p 0.7 and 96.5% at 0.6 (the
account's held-out posts: 96.2%). The demo default reads how long its post is (train.length_input), so the cut no
longer keeps its samples from ending, as it did before (README, "Training";
benchmarks/results/sample_settings-default.md).
"""

TEMPERATURE = 0.8
TOP_P = 0.6
