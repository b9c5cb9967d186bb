"""bfloat16 matmuls: the demo default's validation loss after its step budget in float32 and in bfloat16.

`python -m benchmarks.matmul_dtype` (about 2 minutes on a quiet 2-core machine). Fetches and preprocesses the
demo posts as the pipeline does, then trains params.yaml `train:` with `matmul_dtype` float32 and bfloat16, one
after the other, and compares the validation losses (the bar: bfloat16 within 1% of float32) and the speed.
Results: benchmarks/results/matmul_dtype.{json,md}.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
from pathlib import Path

from benchmarks.__main__ import save
from benchmarks.sample_quality import prepare_demo
from tweetbot import kernels, params, train


def main() -> dict:
    base = params.load("train")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data = prepare_demo(tmp)
        for dtype in ("float32", "bfloat16"):
            p = dataclasses.replace(base, matmul_dtype=dtype, init_from=None)
            metrics = train.run(p, data, tmp / dtype / "checkpoints", tmp / dtype / "live")
            rows.append({
                "matmul dtype": dtype,
                "val loss (nats/char)": round(metrics["val_loss"], 4),
                "steps": metrics["step"],
                "train s": round(metrics["train_seconds"]),
                "load average": round(os.getloadavg()[0], 1),
            })  # fmt: skip
    change = rows[1]["val loss (nats/char)"] / rows[0]["val loss (nats/char)"] - 1
    return {
        "title": f"Demo posts: validation loss after {base.max_steps} steps, float32 and bfloat16 matmuls",
        "rows": rows,
        "notes": [
            f"bfloat16 against float32: {change:+.2%} (the bar: within 1%)",
            f"LSTM: {'the fused kernel' if kernels.available() else 'the pure-JAX scan (kernel not built)'}",
            f"params.yaml train: h{base.rnn_size}x{base.num_layers}, learning rate {base.learning_rate}",
        ],
    }


if __name__ == "__main__":
    save("matmul_dtype", main())
