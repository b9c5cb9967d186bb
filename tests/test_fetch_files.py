"""The file sources (JSON lines, CSV, plain text), the demo source, and the fetch stage as DVC runs it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tweetbot import fetch
from tweetbot.params import FetchParams
from tweetbot.posts import read_posts
from tweetbot.runtime.errors import UserError
from tweetbot.sources.files import read_file

REPO = Path(__file__).resolve().parents[1]


def test_jsonl_with_string_and_number_ids_both_time_formats_and_extra_keys(tmp_path):
    source = tmp_path / "mine.jsonl"
    source.write_text(
        '{"id": "1013558869728071685", "created_at": "Sun Jul 01 23:04:00 +0000 2018", "text": "newest"}\n'
        "\n"
        '{"id": 42, "created_at": "2017-01-02T03:04:05+02:00", "text": "@someone a reply", "likes": 3}\n'
        '{"id": 7, "created_at": "2017-01-01", "text": "RT @other: shared", "lang": "en"}\n'
    )
    out = tmp_path / "tweets.jsonl"

    fetch.run(FetchParams(source="file", path=str(source)), out)

    origin = {"origin": f"file:{source}"}
    assert [json.loads(line) for line in out.read_text().splitlines()] == [
        {
            "id": "1013558869728071685",
            "created_at": "2018-07-01T23:04:00Z",
            "text": "newest",
            "is_retweet": False,
            "is_reply": False,
            "source": "file",
        }
        | origin,
        {
            "id": "42",
            "created_at": "2017-01-02T01:04:05Z",
            "text": "@someone a reply",
            "is_retweet": False,
            "is_reply": True,
            "source": "file",
        }
        | origin,
        {
            "id": "7",
            "created_at": "2017-01-01T00:00:00Z",
            "text": "RT @other: shared",
            "is_retweet": True,
            "is_reply": False,
            "source": "file",
        }
        | origin,
    ]


def test_a_fetched_output_reads_back_as_a_file_with_its_flags(tmp_path):
    source = tmp_path / "mine.jsonl"
    source.write_text('{"id": "9", "created_at": "2018-07-01T23:04:00Z", "text": "@x hello", "is_reply": false}\n')
    first = tmp_path / "first.jsonl"
    fetch.run(FetchParams(source="file", path=str(source)), first)
    again = tmp_path / "again.jsonl"

    fetch.run(FetchParams(source="file", path=str(first)), again)

    without_origin = [
        {k: v for k, v in json.loads(line).items() if k != "origin"} for line in first.read_text().splitlines()
    ]
    assert [
        {k: v for k, v in json.loads(line).items() if k != "origin"} for line in again.read_text().splitlines()
    ] == without_origin
    assert read_posts(again)[0].origin == f"file:{first}"  # the file is where these posts now come from
    assert read_posts(again)[0].is_reply is False  # the flag given wins over the leading "@"


def test_csv_with_a_header_naming_the_columns(tmp_path):
    source = tmp_path / "mine.csv"
    source.write_text(
        "text,id,created_at,retweets\n"
        '"Hello, world",3,2018-07-01T10:00:00Z,5\n'
        '"two\nlines",12,Sun Jul 01 23:04:00 +0000 2018,0\n'
    )

    posts = read_file(source)

    assert [(post.id, post.text, post.created_at) for post in posts] == [
        ("3", "Hello, world", "2018-07-01T10:00:00Z"),
        ("12", "two\nlines", "2018-07-01T23:04:00Z"),
    ]


def test_text_becomes_paragraph_posts_in_document_order(tmp_path):
    source = tmp_path / "book.txt"
    source.write_text("First Citizen:\nBefore we proceed.\n\nAll:\nSpeak, speak.\n  \n\n\nLast words.\n")
    os.utime(source, (1_530_486_240, 1_530_486_240))
    out = tmp_path / "tweets.jsonl"

    fetch.run(FetchParams(source="file", path=str(source)), out)

    posts = read_posts(out)
    in_document_order = sorted(posts, key=lambda post: int(post.id))
    assert [post.text for post in in_document_order] == [
        "First Citizen:\nBefore we proceed.",
        "All:\nSpeak, speak.",
        "Last words.",
    ]
    assert {post.created_at for post in posts} == {"2018-07-01T23:04:00Z"}


def test_tiny_shakespeare_becomes_a_corpus_of_paragraphs(corpora, tmp_path):
    document = (corpora / "tinyshakespeare.txt").read_text()

    posts = sorted(read_file(corpora / "tinyshakespeare.txt"), key=lambda post: int(post.id))

    assert len(posts) > 1000
    assert all(post.text and "\n\n" not in post.text for post in posts)
    assert "".join("".join(post.text.split()) for post in posts) == "".join(document.split())


@pytest.mark.parametrize(
    ("name", "content", "problem"),
    [
        (
            "bad.jsonl",
            '{"id": "1", "created_at": "2018-07-01", "text": "ok"}\n{"id": "2", ',
            r"bad.jsonl:2: not valid JSON",
        ),
        ("bad.jsonl", '{"id": "1", "text": "no date"}\n', r"bad.jsonl:1: no created_at"),
        (
            "bad.jsonl",
            '{"id": 1.5, "created_at": "2018-07-01", "text": "x"}\n',
            r"bad.jsonl:1: id 1.5 is a float",
        ),
        (
            "bad.jsonl",
            '{"id": "two words", "created_at": "2018-07-01", "text": "x"}\n',
            r"bad.jsonl:1: id 'two words' is neither",
        ),
        ("bad.jsonl", '["id", "created_at", "text"]\n', r"bad.jsonl:1: expected a JSON object"),
        ("bad.csv", "id,text\n1,hello\n", r"bad.csv: the header row has no column created_at"),
        ("bad.csv", "id,created_at,text\n1,2018-07-01,a\n2,soon,b\n", r"bad.csv:3: created_at 'soon'"),
        ("bad.csv", "id,created_at,text\n1,2018-07-01,a, b\n", r"bad.csv:2: more cells than the header"),
        ("posts.json", "[]", r"posts.json: unknown file type '.json'"),
    ],
)
def test_a_bad_file_is_one_line_naming_it_and_the_output_stays(tmp_path, name, content, problem):
    out = tmp_path / "tweets.jsonl"
    out.write_text("previous output\n")
    source = tmp_path / name
    source.write_text(content)

    with pytest.raises(UserError, match=problem) as raised:
        fetch.run(FetchParams(source="file", path=str(source)), out)

    assert "\n" not in str(raised.value)
    assert out.read_text() == "previous output\n"


def test_a_file_that_is_not_utf8_is_one_line(tmp_path):
    source = tmp_path / "latin1.txt"
    source.write_bytes("Café\n\nCrème".encode("latin-1"))
    with pytest.raises(UserError, match="latin1.txt is not UTF-8 text"):
        read_file(source)


def test_filters_and_max_posts_apply_to_files(tmp_path):
    source = tmp_path / "mine.jsonl"
    lines = [
        {"id": n, "created_at": "2018-07-01", "text": ["plain", "@a reply", "RT @b: retweet"][n % 3]}
        for n in range(1, 31)
    ]
    source.write_text("".join(json.dumps(line) + "\n" for line in lines))
    out = tmp_path / "tweets.jsonl"

    fetch.run(FetchParams(source="file", path=str(source), include_retweets=False, max_posts=12), out)

    posts = read_posts(out)
    assert [post.id for post in posts] == [str(n) for n in range(30, 0, -1) if n % 3 != 2][:12]
    assert any(post.is_reply for post in posts) and not any(post.is_retweet for post in posts)
    with pytest.raises(UserError, match="max_posts is 0"):
        fetch.run(FetchParams(source="file", path=str(source), max_posts=0), out)


def test_demo_reads_the_data_in_the_repository(monkeypatch, tmp_path):
    shutil.copytree(REPO / "data" / "demo", tmp_path / "data" / "demo")
    monkeypatch.chdir(tmp_path)  # the demo source reads data/demo/ from where the pipeline runs
    out = tmp_path / "out" / "tweets.jsonl"

    fetch.run(FetchParams(), out)

    posts = read_posts(out)
    demo_lines = (REPO / "data" / "demo" / "nasa_tweets.jsonl").read_text().splitlines()
    assert len(posts) == len(demo_lines)
    assert {post.source for post in posts} == {"demo"}
    assert any(post.is_retweet for post in posts) and any(post.is_reply for post in posts)
    assert (REPO / "data" / "demo" / "nasa_tweets.jsonl").stat().st_size <= 1_000_000


def run_cli(cwd: Path) -> subprocess.CompletedProcess:
    env = {key: value for key, value in os.environ.items() if not key.endswith("BEARER_TOKEN")}
    command = [sys.executable, str(REPO / "stages/fetch.py"), "data/raw/tweets.jsonl"]
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=60)


def test_cli_fetches_the_demo_with_no_credentials(tmp_path):
    shutil.copytree(REPO / "data" / "demo", tmp_path / "data" / "demo")
    (tmp_path / "params.yaml").write_text("fetch:\n  source: demo\n")

    result = run_cli(tmp_path)

    assert result.returncode == 0, result.stderr
    assert len(read_posts(tmp_path / "data" / "raw" / "tweets.jsonl")) > 0


@pytest.mark.parametrize(
    ("params", "problem"),
    [
        ("fetch:\n  source: file\n  path: posts.xlsx\n", "unknown file type '.xlsx'"),
        ("fetch:\n  source: file\n  path: bad.jsonl\n", "bad.jsonl:1: not valid JSON"),
        ("fetch:\n  source: archive\n  path: bad.jsonl\n", "bad.jsonl has no `=`"),
        ("fetch:\n  sorce: demo\n", "unknown key `fetch.sorce`"),
    ],
)
def test_cli_user_error_exits_2_with_one_line_and_no_traceback(tmp_path, params, problem):
    (tmp_path / "params.yaml").write_text(params)
    (tmp_path / "bad.jsonl").write_text("{oops\n")
    raw = tmp_path / "data" / "raw" / "tweets.jsonl"
    raw.parent.mkdir(parents=True)
    raw.write_text("previous output\n")

    result = run_cli(tmp_path)

    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.count("\n") == 1 and problem in result.stderr
    assert raw.read_text() == "previous output\n"
