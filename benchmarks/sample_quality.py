"""Sample quality levers: the evaluate stage's figures for each way of training the demo, side by side.

`python -m benchmarks.sample_quality [LEVER ...]` (`make bench-samples`; about 5 minutes a lever on a quiet
2-core machine, several times that on a loaded one). Fetches and preprocesses the demo posts as the pipeline
does, then for each lever trains (tweetbot.train), exports (tweetbot.export) and evaluates (tweetbot.evaluate,
params.yaml `evaluate:`) one model, so every row is measured by the same code as `dvc exp show`'s columns.
A lever changes params.yaml `train:` and may start from a base model pretrained on another text (BASES); a
base is trained once and kept in benchmarks/.cache/ for the next run. Results: benchmarks/results/
sample_quality.{json,md}. Then `--sampling LEVER` gives the figures of that lever's model at each of SETTINGS
(temperature, top-p): benchmarks/results/sample_settings-LEVER.{json,md}.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import numpy as np

from benchmarks.__main__ import save
from tweetbot import corpus, evaluate, export, fetch, params, train
from tweetbot.checkpoint import save_naming_vocabulary
from tweetbot.params import TrainParams
from tweetbot.runtime.vocab import Vocab

HERE = Path(__file__).resolve().parent
CACHE = HERE / ".cache" / "sample_quality"
SHAKESPEARE = HERE.parents[1] / "shared" / "corpora" / "tinyshakespeare.txt"
FORTUNES = Path("/usr/share/games/fortunes")  # Debian's `fortunes` package


def shakespeare_posts() -> list[str]:
    """Tiny Shakespeare cut at blank lines (each speech a post), as the `.txt` file source cuts a document."""
    if not SHAKESPEARE.is_file():
        sys.exit(f"{SHAKESPEARE} not found: the shakespeare base needs ../shared/corpora beside the repository")
    return [part for part in SHAKESPEARE.read_text().split("\n\n") if part.strip()]


def fortune_posts() -> list[str]:
    """Every fortune cookie of Debian's `fortunes` (the files between `%` lines), ASCII art left out."""
    if not FORTUNES.is_dir():
        sys.exit(f"{FORTUNES} not found: `apt-get install fortunes` for the fortunes base")
    files = sorted(p for p in FORTUNES.iterdir() if p.is_file() and p.suffix not in (".dat", ".u8"))
    return [part for p in files if "art" not in p.name for part in p.read_text(errors="replace").split("\n%\n")]


BASES = {"shakespeare": shakespeare_posts, "fortunes": fortune_posts}

# name: (base or None, base pretraining steps, changes to params.yaml train:)
LEVERS = {
    "default": (None, 0, {}),
    "shakespeare base (2000 steps)": ("shakespeare", 2000, {}),
    "fortunes base (2000 steps)": ("fortunes", 2000, {}),
    "default, 2000 steps": (None, 0, {"max_steps": 2000}),
    "dropout 0.9": (None, 0, {"output_keep_prob": 0.9}),
    "lr 0.012 x0.9 per 100 steps": (None, 0, {"learning_rate": 0.012, "lr_decay": 0.9}),
    "default, 3000 steps": (None, 0, {"max_steps": 3000}),
}


def prepare_demo(folder: Path) -> Path:
    if not (folder / "data" / "train.npy").exists():
        fetch.run(dataclasses.replace(params.load("fetch"), source="demo"), folder / "tweets.jsonl")
        corpus.run(params.load("preprocess"), folder / "tweets.jsonl", folder / "data")
    return folder / "data"


def prepare_base_data(name: str, folder: Path) -> Path:
    """The base text cleaned and encoded as preprocess encodes posts: 95% to train on, 5% to validate."""
    if (folder / "train.npy").exists():
        return folder
    p = params.load("preprocess")
    texts = [corpus.clean_text(text, p.links, p.mentions) for text in BASES[name]()]
    texts = [text for text in texts if text]
    cut = int(0.95 * len(texts))
    vocab = Vocab.build(texts[:cut], min_count=p.min_char_count)
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / "train.npy", corpus.encode(texts[:cut], vocab))
    np.save(folder / "val.npy", corpus.encode(texts[cut:], vocab))
    vocab.save(folder / "vocab.json")
    return folder


def pretrained(name: str, steps: int, base_params: TrainParams) -> tuple[Path, Vocab, dict]:
    """The base model of text `name` after `steps` steps (trained once, then kept in CACHE)."""
    folder = CACHE / f"base-{name}-{steps}"
    data = prepare_base_data(name, CACHE / f"base-{name}-data")
    p = dataclasses.replace(base_params, max_steps=steps, init_from=None)
    metrics = train.run(p, data, folder / "checkpoints", folder / "live")
    return folder / "checkpoints" / "best.msgpack", Vocab.load(data / "vocab.json"), metrics


def folder_of(lever: str) -> Path:
    """Where a lever's model is trained, exported and evaluated (kept: a run resumes or reuses it)."""
    return CACHE / "".join(c if c.isalnum() or c in ".-" else "_" for c in lever)


def measure(name: str, data: Path, base_params: TrainParams) -> dict:
    base, base_steps, changes = LEVERS[name]
    # Levers that differ only in max_steps share a folder: the longer run resumes the shorter one's.
    folder = folder_of(name.split(",")[0] if set(changes) == {"max_steps"} else name)
    row: dict = {"lever": name}
    p = dataclasses.replace(base_params, **changes, init_from=None)
    if base:
        checkpoint, base_vocab, base_metrics = pretrained(base, base_steps, base_params)
        row["base val loss"] = round(base_metrics["best_val_loss"], 3)
        row["base train s"] = round(base_metrics["train_seconds"])
        start = folder / "init.msgpack"
        save_naming_vocabulary(checkpoint, base_vocab, start)  # training remaps it to the demo's vocabulary
        p = dataclasses.replace(p, init_from=str(start))
    metrics = train.run(p, data, folder / "checkpoints", folder / "live")
    row |= {"steps": metrics["step"], "train s": round(metrics["train_seconds"]), "val loss": metrics["best_val_loss"]}
    row |= evaluated(folder, data, params.load("export"))
    print(json.dumps(row), flush=True)
    return row


# Sampling-side choices, evaluated on one lever's exported model: (temperature, top_p).
SETTINGS = ((0.5, 1.0), (0.6, 1.0), (0.7, 1.0), (0.8, 1.0), (0.9, 1.0), (1.0, 1.0), (0.8, 0.95), (0.8, 0.9), (1.0, 0.9))


def sampling(lever: str) -> dict:
    """The evaluate stage's figures for the model of `lever` (trained already) at each of SETTINGS."""
    folder, data = folder_of(lever), prepare_demo(CACHE / "demo")
    rows = []
    for temperature, top_p in SETTINGS:
        e = dataclasses.replace(params.load("evaluate"), temperature=temperature, top_p=top_p)
        row = {"temperature": temperature, "top_p": top_p}
        row |= evaluate.run(e, folder / "export", data, folder / f"evaluation-{temperature}-{top_p}")
        print(json.dumps(row), flush=True)
        rows.append(row)
    return {"title": f"Demo posts: sample quality by sampling settings, model of lever `{lever}`", "rows": rows}


def evaluated(folder: Path, data: Path, export_params: params.ExportParams) -> dict:
    """Export the best checkpoint in `folder` and evaluate it; reuses the figures of an earlier run on it."""
    best, figures = folder / "checkpoints" / "best.msgpack", folder / "evaluation" / "metrics.json"
    if not (figures.exists() and figures.stat().st_mtime > best.stat().st_mtime):
        export.run(export_params, best, data, folder / "export")
        evaluate.run(params.load("evaluate"), folder / "export", data, folder / "evaluation")
    return json.loads(figures.read_text())


def main(names: list[str]) -> dict:
    base_params = params.load("train")
    data = prepare_demo(CACHE / "demo")
    rows = [measure(name, data, base_params) for name in names or LEVERS]
    e = params.load("evaluate")
    return {
        "title": "Demo posts: sample quality by training lever (evaluate stage figures)",
        "rows": rows,
        "notes": [
            f"params.yaml train: {base_params.model} h{base_params.rnn_size}x{base_params.num_layers}, lr "
            f"{base_params.learning_rate} x{base_params.lr_decay} every {base_params.lr_decay_steps} steps, "
            f"{base_params.max_steps} steps; a lever changes only what its name says",
            f"evaluate: {e.samples} samples at temperature {e.temperature}, top_p {e.top_p}, seeds from {e.seed}",
            "a base is pretrained with the same train: params on its own text, then remapped to the demo's "
            "vocabulary (tweetbot.checkpoint.remapped, at the start of training) and fine-tuned",
        ],
    }


if __name__ == "__main__":
    if sys.argv[1:2] == ["--sampling"]:  # python -m benchmarks.sample_quality --sampling LEVER
        save(f"sample_settings-{folder_of(sys.argv[2]).name}", sampling(sys.argv[2]))
    else:
        save("sample_quality", main(sys.argv[1:]))
