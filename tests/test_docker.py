"""docker/: the production image serves exactly the repository `dnsvr export` assembles (static checks: there is
no Docker engine here, so the image's export step runs here as the build would run it)."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import REPO, dockerfile_export_command, dockerfile_instructions
from dnsvr.export.repository import pipeline_networks, repository_files

TEXT_FILES = ("*.pbtxt", "model.py")


def text_files(repository: Path) -> dict[str, str]:
    return {p.relative_to(repository).as_posix(): p.read_text()
            for pattern in TEXT_FILES for p in repository.rglob(pattern)}


def test_image_serves_the_folder_its_export_step_writes():
    arguments = dockerfile_export_command()
    assert arguments[:1] == ["export"] and arguments[arguments.index("--weights") + 1] == "bundled"
    out = arguments[arguments.index("--out") + 1]
    instructions = dockerfile_instructions()
    assert ("COPY", f"--from=export {out} {out}") in instructions
    command = json.loads(next(arguments for name, arguments in instructions if name == "CMD"))
    assert f"--model-repository={out}" in command
    assert not any(name == "COPY" and arguments.startswith("model_repository") for name, arguments in instructions)


def test_export_step_writes_the_complete_committed_repository(docker_export):
    """The image's repository: every network of the bundled pack with its graph, the pipelines with their
    adapters, the manifest; its text files are the committed model_repository/'s, byte for byte."""
    manifest = json.loads((docker_export / "manifest.json").read_text())
    assert manifest["served"] == sorted(pipeline_networks("bin"))
    assert manifest["pipelines"] and manifest["fine"] == ["bin"]
    for name in manifest["served"]:
        assert (docker_export / name / "1" / "model.onnx").is_file()
    assert (docker_export / "dnsvr_embed" / "1").is_dir()
    exported = text_files(docker_export)
    assert exported == text_files(REPO / "model_repository")
    assert set(exported) == set(repository_files(pipeline_networks("bin"), "bin"))
