"""Training: the jitted train step, evaluation, checkpoints, resume, and the loop that ties them together.

    run(params, data_dir, checkpoint_dir, live_dir)

reads `train.npy`, `val.npy` and `vocab.json` from `data_dir`, trains the CharRNN that `params` (the `train:`
section) describes with truncated back-propagation through time (see input_pipeline), evaluates on the
validation split every `eval_every` steps, keeps `best.msgpack` and `last.msgpack` in `checkpoint_dir`
(see checkpoint), and logs metrics and loss curves with DVCLive into `live_dir`. If `last.msgpack` exists and
was written with the same params (the stopping rules `max_steps` and `time_budget_s` may differ, so a run can
be extended), training resumes from it and ends exactly as an uninterrupted run would.

The write protocol, so that a kill at any instant resumes to the same files: `last.msgpack` is the commit of an
evaluation and is written after `best.msgpack` (a kill between the two resumes from the previous `last`, trains
the interval again and writes the same best again; the other order left a `last` that believed a best saved that
never was). What DVCLive writes after the commit is rebuilt from `last.msgpack` on resume (`_rewind_live_dir`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import re
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax.training.train_state import TrainState
from tqdm import tqdm

from tweetbot import atomic, checkpoint, kernels, malloc
from tweetbot.input_pipeline import Lanes, eval_lanes, length_quantiles
from tweetbot.params import TrainParams
from tweetbot.runtime.errors import UserError
from tweetbot.runtime.model import CharRNN, model_config
from tweetbot.runtime.vocab import Vocab

STOPPING_RULES = ("max_steps", "time_budget_s")  # may change between a run and its resumption
LN2 = math.log(2)


class NonFiniteLoss(UserError):
    """The loss became NaN or infinite: the run stops instead of saving garbage."""


@dataclasses.dataclass
class Progress:
    """How far a run got: its counters, its latest evaluation and its speed. A checkpoint's meta holds them beside
    the run's identity (model, params, data), and a resume starts from those of `last.msgpack`."""

    step: int = 0
    chars_seen: int = 0
    train_seconds: float = 0.0
    best_val_loss: float = math.inf
    train_loss: float | None = None  # the latest evaluation's: the mean over the steps since the one before
    val_loss: float | None = None
    val_bpc: float | None = None
    chars_per_second: float | None = None  # over the latest interval

    @classmethod
    def of(cls, meta: dict) -> Progress:
        return cls(**{field.name: meta[field.name] for field in dataclasses.fields(cls) if field.name in meta})

    def trained(self, steps: int, chars: int, seconds: float) -> None:
        self.step += steps
        self.chars_seen += chars
        self.train_seconds += seconds
        self.chars_per_second = chars / seconds

    def evaluated(self, train_loss: float, val_loss: float) -> bool:
        """Note an evaluation; whether it is the best so far."""
        best = val_loss < self.best_val_loss
        self.train_loss, self.val_loss, self.val_bpc = train_loss, val_loss, val_loss / LN2
        self.best_val_loss = min(val_loss, self.best_val_loss)
        return best


def build_model(params: TrainParams, vocab_size: int, train_tokens: np.ndarray | None = None) -> CharRNN:
    """The model `params` describes; with `length_input`, it keeps the lengths of the posts of `train_tokens`."""
    if params.length_input and train_tokens is None:
        raise ValueError("a model with length_input keeps its training posts' lengths: pass train_tokens")
    return CharRNN(
        vocab_size=vocab_size,
        rnn_size=params.rnn_size,
        num_layers=params.num_layers,
        cell=params.model,
        input_keep_prob=params.input_keep_prob,
        output_keep_prob=params.output_keep_prob,
        matmul_dtype=resolved_matmul_dtype(params.matmul_dtype),
        position_input=params.position_input,
        length_quantiles=length_quantiles(train_tokens) if params.length_input else (),
    )


def resolved_matmul_dtype(setting: str, cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """The matmul dtype `train.matmul_dtype` means here. "auto": bfloat16 on a GPU or TPU, or on a CPU with bf16
    units (AVX-512 BF16, AMX), else float32: without them bfloat16 is converted in software, and on a Zen 3 EPYC
    1,200 demo steps took 198 s in bfloat16 against 185 s in float32 (README, "Training")."""
    if setting != "auto":
        return setting
    if jax.default_backend() != "cpu":
        return "bfloat16"
    try:
        flags = cpuinfo.read_text()
    except OSError:  # not Linux: no way to tell, and float32 is never the slow choice
        return "float32"
    return "bfloat16" if re.search(r"\b(avx512_bf16|amx_bf16)\b", flags) else "float32"


def make_optimizer(params: TrainParams) -> optax.GradientTransformation:
    """Adam with global-norm clipping; the learning rate is multiplied by lr_decay every lr_decay_steps."""
    schedule = optax.exponential_decay(params.learning_rate, params.lr_decay_steps, params.lr_decay, staircase=True)
    return optax.chain(optax.clip_by_global_norm(params.grad_clip), optax.adam(schedule))


def create_state(model: CharRNN, params: TrainParams, seed: int) -> TrainState:
    variables = model.init_variables(jax.random.key(seed))
    state = TrainState.create(apply_fn=model.apply, params=variables["params"], tx=make_optimizer(params))
    return state.replace(step=jnp.asarray(0, jnp.int32))  # an array, as every later step is


def cross_entropy(logits: jax.Array, targets: jax.Array) -> jax.Array:
    """Mean loss in nats per character."""
    return optax.softmax_cross_entropy_with_integer_labels(logits, targets).mean()


def make_train_step(model: CharRNN, seed: int, fused: bool = True):
    """One jitted function: forward, loss, gradients, clipping, optimizer update.

    `train_step(state, carry, inputs, targets[, chars_left]) -> (state, carry, loss)` (chars_left: a model that
    reads its posts' lengths, input_pipeline.Lanes); the carry returned is the recurrent
    state at the end of the window (no gradient flows through it into the next window: truncated BPTT).
    On a CPU an LSTM trains through the fused kernel where it is built (tweetbot.kernels); `fused=False` keeps
    the pure-JAX recurrence (the benchmark compares them).
    """
    dropout_base = jax.random.key(seed + 1)
    recurrence = kernels.lstm_recurrence(model) if fused else None
    # The model's own recurrence otherwise; the kernel also runs the first layer over its input projection.
    extra = {"recurrence": recurrence, "projected": kernels.lstm_projected} if recurrence else {}

    def train_step(state: TrainState, carry, inputs, targets, chars_left=None):
        dropout_key = jax.random.fold_in(dropout_base, state.step)  # same key for the same step, on resume too

        def loss_fn(params):
            logits, new_carry = state.apply_fn(
                {"params": params},
                inputs,
                carry,
                train=True,
                rngs={"dropout": dropout_key},
                chars_left=chars_left,
                **extra,
            )
            return cross_entropy(logits, targets), new_carry

        (loss, new_carry), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        return state.apply_gradients(grads=grads), new_carry, loss

    return jax.jit(train_step, donate_argnums=0)


def make_evaluate(model: CharRNN):
    """`evaluate(params, inputs, targets[, chars_left]) -> mean loss (nats/char)` over stacked windows [W, B, T]
    (Lanes.all_windows), carrying the state from window to window as training does."""

    def evaluate(params, inputs, targets, chars_left=None):
        def window(carry, batch):
            inputs, targets, chars_left = batch
            logits, carry = model.apply({"params": params}, inputs, carry, train=False, chars_left=chars_left)
            return carry, cross_entropy(logits, targets)

        batches = (inputs, targets, chars_left)
        _, losses = jax.lax.scan(window, model.initial_carry(inputs.shape[1]), batches)
        return losses.mean()

    return jax.jit(evaluate)


def score(checkpoint_path: Path, ids: np.ndarray) -> float:
    """Mean loss (nats/char) of a checkpoint on the token ids `ids`, scored as training scores its val split."""
    model, variables, meta = checkpoint.load_checkpoint(checkpoint_path)
    batch_size, seq_length = meta["train_params"]["batch_size"], meta["train_params"]["seq_length"]
    lanes = eval_lanes(ids.astype(np.int32), batch_size, seq_length, with_chars_left=model.reads_length)
    return float(make_evaluate(model)(variables["params"], *lanes.all_windows()))


def load_split(data_dir: Path, name: str) -> np.ndarray:
    path = Path(data_dir) / f"{name}.npy"
    if not path.is_file():
        raise UserError(f"{path} not found: run the preprocess stage first (`dvc repro preprocess`)")
    return np.load(path).astype(np.int32)


def run(params: TrainParams, data_dir: Path, checkpoint_dir: Path, live_dir: Path) -> dict:
    """Train as `params` says; returns the final metrics (also in `meta` of the checkpoints)."""
    from dvclive import Live  # the pipeline's dependency, not the service's

    malloc.keep_freed_memory()  # each step's buffers are the last step's, not fresh pages
    data_dir, checkpoint_dir, live_dir = Path(data_dir), Path(checkpoint_dir), Path(live_dir)
    vocab = Vocab.load(data_dir / "vocab.json")
    vocab_size = len(vocab)
    train_tokens = load_split(data_dir, "train")
    model = build_model(params, vocab_size, train_tokens)
    with_chars_left = model.reads_length
    lanes = Lanes(train_tokens, params.batch_size, params.seq_length, with_chars_left=with_chars_left)
    val_tokens = load_split(data_dir, "val")
    val = eval_lanes(val_tokens, params.batch_size, params.seq_length, with_chars_left=with_chars_left).all_windows()

    state = create_state(model, params, params.seed)
    if params.init_from:
        state = state.replace(params=_fine_tune_start(Path(params.init_from), state.params, vocab))
    carry = model.initial_carry(params.batch_size)
    run_identity = {"model": model_config(model), "train_params": dataclasses.asdict(params), "vocab_size": vocab_size}
    run_identity["data_hash"] = _fingerprint(data_dir)
    progress = Progress()

    last_path = checkpoint_dir / checkpoint.LAST
    for name in (checkpoint.BEST, checkpoint.LAST):
        atomic.remove_leftovers(checkpoint_dir / name)  # of a write killed before its rename
    resumed = _resumable(last_path, run_identity)
    if resumed:
        state, carry, progress = _resume(resumed, state, carry)
        print(f"resuming from {last_path} at step {progress.step}", flush=True)
    else:  # checkpoints of another run must not pass for this one's
        for name in (checkpoint.BEST, checkpoint.LAST):
            (checkpoint_dir / name).unlink(missing_ok=True)

    # Compile before the clock starts, so chars/s measures training, not XLA.
    train_step = make_train_step(model, params.seed).lower(state, carry, *lanes.window(0)).compile()
    evaluate = make_evaluate(model).lower(state.params, *val).compile()

    def train_window(state, carry, step: int):
        k = step % lanes.windows_per_epoch
        if k == 0:
            carry = model.initial_carry(lanes.lanes)  # a new epoch starts from a clean state
        return train_step(state, carry, *lanes.window(k))

    # In a log file rather than a terminal (CI, `make demo > log`), a line every few seconds is enough.
    refresh_s = 0.1 if sys.stderr.isatty() else 5.0
    bar = tqdm(
        total=params.max_steps,
        initial=progress.step,
        desc="train",
        unit="step",
        dynamic_ncols=True,
        mininterval=refresh_s,
    )
    if resumed:
        _rewind_live_dir(live_dir, progress.step)
    with Live(str(live_dir), resume=bool(resumed), dvcyaml=None, save_dvc_exp=False) as live, bar:
        if resumed:
            _log(live, progress)  # the step resumed from, logged again from its checkpoint
        while progress.step < params.max_steps and not _out_of_time(params, progress.train_seconds):
            state, carry, losses, seconds = _train_interval(params, train_window, state, carry, progress, bar)
            progress.trained(len(losses), len(losses) * lanes.chars_per_window, seconds)
            train_loss = float(jnp.mean(jnp.stack(losses)))
            val_loss = float(evaluate(state.params, *val))
            if not (math.isfinite(train_loss) and math.isfinite(val_loss)):
                bad = val_loss if math.isfinite(train_loss) else train_loss
                raise NonFiniteLoss(
                    f"the loss became {bad} by step {progress.step}: lower learning_rate or grad_clip "
                    "(the checkpoints keep the last finite state)"
                )
            best = progress.evaluated(train_loss, val_loss)
            meta = run_identity | dataclasses.asdict(progress)
            if best:
                checkpoint.save(checkpoint_dir / checkpoint.BEST, meta, state.params)
            checkpoint.save(last_path, meta, state.params, state.opt_state, carry)  # the commit (module doc)
            _log(live, progress)
            bar.total = _expected_last_step(params, progress, lanes.chars_per_window)
            bar.set_postfix(
                train_loss=f"{train_loss:.3f}",
                val_loss=f"{val_loss:.3f}",
                chars_s=f"{progress.chars_per_second:,.0f}",
            )
    return {k: v for k in SUMMARY if (v := getattr(progress, k)) is not None}


SUMMARY = ("step", "train_loss", "val_loss", "val_bpc", "best_val_loss", "train_seconds")


def _train_interval(params: TrainParams, train_window, state: TrainState, carry, progress: Progress, bar):
    """Train from `progress` up to the next evaluation (every eval_every steps, at max_steps, or when time runs
    out); returns the state, the carry, the loss of each step and the seconds it took."""
    start, losses = time.perf_counter(), []
    while True:
        state, carry, loss = train_window(state, carry, progress.step + len(losses))
        losses.append(loss.block_until_ready())  # so the bar and the time budget see real progress
        bar.update(1)
        step = progress.step + len(losses)
        if (
            step % params.eval_every == 0
            or step >= params.max_steps
            or _out_of_time(params, progress.train_seconds + time.perf_counter() - start)
        ):
            return state, carry, losses, time.perf_counter() - start


def _log(live, progress: Progress) -> None:
    live.step = progress.step
    for name in ("train_loss", "val_loss", "val_bpc"):
        live.log_metric(name, getattr(progress, name))
    live.log_metric("steps", progress.step, plot=False)
    live.log_metric("chars_per_second", round(progress.chars_per_second), plot=False)
    live.next_step()


def _expected_last_step(params: TrainParams, progress: Progress, chars_per_step: int) -> int:
    """The step training will stop at: max_steps, or sooner if the time budget runs out first at this speed."""
    if params.time_budget_s is None:
        return params.max_steps
    seconds_left = max(0.0, params.time_budget_s - progress.train_seconds)
    steps_per_second = progress.chars_per_second / chars_per_step
    return min(params.max_steps, progress.step + int(seconds_left * steps_per_second))


def _out_of_time(params: TrainParams, seconds: float) -> bool:
    """Whether `seconds` of training use up `time_budget_s` (a resumed run counts its earlier time too)."""
    return params.time_budget_s is not None and seconds >= params.time_budget_s


def _fingerprint(data_dir: Path) -> str:
    """A hash of the data trained on: new posts mean a new run, not the resumption of an old one."""
    digest = hashlib.sha256()
    for name in ("train.npy", "val.npy", "vocab.json"):
        digest.update((data_dir / name).read_bytes())
    return digest.hexdigest()


def _resumable(last_path: Path, run_identity: dict) -> dict | None:
    """The `last` checkpoint's record if it continues this very run (same params and data), else None."""
    if not last_path.is_file():
        return None
    saved = checkpoint.read(last_path)

    def same_run(meta):
        params = {k: v for k, v in meta["train_params"].items() if k not in STOPPING_RULES}
        return params, meta.get("data_hash")

    return saved if same_run(saved["meta"]) == same_run(run_identity) else None


def _resume(record: dict, state: TrainState, carry) -> tuple[TrainState, object, Progress]:
    """The state, carry and progress of `record`."""
    progress = Progress.of(record["meta"])
    state = state.replace(
        step=jnp.asarray(progress.step, jnp.int32),
        params=checkpoint.restore(state.params, record["params"]),
        opt_state=checkpoint.restore(state.opt_state, record["opt_state"]),
    )
    return state, checkpoint.restore(carry, record["carry"]), progress


def _fine_tune_start(path: Path, fresh_params, vocab: Vocab):
    """The weights of checkpoint `path`, checked to fit the model being trained. A checkpoint that names its
    vocabulary (an update's start: the live model) is first remapped to this data's, character by character."""
    record = checkpoint.read(path)
    if "vocab" in record["meta"]:
        record = checkpoint.remapped(record, Vocab(record["meta"]["vocab"]), vocab)
    shapes = jax.tree.map(np.shape, fresh_params)
    weights = dict(record["params"])
    for name in ("position", "chars_left"):  # a model from before train.position_input or train.length_input
        if name in fresh_params and name not in weights:
            weights[name] = jax.tree.map(np.asarray, fresh_params[name])  # zeros: it reads as before
    try:
        loaded = checkpoint.restore(fresh_params, weights)
    except (KeyError, ValueError):
        loaded = None
    if loaded is None or jax.tree.map(np.shape, loaded) != shapes:
        raise UserError(
            f"init_from {path}: its model ({record['meta']['model']}) does not match train: params and the "
            "vocabulary: use the same model, rnn_size, num_layers and preprocessing, or drop init_from"
        )
    return loaded


def _rewind_live_dir(live_dir: Path, step: int) -> None:
    """Make DVCLive's files end before `step`, the step of the checkpoint a run resumes from, which logs that step
    again. A kill can land while DVCLive writes (after the checkpoint): its summary may be torn, and its curves may
    end in a torn row or hold rows logged at or after `step`. Keep the whole rows before `step` (rewritten
    atomically: a kill here must not lose them) and drop the summary, which the log of `step` writes afresh."""
    (live_dir / "metrics.json").unlink(missing_ok=True)
    for tsv in (live_dir / "plots" / "metrics").glob("**/*.tsv"):
        atomic.remove_leftovers(tsv)
        lines = [line for line in tsv.read_text().splitlines(keepends=True) if line.endswith("\n")]
        if not lines:
            tsv.unlink()
            continue
        header, *rows = lines
        column = header.rstrip("\n").split("\t").index("step")
        atomic.write_text(tsv, header + "".join(row for row in rows if int(row.split("\t")[column]) < step))
