"""The node's bucket index: S3 buckets, objects and multipart uploads over the node's stored files.

    index.S3Index   the index in the node's LevelDB (keys in xsc/keys.py); the node's /v1/s3 routes use it
    listing         pages of keys under a prefix and delimiter, continuation tokens (pure)
    names           bucket and object names (pure)
    etag            S3 ETags of objects and multipart uploads (pure)
    records         an object's record as stored, a write's condition, headers and checksums, checked (pure)

The S3 front (xsc/s3) reads names and listings from here; the node holds the index.  See docs/s3.md.
"""
