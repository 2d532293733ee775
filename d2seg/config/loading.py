"""Load YAML configs and command-line overrides; every mistake becomes one clear line."""

from __future__ import annotations

import difflib
import os
import re

import yaml
from detectron2.config import CfgNode
from detectron2.config import get_cfg as _detectron2_cfg

from d2seg.config.defaults import add_d2seg_config
from d2seg.errors import D2SegError


def get_cfg() -> CfgNode:
    """detectron2's defaults plus d2seg's keys."""
    return add_d2seg_config(_detectron2_cfg())


def _flat_keys(node: CfgNode, prefix: str = "") -> list[str]:
    keys = []
    for k, v in node.items():
        full = f"{prefix}{k}"
        keys.append(full)
        if isinstance(v, CfgNode):
            keys.extend(_flat_keys(v, full + "."))
    return keys


def nearest_keys(key: str, cfg: CfgNode, n: int = 3) -> list[str]:
    """Valid keys closest to a misspelt one (same section first)."""
    keys = _flat_keys(cfg)
    close = difflib.get_close_matches(key, keys, n=n, cutoff=0.6)
    if not close:  # a wrong leaf under a right section: compare the leaf names only
        section, _, leaf = key.rpartition(".")
        siblings = [k for k in keys if k.rpartition(".")[0] == section]
        close = [k for k in siblings
                 if k.rpartition(".")[2] in difflib.get_close_matches(leaf, [s.rpartition(".")[2] for s in siblings], n=n)]
    return close


def _type_name(text: str) -> str:
    """"<class 'int'>" -> "int"; anything else unchanged."""
    found = re.fullmatch(r"<class '(\w+)'>", text)
    return found.group(1) if found else text


def _translate(error: Exception, cfg: CfgNode, source: str) -> D2SegError:
    text = str(error).strip("'\"")
    unknown = re.search(r"Non-existent (?:config )?key: (\S+)", text)
    if unknown:
        key = unknown.group(1)
        close = nearest_keys(key, cfg)
        hint = f"did you mean {' or '.join(close)}?" if close else "check the spelling against detectron2's config reference"
        return D2SegError(f"unknown config key {key}", file=source, hint=hint)
    mismatch = re.search(r"Type mismatch \((.*?) vs\. (.*?)\) with values \((.*?)\) for config key: (\S+)", text)
    if mismatch:
        want, got, values, key = (_type_name(g) for g in mismatch.groups())
        return D2SegError(f"{key} has the wrong type: expected {want}, got {got} ({values})", file=source)
    return D2SegError(text, file=source)


def _unsafe_tag_error(error: yaml.constructor.ConstructorError, path: str) -> D2SegError:
    """A YAML tag ``yaml.safe_load`` does not build (``!!python/...``): refused, never run."""
    mark = getattr(error, "problem_mark", None)
    return D2SegError(f"YAML tag not allowed in a config file ({getattr(error, 'problem', error)})",
                      file=path, where=f"line {mark.line + 1}" if mark else None,
                      hint="configs are read with yaml.safe_load: use plain values "
                           "(numbers, strings, lists, mappings)")


def load_config(path: str | os.PathLike | None = None, overrides: list[str] | None = None) -> CfgNode:
    """A frozen config from a YAML file (with ``_BASE_`` inheritance) and ``KEY VALUE`` overrides."""
    cfg = get_cfg()
    if path is not None:
        path = os.fspath(path)
        if not os.path.isfile(path):
            raise D2SegError("config file not found", file=path)
        _check_bases(path)
        try:
            # allow_unsafe=False: detectron2's default (True) retries a file safe_load refuses
            # with yaml.unsafe_load, which runs tags such as !!python/object/apply
            cfg.merge_from_file(path, allow_unsafe=False)
        except yaml.constructor.ConstructorError as e:
            raise _unsafe_tag_error(e, path) from None
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            where = f"line {mark.line + 1}" if mark else None
            raise D2SegError(f"not valid YAML ({getattr(e, 'problem', e)})", file=path, where=where) from None
        except (KeyError, ValueError, AssertionError, TypeError) as e:
            raise _translate(e, cfg, path) from None
    if overrides:
        if len(overrides) % 2:
            raise D2SegError(f"overrides come in KEY VALUE pairs; {overrides[-1]!r} has no value",
                             file="command line")
        try:
            cfg.merge_from_list(list(overrides))
        except (KeyError, ValueError, AssertionError, TypeError) as e:
            raise _translate(e, cfg, "command line") from None
    return cfg


def _check_bases(path: str, seen: tuple[str, ...] = ()) -> None:
    """Follow ``_BASE_`` links first, so a missing base names the file that points at it."""
    if path in seen:
        raise D2SegError("_BASE_ files include each other in a loop", file=path)
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f) or {}
    except yaml.constructor.ConstructorError as e:
        raise _unsafe_tag_error(e, path) from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        raise D2SegError(f"not valid YAML ({getattr(e, 'problem', e)})", file=path,
                         where=f"line {mark.line + 1}" if mark else None) from None
    if not isinstance(data, dict):
        raise D2SegError("a config file must be a YAML mapping of keys", file=path)
    base = data.get("_BASE_")
    if base is None:
        return
    if not isinstance(base, str):
        raise D2SegError("_BASE_ must be a file path", file=path, where="_BASE_")
    base_path = base if os.path.isabs(base) else os.path.join(os.path.dirname(path), base)
    if not os.path.isfile(base_path):
        raise D2SegError(f"_BASE_ file {base} not found (looked at {base_path})", file=path, where="_BASE_")
    _check_bases(base_path, seen + (path,))
