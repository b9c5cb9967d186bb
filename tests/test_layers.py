"""The code's layers, read from the source: each DVC stage depends on all the code it runs, the runtime stands on
its own, and the image holds (and its tag hashes) the runtime and the service, never the pipeline."""

from __future__ import annotations

import ast
import shlex
import shutil
from pathlib import Path

import pytest
import yaml

from deploy import image
from tests.conftest import REPO
from tests.imports import files_run_by, imported_modules, module_file

PIPELINES = [REPO / "dvc.yaml", REPO / "deploy" / "dvc.yaml"]


def stages() -> list[tuple[str, dict]]:
    return [(name, stage) for file in PIPELINES for name, stage in yaml.safe_load(file.read_text())["stages"].items()]


def runs_code(path: Path) -> bool:
    """False for a package __init__.py that holds only its docstring: importing it runs nothing."""
    body = ast.parse(path.read_text()).body
    return any(not (isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)) for node in body)


def project_files(folder: Path) -> set[Path]:
    return {path.resolve() for path in folder.rglob("*.py") if "__pycache__" not in path.parts}


@pytest.mark.parametrize(("name", "stage"), stages(), ids=[name for name, _ in stages()])
def test_each_stage_depends_on_every_project_file_its_command_runs(name, stage):
    script = REPO / shlex.split(stage["cmd"])[1]  # `python stages/NAME.py ...`
    deps = [(REPO / dep).resolve() for dep in stage["deps"]]
    missing = [
        path.relative_to(REPO).as_posix()
        for path in sorted(files_run_by(script))
        if runs_code(path) and not any(path == dep or dep in path.parents for dep in deps)
    ]
    assert not missing, f"stage {name} runs these files but dvc.yaml does not list them as deps: {missing}"


def test_the_experiment_pipeline_never_builds_or_deploys():
    root = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    delivery = yaml.safe_load((REPO / "deploy" / "dvc.yaml").read_text())["stages"]
    assert {"image", "deploy"} == set(delivery) and not {"image", "deploy"} & set(root)
    for name, stage in root.items():
        assert "deploy" not in {Path(dep).parts[0] for dep in stage.get("deps", [])}, name


def test_the_image_stage_depends_on_everything_the_image_holds():
    stage = yaml.safe_load((REPO / "deploy" / "dvc.yaml").read_text())["stages"]["image"]
    deps = {Path(dep) for dep in stage["deps"]}
    for held in image.CODE_PATHS:
        assert any(Path(held) == dep or dep in Path(held).parents for dep in deps), held


def test_the_runtime_and_the_service_import_nothing_of_the_pipeline():
    allowed = {path.resolve() for path in (REPO / "src/tweetbot/runtime").glob("*.py")}
    allowed |= {(REPO / "src/tweetbot/__init__.py").resolve()} | project_files(REPO / "service")
    for start in allowed:
        outside = sorted(path.relative_to(REPO).as_posix() for path in files_run_by(start) - allowed)
        assert not outside, f"{start.relative_to(REPO)} imports {outside}, which the image does not hold"


def test_the_library_never_imports_the_service_or_deploy_at_module_level():
    for path in sorted(project_files(REPO / "src")):
        imports = {name.split(".")[0] for name in imported_modules(path, top_level_only=True)}
        assert not imports & {"service", "deploy"}, f"{path.relative_to(REPO)} imports {imports}"


def copy_of_image_inputs(root: Path) -> Path:
    """The real files the image is made of, and a pipeline module beside them, in a folder of their own."""
    for relative in [*image.CODE_PATHS, "src/tweetbot/train.py", "src/tweetbot/fetch.py"]:
        source = REPO / relative
        if source.is_dir():
            shutil.copytree(source, root / relative, ignore=image.SKIPPED)
        else:
            (root / relative).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, root / relative)
    (root / "models/export").mkdir(parents=True)
    (root / "models/export/manifest.json").write_text('{"version": "v1"}')
    return root


def tag_of(repo: Path, where: Path) -> str:
    image.stage_context(repo, repo / "models/export", where)
    return image.content_tag(where, base_image="python:3.11-slim", platform="linux/amd64")


def test_a_pipeline_only_edit_keeps_the_image_tag_and_a_sampler_edit_changes_it(tmp_path):
    repo = copy_of_image_inputs(tmp_path / "repo")
    tag = tag_of(repo, tmp_path / "a")
    for pipeline_module in ("src/tweetbot/train.py", "src/tweetbot/fetch.py"):
        with (repo / pipeline_module).open("a") as file:
            file.write("\n# an edit the service never runs\n")
    assert tag_of(repo, tmp_path / "b") == tag
    with (repo / "src/tweetbot/runtime/sample.py").open("a") as file:
        file.write("\n# an edit the service runs\n")
    assert tag_of(repo, tmp_path / "c") != tag


def test_module_file_resolves_packages_and_modules():
    assert module_file("tweetbot.runtime") == REPO / "src/tweetbot/runtime/__init__.py"
    assert module_file("tweetbot.runtime.sample") == REPO / "src/tweetbot/runtime/sample.py"
    assert module_file("numpy") is None
