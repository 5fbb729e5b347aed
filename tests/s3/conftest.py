"""One node and one `xsc s3 serve` for the S3 tests of a worker (each test uses buckets of its own);
the crash tests start their own, since they kill the node."""

from __future__ import annotations

import pytest

from tests.support.s3 import Gateway


@pytest.fixture(scope="package")
def gateway(tmp_path_factory):
    g = Gateway(tmp_path_factory.mktemp("s3")).start()
    yield g
    g.stop()
