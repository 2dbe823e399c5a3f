#!/usr/bin/env python3
"""Convert a Django ``CHANNEL_LAYERS`` setting into a channels-server config file.

The ``[layer]`` section of ``channels-server --config FILE`` mirrors
``CHANNEL_LAYERS["default"]``: ``BACKEND`` becomes ``backend`` and ``CONFIG``
becomes ``[layer.config]``, key for key. This script reads the dict from a
settings module or a JSON literal, checks it by building the layer with the
real backend class (``channels_redis`` or ``channels.layers``; building one
opens no connection), and prints the TOML (or writes it with ``-o``).

Usage::

    django_to_toml.py --settings myproject.settings [--pythonpath DIR] [--alias default] [-o channels.toml]
    django_to_toml.py --json '{"default": {"BACKEND": "...", "CONFIG": {...}}}'

Host entries keep their channels_redis forms: a URL string, a
``("host", port)`` pair, an ``{"address": ...}`` dict, or a Sentinel dict
(``sentinels``, ``master_name``, ``sentinel_kwargs``). A compiled regex key
of ``channel_capacity`` (``re.compile(...)``) becomes a ``"re:<pattern>"``
key; in a JSON literal, write ``"re:<pattern>"`` keys directly.
"""

import argparse
import importlib
import json
import re
import sys

# The [layer.config] keys channels-server reads (channels_redis's keyword
# arguments, WIRE.md section 2.1).
SUPPORTED = {
    "hosts",
    "prefix",
    "expiry",
    "group_expiry",
    "capacity",
    "channel_capacity",
    "symmetric_encryption_keys",
    "random_prefix_length",
    "serializer_format",
}
REGEX_PREFIX = "re:"


class ConversionError(Exception):
    """The dict cannot be expressed as a channels-server config file."""


def load_layers(args):
    if args.settings:
        for path in reversed(args.pythonpath):
            sys.path.insert(0, path)
        module = importlib.import_module(args.settings)
        layers = getattr(module, "CHANNEL_LAYERS", None)
        if layers is None:
            raise ConversionError(f"{args.settings} has no CHANNEL_LAYERS")
        return layers
    return json.loads(args.json)


def import_backend(path):
    module_name, _, class_name = path.rpartition(".")
    if not module_name:
        raise ConversionError(f"BACKEND {path!r} is not a dotted class path")
    return getattr(importlib.import_module(module_name), class_name)


def python_config(config, from_json):
    """The CONFIG dict as the backend takes it (``re:`` keys compiled when
    they came from JSON, host lists as tuples)."""
    config = dict(config)
    capacities = config.get("channel_capacity")
    if from_json and isinstance(capacities, dict):
        config["channel_capacity"] = {
            (re.compile(k[len(REGEX_PREFIX):]) if k.startswith(REGEX_PREFIX) else k): v
            for k, v in capacities.items()
        }
    return config


def validate(backend, config):
    """Builds the layer with the real class: it raises on what it refuses."""
    cls = import_backend(backend)
    try:
        cls(**config)
    except Exception as error:  # the backend's own message says what is wrong
        raise ConversionError(f"{backend} refuses this CONFIG: {type(error).__name__}: {error}")


def toml_value(value, where):
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, bytes):
        try:
            value = value.decode("utf-8")
        except UnicodeDecodeError:
            raise ConversionError(f"{where}: bytes that are not UTF-8 cannot go into TOML")
    if isinstance(value, str):
        # JSON string escapes are valid TOML basic-string escapes.
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v, f"{where}[{i}]") for i, v in enumerate(value)) + "]"
    if isinstance(value, dict):
        items = []
        for key, item in value.items():
            items.append(f"{toml_key(key, where)} = {toml_value(item, f'{where}.{key}')}")
        return "{ " + ", ".join(items) + " }" if items else "{}"
    raise ConversionError(f"{where}: a {type(value).__name__} cannot go into TOML")


def toml_key(key, where):
    if isinstance(key, re.Pattern):
        key = REGEX_PREFIX + key.pattern
    if not isinstance(key, str):
        raise ConversionError(f"{where}: key {key!r} is not a string")
    if re.fullmatch(r"[A-Za-z0-9_-]+", key):
        return key
    return json.dumps(key, ensure_ascii=False)


def convert(layers, alias="default"):
    if alias not in layers:
        raise ConversionError(f"CHANNEL_LAYERS has no {alias!r} entry")
    entry = layers[alias]
    unknown = set(entry) - {"BACKEND", "CONFIG"}
    if unknown:
        raise ConversionError(f"CHANNEL_LAYERS[{alias!r}] has unsupported keys: {sorted(unknown)}")
    backend = entry["BACKEND"]
    config = entry.get("CONFIG", {}) or {}
    unsupported = sorted(set(config) - SUPPORTED)
    if unsupported:
        raise ConversionError(
            f"CONFIG keys channels-server does not take: {unsupported} "
            f"(it takes {sorted(SUPPORTED)})"
        )
    lines = [
        f"# Converted from Django CHANNEL_LAYERS[{alias!r}] by interop/django_to_toml.py",
        "[layer]",
        f"backend = {toml_value(backend, 'BACKEND')}",
    ]
    if config:
        lines += ["", "[layer.config]"]
        for key, value in config.items():
            if key == "channel_capacity":
                value = {
                    (REGEX_PREFIX + k.pattern if isinstance(k, re.Pattern) else k): v
                    for k, v in value.items()
                }
            lines.append(f"{key} = {toml_value(value, key)}")
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--settings", help="settings module holding CHANNEL_LAYERS")
    source.add_argument("--json", help="CHANNEL_LAYERS as a JSON literal")
    parser.add_argument("--pythonpath", action="append", default=[], help="added to sys.path")
    parser.add_argument("--alias", default="default", help="which layer (default: default)")
    parser.add_argument("-o", "--output", help="write here instead of stdout")
    args = parser.parse_args(argv)
    try:
        layers = load_layers(args)
        entry = layers.get(args.alias, {})
        if "BACKEND" in entry:
            validate(entry["BACKEND"], python_config(entry.get("CONFIG", {}) or {}, bool(args.json)))
        text = convert(layers, args.alias)
    except (ConversionError, ImportError, ValueError, KeyError) as error:
        print(f"django_to_toml: {error}", file=sys.stderr)
        return 1
    if args.output:
        with open(args.output, "w", encoding="utf-8") as out:
            out.write(text)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
