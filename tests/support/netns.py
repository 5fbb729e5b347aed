"""Tests that make network namespaces: what they need of the machine."""

from __future__ import annotations

import os
import shutil

import pytest

WHY_NOT = ("not root" if os.geteuid() != 0 else
           "no `ip` command" if shutil.which("ip") is None else
           "no `iptables` command (scripts/ci-deps.sh installs it)" if shutil.which("iptables") is None else None)
needs_netns = pytest.mark.skipif(WHY_NOT is not None, reason=f"namespaced devnets need root, ip and iptables: {WHY_NOT}")
