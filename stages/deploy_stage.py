"""DVC stage `deploy`: push the image to ECR and roll it out on ECS Fargate, as params.yaml `deploy:` asks.

    python stages/deploy_stage.py build/image build/image.json build/deploy.json

(Not stages/deploy.py: run as a script, that name would hide the `deploy` package from every stage script.)

Reads the OCI layout and the record the image stage wrote; writes a small record of the deployment (cluster,
service, task definition, image, model version, endpoint). AWS credentials and region come from the standard
AWS chain. Changes only what differs: a second run with the same inputs makes no mutating AWS call.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from deploy import run
from tweetbot import params
from tweetbot.runtime.errors import exit_on_user_error


@exit_on_user_error
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("layout", type=Path, help="the image as an OCI layout")
    parser.add_argument("image", type=Path, help="the image record (build/image.json)")
    parser.add_argument("out", type=Path, help="the deployment record to write (build/deploy.json)")
    args = parser.parse_args()
    run.deploy(params.load("deploy"), args.layout, args.image, args.out)


if __name__ == "__main__":
    main()
