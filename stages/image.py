"""DVC stage `image`: build the service's container image with the exported bundle baked in.

    python stages/image.py models/export build/image build/image.json

Reads the `image:` section of params.yaml; needs docker (with BuildKit), podman or buildah. Writes the image
as an OCI image layout (build/image/) and its description (build/image.json): see deploy/image.py.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from deploy import image
from tweetbot import params
from tweetbot.runtime.errors import exit_on_user_error


@exit_on_user_error
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundle", type=Path, help="the exported bundle folder")
    parser.add_argument("layout", type=Path, help="the folder for the OCI image layout")
    parser.add_argument("record", type=Path, help="the JSON file describing the image")
    args = parser.parse_args()
    record = image.build(params.load("image"), args.bundle, args.layout, args.record)
    print(
        f"{record['name']}:{record['tag']} {record['digest']}: {record['size_bytes'] / 1e6:.0f} MB, "
        f"{record['compressed_bytes'] / 1e6:.0f} MB compressed, model {record['model_version']}"
    )


if __name__ == "__main__":
    main()
