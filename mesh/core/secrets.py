"""Keeping secrets out of what a node shows: URLs with credentials, masked.

A webhook target or broker URL may carry a password (``https://user:pw@host/``),
a token as its user part (``https://TOKEN@host/``) or in its query
(``?token=...``).
Every bridge error masks its reason with :func:`mask_url_credentials` (so
publish failures, their logs and dead letters never carry one), and so does
``/api/egress`` for the targets it lists.
"""

from __future__ import annotations

import re

__all__ = ["MASK", "mask_url_credentials"]

MASK = "***"

_URL = re.compile(r"\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s'\"<>]+")
# scheme://user:password@  (the user name is kept, the password is not)
_USERINFO = re.compile(r"^(?P<head>[a-zA-Z][a-zA-Z0-9+.-]*://[^:@/\s]*):[^@/\s]*@")
# scheme://token@  (a lone user part is as often a token: masked whole)
_USERONLY = re.compile(r"^(?P<head>[a-zA-Z][a-zA-Z0-9+.-]*://)[^:@/\s]+@")
# ?name=value&...  (query values: api keys and signatures live there)
_QUERY = re.compile(r"(?P<name>[?&][^=&#\s]+=)[^&#\s]*")
_FIELD = re.compile(r"\{[^{}]*\}")


def _mask_url(url: str) -> str:
    masked = _USERINFO.sub(lambda m: f"{m['head']}:{MASK}@", url, count=1)
    if masked == url:
        masked = _USERONLY.sub(lambda m: f"{m['head']}{MASK}@", url, count=1)
    return _QUERY.sub(_mask_value, masked)


def _mask_value(m: re.Match[str]) -> str:
    value = m[0][len(m["name"]) :]
    if not value or _FIELD.fullmatch(value):  # empty, or a template field: no secret
        return m[0]
    return m["name"] + MASK


def mask_url_credentials(text: str) -> str:
    """``text`` with what may be a secret in every URL masked: the password of
    ``scheme://user:password@``, a lone ``scheme://token@``, and query values."""
    if "://" not in text:
        return text
    return _URL.sub(lambda m: _mask_url(m.group(0)), text)
