"""CommerceML 2: safe streaming readers, streaming writers, XSD validation, file checks.

Used by the shop connector (client of a shop's exchange endpoint) and by syncd's own 1C exchange
endpoint. Protocol-level documents only; mapping to syncd's canonical model lives elsewhere.
"""

from .check import check_files, record_json
from .encoding import (MOSCOW, format_decimal, parse_bool, parse_date, parse_datetime, parse_decimal,
                       parse_time, sniff_encoding)
from .model import (Address, AddressField, Bank, BankAccount, Contact, Counterparty, Discount,
                    Document, Group, Header, Item, Offer, Price, PriceType, Product, Property,
                    Rejected, Representative, Stock, Tax, Unit, Warehouse)
from .reader import (iter_catalog, iter_counterparties, iter_documents, iter_offers, iter_records,
                     read_header)
from .safety import DEFAULT_LIMITS, Limits, open_xml, safe_parser, safe_unzip
from .validate import ValidationIssue, validate
from .writer import (CmlWriter, document_element, write_catalog, write_counterparties, write_offers,
                     write_orders)

__all__ = [
    # model
    "Header", "Document", "Counterparty", "Address", "AddressField", "Contact", "Bank", "BankAccount",
    "Representative", "Item", "Unit", "Discount", "Tax", "Group", "Property", "Product", "PriceType",
    "Warehouse", "Price", "Stock", "Offer", "Rejected",
    # reading
    "iter_documents", "iter_counterparties", "iter_catalog", "iter_offers", "iter_records",
    "read_header",
    # writing
    "CmlWriter", "write_orders", "write_counterparties", "write_catalog", "write_offers",
    "document_element",
    # safety, encoding
    "Limits", "DEFAULT_LIMITS", "safe_parser", "safe_unzip", "open_xml", "sniff_encoding", "MOSCOW",
    "parse_decimal", "format_decimal", "parse_bool", "parse_date", "parse_time", "parse_datetime",
    # validation and checks
    "ValidationIssue", "validate", "check_files", "record_json",
]
