"""The operator's dashboard: static pages (`static/`) that read the node's user API, and its login.

`session` is the pure core of the login (one-time links, session cookies, CSRF tokens); the node's
routes for it are in `xsc.node.ui_routes`.  See docs/dashboard.md."""
