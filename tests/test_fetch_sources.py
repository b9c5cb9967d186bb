"""Several accounts and files into one posts file (`fetch.sources:`), and real-world exports with bad rows."""

from __future__ import annotations

import json

import pytest
import respx

from tests.test_fetch_mastodon import FakeMastodon, status_id, timeline
from tweetbot import fetch, params
from tweetbot.params import FetchParams
from tweetbot.posts import read_posts
from tweetbot.runtime.errors import UserError
from tweetbot.sources.files import read_file


def jsonl(path, rows) -> str:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return str(path)


def rows(first: int, last: int, prefix: str) -> list[dict]:
    return [
        {"id": n, "created_at": f"2020-01-01T00:{n:02d}:00Z", "text": f"{prefix} {n}"} for n in range(first, last + 1)
    ]


@pytest.fixture
def mock(monkeypatch):
    monkeypatch.delenv("MASTODON_ACCESS_TOKEN", raising=False)
    with respx.mock(assert_all_called=False) as router:
        yield router


def test_a_file_and_a_mastodon_account_go_into_one_file_each_post_saying_where_from(mock, tmp_path):
    server = FakeMastodon(mock, timeline(1, 50))
    old = jsonl(tmp_path / "x-export.jsonl", rows(1, 30, "from X"))
    sources = [{"source": "file", "path": old}, {"source": "mastodon", "handle": "alice@mastodon.example"}]
    out = tmp_path / "tweets.jsonl"

    fetch.run(FetchParams(sources=sources), out)

    posts = read_posts(out)
    assert {post.origin for post in posts} == {f"file:{old}", "mastodon:alice@mastodon.example"}
    assert len(posts) == 30 + 50
    state = json.loads(fetch.state_path(out).read_text())["sources"]
    assert set(state) == {f"file:{old}", "mastodon:alice@mastodon.example"}

    server.requests.clear()
    fetch.run(FetchParams(sources=sources), out)  # incremental per account, the file read again
    assert server.requests == [{"limit": "40", "since_id": status_id(50)}] and len(read_posts(out)) == 80


def test_two_files_numbering_their_rows_alike_lose_nothing_and_a_dropped_source_leaves(tmp_path, capsys):
    a = jsonl(tmp_path / "a.jsonl", rows(1, 10, "book a"))
    b = jsonl(tmp_path / "b.jsonl", rows(1, 10, "book b"))
    out = tmp_path / "tweets.jsonl"

    fetch.run(FetchParams(sources=[{"source": "file", "path": a}, {"source": "file", "path": b}]), out)
    assert len(read_posts(out)) == 20

    fetch.run(FetchParams(sources=[{"source": "file", "path": b}]), out)
    assert {post.text.split()[1] for post in read_posts(out)} == {"b"}
    assert f"dropping the posts of file:{a}" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("section", "problem"),
    [
        ({"sources": [{"source": "mastodon", "handel": "a@b.c"}]}, r"unknown key `fetch.sources\[1\].handel`"),
        ({"sources": [{"handle": "a@b.c"}]}, r"entry 1 must be a mapping with a `source:`"),
        ({"sources": [{"source": "myspace"}]}, r"`fetch.sources\[1\].source` is 'myspace'"),
        ({"source": "file", "sources": [{"source": "demo"}]}, "must be left out"),
    ],
)
def test_a_bad_sources_list_is_one_line(tmp_path, section, problem):
    (tmp_path / "params.yaml").write_text(json.dumps({"fetch": section}))
    with pytest.raises(UserError, match=problem):
        params.load("fetch", tmp_path / "params.yaml").entries()


def test_the_same_source_twice_is_refused(tmp_path):
    a = jsonl(tmp_path / "a.jsonl", rows(1, 3, "a"))
    with pytest.raises(UserError, match="the same account or file twice"):
        fetch.run(FetchParams(sources=[{"source": "file", "path": a}] * 2), tmp_path / "tweets.jsonl")


def test_a_state_file_of_the_earlier_single_source_format_is_carried_on(mock, tmp_path):
    """An X API fetch of an earlier version: its posts have no origin and its state no `sources`."""
    out = tmp_path / "tweets.jsonl"
    out.write_text(
        json.dumps(
            {
                "id": "5",
                "created_at": "2020-01-01T00:00:00Z",
                "text": "old",
                "is_retweet": False,
                "is_reply": False,
                "source": "file",
            }
        )
        + "\n"
    )
    path = str(tmp_path / "mine.jsonl")
    jsonl(tmp_path / "mine.jsonl", rows(1, 3, "new"))
    fetch.state_path(out).write_text(json.dumps({"source": "file", "path": path}))

    fetch.run(FetchParams(source="file", path=path), out)

    assert {post.origin for post in read_posts(out)} == {f"file:{path}"}


# --- messy exports ----------------------------------------------------------------------------------------


def messy_lines() -> str:
    good = [json.dumps(row) for row in rows(1, 20, "good")]
    good[2] = json.dumps({"created_at": "2020-01-01T01:00:00Z", "text": "no id at all"})
    good[4] = json.dumps({"id": "", "created_at": "2020-01-01T01:01:00Z", "text": "an empty id"})
    good[6] = json.dumps({"id": 7, "created_at": "someday", "text": "a bad date"})
    good[8] = json.dumps({"id": 9, "text": "no date"})
    good[10] = '{"id": 11, "created_at": "2020-01-01T00:11:00Z", "text": "cut off'
    return "\n".join(good) + "\n"


def test_a_messy_jsonl_imports_its_good_rows_with_one_warning(tmp_path):
    path = tmp_path / "export.jsonl"
    path.write_text(messy_lines())
    said = []

    posts = read_file(path, strict=False, say=said.append)

    assert len(posts) == 20 - 3  # three rows cannot be read; two get an id
    assert len(said) == 1 and said[0].startswith(f"warning: {path}: skipped 3 lines that cannot be read (line 7")
    assert "gave 2 lines without an id one derived from its text (line 3, 5)" in said[0]
    derived = {post.text: post.id for post in posts if "id" in post.text}
    assert derived["no id at all"].startswith("1577840400")  # its Unix second first: in time order
    assert read_file(path, strict=False, say=said.append)[2].id == posts[2].id  # stable from run to run


def test_strict_refuses_the_first_bad_row(tmp_path):
    path = tmp_path / "export.jsonl"
    path.write_text(messy_lines())
    with pytest.raises(UserError, match=r"export.jsonl:3: no id: fix or remove that line"):
        fetch.run(FetchParams(source="file", path=str(path), strict=True), tmp_path / "tweets.jsonl")


def test_a_messy_csv_imports_too(tmp_path):
    path = tmp_path / "export.csv"
    path.write_text("id,created_at,text\n1,2020-01-01,one\n,2020-01-02,no id\n3,never,bad date\n4,2020-01-04,four\n")
    said = []
    posts = read_file(path, strict=False, say=said.append)
    assert [post.text for post in posts] == ["one", "no id", "four"]
    assert "skipped 1 row that cannot be read (row 4 (created_at 'never'" in said[0]


def test_a_file_mostly_unreadable_or_of_another_format_still_fails_and_leaves_the_output(tmp_path):
    out = tmp_path / "tweets.jsonl"
    out.write_text("previous output\n")
    csv_named_jsonl = tmp_path / "posts.jsonl"
    csv_named_jsonl.write_text("id,created_at,text\n1,2020-01-01,one\n2,2020-01-02,two\n")

    with pytest.raises(UserError, match=r"posts.jsonl:1: not valid JSON.*3 of 3 lines cannot be read"):
        fetch.run(FetchParams(source="file", path=str(csv_named_jsonl)), out)

    assert out.read_text() == "previous output\n"


def test_an_x_api_fetch_of_the_earlier_format_goes_on_incrementally(tmp_path, monkeypatch):
    """Its posts have no origin and its state file is the one-source shape with `resume_until`."""
    import responses

    from tests.test_fetch_x_api import FakeX
    from tests.test_fetch_x_api import timeline as x_timeline

    monkeypatch.setenv("X_BEARER_TOKEN", "test-token")
    out = tmp_path / "tweets.jsonl"
    old = x_timeline(1, 30)
    lines = [
        {
            "id": p["id"],
            "created_at": p["created_at"][:19] + "Z",
            "text": p["text"],
            "is_retweet": False,
            "is_reply": False,
            "source": "x_api",
        }
        for p in old
    ]
    out.write_text("".join(json.dumps(line) + "\n" for line in lines))
    state = {"source": "x_api", "handle": "nasa", "complete_through": old[0]["id"], "resume_until": None}
    state["query"] = {"include_retweets": True, "include_replies": True, "max_posts": None}
    fetch.state_path(out).write_text(json.dumps(state))
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        x = FakeX(mock, x_timeline(1, 40))

        fetch.run(FetchParams(source="x_api", handle="NASA"), out)

    assert x.timeline_requests[0]["since_id"] == old[0]["id"] and len(x.timeline_requests) == 1
    posts = read_posts(out)
    assert len(posts) == 40 and {post.origin for post in posts} == {"x_api:nasa"}
