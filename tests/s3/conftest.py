"""One node and one `xsc s3 serve` for the S3 tests of a worker (each test uses buckets of its own), and one node that
answers S3 itself (`node.s3_listen`) for the modules that run against both (`both_gateways`); the crash tests start
their own, since they kill the node."""

from __future__ import annotations

import hashlib

import pytest

from tests.support.s3 import Gateway


@pytest.fixture(scope="package")
def front_gateway(tmp_path_factory):
    g = Gateway(tmp_path_factory.mktemp("s3")).start()
    yield g
    g.stop()


@pytest.fixture(scope="package")
def in_node_gateway(tmp_path_factory):
    g = Gateway(tmp_path_factory.mktemp("s3-in-node"), in_node=True).start()
    yield g
    g.stop()


@pytest.fixture(scope="package")
def gateway(front_gateway):
    return front_gateway


@pytest.fixture(scope="module", params=["front", "in-node"])
def both_gateways(request):
    """`xsc s3 serve`, then the node's own S3 listener: a module that names its `gateway` this runs on both."""
    return request.getfixturevalue("front_gateway" if request.param == "front" else "in_node_gateway")


@pytest.fixture(scope="module")
def s3(gateway):
    """A boto3 client of the module's gateway, with the key its node was started with."""
    return gateway.client()


@pytest.fixture
def bucket(s3, request):
    """A bucket of the test's own, named from its id: every module's tests share the package's nodes."""
    name = "t-" + hashlib.md5(request.node.nodeid.encode()).hexdigest()[:12]
    s3.create_bucket(Bucket=name)
    return name
