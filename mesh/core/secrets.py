"""Keeping secrets out of what a node shows: URLs with credentials, masked.

A webhook target or broker URL may carry a password (``https://user:pw@host/``).
Whatever a node prints, logs, stores as a reason or answers in ``/api/*``
passes through :func:`mask_url_credentials` first.
"""

from __future__ import annotations

import re

__all__ = ["MASK", "mask_url_credentials"]

MASK = "***"

# scheme://user:password@  (the user name is kept, the password is not)
_USERINFO = re.compile(r"(?P<head>\b[a-zA-Z][a-zA-Z0-9+.-]*://[^:@/\s]*):[^@/\s]*@")


def mask_url_credentials(text: str) -> str:
    """``text`` with the password of every ``scheme://user:password@`` replaced."""
    return _USERINFO.sub(lambda m: f"{m['head']}:{MASK}@", text)
