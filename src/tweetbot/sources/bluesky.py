"""Posts of one Bluesky account (or any AT Protocol account) through public XRPC calls, without auth.

    GET {AppView}/xrpc/app.bsky.actor.getProfile?actor=...          the DID and the post count
    GET {AppView}/xrpc/app.bsky.feed.getAuthorFeed?actor=DID&limit=100&filter=posts_with_replies&cursor=...
        posts and reposts, newest first, 100 a page, each page's `cursor` naming the next
    GET {PLC directory}/DID  (did:web: https://HOST/.well-known/did.json)    the DID document: where the PDS is
    GET {PDS}/xrpc/com.atproto.repo.listRecords?repo=DID&collection=app.bsky.feed.post&limit=100&cursor=...
        the account's own repository: every post it ever made, newest record key first

The author feed can miss old posts (an AppView indexes what it has seen), so after a first complete walk that
found fewer of the account's own posts than its profile counts, the repository fills in the rest
(`history`). A repost (`reason` app.bsky.feed.defs#reasonRepost) is flagged as a retweet with the reposted
text; a post with a `reply` is a reply. Link facets put back the full URL where the text shows a shortened one.

Ids: a record key is a TID, 13 base32-sortable characters holding a 64-bit number (53 bits of microseconds, 10
of clock id), decoded to that number, so ids sort by time. A repost's id is its own record's TID.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from datetime import datetime

from tweetbot.posts import Post, id_order, make_post
from tweetbot.runtime.errors import UserError
from tweetbot.sources.http import Server
from tweetbot.sources.timeline import Page, ResumeRefused

APPVIEW = "https://public.api.bsky.app"
PLC_DIRECTORY = "https://plc.directory"
PAGE_SIZE = 100  # the largest page of getAuthorFeed and listRecords
TID_ALPHABET = "234567abcdefghijklmnopqrstuvwxyz"
TID = re.compile(r"[234567abcdefghij][234567abcdefghijklmnopqrstuvwxyz]{12}")
DID = re.compile(r"did:[a-z]+:[a-zA-Z0-9._:%-]*[a-zA-Z0-9._-]")
HANDLE = re.compile(r"([a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?\.)+[a-zA-Z]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?")
REPOST = "app.bsky.feed.defs#reasonRepost"
LINK = "app.bsky.richtext.facet#link"
HANDLE_FIX = "check fetch.handle (a handle like name.bsky.social, or a DID like did:plc:...)"


def clean_handle(handle: str | None) -> str:
    name = (handle or "").strip().removeprefix("@")
    if DID.fullmatch(name) or HANDLE.fullmatch(name):
        return name if name.startswith("did:") else name.lower()
    raise UserError(f"fetch.handle {handle!r} is neither a Bluesky handle nor a DID: {HANDLE_FIX}")


def tid_number(key: str) -> int:
    """The 64-bit number a TID encodes (big-endian base32-sortable)."""
    number = 0
    for char in key:
        number = number * 32 + TID_ALPHABET.index(char)
    return number


def record_id(uri: str) -> str:
    """The post id of at://DID/COLLECTION/RKEY: the TID's number, or the record key itself if it is no TID."""
    key = uri.rsplit("/", 1)[-1]
    return str(tid_number(key)) if TID.fullmatch(key) else key


def time_id(moment: str) -> str:
    """An id in TID order for a repost the AppView names no record of: its time in microseconds, as a TID holds it."""
    return str(int(datetime.fromisoformat(moment).timestamp() * 1_000_000) << 10)


def expand_links(text: str, facets: object) -> str:
    """`text` with the span of every link facet replaced by the facet's full URL (spans count UTF-8 bytes)."""
    links = []
    for facet in facets if isinstance(facets, list) else []:
        if not isinstance(facet, dict) or not isinstance(facet.get("index"), dict):
            continue
        start, end = facet["index"].get("byteStart"), facet["index"].get("byteEnd")
        for feature in facet.get("features") or []:
            is_link = isinstance(feature, dict) and feature.get("$type") == LINK and isinstance(feature.get("uri"), str)
            if is_link and isinstance(start, int) and isinstance(end, int) and 0 <= start <= end:
                links.append((start, end, feature["uri"]))
    if not links:
        return text
    data, out, at = text.encode("utf-8"), [], 0
    for start, end, uri in sorted(links):
        if start < at or end > len(data):
            continue  # overlapping or out of range: keep the text as written
        out += [data[at:start], uri.encode("utf-8")]
        at = end
    out.append(data[at:])
    return b"".join(out).decode("utf-8", errors="replace")


class BlueskyTimeline:
    def __init__(self, handle: str | None, *, api_url: str | None = None, say: Callable[[str], None] = print):
        actor = clean_handle(handle)
        self.say = say
        self.appview = Server(api_url or APPVIEW, "the Bluesky AppView", say)
        profile = self._xrpc(self.appview, "app.bsky.actor.getProfile", {"actor": actor}, actor)
        if not isinstance(profile, dict) or not DID.fullmatch(str(profile.get("did"))):
            raise UserError(f"{self.appview.name} answered the profile of {actor} without a DID: check fetch.api_url")
        self.did = profile["did"]
        self.name = f"@{profile.get('handle') or actor}"
        self.origin = f"bluesky:{self.did}"
        count = profile.get("postsCount")
        self.post_count = count if isinstance(count, int) else None
        self.query: dict = {}  # the filters apply to what is kept, not to what is asked for
        self.cap = None

    def pages(self, since_id: str | None, resume: str | None) -> Iterator[Page]:
        cursor = resume
        while True:
            params = {"actor": self.did, "limit": PAGE_SIZE, "filter": "posts_with_replies", "cursor": cursor}
            body = self._xrpc(self.appview, "app.bsky.feed.getAuthorFeed", params, self.name)
            feed = body.get("feed") if isinstance(body, dict) else None
            if not isinstance(feed, list):
                raise UserError(f"{self.appview.name} sent a feed of {self.name} without `feed`: check fetch.api_url")
            cursor = body.get("cursor") if isinstance(body.get("cursor"), str) else None
            posts = [post for post in map(self._feed_post, feed) if post is not None]
            if posts:
                yield Page(posts, resume=cursor)
            oldest = min((id_order(post.id) for post in posts), default=None)
            if cursor is None or not feed or (since_id is not None and oldest and oldest <= id_order(since_id)):
                return

    def history(self, have: int, resume: str | None) -> Iterator[Page] | None:
        if self.post_count is None or have >= self.post_count:
            return None
        return self._repository_pages(have, resume)

    def missing(self, received: int, from_scratch: bool) -> None:
        return None

    def _repository_pages(self, have: int, resume: str | None) -> Iterator[Page]:
        pds = Server(self._pds(), f"the PDS of {self.name}", self.say)
        self.say(
            f"the author feed of {self.name} gave {have:,} of its {self.post_count:,} posts: "
            f"reading the rest from its repository on {pds.base_url}"
        )
        cursor = resume
        while True:
            params = {"repo": self.did, "collection": "app.bsky.feed.post", "limit": PAGE_SIZE, "cursor": cursor}
            body = self._xrpc(pds, "com.atproto.repo.listRecords", params, self.name)
            records = body.get("records") if isinstance(body, dict) else None
            if not isinstance(records, list):
                raise UserError(f"{pds.name} sent records without `records`: try again later")
            if not records:
                return
            cursor = body.get("cursor") if isinstance(body.get("cursor"), str) else None
            yield Page([self._record_post(record) for record in records], resume=cursor)
            if cursor is None or len(records) < PAGE_SIZE:  # a short page is the repository's last
                return

    def _pds(self) -> str:
        """The PDS address from the account's DID document (did:plc from the PLC directory, did:web from its host)."""
        if self.did.startswith("did:plc:"):
            server, path = Server(PLC_DIRECTORY, "the PLC directory", self.say), f"/{self.did}"
        elif self.did.startswith("did:web:"):
            host = self.did.removeprefix("did:web:").replace("%3A", ":")
            scheme = "http" if host.split(":")[0] == "localhost" else "https"  # the spec allows localhost in tests
            server, path = Server(f"{scheme}://{host}", f"the DID host {host}", self.say), "/.well-known/did.json"
        else:
            raise UserError(f"{self.did} uses a DID method AT Protocol does not support: {HANDLE_FIX}")
        response = server.get(path)
        document = server.json(response, "the DID document") if response.status_code == 200 else None
        services = document.get("service") if isinstance(document, dict) else None
        for service in services if isinstance(services, list) else []:
            if (
                isinstance(service, dict)
                and str(service.get("id", "")).endswith("#atproto_pds")
                and service.get("type") == "AtprotoPersonalDataServer"
                and isinstance(service.get("serviceEndpoint"), str)
            ):
                return service["serviceEndpoint"]
        raise UserError(f"the DID document of {self.did} names no PDS ({server.name} answered {response.status_code})")

    def _feed_post(self, item: object) -> Post | None:
        try:
            post, reason = item["post"], item.get("reason") or {}
            record = post["record"]
            if reason.get("$type") == REPOST:
                uri = reason.get("uri")
                post_id = record_id(uri) if isinstance(uri, str) else time_id(reason["indexedAt"])
                created, repost = reason["indexedAt"], True
            elif reason or post["author"]["did"] != self.did:
                return None  # a pinned post shown again, or someone else's post: not this account's timeline
            else:
                post_id, created, repost = record_id(post["uri"]), record["createdAt"], False
            text = expand_links(record["text"], record.get("facets"))
            reply = "reply" in record
            return make_post(
                id=post_id,
                created_at=created,
                text=text,
                source="bluesky",
                origin=self.origin,
                retweet=repost,
                reply=reply,
            )
        except (KeyError, TypeError, AttributeError, ValueError) as error:
            raise self._malformed("a feed item", error) from None

    def _record_post(self, record: object) -> Post:
        try:
            value = record["value"]
            text = expand_links(value["text"], value.get("facets"))
            return make_post(
                id=record_id(record["uri"]),
                created_at=value["createdAt"],
                text=text,
                source="bluesky",
                origin=self.origin,
                reply="reply" in value,
            )
        except (KeyError, TypeError, AttributeError, ValueError) as error:
            raise self._malformed("a repository record", error) from None

    def _malformed(self, what: str, error: Exception) -> UserError:
        return UserError(f"malformed {what} of {self.name} ({type(error).__name__}: {error}): try again later")

    def _xrpc(self, server: Server, method: str, params: dict, actor: str) -> object:
        response = server.get(f"/xrpc/{method}", params)
        body = server.json(response, f"the answer to {method}")
        if response.status_code == 200:
            return body
        error = body.get("error") if isinstance(body, dict) else None
        message = body.get("message") if isinstance(body, dict) else None
        detail = f"{response.status_code} {error}: {message}" if error else str(response.status_code)
        if response.status_code in (401, 403) or error == "AuthRequired":
            raise UserError(
                f"{server.name} refuses anonymous reads ({detail}): point fetch.api_url at a public AppView "
                f"(the default is {APPVIEW})"
            )
        if error in ("AccountTakedown", "AccountDeactivated", "RepoTakendown", "RepoDeactivated"):
            raise UserError(f"the Bluesky account {actor} cannot be read ({detail}): {HANDLE_FIX}")
        if response.status_code == 400 and params.get("cursor") and error in ("InvalidRequest", None):
            raise ResumeRefused(f"{server.name} refused the cursor to go on reading {actor} from ({detail})")
        if response.status_code == 400 and error in ("InvalidRequest", "RepoNotFound", None):
            raise UserError(f"no Bluesky account {actor} ({detail}): {HANDLE_FIX}")
        raise UserError(f"{server.name} answered {detail} to {method} for {actor}: try again later")
