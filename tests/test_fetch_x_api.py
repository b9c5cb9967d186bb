"""The X API source through tweepy's real Client and Paginator. Only the HTTP layer is answered, by
`responses`, in the API's own shapes (`data`, `errors`, `meta` with next_token, result_count, newest_id)."""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
import time
from dataclasses import replace
from urllib.parse import parse_qs, urlparse

import pytest
import responses

from tests.conftest import REPO
from tweetbot import fetch
from tweetbot.params import FetchParams
from tweetbot.posts import read_posts
from tweetbot.runtime.errors import UserError

API = "https://api.twitter.com/2"
USER_ID = "11348282"
NEWEST_ID = 1013558869728071685
PARAMS = FetchParams(source="x_api", handle="NASA")


def api_post(number: int, kind: str = "post") -> dict:
    """One post as the timeline endpoint returns it with our tweet_fields; larger `number` = newer."""
    post_id = str(NEWEST_ID - 10**9 * (10**4 - number))
    created = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(1_500_000_000 + 60 * number))
    post = {
        "id": post_id,
        "created_at": created,
        "edit_history_tweet_ids": [post_id],
        "text": f"post {number}",
    }
    if kind == "retweet":
        post["text"] = f"RT @NASA_Johnson: retweeted {number}"
        post["referenced_tweets"] = [{"type": "retweeted", "id": "1"}]
    if kind == "reply":
        post["text"] = f"@astro_ricky reply {number}"
        post["referenced_tweets"] = [{"type": "replied_to", "id": "2"}]
        post["in_reply_to_user_id"] = "3"
    return post


def timeline(first: int, last: int) -> list[dict]:
    """Posts number first..last, newest first; every 10th a retweet, every 7th a reply."""
    kinds = {0: "retweet"}
    return [api_post(n, "reply" if n % 7 == 0 else kinds.get(n % 10, "post")) for n in range(last, first - 1, -1)]


class Killed(BaseException):
    """A kill in the middle of a run (not an Exception, so nothing on the way catches it)."""


class FakeX:
    """The two endpoints fetch uses, answering from `posts` as the X API does: the newest 3,200 only, newest
    first, 100 a page, honouring since_id, until_id and exclude. `answers` replaces the answer to the timeline
    request with that number (1-based) by a (status, headers, body) or raises the exception it holds."""

    def __init__(self, mock: responses.RequestsMock, posts: list[dict], post_count: int | None = None):
        self.posts = posts
        self.post_count = post_count if post_count is not None else len(posts)
        self.known_users = {"nasa"}
        self.answers: dict[int, tuple | BaseException] = {}
        self.timeline_requests: list[dict[str, str]] = []
        self.authorizations: list[str] = []
        mock.add_callback(responses.GET, re.compile(rf"{API}/users/by/username/\w+"), callback=self.user)
        mock.add_callback(responses.GET, re.compile(rf"{API}/users/{USER_ID}/tweets"), callback=self.tweets)

    def user(self, request):
        self.authorizations.append(request.headers["Authorization"])
        name = urlparse(request.url).path.rsplit("/", 1)[-1]
        if name.lower() not in self.known_users:  # the API answers an unknown user with 200 and `errors`
            detail = f"Could not find user with username: [{name}]."
            error = {"value": name, "detail": detail, "title": "Not Found Error", "resource_type": "user"}
            error |= {"parameter": "username", "resource_id": name}
            error["type"] = "https://api.twitter.com/2/problems/resource-not-found"
            return 200, {}, json.dumps({"errors": [error]})
        metrics = {"followers_count": 84_000_000, "following_count": 170, "tweet_count": self.post_count}
        user = {"id": USER_ID, "name": "NASA", "username": "NASA", "public_metrics": metrics}
        return 200, {}, json.dumps({"data": user})

    def tweets(self, request):
        query = {key: values[0] for key, values in parse_qs(urlparse(request.url).query).items()}
        self.timeline_requests.append(query)
        answer = self.answers.get(len(self.timeline_requests))
        if isinstance(answer, BaseException):
            raise answer
        if answer is not None:
            return answer
        excluded = set(query.get("exclude", "").split(",")) - {""}
        window = [
            post
            for post in self.posts[:3200]
            if int(post["id"]) > int(query.get("since_id", -1))
            and int(post["id"]) < int(query.get("until_id", 10**20))
            and not ("retweets" in excluded and post["text"].startswith("RT @"))
            and not ("replies" in excluded and "in_reply_to_user_id" in post)
        ]
        start = int(base64.b64decode(query["pagination_token"])) if "pagination_token" in query else 0
        page = window[start : start + int(query["max_results"])]
        if not page:
            return 200, {}, json.dumps({"meta": {"result_count": 0}})
        meta = {"result_count": len(page), "newest_id": page[0]["id"], "oldest_id": page[-1]["id"]}
        if start + len(page) < len(window):
            meta["next_token"] = base64.b64encode(str(start + len(page)).encode()).decode()
        return 200, {}, json.dumps({"data": page, "meta": meta})


@pytest.fixture
def mock():
    with responses.RequestsMock(assert_all_requests_are_fired=False) as requests_mock:
        yield requests_mock


@pytest.fixture(autouse=True)
def token(monkeypatch):
    monkeypatch.setenv("X_BEARER_TOKEN", "test-token")
    monkeypatch.delenv("TWITTER_BEARER_TOKEN", raising=False)


def ids(posts) -> list[str]:
    return [post.id if hasattr(post, "id") else post["id"] for post in posts]


def test_fetches_every_page_newest_first_with_flags(mock, tmp_path):
    x = FakeX(mock, timeline(1, 250))
    out = tmp_path / "tweets.jsonl"

    fetch.run(PARAMS, out)

    posts = read_posts(out)
    assert ids(posts) == ids(x.posts)
    assert len(x.timeline_requests) == 3  # 100 + 100 + 50
    assert "pagination_token" not in x.timeline_requests[0]
    assert x.timeline_requests[1]["pagination_token"] != x.timeline_requests[2]["pagination_token"]
    assert x.timeline_requests[0]["tweet.fields"].split(",")[:3] == [
        "created_at",
        "referenced_tweets",
        "in_reply_to_user_id",
    ]
    by_number = {post.text.split()[-1]: post for post in posts}
    assert by_number["70"].is_reply and not by_number["70"].is_retweet  # 70: every 7th is a reply
    assert by_number["30"].is_retweet and not by_number["30"].is_reply
    assert not by_number["31"].is_retweet and not by_number["31"].is_reply
    assert {post.source for post in posts} == {"x_api"}
    assert posts[0].created_at.endswith("Z") and "." not in posts[0].created_at
    assert x.authorizations == ["Bearer test-token"]


def test_second_run_asks_only_for_newer_posts_and_merges(mock, tmp_path):
    x = FakeX(mock, timeline(1, 150))
    out = tmp_path / "tweets.jsonl"
    fetch.run(PARAMS, out)
    newest_before = read_posts(out)[0].id

    x.posts = timeline(1, 180)  # 30 new posts since
    x.timeline_requests.clear()
    fetch.run(PARAMS, out)

    assert x.timeline_requests[0]["since_id"] == newest_before
    assert len(x.timeline_requests) == 1  # the 30 new ones fit on one page
    assert ids(read_posts(out)) == ids(timeline(1, 180))


def test_rate_limit_is_waited_out_with_a_message(mock, tmp_path, capsys):
    x = FakeX(mock, timeline(1, 150))
    reset = int(time.time()) + 1
    headers = {"x-rate-limit-limit": "1500", "x-rate-limit-remaining": "0", "x-rate-limit-reset": str(reset)}
    body = {"title": "Too Many Requests", "detail": "Too Many Requests", "type": "about:blank", "status": 429}
    x.answers[2] = (429, headers, json.dumps(body))
    out = tmp_path / "tweets.jsonl"

    fetch.run(PARAMS, out)

    assert ids(read_posts(out)) == ids(x.posts)
    assert x.timeline_requests[2] == x.timeline_requests[1]  # the same page asked again
    assert time.time() >= reset
    assert "rate limit reached: waiting" in capsys.readouterr().err


def test_refused_token_is_one_line_and_leaves_the_output(mock, tmp_path):
    body = {"title": "Unauthorized", "type": "about:blank", "status": 401, "detail": "Unauthorized"}
    mock.add(responses.GET, re.compile(rf"{API}/users/by/username/\w+"), json=body, status=401)
    out = tmp_path / "tweets.jsonl"
    out.write_text("previous output\n")

    with pytest.raises(UserError, match=r"401 Unauthorized.*X_BEARER_TOKEN"):
        fetch.run(PARAMS, out)

    assert out.read_text() == "previous output\n"


def test_forbidden_names_the_token_and_the_access_level(mock, tmp_path):
    x = FakeX(mock, timeline(1, 10))
    detail = "When authenticating requests to the Twitter API v2 endpoints, you must use keys and tokens..."
    x.answers[1] = (
        403,
        {},
        json.dumps({"title": "Unsupported Authentication", "detail": detail, "status": 403}),
    )

    with pytest.raises(UserError, match=r"403 Forbidden.*X_BEARER_TOKEN.*access level"):
        fetch.run(PARAMS, tmp_path / "tweets.jsonl")


def test_unknown_handle_is_one_line(mock, tmp_path):
    FakeX(mock, timeline(1, 10))

    with pytest.raises(UserError, match=r"no X account @nosuchuser \(Could not find user.*fetch.handle"):
        fetch.run(replace(PARAMS, handle="@nosuchuser"), tmp_path / "tweets.jsonl")


@pytest.mark.parametrize("handle", [None, "", "not a handle", "far_too_long_for_x_handles"])
def test_missing_or_impossible_handle_is_one_line_before_any_request(mock, tmp_path, handle):
    x = FakeX(mock, timeline(1, 10))
    with pytest.raises(UserError, match="fetch.handle"):
        fetch.run(replace(PARAMS, handle=handle), tmp_path / "tweets.jsonl")
    assert x.authorizations == []


def test_no_token_names_the_variable(monkeypatch, tmp_path):
    monkeypatch.delenv("X_BEARER_TOKEN")
    with pytest.raises(UserError, match="set X_BEARER_TOKEN"):
        fetch.run(PARAMS, tmp_path / "tweets.jsonl")


def test_twitter_bearer_token_is_accepted_too(mock, monkeypatch, tmp_path):
    monkeypatch.delenv("X_BEARER_TOKEN")
    monkeypatch.setenv("TWITTER_BEARER_TOKEN", "older-name")
    x = FakeX(mock, timeline(1, 10))
    fetch.run(PARAMS, tmp_path / "tweets.jsonl")
    assert x.authorizations == ["Bearer older-name"]


def test_a_kill_mid_run_loses_nothing_and_doubles_nothing(mock, tmp_path):
    x = FakeX(mock, timeline(1, 450))
    x.answers[3] = Killed()  # killed while asking for the third page
    out = tmp_path / "tweets.jsonl"

    with pytest.raises(Killed):
        fetch.run(PARAMS, out)

    assert ids(read_posts(out)) == ids(x.posts[:200])  # both finished pages were written, whole
    oldest_fetched = read_posts(out)[-1].id

    x.posts = timeline(1, 460)  # and 10 new posts appear before the re-run
    x.answers.clear()
    x.timeline_requests.clear()
    fetch.run(PARAMS, out)

    assert ids(read_posts(out)) == ids(timeline(1, 460))
    gap, new = x.timeline_requests[0], x.timeline_requests[-1]
    assert gap["until_id"] == oldest_fetched and "since_id" not in gap  # the rest of the interrupted run
    assert new["since_id"] == ids(timeline(1, 450))[0] and "until_id" not in new  # then what is new
    assert len(x.timeline_requests) == 3 + 1  # the gap's 250 posts on 3 pages, the 10 new on 1: none twice


def test_cap_of_3200_is_reported(mock, tmp_path, capsys):
    x = FakeX(mock, timeline(1, 3300), post_count=71_234)
    out = tmp_path / "tweets.jsonl"

    fetch.run(PARAMS, out)

    assert ids(read_posts(out)) == ids(x.posts[:3200])
    assert len(x.timeline_requests) == 32
    err = capsys.readouterr().err
    assert "only the newest 3,200 posts" in err and "71,234" in err and "archive" in err


def test_cap_is_not_reported_below_it(mock, tmp_path, capsys):
    FakeX(mock, timeline(1, 120))
    fetch.run(PARAMS, tmp_path / "tweets.jsonl")
    assert "3,200" not in capsys.readouterr().err


def test_filters_are_sent_as_exclude_and_applied(mock, tmp_path):
    x = FakeX(mock, timeline(1, 140))
    out = tmp_path / "tweets.jsonl"

    fetch.run(replace(PARAMS, include_retweets=False, include_replies=False), out)

    assert set(x.timeline_requests[0]["exclude"].split(",")) == {"retweets", "replies"}
    posts = read_posts(out)
    assert posts and not any(post.is_retweet or post.is_reply for post in posts)


def test_changed_filters_ask_for_everything_again_and_keep_what_was_fetched(mock, tmp_path, capsys):
    x = FakeX(mock, timeline(1, 40))
    out = tmp_path / "tweets.jsonl"
    fetch.run(replace(PARAMS, include_retweets=False), out)
    x.timeline_requests.clear()

    fetch.run(PARAMS, out)

    assert "since_id" not in x.timeline_requests[0] and "exclude" not in x.timeline_requests[0]
    assert ids(read_posts(out)) == ids(x.posts)
    assert "fetch params changed" in capsys.readouterr().err


def test_max_posts_keeps_the_newest_and_stops_asking(mock, tmp_path):
    x = FakeX(mock, timeline(1, 450))
    out = tmp_path / "tweets.jsonl"

    fetch.run(replace(PARAMS, max_posts=150), out)

    assert ids(read_posts(out)) == ids(x.posts[:150])
    assert len(x.timeline_requests) == 2


def test_switching_from_the_demo_to_an_account_does_not_mix_them(mock, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data" / "demo").mkdir(parents=True)
    (tmp_path / "data" / "demo" / "nasa_tweets.jsonl").write_text(
        '{"id": "5", "created_at": "Sun Jul 01 23:04:00 +0000 2018", "text": "from the demo"}\n'
    )
    out = tmp_path / "data" / "raw" / "tweets.jsonl"
    fetch.run(FetchParams(source="demo"), out)
    x = FakeX(mock, timeline(1, 20))

    fetch.run(PARAMS, out)

    assert ids(read_posts(out)) == ids(x.posts)
    assert "since_id" not in x.timeline_requests[0]
    assert "replacing them with the posts of @NASA" in capsys.readouterr().err


def test_another_account_starts_afresh(mock, tmp_path):
    x = FakeX(mock, timeline(1, 20))
    x.known_users.add("esa")
    out = tmp_path / "tweets.jsonl"
    fetch.run(PARAMS, out)
    x.timeline_requests.clear()

    fetch.run(replace(PARAMS, handle="ESA"), out)  # the fake serves the same posts; what matters is the ask

    assert "since_id" not in x.timeline_requests[0]


def test_cli_without_a_token_exits_2_with_one_line(tmp_path):
    (tmp_path / "params.yaml").write_text("fetch:\n  source: x_api\n  handle: NASA\n")
    env = {key: value for key, value in os.environ.items() if not key.endswith("BEARER_TOKEN")}

    result = subprocess.run(
        [sys.executable, str(REPO / "stages/fetch.py"), "data/raw/tweets.jsonl"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.count("\n") == 1 and "X_BEARER_TOKEN" in result.stderr
    assert not (tmp_path / "data").exists()
