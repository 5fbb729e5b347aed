"""`xsc s3 mb|rb|ls|buckets`: the S3 front's buckets made, removed and listed from the command line.

These write records alone (a bucket's, objects deleted, uploads aborted) and store no file, so the node takes them
whichever front serves its S3, its own (`node.s3_listen`) or `xsc s3 serve`; the files of what is deleted are marked
garbage in the same write, for that front to remove at its next reconciliation."""

from __future__ import annotations

import contextlib

import click

from ..units import counted, format_size
from .output import emit_json, json_option, path_id
from .tables import Col, prose, table

PAGE = 1000  # keys or uploads asked for, and deleted, a request: the most the routes answer at once


@click.command()
@click.argument("bucket")
@click.option("--user", default=None, metavar="NAME",
              help="The S3 user who owns it: its access keys read and write it (default: xsc).")
@json_option
@click.pass_obj
def mb(obj, bucket: str, user: str | None, as_json: bool) -> None:
    """Make the bucket BUCKET (s3://BUCKET too), as an S3 client's CreateBucket does."""
    from ..buckets.core.names import check_user

    name = _bucket_name(bucket)
    if user is not None:
        _key_user(obj, check_user(user))
    made = obj.client().request("PUT", f"/v1/s3/buckets/{name}", query={"user": user})
    if as_json:
        emit_json({k: made.get(k) for k in ("name", "owner", "created", "new")})
    elif made["new"]:
        click.echo(f"made bucket {name}, owned by {made['owner']}", err=True)
    else:
        click.echo(f"bucket {name} exists already, owned by {made['owner']}: nothing changed", err=True)


@click.command()
@click.argument("bucket")
@click.option("--force", is_flag=True, help="Delete its objects and abort its multipart uploads first.")
@click.pass_obj
def rb(obj, bucket: str, force: bool) -> None:
    """Remove the bucket BUCKET (s3://BUCKET too), which must be empty unless --force."""
    from ..errors import BucketNotEmpty
    from .progress import progress_bar

    name, client = _bucket_name(bucket), obj.client()
    path = f"/v1/s3/buckets/{name}"
    deleted = aborted = garbage = 0
    with _named_bucket():
        if force:
            with progress_bar(f"emptying {name}") as bar:
                deleted, aborted, garbage = _emptied(client, path, bar)
        try:
            client.request("DELETE", path)
        except BucketNotEmpty as err:  # S3's BucketNotEmpty: what it holds, and the command that empties it first
            raise BucketNotEmpty(err.message, bucket=name,
                                 hint=f"delete what it holds first: xsc s3 rb {name} --force") from None
    emptied = f"; deleted {counted(deleted, 'object')} and aborted {counted(aborted, 'multipart upload')} first" \
        if force else ""
    click.echo(f"removed bucket {name}{emptied}", err=True)
    if garbage:
        click.echo(f"{counted(garbage, 'file')} no object refers to now: removed from the store by the S3 front's next "
                   "reconciliation (node.s3_listen, or xsc s3 serve)", err=True)


def _emptied(client, path: str, bar) -> tuple[int, int, int]:
    """Every object of the bucket at `path` deleted and every upload aborted, a page at a time (each deletion's own
    synced write, so one interrupted leaves what it did done): how many of each, and the files that made garbage."""
    deleted = aborted = garbage = 0
    while keys := [key for key, _ in client.request("GET", f"{path}/objects", query={"max_keys": PAGE})["contents"]]:
        garbage += len(client.request("POST", f"{path}/delete", json_body={"keys": keys})["garbage"])
        deleted += len(keys)
        bar.advance(len(keys))
    while ids := [up["id"] for _, up in client.request("GET", f"{path}/uploads", query={"max_uploads": PAGE})["contents"]]:
        for upload_id in ids:
            garbage += len(client.request("DELETE", f"/v1/s3/uploads/{upload_id}")["garbage"])
            aborted += 1
            bar.advance()
    return deleted, aborted, garbage


@click.command("ls")
@click.argument("bucket", required=False)
@click.option("--prefix", default="", metavar="PREFIX", help="Only the objects whose keys begin with PREFIX.")
@json_option
@click.pass_obj
def ls(obj, bucket: str | None, prefix: str, as_json: bool) -> None:
    """The buckets (as `xsc s3 buckets`), or with BUCKET its objects: each key whole, its size, when it was written."""
    from datetime import datetime, timezone

    from ..errors import InvalidArgument

    if bucket is None:
        if prefix:
            raise InvalidArgument("--prefix lists a bucket's objects: name the bucket",
                                  hint="xsc s3 ls BUCKET --prefix PREFIX")
        _list_buckets(obj, None, as_json)
        return
    name, client, found, start = _bucket_name(bucket), obj.client(), [], None
    with _named_bucket():
        while True:
            page = client.request("GET", f"/v1/s3/buckets/{name}/objects",
                                  query={"prefix": prefix or None, "max_keys": PAGE, "start": start})
            found += page["contents"]
            if not page["truncated"]:
                break
            start = page["next"]
    if as_json:
        emit_json([{"key": key, **summary} for key, summary in found])
        return
    if not found:
        under = f" under {prefix!r}" if prefix else ""
        prose(f"no objects in {name}{under} (S3 clients put them through the front: PutObject, `aws s3 cp`)")
        return
    table([Col("key", keep=True), Col("size", right=True), Col("modified", drop=1)],
          [(key, format_size(s["size"]), datetime.fromtimestamp(s["modified"], timezone.utc).isoformat(
              timespec="seconds")) for key, s in found])


@click.command()
@click.option("--user", default=None, metavar="NAME", help="Only the buckets USER owns or was granted.")
@json_option
@click.pass_obj
def buckets(obj, user: str | None, as_json: bool) -> None:
    """Every bucket of the node's S3 front: its owner, who else may read or write it, and when it was made."""
    _list_buckets(obj, user, as_json)


def _list_buckets(obj, user: str | None, as_json: bool) -> None:
    from datetime import datetime, timezone

    from ..buckets.core.names import check_user

    query = {"user": check_user(user)} if user is not None else None
    found = sorted(obj.client().request("GET", "/v1/s3/buckets", query=query)["buckets"], key=lambda b: b["name"])
    if as_json:
        emit_json([{k: b.get(k) for k in ("name", "owner", "grants", "created")} for b in found])
        return
    if not found:
        whose = f"user {user} owns and was granted none" if user is not None else "none yet"
        prose(f"no buckets: {whose} (make one: xsc s3 mb NAME)")
        return
    # Names are whole (they are typed back into `xsc s3 grant`): an owner that does not fit goes under its row.
    table([Col("bucket", keep=True), Col("owner", keep=True, under=True), Col("grants", right=True),
           Col("created", drop=1)],
          # An imported bucket's created may be unknown (None): an export written by hand, or of a record that kept none.
          [(b["name"], b["owner"], len(b["grants"]), datetime.fromtimestamp(b["created"], timezone.utc).isoformat(
              timespec="seconds") if b.get("created") else "-") for b in found],
          details=[[f"{u} may {level}" for u, level in sorted(b["grants"].items())] or None for b in found])


def _bucket_name(typed: str) -> str:
    """BUCKET as typed, or as the AWS CLI spells it (s3://BUCKET), once a bucket name: anything else would make
    another route's path."""
    from ..buckets.core.names import check_bucket

    return check_bucket(typed.removeprefix("s3://").removesuffix("/"))


@contextlib.contextmanager
def _named_bucket():
    """A bucket the node has none of, named in a command: most likely mistyped, so the way to see the names."""
    from ..errors import NoSuchBucket

    try:
        yield
    except NoSuchBucket as err:
        raise NoSuchBucket(err.message, hint="the node's buckets and their owners: xsc s3 buckets") from None


def _key_user(obj, user: str) -> None:
    """Refuse a USER no access key belongs to: what a mistyped name is granted, funded or given would go to whoever
    is later given a key by that name, and its credits could be neither spent nor taken back meanwhile."""
    from ..errors import NotFound
    from ..s3.access import KeyRing, key_file

    path_id(user, "user", "xsc s3 users")  # an empty name is refused as naming nobody
    users = sorted({k["user"] for k in KeyRing(key_file(obj.data_dir)).list()})
    if user not in users:
        raise NotFound(f"no access key belongs to a user {user!r} (the users: {', '.join(users) or 'none yet'})",
                       hint=f"make one first: xsc s3 keys create --user {user}")
