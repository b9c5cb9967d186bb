"""Where the runtime finds the bundle in the repository's workspace (in the image, TWEETBOT_BUNDLE says)."""

from pathlib import Path

BUNDLE = Path("models/export")
