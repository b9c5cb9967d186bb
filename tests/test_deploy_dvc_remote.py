"""The S3 DVC remote on a moto server: push, lose the cache and the outputs, pull them back byte for byte.

The remote is configured exactly as README tells a user to (`dvc remote add -d s3 s3://BUCKET/PREFIX`); DVC's
S3 client finds the moto server through AWS_ENDPOINT_URL, as it finds the real S3 through the standard chain.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.aws import counting_session, moto_server
from tests.conftest import REPO

DVC = REPO / ".venv" / "bin" / "dvc"
BUCKET, PREFIX = "tweetbot-dvc", "team/tweetbot"
# A stand-in for train + export: a checkpoint file and a bundle folder computed from the posts.
TRAIN = """
import hashlib, pathlib, sys
posts = pathlib.Path("data/raw/posts.jsonl").read_bytes()
seed = hashlib.sha256(posts).digest()
pathlib.Path("models/bundle").mkdir(parents=True, exist_ok=True)
pathlib.Path("models/checkpoint.msgpack").write_bytes(seed * 40000)
pathlib.Path("models/bundle/weights.bin").write_bytes(bytes(reversed(seed)) * 30000)
pathlib.Path("models/bundle/manifest.json").write_text('{"version": "%s"}' % seed.hex()[:12])
"""


@pytest.fixture(scope="module")
def moto_url():
    with moto_server() as url:
        yield url


def dvc(cwd: Path, *args: str) -> str:
    result = subprocess.run([str(DVC), *args], cwd=cwd, capture_output=True, text=True, env=os.environ)
    assert result.returncode == 0, f"dvc {' '.join(args)}:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def snapshot(root: Path) -> dict[str, str]:
    tracked = [root / "data" / "raw", root / "models"]
    return {
        str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
        for folder in tracked
        for path in sorted(folder.rglob("*"))
        if path.is_file() and path.name != ".gitignore"
    }


def test_push_then_pull_into_an_empty_cache_restores_every_output_byte_for_byte(tmp_path, moto_url):
    s3 = counting_session()[0].client("s3")
    s3.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": s3.meta.region_name})
    s3.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})

    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    dvc(tmp_path, "init", "-q")
    (tmp_path / "data" / "raw").mkdir(parents=True)
    (tmp_path / "data" / "raw" / "posts.jsonl").write_text(
        "".join(f'{{"id": "{n}", "text": "post number {n}"}}\n' for n in range(2000))
    )
    (tmp_path / "train.py").write_text(TRAIN)
    (tmp_path / "dvc.yaml").write_text(
        "stages:\n  train:\n"
        f"    cmd: {sys.executable} train.py\n"
        "    deps: [train.py, data/raw/posts.jsonl]\n"
        "    outs: [models/checkpoint.msgpack, models/bundle]\n"
    )
    dvc(tmp_path, "add", "data/raw")
    dvc(tmp_path, "remote", "add", "-d", "s3", f"s3://{BUCKET}/{PREFIX}")
    dvc(tmp_path, "repro")
    before = snapshot(tmp_path)
    assert len(before) == 4
    dvc(tmp_path, "push")

    versioning = s3.get_bucket_versioning(Bucket=BUCKET)["Status"]
    stored = s3.list_object_versions(Bucket=BUCKET, Prefix=PREFIX)["Versions"]
    assert versioning == "Enabled"
    assert len(stored) >= len(before) and all(version["VersionId"] != "null" for version in stored)

    shutil.rmtree(tmp_path / ".dvc" / "cache")
    shutil.rmtree(tmp_path / "models")
    shutil.rmtree(tmp_path / "data" / "raw")
    dvc(tmp_path, "pull")
    assert snapshot(tmp_path) == before
    assert "up to date" in dvc(tmp_path, "status")
    assert "up to date" in dvc(tmp_path, "push").lower()
