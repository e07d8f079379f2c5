"""Finding the entity to bind a reviewed record to, the way an operator names it; on SQLite and
PostgreSQL, as the paused flag the instances share."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from daemon_env import Env, _teardown, build_env

from syncd.daemon.search import search


@pytest.fixture
def env(tmp_path: Path, db_url: str) -> Iterator[Env]:
    """On SQLite and PostgreSQL: LIKE and letter case differ between them."""
    e = build_env(tmp_path, database_url=db_url)
    yield e
    _teardown(e)


def _people(env: Env) -> dict[str, str]:
    env.shop_person("s1", name="Иван Петров", email="Ivan.Petrov@Example.ru", phone="8 (912) 345-67-89")
    env.shop_person("s2", name="Анна Смирнова", email="anna@example.ru", phone="+7 495 123-45-67")
    env.remote(env.shop).edit("order", "o1", number="A-1001", status="N", total="1500")
    env.settle()
    store = env.rt.store
    return {k: store.find_entity(env.shop, t, k) for k, t in (("s1", "person"), ("s2", "person"), ("o1", "order"))}


def _ids(results: list[dict]) -> list[str]:  # type: ignore[type-arg]
    return [r["id"] for r in results]


def test_by_email_phone_and_name_as_an_operator_types_them(env: Env) -> None:
    ids = _people(env)
    store = env.rt.store
    for q in ("ivan.petrov@example.ru", " IVAN.PETROV@EXAMPLE.RU ", "mailto:ivan.petrov@example.ru"):
        res = search(store, q)
        assert _ids(res) == [ids["s1"]], q
        assert res[0]["matched"] == "email"
    for q in ("+79123456789", "89123456789", "912 345 67 89", "+7 (912) 345-67-89"):
        res = search(store, q)
        assert _ids(res) == [ids["s1"]], q
        assert res[0]["matched"] == "phone"
    # names: any part, any case, Cyrillic too
    for q in ("смирнова", "СМИРНОВА", "Анна", "анна смир"):
        assert _ids(search(store, q)) == [ids["s2"]], q
    res = search(store, "Смирнова")[0]
    assert res["label"] == "Анна Смирнова" and res["type"] == "person" and res["matched"] == "name"
    assert res["fields"]["email"] == "anna@example.ru"
    assert res["bindings"][env.shop] == "s2" and env.crm in res["bindings"]
    # an order by its number, with the type filter
    assert _ids(search(store, "A-1001")) == [ids["o1"]]
    assert search(store, "A-1001", type_="person") == []
    assert search(store, "петров", type_="order") == []


def test_by_any_systems_id_and_syncds_own(env: Env) -> None:
    ids = _people(env)
    store = env.rt.store
    crm_id = store.external_id(ids["s2"], env.crm)
    assert crm_id
    res = search(store, crm_id)
    assert _ids(res) == [ids["s2"]] and res[0]["matched"] == f"id:{env.crm}"
    assert _ids(search(store, ids["s1"])) == [ids["s1"]]
    assert _ids(search(store, ids["s1"].upper())) == [ids["s1"]]


def test_by_inn_with_or_without_kpp(env: Env) -> None:
    env.remote(env.shop).edit("person", "ip", name="ИП Смирнова", inn="500100732259")
    env.settle()
    store = env.rt.store
    eid = store.find_entity(env.shop, "person", "ip")
    assert _ids(search(store, "500100732259")) == [eid]
    assert _ids(search(store, "5001 0073 2259")) == [eid]


def test_held_records_nonsense_and_wildcards_find_nothing(env: Env) -> None:
    _people(env)
    # the CRM may not introduce people: its new person is held for review and is no binding target
    env.remote(env.crm).edit("person", "c9", name="Клон Клонов", email="clone@example.ru")
    env.settle(1)
    assert len(env.rt.store.list_review()) == 1
    store = env.rt.store
    assert search(store, "Клонов") == [] and search(store, "clone@example.ru") == []
    assert search(store, "") == [] and search(store, "   ") == [] and search(store, "x" * 500) == []
    assert search(store, "%") == [] and search(store, "_") == [] and search(store, "%%%%") == []
    assert search(store, "нет такого") == []


def test_pause_is_kept_in_the_database(env: Env) -> None:
    from syncd.daemon.runtime import Runtime

    env.rt.set_paused(env.crm, True)
    other = Runtime(env.rt.settings)          # another instance on the same database
    try:
        assert other.is_paused(env.crm) and not other.is_paused(env.shop)
        assert other.set_paused(env.crm, False) is True
    finally:
        other.close()
    assert not env.rt.is_paused(env.crm)
    with pytest.raises(KeyError):
        env.rt.set_paused("nope", True)


def test_limit(env: Env) -> None:
    for i in range(30):
        env.shop_person(f"p{i}", name=f"Клиент {i}", email=f"c{i}@example.ru")
    env.settle()
    assert len(search(env.rt.store, "клиент", limit=7)) == 7
    assert len(search(env.rt.store, "клиент")) == 20
