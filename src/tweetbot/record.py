"""The pipeline's record: the files in git that say which data, model and deployment the workspace holds.

They are the lock files of both pipelines (every stage's inputs and outputs, by hash), params.yaml, the `.dvc`
files of data added by hand (the fine-tune's start), and the small outputs DVC keeps in git (`cache: false`:
metrics, curves, the image and deployment records). A snapshot of their text, written back and followed by
`dvc checkout`, puts the workspace back as it was: the posts an update fetched but did not promote, or, from
models/versions/N.json, an earlier version for a rollback.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import yaml

from tweetbot import atomic, params
from tweetbot.dvc_cli import dvc
from tweetbot.runtime.errors import UserError

EXPERIMENT = Path("dvc.yaml")  # fetch, preprocess, train, export, evaluate: what `dvc repro` and `dvc exp run` run
DELIVERY = Path("deploy/dvc.yaml")  # image, deploy: what `make deploy` runs
PIPELINES = (EXPERIMENT, DELIVERY)
LOCK = EXPERIMENT.with_suffix(".lock")
ADDED = (Path("models"),)  # where `.dvc` files of data added by hand live
VERSIONS = Path("models/versions")  # N.json: version N's record, what a rollback puts back (in git)

Snapshot = dict[str, str]  # path -> text


def snapshot() -> Snapshot:
    return {str(path): _exact_text(path) for path in _files()}


def kept(path: Path, key: str) -> Snapshot:
    """The snapshot saved at `path` under `key`; if there is none under that key, a fresh one, saved there."""
    saved = json.loads(path.read_text()) if path.exists() else {}
    if saved.get("key") == key:
        return saved["record"]
    fresh = snapshot()
    atomic.write_text(path, json.dumps({"key": key, "record": fresh}))
    return fresh


def save_version(number: int) -> None:
    atomic.write_text(_version_file(number), json.dumps(snapshot(), indent=1, sort_keys=True))


def version(number: int) -> Snapshot:
    if not _version_file(number).exists():
        raise UserError(f"{_version_file(number)} is missing: version {number}'s record is needed to roll back to it")
    return json.loads(_version_file(number).read_text())


def _version_file(number: int) -> Path:
    return VERSIONS / f"{number}.json"


def restore(saved: Snapshot) -> None:
    """Write the record back as `saved` has it, then make the data and models in the workspace match it."""
    for path in _files():
        if str(path) not in saved:
            path.unlink()
            if path.suffix == ".dvc":  # data that was added by hand after the snapshot goes too
                _remove(path.with_suffix(""))
    for name, text in saved.items():
        path = Path(name)
        if not path.is_file() or _exact_text(path) != text:
            atomic.write_text(path, text)
    checkout()


def keeping(saved: Snapshot, current: Snapshot, *, stages: tuple[str, ...], sections: tuple[str, ...]) -> Snapshot:
    """`saved`, except what stays as in `current`: the dvc.lock entries and git-kept outputs of `stages`, and the
    params.yaml `sections`."""
    kept = set().union(*(_stage_files(stage) for stage in stages))
    merged = {name: text for name, text in saved.items() if name not in kept}
    merged |= {name: text for name, text in current.items() if name in kept}
    for pipeline in PIPELINES:
        name = str(pipeline.with_suffix(".lock"))
        lock, now = _stages_of(saved.get(name)), _stages_of(current.get(name))
        for stage in stages:
            if stage in now["stages"]:
                lock["stages"][stage] = now["stages"][stage]
            else:
                lock["stages"].pop(stage, None)
        if lock["stages"]:
            merged[name] = yaml.safe_dump(lock, sort_keys=False)
        else:
            merged.pop(name, None)
    name = str(params.PARAMS_FILE)
    merged[name] = params.with_sections(saved[name], current[name], sections)
    return merged


def checkout() -> None:
    """`dvc checkout` what the lock files and the `.dvc` files name, from the DVC remote if the cache lacks it."""
    targets = [*_locked_stages(), *map(str, _added())]
    if not targets:
        return
    try:
        dvc("checkout", "--force", *targets)
    except UserError:
        if not dvc("remote", "list").stdout.strip():
            raise UserError(
                "the DVC cache lacks data that dvc.lock names and no DVC remote is set: add the remote that holds "
                "it (`dvc remote add -d NAME URL`) and run again"
            ) from None
        dvc("pull", "--force", *targets)


def _stages_of(lock_text: str | None) -> dict:
    return yaml.safe_load(lock_text) if lock_text else {"schema": "2.0", "stages": {}}


def _locked_stages() -> list[str]:
    """Every stage a lock file records, addressed as `dvc checkout` takes it (`deploy/dvc.yaml:image`)."""
    found = []
    for pipeline in PIPELINES:
        lock = pipeline.with_suffix(".lock")
        if lock.exists():
            prefix = "" if pipeline == EXPERIMENT else f"{pipeline}:"
            found += [prefix + stage for stage in yaml.safe_load(lock.read_text())["stages"]]
    return found


def _files() -> list[Path]:
    outputs = [output for stage_outputs in _outputs_in_git().values() for output in stage_outputs]
    locks = [pipeline.with_suffix(".lock") for pipeline in PIPELINES]
    candidates = {params.PARAMS_FILE, *locks, *_added(), *_with_contents(outputs)}
    return sorted(path for path in candidates if path.is_file())


def _stage_files(stage: str) -> set[str]:
    """The names of stage `stage`'s outputs in git, and of what is inside those that are folders."""
    return {str(path) for path in _with_contents(_outputs_in_git().get(stage, []))}


def _with_contents(outputs: list[Path]) -> list[Path]:
    """`outputs`, and everything inside those that are folders."""
    return [path for output in outputs for path in (output, *output.rglob("*"))]


def _added() -> list[Path]:
    """The `.dvc` files of data added by hand."""
    return [path for folder in ADDED for path in folder.rglob("*.dvc")]


def _outputs_in_git() -> dict[str, list[Path]]:
    """Each stage's outputs that the pipelines keep out of the DVC cache (`cache: false`), so git holds them."""
    found: dict[str, list[Path]] = {}
    stages = [item for pipeline in PIPELINES for item in yaml.safe_load(pipeline.read_text())["stages"].items()]
    for name, stage in stages:
        for kind in ("outs", "metrics", "plots"):
            for entry in stage.get(kind, []):
                if isinstance(entry, dict):
                    ((path, options),) = entry.items()
                    if (options or {}).get("cache") is False:
                        found.setdefault(name, []).append(Path(path))
    return found


def _exact_text(path: Path) -> str:
    """The file's text, line ends as they are: `read_text` turns CRLF into LF, and a CSV (evaluate's lengths.csv)
    would no longer match its hash in dvc.lock."""
    return path.read_bytes().decode("utf-8")


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)
