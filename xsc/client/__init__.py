"""Clients of a node's user API (the token-guarded /v1 routes), for programs that run beside the node.

    sync.NodeClient, sync.Download   synchronous, stdlib http.client: the CLI's (fast to import)
    sync.NodeBody                    a large body passed on by splice(2) (or copied): the CLI's get, the front's relay
    aio.NodeApi                      asynchronous, aiohttp, streaming both ways: the S3 front's
    sync.error_from_problem          a node's problem body back into the XscError it was (both use it)
    sync.json_answer                 a node's JSON answer, or an XscError if it is not JSON (both use it)

The CLI and the S3 front both stand on this package; neither imports the other, and nothing here imports them.
"""
