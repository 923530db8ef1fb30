"""Runs Twilio's official helper library for ivrauth-testkit::telephony (tests only).

Reads one JSON object on stdin:
  {"op": "compute", "token": "...", "url": "...", "params": [["k", "v"], ...]}
  {"op": "validate", "token": "...", "url": "...", "params": [...], "signature": "..."}
and prints one JSON line: {"signature": "..."} or {"valid": true|false}.

Parameters are passed as a multi-dict (like Flask's), so a repeated name keeps all of its
values, as Twilio's RequestValidator expects.
"""

import json
import sys

from twilio.request_validator import RequestValidator


class MultiParams(dict):
    """name -> [values]; RequestValidator asks `getall(name)` before falling back to `[name]`."""

    def getall(self, name):
        return self[name]


def main():
    req = json.load(sys.stdin)
    params = MultiParams()
    for name, value in req["params"]:
        params.setdefault(name, []).append(value)
    validator = RequestValidator(req["token"])
    if req["op"] == "compute":
        out = {"signature": validator.compute_signature(req["url"], params)}
    elif req["op"] == "validate":
        out = {"valid": bool(validator.validate(req["url"], params, req["signature"]))}
    else:
        raise ValueError("unknown op %r" % req["op"])
    sys.stdout.write(json.dumps(out) + "\n")


if __name__ == "__main__":
    main()
