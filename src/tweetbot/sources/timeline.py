"""What an incremental source (X API, Mastodon, Bluesky) gives `tweetbot.fetch`: an account's posts, newest first,
a page at a time, each page with the token that continues after it.

`tweetbot.fetch` keeps, per account, the newest id it has every post up to (`complete_through`) and, when a run
was interrupted, the token of the last page it wrote (`resume`); with those two it asks for what is new and
fills any gap, whatever the source's paging is (X `until_id`, Mastodon `max_id`, a Bluesky cursor).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

from tweetbot.posts import Post
from tweetbot.runtime.errors import UserError


class ResumeRefused(UserError):
    """The source no longer takes the token an interrupted run stopped at (a cursor can expire). The fetch then
    walks again from the newest post, which fills the same gap: posts merge by id, so nothing is lost."""


@dataclass(frozen=True)
class Page:
    posts: list[Post]  # newest first
    resume: str | None  # what continues after this page (None: nothing does)


class Timeline(Protocol):
    origin: str  # what the posts' `origin` says and the state file is keyed by, e.g. "mastodon:alice@example.org"
    name: str  # the account for people, e.g. "alice@example.org"
    post_count: int | None  # the account's posts as its profile counts them, for the progress bar
    cap: int | None  # the most posts the source gives of an account, if it has such a limit
    query: dict  # the settings the fetched posts depend on: a change asks for everything again

    def pages(self, since_id: str | None, resume: str | None) -> Iterator[Page]:
        """Posts newer than `since_id` (None: all), starting after the page `resume` ends (None: the newest)."""
        ...

    def history(self, have: int, resume: str | None) -> Iterator[Page] | None:
        """After a complete first walk holding `have` own posts: pages of older posts the timeline missed, or None."""
        ...

    def missing(self, received: int, from_scratch: bool) -> str | None:
        """A note for the user when the source could not give every post (the X API's 3,200), else None."""
        ...
