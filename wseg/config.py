"""One config system for every script: config files composed from bases, and one override syntax.

Every script (stage scripts, ``segmentation/*.py``, the pipeline runner) takes

- ``--config FILE``: a Python (``.py``) or JSON file of ``key = value`` settings. ``_base_ = "other.py"`` (or a list,
  relative to the file) composes it from bases first, as mmsegmentation's ``_base_`` does: dicts are merged key by
  key (``_delete_=True`` in a dict replaces instead of merging), anything else is replaced. The legacy
  ``base = "x.py"`` spelling of the segmentation configs is read the same way;
- ``--KEY VALUE`` for any key, and ``--set KEY=VALUE [KEY=VALUE ...]``, the same override in every script; a dotted
  ``KEY`` reaches into a dict-valued key (``--set model.backbone=resnet50``; in pipelines ``--set cam_train.lr=0.01``).

Precedence: defaults < config file < ``--KEY VALUE`` < ``--set``; a key given both as ``--KEY`` and in ``--set`` with
different values is an error. A key the script does not have, in a file or on the command line, is a one-line
:class:`~wseg.errors.WsegError` naming it, where it came from and the closest existing keys.

The schema of a script is its ``argparse`` parser (:class:`ConfigArgumentParser`): file and ``--set`` values become
the same tokens a user would type, so every value goes through the script's own types, choices and checks.
"""
from __future__ import annotations

import argparse
import ast
import copy
import difflib
import json
import os
import runpy
import sys
import types
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from wseg.cli import OneLineParser
from wseg.errors import WsegError

BASE_KEYS = ("_base_", "base")
DELETE_KEY = "_delete_"
MAX_BASE_DEPTH = 8


# --------------------------------------------------------------------------------------------- files


def merge(base: Dict[str, Any], update: Dict[str, Any]) -> Dict[str, Any]:
    """mmsegmentation's merge: dicts recursively (``_delete_: True`` replaces), other values replaced."""
    out = copy.deepcopy(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict) and not value.get(DELETE_KEY, False):
            out[key] = merge(out[key], value)
        elif isinstance(value, dict):
            out[key] = {k: copy.deepcopy(v) for k, v in value.items() if k != DELETE_KEY}
        else:
            out[key] = copy.deepcopy(value)
    return out


def _file_values(path: str) -> Dict[str, Any]:
    if path.endswith(".json"):
        try:
            with open(path) as f:
                values = json.load(f)
        except json.JSONDecodeError as exc:
            raise WsegError(f"{path}: not valid JSON ({exc})") from None
        if not isinstance(values, dict):
            raise WsegError(f"{path}: a JSON config holds one object of key/value settings")
        return values
    try:
        ns = runpy.run_path(path)
    except Exception as exc:  # a typo in the user's file: one line with its cause
        raise WsegError(f"{path}: cannot execute config ({exc.__class__.__name__}: {exc})") from None
    return {k: v for k, v in ns.items()
            if (not k.startswith("_") or k in BASE_KEYS) and not isinstance(v, (types.ModuleType, types.FunctionType,
                                                                                type))}


def load_config_file(path: str, _seen: Optional[List[str]] = None) -> Dict[str, Any]:
    """The settings of a config file after composing its ``_base_`` chain (a dict of plain values)."""
    path = os.path.abspath(path)
    if not os.path.isfile(path):
        raise WsegError(f"{path}: config file not found; check --config")
    seen = (_seen or []) + [path]
    if len(seen) > MAX_BASE_DEPTH or path in seen[:-1]:
        raise WsegError(f"{path}: the _base_ chain loops or is deeper than {MAX_BASE_DEPTH} files")
    values = _file_values(path)
    bases = [values.pop(k) for k in BASE_KEYS if k in values]
    merged: Dict[str, Any] = {}
    for base in bases:
        for b in ([base] if isinstance(base, str) else list(base)):
            merged = merge(merged, load_config_file(os.path.join(os.path.dirname(path), str(b)), seen))
    return merge(merged, values)


# --------------------------------------------------------------------------------------------- values


def parse_literal(text: str) -> Any:
    """A ``--set`` value as Python sees it: numbers, ``True``/``False``, ``None``/``null``, ``[1, 2]``, ``{..}``,
    ``[a, b]`` (unquoted words); anything else stays a string."""
    t = text.strip()
    if t.lower() in ("none", "null"):
        return None
    if t.lower() in ("true", "false"):
        return t.lower() == "true"
    try:
        return ast.literal_eval(t)
    except (ValueError, SyntaxError):
        if t.startswith("[") and t.endswith("]"):          # [conv1a, b2]: a list of unquoted words
            return [parse_literal(v) for v in t[1:-1].split(",") if v.strip()]
        return t


def parse_set(items: Sequence[str], flag: str = "--set") -> List[Tuple[str, str]]:
    """``["a=1", "b.c=x"]`` -> ``[("a", "1"), ("b.c", "x")]``."""
    out = []
    for item in items:
        key, eq, val = item.partition("=")
        if not eq or not key.strip():
            raise WsegError(f"{flag} {item!r}: expected KEY=VALUE, e.g. lr=0.01")
        if ":" in key and key.split(":", 1)[1].startswith("--"):
            raise WsegError(f"{flag} {item!r}: the pipeline override syntax is STAGE.KEY=VALUE (e.g. "
                            "cam_train.max_epoches=2); SECTION:--flag=VALUE is gone")
        out.append((key.strip().replace("-", "_"), val))
    return out


def set_path(cfg: Dict[str, Any], dotted: str, value: Any, where: str) -> None:
    """``cfg[a][b] = value`` for ``dotted = "a.b"`` (intermediate dicts are created)."""
    parts = dotted.split(".")
    node = cfg
    for p in parts[:-1]:
        nxt = node.setdefault(p, {})
        if not isinstance(nxt, dict):
            raise WsegError(f"{where}: {'.'.join(parts[:-1])} is not a dict of settings, so {dotted} cannot be set")
        node = nxt
    node[parts[-1]] = value


def close_keys(key: str, keys: Sequence[str]) -> str:
    close = difflib.get_close_matches(key, list(keys), n=3, cutoff=0.6)
    if not close:
        parts = set(key.lower().split("_"))
        close = [k for k in keys if parts & set(k.split("_"))][:4]
    return f"; did you mean {', '.join(close)}?" if close else "; see --help for the keys"


def tokens_for(option: str, value: Any, action: argparse.Action) -> List[str]:
    """The command-line tokens that give ``option`` the (Python) ``value``: what a user would type."""
    if value is None:
        return []
    if action.nargs == 0:                                   # store_true / store_false
        return [option] if bool(value) == (action.const is True) else []
    if isinstance(value, dict):
        return [option, json.dumps(value)]
    if isinstance(value, (list, tuple)):
        if action.nargs in (None, "?"):
            if len(value) != 1:
                raise WsegError(f"{option}: takes one value, got {list(value)}")
            value = value[0]
        else:
            return [option] + [_token(v) for v in value]
    return [option, _token(value)]


def _token(v: Any) -> str:
    return json.dumps(v) if isinstance(v, (dict, list)) else str(v)


def _split_list_text(text: str) -> List[str]:
    t = text.strip()
    if t.startswith(("[", "(")):
        try:
            value = ast.literal_eval(t)
        except (ValueError, SyntaxError):
            raise WsegError(f"{text!r} is not a valid list") from None
        return [str(v) for v in (value if isinstance(value, (list, tuple)) else [value])]
    return [v for v in t.replace(",", " ").split() if v]


# --------------------------------------------------------------------------------------------- the parser


class ConfigArgumentParser(OneLineParser):
    """``argparse`` with ``--config FILE`` and ``--set KEY=VALUE``; see the module docstring.

    ``extend(parser, lookup)`` (optional) adds arguments that depend on other values before the final parse, e.g. a
    CAM method's own flags once ``--network`` is known; ``lookup(key, default)`` reads a value from the command line,
    ``--set`` or the config file. ``dict_keys`` are dict-valued keys (``--set model.backbone=x`` merges into them).
    """

    def __init__(self, *args, extend: Optional[Callable[["ConfigArgumentParser", Callable], None]] = None,
                 dict_keys: Sequence[str] = (), **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        super().__init__(*args, **kwargs)
        self.add_argument("--config", default=None, help="config file (.py or .json; `_base_` composes bases)")
        self.add_argument("--set", dest="set_items", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
                          help="override values: KEY=VALUE, a dotted KEY for dict-valued keys (model.backbone=...)")
        self._extend = extend
        self._extended = False
        self.dict_keys = tuple(dict_keys)

    # -- helpers
    def _action(self, key: str) -> Optional[argparse.Action]:
        return self._option_string_actions.get("--" + key)

    def _check_key(self, key: str, where: str) -> argparse.Action:
        action = self._option_string_actions.get("--" + key) or self._action(key.replace("_", "-"))
        if action is None or key in ("config", "set"):
            keys = sorted(a.dest for a in self._actions if a.option_strings and a.dest not in ("help", "set_items"))
            raise WsegError(f"{where}: unknown key {key!r}{close_keys(key, keys)}")
        return action

    def _given(self, argv: Sequence[str]) -> Dict[str, List[str]]:
        """``--key v1 v2`` groups of an argv (``--key=v`` too)."""
        out: Dict[str, List[str]] = {}
        cur: Optional[str] = None
        for tok in argv:
            if tok.startswith("--") and len(tok) > 2:
                key, eq, val = tok[2:].partition("=")
                cur = key.replace("-", "_")
                out[cur] = [val] if eq else []
            elif cur is not None:
                out[cur].append(tok)
        return out

    def parse_args(self, args=None, namespace=None):  # type: ignore[override]
        argv = list(sys.argv[1:] if args is None else args)
        pre = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
        pre.add_argument("--config", default=None)
        pre.add_argument("--set", dest="set_items", nargs="+", action="extend", default=[])
        known, rest = pre.parse_known_args(argv)
        file_values = load_config_file(known.config) if known.config else {}
        where_file = known.config or ""
        sets = parse_set(known.set_items)
        given = self._given(rest)

        def lookup(key: str, default: Any = None) -> Any:
            for k, v in reversed(sets):
                if k == key:
                    return parse_literal(v)
            if key in given and given[key]:
                return given[key][0]
            return file_values.get(key, default)

        if self._extend is not None and not self._extended:
            self._extended = True
            self._extend(self, lookup)
        head: List[str] = []
        for key, value in file_values.items():
            action = self._check_key(key, where_file)
            if key in self.dict_keys and isinstance(value, dict):
                continue                                           # merged below with the dotted overrides
            head += self._file_tokens(key, value, action, where_file)
        tail: List[str] = []
        dict_updates: Dict[str, Dict[str, Any]] = {}
        for key, text in sets:
            root = key.split(".", 1)[0]
            action = self._check_key(root, f"--set {key}")
            if "." in key:
                if root not in self.dict_keys:
                    raise WsegError(f"--set {key}={text}: {root} is not a dict of settings")
                set_path(dict_updates.setdefault(root, {}), key.split(".", 1)[1], parse_literal(text), f"--set {key}")
                continue
            if root in given and self._differs(action, given[root], text):
                raise WsegError(f"{root}: given as --{root} {' '.join(given[root])} and as --set {key}={text}; "
                                "pass it once")
            tail += self._set_tokens(root, text, action)
        for root in self.dict_keys:
            if root in file_values or root in dict_updates:
                base = file_values.get(root) if isinstance(file_values.get(root), dict) else {}
                action = self._action(root)
                default = action.default if action is not None and isinstance(action.default, dict) else {}
                head += ["--" + root, json.dumps(merge(merge(default, base or {}), dict_updates.get(root, {})))]
        for tok in rest:
            if tok.startswith("--") and len(tok) > 2:
                self._check_key(tok[2:].split("=", 1)[0].replace("-", "_"), tok.split("=", 1)[0])
        ns = super().parse_args(head + rest + tail, namespace)
        ns.config = os.path.abspath(known.config) if known.config else None
        ns.set_items = list(known.set_items)
        return ns

    def _file_tokens(self, key: str, value: Any, action: argparse.Action, where: str) -> List[str]:
        tokens = tokens_for("--" + key, value, action)
        if action.type is not None and action.nargs != 0:
            for tok in tokens[1:]:
                try:
                    action.type(tok)
                except (ValueError, TypeError, argparse.ArgumentTypeError):
                    raise WsegError(f"{where}: {key} = {value!r} is not valid for --{key} ({tok!r})") from None
        if action.choices is not None:
            for tok in tokens[1:]:
                conv = action.type(tok) if action.type else tok
                if conv not in action.choices:
                    raise WsegError(f"{where}: {key} = {value!r}; choose one of {', '.join(map(str, action.choices))}")
        return tokens

    def _set_tokens(self, key: str, text: str, action: argparse.Action) -> List[str]:
        if action.nargs == 0:
            value = parse_literal(text)
            return tokens_for("--" + key, bool(value), action)
        if parse_literal(text) is None:
            default = action.default
            return [] if default is None else tokens_for("--" + key, default, action)
        if action.nargs in (None, "?"):
            return ["--" + key, text]
        try:
            return ["--" + key] + _split_list_text(text)
        except WsegError as exc:
            raise WsegError(f"--set {key}={text}: {exc}") from None

    @staticmethod
    def _differs(action: argparse.Action, given: List[str], text: str) -> bool:
        conv = action.type or (lambda v: v)
        try:
            a = [conv(v) for v in given]
            b = [conv(v) for v in (_split_list_text(text) if action.nargs not in (None, "?") else [text])]
        except (ValueError, TypeError, argparse.ArgumentTypeError, WsegError):
            return True
        return a != b


def json_dict(text: str) -> Dict[str, Any]:
    """``type=`` of dict-valued keys (``--model '{"type": "deeplabv1"}'``)."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        value = parse_literal(text)
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a dict of settings, got {text!r}")
    return value
