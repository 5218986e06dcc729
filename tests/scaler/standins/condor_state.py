"""The job queue the HTCondor stand-ins share: a JSON file the test controls.

HTCondor's daemons (schedd, negotiator, startd) cannot be installed here, so condor_submit,
condor_q and condor_rm in this directory reproduce the outputs HTCondor DOCUMENTS for them,
keeping the queue in the JSON file named by CONDOR_STANDIN_STATE:

    {"next_cluster": 1, "jobs": [{"ClusterId": 1, "ProcId": 0, "JobStatus": 1, ...}]}

No job ever runs: a test moves jobs between states (1 idle, 2 running, 5 held with a
HoldReason, 4 completed, 3 removed) by editing the file, as a real pool would.
"""
import fcntl
import json
import os
import sys
from contextlib import contextmanager


@contextmanager
def queue():
    """The queue, locked; written back when the block ends without an exception."""
    path = os.environ.get("CONDOR_STANDIN_STATE")
    if not path:
        sys.stderr.write("CONDOR_STANDIN_STATE is not set: the stand-in has no queue file\n")
        sys.exit(2)
    with open(path + ".lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            with open(path) as handle:
                state = json.load(handle)
        except FileNotFoundError:
            state = {"next_cluster": 1, "jobs": []}
        yield state
        with open(path + ".tmp", "w") as handle:
            json.dump(state, handle, indent=1)
        os.replace(path + ".tmp", path)
