"""Typed `params.yaml` sections.

Each stage reads only its own section (`load("train")`), so DVC re-runs a stage only when that section changes.
A key that a section does not know, a value of the wrong type or outside its choices is a `UserError` that
names the key and the fix: a typo in `dvc exp run -S train.rnn_sise=120` must not silently train the default.

The dataclass defaults are the documented values: params.yaml lists every key of every section with its default
(tests/test_params.py holds them equal), so a section that omits a key gets what params.yaml says.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

from tweetbot.runtime.errors import UserError

PARAMS_FILE = Path("params.yaml")


SourceKind = Literal["demo", "x_api", "archive", "file", "mastodon", "bluesky"]


@dataclass(frozen=True)
class FetchSource:
    """One account or file to fetch: the whole `fetch:` section, or one entry of its `sources:` list."""

    source: SourceKind = "demo"
    handle: str | None = None  # x_api: NASA; mastodon: user@server; bluesky: name.bsky.social or a DID
    path: str | None = None  # archive: tweets.js, a folder of parts, or the .zip; file: .jsonl, .csv or .txt
    api_url: str | None = None  # the server to talk to instead of the default (a mirror, a self-hosted server)


@dataclass(frozen=True)
class FetchParams:
    source: SourceKind = "demo"
    handle: str | None = None  # the account, for x_api, mastodon and bluesky (see FetchSource)
    path: str | None = None  # the archive or the file
    api_url: str | None = None  # mastodon: https://SERVER by default; bluesky: the public AppView
    sources: list = dataclasses.field(default_factory=list)  # several FetchSource entries into one posts file
    include_retweets: bool = True  # retweets, boosts and reposts
    include_replies: bool = True
    content_warnings: Literal["keep", "drop"] = "keep"  # mastodon: a content warning as the first paragraph, or not
    max_posts: int | None = None  # per account: None is as many as the source gives (X: the newest 3,200)
    strict: bool = False  # files: one bad row refuses the whole file (default: skip it, with a warning)

    def entries(self) -> list[FetchSource]:
        """The accounts and files to fetch: the `sources:` list, or the section's own source."""
        if not self.sources:
            return [FetchSource(self.source, self.handle, self.path, self.api_url)]
        if self.source != "demo" or self.handle or self.path or self.api_url:
            raise UserError(
                "params.yaml: `fetch.sources` lists the accounts, so `fetch.source`, `handle`, `path` and `api_url` "
                "must be left out: move them into an entry of the list"
            )
        entries = []
        for number, entry in enumerate(self.sources, start=1):
            if not isinstance(entry, dict) or "source" not in entry:
                raise UserError(f"params.yaml: fetch.sources entry {number} must be a mapping with a `source:` key")
            entries.append(_from_values(f"fetch.sources[{number}]", FetchSource, entry))
        return entries


@dataclass(frozen=True)
class PreprocessParams:
    val_fraction: float = 0.1
    seed: int = 0
    drop_retweets: bool = True
    drop_replies: bool = False
    links: Literal["keep", "drop", "token"] = "token"
    mentions: Literal["keep", "drop", "token"] = "keep"
    min_char_count: int = 3


@dataclass(frozen=True)
class TrainParams:
    model: Literal["lstm", "gru", "rnn"] = "lstm"
    rnn_size: int = 128
    num_layers: int = 2
    seq_length: int = 64
    batch_size: int = 64
    learning_rate: float = 0.012
    lr_decay: float = 0.95  # multiplied into the learning rate every `lr_decay_steps` steps
    lr_decay_steps: int = 100
    grad_clip: float = 5.0
    input_keep_prob: float = 1.0
    output_keep_prob: float = 1.0
    matmul_dtype: Literal["auto", "float32", "bfloat16"] = "auto"  # auto: bfloat16 where the chip computes it
    position_input: bool = False  # the first layer also reads where in its post each character stands
    length_input: bool = True  # the first layer also reads how many characters its post has left
    max_steps: int = 1200
    time_budget_s: float | None = None  # stop at max_steps or after this many seconds, whichever is first
    eval_every: int = 100
    seed: int = 0
    init_from: str | None = None  # a checkpoint to fine-tune from


@dataclass(frozen=True)
class ExportParams:
    min_improvement_bpc: float = 0.5
    max_copy_rate: float = 0.01  # refuse a model more of whose samples than this copy a run of a training post
    copy_samples: int = 256  # the samples that share is measured on (seeds 0..N-1, as evaluate draws them)
    copy_temperature: float = 0.8


@dataclass(frozen=True)
class EvaluateParams:
    samples: int = 256  # sample i is drawn with seed `seed + i`: the same model always gets the same figures
    temperature: float = 0.8  # and top_p: the service's default (tweetbot.runtime.sampling; a test holds them equal)
    top_p: float = 0.6
    max_length: int = 280  # the cap; a sample that ends before it ended by itself
    seed: int = 0


@dataclass(frozen=True)
class ImageParams:
    name: str = "tweetbot"  # the local image is name:tag; the tag is a hash of what goes into it
    builder: Literal["auto", "docker", "podman", "buildah"] = "auto"  # auto: the first that works here
    platform: Literal["linux/amd64", "linux/arm64"] = "linux/amd64"
    base_image: str = "python:3.11-slim"  # any image with Python 3.11 at `python3`


@dataclass(frozen=True)
class DeployParams:
    """params.yaml `deploy:`; deploy/checks.py checks the values against what AWS accepts before any call."""

    region: str | None = None  # None: the standard AWS chain (AWS_REGION, the profile's region)
    name: str = "tweetbot"  # names every resource: repository, cluster, service, load balancer, log group, role...
    cpu: int = 1024  # Fargate CPU units (1024 = 1 vCPU)
    memory: int = 2048  # MiB
    port: int = 8080
    desired_count: int = 1  # tasks when the service is created; autoscaling owns the count after that
    min_tasks: int = 1
    max_tasks: int = 4
    cpu_target_percent: float = 70.0  # target tracking on the service's average CPU
    requests_per_task: int = 1000  # target tracking on requests per task per minute (with a load balancer)
    scale_out_cooldown_s: int = 60
    scale_in_cooldown_s: int = 300
    load_balancer: bool = True  # false: one public task, no load balancer (the cheapest bot)
    certificate_arn: str | None = None  # an ACM certificate of the region: HTTPS on 443, 80 redirects to it
    allowed_cidrs: list = dataclasses.field(default_factory=lambda: ["0.0.0.0/0"])  # who may reach the service
    target_group_arn: str | None = None  # a target group of your own load balancer, instead of tweetbot's
    subnets: list = dataclasses.field(default_factory=list)  # empty: the default VPC's default subnets
    security_groups: list = dataclasses.field(default_factory=list)  # empty: a group of tweetbot's own
    assign_public_ip: bool = True  # tasks in public subnets need it to pull the image (or a NAT / VPC endpoints)
    spot: bool = False  # run the tasks on Fargate Spot (cheaper, may be reclaimed with 2 minutes' notice)
    log_retention_days: int = 30
    rollout_timeout_s: float = 900
    environment: dict = dataclasses.field(default_factory=dict)  # non-secret variables for the container


@dataclass(frozen=True)
class UpdateParams:
    min_new_posts: int = 20  # fewer new posts than this since the last update: nothing to do
    fine_tune_steps: int = 300  # train.max_steps of a fine-tune from the live model (train.init_from)
    min_improvement: float = 0.0  # nats/char the new model must beat the live one by on the old val posts


SECTIONS: dict[str, type] = {
    "fetch": FetchParams,
    "preprocess": PreprocessParams,
    "train": TrainParams,
    "export": ExportParams,
    "evaluate": EvaluateParams,
    "image": ImageParams,
    "deploy": DeployParams,
    "update": UpdateParams,
}


def load_keeping_comments(text: str):
    """params.yaml text as a document to edit in place and write back with `dump_keeping_comments`: its comments
    and key order stay (ruamel, DVC's own YAML library)."""
    from ruamel.yaml import YAML

    return YAML().load(text)


def dump_keeping_comments(document) -> str:
    import io

    from ruamel.yaml import YAML

    out = io.StringIO()
    YAML().dump(document, out)
    return out.getvalue()


def with_sections(text: str, other: str, sections: tuple[str, ...]) -> str:
    """params.yaml `text` with `sections` as params.yaml `other` has them (or without them), comments and all."""
    document, source = load_keeping_comments(text), load_keeping_comments(other)
    for section in sections:
        if section in source:
            document[section] = source[section]
        else:
            document.pop(section, None)
    return dump_keeping_comments(document)


def load(section: str, path: Path | str = PARAMS_FILE):
    """Read one section of `params.yaml` into its dataclass; missing keys take their defaults."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path} not found: run from the repository root, where params.yaml is")
    try:
        document = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise UserError(f"{path} is not valid YAML{where}: fix the syntax") from None
    if not isinstance(document, dict):
        raise UserError(f"{path} must be a mapping of sections (fetch:, preprocess:, ...)")
    unknown = sorted(set(document) - set(SECTIONS))
    if unknown:
        raise UserError(_unknown_message(f"{path}: unknown section `", unknown[0], SECTIONS, close="`"))
    return from_mapping(section, document.get(section) or {})


def from_mapping(section: str, values: dict[str, Any]):
    """Build the dataclass of `section` from a mapping, checking every key and value."""
    if not isinstance(values, dict):
        raise UserError(f"params.yaml: `{section}:` must be a mapping of keys to values")
    return _from_values(section, SECTIONS[section], values)


def _from_values(name: str, cls: type, values: dict[str, Any]):
    fields = {field.name: field for field in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    for key, value in values.items():
        if key not in fields:
            raise UserError(_unknown_message(f"params.yaml: unknown key `{name}.", key, fields, close="`"))
        _check_type(f"{name}.{key}", value, hints[key])
    return cls(**values)


def _unknown_message(prefix: str, key: str, known, close: str = "") -> str:
    suggestion = difflib.get_close_matches(key, list(known), n=1)
    fix = f"did you mean `{suggestion[0]}`?" if suggestion else f"known: {', '.join(sorted(known))}"
    return f"{prefix}{key}{close}: {fix}"


def _check_type(name: str, value: Any, hint: Any) -> None:
    allowed = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    if any(_matches(value, option) for option in allowed):
        return
    expected = " or ".join(_describe(option) for option in allowed)
    raise UserError(f"params.yaml: `{name}` is {value!r}, expected {expected}: fix the value")


def _matches(value: Any, hint: Any) -> bool:
    if hint is type(None):
        return value is None
    if typing.get_origin(hint) is Literal:
        return value in typing.get_args(hint)
    if hint is float:  # YAML writes 1 for 1.0
        return isinstance(value, int | float) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, hint)


def _describe(hint: Any) -> str:
    if hint is type(None):
        return "null"
    if typing.get_origin(hint) is Literal:
        return "one of " + ", ".join(map(str, typing.get_args(hint)))
    return hint.__name__
