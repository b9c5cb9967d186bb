"""The training benchmark's trainers build and train through train.create_state/make_train_step.

`make bench` is not part of the suite, so an API change in train.py once broke it unnoticed (FlaxLSTM lacked
the init_variables that create_state calls). Speed is not measured here: each trainer takes a few steps.
"""

import inspect

from benchmarks import train_speed
from tweetbot import malloc, train
from tweetbot.params import TrainParams


def test_every_training_benchmark_model_trains():
    tweetbot = train.build_model(TrainParams(rnn_size=16, num_layers=1, length_input=False), train_speed.VOCAB)
    models = [(tweetbot, True), (tweetbot, False), (train_speed.FlaxLSTM(train_speed.VOCAB, 16, 1), False)]
    for model, fused in models:
        chars_per_second = train_speed.jax_trainer(model, fused=fused)(0.01)
        assert chars_per_second > 0


def test_pytorch_runs_with_the_malloc_settings_tweetbot_trains_with():
    assert train_speed.Torch.environment()["GLIBC_TUNABLES"] == malloc.TUNABLES


def test_the_tweetbot_rows_train_as_training_does():
    """The "tweetbot" rows once passed fused=None, which make_train_step read as "no kernel": all pure JAX."""
    default = inspect.signature(train.make_train_step).parameters["fused"].default
    assert inspect.signature(train_speed.jax_trainer).parameters["fused"].default is default is True
