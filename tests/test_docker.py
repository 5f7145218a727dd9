"""docker/: the production image serves exactly the repository `dnsvr export` assembles (static checks: there is
no Docker engine here, so the image's export step runs here as the build would run it)."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

from conftest import REPO, dockerfile_export_command, dockerfile_instructions
from dnsvr.export.repository import bundled_layout, repository_files
from dnsvr.serving.local.triton_server import ALLOCATOR_ENVIRONMENT, THREAD_ENVIRONMENT

TEXT_FILES = ("*.pbtxt", "model.py")
ENTRYPOINT = REPO / "docker" / "triton-entrypoint.sh"


def text_files(repository: Path) -> dict[str, str]:
    return {p.relative_to(repository).as_posix(): p.read_text()
            for pattern in TEXT_FILES for p in repository.rglob(pattern)}


def test_image_serves_the_folder_its_export_step_writes():
    arguments = dockerfile_export_command()
    assert arguments[:1] == ["export"] and arguments[arguments.index("--weights") + 1] == "bundled"
    out = arguments[arguments.index("--out") + 1]
    instructions = dockerfile_instructions()
    assert ("COPY", f"--from=export {out} {out}") in instructions
    assert ("COPY", "docker/triton-entrypoint.sh /usr/local/bin/dnsvr-triton") in instructions
    assert json.loads(next(arguments for name, arguments in instructions if name == "ENTRYPOINT")) == ["dnsvr-triton"]
    assert '--model-repository="${DNSVR_MODEL_REPOSITORY:-' + out + '}"' in ENTRYPOINT.read_text()
    assert not any(name == "COPY" and arguments.startswith("model_repository") for name, arguments in instructions)


def test_image_sets_the_local_servers_thread_and_allocator_environment():
    set_by_image = {arguments.split("=", 1)[0]: arguments.split("=", 1)[1]
                    for name, arguments in dockerfile_instructions() if name == "ENV"}
    assert THREAD_ENVIRONMENT.items() <= set_by_image.items()
    assert ALLOCATOR_ENVIRONMENT.items() <= set_by_image.items()


def run_entrypoint(tmp_path: Path, **env: str) -> tuple[list[str], dict[str, str]]:
    """The image's entrypoint with a stand-in `tritonserver` that records its arguments and environment."""
    fake = tmp_path / "bin" / "tritonserver"
    fake.parent.mkdir(exist_ok=True)
    fake.write_text('#!/bin/sh\nprintf "%s\\n" "$@" > "$0.args"\nenv > "$0.env"\n')
    fake.chmod(0o755)
    subprocess.run(["sh", str(ENTRYPOINT), "--log-info=true"], check=True,
                   env={"PATH": f"{fake.parent}:/usr/bin:/bin", **env})
    variables = dict(line.split("=", 1) for line in (tmp_path / "bin" / "tritonserver.env").read_text().splitlines()
                     if "=" in line)
    return (tmp_path / "bin" / "tritonserver.args").read_text().splitlines(), variables


def test_entrypoint_keeps_only_the_token_digest_and_restricts_admin(tmp_path: Path):
    args, env = run_entrypoint(tmp_path, DNSVR_ACCESS_TOKEN="s3cret", DNSVR_ADMIN_KEY="k")
    assert env["DNSVR_ACCESS_TOKEN_SHA256"] == hashlib.sha256(b"s3cret").hexdigest()
    assert "DNSVR_ACCESS_TOKEN" not in env
    assert "--model-repository=/models" in args and "--log-info=true" in args
    assert "--grpc-header-forward-pattern=^dnsvr-token$" in args
    restricted = "model-repository,model-config,shared-memory,statistics,trace,logging:dnsvr-admin=k"
    assert f"--grpc-restricted-protocol={restricted}" in args and f"--http-restricted-api={restricted}" in args
    assert not any(a.startswith("--grpc-use-ssl") for a in args)
    tls, _ = run_entrypoint(tmp_path, DNSVR_TLS_CERT="/certs/c.pem", DNSVR_TLS_KEY="/certs/k.pem")
    assert {"--grpc-use-ssl=true", "--grpc-server-cert=/certs/c.pem", "--http-address=127.0.0.1"} <= set(tls)
    random_key = next(a for a in tls if a.startswith("--http-restricted-api=")).rsplit("=", 1)[1]
    assert len(random_key) == 32


def test_export_step_writes_the_complete_committed_repository(docker_export):
    """The image's repository: every network of the bundled pack with its graph, the pipelines with their
    adapters, the manifest; its text files are the committed model_repository/'s, byte for byte."""
    manifest = json.loads((docker_export / "manifest.json").read_text())
    networks, text = bundled_layout("bin")
    assert manifest["served"] == sorted(networks) and manifest["text"] == text
    assert manifest["pipelines"] and manifest["fine"] == ["bin"]
    for name in manifest["served"]:
        assert (docker_export / name / "1" / "model.onnx").is_file()
    assert (docker_export / "dnsvr_embed" / "1").is_dir()
    exported = text_files(docker_export)
    assert exported == text_files(REPO / "model_repository")
    assert set(exported) == set(repository_files(networks, "bin", text))
