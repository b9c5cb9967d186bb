"""The export step: the best checkpoint -> a self-describing bundle, behind two gates.

    run(params.load("export"), checkpoint=models/checkpoints/best.msgpack, processed=data/processed,
        out=models/export)

Export refuses, with one line, a model not worth serving or not safe to:
- one that does not beat a unigram baseline of the training text (every character drawn independently with its
  training frequency, i.e. the entropy of the character distribution) by `export.min_improvement_bpc` bits per
  character on validation: it learned nothing;
- one whose samples recite the account's posts: more than `export.max_copy_rate` of `export.copy_samples`
  samples (seeds 0, 1, ..., at `export.copy_temperature` and the service's default top-p) hold a run of 50
  characters of a training post (tweetbot.copies, the measure the evaluate stage reports as `copy_rate`). A
  public bot must not leak posts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax
import numpy as np

from tweetbot import input_pipeline
from tweetbot.checkpoint import load_checkpoint
from tweetbot.copies import RUN, TrainingRuns, copy_rate
from tweetbot.params import ExportParams
from tweetbot.runtime import bundle
from tweetbot.runtime.errors import UserError
from tweetbot.runtime.model import CharRNN
from tweetbot.runtime.sample import Sampler, SampleRequest
from tweetbot.runtime.sampling import TOP_P
from tweetbot.runtime.vocab import EOS, Vocab, render


def unigram_bpc(tokens: np.ndarray) -> float:
    """Bits per character of the best context-free model of `tokens`: the entropy of their distribution."""
    counts = np.bincount(np.asarray(tokens).ravel())
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log2(p)).sum())


def data_statistics(tokens: np.ndarray, vocab: Vocab) -> dict[str, Any]:
    tokens = np.asarray(tokens)
    return {
        "train_chars": int(tokens.size),
        "train_posts": int((tokens == EOS).sum()),
        "vocab_size": len(vocab),
        "unigram_bpc": round(unigram_bpc(tokens), 4),
    }


def check_quality(val_bpc: float, baseline_bpc: float, params: ExportParams) -> None:
    """Raise a UserError unless the model beats the baseline by `params.min_improvement_bpc` bits/char."""
    improvement = baseline_bpc - val_bpc
    if not np.isfinite(val_bpc) or improvement < params.min_improvement_bpc:
        raise UserError(
            f"export refused: validation {val_bpc:.3f} bits/char is {improvement:.3f} better than the "
            f"unigram baseline {baseline_bpc:.3f}; export.min_improvement_bpc is "
            f"{params.min_improvement_bpc}: "
            "train longer or bigger (params.yaml train:), or lower export.min_improvement_bpc"
        )


def check_copies(sampler: Sampler, train_tokens: np.ndarray, params: ExportParams) -> float:
    """The model's copy rate; a UserError if it is above `params.max_copy_rate`."""
    requests = [SampleRequest(temperature=params.copy_temperature, seed=seed) for seed in range(params.copy_samples)]
    rate = copy_rate(sampler.generate(requests), sampler.vocab, TrainingRuns(train_tokens))
    if rate > params.max_copy_rate:
        raise UserError(
            f"export refused: {rate:.1%} of {params.copy_samples} samples (temperature {params.copy_temperature}) "
            f"copy {RUN} characters in a row of a training post, export.max_copy_rate is {params.max_copy_rate}: "
            "a public bot must not recite its posts: train less or with dropout (params.yaml train: max_steps, "
            "output_keep_prob), or raise export.max_copy_rate"
        )
    return rate


def export_model(
    model: CharRNN,
    variables: dict,
    vocab: Vocab,
    train_tokens: np.ndarray,
    *,
    val_bpc: float,
    metrics: dict[str, Any],
    train_params: dict[str, Any],
    params: ExportParams,
    out: Path,
) -> dict:
    """Gate the model (the unigram baseline of `train_tokens`, then its copies), then write the bundle (its
    manifest)."""
    stats = data_statistics(train_tokens, vocab)
    check_quality(val_bpc, stats["unigram_bpc"], params)
    start = start_carry(model, variables, train_tokens)
    rate = check_copies(Sampler(model, variables, vocab, start), train_tokens, params)
    metrics = {**metrics, "val_bpc": val_bpc, "improvement_bpc": round(stats["unigram_bpc"] - val_bpc, 4)}
    metrics["copy_rate"] = round(rate, 4)
    return bundle.write(
        out, model, variables, vocab, metrics=metrics, train_params=train_params, data_stats=stats, start_carry=start
    )


WARM_UP = 1000  # characters of the training posts read into the start state


def start_carry(model: CharRNN, variables: dict, train_tokens: np.ndarray):
    """The state every sample starts from: the model's after reading the last WARM_UP characters of the training
    posts, up to the last post's final EOS, which each sample reads first. So a sample starts as a post does in
    training, after another post, not from the zero state training hardly ever sees (runtime.sample)."""
    tail = np.asarray(train_tokens, np.int32)[-WARM_UP - 1 :]  # ends with the final EOS: its chars_left are exact
    read = {"chars_left": input_pipeline.chars_left(tail)[None, :-1]} if model.reads_length else {}
    _, carry = jax.jit(model.apply)(variables, tail[None, :-1], model.initial_carry(1), **read)
    return jax.device_get(carry)


# What the bundle's manifest keeps of the checkpoint's record (src/tweetbot/checkpoint.py).
CHECKPOINT_METRICS = ("step", "val_loss", "val_bpc", "train_loss", "chars_seen", "train_seconds")


def run(params: ExportParams, checkpoint: Path, processed: Path, out: Path) -> dict:
    """Export `checkpoint`, trained on `processed/` (vocab.json, train.npy), as a bundle in `out`."""
    model, variables, meta = load_checkpoint(checkpoint)
    vocab_path, train_path = Path(processed) / "vocab.json", Path(processed) / "train.npy"
    for path in (vocab_path, train_path):
        if not path.is_file():
            raise UserError(f"{path} not found: run `dvc repro preprocess` first")
    vocab = Vocab.load(vocab_path)
    if model.vocab_size != len(vocab):
        raise UserError(
            f"{checkpoint} was trained on {model.vocab_size} symbols, {vocab_path} has {len(vocab)}: "
            "the data changed since training, run `dvc repro train`"
        )
    if meta.get("val_bpc") is None:
        raise UserError(f"{checkpoint} has no validation score: train until the first evaluation")
    return export_model(
        model,
        variables,
        vocab,
        np.load(train_path),
        val_bpc=float(meta["val_bpc"]),
        metrics={key: meta[key] for key in CHECKPOINT_METRICS if key in meta},
        train_params=meta.get("train_params", {}),
        params=params,
        out=out,
    )


def summary(out: Path, n: int = 3, temperature: float = 0.8) -> str:
    """The exported model in a few lines: its version and quality, `n` samples, and how to serve it."""
    exported = bundle.load(out)
    metrics, data = exported.manifest["metrics"], exported.manifest["data"]
    sampler = exported.sampler()
    texts = sampler.generate([SampleRequest(temperature=temperature, seed=seed) for seed in range(n)])
    lines = [
        f"Exported model {exported.version} ({out}): {metrics['val_bpc']:.3f} bits/char on validation, "
        f"{metrics['improvement_bpc']:.3f} better than the unigram baseline ({data['unigram_bpc']:.3f}).",
        f"Samples (temperature {temperature}, top-p {TOP_P}):",
        *("  " + render(text).replace("\n", "\n  ") for text in texts),  # link symbols as the service shows them
        "Serve it: `make serve`, then `curl localhost:8080/` (the web page: http://localhost:8080/app).",
    ]
    return "\n".join(lines)
