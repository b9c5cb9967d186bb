"""Sample quality levers: the evaluate stage's figures for each way of training the demo, side by side.

`python -m benchmarks.sample_quality [--out NAME] [LEVER ...]` (`make bench-samples`; 4 to 5 minutes a lever on
a 2-core machine at load 6, the quality preset 15 at load 4). Fetches and preprocesses the demo posts as the
pipeline does, then for each lever trains (tweetbot.train), exports (tweetbot.export) and evaluates
(tweetbot.evaluate, params.yaml `evaluate:`) one model, so every row is measured by the same code as `dvc exp
show`'s columns. A lever changes the demo default as it was before issue 13 (BEFORE), whose training time in the
same run the levers get, or params.yaml `train:` as it is; it may start from a base model pretrained on another
text (BASES). Models are kept in benchmarks/.cache/: a second run re-evaluates them. Results:
benchmarks/results/sample_quality.{json,md}, or NAME.{json,md}. Then `--sampling LEVER` gives the figures of that
lever's model at each of SETTINGS (temperature, top-p): benchmarks/results/sample_settings-LEVER.{json,md}.
"""

from __future__ import annotations

import dataclasses
import json
import os
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


# The demo default before issue 13 (params.yaml `train:` then): the levers change it, and it is the reference
# whose training time they get.
BEFORE = {
    "rnn_size": 128,
    "num_layers": 2,
    "seq_length": 64,
    "batch_size": 64,
    "learning_rate": 0.008,
    "lr_decay": 0.97,
    "lr_decay_steps": 100,
    "output_keep_prob": 1.0,
    "matmul_dtype": "float32",
    "position_input": False,
    "length_input": False,
    "max_steps": 1000,
}


@dataclasses.dataclass(frozen=True)
class Lever:
    """A way of training the demo: changes to BEFORE (or params.yaml `train:` as it is), maybe a base.

    `same_time`: train for as many seconds as the reference lever (the first row that has `reference`: BEFORE)
    took in this run, whatever the steps, since the goal is a better model in no more training time. Training
    runs what the train stage runs: on a CPU the fused kernel of tweetbot.kernels, which at the demo's size (h128)
    trains faster than the pure-JAX scan that ran when issue 13 was filed."""

    changes: dict = dataclasses.field(default_factory=dict)
    current: bool = False  # changes to params.yaml `train:` as it is (the demo default now), not to BEFORE
    base: str | None = None  # a key of BASES
    base_share: float = 0.0  # of the reference's seconds, spent pretraining the base; the rest fine-tunes it
    same_time: bool = False
    reference: bool = False


BF16 = {"matmul_dtype": "bfloat16"}
F32 = {"matmul_dtype": "float32"}
# The README's quality preset: `dvc exp run -S train.rnn_size=256 ...` on top of the default.
QUALITY = {"rnn_size": 256, "learning_rate": 0.004, "lr_decay": 0.95, "output_keep_prob": 0.8, "max_steps": 3000}
LEVERS = {
    "before (f32, 1000 steps)": Lever(reference=True),
    "bf16 h128": Lever(BF16, same_time=True),
    "bf16 h128 lr 0.012 x0.95": Lever(BF16 | {"learning_rate": 0.012, "lr_decay": 0.95}, same_time=True),
    "bf16 h128 dropout 0.9": Lever(BF16 | {"output_keep_prob": 0.9}, same_time=True),
    "bf16 h128 batch 128": Lever(BF16 | {"batch_size": 128}, same_time=True),
    "bf16 h128 batch 32": Lever(BF16 | {"batch_size": 32}, same_time=True),
    "bf16 h128 seq 128": Lever(BF16 | {"seq_length": 128}, same_time=True),
    "bf16 h192": Lever(BF16 | {"rnn_size": 192}, same_time=True),
    "bf16 h256": Lever(BF16 | {"rnn_size": 256}, same_time=True),
    "bf16 h192 lr 0.012 x0.95": Lever(
        BF16 | {"rnn_size": 192, "learning_rate": 0.012, "lr_decay": 0.95}, same_time=True
    ),
    "bf16 h128 shakespeare base (a third of the time)": Lever(
        BF16, base="shakespeare", base_share=1 / 3, same_time=True
    ),
    "default": Lever(current=True),
    "default seed 1": Lever({"seed": 1}, current=True),
    "default f32": Lever(F32, current=True),
    "default f32 seed 1": Lever(F32 | {"seed": 1}, current=True),
    # The default's params given the reference's time, and what changes the length of its samples most.
    "default same time": Lever(current=True, same_time=True),
    "default seq 128": Lever({"seq_length": 128}, current=True, same_time=True),
    "default seq 128 batch 32": Lever({"seq_length": 128, "batch_size": 32}, current=True, same_time=True),
    "default seq 256 batch 16": Lever({"seq_length": 256, "batch_size": 16}, current=True, same_time=True),
    "default shakespeare base (a third)": Lever(base="shakespeare", base_share=1 / 3, current=True, same_time=True),
    "default shakespeare base (a third) seed 1": Lever(
        {"seed": 1}, base="shakespeare", base_share=1 / 3, current=True, same_time=True
    ),
    "default position input": Lever({"position_input": True}, current=True),
    "default position input seed 1": Lever({"position_input": True, "seed": 1}, current=True),
    # Told how many characters its post has left, the length drawn from the account's (sample.post_length).
    "default length input": Lever({"length_input": True}, current=True),
    "default length input seed 1": Lever({"length_input": True, "seed": 1}, current=True),
    "default length input f32": Lever(F32 | {"length_input": True}, current=True),
    "default length input same time": Lever({"length_input": True}, current=True, same_time=True),
    "quality preset length input": Lever(QUALITY | {"length_input": True}, current=True),
    "quality preset": Lever(QUALITY, current=True),
    "quality preset keep 0.7": Lever(QUALITY | {"output_keep_prob": 0.7}, current=True),
    "quality preset 2000 steps": Lever(QUALITY | {"max_steps": 2000}, current=True),
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


def pretrained(name: str, p: TrainParams) -> tuple[Path, Vocab, dict]:
    """The base model of text `name` trained with `p` (its max_steps or time_budget_s; kept in CACHE)."""
    p = dataclasses.replace(p, init_from=None)
    length = f"{p.time_budget_s:.0f}s" if p.time_budget_s else f"{p.max_steps}"
    folder = CACHE / f"base-{name}-{length}-h{p.rnn_size}x{p.num_layers}-{p.matmul_dtype}"
    data = prepare_base_data(name, CACHE / f"base-{name}-data")
    metrics = train.run(p, data, folder / "checkpoints", folder / "live")
    return folder / "checkpoints" / "best.msgpack", Vocab.load(data / "vocab.json"), metrics


def folder_of(lever: str) -> Path:
    """Where a lever's model is trained, exported and evaluated (kept: a run resumes or reuses it)."""
    return CACHE / "".join(c if c.isalnum() or c in ".-" else "_" for c in lever)


def measure(name: str, data: Path, base_params: TrainParams, seconds: float | None) -> dict:
    """Train, export and evaluate lever `name`; `seconds`: the reference's training time, for `same_time`."""
    lever, folder = LEVERS[name], folder_of(name)
    row: dict = {"lever": name}
    p = dataclasses.replace(base_params, **(lever.changes if lever.current else BEFORE | lever.changes), init_from=None)
    if lever.same_time:
        p = dataclasses.replace(p, max_steps=100_000, time_budget_s=seconds)
    if lever.base:  # the base's time counts: the fine-tune gets what the base leaves of the reference's
        base_budget = dataclasses.replace(p, time_budget_s=seconds * lever.base_share)
        checkpoint, base_vocab, base_metrics = pretrained(lever.base, base_budget)
        row["base val loss"] = round(base_metrics["best_val_loss"], 3)
        row["base train s"] = round(base_metrics["train_seconds"])
        p = dataclasses.replace(p, time_budget_s=seconds - base_metrics["train_seconds"])
        start = folder / "init.msgpack"
        save_naming_vocabulary(checkpoint, base_vocab, start)  # training remaps it to the demo's vocabulary
        p = dataclasses.replace(p, init_from=str(start))
    metrics = train.run(p, data, folder / "checkpoints", folder / "live")
    load = folder / "load.txt"  # the load as the model trained, not as a later run re-evaluates it
    if not load.exists():
        load.write_text(f"{os.getloadavg()[0]:.1f}\n")
    row |= {"steps": metrics["step"], "train s": metrics["train_seconds"], "val loss": metrics["best_val_loss"]}
    row |= evaluated(folder, data, params.load("export"))
    row["load"] = float(load.read_text())
    print(json.dumps(row), flush=True)
    return row


# Sampling-side choices, evaluated on one lever's exported model: (temperature, top_p).
SETTINGS = (
    *((t, 1.0) for t in (0.5, 0.6, 0.7, 0.8, 0.9, 1.0)),
    *((0.8, p) for p in (0.95, 0.9, 0.85, 0.8, 0.75, 0.7, 0.65, 0.6, 0.55, 0.5)),
    (1.0, 0.9),
    (1.0, 0.8),
)


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
    """Export the best checkpoint in `folder` and evaluate it with params.yaml `evaluate:` (seconds), and its
    real-word rate without the nucleus cut (top_p 1), which shows what training alone changed. The copy gate is
    measured (copy_rate), not applied: a model export would refuse gets its row too."""
    e = params.load("evaluate")
    ungated = dataclasses.replace(export_params, max_copy_rate=1.0)
    export.run(ungated, folder / "checkpoints" / "best.msgpack", data, folder / "export")
    figures = evaluate.run(e, folder / "export", data, folder / "evaluation")
    uncut = evaluate.run(dataclasses.replace(e, top_p=1.0), folder / "export", data, folder / "evaluation-top_p-1")
    return figures | {"real_words top_p 1": uncut["real_words"]}


def main(names: list[str]) -> dict:
    base_params = params.load("train")
    data = prepare_demo(CACHE / "demo")
    rows, seconds = [], None
    for name in names or LEVERS:
        if LEVERS[name].same_time and seconds is None:
            sys.exit(f"{name} trains as long as the reference: list a reference lever before it")
        rows.append(measure(name, data, base_params, seconds))
        if LEVERS[name].reference and seconds is None:
            seconds = rows[-1]["train s"]
    for row in rows:
        row["train s"] = round(row["train s"])
    changed = {key: getattr(base_params, key) for key, value in BEFORE.items() if getattr(base_params, key) != value}
    e = params.load("evaluate")
    return {
        "title": "Demo posts: sample quality by training lever (evaluate stage figures)",
        "rows": rows,
        "notes": [
            f"before: the demo default before issue 13 ({BEFORE}); a lever changes only what its name says; "
            f"default: params.yaml train: as it is, which changes {changed} from before",
            f"same-time levers train for the reference's seconds ({seconds:.0f} s, train.time_budget_s), "
            "whatever the steps; load: the 1-minute load average as the row finished training (2 cores, shared)",
            "real_words top_p 1: the same model's real-word rate without the nucleus cut",
            f"evaluate: {e.samples} samples at temperature {e.temperature}, top_p {e.top_p}, seeds from {e.seed}",
            "a base is pretrained with the lever's train: params on its own text for its share of the "
            "reference's seconds (base train s), then remapped to the demo's vocabulary (at the start of "
            "training, tweetbot.checkpoint.remapped) and fine-tuned for the rest (train s): a demo on a fresh "
            "clone pays for both",
        ],
    }


if __name__ == "__main__":
    if sys.argv[1:2] == ["--sampling"]:  # python -m benchmarks.sample_quality --sampling LEVER
        save(f"sample_settings-{folder_of(sys.argv[2]).name}", sampling(sys.argv[2]))
    elif sys.argv[1:2] == ["--out"]:  # python -m benchmarks.sample_quality --out NAME LEVER...: results/NAME.*
        save(sys.argv[2], main(sys.argv[3:]))
    else:
        save("sample_quality", main(sys.argv[1:]))
