"""Kept for imports: the live mapping check is generic and lives in `syncd.mapping.live`."""

from syncd.mapping.live import check_live

__all__ = ["check_live"]
