"""The PyTorch reference for the training-speed benchmark: embedding -> nn.LSTM -> linear, Adam, clipping.

Runs in its own venv (benchmarks/.venv-torch, never the project's lock) as a subprocess of train_speed.py,
which sends it one JSON request a line on stdin and reads one JSON answer a line on stdout:
    {"vocab_size": 96, "rnn_size": 128, "num_layers": 2, "seq_length": 64, "batch_size": 64, "seconds": 3,
     "threads": 2}
    -> {"chars_per_second": ..., "steps": ..., "threads": 2, "torch": "2.13.0+cpu"}
so measurements interleave with tweetbot's in one run. Each configuration is built and warmed up once.
"""

from __future__ import annotations

import json
import sys
import time

import torch
from torch import nn


class CharLSTM(nn.Module):
    def __init__(self, vocab_size: int, rnn_size: int, num_layers: int):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, rnn_size)
        self.lstm = nn.LSTM(rnn_size, rnn_size, num_layers, batch_first=True)
        self.head = nn.Linear(rnn_size, vocab_size)

    def forward(self, tokens, state):
        out, state = self.lstm(self.embed(tokens), state)
        return self.head(out), state


class Trainer:
    """Truncated BPTT as tweetbot trains: the state carries from one window to the next, detached."""

    def __init__(self, vocab_size, rnn_size, num_layers, seq_length, batch_size):
        torch.manual_seed(0)
        self.model = CharLSTM(vocab_size, rnn_size, num_layers)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=2e-3)
        self.tokens = torch.randint(0, vocab_size, (batch_size, seq_length + 1))
        zeros = torch.zeros(num_layers, batch_size, rnn_size)
        self.state = (zeros, zeros.clone())
        self.chars_per_step = batch_size * seq_length
        for _ in range(3):  # warm up allocators and kernels
            self.step()

    def step(self) -> float:
        inputs, targets = self.tokens[:, :-1], self.tokens[:, 1:]
        logits, state = self.model(inputs, self.state)
        loss = nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(self.model.parameters(), 5.0)
        self.optimizer.step()
        self.state = tuple(s.detach() for s in state)
        return loss.item()

    def measure(self, seconds: float) -> dict:
        steps, start = 0, time.perf_counter()
        while (elapsed := time.perf_counter() - start) < seconds:
            self.step()
            steps += 1
        return {"chars_per_second": steps * self.chars_per_step / elapsed, "steps": steps}


def main() -> None:
    trainers: dict[tuple, Trainer] = {}
    for line in sys.stdin:
        request = json.loads(line)
        key = tuple(request[k] for k in ("vocab_size", "rnn_size", "num_layers", "seq_length", "batch_size"))
        torch.set_num_threads(request["threads"])
        if key not in trainers:
            trainers[key] = Trainer(*key)
        answer = trainers[key].measure(request["seconds"])
        answer.update(threads=torch.get_num_threads(), torch=torch.__version__)
        print(json.dumps(answer), flush=True)


if __name__ == "__main__":
    main()
