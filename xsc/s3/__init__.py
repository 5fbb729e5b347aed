"""The S3 front (`xsc s3 serve`, aiohttp): SigV4 and S3 XML (pure), its access keys, and the server, which talks
to its node through the user API (xsc/client) and keeps its objects in the node's bucket index (xsc/buckets);
`bodies.py` reads an object's bytes from its part files (streamed, or relayed by splice(2)); `small.py` sends small
objects to the node, several in one request under load.
See docs/s3.md."""
