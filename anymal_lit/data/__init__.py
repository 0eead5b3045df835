"""Data: the JSONL conversation format, chat tokenization, collation and data modules."""

from anymal_lit.data.chat import ChatTokenizer
from anymal_lit.data.collate import ConversationDataset, PaddingCollator
from anymal_lit.data.datamodule import ConversationDataModule, ImageTextDataModule
from anymal_lit.data.length_grouped import LengthGroupedSampler
from anymal_lit.data.mixture import (
    AudioTextDataModule,
    IMUTextDataModule,
    MixtureDataModule,
    MixtureSampler,
    VideoTextDataModule,
)
from anymal_lit.data.preference import PreferenceDataModule, PreferenceDataset
from anymal_lit.data.records import Record, RecordError, read_records
from anymal_lit.data.webdataset import ShardStream, WebDataModule, write_shards

__all__ = [
    "AudioTextDataModule",
    "IMUTextDataModule",
    "MixtureDataModule",
    "MixtureSampler",
    "VideoTextDataModule",
    "ChatTokenizer",
    "ConversationDataModule",
    "ConversationDataset",
    "ImageTextDataModule",
    "LengthGroupedSampler",
    "PaddingCollator",
    "PreferenceDataModule",
    "PreferenceDataset",
    "Record",
    "RecordError",
    "read_records",
    "ShardStream",
    "WebDataModule",
    "write_shards",
]
