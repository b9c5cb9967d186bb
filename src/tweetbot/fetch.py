"""The fetch stage: collect posts from the source params.yaml `fetch:` names into one JSON-lines file.

Every source goes through `posts.make_post` and `posts.write_posts`, is filtered by `include_retweets` and
`include_replies`, and keeps its newest `max_posts`.

The archive, file and demo sources are read whole: they replace the output, and a malformed input leaves the
previous output untouched. The X API source is incremental: it extends the output page by page (writing it
atomically after every page, so a kill loses at most one page) and merges by id.

Which posts the output holds is recorded beside it, in `<output stem>.state.json`
(`data/raw/tweets.state.json`): the source and, for the X API, the handle, the filters, and how far the
fetch got:

- `complete_through`: every post up to this id has been fetched, so the next run asks only for newer posts
  (`since_id`);
- `resume_until`: a run was interrupted after fetching down to this id, so the next run first fetches the gap
  between `complete_through` and it (`until_id`), then what is new.

The X API merges only into an output of the same handle: after the demo, an archive or another account it
starts afresh, so two accounts never mix. After a change of filters or `max_posts` it keeps the posts it has
but asks for the whole timeline again. The state is written after the posts, and removed before a fresh start,
so a kill between the two writes at worst makes the next run ask for a page again.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from tqdm import tqdm

from tweetbot import atomic
from tweetbot.params import FetchParams
from tweetbot.posts import Post, merge_posts, newest_first, read_posts, write_posts
from tweetbot.runtime.errors import UserError
from tweetbot.sources import archive, demo, files, x_api
from tweetbot.sources.x_api import API_CAP


def run(p: FetchParams, out: Path) -> None:
    """Fetch posts as `p` says into the JSON-lines file `out` (and its state file beside it)."""
    out = Path(out)
    if p.max_posts is not None and p.max_posts < 1:
        raise UserError(f"fetch.max_posts is {p.max_posts}: use a positive number, or null for all")
    if p.source == "x_api":
        _fetch_x_api(p, out)
        return
    posts = _read_whole_source(p)  # everything is parsed before the output is touched
    state_path(out).unlink(missing_ok=True)
    kept = select(posts, p)
    write_posts(out, kept)
    _write_state(out, {"source": p.source, "path": p.path} if p.path else {"source": p.source})
    _say(f"{out}: {_describe(kept)} from {p.source}{f' {p.path}' if p.path else ''}")


def _read_whole_source(p: FetchParams) -> list[Post]:
    if p.source == "demo":
        return demo.read_demo()
    if not p.path:
        raise UserError(f"fetch.path is not set: name your {p.source} in params.yaml (source: {p.source})")
    if p.source == "archive":
        return archive.read_archive(Path(p.path))
    return files.read_file(Path(p.path))


def select(posts: list[Post], p: FetchParams) -> list[Post]:
    """The posts the params ask for: filtered, unique by id, newest first, at most `max_posts`."""
    kept = [
        post
        for post in posts
        if (p.include_retweets or not post.is_retweet) and (p.include_replies or not post.is_reply)
    ]
    return newest_first(kept)[: p.max_posts]


def state_path(out: Path) -> Path:
    return out.with_name(f"{out.stem}.state.json")


def _fetch_x_api(p: FetchParams, out: Path) -> None:
    handle = x_api.clean_handle(p.handle)
    client = x_api.connect()
    account = x_api.find_account(client, handle, say=_say)  # an unknown handle leaves the output untouched

    state = _read_state(out)
    query = {
        "include_retweets": p.include_retweets,
        "include_replies": p.include_replies,
        "max_posts": p.max_posts,
    }
    if state.get("source") == "x_api" and state.get("handle") == handle.lower() and out.exists():
        posts = read_posts(out)
        if state.get("query") != query:
            _say(f"fetch params changed since the last fetch of @{handle}: asking for the whole timeline again")
            state = {}
    else:
        if out.exists():
            _say(f"{out} holds posts of {_origin(state)}: replacing them with the posts of @{handle}")
        state_path(out).unlink(missing_ok=True)  # from here on, the output is not the old source's
        posts, state = [], {}
    complete_through, resume_until = state.get("complete_through"), state.get("resume_until")

    def save(resume_until: str | None) -> None:
        write_posts(out, select(posts, p))
        _write_state(
            out,
            {
                "source": "x_api",
                "handle": handle.lower(),
                "query": query,
                "complete_through": complete_through,
                "resume_until": resume_until,
            },
        )

    def fetch_range(since_id: str | None, until_id: str | None) -> bool:
        """Fetch one range of ids page by page, saving after each; True if `max_posts` made the rest moot."""
        nonlocal posts, received
        options = {"include_retweets": p.include_retweets, "include_replies": p.include_replies}
        for page in x_api.pages(client, account, since_id=since_id, until_id=until_id, say=_say, **options):
            if not page:
                continue
            received += len(page)
            bar.update(len(page))
            posts = merge_posts(posts, page)
            save(resume_until=page[-1].id)
            if _have_newest(posts, p, page[-1].id):
                return True
        return False

    from_scratch, received = complete_through is None, 0
    expected = min(account.post_count or API_CAP, API_CAP, p.max_posts or API_CAP) if from_scratch else None
    with tqdm(total=expected, unit=" posts", desc=f"@{handle}", file=sys.stderr) as bar:
        if resume_until:  # an interrupted run left a gap between complete_through and resume_until
            fetch_range(since_id=complete_through, until_id=resume_until)
            complete_through = posts[0].id if posts else complete_through
            save(resume_until=None)
        stopped_early = fetch_range(since_id=complete_through, until_id=None)
        complete_through = posts[0].id if posts else complete_through
        save(resume_until=None)
    if not stopped_early and (received >= API_CAP or (from_scratch and (account.post_count or 0) > API_CAP)):
        count = f"{account.post_count:,}" if account.post_count else "more"
        _say(
            f"the X API gives only the newest {API_CAP:,} posts of an account and @{handle} has {count}: "
            f"older ones are missing; for all of them, use the account's X archive (fetch.source: archive)"
        )
    _say(f"{out}: {_describe(select(posts, p))} of @{account.username} ({received:,} new from the X API)")


def _have_newest(posts: list[Post], p: FetchParams, oldest_asked: str) -> bool:
    """Whether the newest `max_posts` are all newer than anything still to come (so going on is moot)."""
    if p.max_posts is None:
        return False
    kept = select(posts, p)
    return len(kept) == p.max_posts and int(kept[-1].id) >= int(oldest_asked)


def _read_state(out: Path) -> dict:
    try:
        state = json.loads(state_path(out).read_text(encoding="utf-8"))
    except (FileNotFoundError, ValueError):
        return {}  # no state, or a damaged one: the output's origin is unknown, so start afresh
    return state if isinstance(state, dict) else {}


def _write_state(out: Path, state: dict) -> None:
    atomic.write_text(state_path(out), json.dumps(state, indent=2) + "\n")


def _origin(state: dict) -> str:
    if state.get("source") == "x_api":
        return f"@{state.get('handle')}"
    return state.get("source") or "an unknown source"


def _describe(posts: list[Post]) -> str:
    retweets = sum(post.is_retweet for post in posts)
    replies = sum(post.is_reply for post in posts)
    return f"{len(posts):,} posts ({retweets:,} retweets, {replies:,} replies)"


def _say(message: str) -> None:
    """A message for the user on stderr, printed above the progress bar when there is one."""
    tqdm.write(message, file=sys.stderr)
