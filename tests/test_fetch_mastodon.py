"""The Mastodon source through its real httpx code; only HTTP is answered, by `respx`, in the shapes Mastodon's API
documentation gives: an Account from /api/v1/accounts/lookup, arrays of Status from /api/v1/accounts/:id/statuses
(newest first, `Link: <...max_id=...>; rel="next"` when a page is full, without since_id), `{"error": ...}`
bodies, and `X-RateLimit-*` headers whose reset is an ISO 8601 time."""

from __future__ import annotations

import json
import re
import time
from dataclasses import replace
from datetime import UTC, datetime
from urllib.parse import urlencode

import httpx
import pytest
import respx

from tests.test_fetch_x_api import Killed, ids
from tweetbot import fetch
from tweetbot.params import FetchParams
from tweetbot.posts import read_posts
from tweetbot.runtime.errors import UserError
from tweetbot.sources import http

SERVER = "https://mastodon.example"
ACCOUNT_ID = "109302436954721982"
PARAMS = FetchParams(source="mastodon", handle="alice@mastodon.example")


def status_id(number: int) -> str:
    """A Snowflake-like id, as vanilla Mastodon makes them: milliseconds << 16; larger number = newer."""
    return str((1_700_000_000_000 + 60_000 * number) << 16)


def status(number: int) -> dict:
    """Status number `number` in the documented shape; every 10th a boost, every 7th a reply, every 9th a CW."""
    created = datetime.fromtimestamp(1_700_000_000 + 60 * number, UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    link = (
        '<a href="https://www.example.org/2023/11/a-long-article-title" rel="nofollow noopener noreferrer" '
        'target="_blank"><span class="invisible">https://www.</span><span class="ellipsis">example.org/2023/11/a'
        '</span><span class="invisible">-long-article-title</span></a>'
    )
    mention = (
        '<span class="h-card"><a href="https://other.example/@bob" class="u-url mention">@<span>bob</span></a></span>'
    )
    content = f"<p>Post {number} &amp; more</p><p>{mention} see {link}<br>second line</p>"
    account = {"id": ACCOUNT_ID, "username": "alice", "acct": "alice"}
    item = {
        "id": status_id(number),
        "created_at": created,
        "in_reply_to_id": None,
        "in_reply_to_account_id": None,
        "sensitive": False,
        "spoiler_text": "",
        "visibility": "public",
        "uri": f"{SERVER}/users/alice/statuses/{status_id(number)}",
        "content": content,
        "reblog": None,
        "account": account,
        "mentions": [],
        "tags": [],
        "emojis": [],
    }
    if number % 9 == 0:
        item |= {"sensitive": True, "spoiler_text": f"spoilers {number}"}
    if number % 7 == 0:
        item |= {"in_reply_to_id": "103270115826048975", "in_reply_to_account_id": "1"}
    if number % 10 == 0:
        boosted = dict(item, id="1", content=f"<p>someone else's words {number}</p>", account={"id": "9"})
        item |= {"content": "", "reblog": boosted, "in_reply_to_id": None}
    return item


class FakeMastodon:
    """The two endpoints, answering from `statuses` (newest first) as Mastodon does; `answers` replaces the answer
    to the statuses request with that number (1-based) by a response, or raises the exception it holds."""

    def __init__(self, mock: respx.Router, statuses: list[dict], base: str = SERVER):
        self.statuses = statuses
        self.base = base
        self.answers: dict[int, httpx.Response | BaseException] = {}
        self.requests: list[dict[str, str]] = []
        self.lookups: list[httpx.Request] = []
        mock.get(f"{base}/api/v1/accounts/lookup").mock(side_effect=self.lookup)
        mock.get(f"{base}/api/v1/accounts/{ACCOUNT_ID}/statuses").mock(side_effect=self.page)

    def lookup(self, request: httpx.Request) -> httpx.Response:
        self.lookups.append(request)
        if request.url.params["acct"].lower() != "alice@mastodon.example":
            return httpx.Response(404, json={"error": "Record not found"})
        account = {"id": ACCOUNT_ID, "username": "alice", "acct": "alice", "statuses_count": len(self.statuses)}
        return httpx.Response(200, json=account)

    def page(self, request: httpx.Request) -> httpx.Response:
        query = dict(request.url.params)
        self.requests.append(query)
        answer = self.answers.get(len(self.requests))
        if isinstance(answer, BaseException):
            raise answer
        if answer is not None:
            return answer
        limit = min(int(query.get("limit", 20)), 40)
        window = [
            item
            for item in self.statuses
            if int(item["id"]) < int(query.get("max_id", 10**30))
            and int(item["id"]) > int(query.get("since_id", -1))
            and not (query.get("exclude_replies") == "true" and item["in_reply_to_id"])
            and not (query.get("exclude_reblogs") == "true" and item["reblog"])
        ]
        page = window[:limit]
        headers = {"X-RateLimit-Limit": "300", "X-RateLimit-Remaining": "299"}
        if len(page) == limit:  # Mastodon's records_continue?: a full page has a next link (since_id not kept)
            kept = {key: query[key] for key in ("limit", "exclude_replies", "exclude_reblogs") if key in query}
            url = f"{SERVER}/api/v1/accounts/{ACCOUNT_ID}/statuses?{urlencode(kept | {'max_id': page[-1]['id']})}"
            headers["Link"] = f'<{url}>; rel="next"'
        return httpx.Response(200, json=page, headers=headers)


def timeline(first: int, last: int) -> list[dict]:
    return [status(n) for n in range(last, first - 1, -1)]


@pytest.fixture
def mock():
    with respx.mock(assert_all_called=False) as router:
        yield router


@pytest.fixture(autouse=True)
def no_token(monkeypatch):
    monkeypatch.delenv("MASTODON_ACCESS_TOKEN", raising=False)
    monkeypatch.setattr(http, "BACKOFF_S", 0.01)


def test_three_pages_newest_first_with_flags_and_the_text_a_person_sees(mock, tmp_path):
    server = FakeMastodon(mock, timeline(1, 100))
    out = tmp_path / "tweets.jsonl"

    fetch.run(PARAMS, out)

    posts = read_posts(out)
    assert ids(posts) == ids(server.statuses)
    assert [len(server.lookups), len(server.requests)] == [1, 3]  # 40 + 40 + 20
    assert server.lookups[0].url.params["acct"] == "alice@mastodon.example"
    assert server.requests[0] == {"limit": "40"}
    assert server.requests[1]["max_id"] == server.statuses[39]["id"]
    by_number = {re.search(r"Post (\d+)", post.text)[1]: post for post in posts if not post.is_retweet}
    assert by_number["1"].text == (
        "Post 1 & more\n\n@bob see https://www.example.org/2023/11/a-long-article-title\nsecond line"
    )
    assert by_number["14"].is_reply and not by_number["13"].is_reply
    boosts = [post for post in posts if post.is_retweet]
    assert len(boosts) == 10 and boosts[0].text == "someone else's words 100" and not boosts[0].is_reply
    assert by_number["99"].text.startswith("spoilers 99\n\nPost 99 & more")  # the content warning, apart
    assert {post.source for post in posts} == {"mastodon"} and {post.origin for post in posts} == {
        "mastodon:alice@mastodon.example"
    }


def test_a_second_run_asks_only_for_newer_posts(mock, tmp_path):
    server = FakeMastodon(mock, timeline(1, 100))
    out = tmp_path / "tweets.jsonl"
    fetch.run(PARAMS, out)
    server.statuses = timeline(1, 150)  # 50 new since: two pages of new posts
    server.requests.clear()

    fetch.run(PARAMS, out)

    assert ids(read_posts(out)) == ids(timeline(1, 150))
    newest_before = status_id(100)
    assert [request.get("since_id") for request in server.requests] == [newest_before, newest_before]
    assert server.requests[1]["max_id"] == status_id(111)  # from the Link header, since_id put back
    assert len(server.requests) == 2


def test_nothing_new_is_one_request(mock, tmp_path):
    server = FakeMastodon(mock, timeline(1, 100))
    out = tmp_path / "tweets.jsonl"
    fetch.run(PARAMS, out)
    server.requests.clear()

    fetch.run(PARAMS, out)

    assert server.requests == [{"limit": "40", "since_id": status_id(100)}]


def test_a_kill_mid_run_keeps_its_pages_and_the_next_run_fills_the_gap(mock, tmp_path):
    server = FakeMastodon(mock, timeline(1, 130))
    server.answers[3] = Killed()
    out = tmp_path / "tweets.jsonl"

    with pytest.raises(Killed):
        fetch.run(PARAMS, out)

    assert ids(read_posts(out)) == ids(server.statuses[:80])  # two whole pages written
    server.statuses = timeline(1, 135)
    server.answers.clear()
    server.requests.clear()
    fetch.run(PARAMS, out)

    assert ids(read_posts(out)) == ids(timeline(1, 135))
    gap, new = server.requests[0], server.requests[-1]
    assert gap["max_id"] == status_id(51) and "since_id" not in gap  # the rest of the interrupted run
    assert new == {"limit": "40", "since_id": status_id(130)}  # then what is new
    assert len(server.requests) == 2 + 1  # the gap's 50 posts on 2 pages, the 5 new on 1: none twice


def test_a_429_waits_until_the_reset_it_names_and_asks_the_same_page_again(mock, tmp_path, capsys):
    server = FakeMastodon(mock, timeline(1, 60))
    reset = datetime.fromtimestamp(time.time() + 1, UTC).isoformat().replace("+00:00", "Z")
    headers = {"X-RateLimit-Limit": "300", "X-RateLimit-Remaining": "0", "X-RateLimit-Reset": reset}
    server.answers[2] = httpx.Response(429, json={"error": "Too many requests"}, headers=headers)
    out = tmp_path / "tweets.jsonl"
    started = time.time()

    fetch.run(PARAMS, out)

    assert ids(read_posts(out)) == ids(server.statuses)
    assert server.requests[2] == server.requests[1]
    assert time.time() - started >= 0.9
    assert "rate limit reached (429): waiting" in capsys.readouterr().err


def test_a_used_up_rate_limit_is_waited_out_before_the_next_request(mock, tmp_path, capsys):
    server = FakeMastodon(mock, timeline(1, 60))
    reset = datetime.fromtimestamp(time.time() + 1, UTC).isoformat()
    headers = {"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": reset}
    page = timeline(21, 60)[:40]
    next_url = f"{SERVER}/api/v1/accounts/{ACCOUNT_ID}/statuses?limit=40&max_id={page[-1]['id']}"
    server.answers[1] = httpx.Response(200, json=page, headers=headers | {"Link": f'<{next_url}>; rel="next"'})

    fetch.run(PARAMS, tmp_path / "tweets.jsonl")

    assert len(server.requests) == 2 and "rate limit used up: waiting" in capsys.readouterr().err


def test_server_failures_are_retried_with_backoff(mock, tmp_path, capsys):
    server = FakeMastodon(mock, timeline(1, 10))
    server.answers[1] = httpx.Response(502, text="<html>Bad Gateway</html>")
    server.answers[2] = httpx.Response(503, text="<html>Service Unavailable</html>")

    fetch.run(PARAMS, tmp_path / "tweets.jsonl")

    assert len(read_posts(tmp_path / "tweets.jsonl")) == 10 and len(server.requests) == 3
    assert "502, retry 1" in capsys.readouterr().err


def test_a_server_that_keeps_failing_is_one_line(mock, tmp_path):
    server = FakeMastodon(mock, timeline(1, 10))
    server.answers = {n: httpx.Response(500, text="oops") for n in range(1, 10)}
    with pytest.raises(UserError, match=r"mastodon.example failed 6 times \(500.*try again later"):
        fetch.run(PARAMS, tmp_path / "tweets.jsonl")


def test_an_unknown_account_is_one_line_and_leaves_the_output(mock, tmp_path):
    FakeMastodon(mock, timeline(1, 10))
    out = tmp_path / "tweets.jsonl"
    out.write_text("previous output\n")

    with pytest.raises(UserError, match=r"no Mastodon account nobody@mastodon.example \(Record not found\).*handle"):
        fetch.run(replace(PARAMS, handle="@nobody@mastodon.example"), out)

    assert out.read_text() == "previous output\n"


@pytest.mark.parametrize("handle", [None, "", "alice", "https://mastodon.example/@alice", "a@b@c"])
def test_a_handle_that_is_not_user_at_server_is_one_line_before_any_request(mock, tmp_path, handle):
    server = FakeMastodon(mock, timeline(1, 10))
    with pytest.raises(UserError, match="user@server"):
        fetch.run(replace(PARAMS, handle=handle), tmp_path / "tweets.jsonl")
    assert server.lookups == []


def test_a_server_refusing_anonymous_reads_names_the_token_variable(mock, tmp_path, monkeypatch):
    server = FakeMastodon(mock, timeline(1, 10))
    server.answers[1] = httpx.Response(401, json={"error": "This API requires an authenticated user"})
    with pytest.raises(UserError, match=r"refuses anonymous reads.*401: This API requires.*MASTODON_ACCESS_TOKEN"):
        fetch.run(PARAMS, tmp_path / "tweets.jsonl")

    monkeypatch.setenv("MASTODON_ACCESS_TOKEN", "secret-token")
    server.answers.clear()
    fetch.run(PARAMS, tmp_path / "tweets.jsonl")
    assert server.lookups[-1].headers["Authorization"] == "Bearer secret-token"


@pytest.mark.parametrize(
    ("answer", "problem"),
    [
        (httpx.Response(200, text="<html>a login page</html>"), "malformed answer.*not JSON"),
        (httpx.Response(200, json={"statuses": []}), "malformed answer.*expected a list of statuses"),
        (httpx.Response(200, json=[{"id": "5", "content": "<p>no date</p>"}]), "malformed status of alice"),
    ],
)
def test_a_malformed_answer_is_one_line(mock, tmp_path, answer, problem):
    server = FakeMastodon(mock, timeline(1, 10))
    server.answers[1] = answer
    with pytest.raises(UserError, match=problem) as raised:
        fetch.run(PARAMS, tmp_path / "tweets.jsonl")
    assert "\n" not in str(raised.value)


def test_filters_are_sent_and_applied_and_content_warnings_can_be_dropped(mock, tmp_path):
    server = FakeMastodon(mock, timeline(1, 100))
    out = tmp_path / "tweets.jsonl"

    fetch.run(replace(PARAMS, include_retweets=False, include_replies=False, content_warnings="drop"), out)

    assert server.requests[0]["exclude_replies"] == "true" and server.requests[0]["exclude_reblogs"] == "true"
    assert server.requests[1]["exclude_replies"] == "true"  # the Link header keeps it
    posts = read_posts(out)
    assert posts and not any(post.is_retweet or post.is_reply for post in posts)
    assert not any("spoilers" in post.text for post in posts)


def test_api_url_sends_every_request_to_that_server(mock, tmp_path):
    server = FakeMastodon(mock, timeline(1, 45), base="http://127.0.0.1:3000/mastodon")

    fetch.run(replace(PARAMS, api_url="http://127.0.0.1:3000/mastodon/"), tmp_path / "tweets.jsonl")

    assert len(server.requests) == 2 and len(read_posts(tmp_path / "tweets.jsonl")) == 45


def test_the_state_file_keeps_the_account_and_how_far_it_got(mock, tmp_path):
    FakeMastodon(mock, timeline(1, 45))
    out = tmp_path / "tweets.jsonl"
    fetch.run(PARAMS, out)

    state = json.loads(fetch.state_path(out).read_text())["sources"]

    assert list(state) == ["mastodon:alice@mastodon.example"]
    entry = state["mastodon:alice@mastodon.example"]
    assert entry["complete_through"] == status_id(45) and entry["resume"] is None and entry["history"] == "done"
