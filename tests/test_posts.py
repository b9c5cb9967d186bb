"""The Post record: normalisation, the JSON-lines store (atomic, newest first, unique by id) and the merge."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tweetbot.posts import Post, id_order, make_post, merge_posts, read_posts, write_posts
from tweetbot.runtime.errors import UserError


def post(id: str, text: str = "hello", source: str = "file") -> Post:
    return make_post(id=id, created_at="2018-07-01T23:04:00Z", text=text, source=source)


@pytest.mark.parametrize(
    ("given_id", "expected"),
    [
        ("1013558869728071685", "1013558869728071685"),
        (1013558869728071685, "1013558869728071685"),
        ("007", "7"),
        ("AfgBBxbPNWIrAbClMm", "AfgBBxbPNWIrAbClMm"),  # a Pleroma flake id: kept as the server gave it
        ("01F8MH1H7YV1Z7D2C8K2730QBF", "01F8MH1H7YV1Z7D2C8K2730QBF"),  # a GoToSocial ULID
    ],
)
def test_ids_become_canonical_strings(given_id, expected):
    assert post(given_id).id == expected


@pytest.mark.parametrize("bad_id", [1.5, -3, "", "two words", None, True, "１２", "x" * 257])
def test_an_impossible_id_is_refused(bad_id):
    with pytest.raises(ValueError, match="id"):
        post(bad_id)


@pytest.mark.parametrize(
    ("created_at", "expected"),
    [
        ("Wed Oct 10 20:19:24 +0000 2018", "2018-10-10T20:19:24Z"),
        ("Wed Oct 10 20:19:24 +0200 2018", "2018-10-10T18:19:24Z"),
        ("2018-10-10T20:19:24.000Z", "2018-10-10T20:19:24Z"),
        ("2018-10-10T22:19:24+02:00", "2018-10-10T20:19:24Z"),
        ("2018-10-10 20:19:24", "2018-10-10T20:19:24Z"),  # no zone: UTC
        (datetime(2018, 10, 10, 22, 19, 24, tzinfo=timezone(timedelta(hours=2))), "2018-10-10T20:19:24Z"),
    ],
)
def test_times_become_iso_utc(created_at, expected):
    assert make_post(id=1, created_at=created_at, text="x", source="file").created_at == expected


@pytest.mark.parametrize("bad_time", ["yesterday", "Wed Oct 32 20:19:24 +0000 2018", 1530486240, None])
def test_an_impossible_time_is_refused(bad_time):
    with pytest.raises(ValueError, match="created_at"):
        make_post(id=1, created_at=bad_time, text="x", source="file")


def test_flags():
    assert post("1", "RT @NASA: shared").is_retweet
    assert not post("1", "not RT @NASA").is_retweet
    assert make_post(id=1, created_at="2018-07-01", text="x", source="x_api", retweet=True).is_retweet
    assert make_post(id=1, created_at="2018-07-01", text="x", source="x_api", reply=True).is_reply
    assert not post("1", "@NASA hi").is_reply  # the record believes its source; heuristics live in sources
    with pytest.raises(ValueError, match="text"):
        make_post(id=1, created_at="2018-07-01", text=None, source="file")


def test_store_is_newest_first_by_number_unique_by_id_and_keeps_big_ids_and_emoji(tmp_path):
    path = tmp_path / "raw" / "tweets.jsonl"
    big = str(2**63 - 1)  # beyond 2**53: a JSON number would lose its last digits
    write_posts(path, [post("9"), post(big, "🚀 &amp; more"), post("10"), post("9", "later version")])

    lines = path.read_text(encoding="utf-8").splitlines()

    assert [json.loads(line)["id"] for line in lines] == [big, "10", "9"]
    assert "🚀" in lines[0]  # UTF-8, not \u escapes
    assert read_posts(path) == [post(big, "🚀 &amp; more"), post("10"), post("9", "later version")]
    assert [file.name for file in path.parent.iterdir()] == ["tweets.jsonl"]  # no temporary file left


def test_a_failing_write_leaves_the_old_store_whole(tmp_path):
    path = tmp_path / "tweets.jsonl"
    write_posts(path, [post("1")])
    before = path.read_bytes()

    def posts_then_failure():
        yield post("2")
        raise RuntimeError("source died")

    with pytest.raises(RuntimeError):
        write_posts(path, posts_then_failure())

    assert path.read_bytes() == before
    assert [file.name for file in tmp_path.iterdir()] == ["tweets.jsonl"]


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ("{not json", "not valid JSON"),
        ('{"id": "1", "created_at": "2018-07-01T00:00:00Z", "text": "x"}', "exactly the keys"),
        (
            '{"id": 1, "created_at": "2018-07-01T00:00:00Z", "text": "x", "is_retweet": false, '
            '"is_reply": false, "source": "file"}',
            "id 1 must be a string",
        ),
        (
            '{"id": "1", "created_at": "2018-07-01T00:00:00Z", "text": "x", "is_retweet": "no", '
            '"is_reply": false, "source": "file"}',
            "is_retweet is 'no'",
        ),
    ],
)
def test_a_malformed_line_is_a_user_error_naming_file_and_line(tmp_path, line, problem):
    path = tmp_path / "tweets.jsonl"
    write_posts(path, [post("5")])
    path.write_text(path.read_text() + line + "\n")

    with pytest.raises(UserError, match=rf"tweets.jsonl:2: .*({problem})"):
        read_posts(path)


def test_reading_a_missing_store_says_to_fetch_first(tmp_path):
    with pytest.raises(UserError, match="not found: run `dvc repro fetch`"):
        read_posts(tmp_path / "tweets.jsonl")


def test_merge_keeps_both_with_the_new_version_winning():
    old = [post("3", "old three"), post("1")]
    new = [post("3", "new three"), post("20")]
    assert merge_posts(old, new) == [post("20"), post("3", "new three"), post("1")]


@given(
    st.lists(st.integers(min_value=0, max_value=2**64), max_size=30),
    st.lists(st.integers(min_value=0, max_value=2**64), max_size=30),
)
def test_merge_is_the_union_of_ids_newest_first(old_ids, new_ids):
    merged = merge_posts([post(str(i)) for i in old_ids], [post(str(i)) for i in new_ids])
    assert [int(p.id) for p in merged] == sorted(set(old_ids) | set(new_ids), reverse=True)


def test_ids_of_one_source_sort_by_time_as_mastodon_documents_them():
    """Longer is newer, then character order: numeric order for decimals, time order for fixed-width codes."""
    older, newer = "109999999999999999", "110000000000000000"
    assert id_order(newer) > id_order(older)
    assert id_order("10") > id_order("9")
    assert id_order("01F8MH1H7YV1Z7D2C8K2730QBG") > id_order("01F8MH1H7YV1Z7D2C8K2730QBF")


def test_the_store_is_newest_first_by_time_across_origins_and_unique_within_each():
    a = [make_post(id=i, created_at=f"2020-01-0{i}", text=f"a{i}", source="file", origin="file:a.txt") for i in (1, 2)]
    b = [
        make_post(id=i, created_at=f"2020-01-0{i + 2}", text=f"b{i}", source="file", origin="file:b.txt")
        for i in (1, 2)
    ]
    merged = merge_posts(a, b)
    assert [p.text for p in merged] == ["b2", "b1", "a2", "a1"]  # the same ids, two files: nothing lost


def test_an_x_post_from_the_api_and_from_the_archive_is_stored_once(tmp_path):
    from_api = make_post(id="5", created_at="2020-01-01", text="same post", source="x_api", origin="x_api:nasa")
    from_archive = make_post(
        id="5", created_at="2020-01-01", text="same post", source="archive", origin="archive:a.zip"
    )
    assert merge_posts([from_archive], [from_api]) == [from_api]


def test_a_store_written_before_origins_reads_back(tmp_path):
    path = tmp_path / "tweets.jsonl"
    record = {"id": "7", "created_at": "2018-07-01T23:04:00Z", "text": "x", "is_retweet": False, "is_reply": False}
    path.write_text(json.dumps(record | {"source": "x_api"}) + "\n")
    assert read_posts(path) == [make_post(id="7", created_at="2018-07-01T23:04:00Z", text="x", source="x_api")]
