"""The dashboard of `fleetpy api` (fleetpy/api/dashboard.py): in a real headless Chromium
(Debian's chromium + chromium-driver, driven by Selenium) against a real etcd, an engine and
simulated hosts in this process; and over plain HTTP: who may read it, and its server-sent
events following the engine leader and deployment records.

The browser test writes its screenshots to its tmp_path (dashboard.png, and
dashboard-moving.png taken while a dead machine's units move) and copies them to
test-artifacts/ at the top of the checkout when that folder can be made and written.
"""

from __future__ import annotations

import http.client
import json
import shutil
import ssl
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import pytest

from fleetpy.api import ApiServer
from fleetpy.api.dashboard import DashboardFeed
from fleetpy.cluster.etcd import EtcdTls
from fleetpy.registry import (
    DeploymentRecord,
    DeploymentSession,
    Registry,
    RegistryConfig,
    WatchBatch,
)
from fleetpy.view import LiveView

from support.api_fixtures import Api, UnixConnection
from support.cli_run import Run
from support.sim_cluster import Cluster
from support.waiting import until

ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
READ_TOKEN = "ro-dashboard-0123456789abcdef"
WRITE_TOKEN = "rw-dashboard-0123456789abcdef"
SLEEP = "[Service]\nExecStart=/bin/sleep 1000\n"
# What a user may put in metadata: shown as text, never run.
HOSTILE = "<img src=x onerror=window.__xss=1>"


@pytest.fixture
def tls(tmp_path: Path) -> EtcdTls:
    return EtcdTls.generate(tmp_path / "tls", client_name="dashboard")


@pytest.fixture
def dashboard(
    api: Api,
    tls: EtcdTls,
    tmp_path: Path,
) -> Callable[[], tuple[ApiServer, LiveView]]:
    """`fleetpy api` on 127.0.0.1 with TLS, a read-write and a read-only token."""
    (tmp_path / "rw").write_text(WRITE_TOKEN + "\n")
    (tmp_path / "ro").write_text(READ_TOKEN + "\n")
    return lambda: api(
        listen="127.0.0.1:0",
        cert_file=str(tls.cert_file),
        key_file=str(tls.key_file),
        token_file=str(tmp_path / "rw"),
        read_only_token_file=str(tmp_path / "ro"),
    )


def https(server: ApiServer, tls: EtcdTls) -> http.client.HTTPSConnection:
    context = ssl.create_default_context(cafile=str(tls.ca_file))
    return http.client.HTTPSConnection("127.0.0.1", server.address[1], context=context, timeout=10)


def get(
    server: ApiServer, tls: EtcdTls, path: str, headers: dict[str, str] | None = None
) -> tuple[int, http.client.HTTPResponse, bytes]:
    conn = https(server, tls)
    conn.request("GET", path, headers=headers or {})
    response = conn.getresponse()
    body = response.read() if response.getheader("Content-Type") != "text/event-stream" else b""
    return response.status, response, body


def first_view(response: http.client.HTTPResponse) -> dict[str, Any]:
    """The first `event: view` message of an event stream, as the document it carries."""
    event, data = "", []
    while True:
        line = response.readline().decode()
        assert line, "the stream ended before a view"
        line = line.rstrip("\n")
        if line.startswith("event: "):
            event = line[len("event: ") :]
        elif line.startswith("data: "):
            data.append(line[len("data: ") :])
        elif line == "" and event == "view":
            return json.loads("\n".join(data))  # type: ignore[no-any-return]


# ----------------------------------------------------------------------------- over HTTP


def test_who_may_read_the_dashboard(
    dashboard: Callable[[], tuple[ApiServer, LiveView]], tls: EtcdTls
) -> None:
    server, _ = dashboard()
    # Without credentials: nothing but the script and style sheet (no cluster data in them).
    for path in ("/", "/events", "/dashboard.json", "/?token=wrong-0123456789abcdef"):
        assert get(server, tls, path)[0] == 401, path
    status, response, script = get(server, tls, "/assets/dashboard.js")
    assert status == 200 and response.getheader("Content-Type", "").startswith("text/javascript")
    assert b"innerHTML" not in script  # data reaches the page as text only
    assert get(server, tls, "/assets/dashboard.css")[0] == 200
    assert get(server, tls, "/assets/nope.js")[0] == 404

    # A read-only token as a header, as ?token= (which sets the cookie), or as that cookie.
    bearer = {"Authorization": f"Bearer {READ_TOKEN}"}
    status, response, page = get(server, tls, "/", bearer)
    assert status == 200 and b"assets/dashboard.js" in page
    assert "script-src 'self'" in response.getheader("Content-Security-Policy", "")
    assert response.getheader("Cache-Control") == "no-store"
    assert response.getheader("Set-Cookie") is None
    status, response, _ = get(server, tls, f"/?token={READ_TOKEN}")
    cookie = response.getheader("Set-Cookie", "")
    # Under TLS a __Host- cookie: Secure, Path=/ and no Domain, or the browser drops it.
    assert status == 200 and cookie.startswith(f"__Host-fleetpy_token={READ_TOKEN};")
    assert all(flag in cookie for flag in ("HttpOnly", "SameSite=Strict", "Secure", "Path=/"))
    assert "domain" not in cookie.lower()
    # Another site's cookie that does not parse (localhost is shared) loses ours nothing.
    with_cookie = {"Cookie": f'other={{"a": 1}}; __Host-fleetpy_token={READ_TOKEN}'}
    status, response, _ = get(server, tls, "/events", with_cookie)
    assert status == 200 and response.getheader("Content-Type") == "text/event-stream"
    assert response.getheader("Cache-Control") == "no-store"
    doc = first_view(response)
    assert doc["units"] == [] and doc["machines"] == [] and "leader" in doc
    response.close()
    status, response, body = get(server, tls, f"/dashboard.json?token={READ_TOKEN}")
    assert status == 200 and json.loads(body)["revision"] == doc["revision"]
    assert response.getheader("Cache-Control") == "no-store"  # cluster data
    spaced = {"Cookie": f"a=b c; __Host-fleetpy_token={READ_TOKEN}; z=1"}
    assert get(server, tls, "/dashboard.json", spaced)[0] == 200
    # Without TLS the cookie has another name: not taken under TLS.
    assert get(server, tls, "/dashboard.json", {"Cookie": f"fleetpy_token={READ_TOKEN}"})[0] == 401

    # The dashboard is read-only, and a token in a URL or cookie never reaches fleet's API.
    conn = https(server, tls)
    conn.request("POST", "/", b"", bearer)
    assert conn.getresponse().status == 405
    assert get(server, tls, f"/fleet/v1/units?token={READ_TOKEN}")[0] == 401
    read_cookie = {"Cookie": f"__Host-fleetpy_token={READ_TOKEN}"}
    assert get(server, tls, "/fleet/v1/units", read_cookie)[0] == 401
    assert get(server, tls, "/fleet/v1/units", {"Authorization": f"Bearer {WRITE_TOKEN}"})[0] == 200
    # A read-write token is not taken from a URL or a cookie at all, not even to read.
    for path, headers in (
        (f"/?token={WRITE_TOKEN}", {}),
        (f"/events?token={WRITE_TOKEN}", {}),
        ("/dashboard.json", {"Cookie": f"__Host-fleetpy_token={WRITE_TOKEN}"}),
    ):
        status, response, body = get(server, tls, path, headers)
        assert status == 401 and response.getheader("Set-Cookie") is None, path
        assert "use a read-only token" in json.loads(body)["error"]["message"]
    assert get(server, tls, "/?token=a%0d%0aSet-Cookie:%20x")[0] == 401  # no header injection
    # HEAD of the stream: its headers, and the connection is free at once.
    conn = https(server, tls)
    conn.request("HEAD", "/events", headers=bearer)
    head = conn.getresponse()
    assert head.status == 200 and head.getheader("Content-Type") == "text/event-stream"


def test_without_tls_the_cookie_is_fleetpy_token(
    api: Api,
    tmp_path: Path,
) -> None:
    """An --insecure listener with read-only tokens: the cookie keeps its plain name (a
    __Host- cookie needs Secure, which plain HTTP cannot set)."""
    (tmp_path / "ro").write_text(READ_TOKEN + "\n")
    server, _ = api(listen="127.0.0.1:0", insecure=True, read_only_token_file=str(tmp_path / "ro"))
    conn = http.client.HTTPConnection("127.0.0.1", server.address[1], timeout=10)
    conn.request("GET", f"/dashboard.json?token={READ_TOKEN}")
    response = conn.getresponse()
    response.read()
    cookie = response.getheader("Set-Cookie", "")
    assert response.status == 200 and cookie.startswith(f"fleetpy_token={READ_TOKEN};")
    assert "Secure" not in cookie and "HttpOnly" in cookie
    conn.request("GET", "/dashboard.json", headers={"Cookie": f"fleetpy_token={READ_TOKEN}"})
    response = conn.getresponse()
    response.read()
    assert response.status == 200


class _HeldRegistry:
    """A registry whose second leader-and-deployments read (a resync in the feed's thread)
    waits for `release`; it counts the watches started and cancelled."""

    def __init__(self) -> None:
        self.reads = 0
        self.resyncing = threading.Event()
        self.release = threading.Event()
        self.live: set[int] = set()
        self.started = 0

    def read_leader_and_deployments(self) -> tuple[None, dict[str, DeploymentRecord], int]:
        self.reads += 1
        if self.reads == 2:
            self.resyncing.set()
            assert self.release.wait(30)
        return None, {}, 1

    def _watch(self, callback: Any, start: int) -> Callable[[], None]:
        self.started += 1
        watch = self.started
        self.live.add(watch)
        return lambda: self.live.discard(watch)

    watch_engine = watch_deployments = _watch


def test_closing_the_feed_mid_resync_leaves_no_watch(
    registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    """close() while the feed's thread reads for a resync: the watches that resync starts
    once its read returns are cancelled too."""
    held = _HeldRegistry()
    live = LiveView(registry)
    try:
        feed = DashboardFeed(live, cast(Registry, held)).start()
        assert held.live == {1, 2}
        feed._on(WatchBatch((), 0, error=RuntimeError("watch broke")))
        assert held.resyncing.wait(30)  # the thread is in the read; its old watches gone
        assert held.live == set()
        thread = feed._thread
        assert thread is not None
        join = thread.join

        def releasing_join(timeout: float | None = None) -> None:
            held.release.set()  # the read returns now, while close() waits for the thread
            join(timeout)

        monkeypatch.setattr(thread, "join", releasing_join)
        feed.close()
        held.release.set()
        join(10)
        assert not thread.is_alive()
        assert held.started == 4 and held.live == set()
    finally:
        live.close()


def test_the_stream_follows_the_leader_and_deployments(
    api: Api,
    registry_config: RegistryConfig,
    tmp_path: Path,
) -> None:
    """The feed's own watches: an engine elected, and gone, after the dashboard started;
    a deployment's record written by an apply."""
    sock = str(tmp_path / "api.sock")
    api(listen=sock)
    conn = UnixConnection(sock)
    conn.request("GET", "/events")
    stream = conn.getresponse()
    assert first_view(stream)["leader"] is None
    cluster = Cluster(registry_config)
    try:
        engine = cluster.engine()
        until(lambda: first_view(stream)["leader"] == engine.candidate, what="leader shown")
        session = DeploymentSession(DeploymentRecord("shop"))
        cluster.registry.update_deployment(session, applying="c2", message="")
        until(
            lambda: (
                [(d["name"], d["applying"], d["target"]) for d in first_view(stream)["deployments"]]
                == [("shop", "c2", "c2")]
            ),
            what="the deployment shown",
        )
        engine.stop()
        until(lambda: first_view(stream)["leader"] is None, what="no leader shown")
    finally:
        cluster.close()
    stream.close()


# ----------------------------------------------------------------------------- browser


UNITS_JS = """
return Array.from(document.querySelectorAll('#units tbody tr[data-unit]')).map(tr => ({
    name: tr.dataset.unit, phase: tr.dataset.phase,
    machine: tr.querySelector('td.machine').textContent,
    detail: tr.querySelector('td.detail').textContent}));
"""
# Remembers every (phase, machine) each unit row showed, however briefly.
OBSERVE_JS = """
window.__seen = {};
const record = () => {
    for (const tr of document.querySelectorAll('#units tbody tr[data-unit]')) {
        const seen = (window.__seen[tr.dataset.unit] = window.__seen[tr.dataset.unit] || []);
        const now = tr.dataset.phase + '@' + tr.querySelector('td.machine').textContent;
        if (seen[seen.length - 1] !== now) seen.push(now);
    }
};
new MutationObserver(record).observe(document.querySelector('#units tbody'), {childList: true});
record();
"""


def chromium() -> Any:
    """Debian's headless Chromium through its chromedriver (nothing downloaded)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    binary, driver = shutil.which("chromium"), shutil.which("chromedriver")
    assert binary and driver, "chromium and chromium-driver (scripts/setup.sh installs them)"
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for arg in (
        "--headless=new",
        "--no-sandbox",  # root in CI
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--ignore-certificate-errors",  # the test's own CA
        "--window-size=1400,1500",
    ):
        options.add_argument(arg)
    return webdriver.Chrome(service=Service(executable_path=driver), options=options)


def save_screenshot(browser: Any, path: Path) -> None:
    assert browser.save_screenshot(str(path)), path
    try:
        ARTIFACTS.mkdir(exist_ok=True)
        shutil.copy(path, ARTIFACTS / path.name)
    except OSError:
        pass  # a read-only checkout: the copy under tmp_path stays


def test_dashboard_in_chromium(
    registry_config: RegistryConfig,
    dashboard: Callable[[], tuple[ApiServer, LiveView]],
    run: Run,
    units_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    monkeypatch.setenv("SE_OFFLINE", "true")  # Selenium Manager must not fetch anything
    cluster = Cluster(registry_config)
    browser = None
    try:
        cluster.agent("m2", role="db")
        engine = cluster.engine()
        server, _ = dashboard()
        browser = chromium()
        browser.get(f"https://127.0.0.1:{server.address[1]}/?token={READ_TOKEN}")

        def units() -> dict[str, dict[str, str]]:
            return {row["name"]: row for row in browser.execute_script(UNITS_JS)}

        def text(selector: str) -> str | None:
            """What the page shows there (innerText: rendered text), read in one step: the
            rows are rebuilt on every snapshot, so element handles go stale."""
            return browser.execute_script(  # type: ignore[no-any-return]
                "const e = document.querySelector(arguments[0]); return e && e.innerText;",
                selector,
            )

        until(lambda: text("#connection") == "live", what="the page to get its first snapshot")
        until(lambda: text("#leader") == engine.candidate, what="the engine leader shown")
        assert "token" not in browser.current_url  # kept out of the address bar
        browser.execute_script("window.__sameDocument = true;" + OBSERVE_JS)

        # Started from the CLI: the units appear, then turn active, without a reload.
        (units_dir / "hello.service").write_text(SLEEP)
        (units_dir / "pinned.service").write_text(SLEEP + "\n[X-Fleet]\nMachineMetadata=role=db\n")
        (units_dir / "web@.service").write_text(SLEEP + "\n[X-Fleet]\nMachineMetadata=role=web\n")
        result = run(
            "start",
            "--no-block",
            *(str(units_dir / n) for n in ("hello.service", "pinned.service")),
        )
        assert result.exit_code == 0, result.output
        until(
            lambda: (
                {n: u["phase"] for n, u in units().items()}
                == {"hello.service": "active", "pinned.service": "active"}
            ),
            what="hello and pinned shown active on m2",
        )
        assert units()["hello.service"]["machine"] == "m2"
        cluster.agent("m1", role="web", note=HOSTILE)
        cluster.agent("m3", role="web")
        assert run("submit", str(units_dir / "web@.service")).exit_code == 0
        result = run("start", "web@1.service", "web@2.service")
        assert result.exit_code == 0, result.output
        deploy = tmp_path / "deploy"
        deploy.mkdir()
        (deploy / "app.service.j2").write_text(
            SLEEP + "\n[X-Fleet]\nMachineMetadata=role=web\n# {{ version }}\n"
        )
        (deploy / "fleetpy.yaml").write_text(
            "name: shop\nvalues: {version: '1'}\n"
            "units:\n  - {name: app@.service, template: app.service.j2, instances: 2}\n"
            "rollout: {max_unavailable: 1, min_ready: 0, timeout: 30}\n"
        )
        result = run("apply", str(deploy), "--commit", "c0ffee1234567890")
        assert result.exit_code == 0, result.output
        running = ["app@1.service", "app@2.service", "hello.service", "pinned.service"]
        running += ["web@1.service", "web@2.service"]
        until(
            lambda: (
                {n: u["phase"] for n, u in units().items()}
                == {**dict.fromkeys(running, "active"), "web@.service": "inactive"}
            ),
            what="the units shown active (the template submitted only)",
        )
        shop = '#deployments tr[data-deployment="shop"]'
        until(
            lambda: (
                [text(f"{shop} td.{c}") for c in ("commit", "applying", "updated", "ready")]
                == ["c0ffee123456", "", "2/2", "2/2"]
            ),
            what="the rollout shown done",
        )
        assert f"note={HOSTILE}" in str(text('#machines tr[data-machine="m1"] td.metadata'))
        assert browser.execute_script("return window.__xss") is None

        # Filters.
        def shown(table: str, key: str) -> list[str]:
            return sorted(
                browser.execute_script(
                    "return Array.from(document.querySelectorAll(arguments[0]))"
                    ".map(tr => tr.getAttribute(arguments[1]));",
                    f"#{table} tbody tr[data-{key}]",
                    f"data-{key}",
                )
            )

        everything = shown("units", "unit")
        metadata = browser.find_element(By.ID, "filter-metadata")
        metadata.send_keys("role=web")
        assert shown("machines", "machine") == ["m1", "m3"]
        assert shown("units", "unit") == [
            "app@1.service",
            "app@2.service",
            "web@1.service",
            "web@2.service",
        ]
        metadata.clear()
        metadata.send_keys("role=db")
        assert shown("machines", "machine") == ["m2"]
        assert shown("units", "unit") == ["hello.service", "pinned.service"]
        metadata.clear()
        Select(browser.find_element(By.ID, "filter-machine")).select_by_value("m2")
        assert shown("units", "unit") == ["hello.service", "pinned.service"]
        assert shown("machines", "machine") == ["m2"]
        Select(browser.find_element(By.ID, "filter-machine")).select_by_value("")
        Select(browser.find_element(By.ID, "filter-phase")).select_by_value("unplaced")
        assert shown("units", "unit") == []
        Select(browser.find_element(By.ID, "filter-phase")).select_by_value("active")
        assert shown("units", "unit") == running
        browser.find_element(By.ID, "filter-name").send_keys("web@")
        assert shown("units", "unit") == ["web@1.service", "web@2.service"]
        browser.find_element(By.ID, "filter-name").clear()
        Select(browser.find_element(By.ID, "filter-phase")).select_by_value("")
        assert shown("units", "unit") == everything

        # m2 dies: its units show as moving, then hello runs elsewhere and pinned (only m2
        # has role=db) waits, unplaced, with the engine's reason.
        cluster.agents.pop("m2").stop(revoke=False)
        until(lambda: units()["hello.service"]["phase"] == "moving", timeout=15, what="moving")
        save_screenshot(browser, tmp_path / "dashboard-moving.png")
        until(
            lambda: (
                units()["hello.service"]["phase"] == "active"
                and units()["hello.service"]["machine"] in ("m1", "m3")
            ),
            timeout=20,
            what="hello active on m1 or m3",
        )
        until(lambda: units()["pinned.service"]["phase"] == "unplaced", what="pinned unplaced")
        assert "role=db" in units()["pinned.service"]["detail"]
        reason = text('#unplaced tr[data-unit="pinned.service"] td.reason')
        assert "role=db" in str(reason)
        assert shown("machines", "machine") == ["m1", "m3"]
        seen = browser.execute_script("return window.__seen")
        assert "moving@m2" in seen["hello.service"] and "moving@m2" in seen["pinned.service"]
        assert seen["hello.service"][-1].startswith("active@m")
        assert browser.execute_script("return window.__sameDocument") is True  # never reloaded
        save_screenshot(browser, tmp_path / "dashboard.png")
        assert (tmp_path / "dashboard.png").stat().st_size > 10_000
    finally:
        if browser is not None:
            browser.quit()
        cluster.close()
