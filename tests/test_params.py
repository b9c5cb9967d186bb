"""params.yaml sections: defaults, strict keys and types, one-line errors."""

from __future__ import annotations

import dataclasses

import pytest
import yaml

from tests.pipeline import source_tree
from tweetbot import params
from tweetbot.runtime.errors import UserError


def write(tmp_path, text: str):
    path = tmp_path / "params.yaml"
    path.write_text(text)
    return path


def test_missing_keys_take_defaults(tmp_path):
    p = params.load("preprocess", write(tmp_path, "preprocess:\n  val_fraction: 0.2\n"))
    assert p.val_fraction == 0.2
    assert p.min_char_count == params.PreprocessParams().min_char_count


def test_missing_section_is_all_defaults(tmp_path):
    assert params.load("fetch", write(tmp_path, "preprocess: {}\n")) == params.FetchParams()


@pytest.mark.parametrize("section", params.SECTIONS)
def test_params_file_documents_every_default(section):
    """params.yaml lists every key of every section with the dataclass default: one source of truth, so a
    section that omits a key gets the value params.yaml documents."""
    values = yaml.safe_load((source_tree() / "params.yaml").read_text())[section]  # the working tree's file
    defaults = dataclasses.asdict(params.SECTIONS[section]())
    assert list(values) == list(defaults), f"params.yaml `{section}:` must list every key, in the dataclass order"
    differing = {key: (value, defaults[key]) for key, value in values.items() if value != defaults[key]}
    assert not differing, f"{section}: params.yaml value vs dataclass default: {differing}"
    assert params.from_mapping(section, values) == params.SECTIONS[section]()


def test_unknown_key_suggests_the_close_one(tmp_path):
    with pytest.raises(UserError, match=r"unknown key `preprocess.val_fractoin`: did you mean `val_fraction`"):
        params.load("preprocess", write(tmp_path, "preprocess:\n  val_fractoin: 0.2\n"))


def test_unknown_section_is_an_error(tmp_path):
    with pytest.raises(UserError, match=r"unknown section `preprocces`: did you mean `preprocess`"):
        params.load("fetch", write(tmp_path, "preprocces: {}\n"))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("fetch:\n  source: myspace\n", "one of demo, x_api, archive, file"),
        ("fetch:\n  include_retweets: 3\n", "expected bool"),
        ("fetch:\n  max_posts: many\n", "expected int or null"),
        ("preprocess:\n  val_fraction: true\n", "expected float"),
    ],
)
def test_wrong_values_name_the_key_and_the_expected_type(tmp_path, text, expected):
    with pytest.raises(UserError, match=expected):
        params.load(text.split(":")[0], write(tmp_path, text))


def test_an_int_is_a_float(tmp_path):
    assert params.load("preprocess", write(tmp_path, "preprocess:\n  val_fraction: 1\n")).val_fraction == 1


def test_invalid_yaml_names_the_line(tmp_path):
    with pytest.raises(UserError, match=r"not valid YAML at line \d+: fix the syntax"):
        params.load("fetch", write(tmp_path, "fetch:\n  source: [demo\n"))


def test_missing_file(tmp_path):
    with pytest.raises(UserError, match="params.yaml not found"):
        params.load("fetch", tmp_path / "params.yaml")
