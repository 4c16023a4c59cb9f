"""TLS and basic auth from an exporter-toolkit web-config file, against real components:
Prometheus scraping over TLS, node_exporter serving the very same file, promtool judging the
same files, and a certificate replaced on disk while the daemon runs.

The CA and certificates are made by the test (tests/tlsfiles.py); every server listens on
127.0.0.1 and is stopped by PID.
"""

from __future__ import annotations

import http.client
import os
import re
import shutil
import socket
import ssl
import subprocess
from pathlib import Path

import pytest

from exporter.config import ConfigError
from exporter.http.webconfig import load_web_config
from tests.conftest import RunningDaemon, require_tool
from tests.helpers import LocalServer, free_port, poll, wait_for
from tests.prometheus_server import PrometheusServer
from tests.tlsfiles import (
    CA,
    basic,
    bcrypt_hash,
    client_context,
    https_get,
    served_serial,
    write_web_config,
)

pytestmark = pytest.mark.real


def refused(port: int, ctx: ssl.SSLContext) -> bool:
    """True if the server will not serve this client (handshake or first read fails)."""
    try:
        https_get(port, "/metrics/summary", ctx)
    except (ssl.SSLError, ConnectionError, http.client.RemoteDisconnected, OSError):
        return True
    return False


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict:
    d = tmp_path_factory.mktemp("pki")
    ca = CA(d / "ca")
    rogue = CA(d / "rogue", "rogue CA")
    return {"ca": ca, "server": ca.issue("server"), "client": ca.issue("client", client=True),
            "rogue_client": rogue.issue("rogue-client", client=True), "dir": d}


def test_prometheus_scrapes_over_tls_with_basic_auth_and_client_certs(
        daemon_factory, tmp_path: Path, pki: dict) -> None:
    require_tool("prometheus")
    ca, server, client = pki["ca"], pki["server"], pki["client"]
    auth_file = write_web_config(tmp_path / "auth.yml", {
        "tls_server_config": {"cert_file": str(server.cert), "key_file": str(server.key)},
        "basic_auth_users": {"prom": bcrypt_hash("s3cret")},
    })
    mtls_file = write_web_config(tmp_path / "mtls.yml", {
        "tls_server_config": {"cert_file": str(server.cert), "key_file": str(server.key),
                              "client_auth_type": "RequireAndVerifyClientCert",
                              "client_ca_file": str(ca.cert)},
    })
    with_auth: RunningDaemon = daemon_factory("--interval", "1", "--web.config.file",
                                              str(auth_file))
    with_mtls: RunningDaemon = daemon_factory("--interval", "1", "--web.config.file",
                                              str(mtls_file))

    # The exporter itself: 401 with a Basic challenge for a wrong password, 200 for the right.
    plain = client_context(ca)
    status, headers, _ = https_get(with_auth.port, "/metrics/summary", plain,
                                   basic("prom", "wrong"))
    assert status == 401 and headers["www-authenticate"].startswith("Basic")
    wait_for(lambda: https_get(with_auth.port, "/healthz", plain,
                               basic("prom", "s3cret"))[0] == 200, "the TLS daemon to collect")
    # With RequireAndVerifyClientCert: no certificate, or one from another CA, is refused.
    assert refused(with_mtls.port, plain)
    assert refused(with_mtls.port, client_context(ca, pki["rogue_client"]))
    status, _, body = https_get(with_mtls.port, "/metrics/summary", client_context(ca, client))
    assert status == 200 and b"memory_mb" in body

    tls = {"ca_file": str(ca.cert)}
    jobs = [
        ("auth_ok", with_auth, {"basic_auth": {"username": "prom", "password": "s3cret"},
                                "tls_config": tls}),
        ("auth_wrong", with_auth, {"basic_auth": {"username": "prom", "password": "nope"},
                                   "tls_config": tls}),
        ("mtls_ok", with_mtls, {"tls_config": {**tls, "cert_file": str(client.cert),
                                               "key_file": str(client.key)}}),
        ("mtls_no_cert", with_mtls, {"tls_config": tls}),
    ]
    scrape_configs = [{"job_name": name, "scheme": "https", "scrape_interval": "1s",
                       "static_configs": [{"targets": [f"127.0.0.1:{d.port}"]}], **extra}
                      for name, d, extra in jobs]
    with PrometheusServer(tmp_path, scrape_configs) as prom:
        for job, expected in (("auth_ok", 1), ("auth_wrong", 0), ("mtls_ok", 1),
                              ("mtls_no_cert", 0)):
            result = prom.wait_for_query(f'up{{job="{job}"}}')
            assert float(result[0]["value"][1]) == expected, (job, result)
        for job in ("auth_ok", "mtls_ok"):
            assert prom.wait_for_query(f'crankshaft_memory_usage_mb{{job="{job}"}}')
        targets = prom.api("targets")["activeTargets"]
        errors = {t["labels"]["job"]: t["lastError"] for t in targets}
        assert "401" in errors["auth_wrong"], errors


def test_one_web_config_file_serves_node_exporter_and_this_exporter(
        daemon_factory, tmp_path: Path, pki: dict) -> None:
    node = require_tool("prometheus-node-exporter")
    ca, server = pki["ca"], pki["server"]
    web = write_web_config(tmp_path / "web-config.yml", {
        "tls_server_config": {"cert_file": str(server.cert), "key_file": str(server.key),
                              "min_version": "TLS12"},
        "http_server_config": {"headers": {"X-Content-Type-Options": "nosniff"}},
        "basic_auth_users": {"prom": bcrypt_hash("s3cret")},
    })
    ours: RunningDaemon = daemon_factory("--interval", "1", "--web.config.file", str(web))
    theirs = LocalServer("node-exporter", tmp_path, free_port())
    with open(theirs.log_path, "wb") as log:
        theirs.proc = subprocess.Popen(
            [node, f"--web.listen-address=127.0.0.1:{theirs.port}", f"--web.config.file={web}",
             "--collector.disable-defaults", "--collector.loadavg"],
            stdout=log, stderr=subprocess.STDOUT)
    try:
        ctx = client_context(ca)
        wait_for(lambda: _answers(theirs.port, ctx), "node_exporter to serve TLS")
        for port, path, family in ((theirs.port, "/metrics", b"node_load1"),
                                   (ours.port, "/metrics/prometheus", b"crankshaft_")):
            status, headers, _ = https_get(port, path, ctx)
            assert status == 401 and headers["www-authenticate"].startswith("Basic"), port
            status, headers, _ = https_get(port, path, ctx, basic("prom", "wrong"))
            assert status == 401, port
            status, headers, body = https_get(port, path, ctx, basic("prom", "s3cret"))
            assert status == 200 and family in body, (port, body[:200])
            assert headers["x-content-type-options"] == "nosniff"
            assert not _plain_http_served(port), port
    finally:
        theirs.stop()


def _answers(port: int, ctx: ssl.SSLContext) -> bool:
    try:
        return https_get(port, "/metrics", ctx)[0] == 401
    except OSError:
        return False


def _plain_http_served(port: int) -> bool:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", "/metrics")
        return conn.getresponse().status == 200
    except (OSError, http.client.HTTPException):
        return False
    finally:
        conn.close()


def test_a_certificate_replaced_on_disk_is_served_without_a_restart(
        daemon_factory, tmp_path: Path, pki: dict) -> None:
    ca = pki["ca"]
    first, renewed = ca.issue("first"), ca.issue("renewed")
    cert, key = tmp_path / "tls.crt", tmp_path / "tls.key"
    shutil.copy(first.cert, cert)
    shutil.copy(first.key, key)
    web = write_web_config(tmp_path / "web.yml",
                           {"tls_server_config": {"cert_file": "tls.crt", "key_file": "tls.key"}})
    d: RunningDaemon = daemon_factory("--interval", "1", "--web.config.file", str(web))
    assert served_serial(d.host, d.port, ca) == first.serial
    for src, dst in ((renewed.key, key), (renewed.cert, cert)):  # as certbot would: rename
        shutil.copy(src, dst.with_suffix(".new"))
        os.replace(dst.with_suffix(".new"), dst)
    poll(lambda: served_serial(d.host, d.port, ca), lambda s: s == renewed.serial,
         "the renewed certificate to be served")
    assert d.proc.poll() is None
    assert "web configuration re-read" in d.log()


# --- promtool check web-config agreement ------------------------------------------------------

HASH = "$2y$10$QOauhQNbBCuQDKes6eFzPeMqBSjb7Mr5DUmpZ/VcEd00UAV/LDeSi"

# (name, file text; CERT/KEY/CA are replaced by paths) -> both must accept (True) or reject.
AGREEMENT: list[tuple[str, str, bool]] = [
    ("empty", "", True),
    ("empty sections", "tls_server_config: {}\nhttp_server_config: {}\n", True),
    ("tls files", "tls_server_config: {cert_file: CERT, key_file: KEY}\n", True),
    ("mtls", "tls_server_config: {cert_file: CERT, key_file: KEY, client_ca_file: CA, "
             "client_auth_type: RequireAndVerifyClientCert}\n", True),
    ("verify if given", "tls_server_config: {cert_file: CERT, key_file: KEY, client_ca_file: CA,"
                        " client_auth_type: VerifyClientCertIfGiven}\n", True),
    ("verify, system roots", "tls_server_config: {cert_file: CERT, key_file: KEY, "
                             "client_auth_type: RequireAndVerifyClientCert}\n", True),
    ("request cert", "tls_server_config: {cert_file: CERT, key_file: KEY, "
                     "client_auth_type: RequestClientCert, client_ca_file: CA}\n", True),
    ("versions", "tls_server_config: {cert_file: CERT, key_file: KEY, min_version: TLS13, "
                 "max_version: TLS13}\n", True),
    ("min above max", "tls_server_config: {cert_file: CERT, key_file: KEY, min_version: TLS13, "
                      "max_version: TLS12}\n", True),
    ("ciphers", "tls_server_config: {cert_file: CERT, key_file: KEY, cipher_suites: "
                "[TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384, TLS_AES_128_GCM_SHA256]}\n", True),
    ("one curve", "tls_server_config: {cert_file: CERT, key_file: KEY, "
                  "curve_preferences: [X25519]}\n", True),
    ("prefer server", "tls_server_config: {cert_file: CERT, key_file: KEY, "
                      "prefer_server_cipher_suites: false}\n", True),
    ("CA file without certs", "tls_server_config: {cert_file: CERT, key_file: KEY, "
                              "client_ca_file: KEY, client_auth_type: "
                              "RequireAndVerifyClientCert}\n", True),
    ("headers", "http_server_config:\n  http2: false\n  headers:\n    X-Frame-Options: "
                "sameorigin\n    Strict-Transport-Security: max-age=31536000\n", True),
    ("users", f"basic_auth_users:\n  alice: '{HASH}'\n  bob: '{HASH}'\n", True),
    ("disabled tls, empty paths", "tls_server_config: {cert_file: '', key_file: ''}\n", True),
    ("unknown top key", "tls_config: {}\n", False),
    ("unknown tls key", "tls_server_config: {cert_file: CERT, key_file: KEY, certs: x}\n",
     False),
    ("duplicate key", "tls_server_config:\n  cert_file: CERT\n  cert_file: CERT\n"
                      "  key_file: KEY\n", False),
    ("missing key", "tls_server_config: {cert_file: CERT}\n", False),
    ("missing cert", "tls_server_config: {key_file: KEY}\n", False),
    ("only client auth", "tls_server_config: {client_auth_type: RequireAndVerifyClientCert}\n",
     False),
    ("cert not found", "tls_server_config: {cert_file: /nonexistent, key_file: KEY}\n", False),
    ("key does not match", "tls_server_config: {cert_file: CERT, key_file: OTHERKEY}\n", False),
    ("cert is a key", "tls_server_config: {cert_file: KEY, key_file: KEY}\n", False),
    ("CA without policy", "tls_server_config: {cert_file: CERT, key_file: KEY, "
                          "client_ca_file: CA}\n", False),
    ("bad client auth", "tls_server_config: {cert_file: CERT, key_file: KEY, "
                        "client_auth_type: Sometimes}\n", False),
    ("bad version", "tls_server_config: {cert_file: CERT, key_file: KEY, min_version: SSL3}\n",
     False),
    ("insecure cipher", "tls_server_config: {cert_file: CERT, key_file: KEY, cipher_suites: "
                        "[TLS_RSA_WITH_3DES_EDE_CBC_SHA]}\n", False),
    ("CBC-SHA256 cipher", "tls_server_config: {cert_file: CERT, key_file: KEY, cipher_suites: "
                          "[TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256]}\n", False),
    ("bad curve", "tls_server_config: {cert_file: CERT, key_file: KEY, "
                  "curve_preferences: [P-256]}\n", False),
    ("header not allowed", "http_server_config:\n  headers:\n    Server: x\n", False),
    ("header name case", "http_server_config:\n  headers:\n    x-frame-options: deny\n", False),
    ("header value", "http_server_config:\n  headers:\n    X-Content-Type-Options: sniff\n",
     False),
    ("http2 not bool", "http_server_config: {http2: sometimes}\n", False),
    ("plain password", "basic_auth_users: {alice: secret}\n", False),
    ("short hash", "basic_auth_users: {alice: '$2y$10$abc'}\n", False),
    ("bad cost", f"basic_auth_users: {{alice: '{HASH.replace('$10$', '$99$')}'}}\n", False),
    ("bad version prefix", f"basic_auth_users: {{alice: '{HASH.replace('$2y', '$3y')}'}}\n",
     False),
    ("not a mapping", "- a\n", False),
    ("broken YAML", "tls_server_config: {\n", False),
]

# Where this exporter deliberately differs from promtool 2.42 (exporter-toolkit 0.8/0.9):
# (name, text, promtool's verdict, ours).  README's TLS section explains each.
DIFFERENCES: list[tuple[str, str, bool, bool]] = [
    # Newer exporter-toolkit forms, which this old promtool does not know yet.
    ("inline cert and key", "tls_server_config:\n  cert: |\nCERTPEM  key: |\nKEYPEM", False,
     True),
    ("client_allowed_sans", "tls_server_config: {cert_file: CERT, key_file: KEY, client_ca_file:"
                            " CA, client_auth_type: RequireAndVerifyClientCert, "
                            "client_allowed_sans: [client.example]}\n", False, True),
    ("rate_limit", "rate_limit: {interval: 1s, burst: 5}\n", False, True),
    # What Python's ssl cannot do: refused with the key named, never served weaker.
    ("require any cert", "tls_server_config: {cert_file: CERT, key_file: KEY, "
                         "client_auth_type: RequireAnyClientCert}\n", True, False),
    ("several curves", "tls_server_config: {cert_file: CERT, key_file: KEY, "
                       "curve_preferences: [X25519, CurveP256]}\n", True, False),
]


def _fill(text: str, pki: dict) -> str:
    server, other = pki["server"], pki["rogue_client"]
    pem = lambda p: "".join(f"    {ln}\n" for ln in p.read_text().splitlines())  # noqa: E731
    values = {"CERTPEM": pem(server.cert), "KEYPEM": pem(server.key),
              "OTHERKEY": str(other.key), "CERT": str(server.cert), "KEY": str(server.key),
              "CA": str(pki["ca"].cert)}
    # One pass, so that no replacement is itself rewritten ("CERTIFICATE" holds "CERT").
    return re.sub(r"\b(CERTPEM|KEYPEM|OTHERKEY|CERT|KEY|CA)\b", lambda m: values[m[1]], text)


def _ours(path: Path) -> bool:
    try:
        load_web_config(path)
    except ConfigError:
        return False
    return True


def _promtool(promtool: str, path: Path) -> bool:
    result = subprocess.run([promtool, "check", "web-config", str(path)], capture_output=True,
                            text=True, timeout=30)
    return result.returncode == 0


def test_promtool_check_web_config_agreement(tmp_path: Path, pki: dict) -> None:
    promtool = require_tool("promtool")
    disagreements = []
    for i, (name, text, valid) in enumerate(AGREEMENT):
        path = tmp_path / f"case{i}.yml"
        path.write_text(_fill(text, pki))
        verdicts = (_promtool(promtool, path), _ours(path))
        if verdicts != (valid, valid):
            disagreements.append((name, "promtool, ours:", verdicts))
    for i, (name, text, theirs, ours) in enumerate(DIFFERENCES):
        path = tmp_path / f"diff{i}.yml"
        path.write_text(_fill(text, pki))
        verdicts = (_promtool(promtool, path), _ours(path))
        if verdicts != (theirs, ours):
            disagreements.append((name, "promtool, ours:", verdicts))
    assert not disagreements


def test_client_allowed_sans_is_enforced(daemon_factory, tmp_path: Path, pki: dict) -> None:
    ca, server, client = pki["ca"], pki["server"], pki["client"]  # client's SAN: localhost
    base = {"cert_file": str(server.cert), "key_file": str(server.key),
            "client_ca_file": str(ca.cert), "client_auth_type": "RequireAndVerifyClientCert"}
    allowed = write_web_config(tmp_path / "allowed.yml", {"tls_server_config": {
        **base, "client_allowed_sans": ["localhost"]}})
    other = write_web_config(tmp_path / "other.yml", {"tls_server_config": {
        **base, "client_allowed_sans": ["scraper.example"]}})
    ok: RunningDaemon = daemon_factory("--interval", "1", "--web.config.file", str(allowed))
    no: RunningDaemon = daemon_factory("--interval", "1", "--web.config.file", str(other))
    ctx = client_context(ca, client)
    assert https_get(ok.port, "/metrics/summary", ctx)[0] == 200
    assert refused(no.port, ctx)


def test_tls_port_answers_plain_http_clients_without_hanging(daemon_factory, tmp_path: Path,
                                                            pki: dict) -> None:
    server = pki["server"]
    web = write_web_config(tmp_path / "web.yml", {"tls_server_config": {
        "cert_file": str(server.cert), "key_file": str(server.key)}})
    d: RunningDaemon = daemon_factory("--interval", "1", "--web.config.file", str(web))
    with socket.create_connection((d.host, d.port), timeout=20) as s:
        s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        try:
            data = s.recv(65536)
        except ConnectionResetError:
            data = b""
    assert not data.startswith(b"HTTP/1.1 200")
    assert _answers_after(d, pki)


def _answers_after(d: RunningDaemon, pki: dict) -> bool:
    return https_get(d.port, "/metrics/summary", client_context(pki["ca"]))[0] == 200
