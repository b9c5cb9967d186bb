"""Posts of one Mastodon account (or of any server speaking the Mastodon API) through its public REST API.

    GET /api/v1/accounts/lookup?acct=user@server          the account: id, statuses_count
    GET /api/v1/accounts/:id/statuses?limit=40             its statuses, newest first, 40 a page
        &since_id=...   only newer than the newest we have       &max_id=...   only older than a page we have
        &exclude_replies=true / &exclude_reblogs=true          when the params leave them out

The next page is named by the `Link` header (`rel="next"`, a `max_id`); Mastodon leaves `since_id` out of it, so
it is added back. Public statuses need no token on most servers; a server that refuses anonymous reads takes an
access token from `MASTODON_ACCESS_TOKEN` (the environment only, never a file). Rate limits (`X-RateLimit-*`)
and failures are handled in `tweetbot.sources.http`.

A boost is flagged as a retweet and carries the boosted status's text; a status answering another
(`in_reply_to_id`) is a reply. The HTML `content` becomes the text a person sees (`html_text`), and a content
warning (`spoiler_text`) is kept as the post's first paragraph or dropped (`fetch.content_warnings`).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator, Mapping
from urllib.parse import parse_qsl, urlsplit

from tweetbot.posts import Post, id_order, make_post
from tweetbot.runtime.errors import UserError
from tweetbot.sources.html_text import html_to_text
from tweetbot.sources.http import Server
from tweetbot.sources.timeline import Page

TOKEN_VARIABLE = "MASTODON_ACCESS_TOKEN"
PAGE_SIZE = 40  # the statuses endpoint's largest page
HANDLE = re.compile(r"@?(?P<user>[A-Za-z0-9_.-]+)@(?P<server>[A-Za-z0-9.-]+(?::\d+)?)")
TOKEN_FIX = "(Preferences > Development > New application, scope read:statuses)"


def clean_handle(handle: str | None) -> tuple[str, str]:
    """The user and server of `user@server` (an "@" in front is fine); anything else is a UserError."""
    match = HANDLE.fullmatch((handle or "").strip())
    if not match:
        raise UserError(
            f"fetch.handle {handle!r} is not a Mastodon address: write it as user@server, e.g. Gargron@mastodon.social"
        )
    return match["user"], match["server"].lower()


class MastodonTimeline:
    def __init__(
        self,
        handle: str | None,
        *,
        api_url: str | None = None,
        include_retweets: bool = True,
        include_replies: bool = True,
        content_warnings: str = "keep",
        say: Callable[[str], None] = print,
        environ: Mapping[str, str] = os.environ,
    ):
        user, server = clean_handle(handle)
        self.name = f"{user}@{server}"
        self.origin = f"mastodon:{self.name.lower()}"
        self.include_retweets, self.include_replies = include_retweets, include_replies
        self.content_warnings = content_warnings
        self.query = {"include_retweets": include_retweets, "include_replies": include_replies}
        self.query |= {"content_warnings": content_warnings}
        token = environ.get(TOKEN_VARIABLE, "").strip()
        self.has_token = bool(token)
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.server = Server(api_url or f"https://{server}", f"the Mastodon server {server}", say, headers)
        account = self._ask("/api/v1/accounts/lookup", {"acct": self.name})
        if not isinstance(account, dict) or not isinstance(account.get("id"), str | int):
            raise UserError(f"{server} answered the lookup of {self.name} without an account id: check fetch.api_url")
        self.account_id = str(account["id"])
        count = account.get("statuses_count")
        self.post_count = count if isinstance(count, int) else None
        self.cap = None

    def pages(self, since_id: str | None, resume: str | None) -> Iterator[Page]:
        # Mastodon's next link keeps limit and exclude_replies, but not since_id (nor, before 4.x, exclude_reblogs)
        fixed = {"since_id": since_id, "exclude_replies": not self.include_replies or None}
        fixed |= {"exclude_reblogs": not self.include_retweets or None}
        params: dict[str, object] = {"limit": PAGE_SIZE, "max_id": resume} | fixed
        while True:
            statuses, next_link = self._ask_page(f"/api/v1/accounts/{self.account_id}/statuses", params)
            if not statuses:
                return
            posts = [self._post(status) for status in statuses]
            yield Page(posts, resume=statuses[-1]["id"])
            reached_known = since_id is not None and id_order(posts[-1].id) <= id_order(since_id)
            if next_link is None or reached_known:
                return
            # Only the next link's query: the server builds it with its own address, which may not be api_url's.
            params = dict(parse_qsl(urlsplit(next_link).query)) | fixed

    def history(self, have: int, resume: str | None) -> None:
        return None  # the statuses endpoint reaches back to an account's first status

    def missing(self, received: int, from_scratch: bool) -> None:
        return None

    def _post(self, status: dict) -> Post:
        try:
            shown = status.get("reblog") or status  # a boost: the boosted status's words, the boost's id and time
            text = html_to_text(shown["content"])
            warning = (shown.get("spoiler_text") or "").strip()
            if warning and self.content_warnings == "keep":
                text = f"{warning}\n\n{text}"
            return make_post(
                id=status["id"],
                created_at=status["created_at"],
                text=text,
                source="mastodon",
                origin=self.origin,
                retweet=status.get("reblog") is not None,
                reply=status.get("in_reply_to_id") is not None,
            )
        except (KeyError, TypeError, ValueError) as error:
            raise UserError(
                f"{self.server.name} sent a malformed status of {self.name} ({type(error).__name__}: {error}): "
                "check fetch.api_url, or try again later"
            ) from None

    def _ask(self, path: str, params: Mapping[str, object]) -> object:
        return self._ask_page(path, params)[0]

    def _ask_page(self, path: str, params: Mapping[str, object]) -> tuple[object, str | None]:
        response = self.server.get(path, params)
        body = self.server.json(response, "the answer")
        error = body.get("error") if isinstance(body, dict) else None
        if response.status_code in (401, 403):
            if self.has_token:
                raise UserError(
                    f"{self.server.name} refused {TOKEN_VARIABLE} ({response.status_code}: {error}): "
                    f"make a new access token on that server {TOKEN_FIX}"
                )
            raise UserError(
                f"{self.server.name} refuses anonymous reads of {self.name} ({response.status_code}: {error}): "
                f"set {TOKEN_VARIABLE} to an access token of an account there {TOKEN_FIX}"
            )
        if response.status_code in (404, 410):
            gone = "suspended" if response.status_code == 410 else "not found"
            raise UserError(f"no Mastodon account {self.name} ({error or gone}): check fetch.handle (user@server)")
        if response.status_code != 200:
            raise UserError(f"{self.server.name} answered {response.status_code} ({error}) for {self.name}")
        if path.endswith("/statuses") and not (
            isinstance(body, list) and all(isinstance(status, dict) and "id" in status for status in body)
        ):
            raise self.server.malformed(response, "expected a list of statuses")
        return body, response.links.get("next", {}).get("url")
