"""keyword-redact: a lookout sanitizer written in Python, built into a WASM component with
componentize-py against wit/plugin.wit (world `sanitizer`).

It redacts the value of every field whose key names a secret (password, token, ...), and
`key=value` / `key: value` secrets inside free text. A smaller policy than the Rust `redact`
plugin (no card numbers, JWTs, PEM blocks or entropy checks): it shows how a Python plugin
reads the columnar batch and answers with edits.

Build (what `cargo xtask test` does):
    componentize-py -d wit -w sanitizer componentize --stub-wasi -p plugins/python/keyword_redact app \
        -o target/python-plugins/keyword_redact.wasm
"""

import re

import wit_world
from componentize_py_types import Err
from wit_world.imports import host, types

REDACTED = "[REDACTED]"

# Keys whose values are secrets, matched as substrings of the lower-cased key.
SECRET_KEYS = ["password", "passwd", "secret", "token", "api_key", "apikey", "authorization", "cookie"]

# `password=hunter2`, `token: abc`, `api-key = x` inside free text.
INLINE = re.compile(
    r"(?i)\b(password|passwd|pwd|secret|token|api[_-]?key)(\s*[=:]\s*)(\"[^\"]*\"|'[^']*'|[^\s,;&]+)"
)


def span(data: bytes, packed: int) -> str:
    """The string a column names: `start << 32 | len`, byte offsets into the batch's text."""
    start, length = packed >> 32, packed & 0xFFFFFFFF
    return data[start : start + length].decode("utf-8")


class WitWorld(wit_world.WitWorld):
    def init(self, config):
        for key, value in config:
            if key == "extra_keys":
                SECRET_KEYS.extend(k.strip().lower() for k in value.split(",") if k.strip())
            else:
                raise Err(f"unknown config key `{key}`: keyword-redact takes `extra_keys`")
        host.log(types.Severity.INFO, f"keyword-redact ready: {len(SECRET_KEYS)} secret keys")

    def sanitize(self, batch):
        data = batch.text.encode("utf-8")
        edits = []
        for index, (key, value_type, value) in enumerate(
            zip(batch.keys, batch.value_types, batch.values)
        ):
            name = span(data, key).lower()
            if any(secret in name for secret in SECRET_KEYS):
                edits.append(types.Edit(index, types.Change_Replace(REDACTED)))
            elif value_type == types.ValueType.STR:
                text = span(data, value)
                cleaned = INLINE.sub(lambda m: m.group(1) + m.group(2) + REDACTED, text)
                if cleaned != text:
                    edits.append(types.Edit(index, types.Change_Replace(cleaned)))
        return types.Verdict(edits, [])
