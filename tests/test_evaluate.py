"""The evaluate stage: words, copies, lengths and end-of-post figures of a model's samples, deterministic."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from tests.pipeline import dvc
from tests.pipeline import run as git
from tests.tiny_bundle import VOCAB, write_tiny_bundle
from tests.trainkit import TINY, params_yaml, write_data
from tweetbot import evaluate
from tweetbot.copies import RUN, TrainingRuns, copy_rate
from tweetbot.corpus import encode
from tweetbot.params import EvaluateParams
from tweetbot.runtime.errors import UserError
from tweetbot.runtime.vocab import LINK, MENTION, Vocab

REPO = Path(__file__).resolve().parents[1]
TRAIN = ["The quick brown fox jumps over the lazy dog!", "the lazy fox #nasa", "quick quick brown dog 0123"]
VAL = ["The brown dog jumps", "the quick zebra"]


def processed(folder: Path, train=TRAIN, val=VAL, vocab: Vocab = VOCAB) -> Path:
    """train.npy, val.npy and vocab.json as preprocess writes them."""
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / "train.npy", encode(train, vocab))
    np.save(folder / "val.npy", encode(val, vocab))
    vocab.save(folder / "vocab.json")
    return folder


def test_words_are_letters_lower_cased_with_mentions_hashtags_and_links_aside():
    text = f"NASA’s #Mars rover, @NASAJPL and {MENTION} see it: https://go.nasa.gov/x {LINK} 2pm can't-miss"
    assert evaluate.words(text) == ["nasa's", "rover", "and", "see", "it", "pm", "can't", "miss"]


def test_the_real_word_rate_counts_words_found_among_the_known_ones():
    known = {"the", "dog", "jumps"}
    assert evaluate.real_word_rate(["The dog jumps", "the dgo #jumpz"], known) == pytest.approx(4 / 5)
    assert evaluate.real_word_rate(["#only @tags"], known) == 1.0


def test_the_ks_distance_is_the_largest_gap_between_the_distributions():
    assert evaluate.ks_distance([1, 2, 3], [1, 2, 3]) == 0.0
    assert evaluate.ks_distance([1, 2], [5, 6, 7]) == 1.0
    assert evaluate.ks_distance([1, 2, 3, 4], [3, 4, 5, 6]) == pytest.approx(0.5)


def long_posts() -> tuple[list[str], Vocab]:
    posts = [
        "Astronauts aboard the space station grew lettuce in orbit for the first time this week",
        "Our new telescope sees the faint glow of galaxies that formed just after the Big Bang",
    ]
    return posts, Vocab.build(posts)


def test_a_sample_holding_a_run_of_a_training_post_is_a_copy():
    posts, vocab = long_posts()
    runs = TrainingRuns(encode(posts, vocab))
    inside = "I read that " + posts[0][10 : 10 + RUN] + " and laughed"
    shorter = "I read that " + posts[0][10 : 10 + RUN - 1] + " and laughed"
    across = posts[0][-RUN // 2 :] + " " + posts[1][: RUN // 2]  # the end of one post, the start of the next
    assert runs.copies(vocab.encode(inside)) and runs.copies(vocab.encode(posts[1]))
    assert not runs.copies(vocab.encode(shorter)) and not runs.copies(vocab.encode(across))
    assert not runs.copies(vocab.encode("too short"))
    assert copy_rate([inside, shorter, across, posts[1]], vocab, runs) == 0.5


def test_a_hash_hit_is_confirmed_symbol_by_symbol(monkeypatch):
    posts, vocab = long_posts()
    monkeypatch.setattr("tweetbot.copies.window_hashes", lambda ids, run: np.zeros(max(len(ids) - run + 1, 0)))
    runs = TrainingRuns(encode(posts, vocab))  # every window hashes alike: every lookup is a hit
    assert runs.copies(vocab.encode(posts[0])) and not runs.copies(vocab.encode(posts[0][::-1]))


def test_measure_reports_the_figures_of_given_samples():
    posts, vocab = long_posts()
    runs = TrainingRuns(encode(posts, vocab))
    samples = [posts[0], "the glow of galaxies zorblat", "x" * 30]
    metrics = evaluate.measure(samples, posts, ["the first telescope"], runs, vocab, max_length=30)
    assert metrics["samples"] == 3
    assert metrics["real_words"] == pytest.approx(round((15 + 4) / (15 + 5 + 1), 4))
    assert metrics["real_words_heldout"] == 1.0
    assert metrics["copy_rate"] == pytest.approx(round(1 / 3, 4))
    assert metrics["eos_rate"] == pytest.approx(round(1 / 3, 4))  # only the 28-character sample ended before 30
    assert metrics["length_median"] == 30 and metrics["length_median_account"] == np.median([len(p) for p in posts])


def run_stage(tmp_path: Path, bundle: Path, data: Path, **settings) -> subprocess.CompletedProcess:
    lines = ["evaluate:"] + [f"  {key}: {value}" for key, value in settings.items()]
    (tmp_path / "params.yaml").write_text("\n".join(lines) + "\n")
    command = [sys.executable, str(REPO / "stages" / "evaluate.py"), str(bundle), str(data), "evaluation"]
    return subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, check=False)


def test_the_stage_writes_metrics_plot_data_and_samples_the_same_each_time(tmp_path):
    bundle, data = write_tiny_bundle(tmp_path / "export"), processed(tmp_path / "processed")
    result = run_stage(tmp_path, bundle, data, samples=6, max_length=40)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("evaluate: 6 samples at temperature 0.8: real words ")
    out = tmp_path / "evaluation"
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics) == {
        "samples", "real_words", "real_words_heldout", "copy_rate", "eos_rate",
        "length_median", "length_median_account", "length_ks",
    }  # fmt: skip
    assert metrics["real_words_heldout"] == pytest.approx(6 / 7, abs=1e-4)  # "zebra" is no training word
    with (out / "lengths.csv").open() as file:
        rows = list(csv.DictReader(file))
    assert [int(row["length"]) for row in rows] == [0, 20]
    assert sum(float(row["samples"]) for row in rows) == pytest.approx(1.0, abs=1e-3)
    assert sum(float(row["account"]) for row in rows) == pytest.approx(1.0, abs=1e-3)
    assert (out / "samples.txt").read_text().count("\n\n") == 6
    shown = evaluate.summary(out)  # what `tweetbot summary` adds
    assert f"real words:  {metrics['real_words']:.1%} of the words written" in shown
    assert f"(held-out posts: {metrics['real_words_heldout']:.1%})" in shown
    first = {name: (out / name).read_text() for name in ("metrics.json", "lengths.csv", "samples.txt")}
    assert run_stage(tmp_path, bundle, data, samples=6, max_length=40).returncode == 0
    assert first == {name: (out / name).read_text() for name in first}


@pytest.mark.parametrize(("eos_bias", "eos_rate"), [(50.0, 1.0), (-50.0, 0.0)])
def test_the_end_of_post_rate_tells_ending_by_itself_from_the_cap(tmp_path, eos_bias, eos_rate):
    bundle, data = write_tiny_bundle(tmp_path / "export", eos_bias=eos_bias), processed(tmp_path / "processed")
    metrics = evaluate.run(EvaluateParams(samples=4, max_length=25), bundle, data, tmp_path / "out")
    assert metrics["eos_rate"] == eos_rate
    assert metrics["length_median"] == (0 if eos_rate else 25)


def test_data_that_is_not_the_bundle_s_is_a_user_error(tmp_path):
    bundle = write_tiny_bundle(tmp_path / "export")
    other = processed(tmp_path / "other", vocab=Vocab.build(TRAIN))
    with pytest.raises(UserError, match="dvc repro export"):
        evaluate.run(EvaluateParams(samples=2), bundle, other, tmp_path / "out")
    (other / "val.npy").unlink()
    with pytest.raises(UserError, match="val.npy not found"):
        evaluate.run(EvaluateParams(samples=2), bundle, other, tmp_path / "out")


def test_a_typo_in_the_section_is_one_line(tmp_path):
    result = run_stage(tmp_path, tmp_path / "export", tmp_path / "processed", sampels=6)
    assert result.returncode == 2
    assert result.stderr == "error: params.yaml: unknown key `evaluate.sampels`: did you mean `samples`?\n"


@pytest.mark.slow  # git + dvc + train, export and evaluate subprocesses: a minute on a busy machine
def test_dvc_exp_show_lists_the_evaluation_beside_the_validation_loss(tmp_path):
    """`dvc exp run` through train, export and evaluate with their real stage definitions, on tiny settings."""
    pipeline = yaml.safe_load((REPO / "dvc.yaml").read_text())
    stages = {name: pipeline["stages"][name] for name in ("train", "export", "evaluate")}
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump({"stages": stages, "plots": pipeline["plots"]}))
    for folder in ("stages", "src"):
        shutil.copytree(REPO / folder, tmp_path / folder, ignore=shutil.ignore_patterns("__pycache__"))
    write_data(tmp_path / "data" / "processed")
    tiny = {k: getattr(TINY, k) for k in ("rnn_size", "num_layers", "seq_length", "batch_size", "eval_every")}
    (tmp_path / "params.yaml").write_text(
        params_yaml(**tiny, max_steps=20)
        + "export:\n  min_improvement_bpc: -10\n  copy_samples: 8\nevaluate:\n  samples: 8\n  max_length: 60\n"
    )
    git(tmp_path, "git", "init", "-q")
    dvc(tmp_path, "init", "-q")
    git(tmp_path, "git", "add", "-A")
    git(tmp_path, "git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "tiny project")

    dvc(tmp_path, "exp", "run", "-S", "evaluate.samples=6", "--name", "fewer")
    shown = json.loads(dvc(tmp_path, "exp", "show", "--json").stdout)
    experiments = {
        exp["name"]: exp["revs"][0]["data"]
        for row in shown
        for exp in (row.get("experiments") or [])
        if exp.get("name")
    }
    metrics = experiments["fewer"]["metrics"]
    assert 0 < metrics["dvclive/metrics.json"]["data"]["val_loss"] < 10
    evaluation = metrics["evaluation/metrics.json"]["data"]
    assert evaluation["samples"] == 6 and 0 <= evaluation["real_words"] <= 1
    assert evaluation["real_words_heldout"] == 1.0  # the held-out posts are training posts reversed in order
    assert "lengths" in dvc(tmp_path, "plots", "show", "--json").stdout


def test_the_summary_places_an_account_on_the_posts_needed_table(tmp_path):
    rows = [
        {"training posts": n, "start": start, "real_words": rate, "real_words_heldout": person}
        for n, person in ((250, 0.83), (1000, 0.93))
        for start, rate in (("scratch", person - 0.2), ("shakespeare base", person - 0.1))
    ]
    table = tmp_path / "posts_needed.json"
    table.write_text(json.dumps({"rows": rows}))
    shown = evaluate.posts_needed_summary(600, table).splitlines()
    assert shown[1].split() == ["posts", "scratch", "shakespeare", "base", "held-out", "posts"]
    assert shown[2].split() == ["250", "63.0%", "73.0%", "83.0%"]
    assert shown[-1] == "  this account: 600 training posts, at least the 250 row"
    assert evaluate.posts_needed_summary(100, table).endswith("below the smallest row (250)")
    assert evaluate.posts_needed_summary(600, tmp_path / "none.json") is None
