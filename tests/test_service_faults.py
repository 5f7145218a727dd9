"""Faults and access, against the real service (Triton + Milvus Lite, supervised), on 127.0.0.1:

- a python-model instance killed (-9): the supervisor reloads its model, searches go on (the client retries);
- the local Milvus killed (-9) during searches and during indexing, Milvus Lite and the default engine (the
  Milvus server in its own network namespace): restarted without restarting `serve`; nothing acknowledged is
  lost, the store's consistency check passes;
- the health endpoint reports the store and recovers with it;
- `dnsvr serve` stopped by SIGTERM while indexing, killed by -9: no process left, and a new `serve` on the
  same store starts, with the same rankings and every acknowledged video;
- TLS and the access token: no plaintext, no write without the token, Triton's admin APIs closed.
"""

from __future__ import annotations

import datetime
import http.client
import ipaddress
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from dnsvr.client import Forbidden, ServerUnavailable, VideoSearchClient
from dnsvr.serving.local.processes import descendants, still_same_process
from dnsvr.serving.local.service import InsecureBind, LocalService
from dnsvr.serving.local.supervisor import python_instances
from dnsvr.serving.local.triton_server import TlsFiles
from dnsvr.serving.store.settings import StoreSettings
from dnsvr.serving.store.video_store import VideoStore

MAX_FRAMES = "8"
PER_PAIR = "1.0,fusion:calibrated"  # every candidate re-ranked, each score a function of its own pair


def frames(seed: int, count: int = 4) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (count, 224, 224, 3), dtype=np.uint8)


def until(check, timeout_s: float = 60.0, every_s: float = 0.5):
    """check() until it returns something true (exceptions count as not yet); the last error if it never does."""
    deadline, last = time.monotonic() + timeout_s, None
    while time.monotonic() < deadline:
        try:
            result = check()
            if result:
                return result
        except Exception as error:
            last = error
        time.sleep(every_s)
    raise AssertionError(f"not reached in {timeout_s} s (last error: {last!r})")


def consistent(store_uri: str) -> None:
    """Orphans of interrupted writes repaired, then the store's check is clean (no incomplete video)."""
    with VideoStore(StoreSettings(uri=store_uri), create=False) as store:
        report = store.check(repair=False, grace_s=0)
        assert report.incomplete_video_ids == [], report
        store.check(repair=True, grace_s=0)
        assert store.check(grace_s=0).clean


@pytest.fixture(scope="module", params=["lite"])
def service(docker_export, tmp_path_factory, request):
    """The service on Milvus Lite, or on the engine a test names by indirect parametrisation ("server"; the
    "lite" instance is shared with every other test of the module)."""
    engine = request.param
    store = tmp_path_factory.mktemp("faults") / ("milvus.db" if engine == "lite" else "milvus-server")
    with LocalService(docker_export, store=store, env={"DNSVR_MAX_FRAMES": MAX_FRAMES}, health_port=0) as running:
        yield running


@pytest.fixture(autouse=True)
def service_story(request):
    """After each test of the shared service: its supervisor's events and the local Milvus log's tail, printed
    (pytest shows them only for a test that failed)."""
    yield
    if "service" in request.fixturenames:
        service = request.getfixturevalue("service")
        print("supervisor events:", *service.supervisor.events[-12:], sep="\n  ")
        if service.milvus is not None:
            print(f"{service.milvus.log_path} (tail):\n{service.milvus.log_tail(12)}")


@pytest.fixture(scope="module")
def client(service):
    with VideoSearchClient(service.grpc_url, timeout_s=300, retries=6) as opened:
        for seed in range(4):
            opened.index(f"base-{seed}", frames(seed))
        yield opened


def get(port: int, path: str, headers: dict | None = None, method: str = "GET") -> tuple[int, dict]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    connection.request(method, path, headers=headers or {})
    answer = connection.getresponse()
    return answer.status, json.loads(answer.read() or b"{}")


def test_dead_python_instance_is_replaced(service, client):
    triton = service.triton
    stubs = [pid for pid in descendants(triton.pid)
             if "dnsvr_search/1/model.py" in Path(f"/proc/{pid}/cmdline").read_text()]
    assert len(stubs) == service.supervisor.expected["dnsvr_search"] == 2
    os.kill(stubs[0], signal.SIGKILL)
    for _ in range(20):  # the dead instance answers "not healthy" until the reload: retried by the client
        assert len(client.search(video_id="base-0", top_k=3, rerank=0.5)) == 3
    until(lambda: python_instances(triton.pid)["dnsvr_search"] == 2)
    assert any("dnsvr_search reloaded" in event for event in service.supervisor.events)


def milvus_exits_seen(service) -> int:
    return sum(service.milvus.label in event and "exited" in event for event in service.supervisor.events)


BOTH_ENGINES = pytest.mark.parametrize("service", ["lite", "server"], indirect=True)


@BOTH_ENGINES
def test_milvus_killed_during_searches_recovers_without_restarting_serve(service, client):
    seen = milvus_exits_seen(service)
    os.killpg(service.milvus.pid, signal.SIGKILL)
    # down, or already restarted by the supervisor (under load it can be back before a poll sees it down)
    until(lambda: not service.milvus.running or milvus_exits_seen(service) > seen, 10, 0.05)
    result = until(lambda: client.search(video_id="base-1", top_k=3, rerank=0), 90)
    assert len(result) == 3 and any(f"{service.milvus.label} is back" in event
                                    for event in service.supervisor.events)


@BOTH_ENGINES
def test_milvus_killed_during_indexing_loses_nothing_acknowledged(service, client):
    outcomes = []
    items = [(f"during-{seed}", frames(100 + seed)) for seed in range(10)]
    indexer = threading.Thread(target=lambda: outcomes.extend(client.index_many(items, concurrency=2)))
    indexer.start()
    until(lambda: client.stats()["videos"] >= 6, 120, 0.2)  # some acknowledged, some in flight
    os.killpg(service.milvus.pid, signal.SIGKILL)
    indexer.join(timeout=300)
    acknowledged = [o.video_id for o in outcomes if o.ok]
    assert acknowledged and all(isinstance(o.error, ServerUnavailable) for o in outcomes if not o.ok)
    until(lambda: client.stats()["videos"] >= 4 + len(acknowledged), 90)
    for video_id in acknowledged:
        assert client.search(video_id=video_id, top_k=1, rerank=1.0).hits
    consistent(service.store_uri)


def test_health_endpoint_reports_the_store(service, client):
    port = service.health.port
    assert get(port, "/live") == (200, {"live": True})
    status, report = get(port, "/ready")
    assert status == 200 and report["ready"] and report["store"] == "ok"
    supervisor = service.supervisor
    supervisor.stop()  # hold the watch, so the outage stays visible
    try:
        os.killpg(service.milvus.pid, signal.SIGKILL)
        until(lambda: not service.milvus.running, 10)
        time.sleep(1.1)  # past the endpoint's cache
        status, report = get(port, "/ready")
        assert status == 503 and report["milvus_lite"] is False and report["store"] != "ok"
        supervisor.check_once()  # the watch's round: Milvus Lite started again
        until(lambda: get(port, "/ready")[0] == 200, 60)
    finally:
        supervisor.start()


def test_admin_apis_answer_only_serve(service):
    http_port = service.triton.http_port
    status, body = get(http_port, "/v2/logging", method="POST")
    assert status == 403 and "restricted" in body["error"]
    assert get(http_port, "/v2/repository/index", method="POST")[0] == 403
    assert service.triton.model_states()["dnsvr_search"] == "READY"  # serve itself holds the key


def self_signed(folder: Path) -> TlsFiles:
    """A certificate for 127.0.0.1 and localhost, signed by its own key."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                    x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(key, hashes.SHA256())
    )
    cert, private = folder / "cert.pem", folder / "key.pem"
    cert.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    private.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
    return TlsFiles(cert, private)


def test_insecure_binds_are_refused(docker_export, tmp_path):
    tls = TlsFiles(tmp_path / "c.pem", tmp_path / "k.pem")
    for options in ({}, {"tls": tls}, {"token": "t"}):
        with pytest.raises(InsecureBind, match="refusing to listen on 0.0.0.0"):
            LocalService(docker_export, host="0.0.0.0", **options)
    LocalService(docker_export, host="0.0.0.0", insecure=True)  # said explicitly
    LocalService(docker_export, host="0.0.0.0", tls=tls, token="t")


def test_tls_and_token(docker_export, tmp_path):
    tls = self_signed(tmp_path)
    with LocalService(docker_export, store=tmp_path / "milvus.db", env={"DNSVR_MAX_FRAMES": MAX_FRAMES}, tls=tls,
                      token="s3cret-token", open_search=True) as service:
        secure = {"ssl": True, "root_certificates": str(tls.cert), "retries": 0, "timeout_s": 120}
        with VideoSearchClient(service.grpc_url, token="s3cret-token", **secure) as writer:
            writer.index("tls-1", frames(7))
        with VideoSearchClient(service.grpc_url, retries=0, timeout_s=20) as plaintext:
            with pytest.raises(ServerUnavailable):
                plaintext.search(video_id="tls-1")
        with VideoSearchClient(service.grpc_url, **secure) as reader:  # open search: no token needed
            assert reader.search(video_id="tls-1", top_k=1).hits == []
            with pytest.raises(Forbidden, match="none was sent"):
                reader.index("tls-2", frames(8))
            with pytest.raises(Forbidden):
                reader.delete("tls-1")
        with VideoSearchClient(service.grpc_url, token="wrong", **secure) as wrong:
            with pytest.raises(Forbidden, match="the one sent is wrong"):
                wrong.index("tls-2", frames(8))
        with VideoSearchClient(service.grpc_url, token="s3cret-token", **secure) as writer:
            assert writer.stats()["videos"] == 1 and writer.delete("tls-1")


@pytest.fixture
def start_serve():
    """Starts `dnsvr serve` in its own session; whatever is still running at teardown is killed, with its family."""
    started: list[tuple[subprocess.Popen, dict[int, str]]] = []

    def start(repository: Path, tmp_path: Path, store: Path) -> tuple[subprocess.Popen, dict]:
        env = {**os.environ, "DNSVR_STATE": str(tmp_path / "serve.json"), "DNSVR_MAX_FRAMES": MAX_FRAMES}
        command = [sys.executable, "-m", "dnsvr.serving.cli.main", "serve", "--repository", str(repository),
                   "--store", str(store), "--log-dir", str(tmp_path)]
        serve = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                                 start_new_session=True)
        started.append((serve, {}))
        lines = []
        while True:
            line = serve.stdout.readline()
            lines.append(line)
            if "ready" in line or not line:
                break
        assert "ready" in lines[-1], "".join(lines)
        started[-1] = (serve, descendants(serve.pid))
        threading.Thread(target=serve.stdout.read, daemon=True).start()  # keep the pipe drained
        return serve, json.loads((tmp_path / "serve.json").read_text())

    yield start
    for serve, family in started:
        if serve.poll() is None:
            serve.kill()
            serve.wait(timeout=30)
        for pid, started_at in family.items():
            if still_same_process(pid, started_at):
                os.kill(pid, signal.SIGKILL)


def gone(family: dict[int, str]) -> bool:
    return not [pid for pid, started in family.items() if still_same_process(pid, started)]


def test_serve_stopped_or_killed_leaves_nothing_and_restarts_on_the_same_store(docker_export, tmp_path,
                                                                               start_serve):
    store = tmp_path / "milvus.db"
    serve, state = start_serve(docker_export, tmp_path, store)
    with VideoSearchClient(state["grpc_url"], timeout_s=300) as client:
        for seed in range(3):
            client.index(f"kept-{seed}", frames(200 + seed))
        # every candidate re-scored by its own calibrated fine score: a video's score is its own, not the score of
        # a rank (the cascade gives a re-ordered video its rank's coarse score, which newer videos can shift)
        before = client.search(video_id="kept-0", top_k=5, rerank=PER_PAIR)
        outcomes = []
        items = [(f"late-{seed}", frames(300 + seed)) for seed in range(8)]
        indexer = threading.Thread(target=lambda: outcomes.extend(client.index_many(items, concurrency=2)))
        indexer.start()
        until(lambda: client.stats()["videos"] >= 4, 120, 0.2)
        family = descendants(serve.pid)
        serve.send_signal(signal.SIGTERM)  # while indexing
        assert serve.wait(timeout=120) == 0
        indexer.join(timeout=120)
    until(lambda: gone(family), 30)
    acknowledged = ["kept-0", "kept-1", "kept-2", *(o.video_id for o in outcomes if o.ok)]

    serve, state = start_serve(docker_export, tmp_path, store)  # the same store: no lock left behind
    with VideoSearchClient(state["grpc_url"], timeout_s=300) as client:
        after = client.search(video_id="kept-0", top_k=50, rerank=PER_PAIR)
        same = [hit for hit in after if hit.video_id in before.ids]  # the videos indexed before the restart
        assert [hit.video_id for hit in same] == before.ids
        np.testing.assert_allclose([hit.score for hit in same], [hit.score for hit in before], atol=1e-5)
        for video_id in acknowledged:
            assert client.search(video_id=video_id, top_k=1, rerank=0).hits is not None
        family = descendants(serve.pid)
        os.kill(serve.pid, signal.SIGKILL)  # what an OOM kill does
        serve.wait(timeout=30)
    until(lambda: gone(family), 30)

    serve, state = start_serve(docker_export, tmp_path, store)
    try:
        with VideoSearchClient(state["grpc_url"], timeout_s=300) as client:
            assert client.stats()["videos"] >= len(acknowledged)
            consistent(state["store_uri"])
    finally:
        serve.send_signal(signal.SIGTERM)
        assert serve.wait(timeout=120) == 0


def test_ids_of_any_script_round_trip_and_injections_never_reach_the_store(service, client):
    import tritonclient.grpc as grpcclient
    from dnsvr.client import InvalidVideo

    before = client.stats()["videos"]
    for video_id in ("vidéo-日本", "a] or video_id in [b", "😀 clip #3", "(x) and (y)"):
        assert client.index(video_id, frames(50)).frame_count == 4
        assert client.search(video_id=video_id, top_k=3, rerank=1.0).hits
        assert client.delete(video_id) is True
    raw = grpcclient.InferenceServerClient(service.grpc_url)  # no client-side check: the server's rule holds
    for video_id in ("x'] or video_id not in ['", "a' || 1==1 || '", 'x" or 1==1 or "'):
        with pytest.raises(InvalidVideo):
            client.delete(video_id)
        tensor = grpcclient.InferInput("video_id", [1], "BYTES")
        tensor.set_data_from_numpy(np.array([video_id.encode()], object))
        with pytest.raises(Exception, match="forbidden character"):
            raw.infer("dnsvr_delete", [tensor])
    assert client.stats()["videos"] == before


def test_store_check_on_a_live_embedded_store_goes_through_its_server(service, client, capsys):
    from dnsvr.serving.cli.main import main

    assert main(["store", "check", "--store", service.store, "--grace", "0"]) == 0
    captured = capsys.readouterr()
    assert "reaching it through http://127.0.0.1" in captured.err and "Traceback" not in captured.err


def test_a_long_invalid_filter_is_a_clear_invalid_argument(client):
    from dnsvr.client import InvalidVideo

    # refused by the store's filter check (`expressions.checked_filter`: a store with crop views checks a filter
    # before reading its views collection), or by Milvus itself on a store without them
    with pytest.raises(InvalidVideo, match=r"an unclosed '\('|was rejected by the store") as caught:
        client.search(video_id="base-0", filter="source_uri like " + "(" * 3000)
    assert len(str(caught.value)) < 2500
    with pytest.raises(InvalidVideo, match="at most 4096 bytes"):
        client.search(video_id="base-0", filter="x" * 5000)
