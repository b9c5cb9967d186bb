"""The training benchmark's trainers build and train through train.create_state/make_train_step.

`make bench` is not part of the suite, so an API change in train.py once broke it unnoticed (FlaxLSTM lacked
the init_variables that create_state calls). Speed is not measured here: each trainer takes a few steps.
"""

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
