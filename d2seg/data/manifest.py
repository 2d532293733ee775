"""Dataset manifests: one short YAML file describes a dataset; this module reads and validates it.

Why: detectron2 wants Python code to register a dataset, and its mistakes surface late (wrong
paths at the first iteration, class-count mismatches as silent garbage). A manifest is checked
when it is read, and every mistake is one ``D2SegError`` naming the file, the field and the reason.

Schema (paths relative to ``root``, which defaults to the manifest's folder; for the manifests
shipped inside d2seg, the demo ones, it defaults to the cache folder ``$D2SEG_CACHE``, see
``d2seg.data.cache``, since the install tree may be read-only)::

    name: my_shapes                    # registered as my_shapes_train, my_shapes_val, ...
    kind: coco_instances               # or coco_panoptic, sem_seg
    root: /data/shapes                 # optional: absolute, or a folder inside this one
    splits:
      train:
        images: train/images
        annotations: train/instances.json    # coco_panoptic: the panoptic JSON
        panoptic_root: train/panoptic        # coco_panoptic only
        instances: train/instances.json      # coco_panoptic, optional (else derived from PNGs)
        sem_seg_root: train/labels           # sem_seg only
    classes: [a, b, c]                 # optional names (sem_seg: required, label i = classes[i])
    colors: [[255, 0, 0], ...]         # optional, one RGB per class
    things: [a, b]                     # coco_panoptic, optional: overrides the JSON's isthing
    ignore_label: 255                  # optional

Registration lives in ``d2seg.data.register``; its public names are re-exported here.
"""

from __future__ import annotations

import difflib
import os
import re
from dataclasses import dataclass
from pathlib import Path

from d2seg.data.cache import cache_dir
from d2seg.errors import D2SegError

KINDS = ("coco_instances", "coco_panoptic", "sem_seg")
TOP_KEYS = ("name", "kind", "root", "splits", "classes", "colors", "things", "ignore_label",
            "generate", "description")
SPLIT_KEYS = ("images", "annotations", "panoptic_root", "instances", "sem_seg_root")
REQUIRED_SPLIT_KEYS = {
    "coco_instances": ("images", "annotations"),
    "coco_panoptic": ("images", "annotations", "panoptic_root"),
    "sem_seg": ("images", "sem_seg_root"),
}
GENERATORS = ("demo",)  # datasets d2seg can create on demand (``generate: demo``)
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclass(frozen=True)
class Split:
    name: str
    images: Path
    annotations: Path | None
    panoptic_root: Path | None
    sem_seg_root: Path | None
    instances: Path | None = None  # coco_panoptic: instances JSON for the separated form


@dataclass(frozen=True)
class Manifest:
    name: str
    kind: str
    path: Path
    splits: dict[str, Split]
    classes: list[str] | None
    colors: list[tuple[int, int, int]] | None
    ignore_label: int = 255
    things: tuple[str, ...] | None = None
    root: Path | None = None
    generate: str | None = None  # "demo": d2seg can create the data (when a split is used)

    def __hash__(self):  # splits is a dict: hash what identifies the manifest
        return hash((self.name, self.kind, self.path))


def _error(path: Path, where: str, reason: str, hint: str | None = None) -> D2SegError:
    return D2SegError(reason, file=str(path), where=where, hint=hint)


def _check_keys(path: Path, where: str, mapping: dict, allowed) -> None:
    for key in mapping:
        if key not in allowed:
            close = difflib.get_close_matches(str(key), allowed, n=1)
            hint = f"did you mean '{close[0]}'?" if close else f"allowed: {', '.join(allowed)}"
            raise _error(path, f"{where}{key}", "unknown key", hint)


def _string(path: Path, where: str, value) -> str:
    if not isinstance(value, str) or not value.strip():
        raise _error(path, where, f"must be a non-empty string, got {type(value).__name__} {value!r}")
    return value


def _resolve(path: Path, where: str, value, root: Path, *, must_exist: bool, folder: bool) -> Path:
    """An absolute path as given, or a relative one under ``root`` (never escaping it)."""
    text = _string(path, where, value)
    given = Path(os.path.expanduser(text))
    if given.is_absolute():
        resolved = Path(os.path.normpath(given))
    else:  # checked lexically, so a symlinked data folder inside the root is fine
        resolved = Path(os.path.normpath(root / given))
        if not resolved.is_relative_to(root):
            raise _error(path, where, f"path '{text}' escapes the dataset root {root}",
                         "keep relative paths inside the root, or give an absolute path")
    if must_exist:
        if folder and not resolved.is_dir():
            raise _error(path, where, f"folder not found: {resolved}")
        if not folder and not resolved.is_file():
            raise _error(path, where, f"file not found: {resolved}")
    return resolved


def _read_yaml(path: Path) -> dict:
    import yaml

    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise D2SegError("manifest not found", file=str(path)) from None
    except (OSError, UnicodeDecodeError) as e:
        raise D2SegError(f"cannot read manifest: {e}", file=str(path)) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark is not None else None
        reason = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise D2SegError(f"malformed YAML: {reason}", file=str(path), where=where) from None
    if not isinstance(data, dict):
        raise D2SegError(f"a manifest is a YAML mapping, got {type(data).__name__}", file=str(path))
    return data


def _colors(path: Path, value) -> list[tuple[int, int, int]]:
    if not isinstance(value, list):
        raise _error(path, "colors", "must be a list of [R, G, B]")
    out = []
    for i, c in enumerate(value):
        if (not isinstance(c, (list, tuple)) or len(c) != 3
                or not all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 255 for v in c)):
            raise _error(path, f"colors[{i}]", f"must be [R, G, B] with integers 0-255, got {c!r}")
        out.append(tuple(c))
    return out


def _names(path: Path, field: str, value) -> list[str]:
    if not isinstance(value, list) or not value:
        raise _error(path, field, "must be a non-empty list of names")
    names = [_string(path, f"{field}[{i}]", v) for i, v in enumerate(value)]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise _error(path, field, f"duplicate names: {', '.join(dup)}")
    return names


def load_manifest(path, *, check_files: bool = True, generate: bool = True) -> Manifest:
    """Read and validate one manifest.

    A ``generate: demo`` manifest's data is generated here when ``generate`` (and
    ``check_files``) is true, the default for a manifest asked for by name or path. Scanning the
    manifest folders (``d2seg.data.catalog.scan``) passes ``generate=False``: then nothing is
    generated and such a manifest's files are not checked (they appear when a split is used).
    """
    make_data = generate
    path = Path(os.path.abspath(Path(path).expanduser()))
    data = _read_yaml(path)
    _check_keys(path, "", data, TOP_KEYS)
    for key in ("name", "kind", "splits"):
        if key not in data:
            raise _error(path, key, "missing required key")
    name = _string(path, "name", data["name"])
    if not _NAME.match(name):
        raise _error(path, "name", f"'{name}' may use letters, digits, '_', '.', '-' only")
    kind = data["kind"]
    if kind not in KINDS:
        raise _error(path, "kind", f"unknown kind {kind!r}", f"use one of {', '.join(KINDS)}")
    root = cache_dir() if is_bundled(path) else path.parent
    if "root" in data:
        root = _resolve(path, "root", data["root"], path.parent, must_exist=False, folder=True)
    generate = data.get("generate")  # a dataset d2seg can create itself when it is absent
    if generate is not None and generate not in GENERATORS:
        raise _error(path, "generate", f"unknown generator {generate!r}",
                     f"use one of {', '.join(GENERATORS)}")
    if check_files and generate == "demo":
        if make_data:
            from d2seg.data.demo import ensure_demo

            ensure_demo(root / "demo")  # the demo's files live in <root>/demo
        else:
            check_files = False  # generated when a split is used
    if check_files and not root.is_dir():
        raise _error(path, "root", f"folder not found: {root}")

    splits_data = data["splits"]
    if not isinstance(splits_data, dict) or not splits_data:
        raise _error(path, "splits", "must map split names (train, val, ...) to their paths")
    splits = {}
    for split_name, entry in splits_data.items():
        where = f"splits.{split_name}"
        if not isinstance(split_name, str) or not _NAME.match(split_name):
            raise _error(path, "splits", f"bad split name {split_name!r}")
        if not isinstance(entry, dict):
            raise _error(path, where, f"must be a mapping of paths, got {type(entry).__name__}")
        _check_keys(path, f"{where}.", entry, SPLIT_KEYS)
        for key in REQUIRED_SPLIT_KEYS[kind]:
            if key not in entry:
                raise _error(path, f"{where}.{key}", f"missing required key for kind {kind}")
        allowed = set(REQUIRED_SPLIT_KEYS[kind]) | ({"instances"} if kind == "coco_panoptic" else set())
        for key in entry:
            if key not in allowed:
                raise _error(path, f"{where}.{key}", f"not used by kind {kind}",
                             f"keys for {kind}: {', '.join(sorted(allowed))}")
        resolved = {key: _resolve(path, f"{where}.{key}", value, root, must_exist=check_files,
                                  folder=key in ("images", "panoptic_root", "sem_seg_root"))
                    for key, value in entry.items()}
        splits[split_name] = Split(split_name, resolved["images"], resolved.get("annotations"),
                                   resolved.get("panoptic_root"), resolved.get("sem_seg_root"),
                                   resolved.get("instances"))

    classes = _names(path, "classes", data["classes"]) if data.get("classes") is not None else None
    if kind == "sem_seg" and classes is None:
        raise _error(path, "classes", "required for kind sem_seg (label value i is classes[i])")
    colors = _colors(path, data["colors"]) if data.get("colors") is not None else None
    if colors is not None and classes is not None and len(colors) != len(classes):
        raise _error(path, "colors", f"has {len(colors)} entries for {len(classes)} classes")
    things = None
    if data.get("things") is not None:
        if kind != "coco_panoptic":
            raise _error(path, "things", "only used by kind coco_panoptic")
        things = tuple(_names(path, "things", data["things"]))
    ignore = data.get("ignore_label", 255)
    if not isinstance(ignore, int) or isinstance(ignore, bool) or not 0 <= ignore <= 255:
        raise _error(path, "ignore_label", f"must be an integer 0-255, got {ignore!r}")
    return Manifest(name, kind, path, splits, classes, colors, ignore, things, root, generate)


def bundled_manifest_folder() -> Path:
    """The manifests shipped inside the d2seg package (the demo datasets)."""
    from importlib import resources

    return Path(str(resources.files("d2seg.data").joinpath("manifests")))


def is_bundled(path: Path) -> bool:
    """Whether ``path`` is one of the manifests shipped inside the d2seg package."""
    return os.path.normcase(os.path.realpath(Path(path).parent)) == os.path.normcase(
        os.path.realpath(bundled_manifest_folder()))


def checkout_datasets_folder() -> Path | None:
    """``datasets/`` of the source checkout d2seg runs from (an editable install); None when d2seg
    is installed from a wheel (there the folder above the package is site-packages)."""
    root = Path(__file__).resolve().parents[2]
    try:
        is_checkout = 'name = "d2seg"' in (root / "pyproject.toml").read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    return root / "datasets" if is_checkout else None


def manifest_folders() -> list[Path]:
    """Where names are looked up: the manifests shipped with d2seg, a source checkout's
    ``datasets/`` and the folders in ``$D2SEG_DATASETS``."""
    folders = [bundled_manifest_folder()]
    checkout = checkout_datasets_folder()
    if checkout is not None:
        folders.append(checkout)
    for item in os.environ.get("D2SEG_DATASETS", "").split(os.pathsep):
        if item.strip():
            folders.append(Path(item).expanduser().resolve())
    return folders


def manifest_files() -> list[Path]:
    files = []
    for folder in manifest_folders():
        if folder.is_dir():
            files += sorted(p for p in folder.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file())
    return files


def _declared_name(path: Path) -> str | None:
    data = _read_yaml(path)
    return data.get("name") if isinstance(data.get("name"), str) else None


def find_manifest(name_or_path) -> Manifest:
    """A manifest from a path, or from its ``name`` in the manifest folders (names are unique)."""
    text = str(name_or_path)
    candidate = Path(text).expanduser()
    if candidate.suffix in (".yaml", ".yml") or os.sep in text or candidate.is_file():
        return load_manifest(candidate)
    matches = [p for p in manifest_files() if _declared_name(p) == text]
    if len(matches) > 1:
        raise D2SegError(f"dataset name '{text}' is declared by {len(matches)} manifests: "
                         + ", ".join(map(str, matches)), where="name",
                         hint="give each manifest its own name")
    if not matches:
        known = sorted({n for n in map(_declared_name, manifest_files()) if n})
        close = difflib.get_close_matches(text, known, n=1)
        hint = f"did you mean '{close[0]}'?" if close else (
            f"known: {', '.join(known)}; or give a path, or add a folder to $D2SEG_DATASETS")
        raise D2SegError(f"no manifest named '{text}'", where="dataset", hint=hint)
    return load_manifest(matches[0])


def all_manifests() -> list[Manifest]:
    """Every manifest in the manifest folders; a name declared twice is an error."""
    seen: dict[str, Path] = {}
    manifests = []
    for path in manifest_files():
        m = load_manifest(path)
        if m.name in seen:
            raise D2SegError(f"dataset name '{m.name}' is also declared by {seen[m.name]}",
                             file=str(path), where="name", hint="give each manifest its own name")
        seen[m.name] = path
        manifests.append(m)
    return manifests


# manifest file -> the error that kept it from being registered (see d2seg.data.register.register_datasets)
BROKEN_MANIFESTS: dict[str, D2SegError] = {}


def broken_manifest_for(dataset_name: str) -> D2SegError | None:
    """The error of the set-aside manifest that would have declared ``dataset_name``: the one
    whose declared name (or file stem, when unreadable) begins the dataset name."""
    for path, error in BROKEN_MANIFESTS.items():
        try:
            declared = _declared_name(Path(path)) or Path(path).stem
        except D2SegError:
            declared = Path(path).stem
        if dataset_name == declared or dataset_name.startswith(declared + "_"):
            return error
    return None
