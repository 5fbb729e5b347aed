"""TLS between nodes, with the node key as identity (self-certifying, as Tahoe-LAFS and libp2p do).

A node's certificate is made from its Ed25519 node key, deterministically (fixed names, serial and
validity; Ed25519 signatures are deterministic), so the same key always gives the same certificate.
Nothing in it is trusted but its public key: a client pins that key to the node id it expects
(the `X-Xsc-To` of the request), checked right after the TLS 1.3 handshake, before a byte of the
request is sent.  No certificate authority, host name or validity date plays any part.

A client may present its node key too (mutual TLS): the TLS 1.3 CertificateVerify message is signed by the
key of the certificate it sends, so the server learns which node speaks on the connection, once, at the
handshake.  Python's ssl verifies a client certificate against a trust anchor and offers no callback to
accept any key, so client certificates are issued by ROOT, an anchor whose private key is public (derived
from a fixed string): its signature proves nothing and nothing relies on it; only the leaf's key, proven
by the handshake, is read (peer_node).

    server_context(identity, tmp_dir)    the listener's context (TLS 1.3 only, the node's certificate; asks the
                                         client for its node certificate, which it need not send)
    client_context(node_id | None, identity | None)
                                         a context whose handshake fails unless the peer's key is node_id
                                         (None: any node key, trust on first use; read it with peer_node);
                                         with identity, it presents that node's client certificate
    peer_node(ssl_object)                the node id a TLS peer proved it holds the key of
    connection_node(ssl_object)          the same, read once per connection (a server's view of its client)
    PeerKeyMismatch                      the handshake error of a peer that is not the node expected
    share_read_buffers()                 TLS connections read their sockets READ_BUFFER bytes at a time into one buffer
                                         per thread, not into a 256 KiB buffer of each connection's own
"""

from __future__ import annotations

import asyncio.sslproto
import datetime
import hashlib
import os
import ssl
import tempfile
import threading
import weakref
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.x509.oid import NameOID

from ..identity import Identity, public_id

_NOT_BEFORE = datetime.datetime(2000, 1, 1, tzinfo=datetime.timezone.utc)
_NOT_AFTER = datetime.datetime(9999, 12, 31, 23, 59, 59, tzinfo=datetime.timezone.utc)
READ_BUFFER = 256 * 1024  # bytes a TLS connection reads from its socket at once, into its thread's shared buffer
RECORD = 16 * 1024  # the most plaintext a TLS record carries: what a connection decrypts per read (SSLProtocol.max_size)
MAX_CONTEXTS = 4096  # pinned client contexts kept (one per peer: connections are pooled per context)


class PeerKeyMismatch(ssl.SSLCertVerificationError):
    """The TLS peer holds another key than the node id it was expected to be (or no Ed25519 key)."""

    def __init__(self, expected: str | None, presented: str | None) -> None:
        self.expected, self.presented = expected, presented
        what = f"node {presented}" if presented else "a certificate without an Ed25519 node key"
        self.message = f"it is {what}, not node {expected}" if expected else f"it is {what}"
        super().__init__(self.message)

    def __str__(self) -> str:
        return self.message


_reads = threading.local()  # the buffer TLS connections read their sockets into, one per thread (share_read_buffers)


def _shared_buffer(protocol: asyncio.sslproto.SSLProtocol, n: int) -> memoryview:
    """SSLProtocol.get_buffer: its thread's shared buffer, which buffer_updated copies into the connection's TLS
    input at once (the loop calls get_buffer, reads the socket into the buffer and calls buffer_updated in one go,
    with no other connection's read in between)."""
    view = getattr(_reads, "view", None)
    if view is None:
        view = _reads.view = memoryview(bytearray(READ_BUFFER))
    protocol._ssl_buffer_view = view  # where buffer_updated copies from
    return view


def share_read_buffers() -> None:
    """asyncio gives each TLS connection a 256 KiB receive buffer of its own, filled with zeros (so resident) when
    the connection is made and kept while it is open: a node keeps a connection each way with each peer of its
    neighbourhood, and those buffers were most of what its memory grew by with the network.  The buffer only passes
    the bytes of one read of the socket on to the connection's TLS input, so one buffer per thread serves every
    connection, READ_BUFFER bytes at a time; each connection keeps a buffer of RECORD bytes only (made by asyncio,
    unused), and decrypts a record per read.  Large reads matter to a node fetching a get's blocks from several
    holders: each read is one turn of the TLS layer, aiohttp's parser and the task waiting for the blocks."""
    asyncio.sslproto.SSLProtocol.max_size = RECORD
    asyncio.sslproto.SSLProtocol.get_buffer = _shared_buffer  # type: ignore[method-assign]


def certificate(identity: Identity) -> x509.Certificate:
    """The node's self-signed certificate: subject and issuer are its id, its key is the node key."""
    key = identity.private_key()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, identity.id)])
    serial = int.from_bytes(hashlib.sha256(b"XSC-TLS-1\n" + identity.public_key).digest()[:16], "big") >> 1
    builder = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
               .serial_number(serial or 1).not_valid_before(_NOT_BEFORE).not_valid_after(_NOT_AFTER)
               .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True))
    return builder.sign(key, None)  # Ed25519: no separate digest


_ROOT_KEY = Ed25519PrivateKey.from_private_bytes(hashlib.sha256(b"XSC-TLS-CLIENT-ROOT-1").digest())
_ROOT_NAME = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "xsc client certificates (public key)")])
ROOT = (x509.CertificateBuilder().subject_name(_ROOT_NAME).issuer_name(_ROOT_NAME)
        .public_key(_ROOT_KEY.public_key()).serial_number(1)
        .not_valid_before(_NOT_BEFORE).not_valid_after(_NOT_AFTER)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                     crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
        .sign(_ROOT_KEY, None))


def client_certificate(identity: Identity) -> x509.Certificate:
    """The node's client certificate: its node key, issued by ROOT (whose key is public: see the docstring)."""
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, identity.id)])
    serial = int.from_bytes(hashlib.sha256(b"XSC-TLS-CLIENT-1\n" + identity.public_key).digest()[:16], "big") >> 1
    builder = (x509.CertificateBuilder().subject_name(name).issuer_name(_ROOT_NAME)
               .public_key(identity.private_key().public_key())
               .serial_number(serial or 1).not_valid_before(_NOT_BEFORE).not_valid_after(_NOT_AFTER)
               .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True))
    return builder.sign(_ROOT_KEY, None)


def _load_chain(context: ssl.SSLContext, identity: Identity, cert: x509.Certificate, tmp_dir: Path | None) -> None:
    """ssl loads a key only from a file: a private temporary one (mode 0600), removed at once."""
    pem = identity.private_key().private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption())
    pem += cert.public_bytes(serialization.Encoding.PEM)
    fd, name = tempfile.mkstemp(prefix=".tls-", suffix=".pem", dir=tmp_dir)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(pem)
        context.load_cert_chain(name)
    finally:
        os.unlink(name)


def server_context(identity: Identity, tmp_dir: Path) -> ssl.SSLContext:
    """TLS 1.3 only, presenting the node's certificate, asking the client for its own (optional: a client
    without one authenticates each request by signing it)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    _load_chain(context, identity, certificate(identity), tmp_dir)
    context.verify_mode = ssl.CERT_OPTIONAL
    context.load_verify_locations(cadata=ROOT.public_bytes(serialization.Encoding.DER))
    return context


def node_of_certificate(der: bytes | None) -> str | None:
    """The node id whose key a DER certificate carries; None if it carries no Ed25519 key."""
    if not der:
        return None
    try:
        key = x509.load_der_x509_certificate(der).public_key()
    except ValueError:
        return None
    if not isinstance(key, Ed25519PublicKey):
        return None
    return public_id(key.public_bytes_raw())


def peer_node(ssl_object: ssl.SSLObject | ssl.SSLSocket | None) -> str | None:
    """The node id the TLS peer of a connection proved it holds the key of (None: not TLS)."""
    if ssl_object is None:
        return None
    return node_of_certificate(ssl_object.getpeercert(binary_form=True))


_connection_nodes: "weakref.WeakKeyDictionary[ssl.SSLObject, str | None]" = weakref.WeakKeyDictionary()


def connection_node(ssl_object: ssl.SSLObject | None) -> str | None:
    """peer_node of a server-side connection, read from its certificate once per connection."""
    if ssl_object is None:
        return None
    try:
        return _connection_nodes[ssl_object]
    except KeyError:
        node = _connection_nodes[ssl_object] = peer_node(ssl_object)
        return node


class _PinnedObject(ssl.SSLObject):
    """An SSLObject whose handshake fails unless the peer's certificate key is the node expected.

    asyncio calls do_handshake() until it completes; the check runs on the completed handshake, before
    the connection is handed to aiohttp: a wrong peer never gets a byte of the request."""

    def do_handshake(self) -> None:
        super().do_handshake()
        expected = getattr(self.context, "xsc_node", None)
        presented = peer_node(self)
        if presented is None or (expected is not None and presented != expected):
            raise PeerKeyMismatch(expected, presented)


def _client_context(node_id: str | None, identity: Identity | None) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if identity is not None:
        _load_chain(context, identity, client_certificate(identity), None)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.check_hostname = False  # the key is the identity: no CA, no host name
    context.verify_mode = ssl.CERT_NONE
    context.sslobject_class = _PinnedObject
    context.xsc_node = node_id  # type: ignore[attr-defined]
    context.xsc_client = identity.id if identity is not None else None  # type: ignore[attr-defined]
    return context


_contexts: dict[tuple[str | None, str | None], ssl.SSLContext] = {}


def client_context(node_id: str | None, identity: Identity | None = None) -> ssl.SSLContext:
    """The client context pinned to node_id, presenting identity's client certificate if given (one per node
    and identity: aiohttp pools connections per context)."""
    key = (node_id, identity.id if identity is not None else None)
    context = _contexts.get(key)
    if context is None:
        if len(_contexts) >= MAX_CONTEXTS:
            _contexts.clear()
        context = _contexts[key] = _client_context(node_id, identity)
    return context


__all__ = ["PeerKeyMismatch", "ROOT", "certificate", "client_certificate", "client_context", "connection_node",
           "node_of_certificate", "peer_node", "server_context", "share_read_buffers"]
