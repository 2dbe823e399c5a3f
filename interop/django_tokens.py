"""Tokens made by the real `django.core.signing.dumps`, for the gateway's tests
(server/tests/gateway_django.rs): what a Django view would hand a browser.

Reads a JSON list of token specs on stdin and prints a JSON list of tokens:

    [{"claims": {"sub": "42"}, "key": "SECRET", "salt": "channels",
      "compress": false, "age": 0}, ...]

`salt` absent: signing.dumps's default (`django.core.signing`). `age`: the
token is signed that many seconds in the past (TimestampSigner's clock is
moved back), to test `--django-max-age`.
"""

import json
import sys
import time

from django.conf import settings

settings.configure(SECRET_KEY="unused: every spec names its key", USE_TZ=True)

from django.core import signing  # noqa: E402 (needs the settings above)


def make(spec):
    age = spec.get("age", 0)
    original = signing.TimestampSigner.timestamp
    if age:
        signing.TimestampSigner.timestamp = lambda self: signing.b62_encode(
            int(time.time()) - age
        )
    try:
        kwargs = {"key": spec["key"], "compress": spec.get("compress", False)}
        if "salt" in spec:
            kwargs["salt"] = spec["salt"]
        token = signing.dumps(spec["claims"], **kwargs)
    finally:
        signing.TimestampSigner.timestamp = original
    # What the gateway will do: check it the way Django itself would.
    loads_kwargs = {"key": spec["key"], "salt": spec.get("salt", "django.core.signing")}
    assert signing.loads(token, **loads_kwargs) == spec["claims"]
    return token


json.dump([make(spec) for spec in json.load(sys.stdin)], sys.stdout)
