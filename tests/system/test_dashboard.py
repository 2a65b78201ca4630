"""test_dashboard.py's tests that need fleetpy or etcd processes of its own, TLS etcd, hosts or
tools of the machine (README "Tests"); what the module covers as a whole:
tests/integration/test_dashboard.py."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from fleetpy.api import ApiServer
from fleetpy.cluster.etcd import EtcdTls
from fleetpy.live_view import LiveView
from fleetpy.registry import (
    RegistryConfig,
)

from support.cli_run import Run
from support.dashboard import READ_TOKEN
from support.paths import ROOT
from support.sim_cluster import Cluster
from support.waiting import until

ARTIFACTS = ROOT / "test-artifacts"


SLEEP = "[Service]\nExecStart=/bin/sleep 1000\n"


# What a user may put in metadata: shown as text, never run.
HOSTILE = "<img src=x onerror=window.__xss=1>"


@pytest.fixture
def tls(tmp_path: Path) -> EtcdTls:
    return EtcdTls.generate(tmp_path / "tls", client_name="dashboard")


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
