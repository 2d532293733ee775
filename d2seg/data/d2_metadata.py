"""detectron2 ``Metadata`` whose d2seg-computed keys appear on first access.

Imported only by commands that run models (it imports detectron2, hence torch). The base
metadata of a :class:`d2seg.data.catalog.DatasetInfo` is set at registration; its deferred keys
(``mask_format``, derived-label paths) are computed when first read, through ``get``,
attribute access or ``as_dict``.
"""

from __future__ import annotations

from detectron2.data.catalog import Metadata

_INFOS: dict = {}  # dataset name -> DatasetInfo (kept outside the object: as_dict stays clean)


class LazyMetadata(Metadata):
    def _d2seg_resolve(self) -> None:
        info = _INFOS.get(self.__dict__.get("name"))
        if info is not None:
            for key, value in info.deferred().items():
                if value is not None:
                    self.__dict__.setdefault(key, value)

    def __getattr__(self, key):
        if not key.startswith("_") and key != "name":
            info = _INFOS.get(self.__dict__.get("name"))
            if info is not None and key in info.deferred_keys:
                self._d2seg_resolve()
                if key in self.__dict__:
                    return self.__dict__[key]
        return super().__getattr__(key)

    def as_dict(self):
        self._d2seg_resolve()
        return super().as_dict()

    def __reduce__(self):  # pickled (e.g. to a spawned worker): as a plain Metadata
        self._d2seg_resolve()
        return (_plain_metadata, (dict(self.__dict__),))


def _plain_metadata(values: dict) -> Metadata:
    meta = Metadata()
    meta.__dict__.update(values)
    return meta


def lazy_metadata(info) -> LazyMetadata:
    """Metadata for ``info``: its base keys now, the deferred ones on first access."""
    _INFOS[info.name] = info
    meta = LazyMetadata(name=info.name)
    meta.set(**{k: v for k, v in info.base.items() if v is not None})
    return meta
