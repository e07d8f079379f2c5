"""syncd: keeps an online shop, 1C:Enterprise and a CRM in step."""

__version__ = "0.1.0"
