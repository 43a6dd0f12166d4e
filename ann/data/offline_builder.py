"""The base of ann's offline TFDS builders: a set built from data on this machine, never
looked up online."""

from __future__ import annotations

from typing import Any

import tensorflow_datasets as tfds


class OfflineInfo(tfds.core.DatasetInfo):
    """A DatasetInfo that never asks TFDS's GCS bucket for a set's precomputed info."""

    def initialize_from_bucket(self) -> None:
        """Nothing to fetch: TFDS's own made an empty temporary directory (/tmp/tmpXXXXtfds)
        for every builder of a set not yet prepared, and never removed it."""


class OfflineBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """A GeneratorBasedBuilder whose info is an OfflineInfo (ann's sets are built offline)."""

    def dataset_info_from_configs(self, **kwargs: Any) -> tfds.core.DatasetInfo:
        """TFDS's own, as an OfflineInfo: a metadata file's description and citation win."""
        metadata = self.get_metadata()
        if metadata.description:
            kwargs["description"] = metadata.description
        if metadata.citation:
            kwargs["citation"] = metadata.citation
        return OfflineInfo(builder=self, **kwargs)
