"""Realistic demo data for a portal: managers with presence, two pipelines, shop custom fields."""

from __future__ import annotations

from typing import Any

from syncd.sandbox.bitrix24.methods import ENTITIES, Ctx, write
from syncd.sandbox.bitrix24.portal import SandboxState

MANAGERS = [("Анна", "Смирнова", "anna.smirnova", "Менеджер по продажам", True, "OPENED"),
            ("Игорь", "Петров", "igor.petrov", "Старший менеджер", False, "CLOSED"),
            ("Ольга", "Кузнецова", "olga.kuznetsova", "Руководитель отдела продаж", True, "PAUSED")]
PRO_LEADS = [("NEW", "Новая заявка", "P"), ("QUALIFIED", "Квалифицирован", "P"),
             ("READY", "Готов к первому заказу", "P"), ("WON", "Первый заказ оплачен", "S"),
             ("LOSE", "Отказ", "F")]


def seed_demo(state: SandboxState, portal: str = "default", *, deals: bool = True) -> dict[str, Any]:
    """Fill `portal` with managers, the «PRO.Leads» pipeline, shop fields and a few contacts/deals.

    Returns ids: {"managers": {...}, "pipeline_pro_leads": N, "contacts": [...], "deals": [...]}.
    Fires no events (no handlers are bound yet on a fresh portal; if some are, they get the adds).
    """
    p = state.portal(portal)
    managers = {}
    for name, last, login, position, online, workday in MANAGERS:
        u = p.add_user(name, last, email=f"{login}@{p.domain}", position=position, online=online, workday=workday)
        managers[f"{name} {last}"] = int(u["ID"])
    cid = p.add_pipeline("PRO.Leads", PRO_LEADS)
    p.add_userfield("deal", "UF_CRM_FROM_SHOP", "boolean", "Магазин")
    p.add_userfield("deal", "UF_CRM_SHOP_ORDER", "string", "Номер заказа в магазине")
    p.add_userfield("contact", "UF_CRM_SHOP_CUSTOMER_ID", "string", "ID покупателя в магазине")
    out: dict[str, Any] = {"managers": managers, "pipeline_pro_leads": cid, "contacts": [], "deals": []}
    if not deals:
        return out
    anna, igor = managers["Анна Смирнова"], managers["Игорь Петров"]
    ctx = Ctx(p, anna, "ui", source="ui")
    people = [("Дмитрий", "Волков", "+7 (912) 345-67-01", "d.volkov@example.ru"),
              ("Екатерина", "Морозова", "+7 (903) 111-22-33", "katya.morozova@example.ru"),
              ("Сергей", "Новиков", "+7 (495) 777-10-20", "s.novikov@stroymontazh.example")]
    for name, last, phone, email in people:
        out["contacts"].append(write(ctx, ENTITIES["contact"], {
            "NAME": name, "LAST_NAME": last, "PHONE": [{"VALUE": phone, "VALUE_TYPE": "MOBILE"}],
            "EMAIL": [{"VALUE": email, "VALUE_TYPE": "WORK"}], "ASSIGNED_BY_ID": anna, "SOURCE_ID": "STORE"}))
    company = write(ctx, ENTITIES["company"], {"TITLE": "ООО «СтройМонтаж»", "ASSIGNED_BY_ID": igor,
                                               "PHONE": [{"VALUE": "+7 (495) 777-10-00", "VALUE_TYPE": "WORK"}]})
    out["companies"] = [company]
    deals_data = [("Заказ №1001 с сайта", out["contacts"][0], "NEW", 0, "1001"),
                  ("Заказ №1002 с сайта", out["contacts"][1], "EXECUTING", 0, "1002"),
                  ("Оптовая заявка СтройМонтаж", out["contacts"][2], f"C{cid}:READY", cid, None)]
    for title, contact, stage, cat, order in deals_data:
        fields = {"TITLE": title, "CONTACT_ID": contact, "STAGE_ID": stage, "CATEGORY_ID": cat,
                  "ASSIGNED_BY_ID": anna if cat == 0 else igor, "CURRENCY_ID": "RUB"}
        if order:
            fields.update({"UF_CRM_FROM_SHOP": "Y", "UF_CRM_SHOP_ORDER": order, "ORIGINATOR_ID": "shop",
                           "ORIGIN_ID": order, "SOURCE_ID": "STORE"})
        else:
            fields.update({"COMPANY_ID": company, "OPPORTUNITY": 185000, "IS_MANUAL_OPPORTUNITY": "Y"})
        out["deals"].append(write(ctx, ENTITIES["deal"], fields))
    return out
