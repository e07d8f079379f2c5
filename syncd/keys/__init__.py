"""Match keys (dedup) and Russian requisites validation."""

from syncd.keys.match import inn_kpp_key, match_keys, normalize_email, normalize_phone
from syncd.keys.requisites import (
    InvalidRequisite, is_valid_account, is_valid_bik, is_valid_corr_account, is_valid_inn, is_valid_kpp,
    is_valid_ogrn, is_valid_ogrn_any, is_valid_ogrnip, requisite_issues, validate_account, validate_bik,
    validate_corr_account, validate_inn, validate_kpp, validate_ogrn, validate_ogrn_any, validate_ogrnip,
)

__all__ = [
    "inn_kpp_key", "match_keys", "normalize_email", "normalize_phone",
    "InvalidRequisite", "requisite_issues",
    "validate_inn", "validate_kpp", "validate_ogrn", "validate_ogrnip", "validate_ogrn_any", "validate_bik",
    "validate_account", "validate_corr_account",
    "is_valid_inn", "is_valid_kpp", "is_valid_ogrn", "is_valid_ogrnip", "is_valid_ogrn_any", "is_valid_bik",
    "is_valid_account", "is_valid_corr_account",
]
