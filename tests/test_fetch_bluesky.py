"""The Bluesky source through its real httpx code; only HTTP is answered, by `respx`, in the shapes of the AT
Protocol lexicons: app.bsky.actor.getProfile (profileViewDetailed), app.bsky.feed.getAuthorFeed (feedViewPost
items with `reason` and `reply`, a `cursor` until the end), a did:plc document from the PLC directory, and
com.atproto.repo.listRecords on the PDS (newest record key first, the cursor is the last record key). XRPC errors
are `{"error": ..., "message": ...}`; rate limits `RateLimit-*` with the reset in Unix seconds."""

from __future__ import annotations

import base64
import time
from dataclasses import replace
from datetime import UTC, datetime

import httpx
import pytest
import respx

from tests.test_fetch_x_api import Killed
from tweetbot import fetch
from tweetbot.params import FetchParams
from tweetbot.posts import read_posts
from tweetbot.runtime.errors import UserError
from tweetbot.sources import bluesky, http

APPVIEW = "https://public.api.bsky.app"
PDS = "https://morel.us-east.host.bsky.network"
DID = "did:plc:ewvi7nxzyoun6zhxrhs64oiz"
PARAMS = FetchParams(source="bluesky", handle="alice.bsky.social")
START_US = 1_700_000_000 * 10**6


def tid(number: int) -> str:
    """The TID of post `number`: a minute apart, clock id 7; larger number = newer."""
    value = ((START_US + 60 * 10**6 * number) << 10) | 7
    return "".join(bluesky.TID_ALPHABET[(value >> (5 * i)) & 31] for i in range(12, -1, -1))


def created(number: int) -> str:
    return datetime.fromtimestamp(1_700_000_000 + 60 * number, UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")


def record(number: int) -> dict:
    """The app.bsky.feed.post record of post `number`: every 7th a reply; each with a shortened link facet."""
    text = f"Post {number} ✨ see example.org/articles/lo..."
    start = len(f"Post {number} ✨ see ".encode())
    link = {"$type": "app.bsky.richtext.facet#link", "uri": f"https://example.org/articles/long-title-{number}"}
    value = {
        "$type": "app.bsky.feed.post",
        "text": text,
        "createdAt": created(number),
        "langs": ["en"],
        "facets": [{"index": {"byteStart": start, "byteEnd": len(text.encode())}, "features": [link]}],
    }
    if number % 7 == 0:
        parent = {"uri": "at://did:plc:other/app.bsky.feed.post/3kabc2222222a", "cid": "bafyreib"}
        value["reply"] = {"root": parent, "parent": parent}
    return value


def feed_item(number: int) -> dict:
    """A feedViewPost: post `number`, or (every 10th) a repost of someone else's post."""
    author = {"did": DID, "handle": "alice.bsky.social", "displayName": "Alice"}
    if number % 10 == 0:
        other = {"did": "did:plc:other", "handle": "bob.bsky.social"}
        words = {"$type": "app.bsky.feed.post", "text": f"bob's words {number}", "createdAt": created(number - 1)}
        post = {
            "uri": "at://did:plc:other/app.bsky.feed.post/3kbob22222222",
            "cid": "bafyb",
            "author": other,
            "record": words,
            "indexedAt": created(number - 1),
        }
        reason = {
            "$type": "app.bsky.feed.defs#reasonRepost",
            "by": author,
            "uri": f"at://{DID}/app.bsky.feed.repost/{tid(number)}",
            "cid": "bafyr",
            "indexedAt": created(number),
        }
        return {"post": post, "reason": reason}
    post = {
        "uri": f"at://{DID}/app.bsky.feed.post/{tid(number)}",
        "cid": f"bafy{number}",
        "author": author,
        "record": record(number),
        "replyCount": 0,
        "repostCount": 0,
        "likeCount": 1,
        "indexedAt": created(number),
    }
    item = {"post": post}
    if number % 7 == 0:
        item["reply"] = {
            "root": {"$type": "app.bsky.feed.defs#notFoundPost"},
            "parent": {"$type": "app.bsky.feed.defs#notFoundPost"},
        }
    return item


class FakeBluesky:
    """AppView, PLC directory and PDS. The feed holds posts `feed_first`..`last` (newest first); the repository
    every post 1..`last` (no reposts). `answers` replaces the answer to the feed request with that number."""

    def __init__(self, mock: respx.Router, last: int, feed_first: int = 1, appview: str = APPVIEW):
        self.last, self.feed_first = last, feed_first
        self.answers: dict[int, httpx.Response | BaseException] = {}
        self.feed_requests: list[dict[str, str]] = []
        self.repo_requests: list[dict[str, str]] = []
        self.other_requests: list[str] = []
        mock.get(f"{appview}/xrpc/app.bsky.actor.getProfile").mock(side_effect=self.profile)
        mock.get(f"{appview}/xrpc/app.bsky.feed.getAuthorFeed").mock(side_effect=self.feed)
        mock.get(f"https://plc.directory/{DID}").mock(side_effect=self.did_document)
        mock.get(f"{PDS}/xrpc/com.atproto.repo.listRecords").mock(side_effect=self.records)

    def own_posts(self) -> int:
        return sum(n % 10 != 0 for n in range(1, self.last + 1))

    def profile(self, request):
        self.other_requests.append("getProfile")
        if request.url.params["actor"] not in ("alice.bsky.social", DID):
            return httpx.Response(400, json={"error": "InvalidRequest", "message": "Profile not found"})
        return httpx.Response(
            200, json={"did": DID, "handle": "alice.bsky.social", "postsCount": self.own_posts(), "followersCount": 10}
        )

    def feed(self, request):
        query = dict(request.url.params)
        self.feed_requests.append(query)
        answer = self.answers.get(len(self.feed_requests))
        if isinstance(answer, BaseException):
            raise answer
        if answer is not None:
            return answer
        items = [feed_item(n) for n in range(self.last, self.feed_first - 1, -1)]
        start = int(base64.b64decode(query["cursor"])) if "cursor" in query else 0
        page = items[start : start + int(query["limit"])]
        body = {"feed": page}
        if start + len(page) < len(items):
            body["cursor"] = base64.b64encode(str(start + len(page)).encode()).decode()
        headers = {"RateLimit-Limit": "3000", "RateLimit-Remaining": "2999", "RateLimit-Policy": "3000;w=300"}
        return httpx.Response(200, json=body, headers=headers)

    def did_document(self, request):
        self.other_requests.append("plc")
        service = {"id": "#atproto_pds", "type": "AtprotoPersonalDataServer", "serviceEndpoint": PDS}
        return httpx.Response(
            200,
            json={
                "@context": ["https://www.w3.org/ns/did/v1"],
                "id": DID,
                "alsoKnownAs": ["at://alice.bsky.social"],
                "service": [service],
            },
        )

    def records(self, request):
        query = dict(request.url.params)
        self.repo_requests.append(query)
        numbers = [n for n in range(self.last, 0, -1) if n % 10 != 0]
        if "cursor" in query:
            numbers = [n for n in numbers if tid(n) < query["cursor"]]
        page = numbers[: int(query["limit"])]
        records = [
            {"uri": f"at://{DID}/app.bsky.feed.post/{tid(n)}", "cid": f"bafy{n}", "value": record(n)} for n in page
        ]
        return httpx.Response(200, json={"records": records, **({"cursor": tid(page[-1])} if page else {})})


@pytest.fixture
def mock():
    with respx.mock(assert_all_called=False) as router:
        yield router


@pytest.fixture(autouse=True)
def quick_backoff(monkeypatch):
    monkeypatch.setattr(http, "BACKOFF_S", 0.01)


def numbers(posts) -> list[int]:
    return [int(post.text.split()[1]) if not post.is_retweet else int(post.text.split()[-1]) for post in posts]


def test_tids_decode_to_numbers_in_time_order():
    assert bluesky.tid_number("2222222222222") == 0
    assert bluesky.tid_number("3jzfcijpj2z2a") >> 10 == 1_688_137_381_887_007  # the spec example: 2023-06-30
    assert bluesky.tid_number(tid(2)) > bluesky.tid_number(tid(1))
    assert bluesky.tid_number(tid(5)) >> 10 == START_US + 5 * 60 * 10**6  # microseconds, then the clock id
    assert bluesky.record_id(f"at://{DID}/app.bsky.feed.post/{tid(5)}") == str(bluesky.tid_number(tid(5)))


def test_three_pages_newest_first_with_reposts_replies_and_full_links(mock, tmp_path):
    server = FakeBluesky(mock, last=250)
    out = tmp_path / "tweets.jsonl"

    fetch.run(PARAMS, out)

    posts = read_posts(out)
    assert numbers(posts) == list(range(250, 0, -1))
    assert server.other_requests == ["getProfile"]  # the feed had every post: no repository walk
    assert [request.get("cursor") is None for request in server.feed_requests] == [True, False, False]
    assert server.feed_requests[0] == {"actor": DID, "limit": "100", "filter": "posts_with_replies"}
    by_number = dict(zip(numbers(posts), posts, strict=True))
    assert by_number[3].text == "Post 3 ✨ see https://example.org/articles/long-title-3"
    assert by_number[3].id == str(bluesky.tid_number(tid(3))) and by_number[3].created_at == "2023-11-14T22:16:20Z"
    assert by_number[14].is_reply and not by_number[13].is_reply
    assert by_number[20].is_retweet and by_number[20].text == "bob's words 20"
    assert by_number[20].id == str(bluesky.tid_number(tid(20)))  # the repost record's own key
    assert {post.origin for post in posts} == {f"bluesky:{DID}"}


def test_a_second_run_reads_only_the_newest_page(mock, tmp_path):
    server = FakeBluesky(mock, last=250)
    out = tmp_path / "tweets.jsonl"
    fetch.run(PARAMS, out)
    server.last = 262
    server.feed_requests.clear()

    fetch.run(PARAMS, out)

    assert numbers(read_posts(out)) == list(range(262, 0, -1))
    assert len(server.feed_requests) == 1 and "cursor" not in server.feed_requests[0]


def test_posts_the_feed_misses_come_from_the_repository_on_the_pds(mock, tmp_path, capsys):
    server = FakeBluesky(mock, last=250, feed_first=101)  # the AppView's feed lacks the 100 oldest
    out = tmp_path / "tweets.jsonl"

    fetch.run(PARAMS, out)

    posts = read_posts(out)
    own = [n for n in numbers(posts) if n % 10 != 0]
    assert own == [n for n in range(250, 0, -1) if n % 10 != 0]  # every post, none twice
    assert server.other_requests == ["getProfile", "plc"]
    assert len(server.feed_requests) == 2 and len(server.repo_requests) == 3  # 225 posts: 100 + 100 + 25
    assert server.repo_requests[0] == {"repo": DID, "collection": "app.bsky.feed.post", "limit": "100"}
    assert server.repo_requests[1]["cursor"] == tid([n for n in range(250, 0, -1) if n % 10][99])  # the last key
    assert "gave 135 of its 225 posts: reading the rest from its repository" in capsys.readouterr().err
    server.feed_requests.clear(), server.repo_requests.clear()

    fetch.run(PARAMS, out)  # the history is complete: a later run reads only the feed's newest page

    assert len(server.feed_requests) == 1 and server.repo_requests == []


def test_a_kill_mid_run_resumes_from_the_cursor_it_wrote(mock, tmp_path):
    server = FakeBluesky(mock, last=250)
    server.answers[3] = Killed()
    out = tmp_path / "tweets.jsonl"

    with pytest.raises(Killed):
        fetch.run(PARAMS, out)

    assert numbers(read_posts(out)) == list(range(250, 50, -1))
    server.answers.clear()
    server.feed_requests.clear()
    server.last = 255
    fetch.run(PARAMS, out)

    assert numbers(read_posts(out)) == list(range(255, 0, -1))
    assert server.feed_requests[0]["cursor"]  # the gap first, from where the kill stopped
    assert "cursor" not in server.feed_requests[-1]  # then what is new


def test_a_resume_cursor_the_appview_refuses_fills_the_gap_from_the_newest_post(mock, tmp_path, capsys):
    server = FakeBluesky(mock, last=250)
    server.answers[3] = Killed()
    out = tmp_path / "tweets.jsonl"
    with pytest.raises(Killed):
        fetch.run(PARAMS, out)
    server.answers = {1: httpx.Response(400, json={"error": "InvalidRequest", "message": "Malformed cursor"})}
    server.feed_requests.clear()
    server.last = 255

    fetch.run(PARAMS, out)

    assert numbers(read_posts(out)) == list(range(255, 0, -1))
    assert server.feed_requests[0]["cursor"] and "cursor" not in server.feed_requests[1]
    assert "refused the cursor to go on reading @alice.bsky.social" in capsys.readouterr().err


def test_a_429_waits_until_its_reset(mock, tmp_path, capsys):
    server = FakeBluesky(mock, last=150)
    headers = {"RateLimit-Limit": "3000", "RateLimit-Remaining": "0", "RateLimit-Reset": str(int(time.time()) + 1)}
    server.answers[2] = httpx.Response(
        429, json={"error": "RateLimitExceeded", "message": "Rate Limit Exceeded"}, headers=headers
    )

    fetch.run(PARAMS, tmp_path / "tweets.jsonl")

    assert numbers(read_posts(tmp_path / "tweets.jsonl")) == list(range(150, 0, -1))
    assert server.feed_requests[1] == server.feed_requests[2]
    assert "rate limit reached (429): waiting" in capsys.readouterr().err


def test_an_unknown_account_is_one_line_and_leaves_the_output(mock, tmp_path):
    FakeBluesky(mock, last=5)
    out = tmp_path / "tweets.jsonl"
    out.write_text("previous output\n")

    with pytest.raises(UserError, match=r"no Bluesky account nobody.bsky.social \(400 InvalidRequest: Profile not"):
        fetch.run(replace(PARAMS, handle="@nobody.bsky.social"), out)

    assert out.read_text() == "previous output\n"


@pytest.mark.parametrize("handle", [None, "", "alice", "not a handle", "did:PLC:x"])
def test_a_handle_that_is_neither_a_handle_nor_a_did_is_one_line_before_any_request(mock, tmp_path, handle):
    server = FakeBluesky(mock, last=5)
    with pytest.raises(UserError, match="neither a Bluesky handle nor a DID"):
        fetch.run(replace(PARAMS, handle=handle), tmp_path / "tweets.jsonl")
    assert server.other_requests == []


def test_an_appview_refusing_anonymous_reads_is_one_line(mock, tmp_path):
    server = FakeBluesky(mock, last=5)
    server.answers[1] = httpx.Response(401, json={"error": "AuthRequired", "message": "Authentication Required"})
    with pytest.raises(UserError, match=r"refuses anonymous reads \(401 AuthRequired.*fetch.api_url"):
        fetch.run(PARAMS, tmp_path / "tweets.jsonl")


def test_a_malformed_feed_is_one_line(mock, tmp_path):
    server = FakeBluesky(mock, last=5)
    server.answers[1] = httpx.Response(200, json={"feed": [{"post": {"uri": "at://x"}}]})
    with pytest.raises(UserError, match=r"malformed a feed item of @alice.bsky.social"):
        fetch.run(PARAMS, tmp_path / "tweets.jsonl")


def test_a_did_and_api_url_are_used_as_given(mock, tmp_path):
    server = FakeBluesky(mock, last=20, appview="http://127.0.0.1:2583")

    fetch.run(replace(PARAMS, handle=DID, api_url="http://127.0.0.1:2583"), tmp_path / "tweets.jsonl")

    assert len(read_posts(tmp_path / "tweets.jsonl")) == 20 and server.feed_requests[0]["actor"] == DID


def test_a_did_web_account_finds_its_pds_on_its_own_host(mock, tmp_path):
    did = "did:web:alice.example.com"
    mock.get("https://alice.example.com/.well-known/did.json").respond(
        json={
            "id": did,
            "service": [
                {
                    "id": f"{did}#atproto_pds",
                    "type": "AtprotoPersonalDataServer",
                    "serviceEndpoint": "https://pds.example.com",
                }
            ],
        }
    )
    timeline = bluesky.BlueskyTimeline.__new__(bluesky.BlueskyTimeline)
    timeline.did, timeline.say = did, print

    assert timeline._pds() == "https://pds.example.com"
