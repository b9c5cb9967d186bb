"""The pipeline's record: the files in git that say which data, model and deployment the workspace holds.

They are `dvc.lock` (every stage's inputs and outputs, by hash), `params.yaml` (the settings the stages ran
with), the `.dvc` files of data added by hand (the fine-tune's start checkpoint), and the small outputs DVC
keeps in git rather than in its cache (`cache: false` in dvc.yaml: metrics, curves, the image and deployment
records). A snapshot of their text, written back and followed by `dvc checkout`, puts the whole workspace back
as it was; that is how an update whose model was not better leaves no trace, and how a rollback brings an
earlier version back without retraining (tweetbot.update).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from tweetbot import atomic, params
from tweetbot.errors import UserError

PIPELINE = Path("dvc.yaml")
LOCK = Path("dvc.lock")
ADDED = (Path("models"),)  # where `.dvc` files of data added by hand live

Snapshot = dict[str, str]  # path -> text


def snapshot() -> Snapshot:
    return {str(path): path.read_text() for path in _files()}


def restore(saved: Snapshot) -> None:
    """Write the record back as `saved` has it, then make the data and models in the workspace match it."""
    for path in _files():
        if str(path) not in saved:
            path.unlink()
            if path.suffix == ".dvc":  # data that was added by hand after the snapshot goes too
                _remove(path.with_suffix(""))
    for name, text in saved.items():
        path = Path(name)
        if not path.is_file() or path.read_text() != text:
            atomic.write_text(path, text)
    checkout()


def keeping(saved: Snapshot, current: Snapshot, *, stages: tuple[str, ...], sections: tuple[str, ...]) -> Snapshot:
    """`saved`, except what stays as in `current`: the dvc.lock entries and git-kept outputs of `stages`, and the
    params.yaml `sections`."""
    kept = set().union(*(_stage_files(stage) for stage in stages))
    merged = {name: text for name, text in saved.items() if name not in kept}
    merged |= {name: text for name, text in current.items() if name in kept}
    lock, now = yaml.safe_load(saved[str(LOCK)]), yaml.safe_load(current[str(LOCK)])
    for stage in stages:
        if stage in now["stages"]:
            lock["stages"][stage] = now["stages"][stage]
        else:
            lock["stages"].pop(stage, None)
    merged[str(LOCK)] = yaml.safe_dump(lock, sort_keys=False)
    merged[str(params.PARAMS_FILE)] = _with_sections(saved[str(params.PARAMS_FILE)], current, sections)
    return merged


def checkout() -> None:
    """`dvc checkout` what dvc.lock and the `.dvc` files name, from the DVC remote if the cache lacks it."""
    stages = list(yaml.safe_load(LOCK.read_text())["stages"]) if LOCK.exists() else []
    targets = [*stages, *map(str, _added())]
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


def dvc(*args: str) -> subprocess.CompletedProcess:
    """Run DVC with the project's venv first on PATH (the stage commands call `python`)."""
    bin_dir = str(Path(sys.executable).parent)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}", "DVC_NO_ANALYTICS": "1"}
    dvc_bin = shutil.which("dvc", path=bin_dir) or "dvc"
    result = subprocess.run([dvc_bin, *args], env=env, capture_output=True, text=True)
    if result.returncode != 0:
        detail = (result.stderr.strip() or result.stdout.strip()).splitlines()[-1:] or ["no output"]
        print(result.stdout, result.stderr, sep="\n", file=sys.stderr)
        raise UserError(f"`dvc {' '.join(args)}` failed: {detail[0]}")
    return result


def _files() -> list[Path]:
    outputs = [output for stage_outputs in _outputs_in_git().values() for output in stage_outputs]
    candidates = {params.PARAMS_FILE, LOCK, *_added(), *_with_contents(outputs)}
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
    """Each stage's outputs that dvc.yaml keeps out of the DVC cache (`cache: false`), so git holds them."""
    found: dict[str, list[Path]] = {}
    for name, stage in yaml.safe_load(PIPELINE.read_text())["stages"].items():
        for kind in ("outs", "metrics", "plots"):
            for entry in stage.get(kind, []):
                if isinstance(entry, dict):
                    ((path, options),) = entry.items()
                    if (options or {}).get("cache") is False:
                        found.setdefault(name, []).append(Path(path))
    return found


def _with_sections(params_text: str, current: Snapshot, sections: tuple[str, ...]) -> str:
    """`params_text` with `sections` as in the current params.yaml, comments and all."""
    document = params.load_keeping_comments(params_text)
    now = params.load_keeping_comments(current[str(params.PARAMS_FILE)])
    for section in sections:
        if section in now:
            document[section] = now[section]
        else:
            document.pop(section, None)
    return params.dump_keeping_comments(document)


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)
