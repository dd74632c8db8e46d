"""What a config value may be, and what a stored config may hold.

* Types, strictly (:func:`check_value`): each key's value must fit its dataclass field's annotation —
  no float for an integer (YAML ``2.0``), no string for a boolean (YAML ``"no"``), finite numbers
  only (no ``nan`` / ``inf``), lists and mappings checked item by item. The error
  (:class:`~counterpoint.errors.ConfigError`) names the key path and the expected type.
* Secrets and local paths (:func:`public`): a stored or published config holds no API key, token,
  password or URL credential (each is replaced by a note saying where it is read from) and no
  absolute local path (only its last part, after ``<local>/``).

Imports nothing from Counterpoint but its errors and the engine client's key variables.
"""

from __future__ import annotations

import collections.abc
import math
import re
import typing
from typing import Any, Mapping

from counterpoint.errors import ConfigError
# Where the OpenAI-compatible client reads its key when generator.api_key is not set.
from counterpoint.generators.openai_http import API_KEY_ENV_VARS

REDACTED = "<redacted>"
API_KEY_REDACTED = f"<redacted: give the key as ${API_KEY_ENV_VARS[0]} or ${API_KEY_ENV_VARS[1]}>"
_SECRET_KEYS = {"api_key", "apikey", "token", "password", "passwd", "secret", "authorization", "credentials"}
_SECRET_SUFFIXES = ("_api_key", "_token", "_secret", "_password", "_credentials")
_URL_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)[^/@\s]+@")
_URL_SECRET_PARAM = re.compile(r"(?P<name>[?&](?:api_?key|key|token|access_token|auth|sig|signature|password)=)[^&#\s]+",
                               re.IGNORECASE)
LOCAL_PATH_PREFIX = "<local>/"
# Keys whose values are file or folder paths (only these are shortened: a stop string may start with "/").
_PATH_KEYS = {"output", "paths", "model", "hf_data_files", "data_files", "cache_dir"}


def is_secret_key(key: Any) -> bool:
    """A config key whose string value is a credential (``api_key``, ``hf_token``, ``password``, ...)."""
    k = str(key).lower()
    return k in _SECRET_KEYS or k.endswith(_SECRET_SUFFIXES)


def _public_str(text: str, shorten_path: bool = False) -> str:
    """Credentials out of URLs (``user:pass@``, ``?token=``); an absolute local path becomes
    ``<local>/<last part>`` (a published file must not name the machine's folders or users)."""
    text = _URL_USERINFO.sub(lambda m: m.group("scheme") + REDACTED + "@", text)
    text = _URL_SECRET_PARAM.sub(lambda m: m.group("name") + REDACTED, text)
    local = text[len("file://"):] if text.startswith("file://") else text
    if shorten_path and local.startswith(("/", "~")):
        return LOCAL_PATH_PREFIX + (local.rstrip("/").rsplit("/", 1)[-1] or "")
    return text


def public(obj: Any, key: Any = None) -> Any:
    """``obj`` (a stored config dict) with every secret replaced by a note saying where it is read from.

    Rules: the string value of a secret key (:func:`is_secret_key`) becomes ``<redacted...>`` (the
    engine's API key says which environment variables to set instead); URLs lose their
    ``user:password@`` and secret query parameters; absolute local paths keep only their last part.
    """
    if isinstance(obj, Mapping):
        return {k: public(v, k) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [public(v, key) for v in obj]
    if isinstance(obj, str) and obj and key is not None and is_secret_key(key):
        return API_KEY_REDACTED if str(key).lower() == "api_key" else REDACTED
    if isinstance(obj, str):
        return _public_str(obj, shorten_path=key in _PATH_KEYS)
    return obj


_TYPE_NAMES = {int: "an integer", float: "a finite number", bool: "true or false", str: "a string"}
_PLURALS = {int: "integers", float: "finite numbers", bool: "booleans", str: "strings"}


def _describe(hint) -> str:
    """``hint`` in words, for an error message (``an integer or null``, ``a list of strings``)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint in _TYPE_NAMES:
        return _TYPE_NAMES[hint]
    if origin is typing.Union:
        return " or ".join(["null" if a is type(None) else _describe(a) for a in args])
    if origin in (list, tuple) or hint is tuple:
        return f"a list of {_PLURALS.get(args[0], 'values')}" if args else "a list"
    if origin is dict or hint is dict:
        return "a mapping"
    return getattr(hint, "__name__", str(hint))


def _fits(value, hint) -> bool:
    """Whether ``value`` (as loaded from YAML / JSON or parsed from a flag) is of type ``hint``.

    Strict where YAML is loose: 2.0 is no integer, "no" is no boolean, nan / inf are no numbers.
    """
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is typing.Any or (origin is None and not isinstance(hint, type)):
        return True  # Callable and other hints a config file cannot write
    if origin is typing.Union:
        return any(_fits(value, a) for a in args)
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        return isinstance(value, int) or math.isfinite(value)  # (a huge int has no float to test)
    if origin in (list, tuple) or hint in (list, tuple):
        return isinstance(value, (list, tuple)) and (not args or all(_fits(v, args[0]) for v in value))
    if origin is dict or hint is dict:
        return isinstance(value, Mapping) and (not args or all(
            _fits(k, args[0]) and _fits(v, args[1]) for k, v in value.items()))
    if origin is not None:
        return callable(value) if origin is collections.abc.Callable else True
    return isinstance(value, hint)


def check_value(cls, name: str, value, where: str) -> None:
    """Raises :class:`ConfigError` naming the key (``where``) and the expected type when ``value`` does not
    fit the annotation of field ``name`` of dataclass ``cls``."""
    _check_hint(value, typing.get_type_hints(cls).get(name, typing.Any), where)


def _check_hint(value, hint, where: str) -> None:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is list and args == (str,) and isinstance(value, str):
        return  # one path / URL for a list of them (the component wraps it)
    # A list or mapping of the right kind: name the element that does not fit (paths[1], min_rows[x]).
    if args and origin in (list, tuple) and isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _check_hint(item, args[0], f"{where}[{i}]")
        return
    if args and origin is dict and isinstance(value, Mapping):
        for key, item in value.items():
            _check_hint(key, args[0], f"{where} key {key!r}")
            _check_hint(item, args[1], f"{where}[{key}]")
        return
    if not _fits(value, hint):
        shown = repr(value) if not isinstance(value, (dict, list)) else type(value).__name__
        hint_yaml = ""
        if isinstance(value, bool) and _fits("off", hint):
            # YAML 1.1 reads a bare off/no/false (on/yes/true) as a boolean: the usual cause of this error.
            hint_yaml = f"; YAML reads a bare off/no as false and on/yes as true: quote the word, e.g. \"{'on' if value else 'off'}\""
        raise ConfigError(f"{where}: expected {_describe(hint)}, got {shown} ({type(value).__name__}){hint_yaml}")
