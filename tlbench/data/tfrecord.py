"""TFRecord files read without TensorFlow: the record framing (a little-endian uint64 length, its CRC, the data,
its CRC) and tf.train.Example's protobuf wire format (tensorflow/core/example/{example,feature}.proto), as TFDS's
source archives hold images (VTAB's dmlab). The CRCs are not checked; a truncated file fails naming it."""

import hashlib
import io
import struct
from pathlib import Path

from PIL import Image
from torch.utils.data import Dataset


def tfrecords(path: Path) -> list[tuple[Path, int, int, int]]:
    """(file, offset, length, label) of every record in a TFRecord file: each record is a little-endian uint64
    length, a 4-byte CRC of it, the data (a serialized tf.train.Example) and a 4-byte CRC of the data. The
    image bytes stay on disk; a truncated file fails."""
    found, data = [], path.read_bytes()
    offset = 0
    while offset < len(data):
        if offset + 12 > len(data):
            raise ValueError(f"{path.name} ends inside a record header at byte {offset}")
        (length,) = struct.unpack_from("<Q", data, offset)
        start = offset + 12
        if start + length + 4 > len(data):
            raise ValueError(f"{path.name} ends inside a record at byte {offset} ({length} bytes announced)")
        features = example_features(data[start:start + length])
        found.append((path, start, length, int(features["label"][0])))
        offset = start + length + 4
    return found


def _varint(buffer: bytes, at: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = buffer[at]
        value |= (byte & 0x7F) << shift
        at, shift = at + 1, shift + 7
        if byte < 0x80:
            return value, at


def _fields(buffer: bytes):
    """(field number, wire type, value) of a protobuf message: varints as ints, length-delimited as bytes."""
    at = 0
    while at < len(buffer):
        key, at = _varint(buffer, at)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, at = _varint(buffer, at)
        elif wire == 2:
            size, at = _varint(buffer, at)
            value, at = buffer[at:at + size], at + size
        elif wire in (1, 5):
            size = 8 if wire == 1 else 4
            value, at = buffer[at:at + size], at + size
        else:
            raise ValueError(f"protobuf wire type {wire} is not one tf.train.Example uses")
        yield number, wire, value


def example_features(serialized: bytes) -> dict[str, list]:
    """A tf.train.Example's features: {name: [bytes...] or [int...]} (Example.features = 1; Features.feature = 1, a
    map entry of key = 1 and Feature = 2; Feature's bytes_list = 1 or int64_list = 3, each a repeated value = 1,
    int64s packed or not). float_list (2) is skipped: the sets read here have none that matters."""
    features = {}
    for number, _, message in _fields(serialized):
        if number != 1:
            continue
        for entry_number, _, entry in _fields(message):
            if entry_number != 1:
                continue
            name, values = None, []
            for piece_number, _, piece in _fields(entry):
                if piece_number == 1:
                    name = piece.decode("utf-8")
                elif piece_number == 2:
                    values = _feature_values(piece)
            if name is not None:
                features[name] = values
    return features


def _feature_values(feature: bytes) -> list:
    values = []
    for kind, _, listed in _fields(feature):
        for number, wire, value in _fields(listed):
            if number != 1:
                continue
            if kind == 1:
                values.append(value)
            elif kind == 3 and wire == 0:
                values.append(value - (1 << 64) if value >= 1 << 63 else value)
            elif kind == 3 and wire == 2:  # packed
                at = 0
                while at < len(value):
                    item, at = _varint(value, at)
                    values.append(item - (1 << 64) if item >= 1 << 63 else item)
    return values


class RecordImages(Dataset):
    """Images kept inside TFRecord files: (file, offset, length, label) per sample, each decoded from its
    Example's `image` bytes as it is read."""

    def __init__(self, records: list[tuple[Path, int, int, int]]):
        self.records = records
        self.targets = [label for *_, label in records]

    @property
    def source_fingerprint(self) -> str:
        """The record files (path, size, time) and where each record sits in them, for the decoded cache."""
        return files_digest(sorted({path for path, *_ in self.records}),
                             ",".join(f"{offset}:{length}" for _, offset, length, _ in self.records), self.targets)

    def __len__(self):
        return len(self.records)

    def __getitem__(self, index):
        path, offset, length, label = self.records[index]
        with open(path, "rb") as handle:
            handle.seek(offset)
            features = example_features(handle.read(length))
        with Image.open(io.BytesIO(features["image"][0])) as image:
            return image.convert("RGB"), label


def files_digest(paths, extra: str, targets) -> str:
    """A digest of files (path, size, modification time), `extra` and the labels: what a decoded cache of
    images read from those files is keyed by (tensor_data.fingerprint reads a dataset's source_fingerprint)."""
    digest = hashlib.sha256(extra.encode())
    for path in paths:
        stat = Path(path).stat()
        digest.update(f"{path}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
    digest.update(str(list(targets)).encode())
    return digest.hexdigest()
