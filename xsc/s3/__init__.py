"""The S3-compatible gateway: SigV4, S3 XML, listings and ETags (pure), the bucket index (LevelDB), and the
S3 front (`xsc s3 serve`, aiohttp) that talks to its node through the user API.  See docs/s3.md."""
