"""bfloat16 matmuls: the demo default's validation loss after its step budget in float32 and in bfloat16.

`python -m benchmarks.matmul_dtype` (about 7 minutes on a quiet 2-core machine with bf16 units). Fetches and
preprocesses the demo posts as the pipeline does, then trains params.yaml `train:` with `matmul_dtype` float32
and bfloat16 at six seeds, and compares the mean validation losses (the bar: bfloat16 within 1% of float32)
and the speed.
Results: benchmarks/results/matmul_dtype.{json,md}.
"""

from __future__ import annotations

import dataclasses
import os
import statistics
import tempfile
from pathlib import Path

from benchmarks.__main__ import save
from benchmarks.sample_quality import prepare_demo
from tweetbot import kernels, params, train

SEEDS = tuple(range(6))  # one run a dtype cannot tell 1%: train.seed alone moves the val loss 2%


def main() -> dict:
    base = params.load("train")
    rows, losses = [], {"float32": [], "bfloat16": []}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data = prepare_demo(tmp)
        for seed in SEEDS:
            for dtype in losses:
                p = dataclasses.replace(base, matmul_dtype=dtype, seed=seed, init_from=None)
                metrics = train.run(p, data, tmp / f"{dtype}-{seed}" / "checkpoints", tmp / f"{dtype}-{seed}" / "live")
                losses[dtype].append(metrics["val_loss"])
                rows.append({
                    "matmul dtype": dtype,
                    "train.seed": seed,
                    "val loss (nats/char)": round(metrics["val_loss"], 4),
                    "steps": metrics["step"],
                    "train s": round(metrics["train_seconds"]),
                    "load average": round(os.getloadavg()[0], 1),
                })  # fmt: skip
    mean = {dtype: statistics.mean(values) for dtype, values in losses.items()}
    spread = {dtype: f"{min(values):.4f}-{max(values):.4f}" for dtype, values in losses.items()}
    change = mean["bfloat16"] / mean["float32"] - 1
    return {
        "title": f"Demo posts: validation loss after {base.max_steps} steps, float32 and bfloat16 matmuls",
        "rows": rows,
        "notes": [
            f"bfloat16 against float32, mean of seeds {', '.join(map(str, SEEDS))}: {change:+.2%} (the bar: within "
            f"1%); float32 {mean['float32']:.4f} ({spread['float32']}), bfloat16 {mean['bfloat16']:.4f} "
            f"({spread['bfloat16']})",
            f"LSTM: {'the fused kernel' if kernels.available() else 'the pure-JAX scan (kernel not built)'}",
            f"params.yaml train: h{base.rnn_size}x{base.num_layers}, learning rate {base.learning_rate}",
        ],
    }


if __name__ == "__main__":
    save("matmul_dtype", main())
