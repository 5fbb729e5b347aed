"""The dashboard's login core (xsc.ui.core.session): links work once and expire, sessions and CSRF tokens
verify only under their own keys."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from xsc.ui.core import session as s

NOW = 1_800_000_000.0


def sessions(token: str = "t" * 64, nonce: bytes = b"n" * 16) -> s.Sessions:
    return s.Sessions(token, port=7070, boot_nonce=nonce)


def test_a_link_logs_in_once() -> None:
    ui = sessions()
    link, expires = ui.link(NOW)
    assert expires == NOW + s.LINK_SECONDS
    session = ui.login(link, NOW + 1)
    assert session and ui.valid(session, NOW + 2)
    assert ui.login(link, NOW + 2) is None  # used


def test_a_link_expires() -> None:
    ui = sessions()
    link, expires = ui.link(NOW)
    assert ui.login(link, expires) is None


def test_a_session_expires() -> None:
    ui = sessions()
    session = ui.login(ui.link(NOW)[0], NOW)
    assert ui.valid(session, NOW + s.SESSION_SECONDS - 1)
    assert not ui.valid(session, NOW + s.SESSION_SECONDS)


def test_a_link_from_before_a_restart_does_not_work_after_it() -> None:
    link, _ = sessions(nonce=b"a" * 16).link(NOW)
    assert sessions(nonce=b"b" * 16).login(link, NOW) is None


def test_sessions_outlive_a_restart_but_not_a_new_token() -> None:
    before = sessions(nonce=b"a" * 16)
    session = before.login(before.link(NOW)[0], NOW)
    assert sessions(nonce=b"b" * 16).valid(session, NOW)
    assert not sessions(token="u" * 64).valid(session, NOW)


def test_a_link_is_not_a_session_nor_a_session_a_link() -> None:
    ui = sessions()
    link, _ = ui.link(NOW)
    assert not ui.valid(link, NOW)
    session = ui.login(link, NOW)
    assert ui.login(session, NOW) is None


def test_csrf_token_belongs_to_its_session() -> None:
    ui = sessions()
    one = ui.login(ui.link(NOW)[0], NOW)
    two = ui.login(ui.link(NOW)[0], NOW)
    assert ui.csrf_ok(one, ui.csrf(one))
    assert not ui.csrf_ok(one, ui.csrf(two))
    assert not ui.csrf_ok(one, None) and not ui.csrf_ok(one, "")


def test_origin_must_be_sent_and_be_this_node() -> None:
    assert not s.origin_ok(None, "http", "127.0.0.1:7070")  # a dashboard change must say where it comes from
    assert s.origin_ok("http://127.0.0.1:7070", "http", "127.0.0.1:7070")
    assert not s.origin_ok("http://evil.example", "http", "127.0.0.1:7070")
    assert not s.origin_ok("null", "http", "127.0.0.1:7070")


def test_each_port_has_its_own_cookie() -> None:
    assert s.cookie_name(7070) != s.cookie_name(7071)


def test_used_links_forget_expired_ones_and_stay_bounded() -> None:
    used = s.UsedLinks(limit=4)
    assert used.use("a", 10, 0) and used.use("b", 10, 0)
    assert not used.use("a", 10, 1)
    assert used.use("c", 100, 20)  # half full: a and b had expired and are forgotten
    assert len(used) == 1
    for name in "defg":
        used.use(name, 100, 21)
    assert len(used) <= 4
    assert not used.use("h", 100, 22)  # full of live links: refuse rather than forget one


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=120) | st.just("a.\u00b2\u00b3.b"))  # digits to str.isdigit(), not to int()
def test_arbitrary_values_never_log_in(value: str) -> None:
    ui = sessions()
    assert ui.login(value, NOW) is None
    assert not ui.valid(value, NOW)


@settings(max_examples=100, deadline=None)
@given(st.integers(min_value=0, max_value=60), st.sampled_from(range(3)))
def test_a_tampered_link_never_logs_in(position: int, part: int) -> None:
    ui = sessions()
    link, _ = ui.link(NOW)
    pieces = link.split(".")
    piece = pieces[part]
    i = position % len(piece)
    pieces[part] = piece[:i] + ("A" if piece[i] != "A" else "B") + piece[i + 1:]
    assert ui.login(".".join(pieces), NOW) is None
