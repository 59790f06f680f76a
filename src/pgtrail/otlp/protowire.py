"""The few protobuf wire-format fields the receivers write by hand.

Answers such as ``google.rpc.Status`` and ``RetryInfo`` are a handful of bytes; writing them
here saves loading (or requiring) the message classes for them.
"""

from __future__ import annotations


def varint(value: int) -> bytes:
    """``value`` (not negative) as a base-128 varint.

    Args:
        value: The number to encode.
    """
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def varint_field(number: int, value: int) -> bytes:
    """A varint field: its tag (wire type 0), then ``value``.

    Args:
        number: The field number.
        value: The field's value, not negative.
    """
    return varint(number << 3) + varint(value)


def bytes_field(number: int, value: bytes) -> bytes:
    """A length-delimited field (wire type 2): strings, bytes and embedded messages.

    Args:
        number: The field number.
        value: The field's encoded value.
    """
    return varint(number << 3 | 2) + varint(len(value)) + value
