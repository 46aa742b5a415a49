"""Landing zone -> bronze: control files, verification, decoding, line-numbered reading."""
