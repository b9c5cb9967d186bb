"""Training throughput: tweetbot's train step against PyTorch's nn.LSTM, measured side by side in one run.

Both train embedding -> LSTM -> linear with Adam and global-norm clipping on batches of 64 windows of 64
characters, carrying the state from window to window, at h128x2 and h512x3. Rounds alternate between the
implementations so they share the machine's load; each figure is the median of the rounds. PyTorch runs in its
own venv (benchmarks/.venv-torch; see torch_reference.py) with 1 and with 2 threads, and the faster of the two
is the reference. "tweetbot" is what training runs here: on a CPU, the fused LSTM of tweetbot.kernels where it
is built, else the pure-JAX scan (which a GPU runs too); the other of the two gets a row of its own. The Flax
`nn.RNN(OptimizedLSTMCell)` model tweetbot started from runs too, for scale.
GFLOP/s count the multiply-adds of the matmuls (2 FLOPs each; backward = 2x forward) against a numpy float32
matmul measured in the same run. Goal: tweetbot >= 1.1x PyTorch at both sizes.
Run: `python -m benchmarks train` (part of `make bench`).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import time
from pathlib import Path

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from tweetbot import kernels, malloc, train
from tweetbot.params import TrainParams

HERE = Path(__file__).parent
TORCH_PYTHON = HERE / ".venv-torch" / "bin" / "python"
SIZES = [(128, 2), (512, 3)]
VOCAB, SEQ, BATCH = 96, 64, 64
ROUNDS, SECONDS = 5, 3.0  # 5: on a 2-core VM the rate moves by 10% from round to round
GOAL = 1.1


class FlaxLSTM(nn.Module):
    """The obvious Flax model: nn.RNN over OptimizedLSTMCell, layer by layer (tweetbot's first version)."""

    vocab_size: int
    rnn_size: int
    num_layers: int

    def initial_carry(self, batch_size):
        zeros = jnp.zeros((batch_size, self.rnn_size))
        return tuple((zeros, zeros) for _ in range(self.num_layers))

    def init_variables(self, key):
        return self.init(key, jnp.zeros((1, 1), jnp.int32), self.initial_carry(1))

    @nn.compact
    def __call__(self, tokens, carry, train=False, chars_left=None):  # chars_left: train_step's, unread here
        x = nn.Embed(self.vocab_size, self.rnn_size)(tokens)
        new_carry = []
        for layer in range(self.num_layers):
            rnn = nn.RNN(nn.OptimizedLSTMCell(self.rnn_size), return_carry=True)
            layer_carry, x = rnn(x, initial_carry=carry[layer])
            new_carry.append(layer_carry)
        return nn.Dense(self.vocab_size)(x), tuple(new_carry)


def flops_per_char(rnn_size: int, num_layers: int) -> float:
    """Matmul FLOPs of one training character: forward (input + recurrent projections, head) x 3."""
    forward = num_layers * 2 * (2 * rnn_size * 4 * rnn_size) + 2 * rnn_size * VOCAB
    return 3 * forward


def jax_trainer(model, fused: bool = True) -> callable:
    """A function that trains `model` for about `seconds` and returns chars/s (`fused`: as make_train_step)."""
    state = train.create_state(model, TrainParams(), seed=0)
    carry = model.initial_carry(BATCH)
    tokens = np.random.default_rng(0).integers(0, VOCAB, (BATCH, SEQ + 1)).astype(np.int32)
    inputs, targets = tokens[:, :-1], tokens[:, 1:]
    step = train.make_train_step(model, seed=0, fused=fused).lower(state, carry, inputs, targets).compile()
    box = [state, carry]

    def measure(seconds: float) -> float:
        steps, start = 0, time.perf_counter()
        while True:
            box[0], box[1], loss = step(box[0], box[1], inputs, targets)
            steps += 1
            loss.block_until_ready()
            if (elapsed := time.perf_counter() - start) >= seconds:
                return steps * BATCH * SEQ / elapsed

    measure(0.5)  # warm up
    return measure


class Torch:
    """The PyTorch reference in its own process, asked one measurement at a time."""

    # With the malloc settings tweetbot's training sets for itself (tweetbot.malloc), which speed PyTorch up too:
    # measured side by side on a 2-core Xeon, about 1.05x at h128x2 and 1.15x at h512x3.
    @staticmethod
    def environment() -> dict[str, str]:
        return {**os.environ, "GLIBC_TUNABLES": malloc.TUNABLES}

    def __init__(self):
        self.process = subprocess.Popen(
            [str(TORCH_PYTHON), str(HERE / "torch_reference.py")],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=self.environment(),
        )

    def measure(self, rnn_size: int, num_layers: int, threads: int, seconds: float) -> float:
        request = dict(vocab_size=VOCAB, rnn_size=rnn_size, num_layers=num_layers, seq_length=SEQ,
                       batch_size=BATCH, seconds=seconds, threads=threads)  # fmt: skip
        self.process.stdin.write(json.dumps(request) + "\n")
        self.process.stdin.flush()
        return json.loads(self.process.stdout.readline())["chars_per_second"]

    def version(self) -> str:
        out = subprocess.run([str(TORCH_PYTHON), "-c", "import torch; print(torch.__version__)"],
                             capture_output=True, text=True, env=self.environment())  # fmt: skip
        return out.stdout.strip()

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait(timeout=30)


def numpy_peak_gflops(seconds: float = 1.0) -> float:
    """The best float32 matmul rate numpy reaches here, over a few square sizes."""
    best = 0.0
    for n in (512, 1024, 2048):
        a, b = np.ones((n, n), np.float32), np.ones((n, n), np.float32)
        a @ b
        calls, start = 0, time.perf_counter()
        while (elapsed := time.perf_counter() - start) < seconds / 3:
            a @ b
            calls += 1
        best = max(best, 2 * n**3 * calls / elapsed / 1e9)
    return best


def cpu() -> str:
    """The CPU's model name and the vector and matrix extensions that matter here."""
    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    name = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")), "?")
    flags = next((line.split(":", 1)[1].split() for line in info.splitlines() if line.startswith("flags")), [])
    wanted = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_tile")
    return f"{name} x{os.cpu_count()} ({', '.join(f for f in wanted if f in flags) or 'no AVX-512'})"


def main() -> dict:
    malloc.keep_freed_memory()  # as train.run does
    implementations, paths = {}, []
    for rnn_size, num_layers in SIZES:
        params = TrainParams(rnn_size=rnn_size, num_layers=num_layers, matmul_dtype="float32", length_input=False)
        tweetbot = train.build_model(params, VOCAB)
        implementations[(rnn_size, num_layers, "tweetbot")] = jax_trainer(tweetbot)
        if kernels.available():  # the path training does not take, for comparison
            fused = kernels.lstm_recurrence(tweetbot) is not None
            paths.append(f"h{rnn_size}x{num_layers} {'fused kernel' if fused else 'pure JAX'}")
            name = "tweetbot pure JAX" if fused else "tweetbot fused kernel"
            implementations[(rnn_size, num_layers, name)] = jax_trainer(tweetbot, fused=not fused)
        implementations[(rnn_size, num_layers, "tweetbot bf16")] = jax_trainer(tweetbot.clone(matmul_dtype="bfloat16"))
        flax_model = FlaxLSTM(VOCAB, rnn_size, num_layers)
        implementations[(rnn_size, num_layers, "flax nn.RNN")] = jax_trainer(flax_model, fused=False)
    torch = Torch() if TORCH_PYTHON.exists() else None
    if torch:
        for rnn_size, num_layers in SIZES:
            for threads in (1, 2):
                implementations[(rnn_size, num_layers, f"torch {threads} thread")] = (
                    lambda s, h=rnn_size, n=num_layers, t=threads: torch.measure(h, n, t, s)
                )
    peaks, loads = [numpy_peak_gflops()], [os.getloadavg()[0]]
    figures = {key: [] for key in implementations}
    for _ in range(ROUNDS):  # interleaved: every implementation once per round
        for key, measure in implementations.items():
            figures[key].append(measure(SECONDS))
        peaks.append(numpy_peak_gflops())
        loads.append(os.getloadavg()[0])
    if paths:
        notes = [f"tweetbot and tweetbot bf16 train with: {', '.join(paths)}"]
    else:
        notes = ["fused LSTM kernel not built (make kernels): pure JAX"]
    if torch:
        notes.append(f"PyTorch {torch.version()} (the faster of 1 and 2 threads is the reference), with the malloc "
                     "settings tweetbot trains with (tweetbot.malloc: GLIBC_TUNABLES)")  # fmt: skip
        torch.close()
    else:
        notes.append("PyTorch unavailable (no benchmarks/.venv-torch): tweetbot alone, no ratios")
    peak = max(peaks)
    rows = []
    for rnn_size, num_layers in SIZES:
        medians = {key[2]: statistics.median(v) for key, v in figures.items() if key[:2] == (rnn_size, num_layers)}
        reference = max((v for k, v in medians.items() if k.startswith("torch")), default=None)
        for name, chars_per_second in medians.items():
            gflops = chars_per_second * flops_per_char(rnn_size, num_layers) / 1e9
            rows.append({
                "size": f"h{rnn_size}x{num_layers}",
                "implementation": name,
                "chars/s": round(chars_per_second),
                "vs PyTorch": round(chars_per_second / reference, 2) if reference else "",
                "GFLOP/s": round(gflops, 1),
                "% of numpy peak": round(100 * gflops / peak, 1),
            })  # fmt: skip
    notes.append(f"numpy float32 matmul peak in this run: {peak:.0f} GFLOP/s (best of {len(peaks)} measurements)")
    notes.append(f"median of {ROUNDS} interleaved rounds of {SECONDS:.0f} s; batch {BATCH}, seq {SEQ}, vocab {VOCAB}")
    notes.append(f"goal: tweetbot >= {GOAL}x PyTorch at both sizes")
    notes.append(f"CPU: {cpu()}; load average (1 min) during the rounds: {min(loads):.1f} to {max(loads):.1f}")
    return {"title": "Training throughput (chars/s)", "rows": rows, "notes": notes}
