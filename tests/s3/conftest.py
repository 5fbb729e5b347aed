"""One node and one `xsc s3 serve` for the S3 tests of a worker (each test uses buckets of its own), and one node that
answers S3 itself (`node.s3_listen`) for the modules that run against both (`both_gateways`); the crash tests start
their own, since they kill the node."""

from __future__ import annotations

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
