"""Posts of one account through the X API v2, with tweepy's Client and Paginator.

The user timeline endpoint gives at most the newest 3,200 posts of an account, newest first, 100 a page.
`since_id` asks only for posts newer than a given id and `until_id` only for older ones, which is what lets
`tweetbot.fetch` fetch incrementally and finish an interrupted fetch. Every API failure the user can fix
becomes a one-line UserError; a rate limit (429) is waited out with a message saying how long.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import TypeVar

import requests
import tweepy

from tweetbot.posts import Post, make_post
from tweetbot.runtime.errors import UserError
from tweetbot.sources.timeline import Page

TOKEN_VARIABLES = ("X_BEARER_TOKEN", "TWITTER_BEARER_TOKEN")
API_CAP = 3200  # the timeline endpoint's limit: the newest 3,200 posts of an account
PAGE_SIZE = 100  # the endpoint's largest page
# note_tweet holds the whole text of a post longer than 280 characters, whose `text` is cut
TWEET_FIELDS = ["created_at", "referenced_tweets", "in_reply_to_user_id", "note_tweet"]
HANDLE = re.compile(r"[A-Za-z0-9_]{1,15}")  # X's rule for usernames
NO_RESET_WAIT_S = 60.0  # a 429 without x-rate-limit-reset: try again after this

T = TypeVar("T")


@dataclass(frozen=True)
class Account:
    id: str
    username: str
    post_count: int | None  # all the account's posts, as its profile counts them


def clean_handle(handle: str | None) -> str:
    """The handle without its "@"; a missing or impossible handle is a UserError."""
    name = (handle or "").strip().removeprefix("@")
    if not name:
        raise UserError("fetch.handle is not set: name the account in params.yaml, e.g. `handle: NASA`")
    if not HANDLE.fullmatch(name):
        raise UserError(f"fetch.handle {handle!r} is not an X handle: 1-15 letters, digits or _, e.g. NASA")
    return name


def connect(environ: Mapping[str, str] = os.environ) -> tweepy.Client:
    """A client authenticated with the bearer token from the environment."""
    token = next((environ[name].strip() for name in TOKEN_VARIABLES if environ.get(name, "").strip()), None)
    if token is None:
        raise UserError(
            "no X API bearer token: set X_BEARER_TOKEN (or TWITTER_BEARER_TOKEN) to your app's bearer token "
            "from the X developer portal, or use fetch.source: archive"
        )
    # Rate limits are waited out in `_ask`, which says so; tweepy's own waiting only logs at WARNING level.
    return tweepy.Client(bearer_token=token, wait_on_rate_limit=False)


def find_account(client: tweepy.Client, handle: str, say: Callable[[str], None] = print) -> Account:
    """The account behind a handle; an unknown or suspended one is a UserError."""
    response = _ask(lambda: client.get_user(username=handle, user_fields=["public_metrics"]), say)
    if response.data is None:  # the API answers 200 with an `errors` list for an unknown user
        detail = response.errors[0].get("detail", "not found") if response.errors else "not found"
        raise UserError(f"no X account @{handle} ({detail}): check fetch.handle in params.yaml")
    metrics = response.data.public_metrics or {}
    user = response.data
    return Account(id=str(user.id), username=user.username, post_count=metrics.get("tweet_count"))


def pages(
    client: tweepy.Client,
    account: Account,
    *,
    since_id: str | None = None,
    until_id: str | None = None,
    include_retweets: bool = True,
    include_replies: bool = True,
    origin: str = "",
    say: Callable[[str], None] = print,
) -> Iterator[list[Post]]:
    """The account's posts newer than `since_id` and older than `until_id`, a page at a time, newest first."""
    kinds = (("retweets", include_retweets), ("replies", include_replies))
    exclude = [kind for kind, wanted in kinds if not wanted]
    responses = iter(
        tweepy.Paginator(
            client.get_users_tweets,
            account.id,
            max_results=PAGE_SIZE,
            tweet_fields=TWEET_FIELDS,
            exclude=exclude or None,
            since_id=since_id,
            until_id=until_id,
        )
    )
    while (response := _ask(lambda: next(responses, None), say)) is not None:
        yield [post_from_tweet(tweet.data, origin) for tweet in response.data or []]


class XTimeline:
    """An account's timeline as `tweetbot.sources.timeline.Timeline`: `resume` is the `until_id` of the next page."""

    cap = API_CAP

    def __init__(
        self,
        handle: str | None,
        *,
        include_retweets: bool = True,
        include_replies: bool = True,
        max_posts: int | None = None,
        say: Callable[[str], None] = print,
    ):
        name = clean_handle(handle)
        self.client = connect()
        self.account = find_account(self.client, name, say=say)  # an unknown handle leaves the output untouched
        self.name, self.origin, self.post_count = f"@{name}", f"x_api:{name.lower()}", self.account.post_count
        self.options = {"include_retweets": include_retweets, "include_replies": include_replies}
        self.query = self.options | {"max_posts": max_posts}
        self.say = say

    def pages(self, since_id: str | None, resume: str | None) -> Iterator[Page]:
        asked = {"since_id": since_id, "until_id": resume, "origin": self.origin, "say": self.say, **self.options}
        for page in pages(self.client, self.account, **asked):
            if page:
                yield Page(page, resume=page[-1].id)

    def history(self, have: int, resume: str | None) -> None:
        return None

    def missing(self, received: int, from_scratch: bool) -> str | None:
        if received < API_CAP and not (from_scratch and (self.post_count or 0) > API_CAP):
            return None
        count = f"{self.post_count:,}" if self.post_count else "more"
        return (
            f"the X API gives only the newest {API_CAP:,} posts of an account and {self.name} has {count}: "
            f"older ones are missing; for all of them, use the account's X archive (fetch.source: archive)"
        )


def post_from_tweet(tweet: dict, origin: str = "") -> Post:
    """A Post from the API's JSON for one post (`tweepy.Tweet.data`)."""
    kinds = {reference.get("type") for reference in tweet.get("referenced_tweets") or []}
    note = tweet.get("note_tweet") or {}  # a post over 280 characters: `text` is cut, the note whole
    return make_post(
        id=tweet["id"],
        created_at=tweet["created_at"],
        text=note.get("text") or tweet["text"],
        source="x_api",
        origin=origin,
        retweet="retweeted" in kinds,
        reply="replied_to" in kinds or tweet.get("in_reply_to_user_id") is not None,
    )


def _ask(request: Callable[[], T], say: Callable[[str], None]) -> T:
    """Make one API request, waiting out rate limits; a failure the user can fix becomes a UserError.

    A failed request leaves tweepy's PaginationIterator as it was (it keeps its page token and count), so
    asking it again after a 429 asks for the same page.
    """
    while True:
        try:
            return request()
        except tweepy.TooManyRequests as error:
            _wait_for_reset(error.reset_time, say)
        except tweepy.Unauthorized:
            raise UserError(
                "the X API refused the bearer token (401 Unauthorized): check X_BEARER_TOKEN "
                "(copy the bearer token of your app again from the X developer portal)"
            ) from None
        except tweepy.Forbidden as error:
            raise UserError(
                f"the X API refused the request (403 Forbidden: {_api_message(error)}): "
                "check that X_BEARER_TOKEN belongs to an app whose access level can read user timelines"
            ) from None
        except tweepy.TwitterServerError as error:
            status = error.response.status_code
            raise UserError(f"the X API failed ({status} {_api_message(error)}): try again later") from None
        except tweepy.HTTPException as error:
            status = error.response.status_code
            raise UserError(f"the X API answered {status} ({_api_message(error)}): check fetch.handle") from None
        except requests.RequestException as error:
            raise UserError(
                f"could not reach the X API ({type(error).__name__}): check the network connection"
            ) from None


def _wait_for_reset(reset_time: int | None, say: Callable[[str], None]) -> None:
    # At least a second: if our clock is ahead of X's, the API answers 429 again and we wait again.
    wait = NO_RESET_WAIT_S if reset_time is None else max(reset_time - time.time(), 1.0)
    until = time.strftime("%H:%M:%S", time.localtime(time.time() + wait))
    say(f"X API rate limit reached: waiting {wait:.0f} s (until {until}), then going on")
    time.sleep(wait)


def _api_message(error: tweepy.HTTPException) -> str:
    return "; ".join(map(str, error.api_messages)) or error.response.reason or "no details"
