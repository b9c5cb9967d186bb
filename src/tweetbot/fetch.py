"""The fetch stage: the posts of the accounts and files params.yaml `fetch:` names, merged into one store.

Files, archives and the demo are read whole, before the store is touched, and replace their own posts. The X
API, Mastodon and Bluesky are incremental (tweetbot.sources.timeline): each page is merged and the store
written, so a kill loses at most a page. How far each got is kept beside the store (`tweets.state.json`), by
origin: `complete_through` (every post up to this id is in), `resume` (where an interrupted run stopped: that
gap is fetched first) and `history` (an older-posts pass: "done", or where to go on). The state is written
after the posts, so a kill between the two costs one page asked again.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from tqdm import tqdm

from tweetbot import atomic
from tweetbot.params import FetchParams, FetchSource
from tweetbot.posts import Post, id_order, newest_first, read_posts, write_posts
from tweetbot.runtime.errors import UserError
from tweetbot.sources.timeline import ResumeRefused, Timeline

INCREMENTAL = ("x_api", "mastodon", "bluesky")
SLOW_WRITE_S = 0.2  # a store that takes longer than this to write is written at most every 10 writes' time


def run(p: FetchParams, out: Path) -> None:
    """Fetch posts as `p` says into the JSON-lines file `out` (and its state file beside it)."""
    out = Path(out)
    if p.max_posts is not None and p.max_posts < 1:
        raise UserError(f"fetch.max_posts is {p.max_posts}: use a positive number, or null for all")
    # Every file is parsed, and every account looked up, before the output is touched.
    whole: dict[str, list[Post]] = {}
    timelines: list[Timeline] = []
    origins: list[str] = []
    for entry in p.entries():
        if entry.source in INCREMENTAL:
            timelines.append(_open_timeline(entry, p))
            origins.append(timelines[-1].origin)
        else:
            origin, whole[origin] = _read_whole_source(entry, p)
            origins.append(origin)
    if len(set(origins)) < len(origins):
        raise UserError("fetch.sources lists the same account or file twice: remove one of them")
    names = {timeline.origin: timeline.name for timeline in timelines} | {origin: origin for origin in whole}
    store = Store(out, origins, names)
    for origin, posts in whole.items():
        store.replace(origin, posts, {})
        _say(f"{out}: {_describe(select(posts, p))} from {origin}")
    store.save(p, force=True)
    for timeline in timelines:
        _follow(timeline, store, p)


def _open_timeline(entry: FetchSource, p: FetchParams) -> Timeline:
    if entry.source == "x_api":
        from tweetbot.sources.x_api import XTimeline

        if entry.api_url:
            raise UserError("fetch.api_url is not for the X API (tweepy talks to api.twitter.com): remove it")
        options = {"include_retweets": p.include_retweets, "include_replies": p.include_replies}
        return XTimeline(entry.handle, max_posts=p.max_posts, say=_say, **options)
    if entry.source == "mastodon":
        from tweetbot.sources.mastodon import MastodonTimeline

        options = {"include_retweets": p.include_retweets, "include_replies": p.include_replies}
        return MastodonTimeline(
            entry.handle, api_url=entry.api_url, content_warnings=p.content_warnings, say=_say, **options
        )
    from tweetbot.sources.bluesky import BlueskyTimeline

    return BlueskyTimeline(entry.handle, api_url=entry.api_url, say=_say)


def _read_whole_source(entry: FetchSource, p: FetchParams) -> tuple[str, list[Post]]:
    from tweetbot.sources import archive, demo, files

    if entry.source == "demo":
        return "demo", demo.read_demo()
    if not entry.path:
        raise UserError(f"fetch.path is not set: name your {entry.source} in params.yaml (source: {entry.source})")
    origin = f"{entry.source}:{entry.path}"
    if entry.source == "archive":
        posts = archive.read_archive(Path(entry.path))
    else:
        posts = files.read_file(Path(entry.path), strict=p.strict, say=_say)
    return origin, [_with_origin(post, origin) for post in posts]


def _with_origin(post: Post, origin: str) -> Post:
    return Post(post.id, post.created_at, post.text, post.is_retweet, post.is_reply, post.source, origin)


def select(posts: Iterable[Post], p: FetchParams) -> list[Post]:
    """The posts the params ask for: filtered, unique, newest first, at most `max_posts` of each origin."""
    kept, per_origin = [], {}
    for post in newest_first(posts):
        if (p.include_retweets or not post.is_retweet) and (p.include_replies or not post.is_reply):
            count = per_origin[post.origin] = per_origin.get(post.origin, 0) + 1
            if p.max_posts is None or count <= p.max_posts:
                kept.append(post)
    return kept


class Store:
    """The output and its state: the posts of each origin, and how far each incremental fetch got."""

    def __init__(self, out: Path, origins: list[str], names: dict[str, str]):
        self.out, self.names = out, names
        state, legacy_origin = _read_state(out)
        if out.exists() and set(state) & set(origins):
            posts = read_posts(out)
            if legacy_origin:  # written before posts had origins: they are all the one source's
                posts = [post if post.origin else _with_origin(post, legacy_origin) for post in posts]
        else:
            posts = []
        self.posts: dict[str, list[Post]] = {origin: [] for origin in origins}
        for post in posts:
            if post.origin in self.posts:
                self.posts[post.origin].append(post)
        self.state = {origin: state[origin] for origin in origins if origin in state}
        dropped = [names.get(origin, origin) for origin in state if origin not in self.posts]
        if out.exists() and dropped and not self.state:
            _say(f"{out} holds posts of {', '.join(dropped)}: replacing them with the posts of {_list(names)}")
        elif dropped:
            _say(f"{out}: dropping the posts of {', '.join(dropped)}, which fetch no longer lists")
        self.last_write_s, self.written_at = 0.0, 0.0

    def replace(self, origin: str, posts: list[Post], state: dict) -> None:
        self.posts[origin], self.state[origin] = posts, state

    def save(self, p: FetchParams, force: bool = False) -> None:
        """Write the posts, then the state; a large store is written less often (see SLOW_WRITE_S)."""
        if (
            not force
            and self.last_write_s > SLOW_WRITE_S
            and time.monotonic() - self.written_at < 10 * self.last_write_s
        ):
            return
        started = time.monotonic()
        write_posts(self.out, select([post for posts in self.posts.values() for post in posts], p))
        _write_state(self.out, {"sources": self.state})
        self.written_at = time.monotonic()
        self.last_write_s = self.written_at - started


def _follow(timeline: Timeline, store: Store, p: FetchParams) -> None:
    """Bring one incremental source up to date in `store`: the gap an interrupted run left, then what is new."""
    origin = timeline.origin
    state = store.state.get(origin, {})
    if state and state.get("query") != timeline.query:
        _say(f"fetch params changed since the last fetch of {timeline.name}: asking for the whole timeline again")
        state = {}
    posts = {post.id: post for post in store.posts[origin]}
    complete_through, resume, history = state.get("complete_through"), state.get("resume"), state.get("history")
    from_scratch, received = complete_through is None, 0

    def save(force: bool = False) -> None:
        newest_kept = {"complete_through": complete_through, "resume": resume, "history": history}
        store.replace(origin, list(posts.values()), {"query": timeline.query, **newest_kept})
        store.save(p, force=force)

    def walk(pages, on_page: Callable[[str | None], None]) -> bool:
        """Merge page after page, saving after each; True if `max_posts` made the rest moot."""
        nonlocal received
        for page in pages:
            received += len(page.posts)
            bar.update(len(page.posts))
            posts.update((post.id, post) for post in page.posts)
            on_page(page.resume)
            save()
            if _have_newest(posts.values(), p, page.posts[-1].id):
                return True
        return False

    def set_resume(token: str | None) -> None:
        nonlocal resume
        resume = token

    def set_history(token: str | None) -> None:
        nonlocal history
        history = token or "done"

    def newest() -> str | None:
        return max(posts, key=id_order, default=None) or complete_through

    expected = [timeline.post_count, timeline.cap, p.max_posts] if from_scratch else []
    total = min((n for n in expected if n is not None), default=None) if from_scratch else None
    with tqdm(total=total, unit=" posts", desc=timeline.name, file=sys.stderr) as bar:
        if resume:  # an interrupted run left a gap between complete_through and resume
            try:
                walk(timeline.pages(since_id=complete_through, resume=resume), set_resume)
                complete_through = newest()
            except ResumeRefused as refused:  # the walk from the newest below fills the gap instead
                _say(f"{refused}: reading {timeline.name} again from its newest post to fill the gap")
            resume = None
            save(force=True)
        stopped_early = walk(timeline.pages(since_id=complete_through, resume=None), set_resume)
        complete_through, resume = newest(), None
        save(force=True)
        if history != "done" and not stopped_early:
            own = sum(not post.is_retweet for post in posts.values())
            pages = timeline.history(own, history)
            if pages is not None:
                try:
                    walk(pages, set_history)
                except ResumeRefused as refused:
                    _say(f"{refused}: reading the history of {timeline.name} again from its start")
                    walk(timeline.history(own, None), set_history)
            history = "done"
            save(force=True)
    note = None if stopped_early else timeline.missing(received, from_scratch)
    if note:
        _say(note)
    kept = select(posts.values(), p)
    _say(f"{store.out}: {_describe(kept)} of {timeline.name} ({received:,} new from {timeline.origin.split(':')[0]})")


def _have_newest(posts: Iterable[Post], p: FetchParams, oldest_asked: str) -> bool:
    """Whether the newest `max_posts` are all newer than anything still to come (so going on is moot)."""
    if p.max_posts is None:
        return False
    kept = select(posts, p)
    return len(kept) == p.max_posts and id_order(kept[-1].id) >= id_order(oldest_asked)


def state_path(out: Path) -> Path:
    return out.with_name(f"{out.stem}.state.json")


def _read_state(out: Path) -> tuple[dict[str, dict], str | None]:
    """The state by origin, and the one origin of a state written before several sources (else None)."""
    try:
        state = json.loads(state_path(out).read_text(encoding="utf-8"))
    except (FileNotFoundError, ValueError):
        return {}, None  # no state, or a damaged one: the output's origin is unknown, so start afresh
    if not isinstance(state, dict):
        return {}, None
    if isinstance(state.get("sources"), dict):
        return {key: value for key, value in state["sources"].items() if isinstance(value, dict)}, None
    # Written by an earlier version for one source: {"source": "x_api", "handle": ..., "resume_until": ...}
    source = state.get("source")
    if source == "x_api" and state.get("handle"):
        origin = f"x_api:{state['handle']}"
        keys = {"query": state.get("query"), "complete_through": state.get("complete_through")}
        return {origin: keys | {"resume": state.get("resume_until"), "history": "done"}}, origin
    if source in ("archive", "file") and state.get("path"):
        origin = f"{source}:{state['path']}"
        return {origin: {}}, origin
    if source == "demo":
        return {"demo": {}}, "demo"
    return {}, None


def _write_state(out: Path, state: dict) -> None:
    atomic.write_text(state_path(out), json.dumps(state, indent=2) + "\n")


def _list(names: dict[str, str]) -> str:
    return ", ".join(names.values())


def _describe(posts: list[Post]) -> str:
    retweets = sum(post.is_retweet for post in posts)
    replies = sum(post.is_reply for post in posts)
    return f"{len(posts):,} posts ({retweets:,} retweets, {replies:,} replies)"


def _say(message: str) -> None:
    """A message for the user on stderr, printed above the progress bar when there is one."""
    tqdm.write(message, file=sys.stderr)
