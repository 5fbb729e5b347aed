"""`xsc s3 serve|keys|grant|revoke|users|fund|export-index|import-index`: the S3-compatible gateway, its users'
access keys, grants and accounts, and its bucket index's backup; its buckets (`mb`, `rb`, `ls`, `buckets`) in
s3_buckets.py."""

from __future__ import annotations

import click

from .. import codec
from ..units import counted, format_credits
from .output import Credits, Duration, PassesArgs, emit_json, json_option, path_id
from .tables import Col, table
from .s3_buckets import _key_user, _named_bucket, buckets, ls, mb, rb

@click.group()
def s3() -> None:
    """Serve S3 (boto3, rclone, the AWS CLI, s3cmd) over this node's storage."""


for _command in (mb, rb, ls, buckets):
    s3.add_command(_command)


@s3.command()
@click.option("--listen", default="127.0.0.1:9000", show_default=True, metavar="HOST:PORT",
              help="Address the S3 endpoint listens on.")
@click.option("--region", default=None, metavar="REGION",
              help="The region clients sign for: a signature for another is refused, naming this one.  "
                   "[default: the node's node.s3_region, us-east-1 unless set]")
@click.option("--reconcile-interval", type=Duration("10m", least=1), default="5m", show_default=True,
              help="How often to remove files no object refers to, at least 1s, e.g. 10m, 1h, 90s.")
@click.pass_obj
def serve(obj, listen: str, region: str | None, reconcile_interval: float) -> None:
    """Serve S3 for the node of the data dir, in this process, until Ctrl-C or SIGTERM."""
    import logging

    from ..config import REGION, load_config, parse_listen
    from ..errors import ConfigError
    from ..s3.access import KeyRing, key_file
    from ..buckets.marks import FileMarks
    from ..client.aio import NodeApi
    from ..heap import set_malloc_thresholds
    from ..node.auth import FAILURE_BURST
    from ..node.limits import RateLimiter
    from ..s3.remote import RemoteNode
    from ..s3.server import S3Front, serve as run
    from ..tasks import run as run_loop

    # a name no client can sign for: every client would be refused, told to sign for it
    if region is not None and not REGION.fullmatch(region):
        raise ConfigError(f"--region {region[:40]!r} is not a region name like us-east-1 (a-z, 0-9 and '-')",
                          hint="name the region clients sign for: xsc s3 serve --region us-east-1")
    host, port = parse_listen(listen)
    logging.basicConfig(level="INFO", format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    keyring = KeyRing(key_file(obj.data_dir))
    if not keyring.list():
        click.echo("xsc s3: no access keys yet: create one with `xsc s3 keys create`", err=True)
    set_malloc_thresholds()
    limits = load_config(obj.data_dir).node  # the node's connection caps, idle timeout and region hold here too
    # A node that stops answering is told to the client (ServiceUnavailable) with the command that starts this one.
    api = NodeApi(obj.node_url(), obj.token(), start_hint=obj.start_hint().replace("start one", "start it"))
    marks = FileMarks.load(obj.data_dir)  # the node's key, copied into a data dir of the front's own (docs/s3.md)
    # Failed authentications per client address, with the node's own S3 listener's limit (node.auth_failure_limit),
    # counted in this process: a stranger guesses keys here no faster than at the node.
    failures = RateLimiter(limits.auth_failure_limit, FAILURE_BURST, "failed authentications")
    front = S3Front(RemoteNode(api, marks), keyring, marks, region=region or limits.s3_region,
                    reconcile_interval=reconcile_interval, idle_timeout=limits.idle_timeout, failures=failures)

    async def main() -> None:
        try:
            await run(front, host, port, limits,
                      ready=lambda url: click.echo(f"xsc s3 serving {url} for the node at {obj.node_url()}"))
        except OSError as exc:
            raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}",
                              hint="pick another address with --listen HOST:PORT") from exc

    run_loop(main(), limits.event_loop)


@s3.group()
def keys() -> None:
    """Access keys S3 clients sign with (stored mode 0600 in the data dir)."""


@keys.command("create")
@click.option("--user", default=None, metavar="NAME",
              help="The user the key belongs to: it sees and changes that user's buckets (default: xsc).")
@json_option
@click.pass_obj
def keys_create(obj, user: str | None, as_json: bool) -> None:
    """Create an access key; its secret is shown this once."""
    from ..s3.access import KeyRing, key_file
    from ..buckets.core.names import DEFAULT_USER

    _node_dir(obj)
    # An empty --user (a shell variable left unset) is refused by name, never taken for the operator's key.
    created = KeyRing(key_file(obj.data_dir)).create(DEFAULT_USER if user is None else user)
    if as_json:
        emit_json(created)
        return
    click.echo(f"user: {created['user']}\naccess key: {created['access_key']}\nsecret key: {created['secret_key']}")


@keys.command("ls")
@json_option
@click.pass_obj
def keys_ls(obj, as_json: bool) -> None:
    """List the access keys (not their secrets)."""
    from datetime import datetime, timezone

    from ..s3.access import KeyRing, key_file

    found = KeyRing(key_file(obj.data_dir)).list()
    if as_json:
        emit_json(found)
        return
    if not found:
        click.echo("no access keys yet (make one: xsc s3 keys create --user NAME)")
        return
    table(["access key", "user", "created"], [(k["access_key"], k["user"], datetime.fromtimestamp(
        k["created"], timezone.utc).isoformat(timespec="seconds")) for k in found])


@keys.command("rm")
@click.argument("access_key")
@click.pass_obj
def keys_rm(obj, access_key: str) -> None:
    """Remove the access key ACCESS_KEY: requests signed with it are refused from now on."""
    from ..s3.access import KeyRing, key_file

    user = KeyRing(key_file(obj.data_dir)).remove(access_key)
    click.echo(f"removed the access key {access_key} of user {user}: requests signed with it are refused from now on",
               err=True)


@s3.command()
@click.argument("bucket")
@click.argument("user")
@click.argument("access", type=click.Choice(["read", "write"]))
@click.pass_obj
def grant(obj, bucket: str, user: str, access: str) -> None:
    """Let USER read (GetObject, HeadObject, listings) or also write (put, copy, delete, multipart) BUCKET."""
    path = _grant_path(bucket, user)
    _key_user(obj, user)
    with _named_bucket():
        obj.client().request("PUT", path, json_body={"access": access})
    click.echo(f"{user} may now {access} {bucket}", err=True)


@s3.command()
@click.argument("bucket")
@click.argument("user")
@click.pass_obj
def revoke(obj, bucket: str, user: str) -> None:
    """Take back what USER was granted on BUCKET, and abort the multipart uploads it began there."""
    with _named_bucket():
        done = obj.client().request("DELETE", _grant_path(bucket, user))
    aborted = done.get("aborted", [])
    if done.get("had") is None and not aborted:  # a mistyped name: say so, or the user meant keeps its grant unnoticed
        granted = ", ".join(f"{u} {level}" for u, level in sorted(done.get("grants", {}).items())) or "no one"
        click.echo(f"{user} had no grant on {bucket}: nothing to take back (granted there: {granted})", err=True)
        return
    aborted_said = f"; its {counted(len(aborted), 'multipart upload')} in progress there aborted" if aborted else ""
    click.echo(f"{user} has no grant on {bucket} now{aborted_said}", err=True)


@s3.command()
@json_option
@click.pass_obj
def users(obj, as_json: bool) -> None:
    """Every S3 user: each with access keys, a bucket, a grant, an upload in progress or credits funded, with its
    keys and the ledger account its puts are paid from."""
    from collections import Counter
    from urllib.parse import quote

    from ..s3.access import KeyRing, key_file

    client = obj.client()
    keys_of = Counter(k["user"] for k in KeyRing(key_file(obj.data_dir)).list())
    known = {u["user"]: u for u in client.request("GET", "/v1/s3/accounts")["users"]}
    for user in set(keys_of) - set(known):
        known[user] = client.request("GET", f"/v1/s3/accounts/{quote(user, safe='')}")
    found = [{**known[user], "keys": keys_of[user]} for user in sorted(known)]
    if as_json:
        emit_json(found)
        return
    if not found:
        click.echo("no S3 users yet (make one: xsc s3 keys create --user NAME)")
        return
    table([Col("user", keep=True), Col("keys", right=True), Col("account", keep=True, under=True),
           Col("balance (credits)", right=True), "pays"],
          [(u["user"], u["keys"], u["account"], format_credits(u["balance"]), u["pays"]) for u in found])


# PassesArgs: `fund USER -1` is an amount refused as negative, not an option unknown
@s3.command(cls=PassesArgs, context_settings={"ignore_unknown_options": True})
@click.argument("user")
@click.argument("amount", metavar="CREDITS", type=Credits())
@json_option
@click.pass_obj
def fund(obj, user: str, amount: int, as_json: bool) -> None:
    """Move CREDITS from the node's account to USER's, which pays for what USER puts through the front."""
    _key_user(obj, user)
    info = obj.client().request("POST", f"/v1/s3/accounts/{path_id(user, 'user', 'xsc s3 users')}/fund",
                                json_body={"amount": amount})
    if as_json:
        emit_json(info)
        return
    click.echo(f"{user}'s account {info['account']} now holds {format_credits(info['balance'])} credits")


def _node_dir(obj) -> None:
    """Refuse a data dir that holds no node (a mistyped --data-dir): a key written there is read by no front.  A
    dir a node was set up in (`xsc config set`, before its first start) or started in holds one."""
    from ..config import CONFIG_FILE
    from ..errors import ConfigError
    from ..identity import NODE_KEY_FILE

    root = obj.data_dir
    if not (root / NODE_KEY_FILE).exists() and not (root / CONFIG_FILE).exists():
        raise ConfigError(f"no node in {root}: a key made there would be read by no S3 front",
                          hint=f"{obj.start_hint()}, or name the node's own with --data-dir DIR")


def _grant_path(bucket: str, user: str) -> str:
    """The grant's route, once BUCKET and USER are names: anything else would make another route's path."""
    from ..buckets.core.names import check_bucket, check_user

    return f"/v1/s3/buckets/{check_bucket(bucket)}/grants/{check_user(user)}"


@s3.command("export-index")
@click.option("-o", "--output", type=click.Path(dir_okay=False, allow_dash=True), default="-", metavar="FILE",
              help="Write to FILE, which appears only once complete (default: stdout).")
@click.option("--force", is_flag=True, help="Overwrite FILE if it exists.")
@click.pass_obj
def export_index(obj, output: str, force: bool) -> None:
    """Write the bucket index (every object's capabilities) as JSON: back it up, it is the way back to the data."""
    import os

    from ..errors import InvalidArgument
    from .output import output_file

    target = output_file(output, force) if output != "-" else None
    index = obj.client().request("GET", "/v1/s3/export")
    text = codec.text(index, indent=1, sort_keys=True) + "\n"
    if target is None:
        click.echo(text, nl=False)
        return
    # A backup overwritten is the one thing that must not be half written: the new one appears whole or not at all.
    tmp = target.with_name(f".{target.name}.xsc-partial")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # capabilities are secrets
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        if force:
            os.replace(tmp, target)
        else:
            os.link(tmp, target)  # fails if a FILE appeared since it was checked: that one is kept
    except FileExistsError:
        raise InvalidArgument(f"{output} already exists", hint="add --force to overwrite it, or pick another -o") \
            from None
    finally:
        tmp.unlink(missing_ok=True)
    n = sum(len(b["objects"]) for b in index["buckets"])
    click.echo(f"wrote {counted(len(index['buckets']), 'bucket')}, {counted(n, 'object')} to {output}", err=True)


@s3.command("import-index")
@click.argument("path", metavar="FILE", type=click.Path(dir_okay=False, allow_dash=True))
@json_option
@click.pass_obj
def import_index(obj, path: str, as_json: bool) -> None:
    """Write the export FILE (`xsc s3 export-index`) into this node's bucket index: each bucket, object, upload,
    completed upload and funded user it holds none of; what it holds is kept as it is, so running it again changes
    nothing."""
    import sys
    from collections import Counter
    from pathlib import Path

    from ..buckets import backup
    from ..errors import InvalidArgument, NotFound

    try:
        text = sys.stdin.buffer.read() if path == "-" else Path(path).read_bytes()
    except FileNotFoundError:
        raise NotFound(f"no file {path!r}", hint="write one first: xsc s3 export-index -o FILE") from None
    except OSError as err:
        raise InvalidArgument(f"cannot read {path!r}: {err.strerror}", hint="xsc s3 import-index FILE") from None
    try:
        exported = codec.loads(text)
    except ValueError:
        raise InvalidArgument(f"{path!r} is not JSON", hint="import a file xsc s3 export-index wrote") from None
    client, done, left_out = obj.client(), Counter(), []
    for piece in backup.checked_pieces(exported):
        answer = client.request("POST", "/v1/s3/import", json_body=piece)
        left_out += answer.pop("left_out", [])
        done.update(answer)
    if as_json:
        emit_json({**{key: done[key] for key in ("buckets", "objects", "uploads", "parts", "completed", "funded",
                                                 "charges", "kept", "taken", "refused", "foreign")},
                   "left_out": left_out})
        return
    click.echo(f"imported {counted(done['buckets'], 'bucket')}, {counted(done['objects'], 'object')}, "
               f"{counted(done['uploads'], 'upload')} with {counted(done['parts'], 'part')}, "
               f"{counted(done['completed'], 'completed upload')}, {counted(done['funded'], 'funded user')}, "
               f"{counted(done['charges'], 'refund')} owed; "
               f"{counted(done['kept'], 'record')} this node held already kept as they were", err=True)
    if done["taken"]:
        click.echo(f"left out {counted(done['taken'], 'object or part', 'objects or parts')} naming a file another "
                   "record here refers to: deleting one would remove the other's file", err=True)
    named: Counter = Counter()  # each reason's first few named: an import into a fresh node may leave out every one
    for item in (i for i in left_out if i.get("reason") in _REFUSED):
        named[item["reason"]] += 1
        if named[item["reason"]] <= 10:
            what = (f"charge {item.get('charge')} of user {item.get('user')}" if "charge" in item
                    else f"part {item.get('part')} of upload {item.get('upload')}" if "part" in item
                    else f"completed upload {item.get('upload')} of object {item.get('bucket')}/{item.get('key')}"
                    if "upload" in item else f"object {item.get('bucket')}/{item.get('key')}")
            click.echo(f"left out {what}: {_REFUSED[item['reason']]}", err=True)
    for reason, n in ((r, n - 10) for r, n in named.items() if n > 10):
        click.echo(f"left out {counted(n, 'more record')} so ({reason}): `xsc s3 import-index FILE --json` names "
                   "them all", err=True)
    if done["foreign"]:
        click.echo(f"did not note {counted(done['foreign'], 'user')} as funded by this node: the export's node funded "
                   "them, not this one (fund them here with: xsc s3 fund USER CREDITS)", err=True)


_REFUSED = {"removing": "its file is marked for removal here (it may be gone already)",
            "missing": "its file is not in this node's store (removed, or stored by another node; the export's "
                       "capabilities still read with: xsc store get CAPABILITY)",
            "not-s3": "its file is one of this node's own files, not one the S3 front stored (xsc store ls names it)",
            "foreign": "the export is another node's: its account, not this one's, was paid the charge",
            "unsigned": "the export says it is this node's, but this node's account did not sign the row (a file "
                        "written elsewhere, or edited since): its amount would be paid from this node's account",
            "settled": "this node's ledger holds the user's transfers: the charge was settled or refunded here "
                       "(xsc ledger history --account ACCOUNT shows which)",
            "recorded": "a record here refers to its file: the charge stands"}
