"""Settings, health, describe(), record URLs, the site a key must name."""

from __future__ import annotations

import pytest
from pydantic import ValidationError
from rchelpers import Account, op

from connectors.retailcrm import RetailCRMSettings, connector
from syncd.errors import PermanentError


def test_settings_validation() -> None:
    s = RetailCRMSettings(url="https://shop.retailcrm.ru/", api_key="s3cret-key")
    assert s.url == "https://shop.retailcrm.ru" and s.rate == 10 and s.burst == 10 and s.history_limit == 100
    assert s.origin_system == "shop" and s.site is None and "s3cret" not in repr(s)
    assert RetailCRMSettings(url="http://127.0.0.1:8080", api_key="k").url.startswith("http://127.0.0.1")
    for bad in ({"url": "http://shop.retailcrm.ru", "api_key": "k"},            # plain http off loopback
                {"url": "shop.retailcrm.ru", "api_key": "k"},
                {"url": "https://shop.retailcrm.ru", "api_key": "k", "history_limit": 30},
                {"url": "https://shop.retailcrm.ru", "api_key": "k", "rate": 0},
                {"url": "https://shop.retailcrm.ru", "api_key": "k", "timezone": "Mars/Olympus"},
                {"url": "https://shop.retailcrm.ru", "api_key": "k", "apikey": "typo"},
                {"url": "https://shop.retailcrm.ru"}):
        with pytest.raises(ValidationError):
            RetailCRMSettings(**bad)
    assert connector.type == "retailcrm" and connector.settings is RetailCRMSettings


def test_health_and_record_urls(account: Account) -> None:
    conn = account.connector()
    h = conn.health()
    assert h.ok and h.detail == f"{account.url} site shop"
    assert conn.record_url("order", "7") == f"{account.url}/orders/7/edit"
    assert conn.record_url("customer", "3") == f"{account.url}/customers/3"
    assert conn.record_url("task", "1") is None
    wrong = account.connector(site="nope").health()
    assert not wrong.ok and "nope" in wrong.detail


def test_site_required_when_the_key_reaches_several_sites(account: Account) -> None:
    account.ctl("POST", "/reference/sites", {"code": "outlet", "name": "Аутлет"})
    conn = account.connector()
    h = conn.health()
    assert not h.ok and "shop, outlet" in h.detail and "`site`" in h.detail
    with pytest.raises(PermanentError) as err:
        conn.write(op("customer", {"firstName": "Анна"}, unsent=True))
    assert "Parameter 'site' is missing" in str(err.value) and "set `site`" in str(err.value)
    assert account.sb.customers == {}
    # with the site named, the write lands on it
    res = account.connector(site="outlet").write(op("customer", {"firstName": "Анна"}, unsent=True))
    assert account.sb.customers[int(res.external_id)]["site"] == "outlet"


def test_describe(account: Account) -> None:
    account.ctl("POST", "/custom-fields", {"entity": "order", "code": "from_shop", "type": "boolean"})
    account.ctl("POST", "/custom-fields", {"entity": "customer", "code": "loyalty"})
    account.ctl("POST", "/reference/statuses", {"code": "prepayed", "name": "Предоплата", "group": "approval",
                                                "ordering": 5})
    s = account.connector().describe()
    assert {"number", "status", "items", "delivery_cost", "customer_id", "custom_from_shop"} <= s.kinds["order"]
    assert {"phones", "custom_loyalty"} <= s.kinds["customer"] and "custom_from_shop" not in s.kinds["customer"]
    assert {"INN", "nickName"} <= s.kinds["customer_corporate"] and "performerId" in s.kinds["task"]
    assert s.pipelines["main"] == ["new", "prepayed", "client-confirmed", "assembling", "delivering", "complete",
                                   "cancel-other"]
    assert s.values["order.status"] == set(s.pipelines["main"])
    assert s.values["order.orderMethod"] == {"shopping-cart", "phone", "one-click"}
    assert s.users["2"] == {"name": "Ирина Петрова", "active": True, "present": True, "email": "irina@shop.example"}
    assert s.names["user"]["irina@shop.example"] == "2" and s.names["user"]["Петрова Ирина"] == "2"
    assert s.names["stage"]["Выполнен"] == "complete"
    assert s.values["order.managerId"] == {"2", "3"}
