"""Decodes tfds image-classification records (array_record shards of PNG tf.train.Example protos)
straight into the images and labels regions of an output file.

Kept free of lth_jax, JAX and tfds imports so that the parallel decode can start it as a plain script
(`python decode_worker.py JSON`) in a fraction of a second; `decode_into` is also called in-process.
The tf.train.Example protos are parsed here from the protobuf wire format (only the fields image
classification uses: bytes and int64 lists), which is several times faster than tfds's per-record
decode and gives the same arrays (the tests compare them).
"""

from __future__ import annotations

import io
import json
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np


def _varint(buffer: bytes, position: int) -> tuple[int, int]:
    """Reads a base-128 varint at `position`; returns (value, next position)."""
    result = shift = 0
    while True:
        byte = buffer[position]
        position += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, position
        shift += 7


def _fields(buffer: bytes, start: int, end: int):
    """Yields (field number, wire type, value) of a message's fields; the value of a length-delimited
    field is its (start, end) span, of a varint its integer."""
    position = start
    while position < end:
        tag, position = _varint(buffer, position)
        number, wire_type = tag >> 3, tag & 7
        if wire_type == 0:
            value, position = _varint(buffer, position)
            yield number, wire_type, value
        elif wire_type == 2:
            length, position = _varint(buffer, position)
            yield number, wire_type, (position, position + length)
            position += length
        elif wire_type == 1:
            yield number, wire_type, buffer[position:position + 8]
            position += 8
        elif wire_type == 5:
            yield number, wire_type, buffer[position:position + 4]
            position += 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire_type}")


def _feature_value(buffer: bytes, start: int, end: int) -> Any:
    """The first value of a tf.train.Feature: bytes (bytes_list) or int (int64_list); None otherwise."""
    for number, _, (list_start, list_end) in _fields(buffer, start, end):
        if number == 1:  # BytesList: repeated bytes value = 1
            for _, _, (value_start, value_end) in _fields(buffer, list_start, list_end):
                return buffer[value_start:value_end]
        elif number == 3:  # Int64List: repeated int64 value = 1 (packed or not)
            for _, wire_type, value in _fields(buffer, list_start, list_end):
                if wire_type == 2:
                    value, _ = _varint(buffer, value[0])
                return value - (1 << 64) if value >= 1 << 63 else value
    return None


def parse_example(buffer: bytes, keys: Sequence[str]) -> dict[str, Any]:
    """The first value of each of `keys` in a serialized tf.train.Example (KeyError if one is missing)."""
    found: dict[str, Any] = {}
    for number, _, (features_start, features_end) in _fields(buffer, 0, len(buffer)):
        if number != 1:  # Example.features
            continue
        for entry_number, _, (entry_start, entry_end) in _fields(buffer, features_start, features_end):
            if entry_number != 1:  # Features.feature: map<string, Feature>
                continue
            key, value_span = None, None
            for field_number, _, span in _fields(buffer, entry_start, entry_end):
                if field_number == 1:
                    key = buffer[span[0]:span[1]].decode()
                elif field_number == 2:
                    value_span = span
            if key in keys and value_span is not None:
                found[key] = _feature_value(buffer, *value_span)
    missing = [key for key in keys if key not in found]
    if missing:
        raise KeyError(f"tf.train.Example without the features {missing}")
    return found


def decode_into(tasks: Sequence[Sequence[Any]], output_path: str, images_offset: int, labels_offset: int,
                total_count: int, image_shape: Sequence[int]) -> None:
    """Decodes every task (shard filename, first record, end record, first output row) into the
    uint8 images (total_count, *image_shape) at `images_offset` and int32 labels at `labels_offset`
    of `output_path` (an existing file of the full size)."""
    from array_record.python.array_record_module import ArrayRecordReader
    from PIL import Image

    image_shape = tuple(int(size) for size in image_shape)
    images = np.memmap(output_path, np.uint8, "r+", images_offset, (total_count, *image_shape))
    labels = np.memmap(output_path, np.int32, "r+", labels_offset, (total_count,))
    keys = ("image", "label")
    for filename, first, end, row in tasks:
        reader = ArrayRecordReader(filename, "readahead_buffer_size:0")
        try:
            records = reader.read(int(first), int(end))
        finally:
            reader.close()
        for offset, record in enumerate(records):
            example = parse_example(record, keys)
            with Image.open(io.BytesIO(example["image"])) as image:
                images[row + offset] = np.asarray(image, np.uint8).reshape(image_shape)
            labels[row + offset] = example["label"]
    images.flush()
    labels.flush()


if __name__ == "__main__":
    decode_into(**json.loads(sys.argv[1]))
