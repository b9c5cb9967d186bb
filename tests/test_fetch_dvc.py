"""`fetch.source: mastodon` and `bluesky` end to end: the real fetch and preprocess stages through `dvc repro` in a
throwaway project, the servers answered over real HTTP on 127.0.0.1 (`fetch.api_url`) by the same fakes the
source tests use (tests/test_fetch_mastodon.py, tests/test_fetch_bluesky.py)."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
import yaml

from tests.pipeline import dvc, make_project
from tests.test_fetch_bluesky import DID, FakeBluesky
from tests.test_fetch_mastodon import FakeMastodon, status_id, timeline
from tweetbot.posts import read_posts


class Routes:
    """What the fakes register on (respx's `router.get(url).mock(side_effect=...)`), served by a real server."""

    def __init__(self):
        self.handlers: dict[str, object] = {}

    def get(self, url: str):
        routes = self

        class Route:
            def mock(self, side_effect):
                routes.handlers[httpx.URL(url).path] = side_effect

        return Route()


@pytest.fixture
def local_server():
    """An HTTP server on 127.0.0.1 answering each path with the fake registered for it (404 otherwise)."""
    routes = Routes()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            url = f"http://127.0.0.1:{server.server_port}{self.path}"
            handler = routes.handlers.get(httpx.URL(url).path)
            response = handler(httpx.Request("GET", url)) if handler else httpx.Response(404, json={"error": "?"})
            self.send_response(response.status_code)
            for key, value in response.headers.items():
                if key.lower() not in ("content-length", "transfer-encoding"):
                    self.send_header(key, value)
            body = response.read()
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield routes, f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()
    thread.join(timeout=10)


def set_fetch(root, section: dict) -> None:
    document = yaml.safe_load((root / "params.yaml").read_text())
    document["fetch"] = section
    (root / "params.yaml").write_text(yaml.safe_dump(document))


def test_mastodon_through_dvc_repro_then_only_newer_posts(local_server, tmp_path):
    routes, url = local_server
    mastodon = FakeMastodon(routes, timeline(1, 100), base=url)
    root = make_project(tmp_path)
    set_fetch(root, {"source": "mastodon", "handle": "alice@mastodon.example", "api_url": url})

    dvc(root, "repro", "preprocess")

    assert len(read_posts(root / "data/raw/tweets.jsonl")) == 100 and (root / "data/processed/train.npy").exists()
    assert len(mastodon.requests) == 3
    mastodon.statuses = timeline(1, 110)
    mastodon.requests.clear()

    dvc(root, "repro", "-f", "fetch")

    assert mastodon.requests == [{"limit": "40", "since_id": status_id(100)}]
    assert len(read_posts(root / "data/raw/tweets.jsonl")) == 110


def test_bluesky_through_dvc_repro(local_server, tmp_path):
    routes, url = local_server
    bluesky = FakeBluesky(routes, last=250, appview=url)
    root = make_project(tmp_path)
    set_fetch(root, {"source": "bluesky", "handle": "alice.bsky.social", "api_url": url})

    dvc(root, "repro", "preprocess")

    posts = read_posts(root / "data/raw/tweets.jsonl")
    assert len(posts) == 250 and {post.origin for post in posts} == {f"bluesky:{DID}"}
    assert len(bluesky.feed_requests) == 3 and (root / "data/processed/stats.json").exists()
