"""A write refused after its user's account paid for it (a conditional write that lost its race, a grant revoked while
the body was on its way, a file its record never named) is paid back, once: through both fronts, and across kill -9
between the refusal and the refund."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import urllib.request
from collections import Counter
from pathlib import Path

import plyvel
import pytest

pytest.importorskip("boto3", reason="boto3 is in the test extra: pip install -e '.[test]'")

from tests.support.s3 import boto3_client, create_key, half_sent_put  # noqa: E402
from tests.support.s3_refund_burst import COST, FUNDED, parts  # noqa: E402
from tests.support.waiting import eventually  # noqa: E402
from xsc import keys  # noqa: E402
from xsc.codec import loads  # noqa: E402
from xsc.ledger import decode_entry  # noqa: E402
from xsc.storage.core.capability import Capability  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]
MiB = 1024 * 1024
SCRIPT = Path(__file__).parents[1] / "support" / "s3_refund_burst.py"


@pytest.fixture(scope="module")
def gateway(both_gateways):
    """Each test once through `xsc s3 serve`, once through the node's own S3 listener."""
    return both_gateways


def _get(gateway, path: str) -> dict:
    request = urllib.request.Request(gateway.node.url + path,
                                     headers={"Authorization": f"Bearer {gateway.node.token}"})
    with urllib.request.urlopen(request) as response:
        return json.loads(response.read())


def _balance(gateway, user: str) -> int:
    return _get(gateway, f"/v1/s3/accounts/{user}")["balance"]


def _jobs(gateway, user: str) -> Counter:
    """How many transfers of each kind (s3:fund, s3:put, s3:refund) the user's account holds."""
    account = _get(gateway, f"/v1/s3/accounts/{user}")["account"]
    history = _get(gateway, f"/v1/ledger/accounts/{account}/history?limit=10000&fields=job")
    return Counter(entry["job"].rsplit(":", 1)[0] for entry in history["entries"])


def test_a_conditional_write_that_loses_its_race_is_refunded(gateway) -> None:
    """ross's If-None-Match: * PutObject passes its check, then rita writes the key while ross's body is on its way:
    ross's write is refused as its record is written, and what its file cost ross's account comes back, once."""
    rita = boto3_client(gateway.front.url, create_key(gateway.node.data_dir, "rita"))
    ross_key = create_key(gateway.node.data_dir, "ross")
    for user in ("rita", "ross"):
        assert gateway.node.xsc("s3", "fund", user, "1").returncode == 0  # (the package's gateway: one fund for all)
    rita.create_bucket(Bucket="race-refund")
    assert gateway.node.xsc("s3", "grant", "race-refund", "ross", "write").returncode == 0
    before, jobs = _balance(gateway, "ross"), _jobs(gateway, "ross")
    conn = half_sent_put(gateway, "/race-refund/k", 2 * MiB, ross_key, {"If-None-Match": "*"})
    rita.put_object(Bucket="race-refund", Key="k", Body=b"rita came first")
    conn.send(os.urandom(MiB))
    answer = conn.getresponse()
    assert answer.status in (409, 412), answer.read()
    conn.close()
    eventually(lambda: _balance(gateway, "ross") == before, "ross's charge to be refunded", 30)
    assert _jobs(gateway, "ross") - jobs == Counter({"s3:put": 1, "s3:refund": 1})
    assert rita.get_object(Bucket="race-refund", Key="k")["Body"].read() == b"rita came first"


def test_a_write_whose_grant_is_revoked_while_its_body_is_on_its_way_is_refunded(gateway) -> None:
    """ross's large PutObject and a part of rita's upload, each refused as its grant is revoked mid-body: both charges
    come back to ross's account, once each."""
    rita = boto3_client(gateway.front.url, create_key(gateway.node.data_dir, "rita"))
    ross_key = create_key(gateway.node.data_dir, "ross")
    for user in ("rita", "ross"):
        assert gateway.node.xsc("s3", "fund", user, "1").returncode == 0  # (the package's gateway: one fund for all)
    rita.create_bucket(Bucket="revoke-refund")
    upload = rita.create_multipart_upload(Bucket="revoke-refund", Key="a")["UploadId"]
    before, jobs = _balance(gateway, "ross"), _jobs(gateway, "ross")
    for target in ("large", f"a?partNumber=1&uploadId={upload}"):
        assert gateway.node.xsc("s3", "grant", "revoke-refund", "ross", "write").returncode == 0
        conn = half_sent_put(gateway, f"/revoke-refund/{target}", 2 * MiB, ross_key)
        assert gateway.node.xsc("s3", "revoke", "revoke-refund", "ross").returncode == 0
        conn.send(os.urandom(MiB))
        answer = conn.getresponse()
        assert (answer.status, b"<Code>AccessDenied</Code>" in answer.read()) == (403, True), target
        conn.close()
    eventually(lambda: _balance(gateway, "ross") == before, "ross's charges to be refunded", 30)
    assert _jobs(gateway, "ross") - jobs == Counter({"s3:put": 2, "s3:refund": 2})
    rita.abort_multipart_upload(Bucket="revoke-refund", Key="a", UploadId=upload)


def _run(path: Path, until: str, *args: str) -> None:
    """The burst script on `path` until it prints `until` (a count reached, or `held`), then kill -9."""
    proc = subprocess.Popen([sys.executable, str(SCRIPT), str(path), *args], stdout=subprocess.PIPE, text=True)
    seen = []
    try:
        while (line := proc.stdout.readline().strip()) and line != until:
            seen.append(line)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert line == until, f"the burst stopped at {seen[-1:]}"


def test_kill_9_between_a_refusal_and_its_refund_refunds_it_once_after_the_restart(tmp_path) -> None:
    """Writes charged, then recorded, refused or left to the reconciliation, killed -9 mid-burst and once right after a
    refusal's synced write, before its refund: started again, every write whose record was refused or never came is
    refunded exactly once, every recorded one never, and no charge or refund is left owed."""
    path = tmp_path / "db"
    _run(path, "40")
    _run(path, "held", "hold")
    db = plyvel.DB(str(path))
    owed = [k for k, _ in db.iterator(prefix=keys.OBJECT_REFUNDS)]
    db.close()
    assert len(owed) == 1, "the refusal's refund owed, not paid, as the node died"
    _run(path, "20")  # its start pays it, then more writes, killed mid-burst again

    async def check() -> None:
        db = plyvel.DB(str(path))
        ledger, index, accounts, refunds = parts(db)
        charged = [keys.split_charge_row(keys.OBJECT_CHARGED, k)[0] for k, _ in db.iterator(prefix=keys.OBJECT_CHARGED)]
        index.reconcile(charged)  # killed before its record: the front's reconciliation finds it an orphan
        await refunds.refund_owed()
        assert await refunds.refund_owed() == 0
        jobs = Counter()
        for _, _, data in ledger.store.entries():
            entry = decode_entry(data)
            if entry.kind == "receipt":
                jobs[entry.authorization.job] += 1
        recorded = {Capability.parse(part["cap"]).storage_index.hex() for _, value in db.iterator(
            prefix=keys.OBJECT_KEYS) for part in loads(value)["parts"]}
        puts = {job.split(":")[2] for job in jobs if job.startswith("s3:put:")}
        refunds_paid = Counter(job.split(":")[2] for job in jobs.elements() if job.startswith("s3:refund:"))
        assert all(n == 1 for n in jobs.values()), "a transfer made twice"
        assert set(refunds_paid) == puts - recorded and puts & recorded
        assert [k for k, _ in db.iterator(prefix=keys.OBJECT_REFUNDS)] == []
        assert [k for k, _ in db.iterator(prefix=keys.OBJECT_CHARGED)] == []
        bob = accounts.account("bob").public_key
        assert ledger.account_view(bob)["balance"] == FUNDED - COST * len(puts & recorded)
        await ledger.close()
        db.close()

    asyncio.run(check())
