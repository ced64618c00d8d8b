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
        ("https://user@h/x", "https://user@h/x"),  # no password: nothing to hide
        ("https://h/x?a=b:c@d", "https://h/x?a=b:c@d"),  # not userinfo
        ("no url here: a:b@c", "no url here: a:b@c"),
    ],
)
def test_passwords_in_urls_are_masked(text: str, shown: str) -> None:
    assert mask_url_credentials(text) == shown
