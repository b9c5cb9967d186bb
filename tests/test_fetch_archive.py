"""The X archive source: small archives in the real shape (one file, split parts, zip) and broken ones."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest

from tweetbot import fetch
from tweetbot.params import FetchParams
from tweetbot.runtime.errors import UserError
from tweetbot.sources.archive import read_archive

CREATED = [
    "Sun Jul 01 23:04:00 +0000 2018",
    "Sun Jul 01 21:06:07 +0000 2018",
    "Wed Oct 11 15:31:37 +0000 2017",
]


def archived(number: int, text: str | None = None, reply: bool = False) -> dict:
    """One post as `data/tweets.js` holds it: every number a string, the text in full_text."""
    post_id = str(1013558869728071685 - number * 10**9)
    tweet = {
        "edit_info": {"initial": {"editTweetIds": [post_id], "editsRemaining": "5", "isEditEligible": True}},
        "retweeted": False,
        "source": '<a href="https://about.twitter.com/products/tweetdeck" rel="nofollow">TweetDeck</a>',
        "entities": {"hashtags": [], "symbols": [], "user_mentions": [], "urls": []},
        "display_text_range": ["0", "140"],
        "favorite_count": "12",
        "id_str": post_id,
        "truncated": False,
        "retweet_count": "3",
        "id": post_id,
        "created_at": CREATED[number % len(CREATED)],
        "favorited": False,
        "full_text": text or f"post {number} &amp; more",
        "lang": "en",
    }
    if reply:
        tweet |= {"in_reply_to_status_id_str": "1", "in_reply_to_status_id": "1", "in_reply_to_user_id": "2"}
        tweet |= {"in_reply_to_user_id_str": "2", "in_reply_to_screen_name": "astro_ricky"}
    return {"tweet": tweet}


def part_text(part: int, posts: list[dict]) -> str:
    return f"window.YTD.tweets.part{part} = " + json.dumps(posts, indent=2)


def sample_posts(first: int, count: int) -> list[dict]:
    return [
        archived(n, text=f"RT @NASA_Johnson: shared {n}" if n % 5 == 0 else None, reply=n % 4 == 0)
        for n in range(first, first + count)
    ]


def unpacked_archive(root: Path) -> Path:
    """An archive unpacked into `root`: three parts of 4 + 3 + 2 posts, and files that are not posts."""
    data = root / "data"
    data.mkdir(parents=True)
    (data / "tweets.js").write_text(part_text(0, sample_posts(0, 4)))
    (data / "tweets-part1.js").write_text(part_text(1, sample_posts(4, 3)))
    (data / "tweets-part2.js").write_text(part_text(2, sample_posts(7, 2)))
    (data / "deleted-tweets.js").write_text(part_text(0, sample_posts(100, 1)))
    (data / "account.js").write_text('window.YTD.account.part0 = [{"account": {"username": "me"}}]')
    return root


def zipped(folder: Path, target: Path) -> Path:
    with zipfile.ZipFile(target, "w") as archive:
        for file in sorted(folder.rglob("*")):
            archive.write(file, file.relative_to(folder).as_posix())
    return target


def ids(posts) -> list[str]:
    return [post.id for post in posts]


def test_single_file_in_the_real_shape(tmp_path):
    tweets = tmp_path / "tweets.js"
    tweets.write_text(part_text(0, sample_posts(0, 6)))
    out = tmp_path / "raw" / "tweets.jsonl"

    fetch.run(FetchParams(source="archive", path=str(tweets)), out)

    rows = [json.loads(line) for line in out.read_text().splitlines()]
    newest_first = sorted(rows, key=lambda row: (row["created_at"], int(row["id"])), reverse=True)
    assert [row["id"] for row in rows] == [row["id"] for row in newest_first]
    by_text = {row["text"]: row for row in rows}
    assert by_text["RT @NASA_Johnson: shared 5"]["is_retweet"] is True
    assert by_text["post 4 &amp; more"]["is_reply"] is True  # in_reply_to_status_id_str; entities stay escaped
    assert by_text["post 1 &amp; more"] == {
        "id": str(1013558869728071685 - 10**9),
        "created_at": "2018-07-01T21:06:07Z",
        "text": "post 1 &amp; more",
        "is_retweet": False,
        "is_reply": False,
        "source": "archive",
        "origin": f"archive:{tweets}",
    }


def test_split_parts_from_the_folder_from_its_data_folder_and_from_one_part(tmp_path):
    root = unpacked_archive(tmp_path / "archive")
    every_part = sample_posts(0, 9)

    for path in (root, root / "data", root / "data" / "tweets-part1.js"):
        posts = read_archive(path)
        assert sorted(ids(posts)) == sorted(post["tweet"]["id_str"] for post in every_part), path


def test_the_zip_itself(tmp_path):
    archive = zipped(unpacked_archive(tmp_path / "archive"), tmp_path / "twitter-2024-01-01.zip")
    out = tmp_path / "tweets.jsonl"

    fetch.run(FetchParams(source="archive", path=str(archive), include_retweets=False), out)

    posts = [json.loads(line) for line in out.read_text().splitlines()]
    expected = [post["tweet"] for post in sample_posts(0, 9) if not post["tweet"]["full_text"].startswith("RT @")]
    assert sorted(post["id"] for post in posts) == sorted(tweet["id_str"] for tweet in expected)


def test_an_archive_from_before_2020_without_the_tweet_wrapper(tmp_path):
    old = tmp_path / "tweet.js"
    old.write_text("window.YTD.tweet.part0 = " + json.dumps([post["tweet"] for post in sample_posts(0, 3)]))
    assert len(read_archive(old)) == 3


@pytest.fixture
def previous_output(tmp_path) -> Path:
    """An output from an earlier fetch that a failing one must leave exactly as it was."""
    out = tmp_path / "raw" / "tweets.jsonl"
    tweets = tmp_path / "earlier.js"
    tweets.write_text(part_text(0, sample_posts(0, 3)))
    fetch.run(FetchParams(source="archive", path=str(tweets)), out)
    return out


def broken_truncated(tmp_path: Path) -> Path:
    path = tmp_path / "tweets.js"
    path.write_text(part_text(0, sample_posts(0, 5))[:-300])
    return path


def broken_no_equals(tmp_path: Path) -> Path:
    path = tmp_path / "tweets.js"
    path.write_text(json.dumps(sample_posts(0, 2)).replace("=", ""))
    return path


def broken_missing_text(tmp_path: Path) -> Path:
    posts = sample_posts(0, 3)
    del posts[1]["tweet"]["full_text"]
    path = tmp_path / "tweets.js"
    path.write_text(part_text(0, posts))
    return path


def broken_bad_date(tmp_path: Path) -> Path:
    posts = sample_posts(0, 2)
    posts[0]["tweet"]["created_at"] = "yesterday"
    path = tmp_path / "tweets.js"
    path.write_text(part_text(0, posts))
    return path


def broken_zip_without_tweets(tmp_path: Path) -> Path:
    folder = tmp_path / "other"
    (folder / "data").mkdir(parents=True)
    (folder / "data" / "account.js").write_text('window.YTD.account.part0 = [{"account": {}}]')
    return zipped(folder, tmp_path / "archive.zip")


def broken_truncated_zip(tmp_path: Path) -> Path:
    archive = zipped(unpacked_archive(tmp_path / "archive"), tmp_path / "archive.zip")
    archive.write_bytes(archive.read_bytes()[:200])  # a download cut short
    return archive


def broken_truncated_part_in_zip(tmp_path: Path) -> Path:
    root = unpacked_archive(tmp_path / "archive")
    part = root / "data" / "tweets-part2.js"
    part.write_text(part.read_text()[:-40])
    return zipped(root, tmp_path / "archive.zip")


@pytest.mark.parametrize(
    ("make_broken", "problem"),
    [
        (broken_truncated, r"tweets.js is truncated or damaged \(invalid JSON at line \d+"),
        (broken_no_equals, r"tweets.js has no `=`"),
        (broken_missing_text, r"tweets.js: post 2 has no full_text"),
        (broken_bad_date, r"tweets.js: post 1: created_at 'yesterday' is neither"),
        (broken_zip_without_tweets, r"archive.zip holds no data/tweets.js"),
        (broken_truncated_zip, r"archive.zip is not a valid zip file"),
        (broken_truncated_part_in_zip, r"archive.zip:data/tweets-part2.js is truncated or damaged"),
    ],
)
def test_a_broken_archive_is_one_line_naming_the_file_and_the_output_stays(
    tmp_path, previous_output, make_broken, problem
):
    before = previous_output.read_bytes()
    state_before = fetch.state_path(previous_output).read_bytes()
    broken = make_broken(tmp_path)

    with pytest.raises(UserError, match=problem) as raised:
        fetch.run(FetchParams(source="archive", path=str(broken)), previous_output)

    assert "\n" not in str(raised.value)
    assert previous_output.read_bytes() == before
    assert fetch.state_path(previous_output).read_bytes() == state_before


def test_a_missing_archive_or_path_is_one_line(tmp_path):
    with pytest.raises(UserError, match="not found: set fetch.path"):
        fetch.run(FetchParams(source="archive", path=str(tmp_path / "nowhere.zip")), tmp_path / "out.jsonl")
    with pytest.raises(UserError, match="fetch.path is not set"):
        fetch.run(FetchParams(source="archive"), tmp_path / "out.jsonl")
    with pytest.raises(UserError, match="holds no tweets.js"):
        fetch.run(FetchParams(source="archive", path=str(tmp_path)), tmp_path / "out.jsonl")
