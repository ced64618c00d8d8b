"""URL credentials are masked in whatever a node shows."""

from __future__ import annotations

import pytest

from mesh.core.secrets import mask_url_credentials


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("https://u:pw@h/x", "https://u:***@h/x"),
        (
            "webhook http://user:s3cr%40t@127.0.0.1:80/hook answered 400",
            "webhook http://user:***@127.0.0.1:80/hook answered 400",
        ),
        ("nats://:tok@h:4222 and mqtt://a:b@c", "nats://:***@h:4222 and mqtt://a:***@c"),
        ("https://TOKEN@h/x", "https://***@h/x"),  # a lone user part is often a token
        ("https://h/x?a=b:c@d", "https://h/x?a=***"),  # not userinfo, but a query value
        ("https://h/hook?token=s3cr3t&sig=x", "https://h/hook?token=***&sig=***"),
        ("https://h/hook?flag&id=", "https://h/hook?flag&id="),  # nothing to hide
        ("no url here: a:b@c", "no url here: a:b@c"),
    ],
)
def test_passwords_in_urls_are_masked(text: str, shown: str) -> None:
    assert mask_url_credentials(text) == shown
