"""The status page in a real browser, in Russian: Debian's chromium driven by selenium through
chromedriver. What an operator does: log in, check a connection, import a period and watch its
progress, bind a record under review to a customer found by e-mail, open a record's story,
resolve a conflict, send a failed write again, pause and resume an integration.

Screenshots of each step go to $SYNCD_ARTIFACTS (CI keeps them) or ./artifacts.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from daemon_env import TOKEN, Env, _teardown, build_env
from trace_fake import CRM_URL, fake_trace

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.browser


def _artifacts() -> Path:
    d = Path(os.environ.get("SYNCD_ARTIFACTS") or REPO / "artifacts") / "status-page"
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
    # what a Russian user's browser asks for (headless Chromium ignores --lang for Accept-Language)
    opts.add_experimental_option("prefs", {"intl.accept_languages": "ru-RU,ru"})
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    d = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    d.set_page_load_timeout(30)
    try:
        yield d
    finally:
        d.quit()


@pytest.fixture
def page_env(tmp_path: Path) -> Iterator[Env]:
    env = build_env(tmp_path)
    # the page's trace panel against a stand-in of syncd.trace (same JSON shape)
    from syncd.daemon.http import create_app
    from syncd.sandbox.server import serve_in_thread

    env.server.stop()
    env.server = serve_in_thread(create_app(env.rt, trace=fake_trace(env.rt.store, env.crm)))
    yield env
    _teardown(env)


def _shot(d, name: str) -> None:  # type: ignore[no-untyped-def]
    height = d.execute_script("return document.documentElement.scrollHeight")
    d.set_window_size(1440, max(900, min(int(height) + 40, 4000)))
    d.save_screenshot(str(_artifacts() / f"{name}.png"))


def _click(d, css: str) -> None:  # type: ignore[no-untyped-def]
    """Click what `css` names in the integrations table, which the page's auto-refresh may swap
    under the finger: find it again when it went stale."""
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By

    for _ in range(5):
        try:
            d.find_element(By.CSS_SELECTOR, css).click()
            return
        except StaleElementReferenceException:
            continue
    raise AssertionError(f"{css} kept going stale")


def _js_errors(d) -> list[str]:  # type: ignore[no-untyped-def]
    """Script errors and failed loads, but the 401 of the wrong token typed on purpose."""
    return [e["message"] for e in d.get_log("browser") if e["level"] == "SEVERE"
            and not ("/login - " in e["message"] and "401" in e["message"])]


def test_operator_in_russian(page_env: Env, driver) -> None:  # type: ignore[no-untyped-def]
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait

    env, d = page_env, driver
    wait = WebDriverWait(d, 20, ignored_exceptions=[StaleElementReferenceException])
    conflict = env.make_conflict()
    # a customer in the shop, and the same person typed into the CRM under another e-mail: the CRM
    # may not introduce people (origin: shop), so the CRM's record waits for a person to decide
    env.shop_person("s2", name="Анна Смирнова", email="anna@example.ru", comment="постоянная")
    env.remote(env.shop).edit("order", "o1", number="1001", status="N", total="1500")
    env.settle()
    env.remote(env.crm).edit("person", "c9", name="Смирнова Анна", email="a.smirnova@mail.ru")
    env.remote(env.shop).edit("order", "o-bad", number="77", status="НЕИЗВЕСТНО", total="10")
    env.remote(env.crm).faults.append("permanent")
    env.shop_person("s3", name="Пётр Сидоров", email="petr@example.ru")
    env.settle(1)
    review = env.rt.store.list_review()
    assert [r["external_id"] for r in review] == ["c9"]
    assert len(env.rt.store.list_outbox("dead")) == 1 and len(env.rt.store.list_quarantine()) == 1

    # -- without a login: the login form, nothing of a customer -------------------------------------
    d.get(env.url + "/")
    wait.until(EC.presence_of_element_located((By.ID, "token")))
    assert d.find_element(By.TAG_NAME, "html").get_attribute("lang") == "ru"
    assert "Вход в syncd" in d.page_source
    for private in ("anna@example.ru", "Смирнова", "НЕИЗВЕСТНО", "из CRM", "из магазина", "PermanentError",
                    TOKEN):
        assert private not in d.page_source, private
    assert not d.find_elements(By.ID, "integrations")        # counts are not public by default
    _shot(d, "01-login")

    d.find_element(By.ID, "token").send_keys("неверный")
    d.find_element(By.ID, "login-submit").click()
    wait.until(EC.text_to_be_present_in_element((By.ID, "login-error"), "Неверный токен"))
    d.find_element(By.ID, "token").send_keys(TOKEN)
    d.find_element(By.ID, "login-submit").click()
    wait.until(EC.presence_of_element_located((By.ID, "integrations")))
    cookie = d.get_cookie("syncd_session")
    assert cookie and cookie["value"] != TOKEN and cookie["httpOnly"] is True and cookie.get("sameSite") == "Strict"
    assert TOKEN not in d.page_source

    # -- at a glance, in Russian, dates in Moscow time ---------------------------------------------------
    stats = env.rt.stats()["integrations"]
    body = d.find_element(By.TAG_NAME, "body").text
    for text in ("Интеграции", "Последний запуск", "Отставание", "На проверке: кто это?", "Конфликты", "Карантин",
                 "Последние запуски", "часовой пояс Europe/Moscow, UTC+03:00"):
        assert text in body, text
    for name in (env.crm, env.shop):
        row = d.find_element(By.ID, f"integration-{name}")
        assert row.find_element(By.CSS_SELECTOR, "td[data-k=created]").text == str(stats[name]["last_24h"]["created"])
        assert row.find_element(By.CSS_SELECTOR, "svg.throughput")
    assert d.find_element(By.ID, f"integration-{env.crm}").find_element(
        By.CSS_SELECTOR, "td[data-k=outbox_dead]").text == "1"
    assert "взять из " + env.crm in d.find_element(By.ID, f"conflict-{conflict['id']}").text
    assert "НЕИЗВЕСТНО" in d.find_element(By.ID, "quarantine").text
    assert "PermanentError" in d.find_element(By.ID, "dead").text
    _shot(d, "02-page")

    # -- a connection check: one line per finding, with the reason --------------------------------------
    _click(d, f"#integration-{env.shop} [data-action=check]")
    panel = d.find_element(By.ID, f"panel-{env.shop}")
    wait.until(lambda _: panel.find_elements(By.CSS_SELECTOR, ".check-result li.finding"))
    result = panel.find_element(By.CSS_SELECTOR, ".check-result").text
    assert "Все проверки пройдены." in result and f"✓ {env.shop}:" in result and "objects" in result
    _shot(d, "03-check")

    # -- auto-refresh: the table follows the store, the panel with the findings stays ---------------------
    env.shop_person("s4", name="Новый Клиент", email="new@example.ru")
    env.settle(1)
    want = str(env.rt.stats()["integrations"][env.shop]["last_24h"]["created"])
    d.execute_script("window.syncdRefresh()")
    wait.until(lambda _: d.find_element(By.CSS_SELECTOR, f"#integration-{env.shop} td[data-k=created]").text == want)
    assert panel.is_displayed() and "Все проверки пройдены." in panel.text

    # -- import a period, with its progress ------------------------------------------------------------
    for i in range(40):
        env.shop_person(f"b{i}", name=f"Покупатель {i}", email=f"buyer{i}@example.ru", comment="")
    shop_conn = env.rt.connectors[env.shop]
    # a slow source (10 batches, 5 s): the bar moves visibly even when the page's 0.7 s poll runs late on
    # a loaded machine
    shop_conn.batch_size, shop_conn.read_delay = 4, 0.5
    _click(d, f"#integration-{env.shop} [data-action=backfill-open]")
    panel.find_element(By.XPATH, ".//button[normalize-space()='30 дней']").click()
    panel.find_element(By.CSS_SELECTOR, "[data-k=start-backfill]").click()
    bar = panel.find_element(By.CSS_SELECTOR, ".progress progress")
    text = panel.find_element(By.CSS_SELECTOR, ".progress-text")
    wait.until(lambda _: "чтение" in text.text)                 # the first stream is being read
    wait.until(lambda _: 0 < int(float(bar.get_attribute("value") or 0)) < 100)
    assert "прочитано записей:" in text.text
    _shot(d, "04-backfill-progress")
    WebDriverWait(d, 60, ignored_exceptions=[StaleElementReferenceException]).until(lambda _: panel.find_element(By.CSS_SELECTOR, ".backfill").get_attribute(
        "data-state") in ("done", "failed"))
    assert panel.find_element(By.CSS_SELECTOR, ".backfill").get_attribute("data-state") == "done"
    assert int(float(bar.get_attribute("value"))) == 100
    assert "Загрузка завершена." in panel.text
    _shot(d, "05-backfill-done")
    shop_conn.read_delay = 0.0
    crm_emails = {p.get("email") for p in env.remote(env.crm).objects["person"].values()}
    assert {f"buyer{i}@example.ru" for i in range(40)} <= crm_emails    # read, then written to the CRM

    # -- the record under review, bound to the customer found by e-mail ----------------------------------------
    d.get(env.url + "/#review")
    row = d.find_element(By.ID, f"review-{review[0]['id']}")
    row.find_element(By.CSS_SELECTOR, ".entity-search input[name=q]").send_keys("ANNA@example.ru")
    row.find_element(By.CSS_SELECTOR, ".entity-search button").click()
    wait.until(lambda _: row.find_elements(By.CSS_SELECTOR, "ul.results li.entity"))
    hits = row.find_elements(By.CSS_SELECTOR, "ul.results li.entity")
    assert len(hits) == 1 and "Анна Смирнова" in hits[0].text and "anna@example.ru" in hits[0].text
    _shot(d, "06-review-search")
    hits[0].find_element(By.CSS_SELECTOR, "[data-action=bind]").click()
    wait.until(EC.presence_of_element_located((By.ID, "notice")))
    assert f"Проверка {review[0]['id']} решена" in d.find_element(By.ID, "notice").text
    assert not d.find_elements(By.ID, f"review-{review[0]['id']}")
    anna = env.rt.store.find_entity(env.shop, "person", "s2")
    assert env.rt.store.find_entity(env.crm, "person", "c9") == anna
    assert env.rt.store.list_review() == []

    # -- a record's story -----------------------------------------------------------------------------
    d.find_element(By.ID, "trace-q").send_keys("1001")
    d.find_element(By.ID, "trace-submit").click()
    wait.until(lambda _: d.find_elements(By.CSS_SELECTOR, "#trace-result .record .timeline li"))
    rec = d.find_element(By.CSS_SELECTOR, "#trace-result .record")
    assert "order" in rec.text and "изменение" in rec.text and "запись" in rec.text
    order_crm = env.rt.store.external_id(env.rt.store.find_entity(env.shop, "order", "o1"), env.crm)
    link = rec.find_element(By.CSS_SELECTOR, "a.ext-link")
    assert link.get_attribute("href") == CRM_URL.format(id=order_crm) and "открыть" in link.text
    assert "<b>" in rec.text and not rec.find_elements(By.CSS_SELECTOR, ".summary b")    # text, never markup
    _shot(d, "07-trace")

    # -- a conflict, a failed write, a pause -----------------------------------------------------------------
    row = d.find_element(By.ID, f"conflict-{conflict['id']}")
    row.find_element(By.XPATH, f".//button[normalize-space()='взять из {env.crm}']").click()
    wait.until(EC.text_to_be_present_in_element((By.ID, "notice"), f"Конфликт {conflict['id']} решён"))
    assert env.rt.store.list_conflicts() == []
    d.find_element(By.CSS_SELECTOR, "#dead [data-k=replay]").click()
    wait.until(EC.text_to_be_present_in_element((By.ID, "notice"), "1 запись возвращена в очередь."))
    assert env.rt.store.list_outbox("dead") == []
    _click(d, f"#integration-{env.crm} [data-k=pause]")
    wait.until(EC.text_to_be_present_in_element((By.ID, "notice"), "приостановлена"))
    assert env.rt.is_paused(env.crm)
    assert "приостановлена" in d.find_element(By.ID, f"integration-{env.crm}").text
    _shot(d, "08-paused")
    _click(d, f"#integration-{env.crm} [data-k=resume]")
    wait.until(EC.text_to_be_present_in_element((By.ID, "notice"), "возобновлена"))
    assert not env.rt.is_paused(env.crm)
    assert _js_errors(d) == []
    env.settle()
    assert env.remote(env.shop).objects["person"]["s1"]["comment"] == "из CRM"
