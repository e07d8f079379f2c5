"""The sandbox portal over HTTPS on loopback, as the real cloud requires, checked with the official SDK
b24pysdk unchanged (it builds `https://{domain}/rest/{user}/{code}/{method}.json` and trusts what
`requests` trusts) and with syncd's own Bitrix24 connector: list with paging, batch, add/update, errors.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from b24pysdk import BitrixWebhook, Client
from b24pysdk.errors import BitrixAPIBadRequest, BitrixAPIError, BitrixAPINotFound

from connectors.bitrix24 import Bitrix24Connector, Bitrix24Settings
from syncd.connector import WriteOp
from syncd.errors import PermanentError
from syncd.sandbox.bitrix24 import start


@pytest.fixture(scope="module")
def portal() -> Iterator[Any]:
    h = start(rate_limit=False, https=True)
    yield h
    h.stop()


@pytest.fixture
def trusted(portal: Any, monkeypatch: pytest.MonkeyPatch) -> str:
    """The sandbox's CA trusted the way a deployment trusts a private CA: REQUESTS_CA_BUNDLE."""
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", portal.extra["ca_bundle"])
    return str(portal.extra["ca_bundle"])


def _info(portal: Any) -> dict[str, Any]:
    return portal.extra["state"].portal().info()


@pytest.fixture
def client(portal: Any, trusted: str) -> Client:
    info = _info(portal)
    token = BitrixWebhook(domain=f"127.0.0.1:{portal.port}", webhook_token=f"{info['user_id']}/{info['webhook_code']}")
    return Client(token)


def test_the_portal_speaks_https_with_a_certificate_only_its_ca_vouches_for(portal: Any, monkeypatch) -> None:
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    assert portal.url.startswith("https://127.0.0.1:")
    with pytest.raises(requests.exceptions.SSLError):
        requests.post(portal.extra["webhook_url"] + "profile.json", json={}, timeout=10)
    r = requests.post(portal.extra["webhook_url"] + "profile.json", json={}, timeout=10,
                      verify=portal.extra["ca_bundle"])
    assert r.status_code == 200 and r.json()["result"]["ID"] == "1"
    # the portal reports its https address where Bitrix24 does (events' client_endpoint, token answers)
    assert portal.extra["state"].portal().base_url == portal.url


def test_sdk_add_update_get_and_errors(client: Client) -> None:
    did = client.crm.deal.add(fields={"TITLE": "Заказ №1001", "OPPORTUNITY": 1500}).result
    assert isinstance(did, int)
    assert client.crm.deal.update(bitrix_id=did, fields={"STAGE_ID": "WON"}).result is True
    deal = client.crm.deal.get(bitrix_id=did).result
    assert (deal["TITLE"], deal["STAGE_ID"], deal["CLOSED"], deal["OPPORTUNITY"]) == \
        ("Заказ №1001", "WON", "Y", "1500.00")
    with pytest.raises(BitrixAPINotFound) as nf:
        _ = client.crm.deal.get(bitrix_id=999999).result
    assert nf.value.error == "ERROR_NOT_FOUND"
    with pytest.raises(BitrixAPIBadRequest) as bad:
        _ = client.crm.deal.update(bitrix_id=did, fields={"STAGE_ID": "NO_SUCH_STAGE"}).result
    assert bad.value.error == "ERROR_CORE" and "NO_SUCH_STAGE" in bad.value.error_description
    with pytest.raises(BitrixAPIError):
        _ = client.crm.contact.add(fields={"EMAIL": [{"VALUE": "not-an-e-mail", "VALUE_TYPE": "WORK"}]}).result


def test_sdk_lists_page_by_next_and_by_id(client: Client) -> None:
    batch = {f"c{i}": client.crm.contact.add(fields={"NAME": f"Клиент {i}", "SOURCE_ID": "STORE"})
             for i in range(120)}
    added = client.call_batches(batch).result
    assert len(added.result) == 120 and not added.result_error
    first = client.crm.contact.list(select=["ID", "NAME"], filter={"SOURCE_ID": "STORE"}, order={"ID": "ASC"})
    assert len(first.result) == 50 and first.response.next == 50 and first.response.total == 120
    every = client.crm.contact.list(select=["ID", "NAME"], filter={"SOURCE_ID": "STORE"}).as_list().result
    assert len(every) == 120 and len({c["ID"] for c in every}) == 120
    fast = list(client.crm.contact.list(select=["ID", "NAME"], filter={"SOURCE_ID": "STORE"}).as_list_fast().result)
    assert [int(c["ID"]) for c in fast] == sorted(int(c["ID"]) for c in every)


def test_sdk_batch_results_and_per_command_errors(client: Client) -> None:
    a = client.crm.deal.add(fields={"TITLE": "A"}).result
    res = client.call_batch({"ok": client.crm.deal.get(bitrix_id=a), "missing": client.crm.deal.get(bitrix_id=987654)},
                            halt=False).result
    assert res.result["ok"]["TITLE"] == "A"
    assert res.result_error["missing"]["error"] == "ERROR_NOT_FOUND"
    assert "missing" not in res.result and "ok" in res.result_time


# -- syncd's own connector over the same HTTPS -------------------------------------------------------
def _op(kind: str, key: str, fields: dict[str, Any], ext: str | None = None) -> WriteOp:
    return WriteOp(op_id=f"op-{key}", system="crm", kind=kind, op="create" if ext is None else "update",
                   entity="order", entity_id=key, external_id=ext, fields=fields, external_key=f"syncd-{key}")


def test_syncd_connector_over_https_trusting_through_the_environment(portal: Any, trusted: str) -> None:
    conn = Bitrix24Connector("crm", Bitrix24Settings(webhook_url=portal.extra["webhook_url"], rate=200, burst=500))
    try:
        assert conn.health().ok
        w = conn.write(_op("deal", "h1", {"TITLE": "Заказ по HTTPS", "OPPORTUNITY": "990.00"}))
        assert conn.write(_op("deal", "h1", {"TITLE": "Заказ по HTTPS"})).external_id == w.external_id
        conn.write(_op("deal", "h1", {"STAGE_ID": "EXECUTING"}, ext=w.external_id))
        recs = [r for b in conn.read("deals", None) for r in b.records]
        mine = [r for r in recs if r.external_id == w.external_id]
        assert mine and mine[0].fields["STAGE_ID"] == "EXECUTING" and mine[0].stamp == "syncd-h1"
    finally:
        conn.close()


def test_syncd_connector_ca_bundle_setting_and_an_untrusted_portal(portal: Any, monkeypatch) -> None:
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
    hook = portal.extra["webhook_url"]
    conn = Bitrix24Connector("crm", Bitrix24Settings(webhook_url=hook, ca_bundle=portal.extra["ca_bundle"]))
    try:
        assert conn.health().ok
    finally:
        conn.close()
    untrusted = Bitrix24Connector("crm", Bitrix24Settings(webhook_url=hook))
    try:
        health = untrusted.health()
        assert not health.ok and "not trusted" in health.detail and "ca_bundle" in health.detail
        with pytest.raises(PermanentError) as exc:
            untrusted.write(_op("deal", "h2", {"TITLE": "x"}))
        assert exc.value.code == "TLS_UNTRUSTED"
        assert portal.extra["webhook_url"].split("/rest/")[1].split("/")[1] not in str(exc.value)
    finally:
        untrusted.close()
    with pytest.raises(ValueError, match="ca_bundle"):
        Bitrix24Settings(webhook_url=hook, ca_bundle=os.path.join(portal.extra["tls_dir"], "nope.pem"))
