"""The status page in a real browser: Debian's chromium driven by selenium through chromedriver."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from daemon_env import TOKEN, Env

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.browser


def _artifacts() -> Path:
    d = Path(os.environ.get("SYNCD_ARTIFACTS") or REPO / "artifacts")
    d.mkdir(parents=True, exist_ok=True)
    return d


@pytest.fixture
def driver(tmp_path: Path) -> Iterator[object]:
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not os.path.exists(p)]
    if missing:
        msg = (f"browser test needs Debian's chromium and chromedriver; missing {', '.join(missing)} "
               "(apt-get install -y chromium chromium-driver)")
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--no-first-run", f"--user-data-dir={tmp_path / 'chromium-profile'}", "--window-size=1440,1400",
                "--lang=ru-RU"):
        opts.add_argument(arg)
    d = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    d.set_page_load_timeout(30)
    try:
        yield d
    finally:
        d.quit()


def _full_screenshot(d, path: Path) -> None:  # type: ignore[no-untyped-def]
    height = d.execute_script("return document.documentElement.scrollHeight")
    d.set_window_size(1440, max(900, min(int(height) + 40, 4000)))
    d.save_screenshot(str(path))


def test_status_page_resolve_conflict_in_browser(env: Env, driver) -> None:  # type: ignore[no-untyped-def]
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait

    d = driver
    conflict = env.make_conflict()
    # something in each section, so the page (and the screenshot) shows them all
    env.remote(env.shop).edit("order", "o-bad", number="77", status="НЕИЗВЕСТНО", total="10")
    env.remote(env.crm).edit("person", "c9", name="Анна Смирнова", email="anna@example.ru")
    env.remote(env.crm).faults.append("permanent")
    env.shop_person("s2", name="Пётр Сидоров", email="petr@example.ru", comment="новый")
    env.settle(1)
    stats = env.rt.stats()["integrations"]

    d.get(env.url + "/")
    wait = WebDriverWait(d, 15)
    assert "syncd" in d.title
    for name in (env.crm, env.shop):
        row = d.find_element(By.ID, f"integration-{name}")
        assert name in row.text
        created = row.find_element(By.CSS_SELECTOR, "td[data-k=created]").text
        assert created == str(stats[name]["counts"]["created"])
    shop_row = d.find_element(By.ID, f"integration-{env.shop}")
    assert shop_row.find_element(By.CSS_SELECTOR, "td[data-k=created]").text == "2"
    assert d.find_element(By.ID, f"integration-{env.crm}").find_element(
        By.CSS_SELECTOR, "td[data-k=outbox_dead]").text == "1"
    row = d.find_element(By.ID, f"conflict-{conflict['id']}")
    assert "person.comment" in row.text and "из CRM" in row.text and "из магазина" in row.text
    assert "review" in row.text
    assert "НЕИЗВЕСТНО" in d.find_element(By.ID, "quarantine").text
    assert "anna@example.ru" in d.find_element(By.ID, "review").text
    assert "PermanentError" in d.find_element(By.ID, "dead").text
    assert TOKEN not in d.page_source

    # log in through the form
    d.find_element(By.ID, "login-link").click()
    wait.until(EC.presence_of_element_located((By.ID, "token")))
    d.find_element(By.ID, "token").send_keys(TOKEN)
    d.find_element(By.ID, "login-submit").click()
    wait.until(EC.presence_of_element_located((By.ID, "integrations")))
    assert d.current_url.rstrip("/") == env.url
    cookie = d.get_cookie("syncd_session")
    assert cookie and cookie["value"] != TOKEN and cookie["httpOnly"] is True
    assert cookie.get("sameSite") == "Strict"
    assert TOKEN not in d.page_source
    _full_screenshot(d, _artifacts() / "status-page.png")

    # resolve: take the crm's value
    row = d.find_element(By.ID, f"conflict-{conflict['id']}")
    row.find_element(By.XPATH, f".//button[normalize-space()='take {env.crm}']").click()
    wait.until(EC.presence_of_element_located((By.ID, "notice")))
    assert not d.find_elements(By.ID, f"conflict-{conflict['id']}")
    assert f"conflict {conflict['id']} resolved" in d.find_element(By.ID, "notice").text
    assert env.rt.store.list_conflicts() == []
    resolved = env.rt.store.list_conflicts("resolved")
    assert [c["id"] for c in resolved] == [conflict["id"]] and resolved[0]["winner"] == env.crm

    # replay the dead letter from the page, too
    d.find_element(By.ID, "dead").find_element(By.XPATH, ".//button[normalize-space()='replay']").click()
    wait.until(EC.text_to_be_present_in_element((By.ID, "notice"), "put back in the queue"))
    assert env.rt.store.list_outbox("dead") == []
    _full_screenshot(d, _artifacts() / "status-page-after.png")

    env.settle()
    assert env.remote(env.shop).objects["person"]["s1"]["comment"] == "из CRM"
