"""The README's commands as a user runs them: on a `git clone` of the working tree, in a shell, in the README's order.

Each ```bash block of README.md is listed in BLOCKS with the journey test that runs it (its lines as written,
with only the substitutions a shared test machine needs: a free port for 8080 and 5000, a bucket name), and
the lines no test can run here, with the reason. test_every_readme_command_block_is_covered fails when the
README gains a block, or changes one, that BLOCKS does not list.

The clone is of the working tree, uncommitted edits included (tests/pipeline.py clone_working_tree). The
default suite's journeys train tiny models (TINY, written into the clone's params.yaml and committed, as a user
edits it); the slow ones run the README's own settings, a container builder and a moto server. Every command
has a time limit, and a server a journey starts is stopped by its process group.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import boto3
import pytest
import yaml

from tests.aws import FAKE_AWS_ENV
from tests.live_service import free_port, is_ready
from tests.pipeline import clone_working_tree, source_tree, stages_run
from tests.test_image_build import LOCAL_BASE, engine  # noqa: F401 (engine: the container builder fixture)

COMMAND_TIMEOUT_S = 1200  # a whole `make demo` on a busy 2-core machine fits
READY_TIMEOUT_S = 300

# The clone's params for the default suite: a model that trains in seconds and still passes the export gate.
TINY = {
    "train": {"rnn_size": 32, "num_layers": 1, "seq_length": 32, "batch_size": 16, "max_steps": 30,
              "eval_every": 10, "learning_rate": 0.02},
    "export": {"min_improvement_bpc": 0.0},
    "evaluate": {"samples": 16, "max_length": 100},
}  # fmt: skip
# A journey reaches no AWS but the moto server: none of this machine's AWS settings or credentials come through.
NO_AWS_FILES = {name: FAKE_AWS_ENV[name] for name in ("AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE")}
NO_AWS_FILES["AWS_EC2_METADATA_DISABLED"] = "true"

X_TOKEN_LINE = "export X_BEARER_TOKEN=..."
SAMPLE_LINE = 'tweetbot sample --n 5 --temperature 0.8 --prime "Mars"'
REAL_AWS_LINE = "export AWS_PROFILE=my-profile AWS_REGION=eu-west-1"
S3_VERSIONING_LINE = "aws s3api put-bucket-versioning --bucket MY-BUCKET --versioning-configuration Status=Enabled"
DOCKER_RUN_LINE = (
    """docker run --rm -p 8080:8080 tweetbot:$(python -c "import json; """
    """print(json.load(open('build/image.json'))['tag'])")"""
)
GENERATE_LINE = (
    """curl -X POST localhost:8080/generate -H 'Content-Type: application/json' -d '{"prime": "Mars", """
    """"temperature": 0.8, "top_k": 20, "top_p": 0.95, "max_length": 140, "n": 3, "seed": 1}'"""
)
DEPLOY_JOURNEY = "test_make_deploy_twice_on_moto_with_a_builder"


@dataclass(frozen=True)
class Block:
    """One ```bash block of the README: its section, its command lines (comments dropped), the journey test that
    runs it, and the lines that test cannot run here as written, with the reason and what it runs instead."""

    section: str
    commands: tuple[str, ...]
    test: str
    not_run: dict[str, str] = field(default_factory=dict)


BLOCKS = [
    Block("Set-up", ("make demo", "make test"), "test_readme_setup_make_demo_then_make_test_then_make_serve"),
    Block(
        "Your own account",
        ("dvc repro",),
        "test_dvc_repro_runs_the_experiment_pipeline_and_builds_nothing",
        {"dvc repro": "run with the demo source: Mastodon is on the internet (the Mastodon and Bluesky sources "
         "through `dvc repro`: tests/test_fetch_dvc.py, against a server on 127.0.0.1)"},
    ),
    Block(
        "Your own account",
        (X_TOKEN_LINE, "dvc repro"),
        "test_dvc_repro_runs_the_experiment_pipeline_and_builds_nothing",
        {X_TOKEN_LINE: "needs a real X API bearer token and x.com: the clone fetches the demo source instead (the "
         "X API path is tests/test_fetch_x_api.py: tweepy's real client, HTTP answered by `responses`)"},
    ),
    Block(
        "Parameters",
        ("dvc exp run -S train.rnn_size=120", "dvc exp show", "dvc exp apply <name> && make deploy"),
        "test_exp_run_is_listed_by_exp_show_and_builds_nothing",
        {"dvc exp apply <name> && make deploy": f"run by the slow {DEPLOY_JOURNEY}"},
    ),
    Block(
        "Training",
        (SAMPLE_LINE, "dvc exp show", "make plots"),
        "test_readme_training_commands",
    ),
    Block(
        "The service",
        ("curl localhost:8080/", "curl 'localhost:8080/?temperature=0.7&prime=Mars&seed=1'", GENERATE_LINE,
         "curl -N 'localhost:8080/stream?prime=Mars'"),
        "test_make_serve_answers_the_readme_curls",
    ),
    Block(
        "The container image",
        (DOCKER_RUN_LINE, "curl localhost:8080/"),
        DEPLOY_JOURNEY,
        {DOCKER_RUN_LINE: "run with `--network host --env PORT=...` for `-p 8080:8080`: the tests' private dockerd "
         "has no bridge network"},
    ),
    Block(
        "Deploy to AWS",
        (REAL_AWS_LINE, "dvc repro deploy/dvc.yaml:image", "tweetbot plan", "make deploy", "tweetbot destroy"),
        DEPLOY_JOURNEY,
        {REAL_AWS_LINE: "real AWS: the journey exports the moto server's fake credentials (the moto block)"},
    ),
    Block(
        "Deploy to AWS",
        (S3_VERSIONING_LINE, "dvc remote add -d s3 s3://MY-BUCKET/tweetbot",
         'git add .dvc/config && git commit -m "DVC remote: S3"'),
        DEPLOY_JOURNEY,
        {S3_VERSIONING_LINE: "run against the moto server's bucket where the AWS CLI is installed (it is not a "
         "project dependency)"},
    ),
    Block(
        "Deploy to AWS",
        ("make moto",
         "export AWS_ENDPOINT_URL=http://127.0.0.1:5000 AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing "
         "AWS_REGION=eu-west-1",
         """.venv/bin/python -c "import boto3; boto3.client('s3').create_bucket(Bucket='tweetbot-dvc', """
         "CreateBucketConfiguration={'LocationConstraint': 'eu-west-1'})\"",
         ".venv/bin/dvc remote add --local -d moto s3://tweetbot-dvc/tweetbot",
         "make deploy"),
        DEPLOY_JOURNEY,
    ),
]  # fmt: skip


# --- the README's blocks ---


def without_comment(line: str) -> str:
    """`line` up to a shell comment: a `#` at its start or after a blank, outside quotes."""
    quote = None
    for index, char in enumerate(line):
        if quote:
            quote = None if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "#" and (index == 0 or line[index - 1].isspace()):
            return line[:index]
    return line


def readme_blocks(text: str) -> list[tuple[str, tuple[str, ...]]]:
    """(section, command lines) of each ```bash block; a line continued with `\\` is one command."""
    blocks, section = [], ""
    for match in re.finditer(r"^## ([^\n]+)$|^```bash\n(.*?)^```$", text, re.MULTILINE | re.DOTALL):
        if match.group(1):
            section = match.group(1).strip()
            continue
        lines = (" ".join(without_comment(line).split()) for line in match.group(2).replace("\\\n", " ").splitlines())
        blocks.append((section, tuple(line for line in lines if line)))
    return blocks


def test_every_readme_command_block_is_covered():
    readme = readme_blocks((source_tree() / "README.md").read_text())
    listed = [(block.section, block.commands) for block in BLOCKS]
    uncovered = [block for block in readme if block not in listed]
    assert not uncovered, f"README blocks no journey test runs (add them to BLOCKS with their test): {uncovered}"
    stale = [block for block in listed if block not in readme]
    assert not stale, f"BLOCKS lists blocks the README no longer has: {stale}"
    for block in BLOCKS:
        assert callable(globals().get(block.test)) and block.test.startswith("test_"), block.test
        assert set(block.not_run) <= set(block.commands), block.not_run


def test_readme_blocks_parse_continuations_and_comments():
    text = "## A\n```bash\nmake x   # a comment\ncurl 'a#b' \\\n     -d 1\n```\n```yaml\nno: 1\n```\n"
    assert readme_blocks(text) == [("A", ("make x", "curl 'a#b' -d 1"))]


def block(section: str, first: str) -> Block:
    """The block of `section` whose first command is `first`."""
    (found,) = [b for b in BLOCKS if b.section == section and b.commands[0] == first]
    return found


# --- running commands in a clone as its user does ---


def user_env(root: Path, **extra: str) -> dict[str, str]:
    """The environment of a user with the clone's venv active (README, Set-up), and nothing of this test run.
    No AWS setting or credential of this machine comes through: a journey reaches no AWS but the moto server."""
    env = {
        name: value
        for name, value in os.environ.items()
        if name not in ("PYTHONPATH", "VIRTUAL_ENV", "UV_PROJECT_ENVIRONMENT") and not name.startswith("AWS_")
    }
    env.update(PATH=f"{root / '.venv/bin'}{os.pathsep}{env['PATH']}", VIRTUAL_ENV=str(root / ".venv"))
    return {**env, **NO_AWS_FILES, "DVC_NO_ANALYTICS": "1", **extra}


def sh(root: Path, script: str, *, check: bool = True, stdin: str | None = None, **env: str):
    """Run `script` in bash in `root` (stopping at the first failing line); its output, or a failure naming it."""
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=root,
        env=user_env(root, **env),
        input=stdin,
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT_S,
    )
    if check and done.returncode != 0:
        raise AssertionError(f"`{script}` failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return done


@contextlib.contextmanager
def background(root: Path, command: str, log: Path, **env: str) -> Iterator[subprocess.Popen]:
    """`command` running in bash in `root`, in a process group of its own that is stopped at the end."""
    with log.open("w") as out:
        process = subprocess.Popen(
            ["bash", "-c", command], cwd=root, env=user_env(root, **env), stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    try:
        yield process
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def wait_until(ready, process: subprocess.Popen, log: Path, what: str, timeout_s: float = READY_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not ready():
        if process.poll() is not None:
            raise AssertionError(f"{what} exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} was not ready after {timeout_s} s:\n{log.read_text()[-3000:]}")
        time.sleep(0.3)


def get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=60) as response:
        return json.loads(response.read())


def set_params(root: Path, sections: dict) -> None:
    document = yaml.safe_load((root / "params.yaml").read_text())
    for name, values in sections.items():
        document[name].update(values)
    (root / "params.yaml").write_text(yaml.safe_dump(document, sort_keys=False))


def commit(root: Path, message: str) -> None:
    sh(root, f"git add -A && git -c user.name=t -c user.email=t@t commit -qm '{message}'")


def experiment_stages(root: Path) -> list[str]:
    return list(yaml.safe_load((root / "dvc.yaml").read_text())["stages"])


def assert_built_nothing(root: Path, result: subprocess.CompletedProcess) -> None:
    """No stage of the delivery pipeline ran, and nothing it writes exists. (`dvc exp run` checks out every
    output of the repository first, which leaves an empty build/ where there is nothing to check out.)"""
    ran = stages_run(result)
    assert not [name for name in ran if name.startswith("deploy/") or name in ("image", "deploy")], ran
    written = ("build/image", "build/image.json", "build/deploy.json", "deploy/dvc.lock")
    assert not [name for name in written if (root / name).exists()]


def timed(label: str, started: float) -> None:
    print(f"\n{label}: {time.monotonic() - started:.0f} s")


# --- the default suite: the experiment pipeline and the service, with tiny settings ---


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A clone of the working tree with its venv (`uv sync --frozen`, the lock's versions) and tiny train
    settings committed, after its first `dvc repro`: (root, that repro's result)."""
    started = time.monotonic()
    root = clone_working_tree(tmp_path_factory.mktemp("journey") / "tweetbot")
    uv = shutil.which("uv")
    assert uv, "uv is not on PATH: run `make install` first"
    sh(root, f"{uv} sync --frozen --quiet")  # `make install` less bytecode compilation and the workflow linter
    set_params(root, TINY)
    commit(root, "tiny settings for the journey tests")
    first = sh(root, block("Your own account", X_TOKEN_LINE).commands[1])
    timed("clone, venv and a first `dvc repro` (tiny settings)", started)
    return root, first


def test_dvc_repro_runs_the_experiment_pipeline_and_builds_nothing(project):
    root, first = project
    assert stages_run(first) == experiment_stages(root), first.stdout
    assert_built_nothing(root, first)
    manifest = json.loads((root / "models/export/manifest.json").read_text())
    assert math.isfinite(manifest["metrics"]["val_loss"])
    again = sh(root, "dvc repro")  # README: "with nothing changed does nothing"
    assert stages_run(again) == [] and "up to date" in again.stdout, again.stdout


def test_exp_run_is_listed_by_exp_show_and_builds_nothing(project):
    root, _ = project
    run_line, show_line, _ = block("Parameters", "dvc exp run -S train.rnn_size=120").commands
    started = time.monotonic()
    ran = sh(root, run_line)
    timed(run_line, started)
    assert "train" in stages_run(ran) and set(stages_run(ran)) <= set(experiment_stages(root)), ran.stdout
    assert_built_nothing(root, ran)

    shown = json.loads(sh(root, "dvc exp show --json").stdout)
    experiments = [exp["revs"][0] for row in shown for exp in row.get("experiments") or []]
    (experiment,) = [
        exp for exp in experiments if exp["data"]["params"]["params.yaml"]["data"]["train"]["rnn_size"] == 120
    ]
    assert math.isfinite(experiment["data"]["metrics"]["dvclive/metrics.json"]["data"]["val_loss"])
    assert experiment["name"] in sh(root, show_line, COLUMNS="200").stdout


def test_readme_training_commands(project):
    root, _ = project
    sample_line, show_line, plots_line = block("Training", SAMPLE_LINE).commands
    sh(root, "dvc repro")  # whichever experiment the workspace holds, its outputs are there
    samples = sh(root, sample_line).stdout  # each sample, then an empty line (a sample may hold line breaks)
    assert samples.startswith("Mars") and samples.endswith("\n\n"), samples
    assert sum(text.startswith("Mars") for text in samples.split("\n\n")) >= 5, samples
    assert "workspace" in sh(root, show_line).stdout
    sh(root, plots_line.replace("make ", "make -o install ", 1))
    page = (root / "dvc_plots/index.html").read_text()
    assert "val_loss" in page and "vendor/" in page and (root / "dvc_plots/vendor").is_dir()


@pytest.fixture(scope="module")
def served(project, tmp_path_factory) -> Iterator[str]:
    """`make serve` on a free port in the clone; its URL once /readyz answers, stopped afterwards."""
    root, _ = project
    sh(root, "dvc repro")
    port = free_port()
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    started = time.monotonic()
    with background(root, f"make -o install serve PORT={port}", log) as server:
        url = f"http://127.0.0.1:{port}"
        wait_until(lambda: is_ready(url), server, log, "make serve")
        timed("`make serve` to ready", started)
        yield url


def test_make_serve_answers_the_readme_curls(project, served):
    root, _ = project
    assert isinstance(get_json(f"{served}/")["text"], str)
    if not shutil.which("curl"):
        pytest.skip("curl is not installed: GET / answered, the README's curl lines were not run")
    port = served.rsplit(":", 1)[1]
    get, get_with_params, post, stream = (
        command.replace("localhost:8080", f"127.0.0.1:{port}").replace("curl ", "curl -fsS --max-time 60 ", 1)
        for command in block("The service", "curl localhost:8080/").commands
    )
    assert isinstance(json.loads(sh(root, get).stdout)["text"], str)
    assert json.loads(sh(root, get_with_params).stdout)["text"].startswith("Mars")
    generated = json.loads(sh(root, post).stdout)
    assert len(generated["samples"]) == 3 and all(text.startswith("Mars") for text in generated["samples"]), generated
    events = sh(root, stream).stdout
    assert "data: " in events and "event: done" in events, events[-500:]


# --- the slow suite: the README's own settings, a container builder, a fake AWS ---


@pytest.mark.slow
def test_readme_setup_make_demo_then_make_test_then_make_serve(tmp_path):
    """The README's set-up on a fresh clone, with its own settings: `make demo` (install, the whole experiment
    pipeline, the summary), `make test` (here with one test file, not this suite again), then `make serve`."""
    root = clone_working_tree(tmp_path / "tweetbot")
    demo_line, test_line = block("Set-up", "make demo").commands
    started = time.monotonic()
    demo = sh(root, demo_line)
    timed(demo_line, started)
    assert stages_run(demo) == experiment_stages(root), demo.stdout
    assert_built_nothing(root, demo)
    assert "Exported model" in demo.stdout and "Samples" in demo.stdout, demo.stdout[-2000:]
    assert "\ue000" not in demo.stdout  # links are rendered as people read them, never as the raw link symbol

    tested = sh(root, test_line, PYTEST_ADDOPTS="tests/test_params.py")
    assert re.search(r"\d+ passed", tested.stdout) and "failed" not in tested.stdout, tested.stdout[-2000:]

    port = free_port()
    with background(root, "make serve", tmp_path / "serve.log", PORT=str(port)) as server:
        url = f"http://127.0.0.1:{port}"
        wait_until(lambda: is_ready(url), server, tmp_path / "serve.log", "make serve")
        assert isinstance(get_json(f"{url}/")["text"], str)


def answers(url: str) -> bool:
    """Whether an HTTP server answers at `url`, whatever its status."""
    try:
        urllib.request.urlopen(url, timeout=5).close()
    except urllib.error.HTTPError:
        return True
    except OSError:
        return False
    return True


def fake_aws(endpoint: str, service: str):
    return boto3.client(
        service, endpoint_url=endpoint, region_name="eu-west-1", aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )  # fmt: skip


@pytest.mark.slow
@pytest.mark.usefixtures("engine")  # a container builder: DOCKER_HOST names a private dockerd if need be
def test_make_deploy_twice_on_moto_with_a_builder(tmp_path):
    """README, "Try it without AWS", then "Deploy to AWS", "Parameters" (ship an experiment) and "The container
    image", in that order, on a fresh clone with tiny settings: `make moto`, the remote, `tweetbot plan`, `make
    deploy` twice (the second changes nothing), `dvc exp apply <name> && make deploy`, the image run with docker,
    `tweetbot destroy`; then the S3 remote's set-up, against moto's S3."""
    root = clone_working_tree(tmp_path / "tweetbot")
    set_params(root, {**TINY, "image": {"base_image": LOCAL_BASE}})
    commit(root, "tiny settings and the local base image")
    moto_port = free_port()
    make_moto, exports, bucket, remote, deploy_line = block("Deploy to AWS", "make moto").commands
    exports = exports.replace("127.0.0.1:5000", f"127.0.0.1:{moto_port}")
    endpoint = f"http://127.0.0.1:{moto_port}"
    _, image_line, plan_line, _, destroy_line = block("Deploy to AWS", REAL_AWS_LINE).commands

    def aws_sh(script: str, **kwargs):
        return sh(root, f"{exports}\n{script}", **kwargs)

    with background(root, make_moto, tmp_path / "moto.log", MOTO_PORT=str(moto_port)) as moto:
        wait_until(lambda: answers(endpoint), moto, tmp_path / "moto.log", "make moto")
        aws_sh(f"{bucket}\n{remote}")
        ecs = fake_aws(endpoint, "ecs")

        started = time.monotonic()
        aws_sh(image_line)
        timed(image_line, started)
        planned = aws_sh(plan_line)
        assert "would create ECS service" in planned.stderr, planned.stderr
        assert ecs.list_clusters()["clusterArns"] == []  # a plan changes nothing

        started = time.monotonic()
        first = aws_sh(deploy_line)
        timed(f"first {deploy_line}", started)
        assert stages_run(first) == ["deploy/dvc.yaml:deploy"], first.stdout
        deployed = json.loads((root / "build/deploy.json").read_text())
        (service,) = ecs.describe_services(cluster=deployed["cluster"], services=[deployed["service"]])["services"]
        assert service["taskDefinition"] == deployed["task_definition"]

        second = aws_sh(deploy_line)
        assert stages_run(second) == [] and "Everything is up to date" in second.stdout, second.stdout
        assert json.loads((root / "build/deploy.json").read_text()) == deployed

        run_line, _, apply_line = block("Parameters", "dvc exp run -S train.rnn_size=120").commands
        ran = sh(root, run_line)
        name = re.search(r"Ran experiment\(s\): (\S+)", ran.stdout).group(1)
        shipped = aws_sh(apply_line.replace("<name>", name))
        assert "deploy/dvc.yaml:deploy" in stages_run(shipped), shipped.stdout
        redeployed = json.loads((root / "build/deploy.json").read_text())
        assert redeployed["task_definition"] != deployed["task_definition"]
        assert redeployed["model_version"] != deployed["model_version"]

        run_docker(root, tmp_path)

        destroyed = aws_sh(destroy_line, stdin="y\n")
        assert "Remove all of the above?" in destroyed.stdout, destroyed.stdout
        clusters = ecs.describe_clusters(clusters=[deployed["cluster"]])["clusters"]
        assert [cluster["status"] for cluster in clusters if cluster["status"] == "ACTIVE"] == []
        assert fake_aws(endpoint, "ecr").describe_repositories()["repositories"] == []

        versioning, s3_remote, git_commit = block("Deploy to AWS", S3_VERSIONING_LINE).commands
        if shutil.which("aws"):
            aws_sh(versioning.replace("MY-BUCKET", "tweetbot-dvc"))
            status = fake_aws(endpoint, "s3").get_bucket_versioning(Bucket="tweetbot-dvc")["Status"]
            assert status == "Enabled"
        else:
            print(f"\nthe AWS CLI is not installed: `{versioning}` was not run")
        sh(root, f"{s3_remote.replace('MY-BUCKET', 'tweetbot-dvc')}\n{git_commit}")
        committed = sh(root, "git show HEAD:.dvc/config").stdout
        assert "remote = s3" in committed and "s3://tweetbot-dvc/tweetbot" in committed


def run_docker(root: Path, tmp_path: Path) -> None:
    """README, "The container image": `docker run` of the image the deploy built, then `curl` once it is ready."""
    run_line, curl_line = block("The container image", DOCKER_RUN_LINE).commands
    port, name = free_port(), f"tweetbot-journey-{os.getpid()}"
    run_line = run_line.replace("-p 8080:8080", f"--network host --env PORT={port} --name {name}")
    try:
        with background(root, run_line, tmp_path / "docker.log") as container:
            wait_until(lambda: is_ready(f"http://127.0.0.1:{port}"), container, tmp_path / "docker.log", "docker run")
            answer = sh(root, curl_line.replace("localhost:8080", f"127.0.0.1:{port}"))
            assert isinstance(json.loads(answer.stdout)["text"], str)
    finally:
        sh(root, f"docker rm --force {name}", check=False)
