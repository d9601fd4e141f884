"""Loaded by every Python subprocess the tests start (the folder is put on PYTHONPATH by conftest.py): installs
the network guard and appends what it refused to the file named by ALPR_NETGUARD_LOG, which conftest checks after
each test. ALPR_NETGUARD_OFF=1 skips it for a subprocess that is meant to reach the package index (fetch-model)."""

import atexit
import os
import sys

if os.environ.get("ALPR_NETGUARD_LOG") and os.environ.get("ALPR_NETGUARD_OFF") != "1":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    import netguard

    _attempts = netguard.install()
    _log = os.environ["ALPR_NETGUARD_LOG"]

    def _report() -> None:
        if _attempts:
            with open(_log, "a") as f:
                f.writelines(f"{' '.join(sys.argv[:2])}: {a}\n" for a in _attempts)

    atexit.register(_report)
