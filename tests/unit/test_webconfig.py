"""The exporter-toolkit web-config file: parsing, problems with their lines, the SSL context,
basic auth and its cache, and re-reading on change."""

from __future__ import annotations

import base64
import shutil
import ssl
from pathlib import Path

import pytest

from exporter.config import ConfigError, parse_config
from exporter.http.basicauth import BasicAuth, BcryptQueue, parse_basic
from exporter.http.ratelimit import TokenBucket
from exporter.http.webconfig import RateLimit, load_web_config
from exporter.http.webwatch import WebConfigWatcher
from tests.tlsfiles import CA, bcrypt_hash


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("pki")
    ca = CA(d / "ca")
    server = ca.issue("server")
    other = CA(d / "other", "other CA").issue("server2")
    return {"dir": d, "ca": ca.cert, "cert": server.cert, "key": server.key,
            "cert2": other.cert, "key2": other.key}


def write(tmp_path: Path, text: str, name: str = "web.yml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def problems(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as e:
        load_web_config(path)
    return e.value.problems


def test_empty_file_means_plain_http_without_auth(tmp_path: Path) -> None:
    c = load_web_config(write(tmp_path, ""))
    assert c.tls is None and c.ssl_context is None and c.users == () and c.headers == ()
    c = load_web_config(write(tmp_path, "tls_server_config: {}\nhttp_server_config: {}\n"))
    assert c.tls is None


def test_tls_with_relative_paths_and_every_setting(tmp_path: Path, pki: dict[str, Path]) -> None:
    for name in ("cert", "key", "ca"):
        shutil.copy(pki[name], tmp_path / f"{name}.pem")
    c = load_web_config(write(tmp_path, """
tls_server_config:
  cert_file: cert.pem
  key_file: key.pem
  client_auth_type: RequireAndVerifyClientCert
  client_ca_file: ca.pem
  min_version: TLS12
  max_version: TLS13
  cipher_suites: [TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, TLS_AES_128_GCM_SHA256]
  curve_preferences: [CurveP256]
  prefer_server_cipher_suites: false
http_server_config:
  http2: false
  headers:
    X-Frame-Options: deny
    Content-Security-Policy: ""
basic_auth_users:
  alice: "$2y$10$QOauhQNbBCuQDKes6eFzPeMqBSjb7Mr5DUmpZ/VcEd00UAV/LDeSi"
"""))
    assert c.tls is not None and c.tls.cert_file == str(tmp_path / "cert.pem")
    assert c.tls.client_ca_file == str(tmp_path / "ca.pem")
    ctx = c.ssl_context
    assert isinstance(ctx, ssl.SSLContext)
    assert ctx.verify_mode == ssl.CERT_REQUIRED
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_2
    assert not ctx.options & ssl.OP_CIPHER_SERVER_PREFERENCE
    tls12 = {s["name"] for s in ctx.get_ciphers() if s["protocol"] == "TLSv1.2"}
    assert tls12 == {"ECDHE-ECDSA-AES128-GCM-SHA256"}
    assert c.headers == (("X-Frame-Options", "deny"),)  # blank means unset
    assert [u for u, _ in c.users] == ["alice"]
    assert set(c.files()) == {str(tmp_path / n) for n in ("web.yml", "cert.pem", "key.pem",
                                                          "ca.pem")}


def test_inline_cert_and_key(tmp_path: Path, pki: dict[str, Path]) -> None:
    cert, key = pki["cert"].read_text(), pki["key"].read_text()
    indent = lambda s: "\n".join("    " + line for line in s.splitlines())  # noqa: E731
    c = load_web_config(write(tmp_path, f"tls_server_config:\n  cert: |\n{indent(cert)}\n"
                                        f"  key: |\n{indent(key)}\n"))
    assert c.ssl_context is not None and c.tls is not None and c.tls.files() == ()


def test_only_tls13_suites_leave_tls13_only(tmp_path: Path, pki: dict[str, Path]) -> None:
    c = load_web_config(write(tmp_path, f"tls_server_config: {{cert_file: {pki['cert']}, "
                                        f"key_file: {pki['key']}, "
                                        "cipher_suites: [TLS_AES_256_GCM_SHA384]}\n"))
    assert c.ssl_context is not None
    assert c.ssl_context.minimum_version == ssl.TLSVersion.TLSv1_3


BAD = [
    ("bogus: 1\n", "1", "bogus: unknown key"),
    ("tls_server_config:\n  certfile: x\n", "2", "tls_server_config.certfile: unknown key"),
    ("basic_auth_users:\n  a: x\n  a: y\n", "3", "basic_auth_users.a: duplicate key"),
    ("tls_server_config: {cert_file: CERT}\n", "1", "key_file: missing one of key or key_file"),
    ("tls_server_config: {key_file: KEY}\n", "1", "cert_file: missing one of cert or cert_file"),
    ("tls_server_config:\n  cert_file: CERT\n  key_file: KEY\n  client_ca_file: CA\n", "4",
     "client_ca_file: client CAs have been configured without a client auth policy"),
    ("tls_server_config:\n  cert_file: CERT\n  key_file: KEY\n  client_auth_type: Bogus\n", "4",
     "client_auth_type: invalid ClientAuth"),
    ("tls_server_config:\n  cert_file: CERT\n  key_file: KEY\n"
     "  client_auth_type: RequireAnyClientCert\n", "4", "not something Python's ssl can do"),
    ("tls_server_config:\n  cert_file: CERT\n  key_file: KEY\n  min_version: TLS14\n", "4",
     "min_version: unknown TLS version"),
    ("tls_server_config:\n  cert_file: CERT\n  key_file: KEY\n"
     "  cipher_suites: [TLS_RSA_WITH_3DES_EDE_CBC_SHA]\n", "4", "unknown cipher"),
    ("tls_server_config:\n  cert_file: CERT\n  key_file: KEY\n"
     "  curve_preferences: [CurveP256, X25519]\n", "4", "curve_preferences: Python's ssl"),
    ("tls_server_config:\n  cert_file: CERT\n  key_file: KEY\n  curve_preferences: [P256]\n",
     "4", "unknown curve"),
    ("tls_server_config:\n  cert_file: CERT\n  key_file: KEY2\n", "2",
     "cert_file: failed to load the certificate and key"),
    ("tls_server_config:\n  cert_file: /nonexistent.pem\n  key_file: KEY\n", "2",
     "cert_file: cannot read"),
    ("http_server_config:\n  headers:\n    x-frame-options: deny\n", "3", "can not be configured"),
    ("http_server_config:\n  headers:\n    X-Frame-Options: allow\n", "3",
     "invalid value for X-Frame-Options"),
    ("http_server_config:\n  http2: maybe\n", "2", "http_server_config.http2: expected true"),
    ("basic_auth_users:\n  bob: secret\n", "2", "basic_auth_users.bob: not a bcrypt hash"),
    ("basic_auth_users:\n  bob: '$2y$99$QOauhQNbBCuQDKes6eFzPeMqBSjb7Mr5DUmpZ/VcEd00UAV/LDeSi'\n",
     "2", "cost of 04 to 31"),
    ("- a\n- b\n", "1", "the top level must be a mapping"),
    ("tls_server_config: [\n", "2", "invalid YAML"),
    ("rate_limit: {interval: 1, burst: 2}\n", "1", "rate_limit.interval: expected a duration"),
    ("rate_limit: {interval: 1s}\n", "1", "rate_limit.burst: a burst of 0"),
    ("rate_limit: {interval: 1s, burst: -2}\n", "1", "rate_limit.burst: expected a whole"),
    ("rate_limit: {interval: 1s, burst: 2, per: ip}\n", "1", "rate_limit.per: unknown key"),
]


@pytest.mark.parametrize(("text", "line", "message"), BAD, ids=[b[2][:40] for b in BAD])
def test_problems_name_file_line_and_key(tmp_path: Path, pki: dict[str, Path], text: str,
                                         line: str, message: str) -> None:
    text = (text.replace("CERT", str(pki["cert"])).replace("KEY2", str(pki["key2"]))
            .replace("KEY", str(pki["key"])).replace("CA", str(pki["ca"])))
    path = write(tmp_path, text)
    found = problems(path)
    assert any(p.startswith(f"{path}:{line}: ") and message in p for p in found), found


def test_exporter_config_key_reports_the_web_files_problems(tmp_path: Path) -> None:
    write(tmp_path, "basic_auth_users:\n  bob: plain\n")
    with pytest.raises(ConfigError) as e:
        parse_config("http:\n  web_config_file: web.yml\n", str(tmp_path / "exporter.yaml"),
                     base_dir=tmp_path)
    assert e.value.problems == [
        f"{tmp_path / 'web.yml'}:2: basic_auth_users.bob: not a bcrypt hash (too short); make "
        "one with `htpasswd -nbBC 10 '' PASSWORD | tr -d ':\\n'`"]
    with pytest.raises(ConfigError) as e:
        parse_config("http:\n  web_config_file: missing.yml\n", "x.yaml", base_dir=tmp_path)
    assert e.value.problems == [f"{tmp_path / 'missing.yml'}: cannot read: No such file or "
                                "directory"]


def test_http_connection_keys() -> None:
    c = parse_config("http:\n  idle_timeout: 2m\n  max_connections: 5000\n"
                     "  request_timeout: 3s\n")
    assert (c.http.idle_timeout, c.http.max_connections, c.http.request_timeout) == (
        120.0, 5000, 3.0)
    assert c.http.ingest_allow_listed is False and c.http.web_config is None
    assert parse_config("http:\n  ingest_allow: []\n").http.ingest_allow_listed is True
    for text, message in (("http:\n  idle_timeout: 0s\n", "http.idle_timeout: must be above"),
                          ("http:\n  max_connections: 0\n", "http.max_connections: must be "
                                                              "between 1 and")):
        with pytest.raises(ConfigError) as e:
            parse_config(text, "x.yaml")
        assert e.value.problems[0].startswith(f"x.yaml:2: {message}"), e.value.problems


# --- basic auth ------------------------------------------------------------------------------


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def test_basic_auth_verdicts_and_the_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    auth = BasicAuth((("alice", bcrypt_hash("wonder")), ("bob", bcrypt_hash("builder"))))
    calls = []
    import bcrypt  # basicauth imports it when it first checks a password

    real = bcrypt.checkpw
    monkeypatch.setattr(bcrypt, "checkpw",
                        lambda pw, h: calls.append(pw) or real(pw, h))
    assert auth.cached(basic("alice", "wonder")) is None  # not verified yet
    assert auth.verify(basic("alice", "wonder")) is True
    assert auth.cached(basic("alice", "wonder")) is True
    for _ in range(5):
        assert auth.verify(basic("alice", "wonder")) is True
    assert len(calls) == 1, "a verified password was hashed again"
    assert auth.verify(basic("alice", "builder")) is False
    assert auth.verify(basic("bob", "wonder")) is False
    assert auth.verify(basic("mallory", "wonder")) is False  # checked against a dummy hash
    assert len(calls) == 4
    assert auth.cached(basic("alice", "builder")) is False
    assert auth.verify("Bearer xyz") is False and auth.cached(None) is False
    assert not any(b"wonder" in key for key in auth._cache), "a password is kept in clear"


@pytest.mark.parametrize(("header", "parsed"), [
    (basic("a", "b:c"), (b"a", b"b:c")),
    ("basic " + base64.b64encode(b"u:").decode(), (b"u", b"")),
    ("Basic !!!", None),
    ("Basic " + base64.b64encode(b"nocolon").decode(), None),
    ("Digest x", None),
    ("", None),
    ("Basic \u00e9", None),
])
def test_parse_basic(header: str, parsed: tuple[bytes, bytes] | None) -> None:
    assert parse_basic(header) == parsed


# --- re-reading on change ----------------------------------------------------------------------


def test_watcher_rereads_changed_files_and_keeps_the_old_on_error(
        tmp_path: Path, pki: dict[str, Path]) -> None:
    shutil.copy(pki["cert"], tmp_path / "cert.pem")
    shutil.copy(pki["key"], tmp_path / "key.pem")
    path = write(tmp_path, "tls_server_config: {cert_file: cert.pem, key_file: key.pem}\n")
    clock = [0.0]
    results: list[bool] = []
    watcher = WebConfigWatcher(load_web_config(path), results.append, lambda: clock[0])
    first = watcher.current()
    shutil.copy(pki["cert2"], tmp_path / "cert.pem")
    shutil.copy(pki["key2"], tmp_path / "key.pem")
    assert watcher.current() is first  # looked at again only after a second
    clock[0] += 1.5
    second = watcher.current()
    assert second is not first and results == [True]
    path.write_text("tls_server_config: {cert_file: cert.pem}\n")  # no key: invalid
    clock[0] += 1.5
    assert watcher.current() is second and results == [True, False]
    clock[0] += 1.5
    assert watcher.current() is second and results == [True, False]  # reported once


# --- rate_limit, the verdict cache under a flood, the bcrypt queue -------------------------------


@pytest.mark.parametrize(("text", "expected"), [
    ("rate_limit: {interval: 1s, burst: 5}\n", RateLimit(1.0, 5)),
    ("rate_limit: {interval: 1m30s, burst: 1}\n", RateLimit(90.0, 1)),
    ("rate_limit: {interval: 0s, burst: 5}\n", None),  # "set to 0 to disable"
    ("rate_limit:\n", None),
])
def test_rate_limit_is_read_as_exporter_toolkit_does(tmp_path: Path, text: str,
                                                     expected: RateLimit | None) -> None:
    assert load_web_config(write(tmp_path, text)).rate_limit == expected


def test_the_token_bucket_allows_a_burst_then_one_an_interval() -> None:
    now = [100.0]
    bucket = TokenBucket(2.0, 3, lambda: now[0])
    assert [bucket.allow() for _ in range(4)] == [True, True, True, False]
    assert bucket.wait_s() == pytest.approx(2.0)
    now[0] += 1.0
    assert not bucket.allow()
    now[0] += 1.0
    assert bucket.allow() and not bucket.allow()
    now[0] += 60.0  # saves up no more than the burst
    assert [bucket.allow() for _ in range(4)] == [True, True, True, False]


def test_a_full_cache_keeps_verified_good_credentials_and_drops_failures_first(
        monkeypatch: pytest.MonkeyPatch) -> None:
    auth = BasicAuth((("prom", bcrypt_hash("s3cret")),), cache_size=50)
    import bcrypt

    monkeypatch.setattr(bcrypt, "checkpw", lambda pw, h: pw == b"s3cret")  # fast, same verdicts
    assert auth.verify(basic("prom", "s3cret")) is True
    for i in range(500):  # ten times the cache in distinct wrong passwords
        assert auth.verify(basic("prom", f"guess-{i}")) is False
        assert auth.cached(basic("prom", "s3cret")) is True, f"evicted after {i} failures"
    good, failed = auth.cached_count()
    assert good == 1 and 0 < failed < 50


def test_a_cache_of_only_good_credentials_still_makes_room(
        monkeypatch: pytest.MonkeyPatch) -> None:
    users = tuple((f"u{i}", bcrypt_hash("pw")) for i in range(12))
    auth = BasicAuth(users, cache_size=10)
    import bcrypt

    monkeypatch.setattr(bcrypt, "checkpw", lambda pw, h: True)
    for i in range(12):
        assert auth.verify(basic(f"u{i}", "pw")) is True
    good, failed = auth.cached_count()
    assert failed == 0 and 0 < good <= 10
    assert auth.cached(basic("u11", "pw")) is True  # the newest stays


def test_the_bcrypt_queue_refuses_what_would_wait_too_long_and_holds_the_refusal() -> None:
    import asyncio
    import threading

    release = threading.Event()

    class SlowAuth:
        def verify(self, header: str | None) -> bool:
            release.wait(20)
            return False

    async def flood(refuse_after_s: float) -> tuple[list[bool | None], int, int]:
        queue = BcryptQueue(max_wait_s=0.2, refuse_after_s=refuse_after_s)
        queue._cost_s = 0.1  # two checks' worth of waiting
        tasks = [asyncio.ensure_future(queue.verify(SlowAuth(), "x"))  # type: ignore[arg-type]
                 for _ in range(10)]
        await asyncio.sleep(0)  # every task has asked for its place
        refused_before_any_ran = queue.refused
        release.set()
        checked = await asyncio.gather(*tasks[:3])  # 3 waiting (0.3 s > 0.2 s refuses the 4th)
        held = sum(not t.done() for t in tasks[3:])
        if refuse_after_s > 60:  # an hour: still held when the checks are done
            for t in tasks[3:]:
                t.cancel()
            await asyncio.gather(*tasks[3:], return_exceptions=True)
            results = list(checked)
        else:
            results = list(checked) + list(await asyncio.gather(*tasks[3:]))
        queue.shutdown()
        return results, refused_before_any_ran, held

    results, refused, _ = asyncio.run(flood(0.0))
    assert results == [False] * 3 + [None] * 7 and refused == 7
    # A refusal is not answered at once: a flooding client may not ask again sooner than
    # a check would have answered it (answered at once, 300 connections kept the loop busy).
    release.clear()
    results, refused, held = asyncio.run(flood(3600.0))
    assert results == [False] * 3 and refused == 7 and held == 7
