"""Schemathesis hooks for fuzzing the byok API (tests/e2e/api_fuzz.rs).

Bodies generated from the schema alone almost never name a model the named
provider has, nor a user with stored keys, so nearly every `POST /v1/jobs`
would stop at the catalogue check. Three in four are steered here onto the
user with stored keys and a text-to-video model, keeping the generated
`metadata` and `Idempotency-Key`, often the generated `prompt` and sometimes
one other generated field, so that fuzzed values reach the store and the
queue too.
"""

import json
import os
import zlib

import schemathesis

USER = os.environ["BYOK_FUZZ_USER"]
TARGETS = json.loads(os.environ["BYOK_FUZZ_TARGETS"])
CHECKED = ["negative_prompt", "image_url", "duration_seconds", "aspect_ratio", "resolution", "seed"]


@schemathesis.hook("map_body").apply_to(method="POST", path="/v1/jobs")
def steer_jobs(context, body):
    if not isinstance(body, dict):
        return body
    # Derived from the body, so that a failing example replays the same.
    h = zlib.crc32(json.dumps(body, sort_keys=True, default=repr).encode())
    if h % 4 == 0:
        return body
    pick = (h >> 2) % (2 * len(CHECKED))
    kept = CHECKED[pick] if pick < len(CHECKED) else None
    steered = {key: value for key, value in body.items() if key not in CHECKED or key == kept}
    target = TARGETS[(h >> 6) % len(TARGETS)]
    steered.update(user_id=USER, provider=target["provider"], model=target["model"])
    if (h >> 10) % 2 or not isinstance(steered.get("prompt"), str):
        steered["prompt"] = "a lighthouse at dawn"
    return steered


@schemathesis.hook("map_path_parameters").apply_to(method="DELETE")
def spare_the_fuzz_user(context, path_parameters):
    # Deleting this user's keys would stop every later job at credentials_missing.
    if isinstance(path_parameters, dict) and path_parameters.get("user_id") == USER:
        path_parameters = dict(path_parameters, user_id="00000000-0000-4000-8000-000000000000")
    return path_parameters
