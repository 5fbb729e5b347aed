"""The charge route on a real node (`POST /v1/s3/accounts/USER/charge`: what `xsc s3 serve` asks once it stored a
user's file): a charge pays for a file the front stored and no record refers to yet, once however often it is asked;
any other is refused with a problem and pays nothing; and a charge whose file left the store before its record came
is paid back by the next reconciliation."""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from collections import Counter

import pytest

from tests.support.s3 import NODE_ENV, create_key, export_index
from tests.support.waiting import eventually
from xsc.buckets.marks import FileMarks
from xsc.devnet import NodeProcess, free_port
from xsc.storage.core.capability import Capability

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]
COST = 1000  # micro-credits a charge here pays


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    """A node no S3 front serves: these tests store files under the front's names themselves, which a front's
    reconciliation would take for files of its own that no record names, and remove."""
    started = NodeProcess(tmp_path_factory.mktemp("charges") / "node", free_port(), env=NODE_ENV).start()
    yield started
    started.stop()


def _call(node, method: str, path: str, body: dict | None = None) -> tuple[int, dict]:
    request = urllib.request.Request(node.url + path, method=method,
                                     data=None if body is None else json.dumps(body).encode(),
                                     headers={"Authorization": f"Bearer {node.token}",
                                              "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request) as response:
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"{}")


def _charge(node, user: str, cap: str) -> tuple[int, dict]:
    return _call(node, "POST", f"/v1/s3/accounts/{user}/charge", {"capability": cap, "amount": COST})


def _user(node, name: str) -> int:
    """A user with a key and credits: its balance."""
    create_key(node.data_dir, name)
    assert node.xsc("s3", "fund", name, "1").returncode == 0
    return _balance(node, name)


def _balance(node, user: str) -> int:
    return _call(node, "GET", f"/v1/s3/accounts/{user}")[1]["balance"]


def _jobs(node, user: str) -> Counter:
    """How many transfers of each kind (s3:fund, s3:put, s3:refund) the user's account holds."""
    account = _call(node, "GET", f"/v1/s3/accounts/{user}")[1]["account"]
    history = _call(node, "GET", f"/v1/ledger/accounts/{account}/history?limit=10000&fields=job")[1]
    return Counter(entry["job"].rsplit(":", 1)[0] for entry in history["entries"])


def _stored(node, name: str) -> str:
    """A file stored under `name`: its capability."""
    put = node.xsc("store", "put", "-", "--name", name, input=os.urandom(64))
    assert put.returncode == 0, put.stderr
    return put.stdout.decode().strip()


def _fronts(node, key: str) -> str:
    """A file stored under a name the front gives (`s3:BUCKET/KEY#NONCETAG`, its tag made with the node's key)."""
    return _stored(node, FileMarks.load(node.data_dir).name(f"charges/{key}"))


def _charged_rows(node, user: str) -> list[dict]:
    return [row for row in export_index(node)["charged"] if row["user"] == user]


def test_a_charge_of_a_file_the_store_does_not_hold_as_the_fronts_is_refused_and_pays_nothing(node) -> None:
    """A capability the store never held, a file the store holds under a name of the user's own, and a file refused
    (found an orphan, removed and its mark cleared, as the front does) before its charge came: each charge is refused
    404 with a problem, the account pays nothing and no row is left of it."""
    before = _user(node, "cleo")
    never = Capability(os.urandom(32), os.urandom(32), 10).text
    own = _stored(node, "holiday.jpg")
    refused = _fronts(node, "refused")
    assert _call(node, "POST", "/v1/s3/reconcile", {"caps": [refused]}) == (200, {"orphans": [refused]})
    assert node.xsc("store", "rm", refused).returncode == 0
    assert _call(node, "POST", "/v1/s3/garbage/forget", {"caps": [refused]})[0] == 200
    for cap in (never, own, refused):
        status, problem = _charge(node, "cleo", cap)
        assert (status, problem["code"]) == (404, "not-found"), problem
        assert "no file the S3 front stored" in problem["detail"]
    assert _balance(node, "cleo") == before and _charged_rows(node, "cleo") == []


def test_a_charge_retried_is_paid_once_and_one_after_the_files_record_is_refused(node) -> None:
    """A charge asked twice (its answer lost on its way back to the front) is answered as the first, its entry too,
    and paid once; once the file's record is written, another charge of it is refused 409: the user pays once for one
    object."""
    before = _user(node, "dora")
    assert _call(node, "PUT", "/v1/s3/buckets/dora-charges?user=dora")[0] == 201
    cap = _fronts(node, "k")
    first, again = _charge(node, "dora", cap), _charge(node, "dora", cap)
    assert (first[0], first[1]["charged"], again[0], again[1]["charged"]) == (200, COST, 200, COST)
    assert again[1] == {**first[1], "again": True} and first[1]["entry"], (first, again)
    assert len(_charged_rows(node, "dora")) == 1
    record = {"parts": [{"cap": cap, "size": 64}], "etag": "e"}
    assert _call(node, "PUT", "/v1/s3/buckets/dora-charges/object?key=k&user=dora", record)[0] == 200
    status, problem = _charge(node, "dora", cap)
    assert (status, problem["code"]) == (409, "conflict"), problem
    assert _balance(node, "dora") == before - COST and _charged_rows(node, "dora") == []
    assert _jobs(node, "dora")["s3:put"] == 1


def test_a_charge_whose_file_left_the_store_before_its_record_is_paid_back_by_the_next_reconciliation(node) -> None:
    """A file charged, then removed before any record named it (the front removes a file whose charge it heard no
    answer to; a user may remove it by hand): no record will ever come, nor a refusal; the next reconciliation pays
    the charge back and leaves no row."""
    before = _user(node, "edna")
    cap = _fronts(node, "gone")
    assert _charge(node, "edna", cap)[0] == 200
    assert node.xsc("store", "rm", cap).returncode == 0
    assert _call(node, "POST", "/v1/s3/reconcile", {"caps": []}) == (200, {"orphans": []})
    eventually(lambda: _balance(node, "edna") == before, "edna's charge to be paid back", 30)
    assert _charged_rows(node, "edna") == [] and _jobs(node, "edna")["s3:refund"] == 1


def test_a_charge_of_a_file_named_as_the_fronts_with_a_tag_not_made_with_the_nodes_key_is_refused(node) -> None:
    """Whoever holds the node's API token can store a file under a name of the front's shape with a tag it made up, or
    one made with another key: the node checks the tag with its own key, as the front makes it, and refuses the charge
    403 with a problem naming that key; nothing is paid and no row is left, and an import leaves out a record naming
    the file (`not-s3`).  A file named by the front is charged."""
    before = _user(node, "fred")
    made_up = _stored(node, "s3:charges/made-up#" + os.urandom(24).hex())
    other_key = _stored(node, FileMarks(os.urandom(32)).name("charges/other-key"))
    for forged in (made_up, other_key):
        status, problem = _charge(node, "fred", forged)
        assert (status, problem["code"]) == (403, "forbidden"), problem
        assert "s3-files.key" in problem["detail"], problem
    assert _balance(node, "fred") == before and _charged_rows(node, "fred") == [] and _jobs(node, "fred")["s3:put"] == 0
    record = {"parts": [{"cap": made_up, "size": 64}], "etag": "e"}
    status, written = _call(node, "POST", "/v1/s3/import", {"version": 1, "buckets": [
        {"name": "fred-forged", "created": 0, "objects": {"k": record}}]})
    assert status == 200 and [item["reason"] for item in written["left_out"]] == ["not-s3"], written
    assert _call(node, "GET", "/v1/s3/buckets/fred-forged/objects")[1]["contents"] == []
    assert _charge(node, "fred", _fronts(node, "fred"))[0] == 200
    assert _balance(node, "fred") == before - COST
