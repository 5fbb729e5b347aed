"""The network a peer's URL is counted in (net/addresses.py `url_network`): a host name by its registrable domain
(the Public Suffix List the package ships), an address by its /24 or /64 as the upload limits count callers."""

from __future__ import annotations

from hypothesis import assume, given
from hypothesis import strategies as st
from publicsuffixlist import PublicSuffixList

from xsc.net.addresses import registrable_domain, url_network

# ICANN's public suffixes of one label and of two (`co.uk`).
SUFFIXES = ["com", "net", "de", "co.uk", "org.uk", "com.au"]
LABEL = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?", fullmatch=True)
PSL = PublicSuffixList(only_icann=True)


@given(domain=LABEL, suffix=st.sampled_from(SUFFIXES), below=st.lists(LABEL, max_size=4), port=st.integers(1, 65535))
def test_every_name_under_a_registrable_domain_is_that_domains_network(domain, suffix, below, port) -> None:
    registered = f"{domain}.{suffix}"
    assume(PSL.publicsuffix(f"x.{registered}") == suffix)  # not a suffix itself (`de.com`, `co.de` are)
    name = ".".join([*below, registered])
    assert registrable_domain(name) == registered
    assert url_network(f"https://{name}:{port}") == url_network(f"http://{registered.upper()}.") == "name:" + registered


@given(domains=st.lists(LABEL, min_size=2, max_size=2, unique=True), suffix=st.sampled_from(SUFFIXES),
       below=st.lists(LABEL, min_size=2, max_size=2))
def test_names_under_two_domains_of_one_public_suffix_are_two_networks(domains, suffix, below) -> None:
    first, second = (f"https://{label}.{domain}.{suffix}:7000" for label, domain in zip(below, domains))
    assert url_network(first) != url_network(second)


def test_a_public_suffix_of_two_labels_does_not_fold_its_domains_together() -> None:
    assert url_network("https://a.example.co.uk:7000") == url_network("https://b.example.co.uk:7001") == (
        "name:example.co.uk")
    assert url_network("https://a.example.co.uk:7000") != url_network("https://b.other.co.uk:7000")
    assert url_network("https://www.example.com") == url_network("https://n1.n2.example.com") == "name:example.com"


def test_names_handed_out_free_under_a_private_suffix_are_one_network() -> None:
    assert url_network("https://alice.github.io") == url_network("https://bob.github.io") == "name:github.io"
    assert url_network("https://a.duckdns.org:7000") == url_network("https://b.duckdns.org:7001") == "name:duckdns.org"
    assert url_network("https://com") == "name:com"  # a public suffix itself is its own


def test_a_names_two_spellings_are_one_network() -> None:
    assert url_network("https://a.bücher.de") == url_network("https://b.xn--bcher-kva.de") == "name:xn--bcher-kva.de"


def test_addresses_are_counted_by_their_network_and_this_nodes_own_by_listener() -> None:
    assert url_network("https://185.199.108.7:7000") == url_network("https://185.199.108.200:7001") == (
        "185.199.108.0/24")
    assert url_network("https://[2a01:4f8:1:2::1]:7000") == url_network("https://[2a01:4f8:1:2:ff::9]:7001") == (
        "2a01:4f8:1:2::/64")
    assert url_network("https://[::ffff:185.199.108.7]:7000") == "185.199.108.0/24"
    assert url_network("http://10.0.0.5:7000") == "10.0.0.5:7000" != url_network("http://10.0.0.5:7001")
    assert url_network("http://127.0.0.1:7000") == "127.0.0.1:7000"
    assert url_network("http://localhost:7000") == "localhost:7000"
    assert url_network("http://node1:7000") == "name:node1"  # a one-label name (a container's) is its own
