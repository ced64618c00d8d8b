"""Keeping secrets out of what a node shows: URLs with credentials, masked.

A webhook target or broker URL may carry a password (``https://user:pw@host/``).
Every bridge error masks its reason with :func:`mask_url_credentials` (so
publish failures, their logs and dead letters never carry one), and so does
``/api/egress`` for the targets it lists.
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
