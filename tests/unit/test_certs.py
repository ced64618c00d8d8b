"""The identity of a client certificate: SAN DNS and URI names, else the subject CN."""

from __future__ import annotations

from mesh.core.certs import certificate_identity, identity_mismatch

CN_ONLY = {"subject": ((("organizationName", "mesh"),), (("commonName", "site-a"),))}
SANS = {
    "subject": ((("commonName", "ignored"),),),
    "subjectAltName": (
        ("DNS", "site-a"),
        ("IP Address", "127.0.0.1"),
        ("URI", "spiffe://mesh/site-a"),
        ("email", "ops@example.net"),
    ),
}


def test_san_dns_and_uri_names_are_the_identity_and_the_cn_is_not() -> None:
    assert certificate_identity(SANS) == ["site-a", "spiffe://mesh/site-a"]


def test_the_common_name_counts_only_without_dns_or_uri_names() -> None:
    assert certificate_identity(CN_ONLY) == ["site-a"]
    ip_only = {**CN_ONLY, "subjectAltName": (("IP Address", "10.0.0.1"),)}
    assert certificate_identity(ip_only) == ["site-a"]
    assert certificate_identity({"subject": ((("organizationName", "x"),),)}) == []


def test_a_uri_name_matches_only_when_equal_to_the_id() -> None:
    uri = {"subjectAltName": (("URI", "spiffe://mesh/site-b"),)}
    assert identity_mismatch(uri, "spiffe://mesh/site-b") is None
    assert identity_mismatch(uri, "site-b") == (
        "certificate identity ['spiffe://mesh/site-b'] does not match node id 'site-b'"
    )


def test_mismatch_names_the_identity_and_the_claimed_id() -> None:
    assert identity_mismatch(SANS, "site-a") is None
    assert identity_mismatch(CN_ONLY, "site-b") == (
        "certificate identity ['site-a'] does not match node id 'site-b'"
    )
    # No certificate (plain listener, client_auth none): nothing to compare.
    assert identity_mismatch(None, "site-b") is None
    assert identity_mismatch({}, "site-b") is None
